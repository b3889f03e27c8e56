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

/// Why `spindle convert` cannot rewrite a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The input is not YAML.
    #[error("reading the manifests: {0}")]
    Parse(#[from] serde_saphyr::Error),
    /// A document's `spec.runtime-config` does not have the article's shape.
    #[error("document {index} ({name}): spec.runtime-config: {source}")]
    Shape {
        /// 1-based position in the stream.
        index: usize,
        /// `metadata.name`.
        name: String,
        /// What is wrong.
        #[source]
        source: serde_json::Error,
    },
    /// A document cannot be read as a canonical SpinApp.
    #[error("document {index} ({name}): {source}")]
    Conversion {
        /// 1-based position in the stream.
        index: usize,
        /// `metadata.name`.
        name: String,
        /// What is wrong.
        #[source]
        source: ConversionError,
    },
    /// The result could not be written as YAML (a bug).
    #[error("writing YAML: {0}")]
    Serialize(#[from] serde_saphyr::SerializeError),
}

/// `spindle convert`: rewrite every `core.spinoperator.dev` document of a
/// multi-document YAML stream (and the items of a `List`) into its
/// `core.spinkube.dev` twin; other documents pass unchanged. Fields the
/// apiserver sets (`status`, `uid`, `resourceVersion`, ...) are dropped, so
/// the output of `kubectl get -o yaml` converts into something to apply.
pub fn convert_manifests(yaml: &str) -> Result<String, ConvertError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml)?;
    let mut out = String::new();
    for (i, doc) in docs.into_iter().filter(|d| !d.is_null()).enumerate() {
        let doc = convert_document(doc, i + 1)?;
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&doc)?);
    }
    Ok(out)
}

fn convert_document(mut doc: Value, index: usize) -> Result<Value, ConvertError> {
    if let Some(items) = doc.get_mut("items").and_then(Value::as_array_mut) {
        for item in items.iter_mut() {
            *item = convert_document(std::mem::take(item), index)?;
        }
        return Ok(doc);
    }
    let legacy_version = format!("{LEGACY_GROUP}/v1alpha1");
    if doc.get("apiVersion").and_then(Value::as_str) != Some(legacy_version.as_str()) {
        return Ok(doc);
    }
    doc["apiVersion"] = json!(format!("{}/v1alpha1", super::GROUP));
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>")
        .to_owned();
    if let Some(obj) = doc.as_object_mut() {
        obj.remove("status");
    }
    if let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in [
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "managedFields",
            "selfLink",
        ] {
            meta.remove(field);
        }
        if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            // It holds the old apiVersion; kubectl writes a new one on apply.
            annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
    let is_app = doc.get("kind").and_then(Value::as_str) == Some("SpinApp");
    let Some(spec) = doc.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(doc);
    };
    let Some(article) = spec.remove("runtime-config").filter(|_| is_app) else {
        return Ok(doc);
    };
    let article: ArticleRuntimeConfig =
        serde_json::from_value(article).map_err(|source| ConvertError::Shape {
            index,
            name: name.clone(),
            source,
        })?;
    if spec.contains_key("runtimeConfig") {
        return Err(ConvertError::Conversion {
            index,
            name,
            source: ConversionError::BothRuntimeConfigForms,
        });
    }
    let converted = LegacySpinAppSpec {
        canonical: SpinAppSpec::default(),
        article_runtime_config: Some(article),
    }
    .to_canonical()
    .map_err(|source| ConvertError::Conversion {
        index,
        name: name.clone(),
        source,
    })?;
    let runtime_config =
        serde_json::to_value(converted.runtime_config).map_err(|source| ConvertError::Shape {
            index,
            name,
            source,
        })?;
    spec.insert("runtimeConfig".into(), runtime_config);
    Ok(doc)
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
    fn convert_rewrites_legacy_documents_and_keeps_others() {
        let input = format!(
            "{ARTICLE}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\n---\n\
             apiVersion: core.spinoperator.dev/v1alpha1\nkind: SpinApp\n\
             metadata: {{name: b, uid: u1, resourceVersion: '7'}}\n\
             spec: {{image: 'x:1', executor: e}}\nstatus: {{readyReplicas: 1}}\n"
        );
        let out = convert_manifests(&input).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&out).unwrap();
        assert_eq!(docs.len(), 3);
        let app: SpinApp = serde_json::from_value(docs[0].clone()).unwrap();
        let legacy: LegacySpinApp = serde_saphyr::from_str(ARTICLE).unwrap();
        assert_eq!(app.spec, legacy.to_canonical().unwrap().spec);
        assert_eq!(docs[0]["apiVersion"], "core.spinkube.dev/v1alpha1");
        assert_eq!(docs[1]["kind"], "ConfigMap");
        assert_eq!(docs[2]["apiVersion"], "core.spinkube.dev/v1alpha1");
        assert_eq!(docs[2]["metadata"], json!({"name": "b"}));
        assert!(docs[2].get("status").is_none());
        // Idempotent: canonical input comes out unchanged.
        assert_eq!(convert_manifests(&out).unwrap(), out);
    }

    #[test]
    fn convert_reports_the_document_it_cannot_rewrite() {
        let both = ARTICLE.replace(
            "  runtime-config:",
            "  runtimeConfig: {}\n  runtime-config:",
        );
        let err = convert_manifests(&both).unwrap_err().to_string();
        assert!(err.contains("document 1 (inference-edge)"), "{err}");
        assert!(err.contains("not both"), "{err}");
        let no_type = ARTICLE.replace("        type: redis\n", "");
        let err = convert_manifests(&no_type).unwrap_err().to_string();
        assert!(err.contains("needs a type"), "{err}");
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
