//! `spec.runtimeConfig` → Spin's `runtime-config.toml`.
//!
//! Known backend types are validated against one table ([`BACKENDS`]) before
//! rendering, so a typo such as `token` for `auth_token` (spin-operator#181)
//! is a status condition instead of a CrashLoop. The TOML is produced by the
//! `toml` serializer from typed values, never by pasting strings together.
//!
//! No variables provider table is written: Spin 2 and Spin 3 always add the
//! environment provider (prefix `SPIN_VARIABLE`) themselves, and the table's
//! key differs between them (`config_provider` in Spin 2, `variables_provider`
//! with `config_provider` as fallback in Spin 3). spin-operator's
//! `prefix='SPIN_VARIABLE_'` resolves `SPIN_VARIABLE__NAME` and so does nothing.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::problem::Problem;
use super::refs::{RefError, config_map_value, secret_value};
use crate::api::{RuntimeConfig, RuntimeConfigOption};

/// The tables of runtime-config.toml that Spindle renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `[key_value_store.<name>]` from `keyValueStores`.
    KeyValueStore,
    /// `[sqlite_database.<name>]` from `sqliteDatabases`.
    SqliteDatabase,
    /// `[llm_compute]` from `llmCompute`.
    LlmCompute,
}

impl Section {
    fn spec_field(self) -> &'static str {
        match self {
            Section::KeyValueStore => "keyValueStores",
            Section::SqliteDatabase => "sqliteDatabases",
            Section::LlmCompute => "llmCompute",
        }
    }
}

/// What form an option value must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Any UTF-8 string.
    Text,
    /// `true` or `false`, rendered as a TOML boolean (Spin deserializes a bool).
    Bool,
    /// `redis://` or `rediss://` URL with a host.
    RedisUrl,
    /// `http://` or `https://` URL with a host.
    HttpUrl,
    /// Any absolute URL (libsql accepts libsql://, https://, ...).
    Url,
}

struct OptionSpec {
    name: &'static str,
    required: bool,
    kind: Kind,
}

const fn req(name: &'static str, kind: Kind) -> OptionSpec {
    OptionSpec {
        name,
        required: true,
        kind,
    }
}

const fn opt(name: &'static str, kind: Kind) -> OptionSpec {
    OptionSpec {
        name,
        required: false,
        kind,
    }
}

/// One backend type of one section: its options and pairing rules.
struct BackendSpec {
    section: Section,
    type_: &'static str,
    options: &'static [OptionSpec],
    /// Options that must be set together or not at all.
    pairs: &'static [[&'static str; 2]],
}

use Kind::{Bool, HttpUrl, RedisUrl, Text, Url};
use Section::{KeyValueStore as Kv, LlmCompute as Llm, SqliteDatabase as Sql};

/// Every backend Spindle knows, as accepted by Spin 3.6 (the shim's Spin).
/// Adding a type is one line. Kept conservative: an option Spin may not
/// accept is left out, since an unknown key makes Spin refuse to start.
const BACKENDS: &[BackendSpec] = &[
    BackendSpec {
        section: Kv,
        type_: "spin",
        options: &[opt("path", Text)],
        pairs: &[],
    },
    BackendSpec {
        section: Kv,
        type_: "redis",
        options: &[req("url", RedisUrl)],
        pairs: &[],
    },
    BackendSpec {
        section: Kv,
        type_: "azure_cosmos",
        options: &[
            req("account", Text),
            req("database", Text),
            req("container", Text),
            opt("key", Text),
        ],
        pairs: &[],
    },
    BackendSpec {
        section: Kv,
        type_: "aws_dynamo",
        options: &[
            req("region", Text),
            req("table", Text),
            opt("access_key", Text),
            opt("secret_key", Text),
            opt("token", Text),
            opt("consistent_read", Bool),
        ],
        pairs: &[["access_key", "secret_key"]],
    },
    BackendSpec {
        section: Sql,
        type_: "spin",
        options: &[opt("path", Text)],
        pairs: &[],
    },
    BackendSpec {
        section: Sql,
        type_: "libsql",
        options: &[req("url", Url), req("token", Text)],
        pairs: &[],
    },
    BackendSpec {
        section: Llm,
        type_: "spin",
        options: &[],
        pairs: &[],
    },
    BackendSpec {
        section: Llm,
        type_: "remote_http",
        options: &[
            req("url", HttpUrl),
            req("auth_token", Text),
            opt("api_type", Text),
        ],
        pairs: &[],
    },
];

/// The known types of a section, in table order.
pub fn known_types(section: Section) -> Vec<&'static str> {
    BACKENDS
        .iter()
        .filter(|b| b.section == section)
        .map(|b| b.type_)
        .collect()
}

fn backend(section: Section, type_: &str) -> Option<&'static BackendSpec> {
    BACKENDS
        .iter()
        .find(|b| b.section == section && b.type_ == type_)
}

/// A rendered option value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Str(String),
    Bool(bool),
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Str(v) => s.serialize_str(v),
            Value::Bool(v) => s.serialize_bool(*v),
        }
    }
}

/// One table: `type` first, then the options in name order.
struct Entry {
    type_: String,
    options: BTreeMap<String, Value>,
}

impl Serialize for Entry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.options.len() + 1))?;
        map.serialize_entry("type", &self.type_)?;
        for (k, v) in &self.options {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[derive(serde::Serialize)]
struct Document {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    key_value_store: BTreeMap<String, Entry>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    sqlite_database: BTreeMap<String, Entry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    llm_compute: Option<Entry>,
}

/// Where option values referenced through `valueFrom` are read from.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    /// Secrets by name.
    pub secrets: &'a BTreeMap<String, Secret>,
    /// ConfigMaps by name.
    pub config_maps: &'a BTreeMap<String, ConfigMap>,
}

/// Renders the typed part of `spec.runtimeConfig` (ignoring `loadFromSecret`)
/// to runtime-config.toml, or every problem found.
pub fn render_toml(
    config: Option<&RuntimeConfig>,
    sources: Sources<'_>,
) -> Result<String, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut doc = Document {
        key_value_store: BTreeMap::new(),
        sqlite_database: BTreeMap::new(),
        llm_compute: None,
    };

    if let Some(config) = config {
        let stores = config
            .key_value_stores
            .iter()
            .flatten()
            .map(|s| (&s.name, &s.type_, &s.options));
        render_named(
            Section::KeyValueStore,
            stores,
            sources,
            &mut doc.key_value_store,
            &mut problems,
        );
        let dbs = config
            .sqlite_databases
            .iter()
            .flatten()
            .map(|s| (&s.name, &s.type_, &s.options));
        render_named(
            Section::SqliteDatabase,
            dbs,
            sources,
            &mut doc.sqlite_database,
            &mut problems,
        );
        if let Some(llm) = &config.llm_compute {
            let location = Section::LlmCompute.spec_field().to_owned();
            doc.llm_compute = render_entry(
                Section::LlmCompute,
                &location,
                &llm.type_,
                llm.options.as_deref(),
                sources,
                &mut problems,
            );
        }
    }

    if !problems.is_empty() {
        return Err(problems);
    }
    toml::to_string(&doc).map_err(|e| {
        // Only reachable through a serializer bug; the error names no value.
        vec![Problem::InvalidOptionValue {
            location: "(document)".to_owned(),
            option: e.to_string(),
            expected: "serializable as TOML",
        }]
    })
}

type NamedEntry<'a> = (&'a String, &'a String, &'a Option<Vec<RuntimeConfigOption>>);

fn render_named<'a>(
    section: Section,
    entries: impl Iterator<Item = NamedEntry<'a>>,
    sources: Sources<'_>,
    out: &mut BTreeMap<String, Entry>,
    problems: &mut Vec<Problem>,
) {
    let mut seen = BTreeSet::new();
    for (name, type_, options) in entries {
        let location = format!("{}[{name}]", section.spec_field());
        if !seen.insert(name.as_str()) {
            problems.push(Problem::DuplicateStoreName { location });
            continue;
        }
        if let Some(entry) = render_entry(
            section,
            &location,
            type_,
            options.as_deref(),
            sources,
            problems,
        ) {
            out.insert(name.clone(), entry);
        }
    }
}

fn render_entry(
    section: Section,
    location: &str,
    type_: &str,
    options: Option<&[RuntimeConfigOption]>,
    sources: Sources<'_>,
    problems: &mut Vec<Problem>,
) -> Option<Entry> {
    let before = problems.len();
    let spec = backend(section, type_);
    if spec.is_none() {
        problems.push(Problem::UnknownStoreType {
            location: location.to_owned(),
            type_: type_.to_owned(),
            known: known_types(section),
        });
    }

    let mut values = BTreeMap::new();
    // Names given, including ones that failed to resolve (already reported,
    // so not reported again as missing).
    let mut given = BTreeSet::new();
    for option in options.unwrap_or_default() {
        let name = option.name.as_str();
        if !given.insert(name) {
            problems.push(Problem::DuplicateOption {
                location: location.to_owned(),
                option: name.to_owned(),
            });
            continue;
        }
        let option_spec = spec.map(|s| s.options.iter().find(|o| o.name == name));
        if let Some(None) = option_spec {
            problems.push(Problem::UnknownOption {
                location: location.to_owned(),
                type_: type_.to_owned(),
                option: name.to_owned(),
                allowed: spec
                    .map(|s| s.options.iter().map(|o| o.name).collect())
                    .unwrap_or_default(),
            });
        }
        let used_by = format!("runtimeConfig.{location}.options[{name}]");
        let raw = match resolve(option, &used_by, sources, problems) {
            Resolved::Value(raw) => raw,
            // An absent optional reference is as if the option were not set.
            Resolved::Absent => {
                given.remove(name);
                continue;
            }
            Resolved::Failed => continue,
        };
        let Some(Some(option_spec)) = option_spec else {
            continue;
        };
        if let Some(value) = check_kind(option_spec, raw, location, problems) {
            values.insert(name.to_owned(), value);
        }
    }

    if let Some(spec) = spec {
        for o in spec
            .options
            .iter()
            .filter(|o| o.required && !given.contains(o.name))
        {
            problems.push(Problem::MissingOption {
                location: location.to_owned(),
                type_: type_.to_owned(),
                option: o.name,
            });
        }
        for [a, b] in spec.pairs {
            if given.contains(a) != given.contains(b) {
                problems.push(Problem::IncompleteOptions {
                    location: location.to_owned(),
                    type_: type_.to_owned(),
                    options: [a, b],
                });
            }
        }
    }

    (problems.len() == before).then(|| Entry {
        type_: type_.to_owned(),
        options: values,
    })
}

/// An option's text after following `valueFrom`.
enum Resolved {
    Value(String),
    /// An optional reference whose object or key does not exist.
    Absent,
    /// A problem was recorded.
    Failed,
}

/// The option's text: its literal value or the referenced key.
fn resolve(
    option: &RuntimeConfigOption,
    used_by: &str,
    sources: Sources<'_>,
    problems: &mut Vec<Problem>,
) -> Resolved {
    let invalid = |detail| Problem::InvalidReference {
        used_by: used_by.to_owned(),
        detail,
    };
    let bytes = match (&option.value, &option.value_from) {
        (Some(v), None) => return Resolved::Value(v.clone()),
        (Some(_), Some(_)) | (None, None) => {
            problems.push(invalid("set exactly one of value or valueFrom"));
            return Resolved::Failed;
        }
        (None, Some(from)) => match (&from.secret_key_ref, &from.config_map_key_ref) {
            (Some(s), None) => {
                if s.name.is_empty() {
                    problems.push(invalid("secretKeyRef.name is empty"));
                    return Resolved::Failed;
                }
                match secret_value(sources.secrets, &s.name, &s.key) {
                    Ok(b) => b,
                    Err(_) if s.optional == Some(true) => return Resolved::Absent,
                    Err(RefError::ObjectNotFound) => {
                        problems.push(Problem::SecretNotFound {
                            name: s.name.clone(),
                            used_by: used_by.to_owned(),
                        });
                        return Resolved::Failed;
                    }
                    Err(RefError::KeyNotFound) => {
                        problems.push(Problem::SecretKeyNotFound {
                            name: s.name.clone(),
                            key: s.key.clone(),
                            used_by: used_by.to_owned(),
                        });
                        return Resolved::Failed;
                    }
                }
            }
            (None, Some(c)) => {
                if c.name.is_empty() {
                    problems.push(invalid("configMapKeyRef.name is empty"));
                    return Resolved::Failed;
                }
                match config_map_value(sources.config_maps, &c.name, &c.key) {
                    Ok(b) => b,
                    Err(_) if c.optional == Some(true) => return Resolved::Absent,
                    Err(RefError::ObjectNotFound) => {
                        problems.push(Problem::ConfigMapNotFound {
                            name: c.name.clone(),
                            used_by: used_by.to_owned(),
                        });
                        return Resolved::Failed;
                    }
                    Err(RefError::KeyNotFound) => {
                        problems.push(Problem::ConfigMapKeyNotFound {
                            name: c.name.clone(),
                            key: c.key.clone(),
                            used_by: used_by.to_owned(),
                        });
                        return Resolved::Failed;
                    }
                }
            }
            _ => {
                problems.push(invalid(
                    "valueFrom needs exactly one of secretKeyRef or configMapKeyRef",
                ));
                return Resolved::Failed;
            }
        },
    };
    match std::str::from_utf8(bytes) {
        Ok(s) => Resolved::Value(s.to_owned()),
        Err(_) => {
            problems.push(Problem::InvalidReference {
                used_by: used_by.to_owned(),
                detail: "the referenced value is not UTF-8 text",
            });
            Resolved::Failed
        }
    }
}

/// Converts the option text to its TOML value. Problems never echo the text:
/// it may come from a Secret.
fn check_kind(
    spec: &OptionSpec,
    raw: String,
    location: &str,
    problems: &mut Vec<Problem>,
) -> Option<Value> {
    let invalid = |expected| Problem::InvalidOptionValue {
        location: location.to_owned(),
        option: spec.name.to_owned(),
        expected,
    };
    match spec.kind {
        Kind::Text => Some(Value::Str(raw)),
        Kind::Bool => match raw.as_str() {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => {
                problems.push(invalid("true or false"));
                None
            }
        },
        Kind::RedisUrl => match url::Url::parse(&raw) {
            // url::ParseError describes the kind of error only, never the input.
            Err(e) => {
                problems.push(Problem::InvalidRedisUrl {
                    location: location.to_owned(),
                    detail: e.to_string(),
                });
                None
            }
            Ok(u) if !matches!(u.scheme(), "redis" | "rediss") => {
                problems.push(Problem::InvalidRedisUrl {
                    location: location.to_owned(),
                    detail: "the scheme is not redis or rediss".to_owned(),
                });
                None
            }
            Ok(u) if u.host_str().is_none_or(str::is_empty) => {
                problems.push(Problem::InvalidRedisUrl {
                    location: location.to_owned(),
                    detail: "no host".to_owned(),
                });
                None
            }
            Ok(_) => Some(Value::Str(raw)),
        },
        Kind::HttpUrl => match url::Url::parse(&raw) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some_and(|h| !h.is_empty()) =>
            {
                Some(Value::Str(raw))
            }
            _ => {
                problems.push(invalid("an http:// or https:// URL with a host"));
                None
            }
        },
        Kind::Url => match url::Url::parse(&raw) {
            Ok(_) => Some(Value::Str(raw)),
            Err(_) => {
                problems.push(invalid("an absolute URL such as libsql://db.example.com"));
                None
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        KeyValueStoreConfig, LlmComputeConfig, RuntimeConfigVarSource, SqliteDatabaseConfig,
    };
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{ConfigMapKeySelector, SecretKeySelector};
    use pretty_assertions::assert_eq;

    fn lit(name: &str, value: &str) -> RuntimeConfigOption {
        RuntimeConfigOption {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    fn secret_ref(name: &str, secret: &str, key: &str) -> RuntimeConfigOption {
        RuntimeConfigOption {
            name: name.into(),
            value: None,
            value_from: Some(RuntimeConfigVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.into(),
                    key: key.into(),
                    optional: None,
                }),
                config_map_key_ref: None,
            }),
        }
    }

    fn cm_ref(name: &str, cm: &str, key: &str, optional: Option<bool>) -> RuntimeConfigOption {
        RuntimeConfigOption {
            name: name.into(),
            value: None,
            value_from: Some(RuntimeConfigVarSource {
                secret_key_ref: None,
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: cm.into(),
                    key: key.into(),
                    optional,
                }),
            }),
        }
    }

    fn kv(name: &str, type_: &str, options: Vec<RuntimeConfigOption>) -> KeyValueStoreConfig {
        KeyValueStoreConfig {
            name: name.into(),
            type_: type_.into(),
            options: Some(options),
        }
    }

    fn sql(name: &str, type_: &str, options: Vec<RuntimeConfigOption>) -> SqliteDatabaseConfig {
        SqliteDatabaseConfig {
            name: name.into(),
            type_: type_.into(),
            options: Some(options),
        }
    }

    fn llm(type_: &str, options: Vec<RuntimeConfigOption>) -> LlmComputeConfig {
        LlmComputeConfig {
            type_: type_.into(),
            options: Some(options),
        }
    }

    struct Fixture {
        secrets: BTreeMap<String, Secret>,
        config_maps: BTreeMap<String, ConfigMap>,
    }

    impl Fixture {
        fn new() -> Self {
            let secret = Secret {
                data: Some(
                    [
                        (
                            "url".to_owned(),
                            ByteString(b"redis://:hunter2@redis.cache:6379/0".to_vec()),
                        ),
                        ("token".to_owned(), ByteString(b"s3cr3t-token".to_vec())),
                        (
                            "bad-url".to_owned(),
                            ByteString(b"http://:hunter2@redis.cache".to_vec()),
                        ),
                        ("binary".to_owned(), ByteString(vec![0xff, 0xfe])),
                    ]
                    .into(),
                ),
                ..Default::default()
            };
            let cm = ConfigMap {
                data: Some([("region".to_owned(), "eu-west-1".to_owned())].into()),
                ..Default::default()
            };
            Self {
                secrets: [("creds".to_owned(), secret)].into(),
                config_maps: [("settings".to_owned(), cm)].into(),
            }
        }

        fn sources(&self) -> Sources<'_> {
            Sources {
                secrets: &self.secrets,
                config_maps: &self.config_maps,
            }
        }

        fn render(&self, config: &RuntimeConfig) -> Result<String, Vec<Problem>> {
            render_toml(Some(config), self.sources())
        }
    }

    #[test]
    fn no_runtime_config_renders_an_empty_document() {
        let f = Fixture::new();
        assert_eq!(render_toml(None, f.sources()), Ok(String::new()));
        assert_eq!(f.render(&RuntimeConfig::default()), Ok(String::new()));
    }

    #[test]
    fn redis_key_value_store() {
        let f = Fixture::new();
        let config = RuntimeConfig {
            key_value_stores: Some(vec![kv(
                "default",
                "redis",
                vec![lit("url", "redis://redis.cache:6379")],
            )]),
            ..Default::default()
        };
        assert_eq!(
            f.render(&config).expect("valid"),
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://redis.cache:6379\"\n"
        );
    }

    #[test]
    fn libsql_database_with_secret_token() {
        let f = Fixture::new();
        let config = RuntimeConfig {
            sqlite_databases: Some(vec![sql(
                "default",
                "libsql",
                vec![
                    lit("url", "https://db.example.turso.io"),
                    secret_ref("token", "creds", "token"),
                ],
            )]),
            ..Default::default()
        };
        assert_eq!(
            f.render(&config).expect("valid"),
            "[sqlite_database.default]\ntype = \"libsql\"\ntoken = \"s3cr3t-token\"\nurl = \"https://db.example.turso.io\"\n"
        );
    }

    #[test]
    fn secret_key_ref_option_is_inlined_and_escaped() {
        let mut f = Fixture::new();
        f.secrets.insert(
            "quoted".into(),
            Secret {
                string_data: Some([("u".to_owned(), "redis://h:1/\"x\"\n".to_owned())].into()),
                ..Default::default()
            },
        );
        let config = RuntimeConfig {
            key_value_stores: Some(vec![
                kv("cache", "redis", vec![secret_ref("url", "creds", "url")]),
                kv("odd", "redis", vec![secret_ref("url", "quoted", "u")]),
            ]),
            ..Default::default()
        };
        let rendered = f.render(&config).expect("valid");
        assert_eq!(
            rendered,
            "[key_value_store.cache]\ntype = \"redis\"\nurl = \"redis://:hunter2@redis.cache:6379/0\"\n\n\
             [key_value_store.odd]\ntype = \"redis\"\nurl = \"\"\"\nredis://h:1/\"x\"\n\"\"\"\n"
        );
        // Structured output: the value round-trips exactly and injects nothing.
        let parsed: toml::Table = toml::from_str(&rendered).expect("valid TOML");
        assert_eq!(
            parsed["key_value_store"]["odd"]["url"].as_str(),
            Some("redis://h:1/\"x\"\n")
        );
        assert_eq!(parsed.len(), 1);
    }

    #[test]
    fn llm_remote_http() {
        let f = Fixture::new();
        let config = RuntimeConfig {
            llm_compute: Some(llm(
                "remote_http",
                vec![
                    lit("url", "http://llm.ai.svc:8080"),
                    secret_ref("auth_token", "creds", "token"),
                ],
            )),
            ..Default::default()
        };
        assert_eq!(
            f.render(&config).expect("valid"),
            "[llm_compute]\ntype = \"remote_http\"\nauth_token = \"s3cr3t-token\"\nurl = \"http://llm.ai.svc:8080\"\n"
        );
    }

    #[test]
    fn multiple_stores_databases_and_llm_in_stable_order() {
        let f = Fixture::new();
        let config = RuntimeConfig {
            key_value_stores: Some(vec![
                kv("zeta", "spin", vec![lit("path", "/data/zeta.db")]),
                kv(
                    "alpha",
                    "aws_dynamo",
                    vec![
                        cm_ref("region", "settings", "region", None),
                        lit("table", "t"),
                        lit("consistent_read", "true"),
                    ],
                ),
                kv("default", "spin", vec![]),
            ]),
            sqlite_databases: Some(vec![sql("default", "spin", vec![])]),
            llm_compute: Some(llm("spin", vec![])),
            load_from_secret: None,
        };
        assert_eq!(
            f.render(&config).expect("valid"),
            "[key_value_store.alpha]\n\
             type = \"aws_dynamo\"\n\
             consistent_read = true\n\
             region = \"eu-west-1\"\n\
             table = \"t\"\n\
             \n\
             [key_value_store.default]\n\
             type = \"spin\"\n\
             \n\
             [key_value_store.zeta]\n\
             type = \"spin\"\n\
             path = \"/data/zeta.db\"\n\
             \n\
             [sqlite_database.default]\n\
             type = \"spin\"\n\
             \n\
             [llm_compute]\n\
             type = \"spin\"\n"
        );
    }

    #[test]
    fn azure_cosmos_store() {
        let f = Fixture::new();
        let config = RuntimeConfig {
            key_value_stores: Some(vec![kv(
                "default",
                "azure_cosmos",
                vec![
                    lit("account", "acct"),
                    lit("database", "db"),
                    lit("container", "c"),
                    secret_ref("key", "creds", "token"),
                ],
            )]),
            ..Default::default()
        };
        assert_eq!(
            f.render(&config).expect("valid"),
            "[key_value_store.default]\ntype = \"azure_cosmos\"\naccount = \"acct\"\ncontainer = \"c\"\ndatabase = \"db\"\nkey = \"s3cr3t-token\"\n"
        );
    }

    #[test]
    fn absent_optional_reference_omits_the_option() {
        let f = Fixture::new();
        let config = RuntimeConfig {
            key_value_stores: Some(vec![kv(
                "default",
                "spin",
                vec![cm_ref("path", "nope", "path", Some(true))],
            )]),
            ..Default::default()
        };
        assert_eq!(
            f.render(&config).expect("valid"),
            "[key_value_store.default]\ntype = \"spin\"\n"
        );
    }

    fn render_err(config: RuntimeConfig) -> Vec<Problem> {
        Fixture::new().render(&config).expect_err("invalid")
    }

    fn kv_config(stores: Vec<KeyValueStoreConfig>) -> RuntimeConfig {
        RuntimeConfig {
            key_value_stores: Some(stores),
            ..Default::default()
        }
    }

    #[test]
    fn unknown_store_type_lists_known_types() {
        let problems = render_err(kv_config(vec![kv(
            "default",
            "memcached",
            vec![lit("url", "x")],
        )]));
        assert_eq!(
            problems,
            vec![Problem::UnknownStoreType {
                location: "keyValueStores[default]".into(),
                type_: "memcached".into(),
                known: vec!["spin", "redis", "azure_cosmos", "aws_dynamo"],
            }]
        );
        assert_eq!(
            problems[0].message(),
            "runtimeConfig.keyValueStores[default]: unknown type \"memcached\"; known types: spin, redis, azure_cosmos, aws_dynamo"
        );
        assert_eq!(problems[0].reason(), "UnknownStoreType");
        assert_eq!(problems[0].condition_type(), "RuntimeConfigReady");
        assert!(!problems[0].is_transient());

        let problems = render_err(RuntimeConfig {
            sqlite_databases: Some(vec![sql("default", "postgres", vec![])]),
            llm_compute: Some(llm("openai", vec![])),
            ..Default::default()
        });
        assert_eq!(problems.len(), 2);
        assert!(
            problems[0].message().ends_with("known types: spin, libsql"),
            "{}",
            problems[0]
        );
        assert!(
            problems[1]
                .message()
                .ends_with("known types: spin, remote_http"),
            "{}",
            problems[1]
        );
    }

    #[test]
    fn unknown_option_is_rejected() {
        // spin-operator#181: `token` instead of `auth_token` crash-looped the app.
        let problems = render_err(RuntimeConfig {
            llm_compute: Some(llm(
                "remote_http",
                vec![lit("url", "https://llm"), lit("token", "t")],
            )),
            ..Default::default()
        });
        assert_eq!(
            problems,
            vec![
                Problem::UnknownOption {
                    location: "llmCompute".into(),
                    type_: "remote_http".into(),
                    option: "token".into(),
                    allowed: vec!["url", "auth_token", "api_type"],
                },
                Problem::MissingOption {
                    location: "llmCompute".into(),
                    type_: "remote_http".into(),
                    option: "auth_token"
                },
            ]
        );
        assert_eq!(
            problems[0].message(),
            "runtimeConfig.llmCompute: type \"remote_http\" has no option \"token\"; allowed options: url, auth_token, api_type"
        );
        assert_eq!(
            problems[1].message(),
            "runtimeConfig.llmCompute: type \"remote_http\" requires option \"auth_token\""
        );
    }

    #[test]
    fn missing_required_options() {
        let problems = render_err(RuntimeConfig {
            sqlite_databases: Some(vec![sql(
                "default",
                "libsql",
                vec![lit("url", "libsql://db")],
            )]),
            ..Default::default()
        });
        assert_eq!(
            problems,
            vec![Problem::MissingOption {
                location: "sqliteDatabases[default]".into(),
                type_: "libsql".into(),
                option: "token"
            }]
        );
        assert_eq!(problems[0].reason(), "MissingOption");
    }

    #[test]
    fn paired_options_must_come_together() {
        let problems = render_err(kv_config(vec![kv(
            "default",
            "aws_dynamo",
            vec![
                lit("region", "r"),
                lit("table", "t"),
                lit("access_key", "a"),
            ],
        )]));
        assert_eq!(
            problems,
            vec![Problem::IncompleteOptions {
                location: "keyValueStores[default]".into(),
                type_: "aws_dynamo".into(),
                options: ["access_key", "secret_key"],
            }]
        );
    }

    #[test]
    fn duplicate_option_and_store_names() {
        let problems = render_err(kv_config(vec![
            kv(
                "default",
                "redis",
                vec![lit("url", "redis://a"), lit("url", "redis://b")],
            ),
            kv("default", "spin", vec![]),
        ]));
        assert_eq!(
            problems,
            vec![
                Problem::DuplicateOption {
                    location: "keyValueStores[default]".into(),
                    option: "url".into()
                },
                Problem::DuplicateStoreName {
                    location: "keyValueStores[default]".into()
                },
            ]
        );
    }

    #[test]
    fn invalid_redis_urls_never_echo_the_password() {
        let cases = [
            (
                lit("url", "http://user:hunter2@host:6379"),
                "the scheme is not redis or rediss",
            ),
            (lit("url", "hunter2"), "relative URL without a base"),
            (
                lit("url", "redis://:hunter2@host:99999"),
                "invalid port number",
            ),
            (
                secret_ref("url", "creds", "bad-url"),
                "the scheme is not redis or rediss",
            ),
        ];
        for (option, detail) in cases {
            let problems = render_err(kv_config(vec![kv("cache", "redis", vec![option])]));
            assert_eq!(
                problems,
                vec![Problem::InvalidRedisUrl {
                    location: "keyValueStores[cache]".into(),
                    detail: detail.into()
                }]
            );
            let message = problems[0].message();
            assert!(!message.contains("hunter2"), "{message}");
            assert_eq!(problems[0].reason(), "InvalidRedisUrl");
        }
        let problems = render_err(kv_config(vec![kv(
            "cache",
            "redis",
            vec![lit("url", "redis:///0")],
        )]));
        assert_eq!(
            problems,
            vec![Problem::InvalidRedisUrl {
                location: "keyValueStores[cache]".into(),
                detail: "no host".into()
            }]
        );
    }

    #[test]
    fn invalid_option_values() {
        let problems = render_err(RuntimeConfig {
            key_value_stores: Some(vec![kv(
                "d",
                "aws_dynamo",
                vec![
                    lit("region", "r"),
                    lit("table", "t"),
                    lit("consistent_read", "yes"),
                ],
            )]),
            sqlite_databases: Some(vec![sql(
                "s",
                "libsql",
                vec![lit("url", "not a url"), lit("token", "t")],
            )]),
            llm_compute: Some(llm(
                "remote_http",
                vec![lit("url", "ftp://x"), lit("auth_token", "secret-value")],
            )),
            load_from_secret: None,
        });
        assert_eq!(
            problems,
            vec![
                Problem::InvalidOptionValue {
                    location: "keyValueStores[d]".into(),
                    option: "consistent_read".into(),
                    expected: "true or false"
                },
                Problem::InvalidOptionValue {
                    location: "sqliteDatabases[s]".into(),
                    option: "url".into(),
                    expected: "an absolute URL such as libsql://db.example.com"
                },
                Problem::InvalidOptionValue {
                    location: "llmCompute".into(),
                    option: "url".into(),
                    expected: "an http:// or https:// URL with a host"
                },
            ]
        );
        assert_eq!(
            problems[0].message(),
            "runtimeConfig.keyValueStores[d]: option \"consistent_read\" must be true or false"
        );
    }

    #[test]
    fn missing_references() {
        let problems = render_err(RuntimeConfig {
            key_value_stores: Some(vec![kv(
                "a",
                "redis",
                vec![secret_ref("url", "nope", "url")],
            )]),
            sqlite_databases: Some(vec![sql(
                "b",
                "libsql",
                vec![
                    lit("url", "libsql://x"),
                    secret_ref("token", "creds", "nokey"),
                ],
            )]),
            llm_compute: Some(llm(
                "remote_http",
                vec![
                    cm_ref("url", "missing-cm", "u", None),
                    cm_ref("auth_token", "settings", "nokey", Some(false)),
                ],
            )),
            load_from_secret: None,
        });
        assert_eq!(
            problems,
            vec![
                Problem::SecretNotFound {
                    name: "nope".into(),
                    used_by: "runtimeConfig.keyValueStores[a].options[url]".into()
                },
                Problem::SecretKeyNotFound {
                    name: "creds".into(),
                    key: "nokey".into(),
                    used_by: "runtimeConfig.sqliteDatabases[b].options[token]".into()
                },
                Problem::ConfigMapNotFound {
                    name: "missing-cm".into(),
                    used_by: "runtimeConfig.llmCompute.options[url]".into()
                },
                Problem::ConfigMapKeyNotFound {
                    name: "settings".into(),
                    key: "nokey".into(),
                    used_by: "runtimeConfig.llmCompute.options[auth_token]".into()
                },
            ]
        );
        assert!(problems.iter().all(Problem::is_transient));
        assert!(
            problems
                .iter()
                .all(|p| p.condition_type() == "ReferencesResolved")
        );
        assert_eq!(
            problems[1].message(),
            "Secret \"creds\" has no key \"nokey\" (referenced by runtimeConfig.sqliteDatabases[b].options[token])"
        );
    }

    #[test]
    fn malformed_option_sources() {
        let both = RuntimeConfigOption {
            name: "url".into(),
            value: Some("redis://a".into()),
            value_from: Some(Default::default()),
        };
        let neither = RuntimeConfigOption {
            name: "path".into(),
            value: None,
            value_from: None,
        };
        let empty_from = RuntimeConfigOption {
            name: "url".into(),
            value: None,
            value_from: Some(Default::default()),
        };
        let nameless = secret_ref("url", "", "k");
        let binary = secret_ref("url", "creds", "binary");
        let problems = render_err(kv_config(vec![
            kv("a", "redis", vec![both]),
            kv("b", "spin", vec![neither]),
            kv("c", "redis", vec![empty_from]),
            kv("d", "redis", vec![nameless]),
            kv("e", "redis", vec![binary]),
        ]));
        let details: Vec<_> = problems
            .iter()
            .map(|p| match p {
                Problem::InvalidReference { used_by, detail } => format!("{used_by}: {detail}"),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            details,
            vec![
                "runtimeConfig.keyValueStores[a].options[url]: set exactly one of value or valueFrom",
                "runtimeConfig.keyValueStores[b].options[path]: set exactly one of value or valueFrom",
                "runtimeConfig.keyValueStores[c].options[url]: valueFrom needs exactly one of secretKeyRef or configMapKeyRef",
                "runtimeConfig.keyValueStores[d].options[url]: secretKeyRef.name is empty",
                "runtimeConfig.keyValueStores[e].options[url]: the referenced value is not UTF-8 text",
            ]
        );
    }

    #[test]
    fn no_problem_message_contains_a_secret_value() {
        let f = Fixture::new();
        let config = RuntimeConfig {
            key_value_stores: Some(vec![
                kv(
                    "a",
                    "redis",
                    vec![
                        secret_ref("url", "creds", "bad-url"),
                        secret_ref("password", "creds", "token"),
                    ],
                ),
                kv(
                    "b",
                    "aws_dynamo",
                    vec![secret_ref("consistent_read", "creds", "token")],
                ),
            ]),
            llm_compute: Some(llm(
                "remote_http",
                vec![secret_ref("url", "creds", "token")],
            )),
            ..Default::default()
        };
        let problems = f.render(&config).expect_err("invalid");
        assert!(problems.len() >= 4, "{problems:?}");
        for p in &problems {
            let text = format!("{p} {p:?}");
            assert!(
                !text.contains("hunter2") && !text.contains("s3cr3t"),
                "{text}"
            );
        }
    }

    #[test]
    fn table_is_consistent() {
        for (i, b) in BACKENDS.iter().enumerate() {
            assert!(
                !BACKENDS[..i]
                    .iter()
                    .any(|o| o.section == b.section && o.type_ == b.type_),
                "duplicate backend {}",
                b.type_
            );
            for [x, y] in b.pairs {
                assert!(b.options.iter().any(|o| o.name == *x && !o.required), "{x}");
                assert!(b.options.iter().any(|o| o.name == *y && !o.required), "{y}");
            }
        }
    }
}
