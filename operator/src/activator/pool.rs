//! Keep-alive HTTP/1.1 connections to an app's pods, reused across requests.
//!
//! Safety rule: a request is retried on another connection only if hyper
//! hands it back (`TrySendError::take_message`), which it does only while the
//! request is still queued for the connection task, i.e. before a single byte
//! was written. A request that failed after it left the queue (a stale
//! keep-alive connection the pod closed just as we wrote, included) is
//! reported as sent; the caller replays only idempotent, body-less requests,
//! and on a fresh connection.
//!
//! Staleness is kept rare: hyper's connection task notices a pod's close
//! while the connection is idle (`is_closed`), idle connections expire after
//! [`IDLE_TIMEOUT`], below the usual server keep-alive timeouts (Node and
//! uvicorn 5 s, nginx 75 s), and a backend that leaves the candidates has
//! its connections dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::core::Body;

/// An idle connection unused this long is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Idle connections kept per pod; more are closed when they become idle.
pub(crate) const MAX_IDLE_PER_BACKEND: usize = 64;
/// Longest wait for a finished exchange to leave its connection reusable.
const READY_WAIT: Duration = Duration::from_secs(5);

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

/// The idle connections of one app, by pod address.
#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    /// A reaper task runs (started with the first idle connection).
    reaping: AtomicBool,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Vec<Idle>>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle connection to `addr` that is ready now.
    pub(crate) fn take(&self, addr: SocketAddr) -> Option<SendRequest<Body>> {
        let mut idle = self.lock();
        let list = idle.get_mut(&addr)?;
        let now = Instant::now();
        let mut found = None;
        // LIFO: hot connections stay hot, cold ones age out.
        while let Some(c) = list.pop() {
            if now.duration_since(c.since) < IDLE_TIMEOUT && c.sender.is_ready() {
                found = Some(c.sender);
                break;
            }
        }
        if list.is_empty() {
            idle.remove(&addr);
        }
        found
    }

    /// Keep `sender` for reuse once its connection is ready again.
    pub(crate) fn put(self: &Arc<Self>, addr: SocketAddr, mut sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        if sender.is_ready() {
            self.insert(addr, sender);
            return;
        }
        // The connection task has not finished the exchange yet (e.g. the
        // request body is still being written): wait off the request path.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = self.clone();
        rt.spawn(async move {
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, sender.ready()).await {
                pool.insert(addr, sender);
            }
        });
    }

    fn insert(self: &Arc<Self>, addr: SocketAddr, sender: SendRequest<Body>) {
        {
            let mut idle = self.lock();
            let list = idle.entry(addr).or_default();
            if list.len() >= MAX_IDLE_PER_BACKEND {
                return;
            }
            list.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
        self.start_reaper();
    }

    /// Hand a connection the dial loop opened to the pool (saves a connect
    /// for the first released request).
    pub(crate) async fn adopt(self: &Arc<Self>, addr: SocketAddr, stream: TcpStream) {
        if let Some(sender) = handshake(stream).await {
            self.insert(addr, sender);
        }
    }

    /// Close the idle connections of pods that are no longer candidates.
    pub(crate) fn retain(&self, keep: &[SocketAddr]) {
        self.lock().retain(|addr, _| keep.contains(addr));
    }

    /// Idle connections held now.
    #[cfg(test)]
    pub(crate) fn idle_count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// Close expired and closed connections; true if some remain.
    fn prune(&self) -> bool {
        let mut idle = self.lock();
        let now = Instant::now();
        idle.retain(|_, list| {
            list.retain(|c| now.duration_since(c.since) < IDLE_TIMEOUT && !c.sender.is_closed());
            !list.is_empty()
        });
        !idle.is_empty()
    }

    /// One task per pool while it holds connections, so that idle apps cost
    /// no timer.
    fn start_reaper(self: &Arc<Self>) {
        if self.reaping.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.reaping.store(false, Ordering::SeqCst);
            return;
        };
        let pool = Arc::downgrade(self);
        rt.spawn(async move {
            loop {
                tokio::time::sleep(IDLE_TIMEOUT).await;
                let Some(pool) = pool.upgrade() else { return };
                if !pool.prune() {
                    pool.reaping.store(false, Ordering::SeqCst);
                    // A connection may have arrived between prune and store.
                    if !pool.prune() || pool.reaping.swap(true, Ordering::SeqCst) {
                        return;
                    }
                }
            }
        });
    }
}

/// HTTP/1.1 handshake on a connected stream; the connection task is spawned.
pub(crate) async fn handshake(stream: TcpStream) -> Option<SendRequest<Body>> {
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Some(sender)
}

/// A pod's response body that gives its connection back to the pool once the
/// body has been read to the end (a body dropped early closes it).
pub(crate) struct PooledBody {
    inner: Incoming,
    give_back: Option<(Arc<Pool>, SocketAddr, SendRequest<Body>)>,
}

impl PooledBody {
    pub(crate) fn new(
        inner: Incoming,
        pool: Arc<Pool>,
        addr: SocketAddr,
        sender: SendRequest<Body>,
    ) -> Self {
        PooledBody {
            inner,
            give_back: Some((pool, addr, sender)),
        }
    }

    fn release(&mut self) {
        if let Some((pool, addr, sender)) = self.give_back.take() {
            pool.put(addr, sender);
        }
    }
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            // A broken body means a broken connection.
            Poll::Ready(Some(Err(_))) => this.give_back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Bodies known to be empty (HEAD, 204, `content-length: 0`) are
        // never polled; a body dropped half-read leaves the connection
        // mid-message, so it is closed instead.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}
