//! Routing table, per-app queues, dial loop and request handling.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch};

use super::metrics::{ActivatorMetrics, ConnectionLabels};
use super::pool::Pool;
use super::proxy::{self, Conn, ProxyError};
use crate::scale::AppKey;

/// Dial-loop period while requests wait.
pub const DIAL_INTERVAL: Duration = Duration::from_millis(5);
/// Connect timeout of one dial.
pub const DIAL_TIMEOUT: Duration = Duration::from_millis(100);
/// Dials of one app in flight at most (DIAL_TIMEOUT / DIAL_INTERVAL per
/// candidate pod, for a few pods).
const MAX_DIALS_IN_FLIGHT: u32 = 64;
/// Demand renewal period while requests wait.
pub const DEMAND_RENEW: Duration = Duration::from_secs(1);
/// Header of the operator's dataplane probe, answered by the activator itself.
pub const PROBE_HEADER: &str = "spindle-probe";
/// Default global cap on held requests.
pub const DEFAULT_MAX_PENDING_GLOBAL: u32 = 20_000;
/// Accept backlog of the app listeners. tokio's `bind` uses 1024, which a
/// burst of connections at zero overflows (clients then wait for SYN
/// retransmits, 1-3 s). The kernel caps it at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;
/// After the shutdown grace, how long the 503s to what was left may take to be written.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// The response body of everything the activator answers.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Errors of the activator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The activator is shutting down and opens no listener.
    #[error("the activator is shutting down")]
    Draining,
}

/// A failed demand signal.
#[derive(Debug, thiserror::Error)]
#[error("signalling demand for {app}: {message}")]
pub struct DemandError {
    /// The app.
    pub app: AppKey,
    /// What went wrong.
    pub message: String,
}

/// A boxed future, for object-safe traits.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// How the activator tells the operator that an app has waiting requests.
/// Called once when the first request queues, then every [`DEMAND_RENEW`]
/// while any waits. Implementations must be idempotent.
pub trait DemandSignal: Send + Sync + 'static {
    /// Signal `pending` waiting requests for `app`.
    fn signal(&self, app: &AppKey, pending: u32) -> BoxFuture<Result<(), DemandError>>;
}

/// Where backends come from: runs until the process stops, pushing every
/// change into [`Activator::set_backends`].
pub trait BackendDiscovery: Send + Sync + 'static {
    /// Run the discovery loop.
    fn run(self: Arc<Self>, activator: Activator) -> BoxFuture<()>;
}

/// Per-app settings the activator enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppSettings {
    /// Held requests at most.
    pub max_pending: u32,
    /// Longest a request is held.
    pub cold_start_timeout: Duration,
}

impl Default for AppSettings {
    fn default() -> Self {
        AppSettings {
            max_pending: crate::scale::DEFAULT_MAX_PENDING,
            cold_start_timeout: crate::scale::DEFAULT_COLD_START_TIMEOUT,
        }
    }
}

/// Pod endpoints of an app (terminating ones excluded by the caller).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backends {
    /// Ready pod IP:port.
    pub ready: Vec<SocketAddr>,
    /// Not (yet) ready, not terminating: dial candidates.
    pub not_ready: Vec<SocketAddr>,
}

/// Activity of one app, served at `/v1/activity`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    /// Namespace.
    pub namespace: String,
    /// App name.
    pub name: String,
    /// Activator port.
    pub port: u16,
    /// Requests received (probes excluded).
    pub requests: u64,
    /// Last request, Unix milliseconds; absent if none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_request_unix_ms: Option<u64>,
    /// Requests waiting now.
    pub pending: u32,
}

/// Activator configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// IP the app listeners bind.
    pub listen_ip: IpAddr,
    /// Global cap on held requests.
    pub max_pending_global: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen_ip: IpAddr::from([0, 0, 0, 0]),
            max_pending_global: DEFAULT_MAX_PENDING_GLOBAL,
        }
    }
}

struct Routing {
    candidates: Vec<SocketAddr>,
    ready: HashSet<SocketAddr>,
    /// Ready or dial-confirmed, minus those that refused since.
    live: Vec<SocketAddr>,
    waiters: VecDeque<oneshot::Sender<()>>,
    next: usize,
}

pub(crate) struct App {
    pub(crate) key: AppKey,
    port: u16,
    settings: Mutex<AppSettings>,
    routing: Mutex<Routing>,
    /// Idle keep-alive connections to the app's pods.
    pool: Arc<Pool>,
    pending: AtomicU32,
    dialing: AtomicBool,
    dials_in_flight: AtomicU32,
    unrouted: AtomicBool,
    requests: AtomicU64,
    last_request_ms: AtomicU64,
    stop: watch::Sender<bool>,
}

impl App {
    fn settings(&self) -> AppSettings {
        *self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A live backend (round robin), or queue the caller.
    fn live_or_enqueue(&self) -> Result<SocketAddr, oneshot::Receiver<()>> {
        let mut r = self.routing.lock().unwrap_or_else(|e| e.into_inner());
        if !r.live.is_empty() {
            r.next = r.next.wrapping_add(1);
            return Ok(r.live[r.next % r.live.len()]);
        }
        let (tx, rx) = oneshot::channel();
        r.waiters.push_back(tx);
        Err(rx)
    }

    fn mark_live(&self, addr: SocketAddr) {
        let mut r = self.routing.lock().unwrap_or_else(|e| e.into_inner());
        if !r.candidates.contains(&addr) {
            return;
        }
        if !r.live.contains(&addr) {
            r.live.push(addr);
        }
        // Release every waiter in FIFO order.
        while let Some(w) = r.waiters.pop_front() {
            let _ = w.send(());
        }
    }

    fn mark_refused(&self, addr: SocketAddr) {
        let mut r = self.routing.lock().unwrap_or_else(|e| e.into_inner());
        r.live.retain(|a| *a != addr);
    }

    /// Candidates not known to accept connections: the ones to dial.
    fn to_dial(&self) -> Vec<SocketAddr> {
        let r = self.routing.lock().unwrap_or_else(|e| e.into_inner());
        r.candidates
            .iter()
            .copied()
            .filter(|a| !r.live.contains(a))
            .collect()
    }
}

struct Shared {
    config: Config,
    metrics: ActivatorMetrics,
    demand: Arc<dyn DemandSignal>,
    pending_global: AtomicU32,
    apps: Mutex<HashMap<u16, Arc<App>>>,
    by_key: Mutex<HashMap<AppKey, u16>>,
    /// Backends that arrived before the app's listener (discovery races routing).
    early_backends: Mutex<HashMap<AppKey, Backends>>,
    /// Shutdown started: listeners stop, connections close after their request.
    draining: watch::Sender<bool>,
    /// Shutdown grace over: what is still unanswered gets 503 + Retry-After.
    forced: watch::Sender<bool>,
    /// Client connections open.
    connections: watch::Sender<usize>,
}

/// The activator (cheap to clone).
#[derive(Clone)]
pub struct Activator {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Activator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activator").finish_non_exhaustive()
    }
}

impl Activator {
    /// A new activator with no apps.
    pub fn new(config: Config, metrics: ActivatorMetrics, demand: Arc<dyn DemandSignal>) -> Self {
        Activator {
            shared: Arc::new(Shared {
                config,
                metrics,
                demand,
                pending_global: AtomicU32::new(0),
                apps: Mutex::new(HashMap::new()),
                by_key: Mutex::new(HashMap::new()),
                early_backends: Mutex::new(HashMap::new()),
                draining: watch::Sender::new(false),
                forced: watch::Sender::new(false),
                connections: watch::Sender::new(0),
            }),
        }
    }

    /// Whether [`Activator::shutdown`] has started.
    pub fn is_draining(&self) -> bool {
        *self.shared.draining.borrow()
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        *self.shared.connections.borrow()
    }

    /// Graceful shutdown: stop accepting connections, let held requests
    /// (which may still see a wake) and proxied ones finish, each within its
    /// own `coldStartTimeout` and all within `grace`; then answer whatever is
    /// left with 503 + Retry-After instead of dropping the connection.
    /// Returns once every client connection closed (or a short flush bound).
    pub async fn shutdown(&self, grace: Duration) {
        self.shared.draining.send_replace(true);
        let mut open = self.shared.connections.subscribe();
        let done = tokio::time::timeout(grace, closed(&mut open)).await;
        if done.is_err() {
            tracing::info!(
                connections = *open.borrow(),
                "shutdown grace over; answering what is left with 503"
            );
            self.shared.forced.send_replace(true);
            let _ = tokio::time::timeout(SHUTDOWN_FLUSH, closed(&mut open)).await;
        }
    }

    /// The metrics.
    pub fn metrics(&self) -> &ActivatorMetrics {
        &self.shared.metrics
    }

    /// Requests held now, over all apps.
    pub fn pending_global(&self) -> u32 {
        self.shared.pending_global.load(Ordering::SeqCst)
    }

    /// Listen on `port` for `app` (idempotent; updates settings if already
    /// listening). Returns the bound address.
    pub async fn add_app(
        &self,
        port: u16,
        key: AppKey,
        settings: AppSettings,
    ) -> Result<SocketAddr, Error> {
        let addr = SocketAddr::new(self.shared.config.listen_ip, port);
        if self.is_draining() {
            return Err(Error::Draining);
        }
        if let Some(app) = self.app_on(port) {
            if app.key == key {
                *app.settings.lock().unwrap_or_else(|e| e.into_inner()) = settings;
                app.unrouted.store(false, Ordering::SeqCst);
                return Ok(addr);
            }
            self.remove_app(port);
        }
        let listener = listen(addr).map_err(|source| Error::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        let (stop, stop_rx) = watch::channel(false);
        let backends = self
            .shared
            .early_backends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        let app = Arc::new(App {
            key: key.clone(),
            port: addr.port(),
            settings: Mutex::new(settings),
            routing: Mutex::new(Routing {
                candidates: Vec::new(),
                ready: HashSet::new(),
                live: Vec::new(),
                waiters: VecDeque::new(),
                next: 0,
            }),
            pool: Arc::new(Pool::default()),
            pending: AtomicU32::new(0),
            dialing: AtomicBool::new(false),
            dials_in_flight: AtomicU32::new(0),
            unrouted: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            last_request_ms: AtomicU64::new(0),
            stop,
        });
        if let Some(b) = backends {
            apply_backends(&app, b);
        }
        self.shared
            .apps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr.port(), app.clone());
        self.shared
            .by_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, addr.port());
        self.shared.metrics.listeners.inc();
        tokio::spawn(accept_loop(self.shared.clone(), app, listener, stop_rx));
        Ok(addr)
    }

    /// Stop listening on `port`; held requests of the app keep their deadline.
    pub fn remove_app(&self, port: u16) {
        let app = self
            .shared
            .apps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&port);
        if let Some(app) = app {
            self.shared
                .by_key
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&app.key);
            let _ = app.stop.send(true);
            self.shared.metrics.listeners.dec();
        }
    }

    /// Stop listening on `port` unless it was routed again meanwhile (see `kube::sync_routes`).
    pub fn remove_app_if_unrouted(&self, port: u16) {
        let unrouted = self
            .app_on(port)
            .is_some_and(|a| a.unrouted.load(Ordering::SeqCst));
        if unrouted {
            self.remove_app(port);
        }
    }

    /// Mark whether `port` is still wanted by the route table.
    pub fn set_routed(&self, port: u16, routed: bool) {
        if let Some(app) = self.app_on(port) {
            app.unrouted.store(!routed, Ordering::SeqCst);
        }
    }

    /// Ports listened on.
    pub fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .shared
            .apps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        ports.sort_unstable();
        ports
    }

    fn app_on(&self, port: u16) -> Option<Arc<App>> {
        self.shared
            .apps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&port)
            .cloned()
    }

    /// The app listened for on `port`.
    pub fn app_key_on(&self, port: u16) -> Option<AppKey> {
        self.app_on(port).map(|a| a.key.clone())
    }

    fn app(&self, key: &AppKey) -> Option<Arc<App>> {
        let port = *self
            .shared
            .by_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)?;
        self.app_on(port)
    }

    /// Replace the app's pod endpoints (from discovery). Terminating pods
    /// must not be passed: they are never used for new requests.
    pub fn set_backends(&self, key: &AppKey, backends: Backends) {
        match self.app(key) {
            Some(app) => apply_backends(&app, backends),
            None => {
                let mut early = self
                    .shared
                    .early_backends
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if backends == Backends::default() {
                    early.remove(key);
                } else if early.len() < 100_000 || early.contains_key(key) {
                    early.insert(key.clone(), backends);
                }
            }
        }
    }

    /// Idle keep-alive connections held for the app.
    #[cfg(test)]
    pub(crate) fn idle_upstream(&self, key: &AppKey) -> usize {
        self.app(key).map_or(0, |a| a.pool.idle_count())
    }

    /// Activity of every app.
    pub fn activity(&self) -> Vec<Activity> {
        let apps: Vec<Arc<App>> = self
            .shared
            .apps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut out: Vec<Activity> = apps
            .iter()
            .map(|a| {
                let ms = a.last_request_ms.load(Ordering::SeqCst);
                Activity {
                    namespace: a.key.namespace.clone(),
                    name: a.key.name.clone(),
                    port: a.port,
                    requests: a.requests.load(Ordering::SeqCst),
                    last_request_unix_ms: (ms > 0).then_some(ms),
                    pending: a.pending.load(Ordering::SeqCst),
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }
}

fn apply_backends(app: &App, b: Backends) {
    let mut r = app.routing.lock().unwrap_or_else(|e| e.into_inner());
    let mut candidates = b.ready.clone();
    candidates.extend(b.not_ready.iter().copied().filter(|a| !b.ready.contains(a)));
    let ready: HashSet<SocketAddr> = b.ready.iter().copied().collect();
    // Keep dial-confirmed backends that are still candidates; add ready ones.
    let mut live: Vec<SocketAddr> = r
        .live
        .iter()
        .copied()
        .filter(|a| candidates.contains(a))
        .collect();
    for a in &b.ready {
        if !live.contains(a) {
            live.push(*a);
        }
    }
    // Connections to pods that left (terminating ones included) are closed.
    app.pool.retain(&candidates);
    r.candidates = candidates;
    r.ready = ready;
    r.live = live;
    if !r.live.is_empty() {
        while let Some(w) = r.waiters.pop_front() {
            let _ = w.send(());
        }
    }
}

/// A listener with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as tokio's `bind`).
pub(crate) fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Until the flag is set (the `Ref` of `wait_for` is not `Send`).
async fn set(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|v| *v).await;
}

/// Until no client connection is open.
async fn closed(open: &mut watch::Receiver<usize>) {
    let _ = open.wait_for(|n| *n == 0).await;
}

/// Counts an open client connection.
struct ConnectionGuard(Arc<Shared>);

impl ConnectionGuard {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.connections.send_modify(|n| *n += 1);
        ConnectionGuard(shared.clone())
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.send_modify(|n| *n = n.saturating_sub(1));
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    app: Arc<App>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let mut draining = shared.draining.subscribe();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(error) => {
                    tracing::warn!(%error, app = %app.key, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
            // Shutdown: the listener closes; connections already accepted are served.
            _ = set(&mut draining) => return,
        };
        let _ = stream.set_nodelay(true);
        let guard = ConnectionGuard::new(&shared);
        let mut draining = shared.draining.subscribe();
        let shared = shared.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                let app = app.clone();
                async move { Ok::<_, Infallible>(handle(&shared, &app, req, peer).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = set(&mut draining) => {
                    // Finish the request in progress (if any), then close.
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(guard);
        });
    }
}

pub(crate) fn local(status: StatusCode, retry_after: Option<u32>, body: String) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(s) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}

/// Decrements the pending counters when a held request leaves the queue.
struct PendingGuard<'a> {
    shared: &'a Shared,
    app: &'a App,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.app.pending.fetch_sub(1, Ordering::SeqCst);
        self.shared.pending_global.fetch_sub(1, Ordering::SeqCst);
        self.shared.metrics.pending.dec();
    }
}

fn admit<'a>(shared: &'a Shared, app: &'a App, max: u32) -> Option<PendingGuard<'a>> {
    if app.pending.fetch_add(1, Ordering::SeqCst) >= max {
        app.pending.fetch_sub(1, Ordering::SeqCst);
        return None;
    }
    if shared.pending_global.fetch_add(1, Ordering::SeqCst) >= shared.config.max_pending_global {
        shared.pending_global.fetch_sub(1, Ordering::SeqCst);
        app.pending.fetch_sub(1, Ordering::SeqCst);
        return None;
    }
    shared.metrics.pending.inc();
    Some(PendingGuard { shared, app })
}

async fn handle(
    shared: &Arc<Shared>,
    app: &Arc<App>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    if req.headers().contains_key(PROBE_HEADER) {
        shared.metrics.outcome("probe");
        return local(
            StatusCode::OK,
            None,
            format!("{}/{}\n", app.key.namespace, app.key.name),
        );
    }
    app.requests.fetch_add(1, Ordering::SeqCst);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    app.last_request_ms.fetch_max(now_ms, Ordering::SeqCst);

    let settings = app.settings();
    let arrived = Instant::now();
    let deadline = arrived + settings.cold_start_timeout;
    let mut req: Option<Request<Body>> = Some(req.map(BodyExt::boxed));
    let mut queued: Option<PendingGuard<'_>> = None;
    let mut waited = false;
    let mut retried = false;
    let mut forced = shared.forced.subscribe();

    loop {
        let backend = match app.live_or_enqueue() {
            Ok(addr) => addr,
            Err(released) => {
                if queued.is_none() {
                    match admit(shared, app, settings.max_pending) {
                        Some(g) => queued = Some(g),
                        None => {
                            drop(released);
                            shared.metrics.outcome("queue_full");
                            return local(
                                StatusCode::SERVICE_UNAVAILABLE,
                                Some(1),
                                "too many requests are waiting for this app to start\n".into(),
                            );
                        }
                    }
                }
                waited = true;
                start_dialing(shared, app);
                tokio::select! {
                    woken = tokio::time::timeout_at(deadline.into(), released) => match woken {
                        Ok(_) => continue,
                        Err(_) => {
                            shared.metrics.outcome("timeout");
                            return local(
                                StatusCode::SERVICE_UNAVAILABLE,
                                Some(5),
                                "the app did not start in time\n".into(),
                            );
                        }
                    },
                    _ = set(&mut forced) => return shutting_down(shared),
                }
            }
        };
        if waited && queued.is_some() {
            shared
                .metrics
                .cold_wait
                .observe(arrived.elapsed().as_secs_f64());
        }
        let Some(request) = req.take() else {
            return local(StatusCode::BAD_GATEWAY, None, "upstream failed\n".into());
        };
        // The head of an idempotent, body-less request, for its single retry.
        let replay = (!retried && proxy::replayable(&request)).then(|| proxy::clone_head(&request));
        // A replay goes on a fresh connection: the reused one just failed.
        let forwarded = tokio::select! {
            r = proxy::forward(request, &app.pool, backend, peer, !retried) => r,
            _ = set(&mut forced) => return shutting_down(shared),
        };
        match forwarded {
            Ok((resp, conn)) => {
                drop(queued.take());
                let connection = match conn {
                    Conn::Reused => "reused",
                    Conn::New => "new",
                };
                shared
                    .metrics
                    .upstream
                    .get_or_create(&ConnectionLabels { connection })
                    .inc();
                shared
                    .metrics
                    .outcome(if waited { "cold" } else { "proxied" });
                return resp;
            }
            Err(ProxyError::NotSent(back)) => {
                // Nothing reached the pod: safe to try again (re-queue).
                app.mark_refused(backend);
                req = Some(*back);
                if Instant::now() >= deadline {
                    shared.metrics.outcome("timeout");
                    return local(
                        StatusCode::SERVICE_UNAVAILABLE,
                        Some(5),
                        "the app did not start in time\n".into(),
                    );
                }
            }
            Err(ProxyError::Sent(error)) => {
                tracing::debug!(%error, app = %app.key, %backend, "upstream failed after the request was sent");
                match replay {
                    Some(parts) => {
                        retried = true;
                        shared.metrics.retries.inc();
                        req = Some(Request::from_parts(parts, proxy::empty_body()));
                    }
                    None => {
                        shared.metrics.outcome("upstream_error");
                        return local(
                            StatusCode::BAD_GATEWAY,
                            None,
                            "the app failed while handling the request\n".into(),
                        );
                    }
                }
            }
        }
    }
}

/// The answer to a request still unanswered when the shutdown grace ends.
fn shutting_down(shared: &Shared) -> Response<Body> {
    shared.metrics.outcome("shutdown");
    local(
        StatusCode::SERVICE_UNAVAILABLE,
        Some(1),
        "the activator is shutting down\n".into(),
    )
}

/// Start the app's dial loop (and demand renewal) unless it runs.
fn start_dialing(shared: &Arc<Shared>, app: &Arc<App>) {
    if app.dialing.swap(true, Ordering::SeqCst) {
        return;
    }
    let shared = shared.clone();
    let app = app.clone();
    tokio::spawn(async move {
        let mut next_demand = Instant::now();
        // A steady cadence (a plain sleep would drift to the next timer tick).
        let mut tick = tokio::time::interval(DIAL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let pending = app.pending.load(Ordering::SeqCst);
            if pending == 0 {
                app.dialing.store(false, Ordering::SeqCst);
                // A request may have queued between the load and the store.
                if app.pending.load(Ordering::SeqCst) == 0
                    || app.dialing.swap(true, Ordering::SeqCst)
                {
                    return;
                }
                continue;
            }
            if Instant::now() >= next_demand {
                next_demand = Instant::now() + DEMAND_RENEW;
                let fut = shared.demand.signal(&app.key, pending);
                let metrics = shared.metrics.clone();
                tokio::spawn(async move {
                    let result = match fut.await {
                        Ok(()) => "ok",
                        Err(error) => {
                            tracing::warn!(%error, "demand signal failed");
                            "error"
                        }
                    };
                    metrics
                        .wake_signals
                        .get_or_create(&super::metrics::ResultLabels { result })
                        .inc();
                });
            }
            // Dials are not awaited here: a pod whose IP drops SYNs until
            // its network is up must not stall the loop for DIAL_TIMEOUT;
            // a new SYN leaves every DIAL_INTERVAL and the first to connect wins.
            for addr in app.to_dial() {
                if app.dials_in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_DIALS_IN_FLIGHT {
                    app.dials_in_flight.fetch_sub(1, Ordering::SeqCst);
                    break;
                }
                shared.metrics.dial_attempts.inc();
                let app = app.clone();
                tokio::spawn(async move {
                    let dialled =
                        tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await;
                    app.dials_in_flight.fetch_sub(1, Ordering::SeqCst);
                    if let Ok(Ok(stream)) = dialled {
                        // The first released request uses the dialled connection.
                        app.pool.adopt(addr, stream).await;
                        app.mark_live(addr);
                    }
                });
            }
            tick.tick().await;
        }
    });
}
