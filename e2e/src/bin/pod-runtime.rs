//! Harness "pod runtime" of the netns test tier (docs/e2e.md): the part of a
//! kubelet the scale-to-zero proof needs, for pods kwok has started.
//!
//! kwok (netns mode) moves a pod to Running with a pod IP but never marks it
//! Ready. This process watches the pods of one namespace on the kwok node and,
//! for each one:
//!
//! 1. after `--start-delay-ms` (the emulated Spin start) binds podIP:port for
//!    every TCP containerPort (port 80 when none is declared) and serves real
//!    HTTP/1.1: it answers every request with its id (`x-request-id`), the pod,
//!    the method and the body length, after `--latency-ms` (or the request's
//!    `x-delay-ms`);
//! 2. after `--ready-delay-ms` (the emulated readiness probe) patches the pod
//!    Ready, so kube-controller-manager marks its endpoint ready;
//! 3. with `--crash-after-ready N`, the first N pods to become Ready crash at
//!    once: listeners and connections dropped, Ready=False, restartCount+1, and
//!    a restart after `--restart-delay-ms`, as a kubelet restarts a container;
//! 4. once the pod is terminating, keeps serving for its `preStop.sleep`
//!    seconds, then stops abruptly (in-flight requests are aborted, as the Spin
//!    shim does at SIGTERM) and deletes the pod with grace 0, as the kubelet
//!    does when the container has exited. A pod deleted under it stops at once.
//!
//! Every request and lifecycle step is one JSON line in `--log` (`ev` is
//! `listen`, `ready`, `req`, `crash`, `drain`, `stop` or `killed`; `t_ms` is Unix
//! time in ms), which the tests cross-check against what their clients saw.
//! Run it inside the tier's namespace (`controlplane.sh exec -- pod-runtime ...`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use futures::StreamExt as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

#[derive(Parser, Debug, Clone)]
#[command(about = "Harness pod runtime for the netns test tier")]
struct Args {
    /// Namespace whose pods this runtime runs.
    #[arg(long)]
    namespace: String,
    /// Node whose pods this runtime runs.
    #[arg(long, default_value = "kwok-node-0")]
    node: String,
    /// JSON-lines log of requests and lifecycle events.
    #[arg(long)]
    log: PathBuf,
    /// Pod IP known → listening (the emulated app start).
    #[arg(long, default_value_t = 20)]
    start_delay_ms: u64,
    /// Listening → Ready patched (the emulated readiness probe).
    #[arg(long, default_value_t = 50)]
    ready_delay_ms: u64,
    /// Time the app takes per request (a request's `x-delay-ms` overrides it).
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// This many pod starts crash right after becoming Ready.
    #[arg(long, default_value_t = 0)]
    crash_after_ready: u32,
    /// Crash → the container runs again.
    #[arg(long, default_value_t = 500)]
    restart_delay_ms: u64,
}

/// The JSON-lines log; one `write` per line, so lines never interleave.
struct Log(Mutex<std::fs::File>);

impl Log {
    fn event(&self, mut v: serde_json::Value) {
        v["t_ms"] = json!(now_ms());
        let mut line = v.to_string();
        line.push('\n');
        if let Ok(mut f) = self.0.lock() {
            // A lost log line would show up as a cross-check failure, never silently.
            if let Err(e) = f.write_all(line.as_bytes()) {
                eprintln!("pod-runtime: writing the log: {e}");
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

struct Ctx {
    args: Args,
    log: Log,
    pods: Api<Pod>,
    crashes_left: AtomicU32,
}

/// What the watch loop tells a pod's task.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Signal {
    Run,
    /// Terminating: drain for this many seconds, then stop.
    Drain(u64),
    /// The pod object is gone: stop now.
    Kill,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.log)
        .with_context(|| format!("opening {}", args.log.display()))?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the cluster (KUBECONFIG)")?;
    let pods: Api<Pod> = Api::namespaced(client, &args.namespace);
    let ctx = Arc::new(Ctx {
        crashes_left: AtomicU32::new(args.crash_after_ready),
        log: Log(Mutex::new(file)),
        pods: pods.clone(),
        args,
    });
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.args.node));
    let mut events = watcher(pods, config).boxed();
    // uid → the signal channel of the pod's task.
    let mut running: HashMap<String, watch::Sender<Signal>> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    eprintln!(
        "pod-runtime: running pods of namespace {}",
        ctx.args.namespace
    );
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(event) = event else { break };
        let pod = match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
            Ok(watcher::Event::Delete(pod)) => {
                if let Some(tx) = pod.metadata.uid.as_ref().and_then(|u| running.remove(u)) {
                    let _ = tx.send(Signal::Kill);
                }
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                eprintln!("pod-runtime: watch error (retrying): {e}");
                continue;
            }
        };
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            match running.entry(uid) {
                std::collections::hash_map::Entry::Occupied(tx) => {
                    if *tx.get().borrow() == Signal::Run {
                        let _ = tx.get().send(Signal::Drain(prestop_seconds(&pod)));
                    }
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    // Never started (or started by an earlier runtime): nothing
                    // serves it, so finish its termination as the kubelet would.
                    let ctx = ctx.clone();
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    tasks.spawn(async move { delete_now(&ctx, &name).await });
                    slot.insert(watch::channel(Signal::Kill).0);
                }
            }
            continue;
        }
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
        let running_phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        if running.contains_key(&uid) || !running_phase {
            continue;
        }
        let Some(ip) = ip.and_then(|i| i.parse::<IpAddr>().ok()) else {
            continue;
        };
        let (tx, rx) = watch::channel(Signal::Run);
        running.insert(uid, tx);
        let ctx = ctx.clone();
        tasks.spawn(async move { run_pod(ctx, pod, ip, rx).await });
        // Reap finished pod tasks so the set does not grow without bound.
        while tasks.try_join_next().is_some() {}
    }
    eprintln!("pod-runtime: stopping");
    tasks.shutdown().await;
    Ok(())
}

/// The longest `preStop.sleep.seconds` among the pod's containers.
fn prestop_seconds(pod: &Pod) -> u64 {
    pod.spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .filter_map(|c| {
                    c.lifecycle
                        .as_ref()?
                        .pre_stop
                        .as_ref()?
                        .sleep
                        .as_ref()
                        .map(|s| s.seconds.max(0) as u64)
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

fn container_ports(pod: &Pod) -> Vec<u16> {
    let mut ports: Vec<u16> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    if ports.is_empty() {
        ports.push(80);
    }
    ports
}

async fn run_pod(ctx: Arc<Ctx>, pod: Pod, ip: IpAddr, mut rx: watch::Receiver<Signal>) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let ports = container_ports(&pod);
    let mut restarts = 0u32;
    loop {
        if wait_or_signal(&mut rx, Duration::from_millis(ctx.args.start_delay_ms)).await {
            let signal = *rx.borrow();
            return finish(&ctx, &name, signal).await;
        }
        let mut servers = JoinSet::new();
        for &port in &ports {
            let addr = SocketAddr::new(ip, port);
            match listen(addr) {
                Ok(l) => {
                    servers.spawn(serve(ctx.clone(), name.clone(), l));
                    ctx.log
                        .event(json!({"ev": "listen", "pod": name, "addr": addr.to_string()}));
                }
                Err(e) => {
                    ctx.log.event(
                        json!({"ev": "bind_error", "pod": name, "addr": addr.to_string(), "error": e.to_string()}),
                    );
                    eprintln!("pod-runtime: {name}: binding {addr}: {e}");
                }
            }
        }
        if wait_or_signal(&mut rx, Duration::from_millis(ctx.args.ready_delay_ms)).await {
            let signal = *rx.borrow();
            return drain_and_stop(&ctx, &name, servers, signal, &mut rx).await;
        }
        if let Err(e) = set_ready(&ctx, &pod, true, restarts).await {
            eprintln!("pod-runtime: {name}: marking Ready: {e:#}");
        } else {
            ctx.log.event(json!({"ev": "ready", "pod": name}));
        }
        let crash = ctx
            .crashes_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if crash {
            servers.shutdown().await;
            restarts += 1;
            ctx.log.event(json!({"ev": "crash", "pod": name}));
            if let Err(e) = set_ready(&ctx, &pod, false, restarts).await {
                eprintln!("pod-runtime: {name}: marking not Ready: {e:#}");
            }
            if wait_or_signal(&mut rx, Duration::from_millis(ctx.args.restart_delay_ms)).await {
                let signal = *rx.borrow();
                return finish(&ctx, &name, signal).await;
            }
            continue;
        }
        // Serving: wait for termination.
        while *rx.borrow_and_update() == Signal::Run {
            if rx.changed().await.is_err() {
                break;
            }
        }
        let signal = *rx.borrow();
        return drain_and_stop(&ctx, &name, servers, signal, &mut rx).await;
    }
}

/// A listener with a backlog deep enough for a burst of thousands of connects.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Sleeps `d`; true when a signal other than Run arrived meanwhile.
async fn wait_or_signal(rx: &mut watch::Receiver<Signal>, d: Duration) -> bool {
    let sleep = tokio::time::sleep(d);
    tokio::pin!(sleep);
    loop {
        if *rx.borrow_and_update() != Signal::Run {
            return true;
        }
        tokio::select! {
            _ = &mut sleep => return false,
            r = rx.changed() => if r.is_err() { return true },
        }
    }
}

async fn drain_and_stop(
    ctx: &Ctx,
    name: &str,
    mut servers: JoinSet<()>,
    signal: Signal,
    rx: &mut watch::Receiver<Signal>,
) {
    if let Signal::Drain(secs) = signal {
        ctx.log
            .event(json!({"ev": "drain", "pod": name, "seconds": secs}));
        // Keep serving through the preStop sleep, unless the pod is deleted under us.
        let deadline = tokio::time::sleep(Duration::from_secs(secs));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                r = rx.changed() => {
                    if r.is_err() || *rx.borrow() == Signal::Kill { break }
                }
            }
        }
    }
    servers.shutdown().await;
    let signal = *rx.borrow();
    finish(ctx, name, signal).await;
}

async fn finish(ctx: &Ctx, name: &str, signal: Signal) {
    if signal == Signal::Kill {
        ctx.log.event(json!({"ev": "killed", "pod": name}));
        return;
    }
    ctx.log.event(json!({"ev": "stop", "pod": name}));
    delete_now(ctx, name).await;
}

/// The container has exited: remove the pod object (grace 0), as the kubelet does.
async fn delete_now(ctx: &Ctx, name: &str) {
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    if let Err(e) = ctx.pods.delete(name, &dp).await
        && !matches!(&e, kube::Error::Api(s) if s.code == 404)
    {
        eprintln!("pod-runtime: deleting {name}: {e}");
    }
}

async fn set_ready(ctx: &Ctx, pod: &Pod, ready: bool, restarts: u32) -> anyhow::Result<()> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = if ready { "True" } else { "False" };
    // kwok's start stage left reason ContainersNotReady; null removes it.
    let reason = if ready {
        serde_json::Value::Null
    } else {
        json!("ContainersNotReady")
    };
    let containers: Vec<_> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| {
            json!({"name": c.name, "image": c.image, "ready": ready, "started": ready,
                   "restartCount": restarts, "state": {"running": {"startedAt": now}}})
        })
        .collect();
    let patch = json!({"status": {
        "conditions": [
            {"type": "Ready", "status": status, "reason": reason, "lastTransitionTime": now},
            {"type": "ContainersReady", "status": status, "reason": reason, "lastTransitionTime": now},
        ],
        "containerStatuses": containers,
    }});
    ctx.pods
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .with_context(|| format!("patching {name}/status"))?;
    Ok(())
}

/// Accepts connections until the task is aborted; aborting drops every
/// connection, which is the abrupt stop the Spin shim does at SIGTERM.
async fn serve(ctx: Arc<Ctx>, pod: String, listener: TcpListener) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of fds or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let pod = pod.clone();
        conns.spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(ctx.clone(), pod.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
        while conns.try_join_next().is_some() {}
    }
}

async fn handle(
    ctx: Arc<Ctx>,
    pod: String,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let delay = req
        .headers()
        .get("x-delay-ms")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(ctx.args.latency_ms);
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    // Logged once the request has reached the app: a POST logged twice was replayed.
    ctx.log
        .event(json!({"ev": "req", "pod": pod, "id": id, "method": method, "path": path}));
    let body_len = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().len(),
        Err(_) => return Ok(Response::new(Full::new(Bytes::new()))),
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let body = json!({"id": id, "pod": pod, "method": method, "body_len": body_len});
    Ok(Response::builder()
        .header("content-type", "application/json")
        .header("x-pod", pod.as_str())
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}
