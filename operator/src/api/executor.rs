//! `SpinAppExecutor`: how SpinApps in a namespace are run (the shim's
//! RuntimeClass, or a "spintainer" image running `spin up`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The desired state of a SpinAppExecutor.
// Several printer columns share a type; clippy reads that as a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "core.spinkube.dev",
    version = "v1alpha1",
    kind = "SpinAppExecutor",
    namespaced,
    status = "SpinAppExecutorStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "sae",
    category = "spinkube",
    doc = "SpinAppExecutor says how the SpinApps that name it are run. Wire-compatible with SpinKube's spin-operator.",
    printcolumn(
        name = "CreateDeployment",
        type_ = "boolean",
        json_path = ".spec.createDeployment"
    ),
    printcolumn(
        name = "RuntimeClass",
        type_ = "string",
        json_path = ".spec.deploymentConfig.runtimeClassName"
    ),
    printcolumn(
        name = "SpinImage",
        type_ = "string",
        json_path = ".spec.deploymentConfig.spinImage",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.createDeployment || has(self.deploymentConfig)").message("deploymentConfig (runtimeClassName or spinImage) is required when createDeployment is true"))]
pub struct SpinAppExecutorSpec {
    /// Whether Spindle creates a Deployment for each SpinApp. When false only
    /// the Service is created and another system runs the app.
    pub create_deployment: bool,
    /// How the Deployment runs the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_config: Option<ExecutorDeploymentConfig>,
}

/// How a Deployment runs a Spin app.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.runtimeClassName) != has(self.spinImage)").message("exactly one of runtimeClassName or spinImage must be set"))]
pub struct ExecutorDeploymentConfig {
    /// RuntimeClass whose handler is containerd-shim-spin, e.g. `wasmtime-spin-v2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("runtimeClassName must not be empty"))]
    pub runtime_class_name: Option<String>,
    /// Container image with the `spin` CLI ("spintainer"), e.g. `ghcr.io/fermyon/spin:v2.7.0`.
    /// App images must then be pullable anonymously.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("spinImage must not be empty"))]
    pub spin_image: Option<String>,
    /// Name of a Secret with key `ca-certificates.crt` mounted as the app's CA bundle.
    /// With installDefaultCACerts it defaults to `spin-ca`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "caCertSecret")]
    pub ca_cert_secret: Option<String>,
    /// Create the CA Secret with a default Mozilla CA bundle in the app's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "installDefaultCACerts")]
    pub install_default_ca_certs: Option<bool>,
    /// OpenTelemetry exporter endpoints passed to the app as `OTEL_EXPORTER_OTLP_*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otel: Option<OtelConfig>,
}

/// OpenTelemetry endpoints. snake_case on the wire, as in spin-operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct OtelConfig {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter_otlp_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter_otlp_traces_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter_otlp_metrics_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter_otlp_logs_endpoint: Option<String>,
}

/// The observed state of a SpinAppExecutor (empty in spin-operator; Spindle
/// reports conditions such as whether its RuntimeClass exists).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SpinAppExecutorStatus {
    /// Conditions, e.g. `RuntimeClassFound`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
