//! Objects and fields the operator adds for a scale-to-zero app (docs/scale-to-zero.md, "How it works").
//! Pure functions; the controller applies the results.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Lifecycle, LifecycleHandler, Probe, Service, SleepAction, TCPSocketAction,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{ACTIVATOR_PORT_ANNOTATION, AppKey, Settings};
use crate::render::deployment::PORT_NAME;
use crate::render::labels::APP_NAME_LABEL;

/// `endpointslice.kubernetes.io/managed-by`.
pub const SLICE_MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Our value of [`SLICE_MANAGED_BY_LABEL`] (never kcm's `endpointslice-controller.k8s.io`).
pub const SLICE_MANAGED_BY: &str = "spindle.spinkube.dev";
/// `kubernetes.io/service-name`: ties a slice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Name of the Service port (and so of the slice port).
pub const SERVICE_PORT_NAME: &str = "http";
/// Activators per app slice (rendezvous top-k).
pub const ACTIVATORS_PER_APP: usize = 3;

/// A ready activator pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivatorEndpoint {
    /// Pod IP.
    pub ip: String,
    /// Pod name (the rendezvous key, stable across IP changes).
    pub pod: String,
    /// Node the pod runs on.
    pub node: Option<String>,
    /// Zone of that node.
    pub zone: Option<String>,
}

/// Name of the activator slice of an app.
pub fn activator_slice_name(app_name: &str) -> String {
    format!("{app_name}-activator")
}

/// FNV-1a: a hash that is stable across Rust versions and processes.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The `k` activators an app routes to: rendezvous (highest random weight)
/// hashing, so adding or removing one activator only changes the apps that had it.
pub fn select_activators<'a>(
    app: &AppKey,
    activators: &'a [ActivatorEndpoint],
    k: usize,
) -> Vec<&'a ActivatorEndpoint> {
    let key = app.to_string();
    let mut ranked: Vec<(u64, &ActivatorEndpoint)> = activators
        .iter()
        .map(|a| (fnv1a(&[&key, &a.pod]), a))
        .collect();
    ranked.sort_by(|x, y| y.0.cmp(&x.0).then_with(|| x.1.pod.cmp(&y.1.pod)));
    ranked.into_iter().take(k).map(|(_, a)| a).collect()
}

/// The `<app>-activator` EndpointSlice: the app's Service port pointed at the
/// activators on the app's activator port. Owned by the Service (garbage
/// collected with it). `service_uid` is the Service's UID.
pub fn activator_slice(
    app: &AppKey,
    service_uid: &str,
    port: u16,
    activators: &[ActivatorEndpoint],
) -> EndpointSlice {
    let labels = BTreeMap::from([
        (SERVICE_NAME_LABEL.to_owned(), app.name.clone()),
        (
            SLICE_MANAGED_BY_LABEL.to_owned(),
            SLICE_MANAGED_BY.to_owned(),
        ),
        (APP_NAME_LABEL.to_owned(), app.name.clone()),
    ]);
    let endpoints: Vec<Endpoint> = select_activators(app, activators, ACTIVATORS_PER_APP)
        .into_iter()
        .map(|a| Endpoint {
            addresses: vec![a.ip.clone()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            node_name: a.node.clone(),
            zone: a.zone.clone(),
            ..Default::default()
        })
        .collect();
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(activator_slice_name(&app.name)),
            namespace: Some(app.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".to_owned(),
                kind: "Service".to_owned(),
                name: app.name.clone(),
                uid: service_uid.to_owned(),
                controller: Some(false),
                block_owner_deletion: Some(false),
            }]),
            ..Default::default()
        },
        address_type: "IPv4".to_owned(),
        endpoints: Some(endpoints),
        ports: Some(vec![EndpointPort {
            name: Some(SERVICE_PORT_NAME.to_owned()),
            port: Some(i32::from(port)),
            protocol: Some("TCP".to_owned()),
            app_protocol: None,
        }]),
    }
}

/// Record the activator port on the Service (rides on the Service's own apply).
pub fn annotate_service(service: &mut Service, port: u16) {
    service
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(ACTIVATOR_PORT_ANNOTATION.to_owned(), port.to_string());
}

/// Deployment additions: a preStop sleep of `drainSeconds` on the app
/// container (the shim aborts in-flight requests at SIGTERM), a grace period
/// of drain + 10 s, and a fast TCP readiness probe when the user set none.
/// `replicas` is left to the caller (the decision owns 0 ↔ N).
pub fn add_to_deployment(deployment: &mut Deployment, settings: &Settings) {
    let Some(pod) = deployment.spec.template.spec.as_mut() else {
        return;
    };
    pod.termination_grace_period_seconds = Some(settings.termination_grace_period_seconds());
    let Some(container) = pod.containers.first_mut() else {
        return;
    };
    let lifecycle = container.lifecycle.get_or_insert_with(Lifecycle::default);
    lifecycle.pre_stop = Some(LifecycleHandler {
        sleep: Some(SleepAction {
            seconds: i64::from(settings.drain_seconds),
        }),
        ..Default::default()
    });
    if container.readiness_probe.is_none() {
        container.readiness_probe = Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String(PORT_NAME.to_owned()),
                host: None,
            }),
            period_seconds: Some(1),
            failure_threshold: Some(1),
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};

    fn activators(n: usize) -> Vec<ActivatorEndpoint> {
        (0..n)
            .map(|i| ActivatorEndpoint {
                ip: format!("10.244.255.{i}"),
                pod: format!("act-{i}"),
                node: None,
                zone: None,
            })
            .collect()
    }

    #[test]
    fn slice_shape() {
        let app = AppKey::new("apps", "hello");
        let s = activator_slice(&app, "uid-1", 20417, &activators(5));
        assert_eq!(s.metadata.name.as_deref(), Some("hello-activator"));
        let labels = s.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[SERVICE_NAME_LABEL], "hello");
        assert_eq!(labels[SLICE_MANAGED_BY_LABEL], SLICE_MANAGED_BY);
        let endpoints = s.endpoints.as_ref().unwrap();
        assert_eq!(endpoints.len(), ACTIVATORS_PER_APP);
        assert!(
            endpoints
                .iter()
                .all(|e| e.conditions.as_ref().unwrap().ready == Some(true)
                    && e.target_ref.is_none())
        );
        let port = &s.ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.port),
            (Some("http"), Some(20417))
        );
        assert_eq!(
            s.metadata.owner_references.as_ref().unwrap()[0].kind,
            "Service"
        );
    }

    #[test]
    fn rendezvous_moves_only_affected_apps() {
        let all = activators(6);
        let fewer: Vec<_> = all.iter().filter(|a| a.pod != "act-3").cloned().collect();
        let mut moved = 0;
        for i in 0..500 {
            let app = AppKey::new("ns", format!("app{i}"));
            let before: Vec<_> = select_activators(&app, &all, 3)
                .iter()
                .map(|a| a.pod.clone())
                .collect();
            let after: Vec<_> = select_activators(&app, &fewer, 3)
                .iter()
                .map(|a| a.pod.clone())
                .collect();
            if before.contains(&"act-3".to_owned()) {
                moved += 1;
                // Survivors keep their place; one replacement joins.
                assert_eq!(before.iter().filter(|p| after.contains(p)).count(), 2);
            } else {
                assert_eq!(
                    before, after,
                    "{app} changed although act-3 was not among its activators"
                );
            }
        }
        // Roughly k/N = 1/2 of the apps had act-3.
        assert!((150..350).contains(&moved), "{moved}");
    }

    #[test]
    fn deployment_gets_drain_grace_and_probe() {
        let mut d = Deployment {
            spec: DeploymentSpec {
                template: PodTemplateSpec {
                    spec: Some(PodSpec {
                        containers: vec![Container::default()],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            },
            ..Default::default()
        };
        add_to_deployment(
            &mut d,
            &Settings {
                drain_seconds: 25,
                ..Settings::default()
            },
        );
        let pod = d.spec.template.spec.unwrap();
        assert_eq!(pod.termination_grace_period_seconds, Some(35));
        let c = &pod.containers[0];
        assert_eq!(
            c.lifecycle
                .as_ref()
                .unwrap()
                .pre_stop
                .as_ref()
                .unwrap()
                .sleep
                .as_ref()
                .unwrap()
                .seconds,
            25
        );
        assert!(c.readiness_probe.as_ref().unwrap().tcp_socket.is_some());
    }

    #[test]
    fn service_annotation() {
        let mut s = Service::default();
        annotate_service(&mut s, 20001);
        assert_eq!(
            s.metadata.annotations.unwrap()[ACTIVATOR_PORT_ANNOTATION],
            "20001"
        );
    }
}
