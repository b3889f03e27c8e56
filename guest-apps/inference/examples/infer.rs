//! Runs the model natively, for comparing with the component's answers (test.sh) and for
//! turning text into token ids and back.
//!
//!   cargo run -q -p inference --example infer -- '{"tokens":[1,2],"max_length":8,"temperature":0.0}'
//!   cargo run -q -p inference --example infer -- --encode 'the operator'
//!   cargo run -q -p inference --example infer -- --decode 2,31,7
//!
//! With a JSON request it prints the same JSON the hello app returns for it, minus
//! `latency_ms`: `{"tokens":[...]}` or `{"error":"..."}`. Configuration comes from the
//! environment, like the config-env adapter: SPIN_VARIABLE_INFERENCE_MODEL etc.

use inference::config::Config;
use inference::engine::{generate, Request};
use inference::model::builtin;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let m = builtin();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["--encode", text] => match m.encode(text) {
            Ok(ids) => println!("{}", join(&ids)),
            Err(e) => fail(&e),
        },
        ["--decode", ids] => {
            let ids: Vec<u32> = ids
                .split(',')
                .map(|s| s.trim().parse().unwrap_or(u32::MAX))
                .collect();
            println!("{}", m.decode(&ids));
        }
        ["--vocab"] => {
            for (i, t) in m.vocab.iter().enumerate() {
                println!("{i}\t{t}");
            }
        }
        [json] => {
            let req = parse_request(json).unwrap_or_else(|e| fail(&e));
            let cfg = Config::from_lookup(|k| {
                Ok(std::env::var(format!("SPIN_VARIABLE_{}", k.to_ascii_uppercase())).ok())
            })
            .unwrap_or_else(|e| fail(&e.to_string()));
            match generate(&req, &cfg, &m) {
                Ok(tokens) => println!("{{\"tokens\":[{}]}}", join(&tokens)),
                Err(e) => println!("{{\"error\":{:?}}}", e),
            }
        }
        _ => fail("usage: infer JSON | --encode TEXT | --decode IDS | --vocab"),
    }
}

fn join(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

fn fail(msg: &str) -> ! {
    eprintln!("infer: {msg}");
    std::process::exit(2)
}

/// Minimal parser for {"tokens":[..],"max_length":N,"temperature":F} (no serde in this
/// crate, to keep the component small; hello does the real JSON handling).
fn parse_request(json: &str) -> Result<Request, String> {
    let field = |name: &str| -> Result<&str, String> {
        let key = format!("\"{name}\"");
        let at = json.find(&key).ok_or(format!("missing {name}"))? + key.len();
        let rest = json[at..]
            .trim_start()
            .strip_prefix(':')
            .ok_or("expected :")?
            .trim_start();
        let end = if rest.starts_with('[') {
            rest.find(']').ok_or("unterminated list")? + 1
        } else {
            rest.find([',', '}']).unwrap_or(rest.len())
        };
        Ok(rest[..end].trim())
    };
    let tokens = field("tokens")?
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse::<u32>()
                .map_err(|e| format!("token {s:?}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let max_length = field("max_length")?
        .parse()
        .map_err(|e| format!("max_length: {e}"))?;
    let temperature = match field("temperature") {
        Ok(t) => t.parse().map_err(|e| format!("temperature: {e}"))?,
        Err(_) => 0.0,
    };
    Ok(Request {
        tokens,
        max_length,
        temperature,
    })
}
