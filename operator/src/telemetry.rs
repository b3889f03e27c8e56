//! Logging: `tracing` with an env filter, as human-readable text or JSON lines.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt;
use tracing_subscriber::prelude::*;

/// Output format of the logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// Errors setting up logging.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The filter directive does not parse.
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        /// The directive.
        filter: String,
        /// The parse error.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was already installed.
    #[error("logging was already initialized: {0}")]
    AlreadySet(#[from] tracing_subscriber::util::TryInitError),
}

/// The log filter without `--log-level` or `RUST_LOG`. kube's client logs
/// every failed request at ERROR (`kube_client::client::builder`), which
/// during an apiserver outage is one line per request (about 1,700 in 15 s
/// with 200 apps) repeating what Spindle's own line says with context (the
/// reconcile, the watch or the lease that failed), so it is off by default.
pub const DEFAULT_FILTER: &str = "info,kube_client::client::builder=off";

/// Install the global subscriber. `filter` is an `EnvFilter` directive such as
/// `info` or `spindle=debug,kube=info`.
pub fn init(format: LogFormat, filter: &str) -> Result<(), Error> {
    let env_filter = EnvFilter::builder()
        .parse(filter)
        .map_err(|source| Error::Filter {
            filter: filter.to_owned(),
            source,
        })?;
    let registry = tracing_subscriber::registry().with(env_filter);
    match format {
        LogFormat::Text => registry.with(fmt::layer().with_target(true)).try_init()?,
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init()?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_filter_silences_only_kube_clients_per_request_errors() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let filter = EnvFilter::builder().parse(DEFAULT_FILTER).unwrap();
        let subscriber = tracing_subscriber::registry().with(filter);
        tracing::subscriber::with_default(subscriber, || {
            assert!(
                !tracing::enabled!(target: "kube_client::client::builder", tracing::Level::ERROR)
            );
            assert!(tracing::enabled!(target: "kube_client::client", tracing::Level::ERROR));
            assert!(tracing::enabled!(target: "spindle::controller", tracing::Level::INFO));
            assert!(!tracing::enabled!(target: "spindle::controller", tracing::Level::DEBUG));
        });
    }

    #[test]
    fn rejects_bad_filters() {
        assert!(matches!(
            init(LogFormat::Text, "spindle=notalevel"),
            Err(Error::Filter { .. })
        ));
    }
}
