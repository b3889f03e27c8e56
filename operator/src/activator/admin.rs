//! The activator's admin endpoint: `/healthz`, `/readyz`, `/metrics`, `/v1/activity`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::core::{Activator, Error};

/// What the admin endpoint serves.
#[derive(Clone, Debug)]
pub struct AdminState {
    /// The activator.
    pub activator: Activator,
    /// Ready for traffic (false before routes synced and while shutting down).
    pub ready: Arc<AtomicBool>,
}

/// The admin router.
pub fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/activity", get(activity))
        .with_state(state)
}

async fn ready(State(s): State<AdminState>) -> impl IntoResponse {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.activator.metrics().encode(),
    )
}

async fn activity(State(s): State<AdminState>) -> impl IntoResponse {
    axum::Json(s.activator.activity())
}

/// Bind the admin endpoint and return the server future and its address.
pub async fn serve_admin(
    addr: SocketAddr,
    state: AdminState,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl Future<Output = std::io::Result<()>>), Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    let server = axum::serve(listener, admin_router(state)).with_graceful_shutdown(stop);
    Ok((bound, async move { server.await }))
}
