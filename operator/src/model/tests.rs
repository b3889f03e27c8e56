//! Tests of [`App::build`] and [`references`].

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    ConfigMapKeySelector, EnvVarSource, ObjectFieldSelector, SecretKeySelector, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use pretty_assertions::assert_eq;

use super::testing::*;
use super::*;
use crate::api::{
    HealthChecks, HttpHealthProbe, HttpHealthProbeHeader, KeyValueStoreConfig, OtelConfig,
    Resources, RuntimeConfig, RuntimeConfigOption, RuntimeConfigVarSource, SpinAppSpec, SpinVar,
};

fn var(name: &str, value: &str) -> SpinVar {
    SpinVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn secret_var(name: &str, secret: &str, key: &str, optional: Option<bool>) -> SpinVar {
    SpinVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional,
            }),
            ..Default::default()
        }),
    }
}

fn cm_var(name: &str, cm: &str, key: &str) -> SpinVar {
    SpinVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: cm.into(),
                key: key.into(),
                optional: None,
            }),
            ..Default::default()
        }),
    }
}

fn redis_from_secret(secret: &str) -> RuntimeConfig {
    RuntimeConfig {
        key_value_stores: Some(vec![KeyValueStoreConfig {
            name: "default".into(),
            type_: "redis".into(),
            options: Some(vec![RuntimeConfigOption {
                name: "url".into(),
                value: None,
                value_from: Some(RuntimeConfigVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.into(),
                        key: "url".into(),
                        optional: None,
                    }),
                    config_map_key_ref: None,
                }),
            }]),
        }]),
        ..Default::default()
    }
}

fn app_with(f: impl FnOnce(&mut SpinAppSpec)) -> crate::api::SpinApp {
    let mut s = spec("ghcr.io/example/hello:v1");
    f(&mut s);
    spin_app("hello", s)
}

fn quantities(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, Quantity>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
            .collect(),
    )
}

#[test]
fn minimal_app_gets_spin_operator_defaults() {
    let app = World::new(app_with(|_| {})).app();
    let expected_hash = config_hash(RuntimeConfigMaterial::Generated(""), &[]);
    assert_eq!(
        app,
        App {
            name: "hello".into(),
            namespace: "apps".into(),
            uid: "uid-1234".into(),
            generation: Some(3),
            image: "ghcr.io/example/hello:v1".into(),
            executor_name: "containerd-shim-spin".into(),
            executor: ExecutorMode::Shim {
                runtime_class_name: "wasmtime-spin-v2".into()
            },
            otel_env: vec![],
            ca_cert_secret: None,
            replicas: Replicas::Fixed(1),
            port: 80,
            readiness_probe: None,
            liveness_probe: None,
            resources: None,
            invocation_memory_bytes: None,
            variables: vec![],
            components: vec![],
            runtime_config: RuntimeConfigSource::Generated {
                toml: String::new()
            },
            config_hash: expected_hash,
            pod_labels: BTreeMap::new(),
            pod_annotations: BTreeMap::new(),
            deployment_annotations: BTreeMap::new(),
            service_annotations: BTreeMap::new(),
            volumes: vec![],
            volume_mounts: vec![],
            image_pull_secrets: vec![],
            service_account_name: "default".into(),
            node_selector: BTreeMap::new(),
            tolerations: vec![],
            affinity: None,
        }
    );
}

#[test]
fn executor_modes() {
    let world = World::new(app_with(|_| {}));
    assert_eq!(
        world.executor(Some(spintainer_executor())).app().executor,
        ExecutorMode::Spintainer {
            spin_image: "ghcr.io/fermyon/spin:v3.6.3".into()
        }
    );
    let world = World::new(app_with(|_| {}));
    assert_eq!(
        world
            .executor(Some(no_deployment_executor()))
            .app()
            .executor,
        ExecutorMode::NoDeployment
    );
    // Not checked: assume it exists.
    let mut world = World::new(app_with(|_| {}));
    world.runtime_class_exists = None;
    assert_eq!(
        world.app().executor,
        ExecutorMode::Shim {
            runtime_class_name: "wasmtime-spin-v2".into()
        }
    );
}

#[test]
fn executor_problems() {
    let problems = World::new(app_with(|_| {})).executor(None).problems();
    assert_eq!(
        problems,
        vec![Problem::MissingExecutor {
            executor: "containerd-shim-spin".into(),
            namespace: "apps".into()
        }]
    );
    assert_eq!(problems[0].condition_type(), "ExecutorReady");
    assert_eq!(problems[0].reason(), "MissingExecutor");
    assert!(problems[0].is_transient());
    assert_eq!(
        problems[0].message(),
        "SpinAppExecutor \"containerd-shim-spin\" does not exist in namespace \"apps\"; create it there or set spec.executor to an existing executor"
    );

    let mut world = World::new(app_with(|_| {}));
    world.runtime_class_exists = Some(false);
    let problems = world.problems();
    assert_eq!(
        problems,
        vec![Problem::RuntimeClassNotFound {
            executor: "containerd-shim-spin".into(),
            runtime_class: "wasmtime-spin-v2".into()
        }]
    );
    assert!(problems[0].is_transient());

    let mut no_config = shim_executor();
    no_config.spec.deployment_config = None;
    let problems = World::new(app_with(|_| {}))
        .executor(Some(no_config))
        .problems();
    assert_eq!(
        problems,
        vec![Problem::ExecutorHasNoDeploymentConfig {
            executor: "containerd-shim-spin".into()
        }]
    );
    assert_eq!(problems[0].reason(), "ExecutorHasNoDeploymentConfig");
    assert!(!problems[0].is_transient());

    let mut both = shim_executor();
    if let Some(c) = both.spec.deployment_config.as_mut() {
        c.spin_image = Some("spin:v3".into());
    }
    let problems = World::new(app_with(|_| {})).executor(Some(both)).problems();
    assert_eq!(
        problems,
        vec![Problem::ConflictingDeploymentConfig {
            executor: "containerd-shim-spin".into()
        }]
    );
}

#[test]
fn annotations_need_a_deployment() {
    let app = app_with(|s| {
        s.deployment_annotations = Some([("a".to_owned(), "1".to_owned())].into());
        s.pod_annotations = Some([("b".to_owned(), "2".to_owned())].into());
        s.service_annotations = Some([("c".to_owned(), "3".to_owned())].into());
    });
    let problems = World::new(app.clone())
        .executor(Some(no_deployment_executor()))
        .problems();
    assert_eq!(
        problems,
        vec![Problem::AnnotationsWithoutDeployment {
            executor: "containerd-shim-spin".into(),
            fields: vec!["deploymentAnnotations", "podAnnotations"]
        }]
    );
    assert_eq!(problems[0].condition_type(), "SpecValid");
    assert_eq!(
        problems[0].message(),
        "spec.deploymentAnnotations and spec.podAnnotations set, but SpinAppExecutor \"containerd-shim-spin\" has createDeployment: false so there is no Deployment or pod to annotate; remove them"
    );
    // Service annotations alone are fine: the Service is still made.
    let only_service =
        app_with(|s| s.service_annotations = Some([("c".to_owned(), "3".to_owned())].into()));
    let built = World::new(only_service)
        .executor(Some(no_deployment_executor()))
        .app();
    assert_eq!(
        built.service_annotations,
        BTreeMap::from([("c".to_owned(), "3".to_owned())])
    );
    // With a Deployment all three are kept.
    let built = World::new(app).app();
    assert_eq!(
        built.deployment_annotations,
        BTreeMap::from([("a".to_owned(), "1".to_owned())])
    );
    assert_eq!(
        built.pod_annotations,
        BTreeMap::from([("b".to_owned(), "2".to_owned())])
    );
}

#[test]
fn ca_certs_and_otel_from_the_executor() {
    let mut e = shim_executor();
    if let Some(c) = e.spec.deployment_config.as_mut() {
        c.install_default_ca_certs = Some(true);
        c.otel = Some(OtelConfig {
            exporter_otlp_endpoint: Some("http://otel:4318".into()),
            exporter_otlp_traces_endpoint: Some(String::new()),
            exporter_otlp_metrics_endpoint: None,
            exporter_otlp_logs_endpoint: Some("http://logs:4318".into()),
        });
    }
    let app = World::new(app_with(|_| {})).executor(Some(e.clone())).app();
    assert_eq!(app.ca_cert_secret.as_deref(), Some("spin-ca"));
    assert_eq!(
        app.otel_env,
        vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                "http://otel:4318".to_owned()
            ),
            (
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT".to_owned(),
                "http://logs:4318".to_owned()
            ),
        ]
    );
    if let Some(c) = e.spec.deployment_config.as_mut() {
        c.ca_cert_secret = Some("my-ca".into());
        c.install_default_ca_certs = None;
    }
    assert_eq!(
        World::new(app_with(|_| {}))
            .executor(Some(e))
            .app()
            .ca_cert_secret
            .as_deref(),
        Some("my-ca")
    );
}

#[test]
fn replicas_port_probes_and_service_account() {
    let app = World::new(app_with(|s| {
        s.replicas = Some(0);
        s.port = Some(8080);
        s.service_account_name = Some("runner".into());
        s.checks = Some(HealthChecks {
            readiness: Some(crate::api::HealthProbe {
                http_get: Some(HttpHealthProbe {
                    path: "/ready".into(),
                    http_headers: Some(vec![HttpHealthProbeHeader {
                        name: "X-Probe".into(),
                        value: "1".into(),
                    }]),
                }),
                period_seconds: Some(5),
                ..Default::default()
            }),
            // No httpGet: no probe, as in spin-operator.
            liveness: Some(crate::api::HealthProbe {
                initial_delay_seconds: Some(1),
                ..Default::default()
            }),
        });
    }))
    .app();
    assert_eq!(app.replicas, Replicas::Fixed(0));
    assert_eq!(app.port, 8080);
    assert_eq!(app.service_account_name, "runner");
    assert_eq!(
        app.readiness_probe,
        Some(HttpProbe {
            path: "/ready".into(),
            headers: vec![("X-Probe".into(), "1".into())],
            initial_delay_seconds: 10,
            timeout_seconds: 1,
            period_seconds: 5,
            success_threshold: 1,
            failure_threshold: 3,
        })
    );
    assert_eq!(app.liveness_probe, None);

    let app = World::new(app_with(|s| s.enable_autoscaling = Some(true))).app();
    assert_eq!(app.replicas, Replicas::Autoscaled);
    let app = World::new(app_with(|s| s.enable_autoscaling = Some(false))).app();
    assert_eq!(app.replicas, Replicas::Fixed(1));
}

#[test]
fn invalid_plain_fields_are_problems_not_panics() {
    let problems = World::new(app_with(|s| {
        s.image = " ".into();
        s.replicas = Some(-1);
        s.port = Some(70000);
    }))
    .problems();
    assert_eq!(
        problems,
        vec![
            Problem::InvalidImage,
            Problem::InvalidReplicas { replicas: -1 },
            Problem::InvalidPort { port: 70000 }
        ]
    );

    let problems = World::new(app_with(|s| {
        s.replicas = Some(2);
        s.enable_autoscaling = Some(true);
        s.components = Some(vec!["a,b".into(), String::new()]);
    }))
    .problems();
    assert_eq!(
        problems,
        vec![
            Problem::ReplicasWithAutoscaling,
            Problem::InvalidComponentName { name: "a,b".into() },
            Problem::InvalidComponentName {
                name: String::new()
            },
        ]
    );
    assert!(problems.iter().all(|p| p.condition_type() == "SpecValid"));

    let mut app = app_with(|_| {});
    app.metadata.uid = None;
    app.metadata.namespace = Some(String::new());
    assert_eq!(
        World::new(app).problems(),
        vec![
            Problem::IncompleteMetadata { field: "namespace" },
            Problem::IncompleteMetadata { field: "uid" }
        ]
    );
}

#[test]
fn invocation_memory_is_checked_against_limit_then_request() {
    let with = |limits: &[(&str, &str)], requests: &[(&str, &str)], memory: &str| {
        app_with(|s| {
            s.invocation_limits = Some([("memory".to_owned(), memory.to_owned())].into());
            s.resources = Some(Resources {
                limits: if limits.is_empty() {
                    None
                } else {
                    quantities(limits)
                },
                requests: if requests.is_empty() {
                    None
                } else {
                    quantities(requests)
                },
            });
        })
    };
    let app = World::new(with(&[("memory", "128Mi"), ("cpu", "500m")], &[], "64Mi")).app();
    assert_eq!(app.invocation_memory_bytes, Some(64 << 20));
    assert_eq!(
        app.resources.as_ref().and_then(|r| r.limits.clone()),
        quantities(&[("cpu", "500m"), ("memory", "128Mi")])
    );
    // Equal is allowed.
    assert_eq!(
        World::new(with(&[("memory", "1Gi")], &[], "1024Mi"))
            .app()
            .invocation_memory_bytes,
        Some(1 << 30)
    );
    // The limit wins over the request.
    assert_eq!(
        World::new(with(&[("memory", "1Gi")], &[("memory", "64Mi")], "512M"))
            .app()
            .invocation_memory_bytes,
        Some(512_000_000)
    );
    // Without limits and requests: any size.
    assert_eq!(
        World::new(with(&[], &[], "1.5Gi"))
            .app()
            .invocation_memory_bytes,
        Some(1_610_612_736)
    );

    let problems = World::new(with(&[("memory", "64Mi")], &[], "1G")).problems();
    assert_eq!(
        problems,
        vec![Problem::InvocationMemoryExceedsLimit {
            invocation: "1G".into(),
            bound_field: "resources.limits.memory",
            bound: "64Mi".into()
        }]
    );
    assert_eq!(problems[0].reason(), "InvocationMemoryExceedsLimit");
    assert_eq!(
        problems[0].message(),
        "spec.invocationLimits.memory (1G) exceeds spec.resources.limits.memory (64Mi); lower it or raise the container memory"
    );
    let problems = World::new(with(&[], &[("memory", "100M")], "100Mi")).problems();
    assert_eq!(
        problems,
        vec![Problem::InvocationMemoryExceedsLimit {
            invocation: "100Mi".into(),
            bound_field: "resources.requests.memory",
            bound: "100M".into()
        }]
    );
    let problems = World::new(with(&[], &[], "lots")).problems();
    assert_eq!(
        problems,
        vec![Problem::InvalidQuantity {
            field: "spec.invocationLimits.memory".into(),
            value: "lots".into(),
            detail: "no digits".into()
        }]
    );
    assert_eq!(problems[0].reason(), "InvalidQuantity");
    let problems = World::new(with(&[("memory", "64MB")], &[], "1Mi")).problems();
    assert!(
        matches!(&problems[..], [Problem::InvalidQuantity { field, .. }] if field == "spec.resources.limits.memory")
    );
}

#[test]
fn variables_become_env_in_spec_order() {
    let world = World::new(app_with(|s| {
        s.variables = Some(vec![
            var("greeting", "hello"),
            secret_var("api_key", "creds", "key", None),
            cm_var("Mode", "settings", "mode"),
            SpinVar {
                name: "empty".into(),
                value: None,
                value_from: None,
            },
            SpinVar {
                name: "pod".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.name".into(),
                        api_version: None,
                    }),
                    ..Default::default()
                }),
            },
        ]);
    }))
    .secret("creds", secret(&[("key", "s3cr3t")]))
    .config_map("settings", config_map(&[("mode", "fast")]));
    let app = world.app();
    let names: Vec<_> = app.variables.iter().map(|v| v.env_name.as_str()).collect();
    assert_eq!(
        names,
        [
            "SPIN_VARIABLE_GREETING",
            "SPIN_VARIABLE_API_KEY",
            "SPIN_VARIABLE_MODE",
            "SPIN_VARIABLE_EMPTY",
            "SPIN_VARIABLE_POD"
        ]
    );
    assert_eq!(
        app.variables[0].value,
        VariableValue::Literal("hello".into())
    );
    assert!(
        matches!(&app.variables[1].value, VariableValue::From(f) if f.secret_key_ref.as_ref().is_some_and(|s| s.name == "creds"))
    );
    assert_eq!(
        app.variables[3].value,
        VariableValue::Literal(String::new())
    );
    // The kubelet resolves valueFrom: the model never copies the value.
    assert!(!format!("{app:?}").contains("s3cr3t"));
}

#[test]
fn variable_problems() {
    let problems = World::new(app_with(|s| {
        s.variables = Some(vec![
            var("ok", "1"),
            var("OK", "2"),
            var("bad-name", "3"),
            var("9lives", "4"),
            SpinVar {
                name: "both".into(),
                value: Some("x".into()),
                value_from: Some(EnvVarSource::default()),
            },
            secret_var("gone", "missing", "k", None),
            secret_var("nokey", "creds", "other", None),
            secret_var("maybe", "missing", "k", Some(true)),
            cm_var("cm", "nocm", "k"),
            cm_var("cmkey", "settings", "nokey"),
            secret_var("nameless", "", "k", None),
        ]);
    }))
    .secret("creds", secret(&[("key", "s3cr3t")]))
    .config_map("settings", config_map(&[("mode", "fast")]))
    .problems();
    assert_eq!(
        problems,
        vec![
            Problem::DuplicateVariable { name: "OK".into() },
            Problem::InvalidVariableName {
                name: "bad-name".into()
            },
            Problem::InvalidVariableName {
                name: "9lives".into()
            },
            Problem::InvalidVariable {
                name: "both".into()
            },
            Problem::SecretNotFound {
                name: "missing".into(),
                used_by: "variables[gone]".into()
            },
            Problem::SecretKeyNotFound {
                name: "creds".into(),
                key: "other".into(),
                used_by: "variables[nokey]".into()
            },
            Problem::ConfigMapNotFound {
                name: "nocm".into(),
                used_by: "variables[cm]".into()
            },
            Problem::ConfigMapKeyNotFound {
                name: "settings".into(),
                key: "nokey".into(),
                used_by: "variables[cmkey]".into()
            },
            Problem::InvalidReference {
                used_by: "variables[nameless]".into(),
                detail: "valueFrom.secretKeyRef.name is empty"
            },
        ]
    );
    for p in &problems {
        assert!(!p.message().contains("s3cr3t"));
    }
}

#[test]
fn reserved_names_are_problems() {
    let problems = World::new(app_with(|s| {
        s.volumes = Some(vec![Volume {
            name: "spin-data".into(),
            ..Default::default()
        }]);
        s.volume_mounts = Some(vec![
            VolumeMount {
                name: "spin-data".into(),
                mount_path: "/data".into(),
                ..Default::default()
            },
            VolumeMount {
                name: "cfg".into(),
                mount_path: "/runtime-config.toml".into(),
                ..Default::default()
            },
        ]);
        s.pod_labels = Some([("core.spinkube.dev/app-name".to_owned(), "x".to_owned())].into());
        s.pod_annotations = Some([(CONFIG_HASH_ANNOTATION.to_owned(), "x".to_owned())].into());
    }))
    .problems();
    assert_eq!(
        problems,
        vec![
            Problem::ReservedPodLabel {
                key: "core.spinkube.dev/app-name".into()
            },
            Problem::ReservedPodAnnotation {
                key: CONFIG_HASH_ANNOTATION.into()
            },
            Problem::ReservedVolumeName {
                field: "volumes",
                name: "spin-data".into()
            },
            Problem::ReservedVolumeName {
                field: "volumeMounts",
                name: "spin-data".into()
            },
            Problem::ReservedMountPath {
                path: "/runtime-config.toml".into()
            },
        ]
    );

    // The CA path is reserved only when a CA bundle is mounted.
    let ca_mount = app_with(|s| {
        s.volume_mounts = Some(vec![VolumeMount {
            name: "ca".into(),
            mount_path: CA_CERT_PATH.into(),
            ..Default::default()
        }]);
    });
    assert_eq!(World::new(ca_mount.clone()).app().volume_mounts.len(), 1);
    let mut e = shim_executor();
    if let Some(c) = e.spec.deployment_config.as_mut() {
        c.ca_cert_secret = Some("my-ca".into());
    }
    assert_eq!(
        World::new(ca_mount).executor(Some(e)).problems(),
        vec![Problem::ReservedMountPath {
            path: CA_CERT_PATH.into()
        }]
    );
}

#[test]
fn runtime_config_is_rendered_into_the_model() {
    let world = World::new(app_with(|s| {
        s.runtime_config = Some(redis_from_secret("redis"))
    }))
    .secret("redis", secret(&[("url", "redis://:pw@redis:6379")]));
    let app = world.app();
    assert_eq!(
        app.runtime_config,
        RuntimeConfigSource::Generated {
            toml: "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://:pw@redis:6379\"\n"
                .into()
        }
    );
    // Debug output (logs) never shows the TOML.
    let debug = format!("{app:?}");
    assert!(!debug.contains("redis://"), "{debug}");
    assert!(
        debug.contains("Generated { toml: <72 bytes redacted> }"),
        "{debug}"
    );
}

#[test]
fn runtime_config_problems_are_reported_with_others() {
    let problems = World::new(app_with(|s| {
        s.image = String::new();
        s.runtime_config = Some(redis_from_secret("nope"));
    }))
    .executor(None)
    .problems();
    assert_eq!(
        problems,
        vec![
            Problem::MissingExecutor {
                executor: "containerd-shim-spin".into(),
                namespace: "apps".into()
            },
            Problem::InvalidImage,
            Problem::SecretNotFound {
                name: "nope".into(),
                used_by: "runtimeConfig.keyValueStores[default].options[url]".into()
            },
        ]
    );
    let problems = Problems::from_vec(problems).expect("non-empty");
    assert!(!problems.is_transient());
}

#[test]
fn load_from_secret_replaces_typed_config() {
    let rc = RuntimeConfig {
        load_from_secret: Some("my-rc".into()),
        ..redis_from_secret("ignored")
    };
    let app = app_with(|s| s.runtime_config = Some(rc));
    let world = World::new(app.clone()).secret(
        "my-rc",
        secret(&[("runtime-config.toml", "[key_value_store.default]\n")]),
    );
    let built = world.app();
    assert_eq!(
        built.runtime_config,
        RuntimeConfigSource::FromSecret {
            name: "my-rc".into()
        }
    );

    // Content changes roll the pods: subPath mounts never see Secret updates.
    let changed = World::new(app.clone())
        .secret("my-rc", secret(&[("runtime-config.toml", "# other\n")]))
        .app();
    assert_ne!(changed.config_hash, built.config_hash);

    let problems = World::new(app.clone()).problems();
    assert_eq!(
        problems,
        vec![Problem::SecretNotFound {
            name: "my-rc".into(),
            used_by: "runtimeConfig.loadFromSecret".into()
        }]
    );
    let problems = World::new(app)
        .secret("my-rc", secret(&[("other", "x")]))
        .problems();
    assert_eq!(
        problems,
        vec![Problem::SecretKeyNotFound {
            name: "my-rc".into(),
            key: "runtime-config.toml".into(),
            used_by: "runtimeConfig.loadFromSecret".into()
        }]
    );
}

#[test]
fn config_hash_follows_referenced_values_only() {
    let app = app_with(|s| {
        s.runtime_config = Some(redis_from_secret("redis"));
        s.variables = Some(vec![
            secret_var("token", "creds", "token", None),
            cm_var("mode", "settings", "mode"),
            secret_var("opt", "absent", "k", Some(true)),
        ]);
    });
    let world = |redis: &str, token: &str, extra: &str, mode: &str| {
        World::new(app.clone())
            .secret("redis", secret(&[("url", redis)]))
            .secret("creds", secret(&[("token", token), ("unused", extra)]))
            .config_map("settings", config_map(&[("mode", mode)]))
            .app()
            .config_hash
    };
    let base = world("redis://r:6379", "t1", "x", "fast");
    assert_eq!(base.len(), 32);
    // Deterministic.
    assert_eq!(world("redis://r:6379", "t1", "x", "fast"), base);
    // An unreferenced key of a referenced Secret does not roll the pods.
    assert_eq!(world("redis://r:6379", "t1", "changed", "fast"), base);
    // Every referenced value does.
    assert_ne!(world("redis://r:6379", "t2", "x", "fast"), base);
    assert_ne!(world("redis://r:6380", "t1", "x", "fast"), base);
    assert_ne!(world("redis://r:6379", "t1", "x", "slow"), base);
    // The hash never contains the values themselves.
    assert!(!base.contains("t1"));

    // An optional reference appearing changes it too.
    let with_opt = World::new(app.clone())
        .secret("redis", secret(&[("url", "redis://r:6379")]))
        .secret("creds", secret(&[("token", "t1"), ("unused", "x")]))
        .config_map("settings", config_map(&[("mode", "fast")]))
        .secret("absent", secret(&[("k", "v")]))
        .app();
    assert_ne!(with_opt.config_hash, base);

    // Unrelated spec changes leave it alone (they change the template anyway).
    let mut other = app.clone();
    other.spec.replicas = Some(5);
    let again = World::new(other)
        .secret("redis", secret(&[("url", "redis://r:6379")]))
        .secret("creds", secret(&[("token", "t1"), ("unused", "x")]))
        .config_map("settings", config_map(&[("mode", "fast")]))
        .app();
    assert_eq!(again.config_hash, base);
}

#[test]
fn references_lists_what_the_controller_must_fetch() {
    let mut rc = redis_from_secret("redis");
    rc.llm_compute = Some(crate::api::LlmComputeConfig {
        type_: "remote_http".into(),
        options: Some(vec![RuntimeConfigOption {
            name: "url".into(),
            value: None,
            value_from: Some(RuntimeConfigVarSource {
                secret_key_ref: None,
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: "llm".into(),
                    key: "url".into(),
                    optional: None,
                }),
            }),
        }]),
    });
    let app = app_with(|s| {
        s.runtime_config = Some(rc.clone());
        s.variables = Some(vec![
            var("plain", "x"),
            secret_var("a", "creds", "k", None),
            secret_var("b", "creds", "k2", None),
            cm_var("c", "settings", "k"),
            secret_var("d", "", "k", None),
        ]);
    });
    assert_eq!(
        references(&app),
        References {
            secrets: BTreeSet::from(["creds".to_owned(), "redis".to_owned()]),
            config_maps: BTreeSet::from(["llm".to_owned(), "settings".to_owned()]),
        }
    );

    // loadFromSecret replaces the typed config, so its references are not needed.
    let app = app_with(|s| {
        s.runtime_config = Some(RuntimeConfig {
            load_from_secret: Some("rc".into()),
            ..rc
        })
    });
    assert_eq!(
        references(&app),
        References {
            secrets: BTreeSet::from(["rc".to_owned()]),
            config_maps: BTreeSet::new()
        }
    );
    assert_eq!(references(&app_with(|_| {})), References::default());
}
