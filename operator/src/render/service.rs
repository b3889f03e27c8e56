//! The app's Service: port 80 → the container's `http-app` port.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::deployment::PORT_NAME;
use super::labels::{object_meta, service_selector};
use crate::model::App;

/// Port the Service listens on (spin-operator's; `spec.port` only moves the container port).
pub const SERVICE_PORT: i32 = 80;

/// The Service, made for every executor (also `createDeployment: false`).
pub fn service(app: &App) -> Service {
    Service {
        metadata: object_meta(app, app.name.clone(), &app.service_annotations),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(service_selector(&app.name)),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::String(PORT_NAME.to_owned())),
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}
