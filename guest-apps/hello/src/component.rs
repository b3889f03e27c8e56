//! Wasm glue: spin-sdk's `#[http_component]` (exports wasi:http/incoming-handler@0.2.0) and
//! the `ai:inference/model` import, over the pure [`crate::handle`].

use crate::api::{InferOutput, InferRequest};
use crate::metrics::Metrics;
use crate::{Body, Host, MAX_INFERENCE_BODY};
use spin_sdk::http::{IncomingRequest, Response};
use spin_sdk::http_component;
use std::sync::Mutex;

wit_bindgen::generate!({
    world: "ai:inference/inference-client",
    path: "../wit",
});

use ai::inference::model;

/// Metrics of this instance (one per request on Spin and `wasmtime serve`).
static METRICS: Mutex<Option<Metrics>> = Mutex::new(None);

struct WasmHost;

impl Host for WasmHost {
    fn infer(&mut self, req: &InferRequest) -> Result<InferOutput, String> {
        let out = model::infer(&model::Input {
            tokens: req.tokens.clone(),
            max_length: req.max_length,
            temperature: req.temperature,
        })?;
        Ok(InferOutput {
            tokens: out.tokens,
            latency_ms: out.latency_ms,
        })
    }

    fn memory_bytes(&self) -> u64 {
        core::arch::wasm32::memory_size(0) as u64 * 65536
    }
}

#[http_component]
async fn handle(req: IncomingRequest) -> Response {
    let method = req.method().to_string();
    let path = req.path_with_query().unwrap_or_default();
    let body = if crate::wants_body(&method, &path) {
        crate::body::read_body(req, MAX_INFERENCE_BODY).await
    } else {
        Body::Skipped
    };
    let resp = {
        let mut guard = METRICS.lock().unwrap_or_else(|e| e.into_inner());
        let metrics = guard.get_or_insert_with(Metrics::default);
        crate::handle(&method, &path, body, &mut WasmHost, metrics)
    };
    crate::body::to_spin_response(resp.status, resp.headers, resp.body)
}
