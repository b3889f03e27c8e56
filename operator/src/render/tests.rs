//! Render tests: the exact objects for a baseline app, then one case per
//! field group asserting the exact rendered fields.

use k8s_openapi::api::core::v1::EmptyDirVolumeSource;
use k8s_openapi::api::core::v1::{
    Affinity, EnvVarSource, LocalObjectReference, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, SecretKeySelector, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use super::*;
use crate::api::{
    HealthChecks, HealthProbe, HttpHealthProbe, HttpHealthProbeHeader, KeyValueStoreConfig,
    OtelConfig, Resources, RuntimeConfig, RuntimeConfigOption, RuntimeConfigVarSource,
    SpinAppExecutor, SpinAppSpec, SpinVar,
};
use crate::model::testing::*;

const IMAGE: &str = "ghcr.io/example/hello:v1";

fn app_spec(f: impl FnOnce(&mut SpinAppSpec)) -> crate::api::SpinApp {
    let mut s = spec(IMAGE);
    f(&mut s);
    spin_app("hello", s)
}

fn render_world(world: &World) -> Rendered {
    render(&world.app())
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("k8s objects serialize")
}

fn deployment_json(r: &Rendered) -> Value {
    to_json(r.deployment.as_ref().expect("a Deployment"))
}

fn pod_spec(r: &Rendered) -> Value {
    deployment_json(r)["spec"]["template"]["spec"].clone()
}

fn container(r: &Rendered) -> Value {
    pod_spec(r)["containers"][0].clone()
}

fn labels() -> Value {
    json!({"app.kubernetes.io/managed-by": "spindle", "core.spinkube.dev/app-name": "hello"})
}

fn owner() -> Value {
    json!([{
        "apiVersion": "core.spinkube.dev/v1alpha1",
        "kind": "SpinApp",
        "name": "hello",
        "uid": "uid-1234",
        "controller": true,
        "blockOwnerDeletion": true
    }])
}

fn selector() -> Value {
    json!({"core.spinkube.dev/app-name": "hello", "core.spinkube.dev/app.hello.status": "ready"})
}

fn runtime_config_volume(secret: &str) -> Value {
    json!({
        "name": "spin-runtime-config",
        "secret": {"secretName": secret, "items": [{"key": "runtime-config.toml", "path": "runtime-config.toml"}]}
    })
}

fn runtime_config_mount() -> Value {
    json!({"name": "spin-runtime-config", "mountPath": "/runtime-config.toml", "subPath": "runtime-config.toml", "readOnly": true})
}

#[test]
fn baseline_shim_app_renders_exact_objects() {
    let world = World::new(app_spec(|_| {}));
    let app = world.app();
    let r = render(&app);

    assert_eq!(
        deployment_json(&r),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "hello", "namespace": "apps", "labels": labels(), "ownerReferences": owner()},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": selector()},
                "template": {
                    "metadata": {
                        "labels": selector(),
                        "annotations": {"spindle.spinkube.dev/config-hash": app.config_hash}
                    },
                    "spec": {
                        "runtimeClassName": "wasmtime-spin-v2",
                        "serviceAccountName": "default",
                        "volumes": [runtime_config_volume("hello-runtime-config")],
                        "containers": [{
                            "name": "hello",
                            "image": IMAGE,
                            "command": ["/"],
                            "ports": [{"name": "http-app", "containerPort": 80, "protocol": "TCP"}],
                            "env": [{"name": "SPIN_HTTP_LISTEN_ADDR", "value": "0.0.0.0:80"}],
                            "volumeMounts": [runtime_config_mount()]
                        }]
                    }
                }
            }
        })
    );

    assert_eq!(
        to_json(&r.service),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "hello", "namespace": "apps", "labels": labels(), "ownerReferences": owner()},
            "spec": {
                "type": "ClusterIP",
                "selector": {"core.spinkube.dev/app.hello.status": "ready"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http-app", "protocol": "TCP"}]
            }
        })
    );

    // An app without runtime config still gets its (empty) Secret, so the
    // volume never dangles and adding config later changes only the data.
    assert_eq!(
        to_json(r.runtime_config_secret.as_ref().expect("a Secret")),
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "hello-runtime-config", "namespace": "apps", "labels": labels(), "ownerReferences": owner()},
            "type": "Opaque",
            "data": {"runtime-config.toml": ""}
        })
    );
}

#[test]
fn runtime_config_secret_holds_the_toml_as_data() {
    let world = World::new(app_spec(|s| {
        s.runtime_config = Some(RuntimeConfig {
            key_value_stores: Some(vec![KeyValueStoreConfig {
                name: "default".into(),
                type_: "redis".into(),
                options: Some(vec![RuntimeConfigOption {
                    name: "url".into(),
                    value: None,
                    value_from: Some(RuntimeConfigVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "redis".into(),
                            key: "url".into(),
                            optional: None,
                        }),
                        config_map_key_ref: None,
                    }),
                }]),
            }]),
            ..Default::default()
        })
    }))
    .secret("redis", secret(&[("url", "redis://:pw@redis:6379")]));
    let r = render_world(&world);
    let secret = r.runtime_config_secret.as_ref().expect("a Secret");
    let data = secret
        .data
        .as_ref()
        .and_then(|d| d.get("runtime-config.toml"))
        .expect("key");
    assert_eq!(
        String::from_utf8(data.0.clone()).expect("utf8"),
        "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://:pw@redis:6379\"\n"
    );
    assert_eq!(secret.string_data, None);
    // Serialized as base64 `data`, which is what the apiserver stores.
    let b64 = to_json(secret)["data"]["runtime-config.toml"]
        .as_str()
        .map(str::to_owned);
    assert_eq!(
        b64.as_deref(),
        Some(
            "W2tleV92YWx1ZV9zdG9yZS5kZWZhdWx0XQp0eXBlID0gInJlZGlzIgp1cmwgPSAicmVkaXM6Ly86cHdAcmVkaXM6NjM3OSIK"
        )
    );
    // Debug output (logs) does not show it.
    let debug = format!("{r:?}");
    assert!(
        !debug.contains("pw@") && !debug.contains("W2tle"),
        "{debug}"
    );
}

/// A case of the table below: an app (and its world) and the exact fields it must render.
struct Case {
    name: &'static str,
    world: World,
    check: fn(&Rendered),
}

fn shim(f: impl FnOnce(&mut SpinAppSpec)) -> World {
    World::new(app_spec(f))
}

fn with_executor(executor: SpinAppExecutor, f: impl FnOnce(&mut SpinAppSpec)) -> World {
    World::new(app_spec(f)).executor(Some(executor))
}

fn quantities(pairs: &[(&str, &str)]) -> Option<std::collections::BTreeMap<String, Quantity>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
            .collect(),
    )
}

fn cases() -> Vec<Case> {
    let mut otel_ca = shim_executor();
    if let Some(c) = otel_ca.spec.deployment_config.as_mut() {
        c.install_default_ca_certs = Some(true);
        c.otel = Some(OtelConfig {
            exporter_otlp_endpoint: Some("http://otel:4318".into()),
            exporter_otlp_traces_endpoint: Some("http://otel:4318/v1/traces".into()),
            exporter_otlp_metrics_endpoint: Some("http://otel:4318/v1/metrics".into()),
            exporter_otlp_logs_endpoint: Some("http://otel:4318/v1/logs".into()),
        });
    }

    vec![
        Case {
            name: "fixed replicas",
            world: shim(|s| s.replicas = Some(3)),
            check: |r| assert_eq!(deployment_json(r)["spec"]["replicas"], json!(3)),
        },
        Case {
            name: "scale to zero",
            world: shim(|s| s.replicas = Some(0)),
            check: |r| assert_eq!(deployment_json(r)["spec"]["replicas"], json!(0)),
        },
        Case {
            name: "autoscaling leaves replicas to the autoscaler",
            world: shim(|s| s.enable_autoscaling = Some(true)),
            check: |r| {
                let spec = deployment_json(r)["spec"].clone();
                assert!(spec.get("replicas").is_none(), "{spec}");
                assert_eq!(spec["selector"], json!({"matchLabels": selector()}));
            },
        },
        Case {
            name: "custom port moves the container port, not the Service port",
            world: shim(|s| s.port = Some(8080)),
            check: |r| {
                let c = container(r);
                assert_eq!(
                    c["ports"],
                    json!([{"name": "http-app", "containerPort": 8080, "protocol": "TCP"}])
                );
                assert_eq!(
                    c["env"],
                    json!([{"name": "SPIN_HTTP_LISTEN_ADDR", "value": "0.0.0.0:8080"}])
                );
                assert_eq!(
                    to_json(&r.service)["spec"]["ports"],
                    json!([{"name": "http", "port": 80, "targetPort": "http-app", "protocol": "TCP"}])
                );
            },
        },
        Case {
            name: "env order: variables, listen address, OTel, components, instance memory",
            world: with_executor(otel_ca.clone(), |s| {
                s.variables = Some(vec![
                    SpinVar {
                        name: "greeting".into(),
                        value: Some("hi".into()),
                        value_from: None,
                    },
                    SpinVar {
                        name: "api_key".into(),
                        value: None,
                        value_from: Some(EnvVarSource {
                            secret_key_ref: Some(SecretKeySelector {
                                name: "creds".into(),
                                key: "k".into(),
                                optional: None,
                            }),
                            ..Default::default()
                        }),
                    },
                    SpinVar {
                        name: "empty".into(),
                        value: None,
                        value_from: None,
                    },
                ]);
                s.components = Some(vec!["api".into(), "web".into()]);
                s.invocation_limits = Some([("memory".to_owned(), "64Mi".to_owned())].into());
            })
            .secret("creds", secret(&[("k", "s3cr3t")])),
            check: |r| {
                assert_eq!(
                    container(r)["env"],
                    json!([
                        {"name": "SPIN_VARIABLE_GREETING", "value": "hi"},
                        {"name": "SPIN_VARIABLE_API_KEY", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}},
                        {"name": "SPIN_VARIABLE_EMPTY"},
                        {"name": "SPIN_HTTP_LISTEN_ADDR", "value": "0.0.0.0:80"},
                        {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel:4318"},
                        {"name": "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "value": "http://otel:4318/v1/traces"},
                        {"name": "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "value": "http://otel:4318/v1/metrics"},
                        {"name": "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "value": "http://otel:4318/v1/logs"},
                        {"name": "SPIN_COMPONENTS_TO_RETAIN", "value": "api,web"},
                        {"name": "SPIN_MAX_INSTANCE_MEMORY", "value": "67108864"}
                    ])
                );
                // The kubelet resolves valueFrom; the value is nowhere in the objects.
                assert!(
                    !format!("{}{}", deployment_json(r), to_json(&r.service)).contains("s3cr3t")
                );
            },
        },
        Case {
            name: "probes with defaults on the named port",
            world: shim(|s| {
                s.checks = Some(HealthChecks {
                    readiness: Some(HealthProbe {
                        http_get: Some(HttpHealthProbe {
                            path: "/ready".into(),
                            http_headers: None,
                        }),
                        ..Default::default()
                    }),
                    liveness: Some(HealthProbe {
                        http_get: Some(HttpHealthProbe {
                            path: "/live".into(),
                            http_headers: Some(vec![HttpHealthProbeHeader {
                                name: "X-Probe".into(),
                                value: "1".into(),
                            }]),
                        }),
                        initial_delay_seconds: Some(2),
                        timeout_seconds: Some(3),
                        period_seconds: Some(4),
                        success_threshold: Some(1),
                        failure_threshold: Some(6),
                    }),
                })
            }),
            check: |r| {
                let c = container(r);
                assert_eq!(
                    c["readinessProbe"],
                    json!({
                        "httpGet": {"path": "/ready", "port": "http-app"},
                        "initialDelaySeconds": 10, "timeoutSeconds": 1, "periodSeconds": 10,
                        "successThreshold": 1, "failureThreshold": 3
                    })
                );
                assert_eq!(
                    c["livenessProbe"],
                    json!({
                        "httpGet": {"path": "/live", "port": "http-app", "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
                        "initialDelaySeconds": 2, "timeoutSeconds": 3, "periodSeconds": 4,
                        "successThreshold": 1, "failureThreshold": 6
                    })
                );
            },
        },
        Case {
            name: "resources",
            world: shim(|s| {
                s.resources = Some(Resources {
                    limits: quantities(&[("cpu", "500m"), ("memory", "128Mi")]),
                    requests: quantities(&[("memory", "64Mi")]),
                })
            }),
            check: |r| {
                assert_eq!(
                    container(r)["resources"],
                    json!({"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"memory": "64Mi"}})
                )
            },
        },
        Case {
            name: "labels and annotations land on the right objects",
            world: shim(|s| {
                s.pod_labels = Some([("team".to_owned(), "blue".to_owned())].into());
                s.pod_annotations =
                    Some([("prometheus.io/scrape".to_owned(), "true".to_owned())].into());
                s.deployment_annotations = Some([("deploy".to_owned(), "d".to_owned())].into());
                s.service_annotations = Some([("svc".to_owned(), "s".to_owned())].into());
            }),
            check: |r| {
                let d = deployment_json(r);
                assert_eq!(d["metadata"]["annotations"], json!({"deploy": "d"}));
                assert_eq!(d["metadata"]["labels"], labels());
                let template = &d["spec"]["template"]["metadata"];
                assert_eq!(
                    template["labels"],
                    json!({"team": "blue", "core.spinkube.dev/app-name": "hello", "core.spinkube.dev/app.hello.status": "ready"})
                );
                assert_eq!(
                    template["annotations"]["prometheus.io/scrape"],
                    json!("true")
                );
                assert!(template["annotations"]["spindle.spinkube.dev/config-hash"].is_string());
                let svc = to_json(&r.service);
                assert_eq!(svc["metadata"]["annotations"], json!({"svc": "s"}));
                assert_eq!(svc["metadata"]["labels"], labels());
                let secret = to_json(r.runtime_config_secret.as_ref().expect("Secret"));
                assert!(secret["metadata"].get("annotations").is_none());
            },
        },
        Case {
            name: "volumes: runtime config, user volumes, then CA bundle",
            world: with_executor(otel_ca, |s| {
                s.volumes = Some(vec![Volume {
                    name: "scratch".into(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Default::default()
                }]);
                s.volume_mounts = Some(vec![VolumeMount {
                    name: "scratch".into(),
                    mount_path: "/tmp".into(),
                    ..Default::default()
                }]);
            }),
            check: |r| {
                assert_eq!(
                    pod_spec(r)["volumes"],
                    json!([
                        runtime_config_volume("hello-runtime-config"),
                        {"name": "scratch", "emptyDir": {}},
                        {"name": "spin-ca", "secret": {"secretName": "spin-ca", "items": [{"key": "ca-certificates.crt", "path": "ca-certificates.crt"}]}}
                    ])
                );
                assert_eq!(
                    container(r)["volumeMounts"],
                    json!([
                        runtime_config_mount(),
                        {"name": "scratch", "mountPath": "/tmp"},
                        {"name": "spin-ca", "mountPath": "/etc/ssl/certs/ca-certificates.crt", "subPath": "ca-certificates.crt", "readOnly": true}
                    ])
                );
            },
        },
        Case {
            name: "scheduling, identity and pull secrets",
            world: shim(|s| {
                s.image_pull_secrets = Some(vec![LocalObjectReference {
                    name: "regcred".into(),
                }]);
                s.service_account_name = Some("runner".into());
                s.node_selector = Some([("spin".to_owned(), "true".to_owned())].into());
                s.tolerations = Some(vec![Toleration {
                    key: Some("wasm".into()),
                    operator: Some("Exists".into()),
                    effect: Some("NoSchedule".into()),
                    ..Default::default()
                }]);
                s.affinity = Some(Affinity {
                    node_affinity: Some(NodeAffinity {
                        required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                            node_selector_terms: vec![NodeSelectorTerm {
                                match_expressions: Some(vec![NodeSelectorRequirement {
                                    key: "kubernetes.io/arch".into(),
                                    operator: "In".into(),
                                    values: Some(vec!["arm64".into()]),
                                }]),
                                match_fields: None,
                            }],
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }),
            check: |r| {
                let p = pod_spec(r);
                assert_eq!(p["imagePullSecrets"], json!([{"name": "regcred"}]));
                assert_eq!(p["serviceAccountName"], json!("runner"));
                assert_eq!(p["nodeSelector"], json!({"spin": "true"}));
                assert_eq!(
                    p["tolerations"],
                    json!([{"key": "wasm", "operator": "Exists", "effect": "NoSchedule"}])
                );
                assert_eq!(
                    p["affinity"],
                    json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}]}
                    ]}}})
                );
            },
        },
        Case {
            name: "loadFromSecret mounts the user's Secret and generates none",
            world: shim(|s| {
                s.runtime_config = Some(RuntimeConfig {
                    load_from_secret: Some("my-rc".into()),
                    ..Default::default()
                })
            })
            .secret("my-rc", secret(&[("runtime-config.toml", "")])),
            check: |r| {
                assert_eq!(r.runtime_config_secret, None);
                assert_eq!(
                    pod_spec(r)["volumes"],
                    json!([runtime_config_volume("my-rc")])
                );
                assert_eq!(
                    container(r)["volumeMounts"],
                    json!([runtime_config_mount()])
                );
            },
        },
        Case {
            name: "spintainer runs spin up with the app image",
            world: with_executor(spintainer_executor(), |s| {
                s.port = Some(3000);
                s.components = Some(vec!["api".into(), "web".into()]);
            }),
            check: |r| {
                let c = container(r);
                assert_eq!(c["image"], json!("ghcr.io/fermyon/spin:v3.6.3"));
                assert!(c.get("command").is_none(), "{c}");
                assert_eq!(
                    c["args"],
                    json!([
                        "up",
                        "--listen",
                        "0.0.0.0:3000",
                        "-f",
                        IMAGE,
                        "--runtime-config-file",
                        "/runtime-config.toml",
                        "--component-id",
                        "api",
                        "--component-id",
                        "web"
                    ])
                );
                assert_eq!(
                    c["ports"],
                    json!([{"name": "http-app", "containerPort": 3000, "protocol": "TCP"}])
                );
                assert_eq!(c["volumeMounts"], json!([runtime_config_mount()]));
                assert!(pod_spec(r).get("runtimeClassName").is_none());
            },
        },
        Case {
            name: "createDeployment false makes only the Service and Secret",
            world: with_executor(no_deployment_executor(), |s| {
                s.service_annotations = Some([("svc".to_owned(), "s".to_owned())].into())
            }),
            check: |r| {
                assert_eq!(r.deployment, None);
                let svc = to_json(&r.service);
                assert_eq!(svc["metadata"]["name"], json!("hello"));
                assert_eq!(svc["metadata"]["annotations"], json!({"svc": "s"}));
                assert_eq!(
                    svc["spec"]["selector"],
                    json!({"core.spinkube.dev/app.hello.status": "ready"})
                );
                assert!(r.runtime_config_secret.is_some());
            },
        },
    ]
}

#[test]
fn table_of_apps_renders_exact_fields() {
    let cases = cases();
    assert!(cases.len() >= 12);
    for case in cases {
        let r = render_world(&case.world);
        eprintln!("case: {}", case.name);
        (case.check)(&r);
    }
}

#[test]
fn every_object_serializes_with_api_version_and_kind() {
    // Server-side apply requires apiVersion and kind in the body.
    let r = render_world(&World::new(app_spec(|_| {})));
    let objects = [
        to_json(r.deployment.as_ref().expect("Deployment")),
        to_json(&r.service),
        to_json(r.runtime_config_secret.as_ref().expect("Secret")),
    ];
    let kinds: Vec<_> = objects
        .iter()
        .map(|o| (o["apiVersion"].clone(), o["kind"].clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (json!("apps/v1"), json!("Deployment")),
            (json!("v1"), json!("Service")),
            (json!("v1"), json!("Secret")),
        ]
    );
    for o in &objects {
        assert_eq!(o["metadata"]["namespace"], json!("apps"));
        assert_eq!(o["metadata"]["ownerReferences"], owner());
        assert_eq!(o["metadata"]["labels"], labels());
    }
}

#[test]
fn config_hash_annotation_rolls_pods_only_when_referenced_data_changes() {
    let app = app_spec(|s| {
        s.variables = Some(vec![SpinVar {
            name: "token".into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: "creds".into(),
                    key: "token".into(),
                    optional: None,
                }),
                ..Default::default()
            }),
        }]);
    });
    let template = |token: &str, other: &str| {
        let world =
            World::new(app.clone()).secret("creds", secret(&[("token", token), ("other", other)]));
        deployment_json(&render_world(&world))["spec"]["template"].clone()
    };
    let base = template("t1", "x");
    let hash = base["metadata"]["annotations"]["spindle.spinkube.dev/config-hash"].clone();
    assert!(hash.as_str().is_some_and(|h| h.len() == 32), "{hash}");
    // Same data: byte-identical template (no spurious rollout).
    assert_eq!(template("t1", "x"), base);
    // Unreferenced key changed: still identical.
    assert_eq!(template("t1", "y"), base);
    // Referenced value changed: only the hash annotation differs.
    let rolled = template("t2", "x");
    assert_ne!(
        rolled["metadata"]["annotations"]["spindle.spinkube.dev/config-hash"],
        hash
    );
    let mut rolled_without_hash = rolled.clone();
    rolled_without_hash["metadata"]["annotations"]["spindle.spinkube.dev/config-hash"] = hash;
    assert_eq!(rolled_without_hash, base);
}

#[test]
fn selector_helpers() {
    assert_eq!(
        labels::selector_string("hello"),
        "core.spinkube.dev/app-name=hello,core.spinkube.dev/app.hello.status=ready"
    );
    assert_eq!(
        labels::status_label_key("a-b"),
        "core.spinkube.dev/app.a-b.status"
    );
}
