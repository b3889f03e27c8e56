//! Forwarding one request to a pod over HTTP/1.1, reusing idle keep-alive
//! connections of the app's [`Pool`].
//!
//! "Were bytes written?" stays exact: a connect failure means nothing was
//! sent, and hyper hands a request back (`TrySendError::take_message`) only
//! if its connection never started writing it. Such a request is tried on
//! the next idle connection, then on a fresh one; anything else is
//! [`ProxyError::Sent`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Body as _;
use hyper::client::conn::http1::SendRequest;
use tokio::net::TcpStream;

use super::core::Body;
use super::pool::{Pool, PooledBody, handshake};

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

/// How the connection that carried a request was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conn {
    /// An idle keep-alive connection from the pool.
    Reused,
    /// A connection opened for this request.
    New,
}

fn prepare(req: &mut Request<Body>, peer: SocketAddr) {
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
}

/// One exchange on `sender`; `Err(Ok(req))` gives back a request of which
/// no byte was written.
async fn exchange(
    mut sender: SendRequest<Body>,
    req: Request<Body>,
    pool: &Arc<Pool>,
    backend: SocketAddr,
) -> Result<Response<Body>, Result<Request<Body>, String>> {
    match sender.try_send_request(req).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            for h in &HOP_BY_HOP {
                parts.headers.remove(h);
            }
            let body = PooledBody::new(body, pool.clone(), backend, sender);
            Ok(Response::from_parts(parts, body.boxed()))
        }
        Err(mut e) => match e.take_message() {
            Some(req) => Err(Ok(req)),
            None => Err(Err(e.into_error().to_string())),
        },
    }
}

/// Send `req` to `backend`, preserving Host and adding `X-Forwarded-For`.
/// With `reuse`, idle pooled connections are tried first.
pub(crate) async fn forward(
    mut req: Request<Body>,
    pool: &Arc<Pool>,
    backend: SocketAddr,
    peer: SocketAddr,
    reuse: bool,
) -> Result<(Response<Body>, Conn), ProxyError> {
    prepare(&mut req, peer);
    if reuse {
        while let Some(sender) = pool.take(backend) {
            match exchange(sender, req, pool, backend).await {
                Ok(resp) => return Ok((resp, Conn::Reused)),
                // The connection closed before writing a byte: next one.
                Err(Ok(back)) => req = back,
                Err(Err(error)) => return Err(ProxyError::Sent(error)),
            }
        }
    }
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await {
        Ok(Ok(s)) => s,
        _ => return Err(ProxyError::NotSent(Box::new(req))),
    };
    let Some(sender) = handshake(stream).await else {
        return Err(ProxyError::NotSent(Box::new(req)));
    };
    match exchange(sender, req, pool, backend).await {
        Ok(resp) => Ok((resp, Conn::New)),
        Err(Ok(back)) => Err(ProxyError::NotSent(Box::new(back))),
        Err(Err(error)) => Err(ProxyError::Sent(error)),
    }
}
