//! The hello guest app: `GET /health`, `GET /metrics`, `POST /inference`.
//!
//! [`handle`] is the whole app as a pure function over a plain request, an inference
//! backend and the instance's metrics, unit-tested natively. The Wasm glue (`component`)
//! only converts the Spin SDK types and calls the `ai:inference/model` import.

pub mod api;
pub mod metrics;
pub mod routes;

use api::{InferOutput, InferRequest};
use metrics::Metrics;
use routes::{Dispatch, Route};

/// Largest accepted `/inference` body.
pub const MAX_INFERENCE_BODY: usize = 64 * 1024;

/// A response: status, headers, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
        }
    }

    pub fn text(status: u16, body: &str) -> Self {
        Self::new(status, "text/plain; charset=utf-8", format!("{body}\n"))
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self::new(status, "application/json", value.to_string())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What [`handle`] needs from the host besides the request.
pub trait Host {
    /// Runs the inference component (the `ai:inference/model` import in Wasm).
    fn infer(&mut self, req: &InferRequest) -> Result<InferOutput, String>;
    /// Current linear memory size of this instance, in bytes.
    fn memory_bytes(&self) -> u64;
}

#[path = "../../common/body.rs"]
pub mod body;
pub use body::Body;

/// Whether the glue must read the body for this method and path.
pub fn wants_body(method: &str, path: &str) -> bool {
    matches!(
        routes::dispatch(method, path),
        Dispatch::Route(Route::Inference)
    )
}

/// Handles one request.
pub fn handle(
    method: &str,
    path: &str,
    body: Body,
    host: &mut impl Host,
    metrics: &mut Metrics,
) -> Response {
    let dispatch = routes::dispatch(method, path);
    let resp = match dispatch {
        Dispatch::NotFound => Response::text(404, "Not Found"),
        Dispatch::MethodNotAllowed { allow, .. } => {
            let mut r = Response::text(405, "Method Not Allowed");
            r.headers.push(("allow".into(), allow.into()));
            r
        }
        Dispatch::Route(Route::Health) => Response::text(200, "OK"),
        Dispatch::Route(Route::Metrics) => {
            // count this request before rendering, so the scrape includes itself
            metrics.record(Some(Route::Metrics), 200);
            let text = metrics.render(host.memory_bytes());
            return head_if(method, Response::new(200, metrics::CONTENT_TYPE, text));
        }
        Dispatch::Route(Route::Inference) => inference(body, host, metrics),
    };
    metrics.record(dispatch.route(), resp.status);
    head_if(method, resp)
}

fn inference(body: Body, host: &mut impl Host, metrics: &mut Metrics) -> Response {
    let err = |status, msg: String| Response::json(status, &serde_json::json!({ "error": msg }));
    let bytes = match body {
        Body::Complete(b) => b,
        Body::TooLarge => {
            return err(
                413,
                format!("request body exceeds {MAX_INFERENCE_BODY} bytes"),
            );
        }
        Body::Failed(e) => return err(400, format!("could not read the request body: {e}")),
        Body::Skipped => return err(500, "request body was not read".into()),
    };
    let req = match api::parse_request(&bytes) {
        Ok(r) => r,
        Err(e) => return err(400, e),
    };
    match host.infer(&req) {
        Ok(out) => {
            metrics.record_inference(Ok(out.tokens.len()));
            Response::json(200, &api::render_output(&out))
        }
        Err(e) => {
            metrics.record_inference(Err(()));
            err(422, e)
        }
    }
}

/// HEAD gets GET's status and headers without the body.
fn head_if(method: &str, mut resp: Response) -> Response {
    if method == "HEAD" {
        resp.body.clear();
    }
    resp
}

#[cfg(target_arch = "wasm32")]
mod component;

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake inference backend recording what it was asked.
    struct Fake {
        calls: Vec<InferRequest>,
        answer: Result<InferOutput, String>,
    }

    impl Host for Fake {
        fn infer(&mut self, req: &InferRequest) -> Result<InferOutput, String> {
            self.calls.push(req.clone());
            self.answer.clone()
        }
        fn memory_bytes(&self) -> u64 {
            131072
        }
    }

    fn fake() -> Fake {
        Fake {
            calls: vec![],
            answer: Ok(InferOutput {
                tokens: vec![7, 8, 9],
                latency_ms: 3,
            }),
        }
    }

    fn call(method: &str, path: &str, body: Body, host: &mut Fake) -> Response {
        handle(method, path, body, host, &mut Metrics::default())
    }

    fn body_str(r: &Response) -> &str {
        std::str::from_utf8(&r.body).unwrap()
    }

    #[test]
    fn health_is_ok() {
        let r = call("GET", "/health", Body::Skipped, &mut fake());
        assert_eq!((r.status, body_str(&r)), (200, "OK\n"));
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        let r = call("GET", "/health?probe=1", Body::Skipped, &mut fake());
        assert_eq!(r.status, 200);
        let r = call("HEAD", "/health", Body::Skipped, &mut fake());
        assert_eq!((r.status, r.body.len()), (200, 0));
    }

    #[test]
    fn unknown_paths_are_404() {
        for p in [
            "/",
            "/nope",
            "/health/",
            "/healthz",
            "/inference/x",
            "//health",
        ] {
            assert_eq!(
                call("GET", p, Body::Skipped, &mut fake()).status,
                404,
                "{p}"
            );
        }
    }

    #[test]
    fn wrong_methods_are_405_with_allow() {
        for (m, p, allow) in [
            ("POST", "/health", "GET, HEAD"),
            ("DELETE", "/metrics", "GET, HEAD"),
            ("GET", "/inference", "POST"),
            ("PUT", "/inference", "POST"),
        ] {
            let r = call(m, p, Body::Skipped, &mut fake());
            assert_eq!(r.status, 405, "{m} {p}");
            assert_eq!(r.header("allow"), Some(allow), "{m} {p}");
        }
    }

    #[test]
    fn inference_passes_the_request_and_returns_json() {
        let mut host = fake();
        let body = br#"{"tokens":[1,2,3],"max_length":5,"temperature":0.5}"#.to_vec();
        let r = call("POST", "/inference", Body::Complete(body), &mut host);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            host.calls,
            vec![InferRequest {
                tokens: vec![1, 2, 3],
                max_length: 5,
                temperature: 0.5
            }]
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v, serde_json::json!({"tokens":[7,8,9],"latency_ms":3}));
    }

    #[test]
    fn inference_errors_map_to_4xx() {
        let mut host = Fake {
            answer: Err("max-length 0".into()),
            ..fake()
        };
        let ok_body = br#"{"tokens":[1],"max_length":0}"#.to_vec();
        let r = call("POST", "/inference", Body::Complete(ok_body), &mut host);
        assert_eq!(r.status, 422);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["error"],
            "max-length 0"
        );

        let mut host = fake();
        for bad in [
            &b"not json"[..],
            b"{}",
            br#"{"tokens":[-1],"max_length":1}"#,
            br#"{"tokens":[1],"max_length":1,"extra":1}"#,
        ] {
            let r = call(
                "POST",
                "/inference",
                Body::Complete(bad.to_vec()),
                &mut host,
            );
            assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(bad));
        }
        assert!(
            host.calls.is_empty(),
            "the model must not run on a bad request"
        );
        assert_eq!(
            call("POST", "/inference", Body::TooLarge, &mut host).status,
            413
        );
        assert_eq!(
            call(
                "POST",
                "/inference",
                Body::Failed("reset".into()),
                &mut host
            )
            .status,
            400
        );
    }

    #[test]
    fn metrics_count_requests_of_this_instance() {
        let mut host = fake();
        let mut m = Metrics::default();
        handle("GET", "/health", Body::Skipped, &mut host, &mut m);
        handle("GET", "/nope", Body::Skipped, &mut host, &mut m);
        let body = br#"{"tokens":[1],"max_length":3}"#.to_vec();
        handle(
            "POST",
            "/inference",
            Body::Complete(body),
            &mut host,
            &mut m,
        );
        let r = handle("GET", "/metrics", Body::Skipped, &mut host, &mut m);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some(metrics::CONTENT_TYPE));
        let text = body_str(&r);
        for line in [
            r#"spindle_hello_requests_total{route="/health",code="200"} 1"#,
            r#"spindle_hello_requests_total{route="other",code="404"} 1"#,
            r#"spindle_hello_requests_total{route="/inference",code="200"} 1"#,
            r#"spindle_hello_requests_total{route="/metrics",code="200"} 1"#,
            "spindle_hello_inference_tokens_total 3",
            "spindle_hello_wasm_memory_bytes 131072",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn wants_body_only_for_post_inference() {
        assert!(wants_body("POST", "/inference"));
        assert!(!wants_body("GET", "/inference"));
        assert!(!wants_body("POST", "/health"));
    }
}
