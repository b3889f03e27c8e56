//! Leader fencing: no write leaves the process unless this replica's last
//! successful Lease renewal began less than the renew deadline ago.
//!
//! Losing the Lease cancels the controllers, but a replica can only notice
//! the loss when it runs: a leader that was paused (SIGSTOP, a long GC-like
//! stall of its node, a frozen VM) resumes with reconciles half done, and
//! those would write before the renew loop finds out that another replica
//! took over meanwhile. The fence is checked on every request, on the
//! monotonic clock, so a resumed replica refuses its writes at once.
//!
//! The margin: another candidate takes the Lease over only after it has seen
//! the record unchanged for `leaseDurationSeconds` (15 s) on its own clock,
//! and it cannot have seen a renewal before the renewal request was sent. The
//! fence closes `renew_deadline` (10 s) after that send, so a write that
//! passed the fence reaches the apiserver before any other replica may lead,
//! unless it spends more than the 5 s difference in flight.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// Whether this replica may write. Cheap to clone; all clones share one state.
#[derive(Clone, Debug)]
pub struct Fence {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `None`: no leader election, always open.
    deadline: Option<Duration>,
    /// Origin of `renewed_at`.
    origin: Instant,
    /// When the last successful renewal was sent, in nanoseconds after
    /// `origin`, plus one; 0 = closed (never renewed, or revoked).
    renewed_at: AtomicU64,
}

impl Fence {
    /// A fence that is always open: the process is the only writer
    /// (`--leader-elect=false`).
    pub fn open() -> Self {
        Self::with_deadline(None)
    }

    /// A closed fence that opens for `renew_deadline` after each renewal.
    pub fn leased(renew_deadline: Duration) -> Self {
        Self::with_deadline(Some(renew_deadline))
    }

    fn with_deadline(deadline: Option<Duration>) -> Self {
        Self {
            inner: Arc::new(Inner {
                deadline,
                origin: Instant::now(),
                renewed_at: AtomicU64::new(0),
            }),
        }
    }

    /// A renewal that was sent at `sent` succeeded.
    pub fn renewed(&self, sent: Instant) {
        let nanos = sent.saturating_duration_since(self.inner.origin).as_nanos();
        let stamp = u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1;
        // Never move back: a slow earlier renewal must not shorten a later one.
        self.inner.renewed_at.fetch_max(stamp, Ordering::SeqCst);
    }

    /// Leadership is gone: close until the next renewal.
    pub fn revoke(&self) {
        self.inner.renewed_at.store(0, Ordering::SeqCst);
    }

    /// Whether a write may leave the process now.
    pub fn is_open(&self) -> bool {
        self.is_open_at(Instant::now())
    }

    fn is_open_at(&self, now: Instant) -> bool {
        let Some(deadline) = self.inner.deadline else {
            return true;
        };
        let stamp = self.inner.renewed_at.load(Ordering::SeqCst);
        if stamp == 0 {
            return false;
        }
        let renewed = self.inner.origin + Duration::from_nanos(stamp - 1);
        now.saturating_duration_since(renewed) < deadline
    }

    /// The tower layer that applies this fence to a client's requests.
    pub fn layer(&self, metrics: &Metrics) -> FenceLayer {
        FenceLayer {
            fence: self.clone(),
            metrics: metrics.clone(),
        }
    }
}

/// A write refused by the fence; it never reached the apiserver.
#[derive(Debug, thiserror::Error)]
#[error(
    "not sent: {method} {path}: this replica's leader lease was not renewed within the renew deadline"
)]
pub struct FencedWrite {
    method: http::Method,
    path: String,
}

/// Requests that change nothing pass the fence: a deposed leader may still read.
fn is_write(method: &http::Method) -> bool {
    !matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    )
}

/// Tower layer for `kube::client::ClientBuilder::with_layer` (see [`Fence`]).
#[derive(Clone)]
pub struct FenceLayer {
    fence: Fence,
    metrics: Metrics,
}

impl<S> tower::Layer<S> for FenceLayer {
    type Service = FenceService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        FenceService {
            inner,
            fence: self.fence.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// Service produced by [`FenceLayer`].
#[derive(Clone)]
pub struct FenceService<S> {
    inner: S,
    fence: Fence,
    metrics: Metrics,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B> tower::Service<http::Request<B>> for FenceService<S>
where
    S: tower::Service<http::Request<B>>,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if is_write(request.method()) && !self.fence.is_open() {
            self.metrics.fenced_write();
            let refused = FencedWrite {
                method: request.method().clone(),
                path: request.uri().path().to_owned(),
            };
            tracing::debug!(error = %refused, "write fenced");
            return Box::pin(std::future::ready(Err(refused.into())));
        }
        let response = self.inner.call(request);
        Box::pin(async move { response.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_fence_never_closes() {
        let f = Fence::open();
        assert!(f.is_open());
        f.revoke();
        assert!(f.is_open());
    }

    #[test]
    fn leased_fence_is_open_only_within_the_deadline_of_the_last_renewal() {
        let f = Fence::leased(Duration::from_secs(10));
        assert!(!f.is_open(), "closed before the first renewal");
        let sent = Instant::now();
        f.renewed(sent);
        assert!(f.is_open_at(sent + Duration::from_secs(9)));
        assert!(!f.is_open_at(sent + Duration::from_secs(10)));
        // A renewal sent earlier that finishes later does not shorten it.
        f.renewed(sent - Duration::from_secs(5));
        assert!(f.is_open_at(sent + Duration::from_secs(9)));
        f.renewed(sent + Duration::from_secs(8));
        assert!(f.is_open_at(sent + Duration::from_secs(17)));
        f.revoke();
        assert!(!f.is_open_at(sent + Duration::from_secs(9)));
    }

    #[tokio::test]
    async fn a_closed_fence_refuses_writes_and_passes_reads() {
        use tower::{Layer, ServiceExt};
        let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
        let inner = {
            let sent = sent.clone();
            tower::service_fn(move |r: http::Request<()>| {
                sent.lock().unwrap().push(r.method().clone());
                async { Ok::<_, std::convert::Infallible>(()) }
            })
        };
        let metrics = Metrics::new();
        let fence = Fence::leased(Duration::from_secs(10));
        let svc = fence.layer(&metrics).layer(inner);
        let request = |m: http::Method| {
            http::Request::builder()
                .method(m)
                .uri("/apis/apps/v1/namespaces/a/deployments/x")
                .body(())
                .unwrap()
        };
        let refused = svc
            .clone()
            .oneshot(request(http::Method::PATCH))
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("not renewed"), "{refused}");
        svc.clone()
            .oneshot(request(http::Method::GET))
            .await
            .unwrap();
        fence.renewed(Instant::now());
        svc.clone()
            .oneshot(request(http::Method::PATCH))
            .await
            .unwrap();
        assert_eq!(
            *sent.lock().unwrap(),
            vec![http::Method::GET, http::Method::PATCH]
        );
        assert_eq!(metrics.fenced_writes(), 1);
    }
}
