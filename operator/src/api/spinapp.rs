//! `SpinApp`: a Spin WebAssembly application, wire-compatible with
//! spin-operator v0.6.1 (`core.spinkube.dev/v1alpha1`) plus additive fields.
//!
//! Validation that needs only the object itself lives here as CEL rules in the
//! CRD, so no admission webhook (and no cert-manager) is needed. Checks that
//! need other objects (the executor exists, referenced Secrets exist) are
//! reported by the reconciler as status conditions.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ConfigMapKeySelector, EnvVarSource, LocalObjectReference, SecretKeySelector,
    Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The desired state of a Spin app.
// Several printer columns share a type; clippy reads that as a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "core.spinkube.dev",
    version = "v1alpha1",
    kind = "SpinApp",
    namespaced,
    status = "SpinAppStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "sapp",
    category = "spinkube",
    doc = "SpinApp runs a Spin WebAssembly application as a Deployment and Service. Wire-compatible with SpinKube's spin-operator.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.readyReplicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas", description = "Pods ready to serve"),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".spec.replicas", description = "Requested replicas"),
    printcolumn(name = "Executor", type_ = "string", json_path = ".spec.executor", description = "SpinAppExecutor that runs the app"),
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image", description = "OCI reference of the Spin app"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Deployment", type_ = "string", json_path = ".status.deploymentName", priority = "1"),
    printcolumn(name = "Service", type_ = "string", json_path = ".status.serviceName", priority = "1"),
    selectable = ".spec.executor",
    validation = Rule::new("self.metadata.name.size() <= 52").message("SpinApp names are limited to 52 characters: the name is part of the pod selector label key core.spinkube.dev/app.<name>.status, which may not exceed 63"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("SpinApp names must be DNS-1035 labels (lowercase letters, digits and '-', starting with a letter) because the Service takes the same name"),
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!(has(self.enableAutoscaling) && self.enableAutoscaling && has(self.replicas))")
        .message("replicas must not be set when enableAutoscaling is true: the autoscaler owns the replica count"),
    validation = Rule::new("!has(self.invocationLimits) || !('memory' in self.invocationLimits) || !has(self.resources) || !has(self.resources.limits) || !('memory' in self.resources.limits) || quantity(self.invocationLimits['memory']).compareTo(quantity(string(self.resources.limits['memory']))) <= 0")
        .message("invocationLimits.memory must not exceed resources.limits.memory"),
    validation = Rule::new("!has(self.invocationLimits) || !('memory' in self.invocationLimits) || !has(self.resources) || !has(self.resources.requests) || !('memory' in self.resources.requests) || (has(self.resources.limits) && 'memory' in self.resources.limits) || quantity(self.invocationLimits['memory']).compareTo(quantity(string(self.resources.requests['memory']))) <= 0")
        .message("invocationLimits.memory must not exceed resources.requests.memory when no memory limit is set"),
)]
pub struct SpinAppSpec {
    /// Name of the SpinAppExecutor (in this namespace) that runs the app, e.g. `containerd-shim-spin`.
    #[x_kube(validation = Rule::new("self.size() > 0").message("executor must name a SpinAppExecutor in the app's namespace, e.g. containerd-shim-spin"))]
    pub executor: String,

    /// OCI reference of the Spin app, e.g. `ghcr.io/spinkube/containerd-shim-spin/examples/spin-rust-hello:v0.13.0`.
    #[x_kube(
        validation = Rule::new("self.size() > 0").message("image must be an OCI reference such as ghcr.io/org/app:v1"),
        validation = Rule::new("!self.matches('\\\\s')").message("image must not contain whitespace"),
    )]
    pub image: String,

    /// Secrets with registry credentials, used to pull the app's image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.all(s, has(s.name) && s.name.size() > 0)").message("every imagePullSecrets entry needs a name"))]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,

    /// Health probes for the app's pods. Only HTTP probes on the app port exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<HealthChecks>,

    /// Number of pods. May be 0. Must be unset when enableAutoscaling is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,

    /// Leave the Deployment's replica count to an external autoscaler (HPA, KEDA).
    /// With Spindle's scale subresource an HPA can also target the SpinApp itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_autoscaling: Option<bool>,

    /// Spin runtime configuration (key-value stores, SQLite databases, LLM compute),
    /// rendered into `runtime-config.toml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_config: Option<RuntimeConfig>,

    /// Extra volumes for the app's pods. Names starting with `spin-` are reserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.all(v, !v.name.startsWith('spin-'))").message("volume names starting with 'spin-' are reserved for Spindle's own volumes"))]
    pub volumes: Option<Vec<Volume>>,

    /// Extra volume mounts for the app container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.all(m, !m.name.startsWith('spin-'))").message("volumeMounts must not reference volumes starting with 'spin-', which are reserved for Spindle"))]
    pub volume_mounts: Option<Vec<VolumeMount>>,

    /// Spin application variables, exposed to the app as `SPIN_VARIABLE_<NAME>` environment variables.
    /// At most 128: the apiserver bounds the cost of the uniqueness rule below,
    /// and 128 variables with 100-character names is what fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    #[x_kube(validation = Rule::new("self.all(v, self.exists_one(w, w.name.lowerAscii() == v.name.lowerAscii()))").message("variable names must be unique (case-insensitive)"))]
    pub variables: Option<Vec<SpinVar>>,

    /// Annotations for the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_annotations: Option<BTreeMap<String, String>>,

    /// Annotations for the Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_annotations: Option<BTreeMap<String, String>>,

    /// Annotations for the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<BTreeMap<String, String>>,

    /// Extra labels for the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('core.spinkube.dev/'))").message("podLabels must not use the core.spinkube.dev/ prefix, which Spindle uses for selectors"))]
    pub pod_labels: Option<BTreeMap<String, String>>,

    /// CPU and memory for the app container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,

    /// Run only these components of the app (`SPIN_COMPONENTS_TO_RETAIN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    #[x_kube(validation = Rule::new("self.all(c, c.size() > 0)").message("component names must not be empty"))]
    pub components: Option<Vec<String>>,

    /// ServiceAccount for the app's pods. Defaults to `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,

    /// Per-invocation limits. `memory` (a quantity such as `64Mi`) caps each
    /// instance's linear memory (`SPIN_MAX_INSTANCE_MEMORY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("!('memory' in self) || isQuantity(self['memory'])").message("invocationLimits.memory must be a quantity such as 64Mi"))]
    pub invocation_limits: Option<BTreeMap<String, String>>,

    /// Node labels the app's pods must run on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Tolerations for the app's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,

    /// Affinity rules for the app's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Port the app listens on inside the pod (`SPIN_HTTP_LISTEN_ADDR`) and the
    /// Service's targetPort. The Service itself always listens on port 80.
    /// A port above 1024 lets the app run as non-root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// Scale the app to zero pods after a period without requests, and wake it
    /// on the next request (held by the Spindle activator meanwhile). Off unless
    /// `enabled: true`; without this field the app behaves exactly as under
    /// spin-operator. See docs/scale-to-zero.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_to_zero: Option<ScaleToZero>,
}

/// Health checks for the app's pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthChecks {
    /// Readiness probe: traffic is sent only to pods that pass it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<HealthProbe>,
    /// Liveness probe: pods that fail it are restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<HealthProbe>,
}

/// An HTTP probe against the app's port.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthProbe {
    /// The HTTP request to make.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpHealthProbe>,
    /// Seconds after start before the first probe. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub initial_delay_seconds: Option<i32>,
    /// Seconds before a probe times out. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<i32>,
    /// Seconds between probes. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub period_seconds: Option<i32>,
    /// Consecutive successes to count as healthy. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub success_threshold: Option<i32>,
    /// Consecutive failures to count as unhealthy. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub failure_threshold: Option<i32>,
}

/// An HTTP GET probe.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpHealthProbe {
    /// Path to request, e.g. `/health`.
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("probe path must start with '/'"))]
    pub path: String,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_headers: Option<Vec<HttpHealthProbeHeader>>,
}

/// A header sent with an HTTP probe.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct HttpHealthProbeHeader {
    /// Header name.
    #[x_kube(validation = Rule::new("self.size() > 0").message("probe header name must not be empty"))]
    pub name: String,
    /// Header value.
    pub value: String,
}

/// Spin runtime configuration.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    /// Name of a Secret in the app's namespace whose key `runtime-config.toml`
    /// is mounted as-is. When set, the typed fields below are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("loadFromSecret must name a Secret"))]
    pub load_from_secret: Option<String>,

    /// SQLite databases, by name (`default` is the app's default database). At most 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(d, self.exists_one(e, e.name == d.name))").message("sqliteDatabases names must be unique"))]
    pub sqlite_databases: Option<Vec<SqliteDatabaseConfig>>,

    /// Key-value stores, by name (`default` is the app's default store). At most 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t.name == s.name))").message("keyValueStores names must be unique"))]
    pub key_value_stores: Option<Vec<KeyValueStoreConfig>>,

    /// The LLM compute backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_compute: Option<LlmComputeConfig>,
}

/// A SQLite database.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SqliteDatabaseConfig {
    /// Database name as the app opens it, e.g. `default`.
    #[schemars(length(max = 128))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("sqliteDatabases[].name must not be empty"))]
    pub name: String,
    /// Backend type, e.g. `spin` (local file) or `libsql`.
    #[serde(rename = "type")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("sqliteDatabases[].type must not be empty, e.g. libsql"))]
    pub type_: String,
    /// Backend options, e.g. `url` and `token` for libsql.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<RuntimeConfigOption>>,
}

/// A key-value store.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct KeyValueStoreConfig {
    /// Store name as the app opens it, e.g. `default`.
    #[schemars(length(max = 128))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("keyValueStores[].name must not be empty"))]
    pub name: String,
    /// Backend type, e.g. `redis`, `spin` (local file), `azure_cosmos`, `aws_dynamo`.
    #[serde(rename = "type")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("keyValueStores[].type must not be empty, e.g. redis"))]
    pub type_: String,
    /// Backend options, e.g. `url` for redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<RuntimeConfigOption>>,
}

/// The LLM compute backend.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct LlmComputeConfig {
    /// Backend type, e.g. `remote_http`.
    #[serde(rename = "type")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("llmCompute.type must not be empty, e.g. remote_http"))]
    pub type_: String,
    /// Backend options, e.g. `url` and `auth_token` for remote_http.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<RuntimeConfigOption>>,
}

/// One option of a runtime-config table: a literal value or a reference.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.value) != has(self.valueFrom)").message("a runtime-config option needs exactly one of value or valueFrom"))]
pub struct RuntimeConfigOption {
    /// Option name, e.g. `url`.
    #[x_kube(validation = Rule::new("self.size() > 0").message("runtime-config option name must not be empty"))]
    pub name: String,
    /// Literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Value read from a ConfigMap or Secret key in the app's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<RuntimeConfigVarSource>,
}

/// Where a runtime-config option's value comes from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.configMapKeyRef) != has(self.secretKeyRef)").message("valueFrom needs exactly one of configMapKeyRef or secretKeyRef"))]
pub struct RuntimeConfigVarSource {
    /// A key of a ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<ConfigMapKeySelector>,
    /// A key of a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeySelector>,
}

/// A Spin application variable.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.value) && has(self.valueFrom))").message("a variable takes value or valueFrom, not both"))]
pub struct SpinVar {
    /// Variable name as declared in spin.toml, e.g. `api_url`. At most 100 characters.
    #[schemars(length(max = 100))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z][A-Za-z0-9_]*$')").message("variable names must start with a letter and contain only letters, digits and '_' (they become SPIN_VARIABLE_<NAME> environment variables)"))]
    pub name: String,
    /// Literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Value from a ConfigMap, Secret or field reference (resolved by the kubelet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

/// Compute resources for the app container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Resources {
    /// Maximum resources, e.g. `{cpu: 500m, memory: 128Mi}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<BTreeMap<String, Quantity>>,
    /// Requested resources, used for scheduling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<BTreeMap<String, Quantity>>,
}

/// The observed state of a Spin app.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SpinAppStatus {
    /// Conditions: Ready, Available, Progressing, plus reason-specific ones
    /// (ExecutorReady, RuntimeConfigReady, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The executor that runs the app (spin-operator compatible).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_scheduler: Option<String>,
    /// Pods ready to serve.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pods that exist for the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Label selector of the app's pods, for the scale subresource and HPAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Name of the Deployment that runs the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_name: Option<String>,
    /// Name of the Service that fronts the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// The image the app's pods run: `spec.image` pinned to the manifest digest
    /// Spindle resolved, e.g. `ghcr.io/org/app:v1@sha256:…` (for an image index,
    /// the digest of its WASI platform entry). Unset while the image has never
    /// been resolved or when image resolution is disabled (`--resolve-images=false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_image: Option<String>,
    /// Packaging format of the resolved image: `SpinRegistryPush` (`spin registry push`),
    /// `WasmComponent` (a single `application/wasm` component, as `wkg oci push`) or
    /// `SpinImage` (a WASI container image holding `/spin.toml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_format: Option<String>,
    /// Where a scale-to-zero app is (only set when `spec.scaleToZero.enabled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_to_zero: Option<ScaleToZeroStatus>,
}

/// A Go-style duration accepted by CEL's `duration()`: `90s`, `2m`, `1h30m`.
const DURATION_PATTERN: &str = "^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$";

/// Scale to zero when idle, wake on the first request.
///
/// Defaults (applied by Spindle when a field is unset): `enabled: false`,
/// `idleTimeout: 120s`, `coldStartTimeout: 60s`, `maxPendingRequests: 1000`,
/// `drainSeconds: 20`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScaleToZero {
    /// Turn scale to zero on. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,

    /// No request for this long scales the app to zero pods. A duration such as
    /// `120s` or `2m`; at least `30s`. Default `120s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new(format!("self.matches('{DURATION_PATTERN}')")).message("idleTimeout must be a duration such as 120s, 2m or 1h30m"),
        validation = Rule::new(format!("!self.matches('{DURATION_PATTERN}') || duration(self) >= duration('30s')")).message("idleTimeout must be at least 30s: shorter timeouts make an app flap between zero and one pod"),
        validation = Rule::new(format!("!self.matches('{DURATION_PATTERN}') || duration(self) <= duration('720h')")).message("idleTimeout must be at most 720h"),
    )]
    pub idle_timeout: Option<String>,

    /// Longest time a request is held while the app wakes; after it the caller
    /// gets `503` with `Retry-After`. A duration, `1s` to `10m`. Default `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new(format!("self.matches('{DURATION_PATTERN}')")).message("coldStartTimeout must be a duration such as 60s or 2m"),
        validation = Rule::new(format!("!self.matches('{DURATION_PATTERN}') || (duration(self) >= duration('1s') && duration(self) <= duration('10m'))")).message("coldStartTimeout must be between 1s and 10m"),
    )]
    pub cold_start_timeout: Option<String>,

    /// Requests held at most for this app while it wakes; beyond, callers get
    /// `503` with `Retry-After` (the activator also has a global cap). 1 to
    /// 100000. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_pending_requests: Option<i32>,

    /// Seconds the last pod keeps serving after it is told to stop (a
    /// `preStop` sleep), so that nodes with stale routes still reach it. Set it
    /// above the longest request. 5 to 300. Default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 5, max = 300))]
    pub drain_seconds: Option<i32>,
}

/// Observed scale-to-zero state of an app.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScaleToZeroStatus {
    /// `Serving` (pods serve directly), `ScalingDown` (the activator is in the
    /// path and the last pods drain), `Idle` (zero pods; requests wake the app)
    /// or `Waking` (requests are held while a pod starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Why the app is not scaled down although scale to zero is on, e.g.
    /// `ActivatorUnavailable`, `ActivityUnknown`, `DemandActive`, `PortsExhausted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The activator port reserved for this app (also on the Service as the
    /// `spindle.spinkube.dev/activator-port` annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activator_port: Option<i32>,
    /// Last time a request for the app was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_time: Option<Time>,
    /// Last time the app was scaled to zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_down_time: Option<Time>,
    /// Last time the app was woken from zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_wake_time: Option<Time>,
}
