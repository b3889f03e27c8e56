//! (a) A table of SpinApps → the children that land in the cluster: owner
//! references, labels, the pod template and the runtime-config TOML.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Secret, Service};
use kube::{Api, ResourceExt};
use spindle::api::SpinApp;

use crate::common::*;

/// Objects in the cluster for one app.
struct Children {
    app: SpinApp,
    deployment: Option<Deployment>,
    service: Service,
    secret: Option<Secret>,
}

impl Children {
    fn container(&self) -> &Container {
        let d = self.deployment.as_ref().expect("a Deployment");
        &d.spec.template.spec.as_ref().expect("pod spec").containers[0]
    }
    fn env(&self, name: &str) -> Option<String> {
        self.container()
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    }
    fn toml(&self) -> String {
        let secret = self.secret.as_ref().expect("a runtime-config Secret");
        let bytes = &secret.data.as_ref().expect("data")["runtime-config.toml"].0;
        String::from_utf8(bytes.clone()).expect("utf-8 TOML")
    }
}

type Check = fn(&Children);

fn case(
    name: &'static str,
    spec: &'static str,
    check: Check,
) -> (&'static str, &'static str, Check) {
    (name, spec, check)
}

const FIXTURES: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: db-creds}
stringData: {token: s3cr3t-token, redis-url: "redis://:pw-in-secret@redis.internal:6379"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {db-url: "libsql://db.example.com"}
---
apiVersion: v1
kind: Secret
metadata: {name: my-runtime-config}
stringData:
  runtime-config.toml: |
    [key_value_store.default]
    type = "spin"
---
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinAppExecutor
metadata: {name: spintainer}
spec:
  createDeployment: true
  deploymentConfig: {spinImage: "ghcr.io/fermyon/spin:v2.7.0"}
---
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinAppExecutor
metadata: {name: external}
spec: {createDeployment: false}
"#;

fn cases() -> Vec<(&'static str, &'static str, Check)> {
    vec![
        case(
            "minimal",
            "executor: containerd-shim-spin\nimage: ghcr.io/x/minimal:v1",
            |c| {
                let d = c.deployment.as_ref().unwrap();
                assert_eq!(d.spec.replicas, Some(1));
                let pod = d.spec.template.spec.as_ref().unwrap();
                assert_eq!(pod.runtime_class_name.as_deref(), Some(RUNTIME_CLASS));
                assert_eq!(c.container().image.as_deref(), Some("ghcr.io/x/minimal:v1"));
                let svc = c.service.spec.as_ref().unwrap();
                let port = &svc.ports.as_ref().unwrap()[0];
                assert_eq!(port.port, 80);
                assert_eq!(
                    svc.selector.as_ref().unwrap(),
                    &BTreeMap::from([(
                        "core.spinkube.dev/app.minimal.status".to_owned(),
                        "ready".to_owned()
                    )])
                );
                assert!(
                    c.secret.is_some(),
                    "every app without loadFromSecret gets a runtime-config Secret"
                );
            },
        ),
        case(
            "replicas",
            "executor: containerd-shim-spin\nimage: ghcr.io/x/r:v1\nreplicas: 3",
            |c| {
                assert_eq!(c.deployment.as_ref().unwrap().spec.replicas, Some(3));
            },
        ),
        case(
            "autoscaled",
            "executor: containerd-shim-spin\nimage: ghcr.io/x/a:v1\nenableAutoscaling: true",
            |c| {
                // Spindle must not own spec.replicas: an autoscaler does.
                let d = c.deployment.as_ref().unwrap();
                let ours = d
                    .managed_fields()
                    .iter()
                    .find(|m| m.manager.as_deref() == Some("spindle"))
                    .expect("spindle manages it");
                let fields = serde_json::to_string(&ours.fields_v1).unwrap();
                assert!(
                    !fields.contains("f:replicas"),
                    "spindle owns replicas: {fields}"
                );
            },
        ),
        case(
            "redis-kv",
            "executor: containerd-shim-spin\nimage: ghcr.io/x/kv:v1\nruntimeConfig:\n  keyValueStores:\n  - name: default\n    type: redis\n    options:\n    - {name: url, value: 'redis://redis.example:6379'}",
            |c| {
                let toml = c.toml();
                assert!(toml.contains("[key_value_store.default]"), "{toml}");
                assert!(toml.contains("type = \"redis\""), "{toml}");
                assert!(
                    toml.contains("url = \"redis://redis.example:6379\""),
                    "{toml}"
                );
            },
        ),
        case(
            "redis-url-from-secret",
            "executor: containerd-shim-spin\nimage: ghcr.io/x/kv:v1\nruntimeConfig:\n  keyValueStores:\n  - name: cache\n    type: redis\n    options:\n    - name: url\n      valueFrom: {secretKeyRef: {name: db-creds, key: redis-url}}",
            |c| {
                let toml = c.toml();
                assert!(toml.contains("[key_value_store.cache]"), "{toml}");
                assert!(
                    toml.contains("url = \"redis://:pw-in-secret@redis.internal:6379\""),
                    "{toml}"
                );
            },
        ),
        case(
            "sqlite-libsql",
            "executor: containerd-shim-spin\nimage: ghcr.io/x/db:v1\nruntimeConfig:\n  sqliteDatabases:\n  - name: default\n    type: libsql\n    options:\n    - name: url\n      valueFrom: {configMapKeyRef: {name: settings, key: db-url}}\n    - name: token\n      valueFrom: {secretKeyRef: {name: db-creds, key: token}}",
            |c| {
                let toml = c.toml();
                assert!(toml.contains("[sqlite_database.default]"), "{toml}");
                assert!(toml.contains("type = \"libsql\""), "{toml}");
                assert!(toml.contains("url = \"libsql://db.example.com\""), "{toml}");
                assert!(toml.contains("token = \"s3cr3t-token\""), "{toml}");
            },
        ),
        case(
            "sqlite-local",
            "executor: containerd-shim-spin\nimage: ghcr.io/x/db:v1\nruntimeConfig:\n  sqliteDatabases:\n  - {name: default, type: spin}",
            |c| {
                let toml = c.toml();
                assert!(
                    toml.contains("[sqlite_database.default]") && toml.contains("type = \"spin\""),
                    "{toml}"
                );
            },
        ),
        case(
            "variables",
            "executor: containerd-shim-spin\nimage: ghcr.io/x/v:v1\nvariables:\n- {name: greeting, value: hello}\n- name: api_token\n  valueFrom: {secretKeyRef: {name: db-creds, key: token}}",
            |c| {
                assert_eq!(c.env("SPIN_VARIABLE_GREETING").as_deref(), Some("hello"));
                let from = c
                    .container()
                    .env
                    .iter()
                    .flatten()
                    .find(|e| e.name == "SPIN_VARIABLE_API_TOKEN")
                    .unwrap();
                let r = from
                    .value_from
                    .as_ref()
                    .unwrap()
                    .secret_key_ref
                    .as_ref()
                    .unwrap();
                assert_eq!((r.name.as_str(), r.key.as_str()), ("db-creds", "token"));
                assert!(from.value.is_none(), "secret values stay with the kubelet");
            },
        ),
        case(
            "load-from-secret",
            "executor: containerd-shim-spin\nimage: ghcr.io/x/l:v1\nruntimeConfig: {loadFromSecret: my-runtime-config}",
            |c| {
                assert!(
                    c.secret.is_none(),
                    "no generated Secret with loadFromSecret"
                );
                let pod = c
                    .deployment
                    .as_ref()
                    .unwrap()
                    .spec
                    .template
                    .spec
                    .as_ref()
                    .unwrap();
                let uses = pod.volumes.iter().flatten().any(|v| {
                    v.secret.as_ref().and_then(|s| s.secret_name.as_deref())
                        == Some("my-runtime-config")
                });
                assert!(uses, "the user's Secret is mounted: {:?}", pod.volumes);
            },
        ),
        case(
            "annotations",
            "executor: containerd-shim-spin\nimage: ghcr.io/x/n:v1\ndeploymentAnnotations: {team: web}\npodAnnotations: {scrape: 'true'}\nserviceAnnotations: {lb: internal}\npodLabels: {tier: frontend}",
            |c| {
                let d = c.deployment.as_ref().unwrap();
                assert_eq!(d.annotations().get("team").map(String::as_str), Some("web"));
                let meta = d.spec.template.metadata.as_ref().unwrap();
                assert_eq!(
                    meta.annotations
                        .as_ref()
                        .unwrap()
                        .get("scrape")
                        .map(String::as_str),
                    Some("true")
                );
                assert_eq!(
                    meta.labels
                        .as_ref()
                        .unwrap()
                        .get("tier")
                        .map(String::as_str),
                    Some("frontend")
                );
                assert_eq!(
                    c.service.annotations().get("lb").map(String::as_str),
                    Some("internal")
                );
            },
        ),
        case(
            "limits",
            "executor: containerd-shim-spin\nimage: ghcr.io/x/m:v1\nresources: {limits: {memory: 128Mi, cpu: 500m}}\ninvocationLimits: {memory: 64Mi}",
            |c| {
                assert_eq!(
                    c.env("SPIN_MAX_INSTANCE_MEMORY").as_deref(),
                    Some("67108864")
                );
                let limits = c
                    .container()
                    .resources
                    .as_ref()
                    .unwrap()
                    .limits
                    .as_ref()
                    .unwrap();
                assert_eq!(limits["memory"].0, "128Mi");
            },
        ),
        case(
            "components",
            "executor: containerd-shim-spin\nimage: ghcr.io/x/c:v1\ncomponents: [api, web]",
            |c| {
                assert_eq!(
                    c.env("SPIN_COMPONENTS_TO_RETAIN").as_deref(),
                    Some("api,web")
                );
            },
        ),
        case(
            "spintainer",
            "executor: spintainer\nimage: ghcr.io/x/s:v1",
            |c| {
                let container = c.container();
                assert_eq!(
                    container.image.as_deref(),
                    Some("ghcr.io/fermyon/spin:v2.7.0")
                );
                let args = container.args.clone().unwrap_or_default();
                assert!(
                    args.contains(&"up".to_owned()) && args.contains(&"ghcr.io/x/s:v1".to_owned()),
                    "{args:?}"
                );
                let pod = c
                    .deployment
                    .as_ref()
                    .unwrap()
                    .spec
                    .template
                    .spec
                    .as_ref()
                    .unwrap();
                assert_eq!(pod.runtime_class_name, None);
            },
        ),
        case(
            "service-only",
            "executor: external\nimage: ghcr.io/x/e:v1",
            |c| {
                assert!(
                    c.deployment.is_none(),
                    "createDeployment: false makes no Deployment"
                );
                assert!(
                    has_condition(&c.app, "Ready", "True", None),
                    "{:?}",
                    c.app.status
                );
            },
        ),
        case(
            "custom-port",
            "executor: containerd-shim-spin\nimage: ghcr.io/x/p:v1\nport: 8080",
            |c| {
                assert_eq!(
                    c.env("SPIN_HTTP_LISTEN_ADDR").as_deref(),
                    Some("0.0.0.0:8080")
                );
                let port = &c.container().ports.as_ref().unwrap()[0];
                assert_eq!(port.container_port, 8080);
            },
        ),
    ]
}

#[tokio::test]
async fn table_of_apps_lands_in_the_cluster() {
    let ns = namespace_with_executor().await;
    ns.apply_yaml(FIXTURES).await.expect("fixtures");
    let op = Operator::start(&ns.name).await;
    let cases = cases();
    assert!(cases.len() >= 12);
    for (name, spec, _) in &cases {
        let indented: String = spec.lines().map(|l| format!("  {l}\n")).collect();
        ns.apply_yaml(&format!("apiVersion: core.spinkube.dev/v1alpha1\nkind: SpinApp\nmetadata: {{name: {name}}}\nspec:\n{indented}"))
            .await
            .unwrap_or_else(|e| panic!("applying {name}: {e:#}"));
    }
    let deployments: Api<Deployment> = ns.api();
    let services: Api<Service> = ns.api();
    let secrets: Api<Secret> = ns.api();
    for (name, _, check) in &cases {
        let app = wait_app(
            &ns,
            name,
            "children applied (status.serviceName set, no problems)",
            |a| {
                a.status.as_ref().is_some_and(|s| {
                    s.service_name.is_some() && s.observed_generation == a.metadata.generation
                })
            },
        )
        .await;
        let uid = app.uid().unwrap();
        let status = app.status.as_ref().unwrap();
        for t in [
            "SpecValid",
            "ExecutorReady",
            "ReferencesResolved",
            "RuntimeConfigReady",
        ] {
            assert!(
                has_condition(&app, t, "True", None),
                "{name}: {t} is not True: {status:?}"
            );
        }
        let deployment = deployments.get_opt(name).await.unwrap();
        let service = services
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("{name}: Service: {e}"));
        let secret = secrets
            .get_opt(&format!("{name}-runtime-config"))
            .await
            .unwrap();

        // Ownership and labels on every child.
        let children: Vec<(&str, &kube::api::ObjectMeta)> = [("Service", Some(&service.metadata))]
            .into_iter()
            .chain([("Deployment", deployment.as_ref().map(|d| &d.metadata))])
            .chain([("Secret", secret.as_ref().map(|s| &s.metadata))])
            .filter_map(|(k, m)| m.map(|m| (k, m)))
            .collect();
        for (kind, meta) in children {
            let owner = meta
                .owner_references
                .iter()
                .flatten()
                .find(|r| r.uid == uid);
            let owner =
                owner.unwrap_or_else(|| panic!("{name}: {kind} has no ownerReference to the app"));
            assert_eq!(
                (owner.kind.as_str(), owner.controller),
                ("SpinApp", Some(true)),
                "{name}: {kind}"
            );
            let labels = meta.labels.clone().unwrap_or_default();
            assert_eq!(
                labels
                    .get("app.kubernetes.io/managed-by")
                    .map(String::as_str),
                Some("spindle"),
                "{name}: {kind}"
            );
            assert_eq!(
                labels.get("core.spinkube.dev/app-name"),
                Some(&name.to_string()),
                "{name}: {kind}"
            );
        }
        if let Some(d) = &deployment {
            let pod_annotations = d
                .spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.clone())
                .unwrap_or_default();
            let hash = pod_annotations.get("spindle.spinkube.dev/config-hash");
            assert!(
                hash.is_some_and(|h| !h.is_empty()),
                "{name}: pod template has no config hash"
            );
            assert_eq!(status.deployment_name.as_deref(), Some(*name));
            let selector = status.selector.clone().unwrap_or_default();
            assert!(
                selector.contains(&format!("core.spinkube.dev/app-name={name}")),
                "{name}: selector {selector}"
            );
        }
        assert_eq!(status.service_name.as_deref(), Some(*name));
        assert_eq!(
            status.active_scheduler.as_deref(),
            Some(app.spec.executor.as_str())
        );
        // Secret values never reach the status.
        let status_json = serde_json::to_string(status).unwrap();
        assert!(
            !status_json.contains("s3cr3t") && !status_json.contains("pw-in-secret"),
            "{name}: {status_json}"
        );

        check(&Children {
            app,
            deployment,
            service,
            secret,
        });
    }
    // ... nor events.
    for e in events_about(&ns, "sqlite-libsql")
        .await
        .iter()
        .chain(events_about(&ns, "redis-url-from-secret").await.iter())
    {
        let note = e.note.clone().unwrap_or_default();
        assert!(
            !note.contains("s3cr3t") && !note.contains("pw-in-secret"),
            "{note}"
        );
    }
    op.stop().await;
    ns.cleanup().await;
}
