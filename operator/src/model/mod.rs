//! A validated, normalized app: everything [`crate::render`] needs, with
//! defaults applied and cross-object checks done.
//!
//! [`App::build`] reads only what the controller fetched ([`Inputs`]); it does
//! no I/O. Every problem found is returned at once so the user can fix them
//! together.

mod hash;
pub mod problem;
pub mod quantity;
mod refs;
pub mod runtime_config;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, EnvVarSource, LocalObjectReference, ResourceRequirements, Secret,
    Toleration, Volume, VolumeMount,
};

use crate::api::{HealthProbe, SpinApp, SpinAppExecutor};
use hash::{ReferencedKey, RuntimeConfigMaterial, config_hash};
pub use problem::{Problem, Problems, condition};
use refs::{RefError, config_map_value, secret_value};

/// Key of runtime-config.toml in the generated (or user's) Secret.
pub const RUNTIME_CONFIG_KEY: &str = "runtime-config.toml";
/// Key of the CA bundle in the CA Secret.
pub const CA_CERT_KEY: &str = "ca-certificates.crt";
/// CA Secret name when the executor has installDefaultCACerts and no caCertSecret.
pub const DEFAULT_CA_SECRET: &str = "spin-ca";
/// Port the app listens on when spec.port is unset (spin-operator's fixed port).
pub const DEFAULT_PORT: i32 = 80;
/// ServiceAccount when spec.serviceAccountName is unset.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// Pod template annotation whose change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "spindle.spinkube.dev/config-hash";
/// Where the shim reads the runtime config (fixed; there is no flag).
pub const RUNTIME_CONFIG_PATH: &str = "/runtime-config.toml";
/// Where the CA bundle is mounted.
pub const CA_CERT_PATH: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Prefix of Spin variables in the environment (Spin's env provider).
pub const VARIABLE_ENV_PREFIX: &str = "SPIN_VARIABLE_";

/// Name of the runtime-config Secret Spindle generates for an app.
pub fn runtime_config_secret_name(app: &str) -> String {
    format!("{app}-runtime-config")
}

/// What the controller reads from the cluster before building the model.
pub struct Inputs<'a> {
    /// The app.
    pub app: &'a SpinApp,
    /// The executor named by `spec.executor`; `None` = not found in the app's namespace.
    pub executor: Option<&'a SpinAppExecutor>,
    /// Whether the executor's RuntimeClass exists; `None` = not checked.
    pub runtime_class_exists: Option<bool>,
    /// The referenced Secrets that exist, by name.
    pub secrets: &'a BTreeMap<String, Secret>,
    /// The referenced ConfigMaps that exist, by name.
    pub config_maps: &'a BTreeMap<String, ConfigMap>,
}

/// Names of the objects an app references, so the controller can fetch and watch them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    /// Secret names.
    pub secrets: BTreeSet<String>,
    /// ConfigMap names.
    pub config_maps: BTreeSet<String>,
}

/// The Secrets and ConfigMaps `app` reads: runtime-config option `valueFrom`s
/// (or `loadFromSecret`, which replaces them) and variable `valueFrom`s.
/// The executor's CA Secret is not included (the executor is not known here).
pub fn references(app: &SpinApp) -> References {
    let mut refs = References::default();
    let mut add_secret = |name: &str| {
        if !name.is_empty() {
            refs.secrets.insert(name.to_owned());
        }
    };
    let spec = &app.spec;
    if let Some(rc) = &spec.runtime_config {
        match rc.load_from_secret.as_deref() {
            Some(name) if !name.is_empty() => add_secret(name),
            _ => {
                let options = rc
                    .key_value_stores
                    .iter()
                    .flatten()
                    .flat_map(|s| s.options.iter().flatten())
                    .chain(
                        rc.sqlite_databases
                            .iter()
                            .flatten()
                            .flat_map(|s| s.options.iter().flatten()),
                    )
                    .chain(
                        rc.llm_compute
                            .iter()
                            .flat_map(|l| l.options.iter().flatten()),
                    );
                for from in options.filter_map(|o| o.value_from.as_ref()) {
                    if let Some(s) = &from.secret_key_ref {
                        add_secret(&s.name);
                    }
                    if let Some(c) = from
                        .config_map_key_ref
                        .as_ref()
                        .filter(|c| !c.name.is_empty())
                    {
                        refs.config_maps.insert(c.name.clone());
                    }
                }
            }
        }
    }
    for from in spec
        .variables
        .iter()
        .flatten()
        .filter_map(|v| v.value_from.as_ref())
    {
        if let Some(s) = &from.secret_key_ref {
            add_secret(&s.name);
        }
        if let Some(c) = from
            .config_map_key_ref
            .as_ref()
            .filter(|c| !c.name.is_empty())
        {
            refs.config_maps.insert(c.name.clone());
        }
    }
    refs
}

/// How the app's pods are run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutorMode {
    /// containerd-shim-spin through a RuntimeClass.
    Shim { runtime_class_name: String },
    /// A container running `spin up` ("spintainer").
    Spintainer { spin_image: String },
    /// The executor has `createDeployment: false`: only the Service is made.
    NoDeployment,
}

/// Who owns the Deployment's replica count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replicas {
    /// Spindle sets it (spec.replicas, default 1).
    Fixed(i32),
    /// An autoscaler does: the Deployment's replicas are left unset.
    Autoscaled,
}

/// An HTTP GET probe on the app port, with spin-operator's defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProbe {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub initial_delay_seconds: i32,
    pub timeout_seconds: i32,
    pub period_seconds: i32,
    pub success_threshold: i32,
    pub failure_threshold: i32,
}

impl HttpProbe {
    fn from_spec(probe: &HealthProbe) -> Option<Self> {
        // spin-operator makes no probe without httpGet; keep that so its
        // manifests behave the same.
        let get = probe.http_get.as_ref()?;
        Some(Self {
            path: get.path.clone(),
            headers: get
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
            initial_delay_seconds: probe.initial_delay_seconds.unwrap_or(10),
            timeout_seconds: probe.timeout_seconds.unwrap_or(1),
            period_seconds: probe.period_seconds.unwrap_or(10),
            success_threshold: probe.success_threshold.unwrap_or(1),
            failure_threshold: probe.failure_threshold.unwrap_or(3),
        })
    }
}

/// A Spin variable as an environment variable.
#[derive(Debug, Clone, PartialEq)]
pub struct Variable {
    /// `SPIN_VARIABLE_<UPPER(name)>`.
    pub env_name: String,
    pub value: VariableValue,
}

/// Where a variable's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum VariableValue {
    Literal(String),
    /// Resolved by the kubelet. Boxed: it is large and rare.
    From(Box<EnvVarSource>),
}

/// Where the pods' runtime-config.toml comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum RuntimeConfigSource {
    /// Spindle renders it into the Secret `<app>-runtime-config`.
    Generated { toml: String },
    /// The user's Secret (`loadFromSecret`) is mounted as-is.
    FromSecret { name: String },
}

// The TOML holds values read from Secrets: keep it out of Debug output (logs).
impl fmt::Debug for RuntimeConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Generated { toml } => f
                .debug_struct("Generated")
                .field("toml", &format_args!("<{} bytes redacted>", toml.len()))
                .finish(),
            Self::FromSecret { name } => f.debug_struct("FromSecret").field("name", name).finish(),
        }
    }
}

/// A validated, normalized SpinApp.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub generation: Option<i64>,
    /// OCI reference of the app. A later step may pin it to a digest.
    pub image: String,
    /// Name of the SpinAppExecutor (for status `activeScheduler`).
    pub executor_name: String,
    pub executor: ExecutorMode,
    /// `OTEL_EXPORTER_OTLP_*` variables from the executor, in a fixed order.
    pub otel_env: Vec<(String, String)>,
    /// Secret holding `ca-certificates.crt`, mounted over the system bundle.
    pub ca_cert_secret: Option<String>,
    pub replicas: Replicas,
    /// Container port the app listens on.
    pub port: i32,
    pub readiness_probe: Option<HttpProbe>,
    pub liveness_probe: Option<HttpProbe>,
    pub resources: Option<ResourceRequirements>,
    /// `SPIN_MAX_INSTANCE_MEMORY` in bytes.
    pub invocation_memory_bytes: Option<u64>,
    /// In spec order.
    pub variables: Vec<Variable>,
    /// Components to run (`SPIN_COMPONENTS_TO_RETAIN` / `--component-id`); empty = all.
    pub components: Vec<String>,
    pub runtime_config: RuntimeConfigSource,
    /// See [`CONFIG_HASH_ANNOTATION`].
    pub config_hash: String,
    pub pod_labels: BTreeMap<String, String>,
    pub pod_annotations: BTreeMap<String, String>,
    pub deployment_annotations: BTreeMap<String, String>,
    pub service_annotations: BTreeMap<String, String>,
    pub volumes: Vec<Volume>,
    pub volume_mounts: Vec<VolumeMount>,
    pub image_pull_secrets: Vec<LocalObjectReference>,
    pub service_account_name: String,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub affinity: Option<Affinity>,
}

impl App {
    /// Validates and normalizes the app, or returns every problem found.
    pub fn build(inputs: &Inputs<'_>) -> Result<App, Problems> {
        let mut problems = Vec::new();
        let app = inputs.app;
        let spec = &app.spec;
        let meta = &app.metadata;

        let mut required_meta = |field: &'static str, value: Option<&String>| match value {
            Some(v) if !v.is_empty() => v.clone(),
            _ => {
                problems.push(Problem::IncompleteMetadata { field });
                String::new()
            }
        };
        let name = required_meta("name", meta.name.as_ref());
        let namespace = required_meta("namespace", meta.namespace.as_ref());
        let uid = required_meta("uid", meta.uid.as_ref());

        // ----- executor -----
        let executor = executor_mode(inputs, &namespace, &mut problems);
        let deployment_config = inputs
            .executor
            .and_then(|e| e.spec.deployment_config.as_ref());
        let otel_env = deployment_config
            .and_then(|d| d.otel.as_ref())
            .map(|o| {
                [
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", &o.exporter_otlp_endpoint),
                    (
                        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                        &o.exporter_otlp_traces_endpoint,
                    ),
                    (
                        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                        &o.exporter_otlp_metrics_endpoint,
                    ),
                    (
                        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                        &o.exporter_otlp_logs_endpoint,
                    ),
                ]
                .into_iter()
                .filter_map(|(k, v)| {
                    v.as_ref()
                        .filter(|v| !v.is_empty())
                        .map(|v| (k.to_owned(), v.clone()))
                })
                .collect()
            })
            .unwrap_or_default();
        let ca_cert_secret = deployment_config.and_then(|d| match d.ca_cert_secret.as_deref() {
            Some(s) if !s.is_empty() => Some(s.to_owned()),
            _ if d.install_default_ca_certs == Some(true) => Some(DEFAULT_CA_SECRET.to_owned()),
            _ => None,
        });

        let deployment_annotations = spec.deployment_annotations.clone().unwrap_or_default();
        let pod_annotations = spec.pod_annotations.clone().unwrap_or_default();
        if executor == Some(ExecutorMode::NoDeployment) {
            let mut fields = Vec::new();
            if !deployment_annotations.is_empty() {
                fields.push("deploymentAnnotations");
            }
            if !pod_annotations.is_empty() {
                fields.push("podAnnotations");
            }
            if !fields.is_empty() {
                problems.push(Problem::AnnotationsWithoutDeployment {
                    executor: spec.executor.clone(),
                    fields,
                });
            }
        }

        // ----- plain spec fields -----
        if spec.image.trim().is_empty() {
            problems.push(Problem::InvalidImage);
        }
        let replicas = if spec.enable_autoscaling == Some(true) {
            if spec.replicas.is_some() {
                problems.push(Problem::ReplicasWithAutoscaling);
            }
            Replicas::Autoscaled
        } else {
            let n = spec.replicas.unwrap_or(1);
            if n < 0 {
                problems.push(Problem::InvalidReplicas { replicas: n });
            }
            Replicas::Fixed(n)
        };
        let port = spec.port.unwrap_or(DEFAULT_PORT);
        if !(1..=65535).contains(&port) {
            problems.push(Problem::InvalidPort { port });
        }
        let checks = spec.checks.as_ref();
        let readiness_probe = checks
            .and_then(|c| c.readiness.as_ref())
            .and_then(HttpProbe::from_spec);
        let liveness_probe = checks
            .and_then(|c| c.liveness.as_ref())
            .and_then(HttpProbe::from_spec);
        let resources = spec.resources.as_ref().map(|r| ResourceRequirements {
            limits: r.limits.clone(),
            requests: r.requests.clone(),
            ..Default::default()
        });
        let invocation_memory_bytes = invocation_memory(spec, &mut problems);

        let components = spec.components.clone().unwrap_or_default();
        for c in &components {
            if c.is_empty() || c.contains(',') {
                problems.push(Problem::InvalidComponentName { name: c.clone() });
            }
        }

        let pod_labels = spec.pod_labels.clone().unwrap_or_default();
        for key in pod_labels
            .keys()
            .filter(|k| k.starts_with("core.spinkube.dev/"))
        {
            problems.push(Problem::ReservedPodLabel { key: key.clone() });
        }
        if pod_annotations.contains_key(CONFIG_HASH_ANNOTATION) {
            problems.push(Problem::ReservedPodAnnotation {
                key: CONFIG_HASH_ANNOTATION.to_owned(),
            });
        }

        let volumes = spec.volumes.clone().unwrap_or_default();
        let volume_mounts = spec.volume_mounts.clone().unwrap_or_default();
        for v in volumes.iter().filter(|v| v.name.starts_with("spin-")) {
            problems.push(Problem::ReservedVolumeName {
                field: "volumes",
                name: v.name.clone(),
            });
        }
        for m in &volume_mounts {
            if m.name.starts_with("spin-") {
                problems.push(Problem::ReservedVolumeName {
                    field: "volumeMounts",
                    name: m.name.clone(),
                });
            }
            let path = m.mount_path.trim_end_matches('/');
            if path == RUNTIME_CONFIG_PATH || (ca_cert_secret.is_some() && path == CA_CERT_PATH) {
                problems.push(Problem::ReservedMountPath {
                    path: m.mount_path.clone(),
                });
            }
        }

        // ----- variables -----
        let mut hashed_keys = Vec::new();
        let variables = variables(inputs, &mut hashed_keys, &mut problems);

        // ----- runtime config -----
        let rc = spec.runtime_config.as_ref();
        let (runtime_config, loaded_content) = match rc.and_then(|r| r.load_from_secret.as_deref())
        {
            Some(secret) if !secret.is_empty() => {
                let content = match secret_value(inputs.secrets, secret, RUNTIME_CONFIG_KEY) {
                    Ok(c) => c,
                    Err(e) => {
                        let used_by = "runtimeConfig.loadFromSecret".to_owned();
                        problems.push(match e {
                            RefError::ObjectNotFound => Problem::SecretNotFound {
                                name: secret.to_owned(),
                                used_by,
                            },
                            RefError::KeyNotFound => Problem::SecretKeyNotFound {
                                name: secret.to_owned(),
                                key: RUNTIME_CONFIG_KEY.to_owned(),
                                used_by,
                            },
                        });
                        &[][..]
                    }
                };
                (
                    RuntimeConfigSource::FromSecret {
                        name: secret.to_owned(),
                    },
                    content,
                )
            }
            _ => {
                let sources = runtime_config::Sources {
                    secrets: inputs.secrets,
                    config_maps: inputs.config_maps,
                };
                match runtime_config::render_toml(rc, sources) {
                    Ok(toml) => (RuntimeConfigSource::Generated { toml }, &[][..]),
                    Err(mut p) => {
                        problems.append(&mut p);
                        (
                            RuntimeConfigSource::Generated {
                                toml: String::new(),
                            },
                            &[][..],
                        )
                    }
                }
            }
        };

        if let Some(problems) = Problems::from_vec(problems) {
            return Err(problems);
        }

        let material = match &runtime_config {
            RuntimeConfigSource::Generated { toml } => RuntimeConfigMaterial::Generated(toml),
            RuntimeConfigSource::FromSecret { name } => RuntimeConfigMaterial::FromSecret {
                name,
                content: loaded_content,
            },
        };
        let config_hash = config_hash(material, &hashed_keys);

        Ok(App {
            name,
            namespace,
            uid,
            generation: meta.generation,
            image: spec.image.clone(),
            executor_name: spec.executor.clone(),
            // Some whenever there were no problems.
            executor: executor.unwrap_or(ExecutorMode::NoDeployment),
            otel_env,
            ca_cert_secret,
            replicas,
            port,
            readiness_probe,
            liveness_probe,
            resources,
            invocation_memory_bytes,
            variables,
            components,
            runtime_config,
            config_hash,
            pod_labels,
            pod_annotations,
            deployment_annotations,
            service_annotations: spec.service_annotations.clone().unwrap_or_default(),
            volumes,
            volume_mounts,
            image_pull_secrets: spec.image_pull_secrets.clone().unwrap_or_default(),
            service_account_name: spec
                .service_account_name
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.to_owned()),
            node_selector: spec.node_selector.clone().unwrap_or_default(),
            tolerations: spec.tolerations.clone().unwrap_or_default(),
            affinity: spec.affinity.clone(),
        })
    }
}

/// The executor mode, or `None` (with a problem recorded) when unusable.
fn executor_mode(
    inputs: &Inputs<'_>,
    namespace: &str,
    problems: &mut Vec<Problem>,
) -> Option<ExecutorMode> {
    let name = &inputs.app.spec.executor;
    let Some(executor) = inputs.executor else {
        problems.push(Problem::MissingExecutor {
            executor: name.clone(),
            namespace: namespace.to_owned(),
        });
        return None;
    };
    if !executor.spec.create_deployment {
        return Some(ExecutorMode::NoDeployment);
    }
    let config = executor.spec.deployment_config.as_ref();
    let non_empty = |v: Option<&String>| v.filter(|s| !s.is_empty()).cloned();
    let runtime_class = non_empty(config.and_then(|c| c.runtime_class_name.as_ref()));
    let spin_image = non_empty(config.and_then(|c| c.spin_image.as_ref()));
    match (runtime_class, spin_image) {
        (Some(runtime_class_name), None) => {
            if inputs.runtime_class_exists == Some(false) {
                problems.push(Problem::RuntimeClassNotFound {
                    executor: name.clone(),
                    runtime_class: runtime_class_name,
                });
                return None;
            }
            Some(ExecutorMode::Shim { runtime_class_name })
        }
        (None, Some(spin_image)) => Some(ExecutorMode::Spintainer { spin_image }),
        (Some(_), Some(_)) => {
            problems.push(Problem::ConflictingDeploymentConfig {
                executor: name.clone(),
            });
            None
        }
        (None, None) => {
            problems.push(Problem::ExecutorHasNoDeploymentConfig {
                executor: name.clone(),
            });
            None
        }
    }
}

/// `invocationLimits.memory` in bytes, checked against the memory limit, or
/// the request when there is no limit.
fn invocation_memory(spec: &crate::api::SpinAppSpec, problems: &mut Vec<Problem>) -> Option<u64> {
    let raw = spec.invocation_limits.as_ref()?.get("memory")?;
    let parse = |field: String, value: &str, problems: &mut Vec<Problem>| {
        match quantity::parse_bytes(value) {
            Ok(b) => Some(b),
            Err(e) => {
                problems.push(Problem::InvalidQuantity {
                    field,
                    value: value.to_owned(),
                    detail: e.to_string(),
                });
                None
            }
        }
    };
    let bytes = parse("spec.invocationLimits.memory".to_owned(), raw, problems)?;
    let resources = spec.resources.as_ref();
    let bound = [
        ("limits", resources.and_then(|r| r.limits.as_ref())),
        ("requests", resources.and_then(|r| r.requests.as_ref())),
    ]
    .into_iter()
    .find_map(|(kind, list)| list.and_then(|l| l.get("memory")).map(|q| (kind, q)));
    if let Some((kind, quantity)) = bound {
        let field = if kind == "limits" {
            "resources.limits.memory"
        } else {
            "resources.requests.memory"
        };
        let bound_bytes = parse(format!("spec.{field}"), &quantity.0, problems)?;
        if bytes > bound_bytes {
            problems.push(Problem::InvocationMemoryExceedsLimit {
                invocation: raw.clone(),
                bound_field: field,
                bound: quantity.0.clone(),
            });
            return None;
        }
    }
    Some(bytes)
}

/// Normalized variables; records the Secret/ConfigMap keys they read for the hash.
fn variables<'a>(
    inputs: &Inputs<'a>,
    hashed: &mut Vec<ReferencedKey<'a>>,
    problems: &mut Vec<Problem>,
) -> Vec<Variable> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for var in inputs.app.spec.variables.iter().flatten() {
        let name = &var.name;
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            problems.push(Problem::InvalidVariableName { name: name.clone() });
            continue;
        }
        let env_name = format!("{VARIABLE_ENV_PREFIX}{}", name.to_ascii_uppercase());
        if !seen.insert(env_name.clone()) {
            problems.push(Problem::DuplicateVariable { name: name.clone() });
            continue;
        }
        let used_by = format!("variables[{name}]");
        let value = match (&var.value, &var.value_from) {
            (Some(_), Some(_)) => {
                problems.push(Problem::InvalidVariable { name: name.clone() });
                continue;
            }
            (None, Some(from)) => {
                if let Some(s) = &from.secret_key_ref {
                    let found = secret_value(inputs.secrets, &s.name, &s.key);
                    let r = KeyRef {
                        kind: "Secret",
                        name: &s.name,
                        key: &s.key,
                        optional: s.optional,
                        found,
                    };
                    check_ref(r, &used_by, hashed, problems);
                }
                if let Some(c) = &from.config_map_key_ref {
                    let found = config_map_value(inputs.config_maps, &c.name, &c.key);
                    let r = KeyRef {
                        kind: "ConfigMap",
                        name: &c.name,
                        key: &c.key,
                        optional: c.optional,
                        found,
                    };
                    check_ref(r, &used_by, hashed, problems);
                }
                VariableValue::From(Box::new(from.clone()))
            }
            // spin-operator passes an unset value through as "".
            (value, None) => VariableValue::Literal(value.clone().unwrap_or_default()),
        };
        out.push(Variable { env_name, value });
    }
    out
}

/// A Secret/ConfigMap key read by an env var, and what was found.
struct KeyRef<'a> {
    kind: &'static str,
    name: &'a str,
    key: &'a str,
    optional: Option<bool>,
    found: Result<&'a [u8], RefError>,
}

/// Reports a missing non-optional key the kubelet would fail on, and records
/// the key (present or absent) for the config hash.
fn check_ref<'a>(
    r: KeyRef<'a>,
    used_by: &str,
    hashed: &mut Vec<ReferencedKey<'a>>,
    problems: &mut Vec<Problem>,
) {
    let KeyRef {
        kind,
        name,
        key,
        optional,
        found,
    } = r;
    if name.is_empty() {
        let detail = if kind == "Secret" {
            "valueFrom.secretKeyRef.name is empty"
        } else {
            "valueFrom.configMapKeyRef.name is empty"
        };
        problems.push(Problem::InvalidReference {
            used_by: used_by.to_owned(),
            detail,
        });
        return;
    }
    match found {
        Ok(value) => hashed.push(ReferencedKey {
            kind,
            name,
            key,
            value: Some(value),
        }),
        Err(_) if optional == Some(true) => hashed.push(ReferencedKey {
            kind,
            name,
            key,
            value: None,
        }),
        Err(e) => {
            let (name, key, used_by) = (name.to_owned(), key.to_owned(), used_by.to_owned());
            problems.push(match (kind, e) {
                ("Secret", RefError::ObjectNotFound) => Problem::SecretNotFound { name, used_by },
                ("Secret", RefError::KeyNotFound) => {
                    Problem::SecretKeyNotFound { name, key, used_by }
                }
                (_, RefError::ObjectNotFound) => Problem::ConfigMapNotFound { name, used_by },
                (_, RefError::KeyNotFound) => Problem::ConfigMapKeyNotFound { name, key, used_by },
            });
        }
    }
}
