//! Benchmark of the real activator process (`spindle activator`) against the
//! local control plane. Run it through `e2e/benches/activator.sh`.
//!
//! Pods need non-loopback IPs (the apiserver rejects loopback EndpointSlice
//! addresses), so the benchmark re-executes itself in a network namespace of
//! its own (`unshare --net`) where 10.244.0.0/16 is local; the apiserver on
//! the host's 127.0.0.1 is reached through a Unix-socket relay. Inside, it
//! starts `spindle activator`, gives it routes (Services) and backends
//! (EndpointSlices) through the API as the operator and kcm would, and
//! measures:
//!
//! 1. wake overhead: a request is sent while the app's only pod (a new pod IP
//!    each time, listed not-ready) does not listen; the pod binds after a
//!    random 5-30 ms and answers at once; overhead = response time −
//!    max(sent, listen). p50/p99 over `--cold-starts` (default 200). Also the
//!    demand Lease writes per wake, counted from a watch of the Leases.
//! 2. proxy overhead at `--rate` req/s (default 1,000) for `--seconds`
//!    (default 5), open loop, direct-to-pod and through-the-activator
//!    requests interleaved; with keep-alive clients and with a new client
//!    connection per request. Overhead = activator percentile − direct one.
//! 3. VmRSS of the activator process with `--idle-apps` (default 1,000)
//!    routed idle apps, and its Lease writes while they stay idle.
//!
//! Exits 1 if a goal is missed: wake p99 < 20 ms, proxy overhead p99 < 1 ms
//! (both client modes), 0 failed requests, 0 Lease writes while idle.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::task::JoinHandle;

const POD_PORT: u16 = 8080;
const FIRST_PORT: u16 = 20000;
const WAKE_P99_GOAL_MS: f64 = 20.0;
const PROXY_P99_GOAL_MS: f64 = 1.0;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn arg_str(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Some(sock) = arg_str("--inner") {
        let code = inner(PathBuf::from(sock)).await?;
        std::process::exit(code);
    }
    std::process::exit(outer().await?);
}

/// Host side: relay the apiserver to a Unix socket, run the benchmark in a
/// new network namespace, return its exit code.
async fn outer() -> anyhow::Result<i32> {
    let cfg = kube::Config::infer()
        .await
        .context("no kubeconfig (source <(e2e/scripts/controlplane.sh env))")?;
    let host = cfg.cluster_url.host().unwrap_or_default().to_owned();
    let port = cfg.cluster_url.port_u16().unwrap_or(443);
    if host != "127.0.0.1" && host != "localhost" {
        bail!("the apiserver must be on 127.0.0.1 (got {host}); use the local control plane");
    }
    let dir = std::env::temp_dir().join(format!("activator-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sock = dir.join("api.sock");
    let listener = UnixListener::bind(&sock)?;
    tokio::spawn(async move {
        while let Ok((u, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(t) = TcpStream::connect(("127.0.0.1", port)).await {
                    splice(u, t).await;
                }
            });
        }
    });
    let exe = std::env::current_exe()?;
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    args.extend(["--inner".into(), sock.display().to_string()]);
    args.extend(["--api-port".into(), port.to_string()]);
    // lo up, and the pod CIDR local: pods can then listen on "pod IPs".
    // A new connection per request at 2,000/s would otherwise run into
    // TIME_WAIT port exhaustion (a load-generator artefact, not the
    // activator); ephemeral ports stay above the activator's 20000+ range.
    let script = "ip link set lo up && ip addr add 10.244.0.1/16 dev lo \
        && echo 1 > /proc/sys/net/ipv4/tcp_tw_reuse \
        && echo '30000 65000' > /proc/sys/net/ipv4/ip_local_port_range \
        && exec \"$0\" \"$@\"";
    let status = tokio::process::Command::new("unshare")
        .args(["--net", "--", "sh", "-c", script])
        .arg(exe)
        .args(args)
        .status()
        .await
        .context("running unshare --net (needs root or CAP_SYS_ADMIN)")?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(status.code().unwrap_or(1))
}

async fn splice<A, B>(mut a: A, mut b: B)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
}

/// The activator process, killed on drop.
struct Activator {
    child: Child,
    admin: SocketAddr,
}

impl Drop for Activator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spindle_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = arg_str("--spindle") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let p = exe.with_file_name("spindle");
    if p.exists() {
        Ok(p)
    } else {
        bail!("pass --spindle <path to the spindle binary>")
    }
}

/// Namespace side: the benchmark proper.
async fn inner(sock: PathBuf) -> anyhow::Result<i32> {
    let api_port = u16::try_from(arg("--api-port", 0))?;
    let relay = TcpListener::bind(("127.0.0.1", api_port)).await?;
    tokio::spawn(async move {
        while let Ok((t, _)) = relay.accept().await {
            let sock = sock.clone();
            tokio::spawn(async move {
                if let Ok(u) = UnixStream::connect(&sock).await {
                    splice(t, u).await;
                }
            });
        }
    });

    let cold_starts = arg("--cold-starts", 200);
    let rate = arg("--rate", 1000);
    let seconds = arg("--seconds", 5);
    let idle_apps = u16::try_from(arg("--idle-apps", 1000).min(9000))?;
    let idle_seconds = arg("--idle-seconds", 10);

    let client = Client::try_default().await?;
    let ns = format!("activator-bench-{}", std::process::id());
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
    )
    .await?;
    let result = bench(
        &client,
        &ns,
        cold_starts,
        rate,
        seconds,
        idle_apps,
        idle_seconds,
    )
    .await;
    let _ = nss.delete(&ns, &DeleteParams::default()).await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn bench(
    client: &Client,
    ns: &str,
    cold_starts: u64,
    rate: u64,
    seconds: u64,
    idle_apps: u16,
    idle_seconds: u64,
) -> anyhow::Result<i32> {
    let log = std::env::temp_dir().join(format!("{ns}-activator.log"));
    let activator = start_activator(ns, idle_apps, &log).await?;
    let pid = activator.child.id();
    eprintln!("activator pid {pid}, log {}", log.display());
    let rss_empty = rss_kib(pid);

    let writes = Arc::new(LeaseWrites::default());
    tokio::spawn(count_lease_writes(
        Api::namespaced(client.clone(), ns),
        writes.clone(),
    ));

    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    services
        .create(&PostParams::default(), &service("app", FIRST_PORT)?)
        .await?;
    slices
        .create(&PostParams::default(), &slice("app", &[], false)?)
        .await?;
    let app = SocketAddr::from(([127, 0, 0, 1], FIRST_PORT));
    wait_for("the activator to route the app", || probe(app)).await?;

    // 1. Wake overhead.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut overheads = Vec::new();
    let mut failures = 0u64;
    let signals_before = metric(activator.admin, "spindle_activator_wake_signals_total").await;
    let writes_before = writes.count();
    for i in 0..cold_starts {
        let ip = Ipv4Addr::new(10, 244, 1 + (i / 250) as u8, 1 + (i % 250) as u8);
        let pod = SocketAddr::from((ip, POD_PORT));
        // A new pod appears not-ready in kcm's slice (as after a scale-up).
        slices
            .patch(
                "app-pods",
                &PatchParams::default(),
                &Patch::Merge(json!({"endpoints": [endpoint(ip, false)]})),
            )
            .await?;
        // Let the activator's watch deliver it before the pod listens.
        tokio::time::sleep(Duration::from_millis(30)).await;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(5 + seed % 26);
        let sent = Instant::now();
        let request = tokio::spawn(async move { (get_new(app).await, Instant::now()) });
        tokio::time::sleep(delay).await;
        let server = PodServer::start(pod).await?;
        let listen = server.listening;
        let (status, done) = request.await?;
        drop(server);
        if status == 200 {
            overheads.push(done - listen.max(sent));
        } else {
            failures += 1;
        }
    }
    // Renewals of a still-pending wake would land within a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let wake_writes = writes.count() - writes_before;
    let wake_signals =
        metric(activator.admin, "spindle_activator_wake_signals_total").await - signals_before;
    overheads.sort();
    let wake = Stats::of(&overheads);

    // 2. Proxy overhead, the app warm behind the activator.
    let pod_ip = Ipv4Addr::new(10, 244, 0, 10);
    let pod = SocketAddr::from((pod_ip, POD_PORT));
    let _server = PodServer::start(pod).await?;
    slices
        .patch(
            "app-pods",
            &PatchParams::default(),
            &Patch::Merge(json!({"endpoints": [endpoint(pod_ip, true)]})),
        )
        .await?;
    wait_for("the activator to use the ready pod", || async move {
        get_new(app).await == 200
    })
    .await?;
    let reused_before = metric(
        activator.admin,
        "spindle_activator_upstream_requests_total{connection=\"reused\"}",
    )
    .await;
    let new_before = metric(
        activator.admin,
        "spindle_activator_upstream_requests_total{connection=\"new\"}",
    )
    .await;
    let keep_alive = open_loop(pod, app, rate, seconds, true).await;
    let fresh = open_loop(pod, app, rate, seconds, false).await;
    let reused = metric(
        activator.admin,
        "spindle_activator_upstream_requests_total{connection=\"reused\"}",
    )
    .await
        - reused_before;
    let opened = metric(
        activator.admin,
        "spindle_activator_upstream_requests_total{connection=\"new\"}",
    )
    .await
        - new_before;
    let rss_one = rss_kib(pid);

    // 3. RSS with idle apps, and their Lease writes.
    let _: Vec<()> = futures::stream::iter(1..=idle_apps)
        .map(|i| {
            let services = services.clone();
            async move {
                let svc = service(&format!("idle-{i}"), FIRST_PORT + i)?;
                services.create(&PostParams::default(), &svc).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    let want = f64::from(idle_apps) + 1.0;
    let admin = activator.admin;
    wait_for(
        "the activator to listen for every idle app",
        || async move { metric(admin, "spindle_activator_listeners").await >= want },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = rss_kib(pid);
    let idle_before = writes.count();
    tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
    let idle_writes = writes.count() - idle_before;
    if !writes.watching.load(Ordering::SeqCst) {
        bail!("the Lease watch is not running; write counts would be wrong");
    }
    drop(activator);

    // Report.
    let mut missed = Vec::new();
    println!();
    println!("| measure | value |");
    println!("| --- | --- |");
    println!(
        "| wake overhead, {} cold starts ({failures} failed) | p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (goal p99 < {WAKE_P99_GOAL_MS} ms) |",
        overheads.len(),
        wake.p50,
        wake.p99,
        wake.max
    );
    if wake.p99.is_nan() || wake.p99 >= WAKE_P99_GOAL_MS || failures > 0 {
        missed.push("wake overhead");
    }
    println!(
        "| demand Lease writes per wake (5-30 ms wakes) | {:.2} ({wake_writes} writes seen by a watch, {wake_signals} signals, {cold_starts} wakes) |",
        wake_writes as f64 / cold_starts.max(1) as f64
    );
    for (label, run) in [
        ("keep-alive clients", &keep_alive),
        ("new connection per request", &fresh),
    ] {
        let (d, a) = (&run.direct, &run.activator);
        let (o50, o99) = (a.p50 - d.p50, a.p99 - d.p99);
        println!(
            "| proxy overhead at {rate} req/s, {label} | p50 {o50:.3} ms, p90 {:.3} ms, p99 {o99:.3} ms (goal p99 < {PROXY_P99_GOAL_MS} ms); p50/p90/p99/max direct {:.3}/{:.3}/{:.3}/{:.1}, activator {:.3}/{:.3}/{:.3}/{:.1} ms; {} + {} requests, {} failed |",
            a.p90 - d.p90,
            d.p50,
            d.p90,
            d.p99,
            d.max,
            a.p50,
            a.p90,
            a.p99,
            a.max,
            d.n,
            a.n,
            run.failed
        );
        if o99.is_nan() || o99 >= PROXY_P99_GOAL_MS || run.failed > 0 {
            missed.push("proxy overhead");
        }
    }
    println!(
        "| activator → pod connections during the load | {opened} opened, {reused} requests on reused keep-alive connections |"
    );
    println!(
        "| activator VmRSS | {rss_empty} KiB with no app, {rss_one} KiB after the load (1 app), {rss_idle} KiB with {idle_apps} idle apps ({:.1} KiB per idle app) |",
        rss_idle.saturating_sub(rss_one) as f64 / f64::from(idle_apps.max(1))
    );
    println!("| Lease writes in {idle_seconds} s with {idle_apps} idle apps | {idle_writes} |");
    if idle_writes > 0 {
        missed.push("idle writes");
    }
    println!();
    if missed.is_empty() {
        println!("all goals met");
        Ok(0)
    } else {
        println!("goals missed: {}", missed.join(", "));
        Ok(1)
    }
}

async fn start_activator(ns: &str, idle_apps: u16, log: &Path) -> anyhow::Result<Activator> {
    let admin = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    let child = Command::new(spindle_bin()?)
        .args(["activator", "--listen-ip", "127.0.0.1"])
        .args(["--admin-addr", &admin.to_string()])
        .args([
            "--port-range",
            &format!("{FIRST_PORT}-{}", FIRST_PORT + idle_apps),
        ])
        .args(["--namespace", ns, "--identity", "activator-bench"])
        .args(["--shutdown-delay-seconds", "0"])
        .env("SPINDLE_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log)?)
        .stderr(std::fs::File::create(log.with_extension("err"))?)
        .spawn()
        .context("starting spindle activator")?;
    let activator = Activator { child, admin };
    wait_for("the activator's /readyz", || async move {
        http_get(admin, "/readyz").await.0 == 200
    })
    .await?;
    Ok(activator)
}

fn service(name: &str, port: u16) -> anyhow::Result<Service> {
    Ok(serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/managed-by": "spindle",
                "core.spinkube.dev/app-name": name,
            },
            "annotations": {
                "spindle.spinkube.dev/activator-port": port.to_string(),
                "spindle.spinkube.dev/cold-start-timeout": "10000ms",
                "spindle.spinkube.dev/max-pending-requests": "1000",
            },
        },
        // No selector: the benchmark writes the app's slice itself.
        "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80, "targetPort": POD_PORT}]},
    }))?)
}

fn endpoint(ip: Ipv4Addr, ready: bool) -> serde_json::Value {
    json!({"addresses": [ip.to_string()], "conditions": {"ready": ready}})
}

fn slice(app: &str, ips: &[Ipv4Addr], ready: bool) -> anyhow::Result<EndpointSlice> {
    let endpoints: Vec<_> = ips.iter().map(|ip| endpoint(*ip, ready)).collect();
    Ok(serde_json::from_value(json!({
        "metadata": {
            "name": format!("{app}-pods"),
            "labels": {
                "kubernetes.io/service-name": app,
                "core.spinkube.dev/app-name": app,
                "endpointslice.kubernetes.io/managed-by": "activator-bench",
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": POD_PORT, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))?)
}

/// Lease writes, as distinct resourceVersions seen by a watch.
#[derive(Default)]
struct LeaseWrites {
    seen: Mutex<HashSet<(String, String)>>,
    watching: AtomicBool,
}

impl LeaseWrites {
    fn count(&self) -> u64 {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len() as u64
    }
}

async fn count_lease_writes(api: Api<Lease>, writes: Arc<LeaseWrites>) {
    let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::InitDone) => writes.watching.store(true, Ordering::SeqCst),
            Ok(Event::Apply(l)) | Ok(Event::InitApply(l)) => {
                let rv = l.resource_version().unwrap_or_default();
                writes
                    .seen
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((l.name_any(), rv));
            }
            Ok(_) => {}
            Err(_) => writes.watching.store(false, Ordering::SeqCst),
        }
    }
}

async fn wait_for<F, Fut>(what: &str, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    // Generous: 1,000 Services pass through a shared, loaded apiserver.
    let deadline = Instant::now() + Duration::from_secs(180);
    while !f().await {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A pod: answers every request `200 ok`, keep-alive; stops (listener and
/// connections) on drop.
struct PodServer {
    task: JoinHandle<()>,
    listening: Instant,
}

impl PodServer {
    async fn start(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding pod {addr}"))?;
        let listening = Instant::now();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((s, _)) = listener.accept().await {
                conns.spawn(serve_conn(s));
                while conns.try_join_next().is_some() {}
            }
        });
        Ok(PodServer { task, listening })
    }
}

impl Drop for PodServer {
    fn drop(&mut self) {
        // Dropping the task's JoinSet aborts every connection.
        self.task.abort();
    }
}

async fn serve_conn(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::with_capacity(1024);
    loop {
        let Some((head, _)) = read_message(&mut s, &mut buf).await else {
            return;
        };
        let close = head.to_ascii_lowercase().contains("\r\nconnection: close");
        let resp: &[u8] = if close {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        };
        if s.write_all(resp).await.is_err() || close {
            return;
        }
    }
}

/// Reads one HTTP/1.1 message (head + content-length body) from `s`,
/// keeping what follows in `buf`. Returns the head and the body length.
async fn read_message(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, usize)> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .and_then(|v| v.trim().parse().ok())
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..end + 4 + len);
            return Some((head, len));
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn status_of(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// GET over a new connection (`connection: close`); the status, 0 on error.
async fn get_new(addr: SocketAddr) -> u16 {
    http_get(addr, "/").await.0
}

async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let _ = s.set_nodelay(true);
    let req = format!("GET {path} HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status_of(head), body.to_owned())
}

/// The activator answers a probe itself once it listens for the app.
async fn probe(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return false;
    };
    let req = "GET / HTTP/1.1\r\nhost: bench\r\nspindle-probe: bench\r\nconnection: close\r\n\r\n";
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200")
}

/// The value of one sample line of the activator's /metrics (0 if absent).
async fn metric(admin: SocketAddr, sample: &str) -> f64 {
    let (_, body) = http_get(admin, "/metrics").await;
    body.lines()
        .filter_map(|l| l.strip_prefix(sample))
        .filter_map(|rest| {
            let rest = rest.strip_prefix(' ').or_else(|| {
                // `name{labels} v` when the sample was given without labels.
                rest.strip_prefix('{')
                    .and_then(|r| r.split_once("} ").map(|(_, v)| v))
            })?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Keep-alive client connections to one address.
struct KeepAliveClient {
    addr: SocketAddr,
    idle: Mutex<Vec<(TcpStream, Vec<u8>)>>,
}

impl KeepAliveClient {
    async fn get(&self) -> u16 {
        let taken = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let (mut s, mut buf) = match taken {
            Some(c) => c,
            None => match TcpStream::connect(self.addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    (s, Vec::new())
                }
                Err(_) => return 0,
            },
        };
        if s.write_all(b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n")
            .await
            .is_err()
        {
            return 0;
        }
        let Some((head, _)) = read_message(&mut s, &mut buf).await else {
            return 0;
        };
        let status = status_of(&head);
        if !head.to_ascii_lowercase().contains("\r\nconnection: close") {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((s, buf));
        }
        status
    }
}

#[derive(Debug, Clone, Copy)]
struct Stats {
    n: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Stats {
    fn of(sorted: &[Duration]) -> Stats {
        let pct = |p: f64| {
            if sorted.is_empty() {
                return f64::NAN;
            }
            let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
            sorted[i].as_secs_f64() * 1000.0
        };
        Stats {
            n: sorted.len(),
            p50: pct(0.5),
            p90: pct(0.9),
            p99: pct(0.99),
            max: pct(1.0),
        }
    }
}

struct Run {
    direct: Stats,
    activator: Stats,
    failed: u64,
}

/// Open loop: `rate` req/s to each of `direct` and `activator`, interleaved,
/// for `seconds` (after a 1 s warm-up). Latency from the moment a request
/// starts until its response is read.
async fn open_loop(
    direct: SocketAddr,
    activator: SocketAddr,
    rate: u64,
    seconds: u64,
    keep_alive: bool,
) -> Run {
    let clients = [direct, activator].map(|addr| {
        Arc::new(KeepAliveClient {
            addr,
            idle: Mutex::new(Vec::new()),
        })
    });
    let failed = Arc::new(AtomicU64::new(0));
    let mut lat: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let warmup = rate;
    let total = 2 * (warmup + rate * seconds);
    let period = Duration::from_secs_f64(1.0 / (2 * rate.max(1)) as f64);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let at = start + period.mul_f64(i as f64);
        tokio::time::sleep_until(at.into()).await;
        let which = (i % 2) as usize;
        let client = clients[which].clone();
        let failed = failed.clone();
        let measured = i >= 2 * warmup;
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let status = if keep_alive {
                client.get().await
            } else {
                get_new(client.addr).await
            };
            let d = t.elapsed();
            if status != 200 && measured {
                failed.fetch_add(1, Ordering::SeqCst);
            }
            (which, measured && status == 200, d)
        }));
    }
    for t in tasks {
        if let Ok((which, ok, d)) = t.await
            && ok
        {
            lat[which].push(d);
        }
    }
    for l in &mut lat {
        l.sort();
    }
    Run {
        direct: Stats::of(&lat[0]),
        activator: Stats::of(&lat[1]),
        failed: failed.load(Ordering::SeqCst),
    }
}
