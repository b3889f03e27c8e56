//! The activator: holds requests for scale-to-zero apps while they wake, and
//! proxies them straight to the first pod that accepts a connection.
//!
//! - One listener per app, keyed by the app's activator port (the app is known
//!   from the local port alone).
//! - A request with no live backend waits in the app's bounded FIFO (and
//!   under a global cap) **without its body being read**; beyond either
//!   bound the caller gets `503` + `Retry-After: 1`.
//! - While an app has waiters a dial loop connects to every non-terminating
//!   candidate pod every [`DIAL_INTERVAL`] (connect timeout
//!   [`DIAL_TIMEOUT`]); the first success releases the queue in FIFO order.
//! - Demand is signalled through [`DemandSignal`] (the Lease writer in
//!   [`kube`]) at once and every [`DEMAND_RENEW`] while requests wait.
//! - Upstream failures: not yet sent → back to the queue; sent → idempotent,
//!   body-less requests are retried once, everything else gets `502`. A POST
//!   is never replayed after its bytes reached a pod.
//! - Idle keep-alive connections to pods are reused (see [`pool`]); a request
//!   goes to another connection only if no byte of it was written.
//! - After `coldStartTimeout` a held request gets `503` + `Retry-After: 5`.
//! - Shutdown ([`Activator::shutdown`]): listeners close, held and in-flight
//!   requests finish within a grace; what is left gets `503` + `Retry-After: 1`.

mod admin;
mod core;
pub mod kube;
mod metrics;
mod pool;
mod proxy;
pub mod run;

pub use admin::{AdminState, admin_router, serve_admin};
pub use core::*;
pub use metrics::ActivatorMetrics;

#[cfg(test)]
mod tests;
