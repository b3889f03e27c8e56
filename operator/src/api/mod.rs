//! Wire types: the CustomResourceDefinitions Spindle serves.
//!
//! Everything here is what users write and what the apiserver stores; the
//! reconciler turns it into a validated [`crate::model`] before rendering.

pub mod compat;
mod executor;
mod spinapp;

pub use executor::*;
pub use spinapp::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of the canonical (spin-operator v0.4+) kinds.
pub const GROUP: &str = "core.spinkube.dev";

/// Every CRD Spindle installs, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![SpinApp::crd(), SpinAppExecutor::crd(), compat::legacy_crd()]
}

/// File name (under `crds/`) for a CRD: `<plural>.<group>.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// A CRD rendered as YAML, exactly as committed in `crds/`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::ser_error::Error> {
    serde_saphyr::to_string(crd)
}
