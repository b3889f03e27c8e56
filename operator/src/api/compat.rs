//! `core.spinoperator.dev/v1alpha1` SpinApp: spin-operator's group before its
//! v0.4 rename, still used by many published posts, including the article
//! Spindle started from.
//!
//! The spec is the canonical [`SpinAppSpec`] plus the article's map form of
//! runtime config (`runtime-config: {key_value_stores: {default: {type, url}}}`).
//! Its CRD is derived from the canonical one, so every CEL rule and message is
//! identical by construction, and the reconciler reads it through
//! [`LegacySpinApp::to_canonical`] into the same model.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    KeyValueStoreConfig, LlmComputeConfig, RuntimeConfig, RuntimeConfigOption, SpinApp,
    SpinAppSpec, SqliteDatabaseConfig,
};

/// The legacy group.
pub const LEGACY_GROUP: &str = "core.spinoperator.dev";

/// A SpinApp in the legacy `core.spinoperator.dev` group.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "core.spinoperator.dev",
    version = "v1alpha1",
    kind = "SpinApp",
    root = "LegacySpinApp",
    namespaced,
    status = "super::SpinAppStatus",
    derive = "PartialEq",
    derive = "Default",
    schema = "disabled"
)]
pub struct LegacySpinAppSpec {
    /// Every canonical field, with the same JSON names.
    #[serde(flatten)]
    pub canonical: SpinAppSpec,
    /// The article's runtime config: tables keyed by store name.
    #[serde(
        rename = "runtime-config",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub article_runtime_config: Option<ArticleRuntimeConfig>,
}

/// `runtime-config` as written in the article: Spin's runtime-config.toml
/// tables in YAML, each `{type: <backend>, <option>: <value>...}`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ArticleRuntimeConfig {
    /// Key-value stores by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub key_value_stores: BTreeMap<String, BTreeMap<String, Value>>,
    /// SQLite databases by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sqlite_databases: BTreeMap<String, BTreeMap<String, Value>>,
    /// The LLM compute backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_compute: Option<BTreeMap<String, Value>>,
}

/// Why a legacy object cannot be read as a canonical one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConversionError {
    /// Both the article's `runtime-config` and `runtimeConfig` are set.
    #[error("set either runtime-config (article form) or runtimeConfig, not both")]
    BothRuntimeConfigForms,
    /// A table has no `type`.
    #[error("runtime-config.{table}.{name} needs a type, e.g. redis")]
    MissingType { table: &'static str, name: String },
    /// An option value is not a scalar.
    #[error("runtime-config.{table}.{name}.{option} must be a string")]
    NonScalarOption {
        table: &'static str,
        name: String,
        option: String,
    },
}

impl LegacySpinApp {
    /// The canonical twin of this object: same metadata name/namespace/labels,
    /// spec converted. The reconciler feeds this to the model.
    pub fn to_canonical(&self) -> Result<SpinApp, ConversionError> {
        let spec = self.spec.to_canonical()?;
        let mut app = SpinApp::new(self.metadata.name.as_deref().unwrap_or_default(), spec);
        app.metadata = self.metadata.clone();
        app.status = self.status.clone();
        Ok(app)
    }
}

impl LegacySpinAppSpec {
    /// Converts the article's map form into the canonical list form.
    pub fn to_canonical(&self) -> Result<SpinAppSpec, ConversionError> {
        let mut spec = self.canonical.clone();
        let Some(article) = &self.article_runtime_config else {
            return Ok(spec);
        };
        if spec.runtime_config.is_some() {
            return Err(ConversionError::BothRuntimeConfigForms);
        }
        let mut rc = RuntimeConfig::default();
        if !article.key_value_stores.is_empty() {
            let mut stores = Vec::new();
            for (name, table) in &article.key_value_stores {
                let (type_, options) = split_table("key_value_stores", name, table)?;
                stores.push(KeyValueStoreConfig {
                    name: name.clone(),
                    type_,
                    options,
                });
            }
            rc.key_value_stores = Some(stores);
        }
        if !article.sqlite_databases.is_empty() {
            let mut dbs = Vec::new();
            for (name, table) in &article.sqlite_databases {
                let (type_, options) = split_table("sqlite_databases", name, table)?;
                dbs.push(SqliteDatabaseConfig {
                    name: name.clone(),
                    type_,
                    options,
                });
            }
            rc.sqlite_databases = Some(dbs);
        }
        if let Some(table) = &article.llm_compute {
            let (type_, options) = split_table("llm_compute", "llm_compute", table)?;
            rc.llm_compute = Some(LlmComputeConfig { type_, options });
        }
        spec.runtime_config = Some(rc);
        Ok(spec)
    }
}

fn split_table(
    table: &'static str,
    name: &str,
    entries: &BTreeMap<String, Value>,
) -> Result<(String, Option<Vec<RuntimeConfigOption>>), ConversionError> {
    let mut type_ = None;
    let mut options = Vec::new();
    for (key, value) in entries {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                return Err(ConversionError::NonScalarOption {
                    table,
                    name: name.to_owned(),
                    option: key.clone(),
                });
            }
        };
        if key == "type" {
            type_ = Some(text);
        } else {
            options.push(RuntimeConfigOption {
                name: key.clone(),
                value: Some(text),
                value_from: None,
            });
        }
    }
    let type_ = type_.ok_or_else(|| ConversionError::MissingType {
        table,
        name: name.to_owned(),
    })?;
    Ok((type_, (!options.is_empty()).then_some(options)))
}

/// The legacy CRD: the canonical schema (so every rule and message is the
/// same), in the old group, plus the article's `runtime-config` field.
pub fn legacy_crd() -> CustomResourceDefinition {
    let mut crd = serde_json::to_value(SpinApp::crd()).expect("CRDs serialize");
    crd["metadata"]["name"] = json!(format!("spinapps.{LEGACY_GROUP}"));
    crd["spec"]["group"] = json!(LEGACY_GROUP);
    // No short names or categories: `kubectl get spinapps` keeps meaning the
    // canonical group and `kubectl get spinkube` lists each object once.
    crd["spec"]["names"] = json!({"kind": "SpinApp", "plural": "spinapps", "singular": "spinapp", "listKind": "SpinAppList"});
    let version = &mut crd["spec"]["versions"][0];
    version["schema"]["openAPIV3Schema"]["description"] = json!(
        "SpinApp in spin-operator's pre-v0.4 group, kept so published manifests apply unchanged. \
         Spindle runs it exactly like a core.spinkube.dev SpinApp; `spindle convert` rewrites it."
    );
    let spec = &mut version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let table = json!({
        "type": "object",
        "description": "A runtime-config table: `type` (the backend, e.g. redis) plus its options (e.g. url).",
        // Typed values keep the schema structural, which CEL needs; TOML
        // booleans and numbers are written as strings ("true", "5").
        "additionalProperties": {"type": "string"},
        "x-kubernetes-validations": [{"rule": "'type' in self", "message": "every runtime-config table needs a type, e.g. redis"}]
    });
    spec["properties"]["runtime-config"] = json!({
        "type": "object",
        "nullable": true,
        "description": "Runtime config in the article's form: Spin runtime-config.toml tables written as YAML, e.g. key_value_stores: {default: {type: redis, url: redis://redis:6379}}. Use either this or runtimeConfig.",
        "properties": {
            "key_value_stores": {"type": "object", "description": "Key-value stores by name.", "additionalProperties": table.clone()},
            "sqlite_databases": {"type": "object", "description": "SQLite databases by name.", "additionalProperties": table.clone()},
            "llm_compute": table,
        }
    });
    let rules = spec["x-kubernetes-validations"].as_array_mut();
    let rule = json!({"rule": "!(has(self.runtimeConfig) && has(self.runtime__dash__config))", "message": "set either runtime-config (article form) or runtimeConfig, not both"});
    match rules {
        Some(rules) => rules.push(rule),
        None => spec["x-kubernetes-validations"] = json!([rule]),
    }
    serde_json::from_value(crd).expect("the legacy CRD is a valid CustomResourceDefinition")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARTICLE: &str = r#"
apiVersion: core.spinoperator.dev/v1alpha1
kind: SpinApp
metadata:
  name: inference-edge
spec:
  image: "ghcr.io/my-org/inference:v1.0"
  replicas: 3
  executor: containerd-shim-spin
  runtime-config:
    key_value_stores:
      default:
        type: redis
        url: redis://redis:6379
"#;

    #[test]
    fn article_manifest_converts_to_list_form() {
        let legacy: LegacySpinApp = serde_saphyr::from_str(ARTICLE).unwrap();
        let app = legacy.to_canonical().unwrap();
        assert_eq!(app.spec.image, "ghcr.io/my-org/inference:v1.0");
        assert_eq!(app.spec.replicas, Some(3));
        assert_eq!(
            app.spec.runtime_config,
            Some(RuntimeConfig {
                key_value_stores: Some(vec![KeyValueStoreConfig {
                    name: "default".into(),
                    type_: "redis".into(),
                    options: Some(vec![RuntimeConfigOption {
                        name: "url".into(),
                        value: Some("redis://redis:6379".into()),
                        value_from: None
                    }]),
                }]),
                ..Default::default()
            })
        );
    }

    #[test]
    fn both_forms_are_rejected() {
        let mut legacy: LegacySpinApp = serde_saphyr::from_str(ARTICLE).unwrap();
        legacy.spec.canonical.runtime_config = Some(RuntimeConfig::default());
        assert_eq!(
            legacy.to_canonical().unwrap_err(),
            ConversionError::BothRuntimeConfigForms
        );
    }

    #[test]
    fn table_without_type_is_an_error() {
        let mut legacy: LegacySpinApp = serde_saphyr::from_str(ARTICLE).unwrap();
        let store = legacy
            .spec
            .article_runtime_config
            .as_mut()
            .unwrap()
            .key_value_stores
            .get_mut("default")
            .unwrap();
        store.remove("type");
        assert_eq!(
            legacy.to_canonical().unwrap_err(),
            ConversionError::MissingType {
                table: "key_value_stores",
                name: "default".into()
            }
        );
    }

    #[test]
    fn scalar_options_become_strings_and_objects_are_rejected() {
        let mut legacy: LegacySpinApp = serde_saphyr::from_str(ARTICLE).unwrap();
        let store = legacy
            .spec
            .article_runtime_config
            .as_mut()
            .unwrap()
            .key_value_stores
            .get_mut("default")
            .unwrap();
        store.insert("consistent_read".into(), json!(true));
        let spec = legacy.spec.to_canonical().unwrap();
        let opts = spec.runtime_config.unwrap().key_value_stores.unwrap()[0]
            .options
            .clone()
            .unwrap();
        assert!(
            opts.iter()
                .any(|o| o.name == "consistent_read" && o.value.as_deref() == Some("true"))
        );
        let store = legacy
            .spec
            .article_runtime_config
            .as_mut()
            .unwrap()
            .key_value_stores
            .get_mut("default")
            .unwrap();
        store.insert("nested".into(), json!({"a": 1}));
        assert!(matches!(
            legacy.spec.to_canonical(),
            Err(ConversionError::NonScalarOption { .. })
        ));
    }

    #[test]
    fn legacy_crd_keeps_every_canonical_rule() {
        let canonical = serde_json::to_value(SpinApp::crd()).unwrap();
        let legacy = serde_json::to_value(legacy_crd()).unwrap();
        let path =
            "/spec/versions/0/schema/openAPIV3Schema/properties/spec/x-kubernetes-validations";
        let c = canonical.pointer(path).unwrap().as_array().unwrap();
        let l = legacy.pointer(path).unwrap().as_array().unwrap();
        assert_eq!(
            &l[..c.len()],
            &c[..],
            "canonical rules come first, unchanged"
        );
        assert_eq!(l.len(), c.len() + 1);
        assert_eq!(legacy["spec"]["group"], LEGACY_GROUP);
    }
}
