//! An adapter component exporting `wasi:config/store@0.2.0-draft-2024-09-27`, answered from
//! environment variables with Spin's naming (`inference_model` -> `SPIN_VARIABLE_INFERENCE_MODEL`),
//! for hosts that do not provide that interface (`wasmtime serve` 48 implements only
//! `wasi:config@0.2.0-rc.1`, and only with its optional `wasi-config` feature).
//! build-guests.sh plugs it into the inference component to make `hello-composed.wasm`;
//! on Spin it is not used (Spin provides the interface from component variables).

/// Environment variable holding config `key`, or None for keys Spin would reject
/// (Spin variable names: lowercase ASCII letters, digits and single underscores, starting
/// with a letter).
pub fn env_name(key: &str) -> Option<String> {
    let valid = key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !key.contains("__")
        && !key.ends_with('_');
    valid.then(|| format!("SPIN_VARIABLE_{}", key.to_ascii_uppercase()))
}

/// `get` over an environment lookup.
pub fn get(key: &str, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    env_name(key).and_then(|name| env(&name))
}

/// `get-all` over an environment listing: every `SPIN_VARIABLE_*` as its config key, sorted.
pub fn get_all(vars: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vars
        .into_iter()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix("SPIN_VARIABLE_")?.to_ascii_lowercase();
            (env_name(&key).as_deref() == Some(k.as_str())).then_some((key, v))
        })
        .collect();
    out.sort();
    out
}

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        world: "ai:inference/config-env",
        path: "../wit",
        generate_all,
    });

    use exports::wasi::config::store::{Error, Guest};

    struct Component;

    impl Guest for Component {
        fn get(key: String) -> Result<Option<String>, Error> {
            Ok(super::get(&key, |name| std::env::var(name).ok()))
        }

        fn get_all() -> Result<Vec<(String, String)>, Error> {
            Ok(super::get_all(std::env::vars()))
        }
    }

    export!(Component);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_keys_like_spin() {
        assert_eq!(
            env_name("inference_model").as_deref(),
            Some("SPIN_VARIABLE_INFERENCE_MODEL")
        );
        assert_eq!(env_name("a1").as_deref(), Some("SPIN_VARIABLE_A1"));
        for bad in ["", "Upper", "1abc", "a__b", "a_", "a-b", "a.b"] {
            assert_eq!(env_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn get_reads_only_the_mapped_variable() {
        let env = |name: &str| (name == "SPIN_VARIABLE_SEED").then(|| "7".to_string());
        assert_eq!(get("seed", env).as_deref(), Some("7"));
        assert_eq!(get("other", env), None);
        assert_eq!(get("SEED", env), None);
    }

    #[test]
    fn get_all_lists_spin_variables_only() {
        let vars = [
            ("PATH", "/bin"),
            ("SPIN_VARIABLE_B", "2"),
            ("SPIN_VARIABLE_A_X", "1"),
            ("SPIN_VARIABLE_bad", "x"),
            ("SPIN_VARIABLE_", "x"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(
            get_all(vars),
            [
                ("a_x".to_string(), "1".to_string()),
                ("b".to_string(), "2".to_string())
            ]
        );
    }
}
