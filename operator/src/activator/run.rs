//! `spindle activator`: the activator process.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use super::kube::{LeaseDemand, SliceDiscovery, sync_routes};
use super::{Activator, ActivatorMetrics, AdminState, BackendDiscovery, Config, serve_admin};
use crate::telemetry::LogFormat;

/// Flags of `spindle activator` (each also settable as `SPINDLE_ACTIVATOR_*`).
#[derive(Args, Debug)]
pub struct ActivatorArgs {
    /// Address of /healthz, /readyz, /metrics and /v1/activity.
    #[arg(
        long,
        env = "SPINDLE_ACTIVATOR_ADMIN_ADDR",
        default_value = "0.0.0.0:9090"
    )]
    pub admin_addr: SocketAddr,

    /// IP the per-app listeners bind.
    #[arg(long, env = "SPINDLE_ACTIVATOR_LISTEN_IP", default_value = "0.0.0.0")]
    pub listen_ip: IpAddr,

    /// Activator ports the operator may assign, `first-last`.
    #[arg(long, env = "SPINDLE_ACTIVATOR_PORT_RANGE", default_value = "20000-29999", value_parser = crate::scale::parse_port_range)]
    pub port_range: RangeInclusive<u16>,

    /// Namespace of the demand Leases (default: `POD_NAMESPACE`, else `spindle-system`).
    #[arg(long, env = "SPINDLE_ACTIVATOR_NAMESPACE")]
    pub namespace: Option<String>,

    /// Requests held at most over all apps; beyond, 503 + Retry-After.
    #[arg(long, env = "SPINDLE_ACTIVATOR_MAX_PENDING_GLOBAL", default_value_t = super::DEFAULT_MAX_PENDING_GLOBAL)]
    pub max_pending_global: u32,

    /// Seconds a listener stays after its app's route disappears (stale kube-proxy rules).
    #[arg(
        long,
        env = "SPINDLE_ACTIVATOR_PORT_LINGER_SECONDS",
        default_value_t = 600
    )]
    pub port_linger_seconds: u64,

    /// Seconds to keep serving after SIGTERM with /readyz failing, so that the
    /// operator drops this pod from activator slices first.
    #[arg(
        long,
        env = "SPINDLE_ACTIVATOR_SHUTDOWN_DELAY_SECONDS",
        default_value_t = 15
    )]
    pub shutdown_delay_seconds: u64,

    /// After the delay, seconds at most to let held and in-flight requests
    /// finish (each also bounded by its app's coldStartTimeout); what is left
    /// then gets 503 + Retry-After. Keep delay + grace + 5 under the pod's
    /// terminationGracePeriodSeconds (the chart sets delay + 30).
    #[arg(
        long,
        env = "SPINDLE_ACTIVATOR_SHUTDOWN_GRACE_SECONDS",
        default_value_t = 25
    )]
    pub shutdown_grace_seconds: u64,

    /// This pod's identity in demand Leases (default: `POD_NAME`, else the host name).
    #[arg(long, env = "SPINDLE_ACTIVATOR_IDENTITY")]
    pub identity: Option<String>,

    /// Log format.
    #[arg(long, env = "SPINDLE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (default: `RUST_LOG`, else `info,kube_client::client::builder=off`).
    #[arg(long, env = "SPINDLE_LOG_LEVEL")]
    pub log_level: Option<String>,
}

/// Run the activator until SIGTERM/SIGINT.
pub async fn run(args: ActivatorArgs) -> anyhow::Result<()> {
    let filter = args
        .log_level
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| crate::telemetry::DEFAULT_FILTER.to_owned());
    crate::telemetry::init(args.log_format, &filter).context("setting up logging")?;

    let client = kube::Client::try_default()
        .await
        .context("building the Kubernetes client")?;
    let namespace = args
        .namespace
        .clone()
        .or_else(|| {
            std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|v| !v.is_empty())
        })
        .unwrap_or_else(|| "spindle-system".to_owned());
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(crate::leader::default_identity);

    let demand = Arc::new(LeaseDemand::new(client.clone(), &namespace, identity));
    let activator = Activator::new(
        Config {
            listen_ip: args.listen_ip,
            max_pending_global: args.max_pending_global,
        },
        ActivatorMetrics::new(),
        demand,
    );
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let state = AdminState {
        activator: activator.clone(),
        ready: ready.clone(),
    };
    let (admin, server) = serve_admin(args.admin_addr, state, stopped()).await?;
    tracing::info!(%admin, ports = ?args.port_range, %namespace, "activator starting");
    let server = tokio::spawn(server);

    tokio::spawn(Arc::new(SliceDiscovery::new(client.clone())).run(activator.clone()));
    let synced = ready.clone();
    tokio::spawn(sync_routes(
        client,
        activator.clone(),
        args.port_range.clone(),
        Duration::from_secs(args.port_linger_seconds),
        move || {
            synced.store(true, Ordering::SeqCst);
            tracing::info!("routes synced; ready");
        },
    ));

    shutdown_signal().await;
    tracing::info!(
        delay = args.shutdown_delay_seconds,
        "shutdown requested; failing /readyz and draining"
    );
    ready.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(args.shutdown_delay_seconds)).await;
    tracing::info!(
        grace = args.shutdown_grace_seconds,
        connections = activator.open_connections(),
        pending = activator.pending_global(),
        "no longer accepting; finishing held and in-flight requests"
    );
    activator
        .shutdown(Duration::from_secs(args.shutdown_grace_seconds))
        .await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn port_range() {
        assert_eq!(
            crate::scale::parse_port_range("20000-29999"),
            Ok(20000..=29999)
        );
        assert!(crate::scale::parse_port_range("5-4").is_err());
        assert!(crate::scale::parse_port_range("0-4").is_err());
        assert!(crate::scale::parse_port_range("20000").is_err());
    }
}
