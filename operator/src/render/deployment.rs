//! The app's Deployment: one container running the app through the shim (or
//! `spin up` in a spintainer), spin-operator's layout plus the config hash.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, HTTPGetAction, HTTPHeader, KeyToPath, PodSpec,
    PodTemplateSpec, Probe, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{non_empty, non_empty_vec, object_meta, pod_labels, selector_labels};
use crate::model::{
    App, CA_CERT_KEY, CA_CERT_PATH, CONFIG_HASH_ANNOTATION, ExecutorMode, HttpProbe,
    RUNTIME_CONFIG_KEY, RUNTIME_CONFIG_PATH, Replicas, RuntimeConfigSource, VariableValue,
    runtime_config_secret_name,
};

/// Name of the container port (the Service and probes target it by name).
pub const PORT_NAME: &str = "http-app";
/// Volume holding runtime-config.toml.
pub const RUNTIME_CONFIG_VOLUME: &str = "spin-runtime-config";
/// Volume holding the CA bundle.
pub const CA_VOLUME: &str = "spin-ca";

/// The Deployment, or `None` when the executor creates none.
pub fn deployment(app: &App) -> Option<Deployment> {
    let (runtime_class_name, command, args, image) = match &app.executor {
        ExecutorMode::NoDeployment => return None,
        // Wasm images have no entrypoint and the runtime needs a process;
        // the shim ignores it (spin-operator sets the same).
        ExecutorMode::Shim { runtime_class_name } => (
            Some(runtime_class_name.clone()),
            Some(vec!["/".to_owned()]),
            None,
            app.image.clone(),
        ),
        ExecutorMode::Spintainer { spin_image } => {
            (None, None, Some(spintainer_args(app)), spin_image.clone())
        }
    };

    let mut pod_annotations = app.pod_annotations.clone();
    pod_annotations.insert(CONFIG_HASH_ANNOTATION.to_owned(), app.config_hash.clone());

    let container = Container {
        name: app.name.clone(),
        image: Some(image),
        command,
        args,
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.to_owned()),
            container_port: app.port,
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
        env: Some(env(app)),
        resources: app.resources.clone(),
        readiness_probe: app.readiness_probe.as_ref().map(probe),
        liveness_probe: app.liveness_probe.as_ref().map(probe),
        volume_mounts: Some(volume_mounts(app)),
        ..Default::default()
    };

    Some(Deployment {
        metadata: object_meta(app, app.name.clone(), &app.deployment_annotations),
        spec: DeploymentSpec {
            replicas: match app.replicas {
                Replicas::Fixed(n) => Some(n),
                Replicas::Autoscaled => None,
            },
            selector: LabelSelector {
                match_labels: Some(selector_labels(&app.name)),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels(app)),
                    annotations: Some(pod_annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    runtime_class_name,
                    service_account_name: Some(app.service_account_name.clone()),
                    image_pull_secrets: non_empty_vec(&app.image_pull_secrets),
                    node_selector: non_empty(&app.node_selector),
                    tolerations: non_empty_vec(&app.tolerations),
                    affinity: app.affinity.clone(),
                    volumes: Some(volumes(app)),
                    containers: vec![container],
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        status: None,
    })
}

/// `spin up` arguments for the spintainer executor.
fn spintainer_args(app: &App) -> Vec<String> {
    let mut args = vec![
        "up".to_owned(),
        "--listen".to_owned(),
        format!("0.0.0.0:{}", app.port),
        "-f".to_owned(),
        app.image.clone(),
        "--runtime-config-file".to_owned(),
        RUNTIME_CONFIG_PATH.to_owned(),
    ];
    for c in &app.components {
        args.push("--component-id".to_owned());
        args.push(c.clone());
    }
    args
}

fn literal(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value),
        value_from: None,
    }
}

/// Container env in spin-operator's order: variables, listen address, OTel,
/// components, instance memory.
fn env(app: &App) -> Vec<EnvVar> {
    let mut env: Vec<EnvVar> = app
        .variables
        .iter()
        .map(|v| match &v.value {
            // An empty value is the same as none; leaving it out keeps SSA diffs clean.
            VariableValue::Literal(s) if s.is_empty() => EnvVar {
                name: v.env_name.clone(),
                ..Default::default()
            },
            VariableValue::Literal(s) => literal(&v.env_name, s.clone()),
            VariableValue::From(from) => EnvVar {
                name: v.env_name.clone(),
                value: None,
                value_from: Some((**from).clone()),
            },
        })
        .collect();
    env.push(literal(
        "SPIN_HTTP_LISTEN_ADDR",
        format!("0.0.0.0:{}", app.port),
    ));
    env.extend(app.otel_env.iter().map(|(k, v)| literal(k, v.clone())));
    if !app.components.is_empty() {
        env.push(literal(
            "SPIN_COMPONENTS_TO_RETAIN",
            app.components.join(","),
        ));
    }
    if let Some(bytes) = app.invocation_memory_bytes {
        env.push(literal("SPIN_MAX_INSTANCE_MEMORY", bytes.to_string()));
    }
    env
}

fn probe(p: &HttpProbe) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(p.path.clone()),
            port: IntOrString::String(PORT_NAME.to_owned()),
            http_headers: non_empty_vec(
                &p.headers
                    .iter()
                    .map(|(name, value)| HTTPHeader {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect::<Vec<_>>(),
            ),
            ..Default::default()
        }),
        initial_delay_seconds: Some(p.initial_delay_seconds),
        timeout_seconds: Some(p.timeout_seconds),
        period_seconds: Some(p.period_seconds),
        success_threshold: Some(p.success_threshold),
        failure_threshold: Some(p.failure_threshold),
        ..Default::default()
    }
}

fn secret_volume(name: &str, secret_name: String, key: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret_name),
            items: Some(vec![KeyToPath {
                key: key.to_owned(),
                path: key.to_owned(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Runtime config, then the user's volumes, then the CA bundle.
fn volumes(app: &App) -> Vec<Volume> {
    let secret_name = match &app.runtime_config {
        RuntimeConfigSource::Generated { .. } => runtime_config_secret_name(&app.name),
        RuntimeConfigSource::FromSecret { name } => name.clone(),
    };
    let mut volumes = vec![secret_volume(
        RUNTIME_CONFIG_VOLUME,
        secret_name,
        RUNTIME_CONFIG_KEY,
    )];
    volumes.extend(app.volumes.iter().cloned());
    if let Some(ca) = &app.ca_cert_secret {
        volumes.push(secret_volume(CA_VOLUME, ca.clone(), CA_CERT_KEY));
    }
    volumes
}

fn file_mount(volume: &str, path: &str, key: &str) -> VolumeMount {
    VolumeMount {
        name: volume.to_owned(),
        mount_path: path.to_owned(),
        sub_path: Some(key.to_owned()),
        read_only: Some(true),
        ..Default::default()
    }
}

/// Same order as [`volumes`]. subPath mounts put single files at the fixed
/// paths the shim reads.
fn volume_mounts(app: &App) -> Vec<VolumeMount> {
    let mut mounts = vec![file_mount(
        RUNTIME_CONFIG_VOLUME,
        RUNTIME_CONFIG_PATH,
        RUNTIME_CONFIG_KEY,
    )];
    mounts.extend(app.volume_mounts.iter().cloned());
    if app.ca_cert_secret.is_some() {
        mounts.push(file_mount(CA_VOLUME, CA_CERT_PATH, CA_CERT_KEY));
    }
    mounts
}
