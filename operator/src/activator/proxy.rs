//! Forwarding one request to a pod IP over a fresh HTTP/1.1 connection.
//!
//! A fresh connection per request keeps "were bytes written?" exact: a
//! connect failure means nothing was sent, and hyper hands an unsent request
//! back (`TrySendError::into_message`). Warm traffic does not pass through
//! the activator, so connection reuse matters little here.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Body as _;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::core::Body;

/// Connect timeout towards a pod.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Why a request was not answered by the pod.
#[derive(Debug)]
pub(crate) enum ProxyError {
    /// No byte of the request reached the pod; here it is back.
    NotSent(Box<Request<Body>>),
    /// The request was (maybe partly) sent, then the exchange failed.
    Sent(String),
}

/// Hop-by-hop headers, never forwarded.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// An empty body.
pub(crate) fn empty_body() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// Idempotent (RFC 9110) and without a body: safe to send again.
pub(crate) fn replayable(req: &Request<Body>) -> bool {
    let idempotent = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    idempotent && req.body().is_end_stream()
}

/// The request head without the body.
pub(crate) fn clone_head(req: &Request<Body>) -> http::request::Parts {
    let mut builder = Request::builder()
        .method(req.method().clone())
        .uri(req.uri().clone())
        .version(req.version());
    if let Some(h) = builder.headers_mut() {
        *h = req.headers().clone();
    }
    // Building from valid parts cannot fail.
    let (parts, ()) = builder.body(()).unwrap_or_default().into_parts();
    parts
}

/// Send `req` to `backend`, preserving Host and adding `X-Forwarded-For`.
pub(crate) async fn forward(
    mut req: Request<Body>,
    backend: SocketAddr,
    peer: SocketAddr,
) -> Result<Response<Body>, ProxyError> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await {
        Ok(Ok(s)) => s,
        _ => return Err(ProxyError::NotSent(Box::new(req))),
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(_) => return Err(ProxyError::NotSent(Box::new(req))),
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });

    let headers = req.headers_mut();
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    // Origin form towards the pod.
    if req.uri().authority().is_some() {
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        if let Ok(uri) = pq.parse() {
            *req.uri_mut() = uri;
        }
    }

    match sender.try_send_request(req).await {
        Ok(resp) => Ok(resp.map(BodyExt::boxed)),
        Err(mut e) => match e.take_message() {
            Some(req) => Err(ProxyError::NotSent(Box::new(req))),
            None => Err(ProxyError::Sent(e.into_error().to_string())),
        },
    }
}
