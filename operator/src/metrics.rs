//! Prometheus metrics of the operator process (prometheus-client).
//!
//! - `spindle_reconcile_total{controller}`: reconciles started.
//! - `spindle_reconcile_errors_total{controller,reason}`: failed reconciles by error kind.
//! - `spindle_reconcile_duration_seconds{controller}`: reconcile latency histogram.
//! - `spindle_leader`: 1 while this replica holds the leader lease.
//! - `spindle_kubernetes_requests_total{verb,resource}`: requests this process sent to the
//!   apiserver (counted by a tower layer on the client, see [`Metrics::count_requests`]).
//! - `spindle_watch_errors_total{watch}`: errors of one watch (a 410 before a re-list,
//!   an unreachable apiserver); each watch retries on its own backoff.
//! - `spindle_fenced_writes_total`: writes refused inside the process because this
//!   replica's leader lease was not renewed within the renew deadline (see `fence::Fence`).
//! - `spindle_scale_to_zero_transitions_total{direction}`: apps this replica scaled to
//!   zero (`down`) or woke (`up`); with the activator's `spindle_activator_*` metrics it
//!   shows how often apps cold-start.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Which controller a reconcile metric belongs to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `spinapp` or `spinappexecutor`.
    pub controller: &'static str,
}

/// A failed reconcile, by controller and error kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `spinapp` or `spinappexecutor`.
    pub controller: &'static str,
    /// A short, bounded error kind (see `controller::Error::metric_label`).
    pub reason: String,
}

/// A scale-to-zero transition: `down` (to zero) or `up` (woken).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// `down` or `up`.
    pub direction: &'static str,
}

/// Which watch an error belongs to (`SpinApp`, `Deployment`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    /// The watched kind, as the cache names it.
    pub watch: &'static str,
}

/// One request to the apiserver, by verb and resource.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete` (`deletecollection` counts as delete).
    pub verb: &'static str,
    /// Plural resource name, with `/status` etc. appended for subresources.
    pub resource: String,
}

/// All metrics of the operator. Cheap to clone (everything is behind `Arc`s).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciles: Family<ControllerLabels, Counter>,
    failures: Family<ErrorLabels, Counter>,
    duration: Family<ControllerLabels, Histogram>,
    leader: Gauge<i64, AtomicI64>,
    requests: Family<RequestLabels, Counter>,
    transitions: Family<TransitionLabels, Counter>,
    watch_errors: Family<WatchLabels, Counter>,
    fenced_writes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A fresh registry with every Spindle metric registered under the `spindle_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("spindle");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<ControllerLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.005, 2.0, 14))) as fn() -> Histogram,
        );
        let leader = Gauge::<i64, AtomicI64>::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let transitions = Family::<TransitionLabels, Counter>::default();
        let watch_errors = Family::<WatchLabels, Counter>::default();
        let fenced_writes = Counter::default();
        registry.register("reconcile", "Reconciles started", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error kind",
            failures.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "Time spent in one reconcile",
            prometheus_client::registry::Unit::Seconds,
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        registry.register(
            "kubernetes_requests",
            "Requests sent to the Kubernetes apiserver, by verb and resource",
            requests.clone(),
        );
        registry.register(
            "scale_to_zero_transitions",
            "Apps scaled to zero (direction=down) or woken (direction=up) by this replica",
            transitions.clone(),
        );
        registry.register(
            "watch_errors",
            "Errors of a watch; it retries on its own backoff, reset by its next event",
            watch_errors.clone(),
        );
        registry.register(
            "fenced_writes",
            "Writes refused before they left the process: the leader lease was not renewed within the renew deadline",
            fenced_writes.clone(),
        );
        Self {
            registry: Arc::new(registry),
            reconciles,
            failures,
            duration,
            leader,
            requests,
            transitions,
            watch_errors,
            fenced_writes,
        }
    }

    /// Count an error of the watch `watch`.
    pub fn watch_error(&self, watch: &'static str) {
        self.watch_errors
            .get_or_create(&WatchLabels { watch })
            .inc();
    }

    /// Errors counted so far for the watch `watch`.
    pub fn watch_errors(&self, watch: &'static str) -> u64 {
        self.watch_errors
            .get(&WatchLabels { watch })
            .map_or(0, |c| c.get())
    }

    /// Count a write the leader fence refused.
    pub fn fenced_write(&self) {
        self.fenced_writes.inc();
    }

    /// Writes the leader fence refused so far.
    pub fn fenced_writes(&self) -> u64 {
        self.fenced_writes.get()
    }

    /// Count a reconcile start; the returned guard records its duration when dropped.
    pub fn reconcile_started(&self, controller: &'static str) -> ReconcileTimer {
        let labels = ControllerLabels { controller };
        self.reconciles.get_or_create(&labels).inc();
        ReconcileTimer {
            histogram: self.duration.get_or_create_owned(&labels),
            start: Instant::now(),
        }
    }

    /// Count a failed reconcile.
    pub fn reconcile_failed(&self, controller: &'static str, reason: &str) {
        self.failures
            .get_or_create(&ErrorLabels {
                controller,
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Reconciles started so far by `controller` (used by tests).
    pub fn reconciles(&self, controller: &'static str) -> u64 {
        self.reconciles
            .get(&ControllerLabels { controller })
            .map(|c| c.get())
            .unwrap_or(0)
    }

    /// Count an app scaled to zero (`down`) or woken (`up`).
    pub fn scale_transition(&self, direction: &'static str) {
        self.transitions
            .get_or_create(&TransitionLabels { direction })
            .inc();
    }

    /// Scale-to-zero transitions counted so far in `direction` (used by tests).
    pub fn scale_transitions(&self, direction: &'static str) -> u64 {
        self.transitions
            .get(&TransitionLabels { direction })
            .map(|c| c.get())
            .unwrap_or(0)
    }

    /// Set the leader gauge.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Count one apiserver request.
    pub fn count_request<B>(&self, request: &http::Request<B>) {
        let (verb, resource) = classify_request(
            request.method(),
            request.uri().path(),
            request.uri().query(),
        );
        self.requests
            .get_or_create(&RequestLabels { verb, resource })
            .inc();
    }

    /// Requests counted so far with this verb, over all resources.
    pub fn requests_with_verb(&self, verb: &str) -> u64 {
        let mut total = 0;
        for (labels, counter) in self.request_counts() {
            if labels.verb == verb {
                total += counter;
            }
        }
        total
    }

    /// Every `(labels, count)` pair of the request counter.
    pub fn request_counts(&self) -> Vec<(RequestLabels, u64)> {
        // prometheus-client has no iteration API over a family; keep the
        // well-known label space explicit instead.
        let mut out = Vec::new();
        for verb in VERBS {
            for resource in RESOURCES {
                let labels = RequestLabels {
                    verb,
                    resource: (*resource).to_owned(),
                };
                if let Some(counter) = self.requests.get(&labels) {
                    out.push((labels, counter.get()));
                }
            }
        }
        out
    }

    /// A tower layer that counts every request the wrapped client sends
    /// (`kube::client::ClientBuilder::with_layer`).
    pub fn count_requests(&self) -> CountRequestsLayer {
        CountRequestsLayer {
            metrics: self.clone(),
        }
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

const VERBS: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];
const RESOURCES: &[&str] = &[
    "spinapps",
    "spinapps/status",
    "spinappexecutors",
    "spinappexecutors/status",
    "deployments",
    "services",
    "secrets",
    "configmaps",
    "events",
    "leases",
    "runtimeclasses",
    "other",
];

/// Tower layer that counts requests into [`Metrics`].
#[derive(Clone)]
pub struct CountRequestsLayer {
    metrics: Metrics,
}

impl<S> tower::Layer<S> for CountRequestsLayer {
    type Service = CountRequests<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CountRequests {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// Service produced by [`CountRequestsLayer`].
#[derive(Clone)]
pub struct CountRequests<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, B> tower::Service<http::Request<B>> for CountRequests<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.metrics.count_request(&request);
        self.inner.call(request)
    }
}

/// Records the reconcile duration when dropped.
pub struct ReconcileTimer {
    histogram: Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

/// `(verb, resource)` of a Kubernetes API request, from its method and URL.
pub fn classify_request(
    method: &http::Method,
    path: &str,
    query: Option<&str>,
) -> (&'static str, String) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/... or /apis/<group>/<version>/...
    let rest: &[&str] = match segments.first() {
        Some(&"api") if segments.len() >= 2 => &segments[2..],
        Some(&"apis") if segments.len() >= 3 => &segments[3..],
        _ => &[],
    };
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let (resource, has_name) = match rest {
        [] => ("other".to_owned(), false),
        [plural] => ((*plural).to_owned(), false),
        [plural, _name] => ((*plural).to_owned(), true),
        [plural, _name, sub, ..] => (format!("{plural}/{sub}"), true),
    };
    let resource = if RESOURCES.contains(&resource.as_str()) {
        resource
    } else {
        "other".to_owned()
    };
    let watch = query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let verb = match *method {
        http::Method::GET if watch => "watch",
        http::Method::GET if has_name => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "get",
    };
    (verb, resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_requests() {
        let get = http::Method::GET;
        assert_eq!(
            classify_request(&get, "/api/v1/namespaces/a/secrets/s", None),
            ("get", "secrets".into())
        );
        assert_eq!(
            classify_request(&get, "/api/v1/namespaces/a/secrets", None),
            ("list", "secrets".into())
        );
        assert_eq!(
            classify_request(
                &get,
                "/apis/apps/v1/deployments",
                Some("labelSelector=x&watch=true")
            ),
            ("watch", "deployments".into())
        );
        assert_eq!(
            classify_request(
                &http::Method::PATCH,
                "/apis/core.spinkube.dev/v1alpha1/namespaces/a/spinapps/x/status",
                None
            ),
            ("patch", "spinapps/status".into())
        );
        assert_eq!(
            classify_request(
                &http::Method::POST,
                "/apis/events.k8s.io/v1/namespaces/a/events",
                None
            ),
            ("create", "events".into())
        );
        assert_eq!(
            classify_request(
                &http::Method::GET,
                "/apis/node.k8s.io/v1/runtimeclasses/wasmtime",
                None
            ),
            ("get", "runtimeclasses".into())
        );
        assert_eq!(
            classify_request(&get, "/version", None),
            ("list", "other".into())
        );
    }

    #[test]
    fn counts_requests_and_encodes() {
        let metrics = Metrics::new();
        let request = http::Request::patch("/api/v1/namespaces/a/services/s")
            .body(())
            .unwrap();
        metrics.count_request(&request);
        metrics.count_request(&request);
        assert_eq!(metrics.requests_with_verb("patch"), 2);
        assert_eq!(metrics.requests_with_verb("create"), 0);
        metrics.set_leader(true);
        drop(metrics.reconcile_started("spinapp"));
        metrics.reconcile_failed("spinapp", "kube");
        assert_eq!(metrics.reconciles("spinapp"), 1);
        let text = metrics.encode();
        assert!(text.contains("spindle_leader 1"), "{text}");
        assert!(
            text.contains("spindle_reconcile_total{controller=\"spinapp\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "spindle_reconcile_errors_total{controller=\"spinapp\",reason=\"kube\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "spindle_kubernetes_requests_total{verb=\"patch\",resource=\"services\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("spindle_reconcile_duration_seconds_count{controller=\"spinapp\"} 1"),
            "{text}"
        );
    }
}
