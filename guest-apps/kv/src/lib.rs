//! The kv guest app: `GET /<key>` (200 value | 404), `PUT /<key>` (201), `DELETE /<key>`
//! (204, also for a missing key: DELETE is idempotent), anything else 405.
//!
//! [`handle`] is the whole app over the [`KvStore`] trait, unit-tested natively with
//! [`MemoryStore`]; the Wasm glue implements the trait with Spin's key-value API. Every
//! failure is a response, never a trap.

use std::collections::BTreeMap;

/// Longest key, in bytes after percent-decoding.
pub const MAX_KEY_BYTES: usize = 250;
/// Largest value accepted by PUT.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// The `Allow` header of 405 responses.
pub const ALLOW: &str = "GET, PUT, DELETE";

/// Errors of the key-value host API (mirrors `fermyon:spin/key-value@2.0.0` `error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The store is not configured for this component (manifest / runtime config).
    NoSuchStore,
    AccessDenied,
    /// Anything else, e.g. the backing Redis is unreachable.
    Other(String),
}

pub trait KvStore {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    fn delete(&mut self, key: &str) -> Result<(), StoreError>;
}

/// An in-memory store, for tests (and any host without a key-value API).
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    pub data: BTreeMap<String, Vec<u8>>,
}

impl KvStore for MemoryStore {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.data.get(key).cloned())
    }
    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.data.insert(key.to_string(), value.to_vec());
        Ok(())
    }
    fn delete(&mut self, key: &str) -> Result<(), StoreError> {
        self.data.remove(key);
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    fn new(status: u16, content_type: Option<&str>, body: impl Into<Vec<u8>>) -> Self {
        let headers = content_type.map(|c| ("content-type".to_string(), c.to_string()));
        Response {
            status,
            headers: headers.into_iter().collect(),
            body: body.into(),
        }
    }

    fn text(status: u16, msg: &str) -> Self {
        Self::new(
            status,
            Some("text/plain; charset=utf-8"),
            format!("{msg}\n"),
        )
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[path = "../../common/body.rs"]
pub mod body;
pub use body::Body;

/// Whether the glue must read the body.
pub fn wants_body(method: &str) -> bool {
    method == "PUT"
}

/// Handles one request.
pub fn handle(
    method: &str,
    path_with_query: &str,
    body: Body,
    store: &mut impl KvStore,
) -> Response {
    if !matches!(method, "GET" | "PUT" | "DELETE") {
        let mut r = Response::text(405, "Method Not Allowed");
        r.headers.push(("allow".into(), ALLOW.into()));
        return r;
    }
    let key = match parse_key(path_with_query) {
        Ok(k) => k,
        Err(e) => return Response::text(400, &e),
    };
    let result = match method {
        "GET" => store.get(&key).map(|v| match v {
            Some(value) => Response::new(200, Some("application/octet-stream"), value),
            None => Response::text(404, "Not Found"),
        }),
        "PUT" => {
            let value = match body {
                Body::Complete(v) => v,
                Body::TooLarge => {
                    return Response::text(413, &format!("value exceeds {MAX_VALUE_BYTES} bytes"))
                }
                Body::Failed(e) => {
                    return Response::text(400, &format!("could not read the body: {e}"))
                }
                Body::Skipped => return Response::text(500, "request body was not read"),
            };
            store.set(&key, &value).map(|()| {
                let mut r = Response::text(201, "Created");
                r.headers.push((
                    "location".into(),
                    path_with_query.split('?').next().unwrap_or("/").into(),
                ));
                r
            })
        }
        _ => store
            .delete(&key)
            .map(|()| Response::new(204, None, Vec::new())),
    };
    result.unwrap_or_else(|e| match e {
        StoreError::NoSuchStore => {
            Response::text(500, "key-value store `default` is not configured")
        }
        StoreError::AccessDenied => {
            Response::text(500, "access to key-value store `default` denied")
        }
        StoreError::Other(msg) => {
            Response::text(503, &format!("key-value store unavailable: {msg}"))
        }
    })
}

/// `/<key>[?query]` -> key: percent-decoded UTF-8, 1..=MAX_KEY_BYTES bytes, no control
/// characters. `/` inside the key is kept (`/a/b` is the key `a/b`).
pub fn parse_key(path_with_query: &str) -> Result<String, String> {
    let path = path_with_query.split(['?', '#']).next().unwrap_or("");
    let raw = path.strip_prefix('/').ok_or("path must start with /")?;
    if raw.is_empty() {
        return Err("empty key: use /<key>".into());
    }
    let bytes = percent_decode(raw)?;
    if bytes.len() > MAX_KEY_BYTES {
        return Err(format!(
            "key is {} bytes, the limit is {MAX_KEY_BYTES}",
            bytes.len()
        ));
    }
    let key = String::from_utf8(bytes).map_err(|_| "key is not valid UTF-8".to_string())?;
    if key.chars().any(char::is_control) {
        return Err("key contains control characters".into());
    }
    Ok(key)
}

fn percent_decode(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            let v = hex
                .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-encoding at byte {i}"))?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(target_arch = "wasm32")]
mod component;

#[cfg(test)]
mod tests {
    use super::*;

    fn req(store: &mut MemoryStore, method: &str, path: &str, body: Option<&[u8]>) -> Response {
        let body = match body {
            Some(b) => Body::Complete(b.to_vec()),
            None if wants_body(method) => Body::Complete(vec![]),
            None => Body::Skipped,
        };
        handle(method, path, body, store)
    }

    #[test]
    fn put_get_delete_round_trip() {
        let mut s = MemoryStore::default();
        assert_eq!(req(&mut s, "GET", "/greeting", None).status, 404);
        let r = req(&mut s, "PUT", "/greeting", Some(b"hello"));
        assert_eq!((r.status, r.body.as_slice()), (201, &b"Created\n"[..]));
        assert_eq!(r.header("location"), Some("/greeting"));
        let r = req(&mut s, "GET", "/greeting", None);
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        // overwrite
        assert_eq!(req(&mut s, "PUT", "/greeting", Some(b"bye")).status, 201);
        assert_eq!(req(&mut s, "GET", "/greeting", None).body, b"bye");
        let r = req(&mut s, "DELETE", "/greeting", None);
        assert_eq!((r.status, r.body.len()), (204, 0));
        assert_eq!(req(&mut s, "GET", "/greeting", None).status, 404);
        // deleting again is fine
        assert_eq!(req(&mut s, "DELETE", "/greeting", None).status, 204);
        assert!(s.data.is_empty());
    }

    #[test]
    fn binary_and_empty_values_survive() {
        let mut s = MemoryStore::default();
        let bin: Vec<u8> = (0..=255).collect();
        assert_eq!(req(&mut s, "PUT", "/bin", Some(&bin)).status, 201);
        assert_eq!(req(&mut s, "GET", "/bin", None).body, bin);
        assert_eq!(req(&mut s, "PUT", "/empty", Some(b"")).status, 201);
        let r = req(&mut s, "GET", "/empty", None);
        assert_eq!((r.status, r.body.len()), (200, 0));
    }

    #[test]
    fn keys_are_decoded_and_validated() {
        assert_eq!(parse_key("/a%20b?x=1").unwrap(), "a b");
        assert_eq!(parse_key("/users/42").unwrap(), "users/42");
        assert_eq!(parse_key("/caf%C3%A9").unwrap(), "café");
        assert_eq!(
            parse_key(&format!("/{}", "k".repeat(250))).unwrap().len(),
            250
        );
        for bad in ["/", "", "/?x", "/%zz", "/%4", "/%ff", "/a%0Ab", "/a%00"] {
            assert!(parse_key(bad).is_err(), "{bad:?} accepted");
        }
        let e = parse_key(&format!("/{}", "k".repeat(251))).unwrap_err();
        assert!(e.contains("251 bytes"), "{e}");
        // the limit counts decoded bytes: 125 x "é" = 250 bytes (ok), 126 x = 252 (too long)
        assert!(parse_key(&format!("/{}", "%C3%A9".repeat(125))).is_ok());
        assert!(parse_key(&format!("/{}", "%C3%A9".repeat(126))).is_err());
    }

    #[test]
    fn bad_requests_are_4xx_and_leave_the_store_alone() {
        let mut s = MemoryStore::default();
        for (m, p) in [("GET", "/"), ("PUT", "/"), ("DELETE", "/"), ("GET", "/%zz")] {
            assert_eq!(req(&mut s, m, p, None).status, 400, "{m} {p}");
        }
        let long = format!("/{}", "x".repeat(300));
        assert_eq!(req(&mut s, "PUT", &long, Some(b"v")).status, 400);
        assert_eq!(handle("PUT", "/big", Body::TooLarge, &mut s).status, 413);
        assert_eq!(
            handle("PUT", "/x", Body::Failed("reset".into()), &mut s).status,
            400
        );
        assert!(s.data.is_empty());
    }

    #[test]
    fn other_methods_are_405_with_allow() {
        let mut s = MemoryStore::default();
        for m in ["POST", "PATCH", "HEAD", "OPTIONS", "get"] {
            let r = req(&mut s, m, "/k", None);
            assert_eq!(r.status, 405, "{m}");
            assert_eq!(r.header("allow"), Some(ALLOW));
        }
        // 405 wins over a bad key
        assert_eq!(req(&mut s, "POST", "/", None).status, 405);
    }

    struct Broken(StoreError);
    impl KvStore for Broken {
        fn get(&mut self, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
            Err(self.0.clone())
        }
        fn set(&mut self, _: &str, _: &[u8]) -> Result<(), StoreError> {
            Err(self.0.clone())
        }
        fn delete(&mut self, _: &str) -> Result<(), StoreError> {
            Err(self.0.clone())
        }
    }

    #[test]
    fn store_failures_become_5xx_responses() {
        let cases = [
            (StoreError::Other("connection refused".into()), 503),
            (StoreError::NoSuchStore, 500),
            (StoreError::AccessDenied, 500),
        ];
        for (err, status) in cases {
            let mut b = Broken(err.clone());
            for m in ["GET", "PUT", "DELETE"] {
                let body = if m == "PUT" {
                    Body::Complete(b"v".to_vec())
                } else {
                    Body::Skipped
                };
                let r = handle(m, "/k", body, &mut b);
                assert_eq!(r.status, status, "{m} {err:?}");
            }
        }
        let r = handle(
            "GET",
            "/k",
            Body::Skipped,
            &mut Broken(StoreError::Other("down".into())),
        );
        assert!(String::from_utf8_lossy(&r.body).contains("down"));
    }
}
