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
    fn rejects_bad_filters() {
        assert!(matches!(
            init(LogFormat::Text, "spindle=notalevel"),
            Err(Error::Filter { .. })
        ));
    }
}
