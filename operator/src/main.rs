//! The `spindle` binary: the operator (`run`) and its helper commands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgAction, Args, Parser, Subcommand};
use spindle::http::Readiness;
use spindle::leader::{LeaderElector, LeaseConfig};
use spindle::metrics::Metrics;
use spindle::telemetry::LogFormat;

#[derive(Parser)]
#[command(
    name = "spindle",
    version,
    about = "Kubernetes operator for Spin WebAssembly apps"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: reconcile SpinApps and SpinAppExecutors.
    Run(RunArgs),
    /// Print every CRD Spindle serves as YAML (a multi-document stream), or
    /// write one file per CRD into a directory.
    Crd {
        /// Write `<name>.yaml` files into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Package a Spin app (spin registry push format) or a single component
    /// (application/wasm) and push it to an OCI registry.
    Push(spindle::oci::push::PushArgs),
    /// Run the scale-to-zero activator: hold requests for apps at zero pods
    /// while they wake, then proxy them to the first pod that accepts.
    Activator(spindle::activator::run::ActivatorArgs),
    /// Rewrite `core.spinoperator.dev` manifests (multi-document YAML) into
    /// `core.spinkube.dev` ones: the apiVersion, the article's
    /// `runtime-config` map into `runtimeConfig`. Other documents pass
    /// unchanged. Prints to stdout.
    Convert {
        /// The manifests; `-` (the default) reads stdin.
        #[arg(short = 'f', long = "filename", default_value = "-")]
        file: PathBuf,
    },
}

/// Flags of `spindle run`; every flag can also be set with the `SPINDLE_*`
/// environment variable shown in `--help`.
#[derive(Args, Debug)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "SPINDLE_NAMESPACE")]
    namespace: Option<String>,

    /// Reconciles running at once, per controller.
    #[arg(long, env = "SPINDLE_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,

    /// Log format.
    #[arg(long, env = "SPINDLE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Log filter, e.g. `info` or `spindle=debug,kube=info` (default: `RUST_LOG`, else
    /// `info,kube_client::client::builder=off`: kube's one ERROR line per failed request
    /// repeats Spindle's own).
    #[arg(long, env = "SPINDLE_LOG_LEVEL")]
    log_level: Option<String>,

    /// Address of the HTTP endpoint serving /metrics, /healthz and /readyz.
    #[arg(long, env = "SPINDLE_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,

    /// Elect a leader with a Lease so that only one replica reconciles
    /// (`--leader-elect=false` to turn off, e.g. for a single replica).
    #[arg(
        long,
        env = "SPINDLE_LEADER_ELECT",
        default_value_t = true,
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    leader_elect: bool,

    /// Namespace of the leader Lease (default: `POD_NAMESPACE`, else `default`).
    #[arg(long, env = "SPINDLE_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,

    /// Name of the leader Lease.
    #[arg(long, env = "SPINDLE_LEASE_NAME", default_value = "spindle-leader")]
    lease_name: String,

    /// This replica's identity in the Lease and in events (default: `POD_NAME`, else `<hostname>-<pid>`).
    #[arg(long, env = "SPINDLE_IDENTITY")]
    identity: Option<String>,

    /// How often every app is reconciled even without changes, in seconds.
    #[arg(long, env = "SPINDLE_RESYNC_SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    resync_seconds: u64,

    /// Resolve `spec.image` to a digest and check that it is a Spin app
    /// before rolling it out (`--resolve-images=false` to pass `spec.image`
    /// to the pod as written, e.g. when the operator cannot reach the registry).
    #[arg(
        long,
        env = "SPINDLE_RESOLVE_IMAGES",
        default_value_t = true,
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    resolve_images: bool,

    /// Reach this registry (`host` or `host:port`, exactly as in image
    /// references) over plain HTTP when resolving images. Repeatable; the
    /// environment variable takes a comma-separated list. Loopback
    /// registries always use plain HTTP.
    #[arg(
        long = "insecure-registry",
        env = "SPINDLE_INSECURE_REGISTRIES",
        value_name = "HOST[:PORT]",
        value_delimiter = ','
    )]
    insecure_registries: Vec<String>,

    /// Reconcile SpinApps of spin-operator's pre-v0.4 group
    /// `core.spinoperator.dev` when its CRD is installed
    /// (`--legacy-group=false` to turn off, e.g. when the chart does not
    /// install that CRD).
    #[arg(
        long,
        env = "SPINDLE_LEGACY_GROUP",
        default_value_t = true,
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    legacy_group: bool,

    #[command(flatten)]
    scale_to_zero: spindle::controller::scale_to_zero::Args,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args).await,
        Command::Crd { out_dir } => print_crds(out_dir),
        Command::Push(args) => spindle::oci::push::run(args).await,
        Command::Activator(args) => spindle::activator::run::run(args).await,
        Command::Convert { file } => convert(&file),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let filter = args
        .log_level
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| spindle::telemetry::DEFAULT_FILTER.to_owned());
    spindle::telemetry::init(args.log_format, &filter).context("setting up logging")?;

    let metrics = Metrics::new();
    let readiness = Readiness::default();
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(spindle::leader::default_identity);

    let mut kube_config = kube::Config::infer()
        .await
        .context("loading the Kubernetes client configuration")?;
    // Tells this replica's requests apart in audit logs and in API Priority
    // and Fairness rules.
    let user_agent = format!("spindle/{} ({identity})", env!("CARGO_PKG_VERSION"));
    kube_config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(&user_agent)
            .context("the identity must be printable ASCII (it goes into the User-Agent)")?,
    ));
    let client_builder = || {
        kube::client::ClientBuilder::try_from(kube_config.clone())
            .context("building the Kubernetes client")
    };
    // With leader election, every write of the controllers passes the
    // elector's fence; the elector's own Lease requests use a client without it.
    let elector = args.leader_elect.then(|| {
        let namespace = args
            .leader_election_namespace
            .clone()
            .or_else(|| {
                std::env::var("POD_NAMESPACE")
                    .ok()
                    .filter(|v| !v.is_empty())
            })
            .unwrap_or_else(|| "default".to_owned());
        client_builder().map(|b| {
            LeaderElector::new(
                b.with_layer(&metrics.count_requests()).build(),
                LeaseConfig::new(namespace, &args.lease_name, &identity),
            )
        })
    });
    let elector = elector.transpose()?;
    let fence = elector
        .as_ref()
        .map_or_else(spindle::fence::Fence::open, LeaderElector::fence);
    let client = client_builder()?
        .with_layer(&metrics.count_requests())
        .with_layer(&fence.layer(&metrics))
        .build();

    if let Err(error) =
        spindle::controller::check_crds_installed(&client, args.namespace.as_deref()).await
    {
        anyhow::bail!(
            "{error}\n\nSpindle needs its CustomResourceDefinitions (spinapps.core.spinkube.dev and \
             spinappexecutors.core.spinkube.dev) and permission to list them. Install them with the Helm chart, \
             or with `kubectl apply -f crds/` from the Spindle repository (`spindle crd` prints them)."
        );
    }

    // Shutdown: SIGTERM or SIGINT.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    let server = spindle::http::serve(
        args.http_addr,
        metrics.clone(),
        readiness.clone(),
        stopped(),
    )
    .await
    .context("starting the HTTP endpoint")?;
    let server = tokio::spawn(server);

    let config = spindle::controller::Config {
        namespace: args.namespace.clone(),
        concurrency: args.concurrency,
        resync_interval: Duration::from_secs(args.resync_seconds),
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        instance: Some(identity.clone()),
        legacy_group: args.legacy_group,
        scale_to_zero: args.scale_to_zero.options(),
        resolver: args.resolve_images.then(|| {
            std::sync::Arc::new(spindle::oci::Resolver::new(spindle::oci::ResolverConfig {
                insecure_registries: args.insecure_registries.clone(),
                ..Default::default()
            }))
        }),
    };
    if !args.resolve_images && !args.insecure_registries.is_empty() {
        tracing::warn!("--insecure-registry has no effect with --resolve-images=false");
    }

    let result = if let Some(elector) = &elector {
        run_as_leader(client, config, elector, &metrics, &readiness, stopped).await
    } else {
        metrics.set_leader(true);
        spindle::controller::run_until(client, config, stopped()).await;
        Ok(())
    };

    // Stop the HTTP endpoint too (it shares the shutdown signal) and wait for it.
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP endpoint failed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP endpoint task failed"),
        _ => {}
    }
    result
}

/// Wait for the lease, reconcile while holding it, release it on shutdown.
/// A replica that loses the lease (another took over, or renewals failed for
/// the renew deadline, e.g. during an apiserver outage) stops its controllers
/// at once, cancelling running reconciles, and stands by for the lease again
/// in the same process: exiting would put the pod into CrashLoopBackOff
/// during exactly the outages it has to ride out. Writes are fenced
/// meanwhile ([`spindle::fence`]).
async fn run_as_leader<F, Fut>(
    client: kube::Client,
    config: spindle::controller::Config,
    elector: &LeaderElector,
    metrics: &Metrics,
    readiness: &Readiness,
    stopped: F,
) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + Sync + 'static,
{
    loop {
        metrics.set_leader(false);
        readiness.set_caches_synced(false);
        readiness.set_standby(true);
        tracing::info!(lease = %elector.config().name, namespace = %elector.config().namespace, identity = %elector.config().identity, "waiting for the leader lease");
        tokio::select! {
            () = elector.acquire() => {}
            () = stopped() => return Ok(()),
        }
        metrics.set_leader(true);
        readiness.set_standby(false);

        let lost = tokio::select! {
            () = spindle::controller::run_until(client.clone(), config.clone(), stopped()) => None,
            lost = elector.hold() => Some(lost),
        };
        metrics.set_leader(false);
        match lost {
            None => {
                if let Err(error) = elector.release().await {
                    tracing::warn!(%error, "could not release the leader lease; it expires by itself");
                }
                return Ok(());
            }
            Some(lost) => tracing::error!(
                error = %lost,
                "lost the leader lease; controllers stopped, standing by"
            ),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn convert(file: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Read as _;
    let mut input = String::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut input)
            .context("reading stdin")?;
    } else {
        input =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    }
    let output = spindle::api::compat::convert_manifests(&input)?;
    print!("{output}");
    Ok(())
}

fn print_crds(out_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let crds = spindle::api::crds();
    match out_dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for crd in &crds {
                let path = dir.join(spindle::api::crd_file_name(crd));
                let yaml = spindle::api::crd_yaml(crd).context("serializing CRD")?;
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        None => {
            for crd in &crds {
                print!(
                    "---\n{}",
                    spindle::api::crd_yaml(crd).context("serializing CRD")?
                );
            }
        }
    }
    Ok(())
}
