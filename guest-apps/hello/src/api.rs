//! The `/inference` JSON contract.
//!
//! Request:  `{"tokens":[u32...],"max_length":u32,"temperature":f32}` (temperature optional,
//!           default 0.0; unknown fields rejected).
//! Response: `{"tokens":[u32...],"latency_ms":u64}`.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferRequest {
    pub tokens: Vec<u32>,
    pub max_length: u32,
    #[serde(default)]
    pub temperature: f32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InferOutput {
    pub tokens: Vec<u32>,
    pub latency_ms: u64,
}

/// Parses the body; the error is a message for a 400 response. Range checks (empty tokens,
/// limits, temperature) are the inference component's job: it owns the limits.
pub fn parse_request(body: &[u8]) -> Result<InferRequest, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid request body: {e}"))
}

pub fn render_output(out: &InferOutput) -> serde_json::Value {
    serde_json::json!({ "tokens": out.tokens, "latency_ms": out.latency_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_shape() {
        let r = parse_request(br#"{"tokens":[1,2],"max_length":4,"temperature":0.0}"#).unwrap();
        assert_eq!(
            r,
            InferRequest {
                tokens: vec![1, 2],
                max_length: 4,
                temperature: 0.0
            }
        );
        let r = parse_request(br#" {"max_length":1,"tokens":[]} "#).unwrap();
        assert_eq!((r.tokens.len(), r.temperature), (0, 0.0));
    }

    #[test]
    fn rejects_wrong_shapes_with_a_message() {
        for (body, want) in [
            (&br#"{"tokens":[1]}"#[..], "missing field `max_length`"),
            (br#"{"max_length":1}"#, "missing field `tokens`"),
            (br#"{"tokens":[1.5],"max_length":1}"#, "invalid type"),
            (
                br#"{"tokens":[4294967296],"max_length":1}"#,
                "invalid value",
            ),
            (br#"{"tokens":[1],"max_length":-1}"#, "invalid value"),
            (
                br#"{"tokens":[1],"max_length":1,"temperature":"hot"}"#,
                "invalid type",
            ),
            (
                br#"{"tokens":[1],"max_length":1,"top_p":1}"#,
                "unknown field `top_p`",
            ),
            (b"[1,2]", "invalid type"),
            (b"", "EOF"),
            (b"\xff", "expected value"),
        ] {
            let e = parse_request(body).unwrap_err();
            assert!(e.contains(want), "{}: {e}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn renders_the_documented_shape() {
        let v = render_output(&InferOutput {
            tokens: vec![3, 4],
            latency_ms: 0,
        });
        assert_eq!(v.to_string(), r#"{"latency_ms":0,"tokens":[3,4]}"#);
    }
}
