//! Prometheus metrics of the activator.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `outcome` of a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `proxied`, `cold`, `timeout`, `queue_full`, `upstream_error`, `probe`,
    /// `shutdown` (unanswered when the shutdown grace ended).
    pub outcome: &'static str,
}

/// `result` of a demand signal.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// How the connection that carried a proxied request was obtained.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// `reused` (idle keep-alive connection) or `new`.
    pub connection: &'static str,
}

/// All activator metrics (cheap to clone).
#[derive(Clone)]
pub struct ActivatorMetrics {
    pub(crate) registry: Arc<Registry>,
    pub(crate) requests: Family<OutcomeLabels, Counter>,
    pub(crate) pending: Gauge<i64, AtomicI64>,
    pub(crate) cold_wait: Histogram,
    pub(crate) dial_attempts: Counter,
    pub(crate) wake_signals: Family<ResultLabels, Counter>,
    pub(crate) listeners: Gauge<i64, AtomicI64>,
    pub(crate) retries: Counter,
    pub(crate) upstream: Family<ConnectionLabels, Counter>,
    pub(crate) port_conflicts: Gauge<i64, AtomicI64>,
}

impl std::fmt::Debug for ActivatorMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivatorMetrics").finish_non_exhaustive()
    }
}

impl Default for ActivatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ActivatorMetrics {
    /// A registry with every metric under `spindle_activator_`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("spindle_activator");
        let requests = Family::<OutcomeLabels, Counter>::default();
        let pending = Gauge::<i64, AtomicI64>::default();
        let cold_wait = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        let dial_attempts = Counter::default();
        let wake_signals = Family::<ResultLabels, Counter>::default();
        let listeners = Gauge::<i64, AtomicI64>::default();
        let retries = Counter::default();
        let upstream = Family::<ConnectionLabels, Counter>::default();
        let port_conflicts = Gauge::<i64, AtomicI64>::default();
        registry.register("requests", "Requests by outcome", requests.clone());
        registry.register(
            "pending_requests",
            "Requests held while apps wake",
            pending.clone(),
        );
        registry.register(
            "cold_wait_seconds",
            "Time a held request waited for a backend",
            cold_wait.clone(),
        );
        registry.register(
            "dial_attempts",
            "Connection attempts to waking pods",
            dial_attempts.clone(),
        );
        registry.register(
            "wake_signals",
            "Demand signals sent, by result",
            wake_signals.clone(),
        );
        registry.register("listeners", "App ports listened on", listeners.clone());
        registry.register(
            "upstream_retries",
            "Idempotent requests retried once after an upstream failure",
            retries.clone(),
        );
        registry.register(
            "upstream_requests",
            "Requests answered by a pod, by connection (reused keep-alive or new)",
            upstream.clone(),
        );
        registry.register(
            "port_conflicts",
            "Activator ports claimed by more than one app (e.g. two operators sharing one activator)",
            port_conflicts.clone(),
        );
        ActivatorMetrics {
            registry: Arc::new(registry),
            requests,
            pending,
            cold_wait,
            dial_attempts,
            wake_signals,
            listeners,
            retries,
            upstream,
            port_conflicts,
        }
    }

    pub(crate) fn outcome(&self, outcome: &'static str) {
        self.requests
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Requests counted with this outcome so far.
    pub fn requests_with(&self, outcome: &'static str) -> u64 {
        self.requests
            .get_or_create(&OutcomeLabels { outcome })
            .get()
    }

    /// Requests answered by a pod over a `reused` or `new` connection.
    pub fn upstream_requests(&self, connection: &'static str) -> u64 {
        self.upstream
            .get_or_create(&ConnectionLabels { connection })
            .get()
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
