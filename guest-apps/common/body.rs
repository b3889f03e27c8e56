//! Request body handling shared by the HTTP guests (included with `#[path]` by hello and kv,
//! so each stays a single crate).

/// The request body as the glue delivers it: read only when the route takes one, and cut
/// off once it exceeds the route's limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Not read (the route takes no body).
    Skipped,
    Complete(Vec<u8>),
    /// More than the limit was sent (or announced in Content-Length).
    TooLarge,
    /// The body stream failed.
    Failed(String),
}

/// Reads at most `limit` bytes of the body; more (or a larger Content-Length) is
/// [`Body::TooLarge`], and reading stops there.
#[cfg(target_arch = "wasm32")]
pub async fn read_body(req: spin_sdk::http::IncomingRequest, limit: usize) -> Body {
    use futures::StreamExt;
    let announced = req
        .headers()
        .get(&"content-length".to_string())
        .first()
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Body::TooLarge;
    }
    let mut stream = req.into_body_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                if body.len() + bytes.len() > limit {
                    return Body::TooLarge;
                }
                body.extend_from_slice(&bytes);
            }
            Err(e) => return Body::Failed(format!("{e:?}")),
        }
    }
    Body::Complete(body)
}

/// Converts a pure response (status, headers, body) to the SDK's.
#[cfg(target_arch = "wasm32")]
pub fn to_spin_response(
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> spin_sdk::http::Response {
    let mut builder = spin_sdk::http::Response::builder();
    builder.status(status);
    for (k, v) in headers {
        builder.header(k, v);
    }
    builder.body(body).build()
}
