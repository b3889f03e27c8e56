//! Loopback tests of the activator data plane: real sockets, real HTTP.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::kube::slice_backends;
use super::*;
use crate::scale::AppKey;

/// Records every demand signal.
#[derive(Default)]
struct RecordingDemand(Mutex<Vec<(AppKey, u32)>>);

impl DemandSignal for RecordingDemand {
    fn signal(&self, app: &AppKey, pending: u32) -> BoxFuture<Result<(), DemandError>> {
        self.0.lock().unwrap().push((app.clone(), pending));
        Box::pin(async { Ok(()) })
    }
}

/// The app every activator of these tests serves.
fn key() -> AppKey {
    AppKey::new("apps", "hello")
}

/// An activator serving `key()` with default settings, at most 100 requests
/// held in all; returns the app's listening address.
async fn activator() -> (Activator, SocketAddr, Arc<RecordingDemand>) {
    activator_with(AppSettings::default(), 100).await
}

async fn activator_with(
    settings: AppSettings,
    global: u32,
) -> (Activator, SocketAddr, Arc<RecordingDemand>) {
    let demand = Arc::new(RecordingDemand::default());
    let a = Activator::new(
        Config {
            listen_ip: [127, 0, 0, 1].into(),
            max_pending_global: global,
        },
        ActivatorMetrics::new(),
        demand.clone(),
    );
    let addr = a.add_app(0, key(), settings).await.unwrap();
    (a, addr, demand)
}

/// A port on 127.0.0.1 with nothing listening (yet).
async fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// Kubernetes reports `pod` ready: requests go straight to it.
fn pod_is_ready(a: &Activator, pod: SocketAddr) {
    a.set_backends(
        &key(),
        Backends {
            ready: vec![pod],
            not_ready: vec![],
        },
    );
}

/// Kubernetes reports `pod` not ready: requests are held while the
/// activator dials it.
fn pod_is_starting(a: &Activator, pod: SocketAddr) {
    a.set_backends(
        &key(),
        Backends {
            ready: vec![],
            not_ready: vec![pod],
        },
    );
}

/// A starting pod that does not listen yet; start it with `backend`.
async fn starting_pod(a: &Activator) -> SocketAddr {
    let pod = free_port().await;
    pod_is_starting(a, pod);
    pod
}

/// A ready pod already serving in `mode`; returns its request counter.
async fn ready_pod(a: &Activator, mode: Mode) -> Arc<AtomicUsize> {
    let pod = free_port().await;
    let seen = backend(pod, mode).await;
    pod_is_ready(a, pod);
    seen
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    /// Read the whole request, then close without answering.
    CloseAfterRead,
    /// The first connection as CloseAfterRead, then Ok.
    FirstCloseThenOk,
}

/// A tiny HTTP/1.1 backend counting the requests it fully received.
async fn backend(addr: SocketAddr, mode: Mode) -> Arc<AtomicUsize> {
    let listener = TcpListener::bind(addr).await.unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let Some(req) = read_request(&mut s).await else {
                    return;
                };
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let close =
                    mode == Mode::CloseAfterRead || (mode == Mode::FirstCloseThenOk && n == 0);
                if close {
                    return;
                }
                let body = format!("pod saw {} #{}", req.lines().next().unwrap_or(""), n + 1);
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    seen
}

/// Reads a request head plus a content-length body.
async fn read_request(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(head);
        }
    }
}

struct Reply {
    status: u16,
    headers: String,
    body: String,
}

async fn send(addr: SocketAddr, method: &str, extra: &str, body: &str) -> Reply {
    // A hung exchange fails the test instead of hanging it.
    tokio::time::timeout(
        Duration::from_secs(15),
        send_inner(addr, method, extra, body),
    )
    .await
    .expect("no answer within 15 s")
}

async fn send_inner(addr: SocketAddr, method: &str, extra: &str, body: &str) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} /path?q=1 HTTP/1.1\r\nhost: hello.apps\r\nconnection: close\r\ncontent-length: {}\r\n{extra}\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        headers: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

async fn wait_until(mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 5 s");
}

/// `send` on its own task, so the test can look on while it is held.
fn spawn_send(addr: SocketAddr, method: &'static str, body: &'static str) -> JoinHandle<Reply> {
    tokio::spawn(async move { send(addr, method, "", body).await })
}

async fn get(addr: SocketAddr) -> Reply {
    send(addr, "GET", "", "").await
}

async fn until_pending(a: &Activator, n: usize) {
    wait_until(|| a.pending_global() as usize == n).await;
}

/// `n` GETs held by `addr` (no backend listens yet).
async fn hold(a: &Activator, addr: SocketAddr, n: usize) -> Vec<JoinHandle<Reply>> {
    let clients = (0..n).map(|_| spawn_send(addr, "GET", "")).collect();
    until_pending(a, n).await;
    clients
}

/// The answer to a held request, once its pod is up.
async fn released(client: JoinHandle<Reply>) -> Reply {
    tokio::time::timeout(Duration::from_secs(5), client)
        .await
        .expect("not released")
        .unwrap()
}

/// The activator's own 503, telling the client when to retry.
fn assert_503_retry_after(reply: &Reply, secs: u32) {
    assert_eq!(reply.status, 503, "{}", reply.headers);
    assert!(
        reply.headers.contains(&format!("retry-after: {secs}")),
        "{}",
        reply.headers
    );
}

#[tokio::test]
async fn held_request_is_answered_once_the_pod_listens() {
    let (a, addr, demand) = activator().await;
    let pod = starting_pod(&a).await;
    let client = spawn_send(addr, "POST", "payload");

    until_pending(&a, 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!client.is_finished(), "answered although no pod listens");
    assert_eq!(
        demand.0.lock().unwrap().first(),
        Some(&(key(), 1)),
        "demand not signalled"
    );

    let seen = backend(pod, Mode::Ok).await;
    let reply = released(client).await;
    assert_eq!(reply.status, 200, "{}", reply.headers);
    assert_eq!(reply.body, "pod saw POST /path?q=1 HTTP/1.1 #1");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "POST delivered more than once"
    );
    assert_eq!(a.pending_global(), 0);
    assert_eq!(a.metrics().requests_with("cold"), 1);
}

#[tokio::test]
async fn a_ready_pod_that_refuses_is_retried_without_duplicating_a_post() {
    let (a, addr, _) = activator().await;
    let pod = free_port().await;
    // kcm says ready, but the pod is not listening yet (or any more).
    pod_is_ready(&a, pod);
    let client = spawn_send(addr, "POST", "once");
    until_pending(&a, 1).await;
    let seen = backend(pod, Mode::Ok).await;
    let reply = released(client).await;
    assert_eq!(reply.status, 200);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn full_queue_gets_503_with_retry_after() {
    let settings = AppSettings {
        max_pending: 2,
        cold_start_timeout: Duration::from_secs(30),
    };
    let (a, addr, _) = activator_with(settings, 100).await;
    let held = hold(&a, addr, 2).await;
    let reply = get(addr).await;
    assert_503_retry_after(&reply, 1);
    assert_eq!(a.metrics().requests_with("queue_full"), 1);
    // The held ones are still held.
    assert!(held.iter().all(|h| !h.is_finished()));
    assert_eq!(a.pending_global(), 2);
}

#[tokio::test]
async fn global_cap_applies_across_apps() {
    let settings = AppSettings {
        max_pending: 10,
        cold_start_timeout: Duration::from_secs(30),
    };
    let (a, addr, _) = activator_with(settings, 1).await;
    let other = a
        .add_app(0, AppKey::new("apps", "other"), settings)
        .await
        .unwrap();
    let _held = hold(&a, addr, 1).await;
    let reply = get(other).await;
    assert_503_retry_after(&reply, 1);
}

#[tokio::test]
async fn cold_start_deadline_gives_503_with_retry_after() {
    let settings = AppSettings {
        max_pending: 10,
        cold_start_timeout: Duration::from_millis(300),
    };
    let (a, addr, _) = activator_with(settings, 100).await;
    starting_pod(&a).await;
    let reply = get(addr).await;
    assert_503_retry_after(&reply, 5);
    assert_eq!(a.metrics().requests_with("timeout"), 1);
    assert_eq!(
        a.pending_global(),
        0,
        "a timed-out request must leave the queue"
    );
}

#[tokio::test]
async fn post_is_never_replayed_after_bytes_reached_the_pod() {
    let (a, addr, _) = activator().await;
    let seen = ready_pod(&a, Mode::CloseAfterRead).await;
    let reply = send(addr, "POST", "", "charge-card").await;
    assert_eq!(reply.status, 502);
    assert_eq!(seen.load(Ordering::SeqCst), 1, "the POST was replayed");
    assert_eq!(a.metrics().requests_with("upstream_error"), 1);
}

#[tokio::test]
async fn idempotent_get_is_retried_exactly_once() {
    let (a, addr, _) = activator().await;
    let seen = ready_pod(&a, Mode::FirstCloseThenOk).await;
    let reply = get(addr).await;
    assert_eq!(reply.status, 200);
    assert_eq!(seen.load(Ordering::SeqCst), 2);

    // A pod that always fails: one retry, then 502.
    let seen2 = ready_pod(&a, Mode::CloseAfterRead).await;
    let reply = get(addr).await;
    assert_eq!(reply.status, 502);
    assert_eq!(
        seen2.load(Ordering::SeqCst),
        2,
        "retried more (or less) than once"
    );
}

#[tokio::test]
async fn probe_is_answered_by_the_activator_itself() {
    let (a, addr, demand) = activator().await;
    let reply = send(addr, "GET", "spindle-probe: uid-1\r\n", "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "apps/hello\n");
    assert!(
        demand.0.lock().unwrap().is_empty(),
        "a probe must not wake the app"
    );
    assert_eq!(a.activity()[0].requests, 0, "a probe is not activity");
}

/// The raw answer of the admin server at `admin` to `GET path`.
async fn admin_get(admin: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(admin).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn activity_is_recorded_and_served() {
    let (a, addr, _) = activator().await;
    let _seen = ready_pod(&a, Mode::Ok).await;
    assert_eq!(a.activity()[0].last_request_unix_ms, None);
    assert_eq!(get(addr).await.status, 200);
    let act = &a.activity()[0];
    assert_eq!((act.requests, act.port), (1, addr.port()));
    assert!(act.last_request_unix_ms.is_some());
    assert_eq!(a.metrics().requests_with("proxied"), 1);
    let state = AdminState {
        activator: a.clone(),
        ready: Arc::new(true.into()),
    };
    let (admin, server) = serve_admin(
        "127.0.0.1:0".parse().unwrap(),
        state,
        std::future::pending(),
    )
    .await
    .unwrap();
    tokio::spawn(server);
    let json = get(admin).await;
    let _ = json; // `/path` is not an admin route; fetch the real ones below.
    let out = admin_get(admin, "/v1/activity").await;
    assert!(
        out.contains("\"name\":\"hello\"") && out.contains("\"requests\":1"),
        "{out}"
    );
    let out = admin_get(admin, "/metrics").await;
    assert!(
        out.contains("spindle_activator_requests_total{outcome=\"proxied\"} 1"),
        "{out}"
    );
}

#[tokio::test]
async fn twenty_held_requests_are_all_released_exactly_once() {
    let (a, addr, _) = activator().await;
    let pod = starting_pod(&a).await;
    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push(spawn_send(addr, "GET", ""));
        until_pending(&a, i + 1).await;
    }
    let seen = backend(pod, Mode::Ok).await;
    for c in clients {
        assert_eq!(released(c).await.status, 200);
    }
    assert_eq!(seen.load(Ordering::SeqCst), 20);
}

#[test]
fn terminating_endpoints_are_never_backends() {
    let slice: k8s_openapi::api::discovery::v1::EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "hello-abc", "namespace": "apps", "labels": {"kubernetes.io/service-name": "hello"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.244.0.1"], "conditions": {"ready": true}},
            {"addresses": ["10.244.0.2"], "conditions": {"ready": false}},
            {"addresses": ["10.244.0.3"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["10.244.0.4"]}
        ]
    }))
    .unwrap();
    let b = slice_backends(&slice);
    assert_eq!(
        b.ready,
        vec![
            "10.244.0.1:8080".parse().unwrap(),
            "10.244.0.4:8080".parse().unwrap()
        ]
    );
    assert_eq!(b.not_ready, vec!["10.244.0.2:8080".parse().unwrap()]);
}

/// How a keep-alive backend treats the requests of one connection.
#[derive(Clone, Copy, PartialEq)]
enum KeepAlive {
    /// Answer every request and keep the connection open.
    Serve,
    /// Answer the first request, then close the (idle) connection.
    CloseWhenIdle,
    /// Answer the first request; read the second one whole, then close
    /// without answering (the pod got the bytes, then failed).
    FailSecond,
}

/// Counters of a keep-alive backend.
#[derive(Default)]
struct Upstream {
    connections: AtomicUsize,
    requests: AtomicUsize,
    /// Request lines fully received, in order.
    lines: Mutex<Vec<String>>,
}

/// An HTTP/1.1 keep-alive backend counting accepted connections.
async fn keep_alive_backend(addr: SocketAddr, mode: KeepAlive) -> Arc<Upstream> {
    let listener = TcpListener::bind(addr).await.unwrap();
    let up = Arc::new(Upstream::default());
    let counters = up.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counters.connections.fetch_add(1, Ordering::SeqCst);
            let counters = counters.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let Some(head) = read_request(&mut s).await else {
                        return;
                    };
                    let line = head.lines().next().unwrap_or("").to_owned();
                    counters.lines.lock().unwrap().push(line.clone());
                    let n = counters.requests.fetch_add(1, Ordering::SeqCst) + 1;
                    if mode == KeepAlive::FailSecond && i == 1 {
                        return;
                    }
                    let body = format!("pod saw {line} #{n}");
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                    if mode == KeepAlive::CloseWhenIdle {
                        return;
                    }
                }
            });
        }
    });
    up
}

/// A ready pod already serving in `mode`, with keep-alive.
async fn ready_keep_alive_pod(a: &Activator, mode: KeepAlive) -> Arc<Upstream> {
    let pod = free_port().await;
    let up = keep_alive_backend(pod, mode).await;
    pod_is_ready(a, pod);
    up
}

/// Waits until the finished exchange has returned its connection to the pool.
async fn until_pooled(a: &Activator, n: usize) {
    wait_until(|| a.idle_upstream(&key()) == n).await;
}

#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    let (a, addr, _) = activator().await;
    let up = ready_keep_alive_pod(&a, KeepAlive::Serve).await;
    for i in 0..20 {
        // Each client request on its own connection: only the activator's
        // side towards the pod is kept alive.
        let (method, body) = if i % 2 == 0 {
            ("GET", "")
        } else {
            ("POST", "x=1")
        };
        let reply = send(addr, method, "", body).await;
        assert_eq!(reply.status, 200, "{}", reply.headers);
        assert_eq!(
            reply.body,
            format!("pod saw {method} /path?q=1 HTTP/1.1 #{}", i + 1)
        );
        until_pooled(&a, 1).await;
    }
    assert_eq!(up.requests.load(Ordering::SeqCst), 20);
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        1,
        "20 sequential requests must share one upstream connection"
    );
    assert_eq!(a.metrics().upstream_requests("new"), 1);
    assert_eq!(a.metrics().upstream_requests("reused"), 19);
}

#[tokio::test]
async fn concurrent_requests_get_their_own_connections_then_share_them() {
    let (a, addr, _) = activator().await;
    let up = ready_keep_alive_pod(&a, KeepAlive::Serve).await;
    let burst: Vec<_> = (0..4).map(|_| spawn_send(addr, "GET", "")).collect();
    for c in burst {
        assert_eq!(c.await.unwrap().status, 200);
    }
    let opened = up.connections.load(Ordering::SeqCst);
    assert!(
        (1..=4).contains(&opened),
        "{opened} connections for 4 requests"
    );
    until_pooled(&a, opened).await;
    for _ in 0..10 {
        assert_eq!(get(addr).await.status, 200);
        until_pooled(&a, opened).await;
    }
    assert_eq!(up.connections.load(Ordering::SeqCst), opened);
}

#[tokio::test]
async fn an_idle_connection_the_pod_closed_is_not_used() {
    let (a, addr, _) = activator().await;
    let up = ready_keep_alive_pod(&a, KeepAlive::CloseWhenIdle).await;
    assert_eq!(get(addr).await.status, 200);
    // Give hyper's connection task time to see the pod's FIN.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply = send(addr, "POST", "", "charge-card").await;
    assert_eq!(reply.status, 200, "{}", reply.headers);
    assert_eq!(up.connections.load(Ordering::SeqCst), 2);
    let lines = up.lines.lock().unwrap().clone();
    assert_eq!(
        lines,
        vec!["GET /path?q=1 HTTP/1.1", "POST /path?q=1 HTTP/1.1"],
        "the POST must reach the pod exactly once"
    );
}

#[tokio::test]
async fn a_post_is_never_replayed_after_its_bytes_reached_a_pod_on_a_reused_connection() {
    let (a, addr, _) = activator().await;
    let up = ready_keep_alive_pod(&a, KeepAlive::FailSecond).await;
    assert_eq!(get(addr).await.status, 200);
    until_pooled(&a, 1).await;

    // Goes on the pooled connection; the pod reads it whole and closes.
    let reply = send(addr, "POST", "", "charge-card").await;
    assert_eq!(reply.status, 502, "{}", reply.headers);
    assert_eq!(
        up.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("POST"))
            .count(),
        1,
        "the POST was replayed"
    );
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        1,
        "no connection may be opened to replay a POST"
    );
    assert_eq!(a.metrics().requests_with("upstream_error"), 1);
    assert_eq!(a.metrics().retries.get(), 0);

    // A body-less GET in the same spot is replayed once, on a fresh connection.
    assert_eq!(get(addr).await.status, 200);
    until_pooled(&a, 1).await;
    let reply = send(addr, "GET", "x-id: 7\r\n", "").await;
    assert_eq!(reply.status, 200, "{}", reply.headers);
    assert_eq!(a.metrics().retries.get(), 1);
    assert_eq!(up.connections.load(Ordering::SeqCst), 3);
    // GET, POST (failed), GET, GET (failed), its replay.
    assert_eq!(up.requests.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn the_dialled_connection_carries_the_first_held_request() {
    let (a, addr, _) = activator().await;
    let pod = starting_pod(&a).await;
    let client = spawn_send(addr, "POST", "wake");
    until_pending(&a, 1).await;
    let up = keep_alive_backend(pod, KeepAlive::Serve).await;
    let reply = client.await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.headers);
    assert_eq!(up.requests.load(Ordering::SeqCst), 1);
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        1,
        "the dial loop's connection should carry the request"
    );
    assert_eq!(a.metrics().upstream_requests("reused"), 1);
}

#[tokio::test]
async fn connections_to_a_pod_that_left_are_dropped() {
    let (a, addr, _) = activator().await;
    let _up = ready_keep_alive_pod(&a, KeepAlive::Serve).await;
    assert_eq!(get(addr).await.status, 200);
    until_pooled(&a, 1).await;
    a.set_backends(&key(), Backends::default());
    assert_eq!(a.idle_upstream(&key()), 0);
}

/// Soft limit of open files of this process.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[tokio::test]
async fn a_burst_beyond_1024_connects_never_waits_for_a_syn_retransmit() {
    const BURST: usize = 1500;
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if somaxconn < BURST {
        eprintln!(
            "SKIP: net.core.somaxconn is {somaxconn} (< {BURST}); the kernel caps the backlog"
        );
        return;
    }
    if open_files_limit().is_none_or(|n| n < BURST + 256) {
        eprintln!("SKIP: the open files limit is below {}", BURST + 256);
        return;
    }
    // The listener of add_app, never accepting: its accept queue alone must
    // hold the burst (as when the accept loop lags). With tokio's default
    // backlog (1024) connect #1026 on waits for a SYN retransmit (>= 1 s).
    let listener = super::core::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..BURST {
        set.spawn(async move {
            let start = std::time::Instant::now();
            let s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await;
            (start.elapsed(), s.map(|r| r.is_ok()).unwrap_or(false))
        });
    }
    let mut slow = 0;
    let mut failed = 0;
    let mut worst = Duration::ZERO;
    while let Some(r) = set.join_next().await {
        let (took, ok) = r.unwrap();
        worst = worst.max(took);
        slow += usize::from(took > Duration::from_millis(500));
        failed += usize::from(!ok);
    }
    assert_eq!(failed, 0, "connects failed");
    assert_eq!(slow, 0, "connects slower than 500 ms (worst {worst:?})");
    drop(listener);
}

/// Held requests of a starting pod, to shut down under.
struct Held {
    a: Activator,
    addr: SocketAddr,
    pod: SocketAddr,
    clients: Vec<JoinHandle<Reply>>,
}

/// Settings of the shutdown tests: the cold start deadline (30 s) outlasts
/// every grace period they use, so held requests end by shutdown only.
fn patient() -> AppSettings {
    AppSettings {
        cold_start_timeout: Duration::from_secs(30),
        ..AppSettings::default()
    }
}

/// `n` GETs held by an activator whose pod does not listen yet.
async fn held_gets(n: usize) -> Held {
    let (a, addr, _) = activator_with(patient(), 1000).await;
    let pod = starting_pod(&a).await;
    let clients = hold(&a, addr, n).await;
    Held {
        a,
        addr,
        pod,
        clients,
    }
}

#[tokio::test]
async fn shutdown_stops_accepting_and_serves_held_requests_woken_during_the_grace() {
    let Held {
        a,
        addr,
        pod,
        clients,
    } = held_gets(50).await;
    let shutdown = tokio::spawn({
        let a = a.clone();
        async move { a.shutdown(Duration::from_secs(10)).await }
    });
    // New connections are refused once the listener closed.
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "still accepting after shutdown started");
    assert!(
        !shutdown.is_finished(),
        "shutdown returned with requests held"
    );

    // The wake arrives during the grace period.
    let seen = backend(pod, Mode::Ok).await;
    for c in clients {
        let reply = c.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.headers);
    }
    assert_eq!(seen.load(Ordering::SeqCst), 50);
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown did not return once everything was answered")
        .unwrap();
    assert_eq!(a.open_connections(), 0);
    assert!(matches!(
        a.add_app(0, AppKey::new("apps", "other"), patient()).await,
        Err(Error::Draining)
    ));
}

#[tokio::test]
async fn shutdown_answers_requests_still_held_after_the_grace_with_503() {
    let Held { a, clients, .. } = held_gets(50).await;
    let start = std::time::Instant::now();
    a.shutdown(Duration::from_millis(700)).await;
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(700),
        "returned after {took:?}"
    );
    assert!(took < Duration::from_secs(3), "returned after {took:?}");
    for c in clients {
        // A reset or a close without an answer would show as status 0.
        let reply = c.await.unwrap();
        assert_503_retry_after(&reply, 1);
    }
    assert_eq!(a.metrics().requests_with("shutdown"), 50);
    assert_eq!(a.open_connections(), 0);
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_proxied_request_finish() {
    let (a, addr, _) = activator().await;
    // A pod that answers 500 ms after reading the request.
    let pod = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pod_addr = pod.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = pod.accept().await.unwrap();
        read_request(&mut s).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow")
            .await;
    });
    pod_is_ready(&a, pod_addr);
    let client = spawn_send(addr, "POST", "x");
    wait_until(|| a.open_connections() == 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.shutdown(Duration::from_secs(5)).await;
    let reply = client.await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.headers);
    assert_eq!(reply.body, "slow");
}

#[test]
fn two_apps_on_one_port_are_a_reported_conflict_and_the_listener_keeps_its_app() {
    use super::kube::{Route, routes_by_port};
    let route = |ns: &str, name: &str, port| Route {
        app: AppKey::new(ns, name),
        port,
        settings: AppSettings::default(),
    };
    let routes = [
        route("team-b", "web", 20000),
        route("team-a", "api", 20000),
        route("team-a", "solo", 20001),
        route("team-a", "outside", 30000),
    ];
    let range = 20000..=29999;
    let (wanted, conflicts) = routes_by_port(routes.iter(), &range, |_| None);
    assert_eq!(wanted.len(), 2);
    assert_eq!(wanted[&20000].app, AppKey::new("team-a", "api"));
    assert_eq!(
        conflicts.get(&20000),
        Some(&vec![
            AppKey::new("team-a", "api"),
            AppKey::new("team-b", "web")
        ])
    );
    assert_eq!(conflicts.len(), 1);
    // The app already listening keeps the port: no flapping between the two.
    let (wanted, _) = routes_by_port(routes.iter(), &range, |p| {
        (p == 20000).then(|| AppKey::new("team-b", "web"))
    });
    assert_eq!(wanted[&20000].app, AppKey::new("team-b", "web"));
}
