//! Pure functions from a validated [`App`] to the Kubernetes objects that run
//! it. No client, no I/O: the apply layer sends these with server-side apply.
//!
//! Every object carries name, namespace, Spindle's labels and a controller
//! owner reference; k8s-openapi adds `apiVersion` and `kind` when serializing.

pub mod ca_bundle;
pub mod deployment;
pub mod labels;
pub mod secret;
pub mod service;

#[cfg(test)]
mod tests;

use std::fmt;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};

use crate::model::App;

/// Everything Spindle creates for one app.
#[derive(Clone, PartialEq)]
pub struct Rendered {
    /// `None` when the executor has `createDeployment: false`.
    pub deployment: Option<Deployment>,
    /// Always made.
    pub service: Service,
    /// `None` with `loadFromSecret`.
    pub runtime_config_secret: Option<Secret>,
}

// The Secret holds values read from other Secrets: keep them out of logs.
impl fmt::Debug for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rendered")
            .field("deployment", &self.deployment)
            .field("service", &self.service)
            .field(
                "runtime_config_secret",
                &self
                    .runtime_config_secret
                    .as_ref()
                    .map(|s| format!("Secret {:?} <data redacted>", s.metadata.name)),
            )
            .finish()
    }
}

/// Renders every child object of `app`.
pub fn render(app: &App) -> Rendered {
    Rendered {
        deployment: deployment::deployment(app),
        service: service::service(app),
        runtime_config_secret: secret::runtime_config_secret(app),
    }
}
