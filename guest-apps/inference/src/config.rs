//! Runtime configuration, read through `wasi:config/store` (Spin: component variables; the
//! `config-env` adapter: environment variables) with built-in defaults.
//!
//! Missing keys AND an unavailable/denying store fall back to the defaults: the component
//! must work on a host that gives it no configuration. A value that IS provided but invalid
//! is an error returned from `infer` (a misconfiguration should be loud, not ignored).

use std::fmt;

pub const KEY_MODEL: &str = "inference_model";
pub const KEY_MAX_LENGTH: &str = "inference_max_length";
pub const KEY_MAX_INPUT_TOKENS: &str = "inference_max_input_tokens";
pub const KEY_SEED: &str = "inference_seed";
/// All keys, in the order they are read.
pub const KEYS: [&str; 4] = [KEY_MODEL, KEY_MAX_LENGTH, KEY_MAX_INPUT_TOKENS, KEY_SEED];

/// Hard caps that configuration cannot raise.
pub const MAX_LENGTH_CAP: u32 = 4096;
pub const MAX_INPUT_TOKENS_CAP: u32 = 65536;
/// Highest accepted temperature.
pub const MAX_TEMPERATURE: f32 = 2.0;

/// Which n-gram order the model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// Next token from the previous one.
    Bigram,
    /// Next token from the previous two, backing off to the bigram for unseen pairs.
    Trigram,
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Bigram => "bigram",
            ModelKind::Trigram => "trigram",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub model: ModelKind,
    /// Upper limit for `max-length` (tokens generated per call).
    pub max_length: u32,
    /// Upper limit for the number of input tokens.
    pub max_input_tokens: u32,
    /// PRNG seed for temperature > 0 (mixed with a hash of the request).
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        // Keep in sync with the variable defaults in hello/spin.toml (a test checks).
        Config {
            model: ModelKind::Bigram,
            max_length: 64,
            max_input_tokens: 512,
            seed: 42,
        }
    }
}

/// A provided configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: &'static str,
    pub value: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid config {}={:?}: {}",
            self.key, self.value, self.reason
        )
    }
}

impl Config {
    /// Builds the configuration from a key lookup. `lookup` returns `Ok(Some(v))` for a
    /// provided value, `Ok(None)` for a missing key and `Err(_)` when the store is
    /// unavailable; the latter two mean "use the default". Values are trimmed; an empty
    /// value also means "use the default" (Spin variables cannot be unset, only empty).
    pub fn from_lookup<F>(mut lookup: F) -> Result<Config, ConfigError>
    where
        F: FnMut(&str) -> Result<Option<String>, String>,
    {
        let mut cfg = Config::default();
        let mut get = |key: &'static str| -> Option<(&'static str, String)> {
            match lookup(key) {
                Ok(Some(v)) if !v.trim().is_empty() => Some((key, v.trim().to_string())),
                _ => None,
            }
        };
        let bad = |key, value: &str, reason: String| ConfigError {
            key,
            value: value.to_string(),
            reason,
        };

        if let Some((k, v)) = get(KEY_MODEL) {
            cfg.model = match v.to_ascii_lowercase().as_str() {
                "bigram" => ModelKind::Bigram,
                "trigram" => ModelKind::Trigram,
                _ => return Err(bad(k, &v, "expected \"bigram\" or \"trigram\"".into())),
            };
        }
        if let Some((k, v)) = get(KEY_MAX_LENGTH) {
            cfg.max_length = parse_bounded(&v, MAX_LENGTH_CAP).map_err(|r| bad(k, &v, r))?;
        }
        if let Some((k, v)) = get(KEY_MAX_INPUT_TOKENS) {
            cfg.max_input_tokens =
                parse_bounded(&v, MAX_INPUT_TOKENS_CAP).map_err(|r| bad(k, &v, r))?;
        }
        if let Some((k, v)) = get(KEY_SEED) {
            cfg.seed = v
                .parse::<u64>()
                .map_err(|e| bad(k, &v, format!("expected an unsigned 64-bit integer ({e})")))?;
        }
        Ok(cfg)
    }
}

fn parse_bounded(v: &str, cap: u32) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n) if (1..=cap).contains(&n) => Ok(n),
        Ok(n) => Err(format!("{n} is outside 1..={cap}")),
        Err(e) => Err(format!("expected an integer in 1..={cap} ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| Ok(m.get(k).cloned()))
    }

    #[test]
    fn defaults_when_nothing_is_provided() {
        assert_eq!(from(&[]).unwrap(), Config::default());
    }

    #[test]
    fn defaults_when_the_store_errors() {
        let mut asked = Vec::new();
        let cfg = Config::from_lookup(|k| {
            asked.push(k.to_string());
            Err("denied".to_string())
        })
        .unwrap();
        assert_eq!(cfg, Config::default());
        assert_eq!(asked, KEYS);
    }

    #[test]
    fn provided_values_override_defaults() {
        let cfg = from(&[
            (KEY_MODEL, "Trigram"),
            (KEY_MAX_LENGTH, " 8 "),
            (KEY_MAX_INPUT_TOKENS, "16"),
            (KEY_SEED, "7"),
        ])
        .unwrap();
        assert_eq!(
            cfg,
            Config {
                model: ModelKind::Trigram,
                max_length: 8,
                max_input_tokens: 16,
                seed: 7
            }
        );
    }

    #[test]
    fn empty_value_means_default() {
        assert_eq!(
            from(&[(KEY_MODEL, ""), (KEY_MAX_LENGTH, "  ")]).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn invalid_values_are_errors_naming_the_key() {
        let e = from(&[(KEY_MODEL, "gpt")]).unwrap_err();
        assert_eq!(e.key, KEY_MODEL);
        assert!(e.to_string().contains("inference_model=\"gpt\""), "{e}");
        assert_eq!(
            from(&[(KEY_MAX_LENGTH, "0")]).unwrap_err().key,
            KEY_MAX_LENGTH
        );
        assert_eq!(
            from(&[(KEY_MAX_LENGTH, "4097")]).unwrap_err().key,
            KEY_MAX_LENGTH
        );
        assert_eq!(
            from(&[(KEY_MAX_LENGTH, "-1")]).unwrap_err().key,
            KEY_MAX_LENGTH
        );
        assert_eq!(
            from(&[(KEY_MAX_INPUT_TOKENS, "lots")]).unwrap_err().key,
            KEY_MAX_INPUT_TOKENS
        );
        assert_eq!(from(&[(KEY_SEED, "-3")]).unwrap_err().key, KEY_SEED);
        assert_eq!(from(&[(KEY_MAX_LENGTH, "4096")]).unwrap().max_length, 4096);
    }

    /// hello/spin.toml declares the same defaults as app variables (Spin needs a default
    /// for every variable); they must not drift from the built-in ones.
    #[test]
    fn spin_toml_variable_defaults_match_builtin_defaults() {
        let toml = include_str!("../../hello/spin.toml");
        let d = Config::default();
        let expect = [
            (KEY_MODEL, d.model.name().to_string()),
            (KEY_MAX_LENGTH, d.max_length.to_string()),
            (KEY_MAX_INPUT_TOKENS, d.max_input_tokens.to_string()),
            (KEY_SEED, d.seed.to_string()),
        ];
        for (key, value) in expect {
            let line = format!("{key} = {{ default = \"{value}\" }}");
            assert!(
                toml.lines().any(|l| l.trim() == line),
                "hello/spin.toml lacks `{line}`"
            );
        }
    }
}
