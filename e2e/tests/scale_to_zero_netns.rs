//! The network-namespace tier (docs/e2e.md, issue #7's proof harness).
//!
//! `controlplane.sh start --netns` runs the whole control plane inside a
//! network namespace where the pod CIDR and the Service range are local, so
//! real HTTP reaches "pods" and ClusterIPs. This binary (its own harness,
//! `harness = false`) re-executes itself inside that namespace (`nsenter`;
//! needs root) and runs its tests one after the other (the 2-core machine is
//! shared). Each test starts, for its own namespace, the harness pod runtime
//! (`e2e/src/bin/pod-runtime.rs`) and one or more kube-proxy stand-ins
//! (`e2e/src/bin/mini-proxy.rs`), and sends real HTTP with unique request ids
//! and no retries, cross-checked against the pod runtime's log.
//!
//! First the harness proves itself (kwok leaves Ready to the pod runtime; a
//! Service answers through the proxy; the proxy's lag is honoured; a
//! terminating pod drains; a crashing pod restarts). The scale-to-zero
//! scenarios with the real `spindle run` and `spindle activator` come after.
//!
//! Without the tier (not started, or not root) every test is SKIPPED with the
//! reason and counted as ignored; `SPINDLE_NETNS_REQUIRED=1` (set by
//! `e2e/scripts/test.sh` when it started the tier) turns that into a failure.
//!
//! Usage: `cargo test -p spindle-e2e --test scale_to_zero_netns [-- FILTER...] [--list]`
//! (the tier's state dir: `$SPINDLE_NETNS_STATE`, default `<repo>/.spindle/cp-netns`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use spindle_e2e::scenario::{Args, Outcome, Selection, Summary};
use spindle_e2e::{TestNamespace, repo_root, scenarios, wait_for};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// Set for the copy of this binary that `enter_tier` runs inside the namespace.
const INSIDE_ENV: &str = "SPINDLE_NETNS_INSIDE";

fn main() {
    let args = Args::from_env();
    let selection = Selection::new(
        &scenarios![
            harness_kwok_leaves_ready_to_the_pod_runtime,
            harness_service_answers_through_the_proxy,
            harness_proxy_lag_is_honoured,
            harness_terminating_pod_drains_then_stops,
            harness_pod_crashing_after_ready_restarts,
            stz_a_burst_of_2000_at_zero,
            stz_b_trickle_across_idle_timeout,
            stz_c_forced_scale_down_racing_a_burst,
            stz_d_requests_during_the_last_pods_drain,
            stz_e_operator_leader_killed_during_a_wake,
            stz_f_activator_stopped_gracefully_while_holding,
            stz_f2_activator_killed_while_holding,
            stz_g_two_proxies_0s_and_10s_lag,
            stz_h_pod_crashing_right_after_ready,
        ],
        &args,
    );
    if args.list {
        selection.list();
        return;
    }

    if std::env::var_os(INSIDE_ENV).is_none() {
        match enter_tier(&args.raw) {
            Ok(code) => std::process::exit(code),
            Err(reason) => {
                let required = std::env::var("SPINDLE_NETNS_REQUIRED").is_ok_and(|v| v == "1");
                selection.announce("tests");
                let mut summary = Summary::new(selection.filtered_out);
                for name in selection.names() {
                    if required {
                        summary.failed += 1;
                        println!("test {name} ... FAILED: {reason}");
                    } else {
                        summary.ignored += 1;
                        println!("test {name} ... SKIPPED: {reason}");
                    }
                }
                summary.print();
                summary.exit();
            }
        }
    }

    selection.announce("tests");
    if let Err(e) = check_inside() {
        println!("netns tier unusable: {e:#}");
        std::process::exit(1);
    }
    // The full-length B (100 cycles of ~12 s) needs more than the CI cap.
    let summary = selection.run("---", if bench() { 60 } else { 10 });
    summary.print();
    summary.exit();
}

/// Re-runs this binary inside the tier's namespace; its exit code, or why not.
fn enter_tier(args: &[String]) -> Result<i32, String> {
    let state = std::env::var_os("SPINDLE_NETNS_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".spindle/cp-netns"));
    let start = "start it with `e2e/scripts/controlplane.sh start --netns` (as root), or run e2e/scripts/test.sh";
    let mode = std::fs::read_to_string(state.join("mode")).unwrap_or_default();
    if mode.trim() != "netns" {
        return Err(format!(
            "the netns tier is not running (no {}/mode); {start}",
            state.display()
        ));
    }
    let name = std::fs::read_to_string(state.join("netns"))
        .map_err(|e| format!("{}/netns: {e}; {start}", state.display()))?;
    let path = PathBuf::from("/run/netns").join(name.trim());
    if !path.exists() {
        return Err(format!("{} is missing; {start}", path.display()));
    }
    let kubeconfig = state.join("kubeconfig");
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let status = std::process::Command::new("nsenter")
        .arg(format!("--net={}", path.display()))
        .arg(exe)
        .args(args)
        .env(INSIDE_ENV, "1")
        .env("SPINDLE_NETNS_STATE", &state)
        .env("SPINDLE_TEST_KUBECONFIG", &kubeconfig)
        .env("KUBECONFIG", &kubeconfig)
        .status()
        .map_err(|e| format!("running nsenter (util-linux; needs root): {e}"))?;
    Ok(status.code().unwrap_or(1))
}

/// Inside the tier the pod CIDR is local: a pod IP can be bound.
fn check_inside() -> anyhow::Result<()> {
    std::net::TcpListener::bind("10.244.255.254:0")
        .context("binding a pod IP (10.244.255.254): not inside the netns tier")?;
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// The harness processes of one test, killed (by their PIDs) when dropped,
/// and the folder with their logs.
struct Harness {
    dir: PathBuf,
    ns: String,
    children: Vec<(String, tokio::process::Child)>,
}

impl Harness {
    fn new(ns: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("spindle-netns-{ns}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            dir,
            ns: ns.to_string(),
            children: Vec::new(),
        })
    }

    fn spawn(&mut self, bin: &str, name: &str, args: &[String]) -> anyhow::Result<PathBuf> {
        let log = self.dir.join(format!("{name}.log"));
        let out = std::fs::File::create(self.dir.join(format!("{name}.out")))?;
        let child = tokio::process::Command::new(bin)
            .args(args)
            .arg("--log")
            .arg(&log)
            .arg("--namespace")
            .arg(&self.ns)
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {bin}"))?;
        self.children.push((name.to_string(), child));
        Ok(log)
    }

    /// A passed test's logs are not kept (a failed one's are, for reading).
    fn remove_logs(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Kills the harness process started as `name` (by its PID) and waits for it.
    async fn kill(&mut self, name: &str) {
        if let Some(i) = self.children.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.children.remove(i);
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Starts the pod runtime for this namespace; returns its log.
    fn pod_runtime(&mut self, name: &str, args: &[&str]) -> anyhow::Result<PathBuf> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        self.spawn(env!("CARGO_BIN_EXE_pod-runtime"), name, &args)
    }

    /// Starts a kube-proxy stand-in ("node" `node`, `lag_ms` behind) and waits
    /// for its first sync; returns its log.
    async fn proxy(&mut self, node: u8, lag_ms: u64) -> anyhow::Result<PathBuf> {
        let args = vec![
            "--node-index".to_string(),
            node.to_string(),
            "--lag-ms".to_string(),
            lag_ms.to_string(),
        ];
        let log = self.spawn(
            env!("CARGO_BIN_EXE_mini-proxy"),
            &format!("proxy-{node}"),
            &args,
        )?;
        let l = log.clone();
        wait_for(
            &format!("proxy {node} to sync"),
            Duration::from_secs(20) + Duration::from_millis(lag_ms),
            || {
                let l = l.clone();
                async move {
                    read_log(&l)
                        .iter()
                        .any(|e| e["ev"] == "synced")
                        .then_some(())
                }
            },
        )
        .await?;
        Ok(log)
    }
}

/// The JSON lines of a harness log (a line cut short by a writer is skipped).
fn read_log(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Node `k`'s address for a ClusterIP (mini-proxy's convention).
fn node_addr(cluster_ip: IpAddr, node: u8, port: u16) -> SocketAddr {
    match cluster_ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            SocketAddr::from(([a, b + node, c, d], port))
        }
        v6 => SocketAddr::new(v6, port),
    }
}

// ---------------------------------------------------------------------------
// Clients: one request per connection, or keep-alive; never retried
// ---------------------------------------------------------------------------

/// One answered request.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    pod: String,
    body: Value,
    /// Unix ms when the response had arrived.
    done_ms: u64,
    /// From sending (or connecting, on a new connection) to the whole body, ms.
    latency_ms: u64,
}

/// What one request ended with: a reply, or the error (connection refused or
/// reset, timeout, bad response): both count as lost unless the status is 2xx.
type Sent = (String, Result<Reply, String>);

fn request(id: &str, body_len: Option<usize>, delay_ms: u64) -> hyper::Request<Full<Bytes>> {
    let (method, body) = match body_len {
        Some(n) => ("POST", Bytes::from(vec![b'x'; n])),
        None => ("GET", Bytes::new()),
    };
    let mut b = hyper::Request::builder()
        .method(method)
        .uri("/echo")
        .header("host", "app")
        .header("x-request-id", id);
    if delay_ms > 0 {
        b = b.header("x-delay-ms", delay_ms.to_string());
    }
    b.body(Full::new(body)).expect("valid request")
}

async fn read_reply(resp: hyper::Response<hyper::body::Incoming>) -> Result<Reply, String> {
    let status = resp.status().as_u16();
    let pod = resp
        .headers()
        .get("x-pod")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Reply {
        status,
        pod,
        body,
        done_ms: now_ms(),
        latency_ms: 0,
    })
}

/// A request on a new connection (what a client without keep-alive does).
async fn send_once(
    addr: SocketAddr,
    id: &str,
    body_len: Option<usize>,
    delay_ms: u64,
    timeout: Duration,
) -> Result<Reply, String> {
    send_traced(addr, id, body_len, delay_ms, timeout, None).await
}

/// [`send_once`], also noting the connection's local address in `local`
/// (the proxy logs it as `from`: which backend a request was pinned to).
async fn send_traced(
    addr: SocketAddr,
    id: &str,
    body_len: Option<usize>,
    delay_ms: u64,
    timeout: Duration,
    local: Option<&std::sync::Mutex<Option<SocketAddr>>>,
) -> Result<Reply, String> {
    let started = Instant::now();
    let fut = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        if let (Some(slot), Ok(a)) = (local, stream.local_addr()) {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(a);
        }
        let _ = stream.set_nodelay(true);
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let resp = tx
            .send_request(request(id, body_len, delay_ms))
            .await
            .map_err(|e| format!("request: {e}"))?;
        read_reply(resp).await
    };
    let mut r = tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {timeout:?}")));
    if let Ok(reply) = &mut r {
        reply.latency_ms = started.elapsed().as_millis() as u64;
    }
    r
}

/// Open-loop load: request `i` leaves at `i / rate` whatever happened to the
/// others, on a new connection; ids are `{prefix}-{i}`, odd ones POST a body
/// of `i % 700` bytes.
async fn open_loop(addr: SocketAddr, prefix: &str, count: usize, rate_per_s: f64) -> Vec<Sent> {
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let at = start + Duration::from_secs_f64(i as f64 / rate_per_s);
        let id = format!("{prefix}-{i}");
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let body = (i % 2 == 1).then_some(i % 700);
            let r = send_once(addr, &id, body, 0, Duration::from_secs(30)).await;
            (id, r)
        }));
    }
    let mut out = Vec::with_capacity(count);
    for t in tasks {
        match t.await {
            Ok(s) => out.push(s),
            Err(e) => out.push(("?".into(), Err(format!("client task: {e}")))),
        }
    }
    out
}

/// `per_conn` requests on each of `conns` keep-alive connections, one after the other.
async fn keep_alive(addr: SocketAddr, prefix: &str, conns: usize, per_conn: usize) -> Vec<Sent> {
    let mut tasks = Vec::new();
    for c in 0..conns {
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let ids: Vec<String> = (0..per_conn).map(|i| format!("{prefix}-{c}-{i}")).collect();
            let stream = match TcpStream::connect(addr).await {
                Ok(s) => s,
                Err(e) => {
                    return ids
                        .into_iter()
                        .map(|id| (id, Err(format!("connect: {e}"))))
                        .collect();
                }
            };
            let (mut tx, conn) =
                match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
                    Ok(x) => x,
                    Err(e) => {
                        return ids
                            .into_iter()
                            .map(|id| (id, Err(format!("handshake: {e}"))))
                            .collect();
                    }
                };
            tokio::spawn(conn);
            for (i, id) in ids.into_iter().enumerate() {
                let body = (i % 2 == 0).then_some(100 + i);
                let started = Instant::now();
                let r = match tx.send_request(request(&id, body, 0)).await {
                    Ok(resp) => read_reply(resp).await.map(|mut r| {
                        r.latency_ms = started.elapsed().as_millis() as u64;
                        r
                    }),
                    Err(e) => Err(format!("request: {e}")),
                };
                out.push((id, r));
            }
            out
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.extend(t.await.unwrap_or_default());
    }
    out
}

/// Client results cross-checked with the pod runtime's log.
#[derive(Debug, Default)]
struct Check {
    sent: usize,
    ok: usize,
    /// Non-2xx or error, with the reason (first few).
    lost: Vec<String>,
    /// Ids the app saw more than once.
    duplicated: Vec<String>,
    /// A 2xx whose id, pod or body length the app log does not confirm.
    mismatched: Vec<String>,
    /// Pod → requests served.
    per_pod: BTreeMap<String, usize>,
}

impl Check {
    fn new(sent: &[Sent], runtime_log: &[Value]) -> Self {
        let mut seen: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
        for e in runtime_log.iter().filter(|e| e["ev"] == "req") {
            if let Some(id) = e["id"].as_str() {
                seen.entry(id).or_default().push(e);
            }
        }
        let ours: BTreeSet<&str> = sent.iter().map(|(id, _)| id.as_str()).collect();
        let mut c = Check {
            sent: sent.len(),
            ..Check::default()
        };
        for (id, entries) in &seen {
            if ours.contains(id) && entries.len() > 1 {
                c.duplicated.push(format!("{id} ×{}", entries.len()));
            }
        }
        for (id, r) in sent {
            match r {
                Ok(reply) if (200..300).contains(&reply.status) => {
                    c.ok += 1;
                    *c.per_pod.entry(reply.pod.clone()).or_default() += 1;
                    let logged = seen.get(id.as_str()).map(Vec::as_slice).unwrap_or(&[]);
                    if reply.body["id"] != id.as_str() {
                        c.mismatched
                            .push(format!("{id}: response names {}", reply.body["id"]));
                    } else if !logged.iter().any(|e| e["pod"] == reply.pod.as_str()) {
                        c.mismatched.push(format!(
                            "{id}: answered by {:?} but the runtime log has {logged:?}",
                            reply.pod
                        ));
                    }
                }
                Ok(reply) => c.lost.push(format!("{id}: HTTP {}", reply.status)),
                Err(e) => c.lost.push(format!("{id}: {e}")),
            }
        }
        c
    }

    /// The numbers every scenario prints: requests, ok, lost, duplicated,
    /// latency of the answered ones.
    fn numbers(&self, sent: &[Sent]) -> String {
        let lat: Vec<u64> = sent
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok().map(|r| r.latency_ms))
            .collect();
        let (p50, p99, max) = percentiles(lat);
        format!(
            "{} requests, {} ok, {} lost, {} duplicated, {} mismatched; latency p50 {p50} ms, p99 {p99} ms, max {max} ms",
            self.sent,
            self.ok,
            self.lost.len(),
            self.duplicated.len(),
            self.mismatched.len()
        )
    }

    fn assert_clean(&self) -> anyhow::Result<()> {
        ensure!(
            self.lost.is_empty() && self.duplicated.is_empty() && self.mismatched.is_empty(),
            "{} sent, {} ok, {} lost, {} duplicated, {} mismatched; first lost {:?}; duplicated {:?}; mismatched {:?}",
            self.sent,
            self.ok,
            self.lost.len(),
            self.duplicated.len(),
            self.mismatched.len(),
            self.lost.iter().take(5).collect::<Vec<_>>(),
            self.duplicated.iter().take(5).collect::<Vec<_>>(),
            self.mismatched.iter().take(5).collect::<Vec<_>>(),
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Cluster objects
// ---------------------------------------------------------------------------

/// A plain Deployment `web` (container port 8080 named http) and its Service `web` (:80).
fn web_app(replicas: u32, prestop_s: u32) -> String {
    let lifecycle = if prestop_s > 0 {
        json!({"preStop": {"sleep": {"seconds": prestop_s}}})
    } else {
        Value::Null
    };
    let mut container = json!({
        "name": "app", "image": "example.invalid/web:v1",
        "ports": [{"name": "http", "containerPort": 8080}],
    });
    if !lifecycle.is_null() {
        container["lifecycle"] = lifecycle;
    }
    let deploy = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": prestop_s + 10, "containers": [container]},
            },
        },
    });
    let svc = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    });
    format!("{deploy}\n---\n{svc}\n")
}

async fn cluster_ip(ns: &TestNamespace, svc: &str) -> anyhow::Result<IpAddr> {
    let s = ns.api::<Service>().get(svc).await?;
    s.spec
        .and_then(|s| s.cluster_ip)
        .context("no clusterIP")?
        .parse()
        .context("clusterIP")
}

async fn ready_replicas(ns: &TestNamespace, name: &str) -> i32 {
    ns.api::<Deployment>()
        .get(name)
        .await
        .ok()
        .and_then(|d| d.status?.ready_replicas)
        .unwrap_or(0)
}

async fn wait_ready_replicas(ns: &TestNamespace, name: &str, n: i32) -> anyhow::Result<()> {
    wait_for(
        &format!("{name} to have {n} ready replicas"),
        Duration::from_secs(60),
        || async { (ready_replicas(ns, name).await == n).then_some(()) },
    )
    .await
}

async fn pods(ns: &TestNamespace) -> Vec<Pod> {
    ns.api::<Pod>()
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ip(p: &Pod) -> Option<IpAddr> {
    p.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

async fn scale(ns: &TestNamespace, name: &str, replicas: i32) -> anyhow::Result<()> {
    ns.api::<Deployment>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await?;
    Ok(())
}

/// Proxy log: Unix ms of the first `endpoints` event for `svc` with a ready endpoint.
fn first_ready_endpoints(log: &[Value], svc: &str) -> Option<u64> {
    log.iter()
        .filter(|e| e["ev"] == "endpoints" && e["svc"] == svc)
        .find(|e| e["ready"].as_array().is_some_and(|a| !a.is_empty()))
        .and_then(|e| e["t_ms"].as_u64())
}

// ---------------------------------------------------------------------------
// The harness proves itself
// ---------------------------------------------------------------------------

/// kwok starts pods (Running, an IP) but only the pod runtime makes them Ready,
/// after it listens.
async fn harness_kwok_leaves_ready_to_the_pod_runtime() -> anyhow::Result<Outcome> {
    let ns = TestNamespace::new().await;
    let mut h = Harness::new(&ns.name)?;
    ns.apply_yaml(&web_app(1, 0)).await?;
    let pod = wait_for(
        "a Running pod with an IP",
        Duration::from_secs(30),
        || async {
            pods(&ns).await.into_iter().find(|p| {
                pod_ip(p).is_some()
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            })
        },
    )
    .await?;
    // Longer than kwok's whole stage delay: had kwok a Ready stage, it would have run.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still = ns
        .api::<Pod>()
        .get(&pod.metadata.name.clone().unwrap_or_default())
        .await?;
    ensure!(!pod_ready(&still), "kwok marked the pod Ready by itself");
    ensure!(
        ready_replicas(&ns, "web").await == 0,
        "Deployment counts a ready pod"
    );

    let log = h.pod_runtime(
        "runtime",
        &["--start-delay-ms", "50", "--ready-delay-ms", "100"],
    )?;
    wait_ready_replicas(&ns, "web", 1).await?;
    let events = read_log(&log);
    let t = |ev: &str| {
        events
            .iter()
            .find(|e| e["ev"] == ev)
            .and_then(|e| e["t_ms"].as_u64())
    };
    let (listen, ready) = (
        t("listen").context("no listen event")?,
        t("ready").context("no ready event")?,
    );
    ensure!(
        ready >= listen + 100,
        "Ready ({ready}) less than the probe delay after listen ({listen})"
    );
    let ip = pod_ip(&still).context("pod IP")?;
    let r = send_once(
        SocketAddr::new(ip, 8080),
        "direct-1",
        None,
        0,
        Duration::from_secs(5),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    ensure!(
        r.status == 200 && r.body["id"] == "direct-1",
        "pod answered {r:?}"
    );
    ns.cleanup().await;
    h.remove_logs();
    Ok(Outcome::Passed)
}

/// A Service over two pods answers through the proxy stand-in: 300 open-loop
/// requests on new connections plus 4 keep-alive connections × 25, every one
/// answered once, by the pod the runtime log names, spread over both pods.
async fn harness_service_answers_through_the_proxy() -> anyhow::Result<Outcome> {
    let ns = TestNamespace::new().await;
    let mut h = Harness::new(&ns.name)?;
    let log = h.pod_runtime("runtime", &[])?;
    let proxy_log = h.proxy(0, 0).await?;
    ns.apply_yaml(&web_app(2, 0)).await?;
    wait_ready_replicas(&ns, "web", 2).await?;
    wait_for(
        "the proxy to apply 2 ready endpoints",
        Duration::from_secs(20),
        || {
            let l = proxy_log.clone();
            async move {
                read_log(&l)
                    .iter()
                    .any(|e| {
                        e["ev"] == "endpoints"
                            && e["ready"].as_array().is_some_and(|a| a.len() == 2)
                    })
                    .then_some(())
            }
        },
    )
    .await?;
    let addr = SocketAddr::new(cluster_ip(&ns, "web").await?, 80);

    let mut sent = open_loop(addr, "ol", 300, 300.0).await;
    sent.extend(keep_alive(addr, "ka", 4, 25).await);
    let check = Check::new(&sent, &read_log(&log));
    check.assert_clean()?;
    ensure!(check.ok == 400, "{check:?}");
    ensure!(
        check.per_pod.len() == 2 && check.per_pod.values().all(|&n| n >= 50),
        "load not spread over both pods: {:?}",
        check.per_pod
    );
    for (_, r) in &sent {
        let r = r.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
        let want = r.body["method"] == "POST" || r.body["body_len"] == 0;
        ensure!(want, "body length not echoed: {:?}", r.body);
    }
    // New connections: one proxy `conn` line each (keep-alive: one per connection).
    let conns = read_log(&proxy_log)
        .iter()
        .filter(|e| e["ev"] == "conn" && e["backend"] != "reject")
        .count();
    ensure!(
        conns == 304,
        "proxy forwarded {conns} connections, want 304"
    );
    ns.cleanup().await;
    h.remove_logs();
    Ok(Outcome::Passed)
}

/// Two "nodes": the proxy at 0 s lag forwards to a new pod within a second of
/// its ready endpoint; the one at 2 s lag refuses until 2 s later, then forwards.
async fn harness_proxy_lag_is_honoured() -> anyhow::Result<Outcome> {
    const LAG_MS: u64 = 2000;
    let ns = TestNamespace::new().await;
    let mut h = Harness::new(&ns.name)?;
    h.pod_runtime("runtime", &[])?;
    ns.apply_yaml(&web_app(0, 0)).await?;
    let fast = h.proxy(0, 0).await?;
    let slow = h.proxy(1, LAG_MS).await?;
    let ip = cluster_ip(&ns, "web").await?;
    let (a0, a1) = (node_addr(ip, 0, 80), node_addr(ip, 1, 80));
    // At zero endpoints both nodes reject (connection reset or refused).
    for a in [a0, a1] {
        let r = send_once(a, "empty", None, 0, Duration::from_secs(3)).await;
        ensure!(r.is_err(), "{a} answered with no endpoints: {r:?}");
    }

    scale(&ns, "web", 1).await?;
    // Probe both nodes every 20 ms until each answers once.
    let probe = |addr: SocketAddr, tag: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut i = 0;
        while Instant::now() < deadline {
            i += 1;
            if let Ok(r) =
                send_once(addr, &format!("{tag}-{i}"), None, 0, Duration::from_secs(2)).await
                && r.status == 200
            {
                return Some(r.done_ms);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    };
    let (first0, first1) = tokio::join!(probe(a0, "n0"), probe(a1, "n1"));
    let (first0, first1) = (
        first0.context("node 0 never answered")?,
        first1.context("node 1 never answered")?,
    );
    let (fast_log, slow_log) = (read_log(&fast), read_log(&slow));
    let applied0 =
        first_ready_endpoints(&fast_log, "web:http").context("node 0 applied no endpoint")?;
    let applied1 =
        first_ready_endpoints(&slow_log, "web:http").context("node 1 applied no endpoint")?;
    let skew = applied1 as i64 - applied0 as i64;
    ensure!(
        (LAG_MS as i64 - 150..=LAG_MS as i64 + 500).contains(&skew),
        "node 1 applied the ready endpoint {skew} ms after node 0, want ≈{LAG_MS}"
    );
    ensure!(
        first1 >= applied0 + LAG_MS - 150,
        "node 1 answered at +{} ms, before its lag",
        first1 as i64 - applied0 as i64
    );
    ensure!(
        first0 <= applied0 + 1000,
        "node 0 answered {} ms after applying",
        first0 as i64 - applied0 as i64
    );
    // Until then node 1 rejected: it logged rejections after node 0 had the endpoint.
    let rejected_late = slow_log
        .iter()
        .filter(|e| e["ev"] == "conn" && e["backend"] == "reject")
        .filter_map(|e| e["t_ms"].as_u64())
        .any(|t| t > applied0 + 200);
    ensure!(rejected_late, "node 1 never rejected while lagging");
    ns.cleanup().await;
    h.remove_logs();
    Ok(Outcome::Passed)
}

/// A terminating pod keeps serving for its preStop sleep (kcm marks its
/// endpoint serving+terminating, the proxy falls back to it), then stops
/// abruptly (a request still in flight is aborted) and is deleted.
async fn harness_terminating_pod_drains_then_stops() -> anyhow::Result<Outcome> {
    const DRAIN_S: u32 = 3;
    let ns = TestNamespace::new().await;
    let mut h = Harness::new(&ns.name)?;
    let log = h.pod_runtime("runtime", &[])?;
    let proxy_log = h.proxy(0, 0).await?;
    ns.apply_yaml(&web_app(1, DRAIN_S)).await?;
    wait_ready_replicas(&ns, "web", 1).await?;
    let pod = pods(&ns).await.into_iter().next().context("no pod")?;
    let name = pod.metadata.name.clone().unwrap_or_default();
    let ip = pod_ip(&pod).context("pod IP")?;
    let svc = SocketAddr::new(cluster_ip(&ns, "web").await?, 80);
    wait_for(
        "the proxy to have the endpoint",
        Duration::from_secs(20),
        || {
            let l = proxy_log.clone();
            async move { first_ready_endpoints(&read_log(&l), "web:http") }
        },
    )
    .await?;

    // A slow request that will outlive the drain.
    let slow = tokio::spawn(async move {
        send_once(
            SocketAddr::new(ip, 8080),
            "slow",
            None,
            (DRAIN_S as u64 + 3) * 1000,
            Duration::from_secs(20),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let deleted_at = now_ms();
    // Scaling to zero (not deleting the pod, which the ReplicaSet would replace).
    scale(&ns, "web", 0).await?;
    // During the drain: served, through the Service too (terminating fallback).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let during = send_once(svc, "during-drain", Some(10), 0, Duration::from_secs(5)).await;
    ensure!(
        during
            .as_ref()
            .is_ok_and(|r| r.status == 200 && r.pod == name),
        "request during the drain: {during:?}"
    );
    let gone = wait_for("the pod to be deleted", Duration::from_secs(30), || async {
        ns.api::<Pod>()
            .get_opt(&name)
            .await
            .ok()?
            .is_none()
            .then(now_ms)
    })
    .await?;
    ensure!(
        gone >= deleted_at + u64::from(DRAIN_S) * 1000,
        "pod deleted {} ms after the delete, before its {DRAIN_S} s preStop",
        gone - deleted_at
    );
    ensure!(
        gone <= deleted_at + u64::from(DRAIN_S) * 1000 + 5000,
        "pod deleted only {} ms after the delete",
        gone - deleted_at
    );
    let slow = slow.await?;
    ensure!(
        slow.is_err(),
        "the in-flight request survived the stop: {slow:?}"
    );
    let after = send_once(
        SocketAddr::new(ip, 8080),
        "after",
        None,
        0,
        Duration::from_secs(3),
    )
    .await;
    ensure!(after.is_err(), "the stopped pod still answers: {after:?}");
    let events = read_log(&log);
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| e["ev"].as_str())
        .filter(|e| *e != "req")
        .collect();
    ensure!(
        kinds == ["listen", "ready", "drain", "stop"],
        "lifecycle {kinds:?}"
    );
    // The proxy saw the endpoint go from ready to serving+terminating.
    let fell_back = read_log(&proxy_log).iter().any(|e| {
        e["ev"] == "endpoints"
            && e["ready"].as_array().is_some_and(Vec::is_empty)
            && e["fallback"].as_array().is_some_and(|a| a.len() == 1)
    });
    ensure!(
        fell_back,
        "the proxy never fell back to the terminating endpoint"
    );
    ns.cleanup().await;
    h.remove_logs();
    Ok(Outcome::Passed)
}

/// `--crash-after-ready 1`: the first pod crashes right after Ready (Ready
/// False, restartCount 1), then runs again and stays Ready.
async fn harness_pod_crashing_after_ready_restarts() -> anyhow::Result<Outcome> {
    let ns = TestNamespace::new().await;
    let mut h = Harness::new(&ns.name)?;
    let log = h.pod_runtime(
        "runtime",
        &["--crash-after-ready", "1", "--restart-delay-ms", "300"],
    )?;
    ns.apply_yaml(&web_app(1, 0)).await?;
    let pod = wait_for(
        "the pod to run again after its crash",
        Duration::from_secs(30),
        || async {
            pods(&ns).await.into_iter().find(|p| {
                pod_ready(p)
                    && p.status
                        .as_ref()
                        .and_then(|s| s.container_statuses.as_ref())
                        .is_some_and(|cs| cs.iter().any(|c| c.restart_count == 1))
            })
        },
    )
    .await?;
    let kinds: Vec<String> = read_log(&log)
        .iter()
        .filter_map(|e| e["ev"].as_str().map(str::to_string))
        .collect();
    ensure!(
        kinds == ["listen", "ready", "crash", "listen", "ready"],
        "lifecycle {kinds:?}"
    );
    let ip = pod_ip(&pod).context("pod IP")?;
    let r = send_once(
        SocketAddr::new(ip, 8080),
        "after-restart",
        None,
        0,
        Duration::from_secs(5),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    ensure!(r.status == 200, "{r:?}");
    ns.cleanup().await;
    h.remove_logs();
    Ok(Outcome::Passed)
}

// ---------------------------------------------------------------------------
// Scale to zero with the real `spindle run` and `spindle activator`
// ---------------------------------------------------------------------------

use spindle_e2e::SHIM_EXECUTOR as EXECUTOR;

/// A scenario's activator "pod IPs" (inside the pod CIDR, far from kwok's
/// allocations) and activator port range, fresh for every scenario: a
/// process killed by an earlier, failed one may still hold its addresses for
/// a moment, and activators serve every namespace's apps, so two scenarios'
/// operators (each scoped to its namespace) must not hand out the same port.
fn activator_slot() -> ([String; 2], String) {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    // Offset by the PID: leftovers of an earlier run (a namespace still
    // terminating) keep their Services' ports.
    let k = (NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + (std::process::id() % 90) as u16)
        % 90;
    let ips = [
        format!("10.244.255.{}", 2 * k + 1),
        format!("10.244.255.{}", 2 * k + 2),
    ];
    let first = 21000 + 100 * k;
    (ips, format!("{first}-{}", first + 99))
}
const ACTIVATOR_ADMIN_PORT: u16 = 9090;
/// Replaces the apps' idleTimeout (the CRD's minimum is 30 s).
const IDLE_MS: u64 = 3000;

/// Why the scale-to-zero scenarios cannot run with this build, if they cannot.
fn stz_missing() -> Option<String> {
    let bin = spindle_e2e::spindle_bin();
    if !bin.exists() {
        return Some(format!(
            "{} is missing: build it with `cargo build -p spindle`",
            bin.display()
        ));
    }
    let help = std::process::Command::new(&bin)
        .args(["run", "--help"])
        .output()
        .ok()?;
    let help = String::from_utf8_lossy(&help.stdout);
    (!help.contains("--activator-port-range")).then(|| {
        "needs operator scale-to-zero wiring (`spindle run --activator-port-range`)".to_string()
    })
}

/// One named process of a scenario (operator or activator).
struct Proc {
    name: String,
    child: tokio::process::Child,
}

impl Proc {
    /// SIGTERM by PID, then wait (SIGKILL after `grace`).
    async fn terminate(&mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            eprintln!("{} ignored SIGTERM for {grace:?}; killing", self.name);
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }

    async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// A scale-to-zero scenario's world: a namespace with the executor, the pod
/// runtime, node proxies, activators (a selector-less `spindle-activator`
/// Service whose slice lists them) and operators, all real processes.
struct Stz {
    ns: TestNamespace,
    h: Harness,
    runtime_log: PathBuf,
    proxy_logs: Vec<PathBuf>,
    activators: Vec<Proc>,
    operators: Vec<Proc>,
    ips: [String; 2],
    port_range: String,
}

impl Stz {
    async fn new(
        runtime_args: &[&str],
        proxy_lags_ms: &[u64],
        activators: usize,
    ) -> anyhow::Result<Self> {
        let ns = TestNamespace::new().await;
        ns.apply_yaml(EXECUTOR).await?;
        let mut h = Harness::new(&ns.name)?;
        let runtime_log = h.pod_runtime("runtime", runtime_args)?;
        let mut proxy_logs = Vec::new();
        for (node, lag) in proxy_lags_ms.iter().enumerate() {
            proxy_logs.push(h.proxy(node as u8, *lag).await?);
        }
        let (ips, port_range) = activator_slot();
        let mut stz = Stz {
            ns,
            h,
            runtime_log,
            proxy_logs,
            activators: Vec::new(),
            operators: Vec::new(),
            ips,
            port_range,
        };
        for i in 0..activators {
            stz.start_activator(i, 2).await?;
        }
        stz.publish_activators(&(0..activators).collect::<Vec<_>>())
            .await?;
        Ok(stz)
    }

    fn spawn(&self, name: &str, args: &[String]) -> anyhow::Result<Proc> {
        let out = std::fs::File::create(self.h.dir.join(format!("{name}.out")))?;
        let child = tokio::process::Command::new(spindle_e2e::spindle_bin())
            .args(args)
            .env("SPINDLE_LOG_LEVEL", "info")
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting spindle {}", args[0]))?;
        Ok(Proc {
            name: name.to_string(),
            child,
        })
    }

    /// Starts activator `i`; after SIGTERM it keeps serving `shutdown_delay_s`.
    async fn start_activator(&mut self, i: usize, shutdown_delay_s: u32) -> anyhow::Result<()> {
        let ip = self.ips[i].clone();
        let ip = ip.as_str();
        let admin = format!("{ip}:{ACTIVATOR_ADMIN_PORT}");
        let args: Vec<String> = [
            "activator",
            "--admin-addr",
            &admin,
            "--listen-ip",
            ip,
            "--port-range",
            &self.port_range,
            "--namespace",
            &self.ns.name,
            "--identity",
            &format!("activator-{i}"),
            "--shutdown-delay-seconds",
            &shutdown_delay_s.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = self.spawn(&format!("activator-{i}"), &args)?;
        let addr: SocketAddr = admin.parse()?;
        wait_for(
            &format!("activator {i} /readyz"),
            Duration::from_secs(30),
            || async move {
                let r = send_path(addr, "/readyz").await?;
                (r == 200).then_some(())
            },
        )
        .await?;
        self.activators.push(p);
        Ok(())
    }

    /// The `spindle-activator` Service and a slice with these activators ready,
    /// as kcm would publish for activator pods.
    async fn publish_activators(&self, which: &[usize]) -> anyhow::Result<()> {
        let endpoints: Vec<Value> = which
            .iter()
            .map(|&i| &self.ips[i])
            .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false}, "nodeName": "kwok-node-0"}))
            .collect();
        let yaml = format!(
            "{}\n---\n{}\n",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "spindle-activator"},
                   "spec": {"ports": [{"name": "admin", "port": ACTIVATOR_ADMIN_PORT}]}}),
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                   "metadata": {"name": "spindle-activator-harness",
                                "labels": {"kubernetes.io/service-name": "spindle-activator"}},
                   "addressType": "IPv4",
                   "ports": [{"name": "admin", "port": ACTIVATOR_ADMIN_PORT, "protocol": "TCP"}],
                   "endpoints": endpoints}),
        );
        self.ns.apply_yaml(&yaml).await?;
        Ok(())
    }

    /// Starts operator replica `i` (leader election in the test namespace).
    async fn start_operator(&mut self, i: usize) -> anyhow::Result<u16> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let args: Vec<String> = [
            "run",
            "--namespace",
            &self.ns.name,
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--leader-elect=true",
            "--leader-election-namespace",
            &self.ns.name,
            "--identity",
            &format!("operator-{i}"),
            "--resolve-images=false",
            "--legacy-group=false",
            "--activator-namespace",
            &self.ns.name,
            "--activator-port-range",
            &self.port_range,
            "--activity-poll-seconds",
            "1",
            "--scale-to-zero-idle-ms",
            &IDLE_MS.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = self.spawn(&format!("operator-{i}"), &args)?;
        self.operators.push(p);
        Ok(port)
    }

    /// A scale-to-zero SpinApp `app` with one replica.
    async fn app(&self, drain_s: u32) -> anyhow::Result<()> {
        self.ns
            .apply_yaml(&format!(
                r#"
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinApp
metadata: {{name: app}}
spec:
  executor: containerd-shim-spin
  image: ghcr.io/example/app:v1
  replicas: 1
  scaleToZero: {{enabled: true, idleTimeout: 30s, coldStartTimeout: 30s, drainSeconds: {drain_s}, maxPendingRequests: 5000}}
"#
            ))
            .await?;
        Ok(())
    }

    async fn state(&self) -> Option<String> {
        let app = self
            .ns
            .api::<spindle::api::SpinApp>()
            .get("app")
            .await
            .ok()?;
        app.status?.scale_to_zero?.state
    }

    async fn wait_state(&self, want: &str, timeout: Duration) -> anyhow::Result<()> {
        let r = wait_for(&format!("app to be {want}"), timeout, || async {
            (self.state().await.as_deref() == Some(want)).then_some(())
        })
        .await;
        if r.is_err() {
            let app = self.ns.api::<spindle::api::SpinApp>().get("app").await.ok();
            bail!(
                "app never became {want}; status {:?}; logs in {}",
                app.and_then(|a| a.status),
                self.h.dir.display()
            );
        }
        Ok(())
    }

    /// Idle with no pod left (the last one drained and stopped).
    async fn wait_idle_at_zero(&self, timeout: Duration) -> anyhow::Result<()> {
        self.wait_state("Idle", timeout).await?;
        wait_for("the last pod to be gone", timeout, || async {
            pods(&self.ns).await.is_empty().then_some(())
        })
        .await
    }

    async fn service_addr(&self, node: u8) -> anyhow::Result<SocketAddr> {
        Ok(node_addr(cluster_ip(&self.ns, "app").await?, node, 80))
    }

    fn check(&self, sent: &[Sent]) -> Check {
        Check::new(sent, &read_log(&self.runtime_log))
    }

    async fn finish(mut self) {
        // Delete the app and the executor while an operator still runs, so
        // their finalizers are removed and the namespace can go.
        let t = Instant::now();
        if let Err(e) = self
            .ns
            .kubectl(&[
                "delete",
                "spinapp,spinappexecutor",
                "--all",
                "--timeout=20s",
            ])
            .await
        {
            eprintln!("cleanup: {e:#}");
        }
        eprintln!("cleanup: apps and executor deleted in {:?}", t.elapsed());
        for p in self.operators.iter_mut().chain(self.activators.iter_mut()) {
            p.kill().await;
        }
        self.ns.cleanup().await;
        self.h.remove_logs();
    }
}

/// `GET path` on a new connection: the status code.
async fn send_path(addr: SocketAddr, path: &str) -> Option<u16> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri(path)
        .header("host", "x")
        .body(Full::new(Bytes::new()))
        .ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(5), tx.send_request(req))
        .await
        .ok()?
        .ok()?;
    Some(resp.status().as_u16())
}

/// p50, p99 and max of `v` (ms).
fn percentiles(mut v: Vec<u64>) -> (u64, u64, u64) {
    if v.is_empty() {
        return (0, 0, 0);
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.5), at(0.99), v[v.len() - 1])
}

/// The common start: activators, operator, app Serving, then idle at zero.
async fn stz_at_zero(
    runtime_args: &[&str],
    proxy_lags_ms: &[u64],
    activators: usize,
    drain_s: u32,
) -> anyhow::Result<Stz> {
    let mut stz = Stz::new(runtime_args, proxy_lags_ms, activators).await?;
    stz.start_operator(0).await?;
    stz.app(drain_s).await?;
    stz.wait_state("Serving", Duration::from_secs(60)).await?;
    let drain = Duration::from_secs(u64::from(drain_s));
    stz.wait_idle_at_zero(Duration::from_secs(60) + drain)
        .await?;
    Ok(stz)
}

/// A: at zero, 2,000 requests at once (new connections, half POST): every
/// one answered exactly once, by the woken pod.
async fn stz_a_burst_of_2000_at_zero() -> anyhow::Result<Outcome> {
    if let Some(why) = stz_missing() {
        return Ok(Outcome::Skipped(why));
    }
    let stz = stz_at_zero(&[], &[0], 1, 5).await?;
    let addr = stz.service_addr(0).await?;
    let t0 = now_ms();
    let sent = open_loop(addr, "burst", 2000, 1e9).await;
    let check = stz.check(&sent);
    let lat: Vec<u64> = sent
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().map(|r| r.done_ms.saturating_sub(t0)))
        .collect();
    let listen = read_log(&stz.runtime_log)
        .iter()
        .filter(|e| e["ev"] == "listen")
        .filter_map(|e| e["t_ms"].as_u64())
        .find(|t| *t >= t0);
    let (p50, p99, max) = percentiles(lat);
    println!(
        "    burst 2000 at zero: {}; pod listening at +{} ms; response from t0 p50 {p50} ms, p99 {p99} ms, max {max} ms; per pod {:?}",
        check.numbers(&sent),
        listen.map(|l| l as i64 - t0 as i64).unwrap_or(-1),
        check.per_pod
    );
    check.assert_clean()?;
    stz.wait_state("Serving", Duration::from_secs(30)).await?;
    stz.finish().await;
    Ok(Outcome::Passed)
}

/// B: a trickle crossing the idle timeout: each cycle waits for zero, then
/// sends 10 requests over a second (the first one wakes the app).
/// `SPINDLE_NETNS_CYCLES` cycles (default 2; `SPINDLE_NETNS_BENCH=1`: 100).
async fn stz_b_trickle_across_idle_timeout() -> anyhow::Result<Outcome> {
    if let Some(why) = stz_missing() {
        return Ok(Outcome::Skipped(why));
    }
    let cycles: usize = std::env::var("SPINDLE_NETNS_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench() { 100 } else { 2 });
    let stz = stz_at_zero(&[], &[0], 1, 5).await?;
    let addr = stz.service_addr(0).await?;
    let mut all = Vec::new();
    let mut first = Vec::new();
    for c in 0..cycles {
        if c > 0 {
            stz.wait_idle_at_zero(Duration::from_secs(60)).await?;
        }
        let t0 = now_ms();
        let sent = open_loop(addr, &format!("trickle{c}"), 10, 10.0).await;
        if let Some((_, Ok(r))) = sent.first() {
            first.push(r.done_ms.saturating_sub(t0));
        }
        let check = stz.check(&sent);
        check.assert_clean().with_context(|| format!("cycle {c}"))?;
        if (c + 1) % 10 == 0 {
            eprintln!("    cycle {}/{cycles}: clean", c + 1);
        }
        all.extend(sent);
    }
    let check = stz.check(&all);
    let (p50, p99, max) = percentiles(first);
    println!(
        "    {cycles} down/up cycles: {}; cold request p50 {p50} ms, p99 {p99} ms, max {max} ms",
        check.numbers(&all)
    );
    check.assert_clean()?;
    stz.finish().await;
    Ok(Outcome::Passed)
}

/// D: requests while the last pod drains: the scale-down has begun (replicas
/// 0, the pod terminating); a steady 20 req/s runs through the drain and
/// after it. All are answered (by the draining pod, or held and woken).
async fn stz_d_requests_during_the_last_pods_drain() -> anyhow::Result<Outcome> {
    if let Some(why) = stz_missing() {
        return Ok(Outcome::Skipped(why));
    }
    let mut stz = Stz::new(&[], &[0], 1).await?;
    stz.start_operator(0).await?;
    stz.app(5).await?;
    stz.wait_state("Serving", Duration::from_secs(60)).await?;
    let addr = stz.service_addr(0).await?;
    // Wait for the scale-down: the pod is terminating.
    wait_for(
        "the last pod to be terminating",
        Duration::from_secs(60),
        || async {
            pods(&stz.ns)
                .await
                .iter()
                .any(|p| p.metadata.deletion_timestamp.is_some())
                .then_some(())
        },
    )
    .await?;
    let sent = open_loop(addr, "drain", 160, 20.0).await;
    let check = stz.check(&sent);
    println!(
        "    during the drain: {}; per pod {:?}",
        check.numbers(&sent),
        check.per_pod
    );
    check.assert_clean()?;
    stz.finish().await;
    Ok(Outcome::Passed)
}

/// H: the pod woken at zero crashes right after Ready and restarts 300 ms
/// later, under 40 GET/s for 5 s. Requests the activator holds are all
/// answered; the only losses allowed are connections the proxy sent straight
/// to the crashed pod while kcm still listed it ready (what any Service does
/// with a crashing pod), and each must show in the proxy log as refused.
async fn stz_h_pod_crashing_right_after_ready() -> anyhow::Result<Outcome> {
    if let Some(why) = stz_missing() {
        return Ok(Outcome::Skipped(why));
    }
    let mut stz = stz_at_zero(&[], &[0], 1, 5).await?;
    // A runtime whose next pod crashes right after Ready.
    stz.h.kill("runtime").await;
    stz.runtime_log = stz.h.pod_runtime(
        "runtime-crash",
        &["--crash-after-ready", "1", "--restart-delay-ms", "300"],
    )?;
    let addr = stz.service_addr(0).await?;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let at = start + Duration::from_millis(i * 25);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let id = format!("crash-{i}");
            let r = send_once(addr, &id, None, 0, Duration::from_secs(30)).await;
            (id, r)
        }));
    }
    let mut sent = Vec::new();
    for t in tasks {
        sent.push(t.await?);
    }
    let check = stz.check(&sent);
    let events = read_log(&stz.runtime_log);
    let crashed = events.iter().any(|e| e["ev"] == "crash");
    let pod_addrs: BTreeSet<String> = events
        .iter()
        .filter(|e| e["ev"] == "listen")
        .filter_map(|e| e["addr"].as_str().map(str::to_string))
        .collect();
    let stale = read_log(&stz.proxy_logs[0])
        .iter()
        .filter(|e| e["ev"] == "conn_refused")
        .filter(|e| e["backend"].as_str().is_some_and(|b| pod_addrs.contains(b)))
        .count();
    println!(
        "    crash after Ready: {} ({stale} connections sent straight to the crashed pod while listed ready)",
        check.numbers(&sent)
    );
    ensure!(crashed, "the woken pod did not crash");
    ensure!(
        check.duplicated.is_empty() && check.mismatched.is_empty(),
        "{check:?}"
    );
    ensure!(
        check.lost.len() <= stale,
        "{} lost but only {stale} went straight to the crashed pod: {:?}",
        check.lost.len(),
        check.lost
    );
    stz.finish().await;
    Ok(Outcome::Passed)
}

/// G: two nodes, their proxies 0 s and 10 s behind, drainSeconds 20: load on
/// both nodes across a scale-down and a wake loses nothing.
async fn stz_g_two_proxies_0s_and_10s_lag() -> anyhow::Result<Outcome> {
    if let Some(why) = stz_missing() {
        return Ok(Outcome::Skipped(why));
    }
    let mut stz = Stz::new(&[], &[0, 10_000], 1).await?;
    stz.start_operator(0).await?;
    stz.app(20).await?;
    stz.wait_state("Serving", Duration::from_secs(60)).await?;
    let (a0, a1) = (stz.service_addr(0).await?, stz.service_addr(1).await?);
    // Load once node 1 (10 s behind) routes to the pod; meanwhile the app
    // idles (3 s), scales down (20 s drain) and is woken again.
    let node1 = stz.proxy_logs[1].clone();
    wait_for(
        "node 1 to have a ready endpoint",
        Duration::from_secs(30),
        || {
            let l = node1.clone();
            async move { first_ready_endpoints(&read_log(&l), "app:http") }
        },
    )
    .await?;
    let (s0, s1) = tokio::join!(open_loop(a0, "n0", 150, 5.0), open_loop(a1, "n1", 150, 5.0));
    let mut sent = s0;
    sent.extend(s1);
    let check = stz.check(&sent);
    println!(
        "    two nodes (0 s / 10 s lag) over a drain and wake: {}; per pod {:?}; backends per node {:?}",
        check.numbers(&sent),
        check.per_pod,
        stz.proxy_logs
            .iter()
            .map(|l| {
                let mut by: BTreeMap<String, usize> = BTreeMap::new();
                for e in read_log(l).iter().filter(|e| e["ev"] == "conn") {
                    *by.entry(e["backend"].as_str().unwrap_or("?").to_string())
                        .or_default() += 1;
                }
                by
            })
            .collect::<Vec<_>>()
    );
    check.assert_clean()?;
    let drained = read_log(&stz.runtime_log)
        .iter()
        .any(|e| e["ev"] == "drain");
    ensure!(drained, "no scale-down happened during the load");
    stz.finish().await;
    Ok(Outcome::Passed)
}

/// E: two operator replicas; the leader is SIGKILLed right after a burst hits
/// the app at zero (pods start slowly, 1.5 s): the wake still completes and
/// every held request is answered.
async fn stz_e_operator_leader_killed_during_a_wake() -> anyhow::Result<Outcome> {
    if let Some(why) = stz_missing() {
        return Ok(Outcome::Skipped(why));
    }
    let mut stz = Stz::new(&["--start-delay-ms", "1500"], &[0], 1).await?;
    stz.start_operator(0).await?;
    stz.app(5).await?;
    stz.wait_state("Serving", Duration::from_secs(60)).await?;
    stz.start_operator(1).await?;
    stz.wait_idle_at_zero(Duration::from_secs(60)).await?;
    let leases = stz.ns.api::<k8s_openapi::api::coordination::v1::Lease>();
    let holder = leases
        .get("spindle-leader")
        .await?
        .spec
        .and_then(|s| s.holder_identity)
        .context("no leader")?;
    let addr = stz.service_addr(0).await?;
    let load = tokio::spawn(open_loop(addr, "leader", 300, 100.0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let i = stz
        .operators
        .iter()
        .position(|p| p.name == holder)
        .with_context(|| format!("leader {holder} is not one of ours"))?;
    stz.operators[i].kill().await;
    let sent = load.await?;
    let check = stz.check(&sent);
    println!(
        "    leader {holder} killed during a wake: {}",
        check.numbers(&sent)
    );
    check.assert_clean()?;
    stz.finish().await;
    Ok(Outcome::Passed)
}

/// F: two activators hold a burst at zero (pods start slowly, 2 s); one gets
/// SIGTERM and leaves the `spindle-activator` slice (as kcm does when its
/// /readyz fails): every held request is still answered.
async fn stz_f_activator_stopped_gracefully_while_holding() -> anyhow::Result<Outcome> {
    if let Some(why) = stz_missing() {
        return Ok(Outcome::Skipped(why));
    }
    // Activator 0 with the default shutdown delay (15 s), activator 1 alone.
    let mut stz = Stz::new(&["--start-delay-ms", "2000"], &[0], 0).await?;
    stz.start_activator(0, 15).await?;
    stz.start_activator(1, 2).await?;
    stz.publish_activators(&[0, 1]).await?;
    stz.start_operator(0).await?;
    stz.app(5).await?;
    stz.wait_state("Serving", Duration::from_secs(60)).await?;
    stz.wait_idle_at_zero(Duration::from_secs(60)).await?;
    let addr = stz.service_addr(0).await?;
    let load = tokio::spawn(open_loop(addr, "act", 400, 1e9));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t_stop = now_ms();
    let mut stopping = stz.activators.remove(0);
    let term = tokio::spawn(async move {
        stopping.terminate(Duration::from_secs(60)).await;
        now_ms()
    });
    stz.publish_activators(&[1]).await?;
    let sent = load.await?;
    let exited = term.await?;
    let check = stz.check(&sent);
    println!(
        "    activator 0 stopped (SIGTERM) while holding: {}; it exited {} ms after SIGTERM",
        check.numbers(&sent),
        exited.saturating_sub(t_stop)
    );
    check.assert_clean()?;
    stz.finish().await;
    Ok(Outcome::Passed)
}

/// `SPINDLE_NETNS_BENCH=1`: the full-length scenarios (docs/e2e.md); CI runs
/// the short ones.
fn bench() -> bool {
    std::env::var("SPINDLE_NETNS_BENCH").is_ok_and(|v| v == "1")
}

/// C: a forced scale-down racing a burst. `kubectl scale deployment/app
/// --replicas=0` on the Serving app (the operator keeps a Deployment it finds
/// at zero there and puts the activator in front of the draining pod) while
/// an open-loop burst runs from 300 ms before the scale to ~1.7 s after it:
/// every request answered once, by the draining pod or by the woken one.
/// Short: 1 round of 600; bench: 5 rounds of 2,000.
async fn stz_c_forced_scale_down_racing_a_burst() -> anyhow::Result<Outcome> {
    if let Some(why) = stz_missing() {
        return Ok(Outcome::Skipped(why));
    }
    let (count, rounds) = if bench() { (2000, 5) } else { (600, 1) };
    let mut stz = Stz::new(&[], &[0], 1).await?;
    stz.start_operator(0).await?;
    stz.app(5).await?;
    stz.wait_state("Serving", Duration::from_secs(60)).await?;
    let addr = stz.service_addr(0).await?;
    let mut all = Vec::new();
    for round in 0..rounds {
        // Serving with a ready pod (a round's burst wakes the app again).
        wait_ready_replicas(&stz.ns, "app", 1).await?;
        let prefix = format!("race{round}");
        let load =
            tokio::spawn(async move { open_loop(addr, &prefix, count, count as f64 / 2.0).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t_scale = now_ms();
        stz.ns
            .kubectl(&["scale", "deployment/app", "--replicas=0"])
            .await?;
        let sent = load.await?;
        let check = stz.check(&sent);
        let events = read_log(&stz.runtime_log);
        let after = |ev: &str| {
            events
                .iter()
                .filter(|e| e["ev"] == ev)
                .filter_map(|e| e["t_ms"].as_u64())
                .find(|t| *t >= t_scale)
                .map(|t| t as i64 - t_scale as i64)
        };
        let (drain, listen) = (after("drain"), after("listen"));
        println!(
            "    forced scale-down racing a burst (round {round}): {}; drain at +{} ms, new pod listening at +{} ms; per pod {:?}",
            check.numbers(&sent),
            drain.unwrap_or(-1),
            listen.unwrap_or(-1),
            check.per_pod
        );
        check
            .assert_clean()
            .with_context(|| format!("round {round}"))?;
        ensure!(
            drain.is_some(),
            "round {round}: the forced scale-down never reached the pod (no drain in the runtime log)"
        );
        ensure!(
            listen.is_some(),
            "round {round}: the app was not woken after the scale-down"
        );
        all.extend(sent);
    }
    if rounds > 1 {
        let check = stz.check(&all);
        println!("    all {rounds} rounds: {}", check.numbers(&all));
        check.assert_clean()?;
    }
    stz.wait_state("Serving", Duration::from_secs(60)).await?;
    stz.finish().await;
    Ok(Outcome::Passed)
}

/// F': two activators hold a burst at zero (pods start in 2 s); one is
/// SIGKILLed 500 ms in and leaves the `spindle-activator` slice. Its held
/// connections die with it: those requests are REPORTED as failed-by-kill
/// (each matched to the killed activator through the proxy's log, and
/// listed), not hidden. Every other request is answered exactly once and the
/// app still wakes. Short: 400 requests; bench: 2,000.
async fn stz_f2_activator_killed_while_holding() -> anyhow::Result<Outcome> {
    if let Some(why) = stz_missing() {
        return Ok(Outcome::Skipped(why));
    }
    let count = if bench() { 2000 } else { 400 };
    let mut stz = stz_at_zero(&["--start-delay-ms", "2000"], &[0], 2, 5).await?;
    let addr = stz.service_addr(0).await?;
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        tasks.push(tokio::spawn(async move {
            let id = format!("kill-{i}");
            let local = std::sync::Mutex::new(None);
            let body = (i % 2 == 1).then_some(i % 700);
            let r = send_traced(addr, &id, body, 0, Duration::from_secs(30), Some(&local)).await;
            let local = local.into_inner().unwrap_or_else(|e| e.into_inner());
            (id, local, r)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t_kill = now_ms();
    let mut victim = stz.activators.remove(0);
    victim.kill().await;
    stz.publish_activators(&[1]).await?;
    let mut traced = Vec::with_capacity(count);
    for t in tasks {
        traced.push(t.await?);
    }
    let sent: Vec<Sent> = traced
        .iter()
        .map(|(id, _, r)| (id.clone(), r.clone()))
        .collect();
    let check = stz.check(&sent);
    // Which backend the proxy pinned each client connection to.
    let backend_of: BTreeMap<String, String> = read_log(&stz.proxy_logs[0])
        .iter()
        .filter(|e| e["ev"] == "conn")
        .filter_map(|e| Some((e["from"].as_str()?.into(), e["backend"].as_str()?.into())))
        .collect();
    let on = |ip: &str, local: &Option<SocketAddr>| {
        local
            .and_then(|l| backend_of.get(&l.to_string()))
            .is_some_and(|b| b.starts_with(&format!("{ip}:")))
    };
    let app_saw: BTreeSet<String> = read_log(&stz.runtime_log)
        .iter()
        .filter(|e| e["ev"] == "req")
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .collect();
    let (mut by_kill, mut other_lost, mut survivor) = (Vec::new(), Vec::new(), (0, 0));
    for (id, local, r) in &traced {
        let ok = matches!(r, Ok(reply) if (200..300).contains(&reply.status));
        if on(&stz.ips[1], local) {
            survivor.0 += 1;
            survivor.1 += usize::from(ok);
        }
        if ok {
            continue;
        }
        let why = match r {
            Ok(reply) => format!("HTTP {}", reply.status),
            Err(e) => e.clone(),
        };
        if on(&stz.ips[0], local) {
            by_kill.push((id.clone(), app_saw.contains(id)));
        } else {
            other_lost.push(format!("{id} ({local:?}): {why}"));
        }
    }
    stz.wait_state("Serving", Duration::from_secs(60)).await?;
    let ran = by_kill.iter().filter(|(_, saw)| *saw).count();
    println!(
        "    activator 0 SIGKILLed while holding (at {t_kill}): {}",
        check.numbers(&sent)
    );
    println!(
        "    failed-by-kill: {} (held by the killed activator; {ran} of them reached the app), other lost: {}; the other activator: {} of {} ok; the app woke (Serving)",
        by_kill.len(),
        other_lost.len(),
        survivor.1,
        survivor.0
    );
    println!(
        "    failed-by-kill ids: {}",
        by_kill
            .iter()
            .map(|(id, saw)| if *saw {
                format!("{id}(ran)")
            } else {
                id.clone()
            })
            .collect::<Vec<_>>()
            .join(" ")
    );
    ensure!(
        other_lost.is_empty(),
        "{} lost that were not held by the killed activator: {:?}",
        other_lost.len(),
        other_lost.iter().take(10).collect::<Vec<_>>()
    );
    ensure!(
        !by_kill.is_empty(),
        "no request was held by the killed activator: the kill proved nothing"
    );
    ensure!(
        survivor.0 > 0 && survivor.0 == survivor.1,
        "the other activator answered {} of {}",
        survivor.1,
        survivor.0
    );
    ensure!(
        check.duplicated.is_empty() && check.mismatched.is_empty(),
        "duplicated {:?}, mismatched {:?}",
        check.duplicated,
        check.mismatched
    );
    ensure!(
        check.ok + by_kill.len() == check.sent,
        "{} ok + {} failed-by-kill != {} sent",
        check.ok,
        by_kill.len(),
        check.sent
    );
    stz.finish().await;
    Ok(Outcome::Passed)
}
