//! Component glue: the WIT export `ai:inference/model` over [`crate::engine`], with
//! configuration read from the `wasi:config/store` import.

use crate::config::Config;
use crate::engine::{self, Request};
use crate::model;

wit_bindgen::generate!({
    world: "inference-service",
    path: "../wit",
    generate_all,
});

use exports::ai::inference::model::{Guest, Input, Output};
use wasi::config::store;

struct Component;

impl Guest for Component {
    fn infer(input: Input) -> Result<Output, String> {
        let start = std::time::Instant::now();
        let cfg = Config::from_lookup(|key| store::get(key).map_err(|e| format!("{e:?}")))
            .map_err(|e| e.to_string())?;
        let req = Request {
            tokens: input.tokens,
            max_length: input.max_length,
            temperature: input.temperature,
        };
        let tokens = engine::generate(&req, &cfg, &model::builtin())?;
        Ok(Output {
            tokens,
            latency_ms: start.elapsed().as_millis() as u64,
        })
    }
}

export!(Component);
