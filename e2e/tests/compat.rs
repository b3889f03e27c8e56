//! SpinApps of the legacy group `core.spinoperator.dev` (issue #8) against a
//! real kube-apiserver, with the operator running in this process: the
//! article's manifest, verbatim, produces exactly the objects of its
//! canonical twin (made by `spindle convert`), invalid variants are flagged
//! like their twins, status goes back to the legacy object, and a name clash
//! between the two groups is a condition on the newer object, never a fight.
//!
//! Needs `SPINDLE_TEST_KUBECONFIG` (run `e2e/scripts/test.sh`).

#[path = "reconciler/common.rs"]
#[allow(dead_code)]
mod common;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::DeleteParams;
use kube::{Resource, ResourceExt};
use serde_json::Value;
use spindle::api::compat::LegacySpinApp;
use spindle::api::{SpinApp, SpinAppStatus};
use spindle_e2e::{TestNamespace, api_status, wait_for};

use common::{Operator, TIMEOUT, events_about, namespace_with_executor, wait_app};

/// The manifest from the issue (and the article), verbatim.
const ARTICLE: &str = r#"apiVersion: core.spinoperator.dev/v1alpha1
kind: SpinApp
metadata:
  name: inference-edge
spec:
  image: "ghcr.io/my-org/inference:v1.0"
  replicas: 3
  executor: containerd-shim-spin
  runtime-config:
    key_value_stores:
      default:
        type: redis
        url: redis://redis:6379
"#;

const LEGACY_API_VERSION: &str = "core.spinoperator.dev/v1alpha1";
const CANONICAL_API_VERSION: &str = "core.spinkube.dev/v1alpha1";

/// `spindle convert -f -` with `yaml` on stdin.
fn convert_with_cli(yaml: &str) -> String {
    use std::io::Write as _;
    let bin = spindle_e2e::spindle_bin();
    let mut child = std::process::Command::new(&bin)
        .args(["convert", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "running {} (build it with cargo build -p spindle): {e}",
                bin.display()
            )
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("writing stdin");
    let out = child.wait_with_output().expect("spindle convert");
    assert!(
        out.status.success(),
        "spindle convert failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

async fn legacy(ns: &TestNamespace, name: &str) -> Option<LegacySpinApp> {
    ns.api::<LegacySpinApp>().get_opt(name).await.ok().flatten()
}

/// Wait until the legacy object satisfies `check`.
async fn wait_legacy(
    ns: &TestNamespace,
    name: &str,
    what: &str,
    check: impl Fn(&LegacySpinApp) -> bool,
) -> LegacySpinApp {
    let result = wait_for(
        &format!("legacy SpinApp {name}: {what}"),
        TIMEOUT,
        || async { legacy(ns, name).await.filter(|a| check(a)) },
    )
    .await;
    match result {
        Ok(app) => app,
        Err(e) => panic!(
            "{e}\nlast seen status: {:#?}",
            legacy(ns, name).await.and_then(|a| a.status)
        ),
    }
}

fn condition<'a>(
    status: Option<&'a SpinAppStatus>,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    status?.conditions.iter().find(|c| c.type_ == type_)
}

/// Conditions without timestamps, for comparing two objects.
fn conditions(status: Option<&SpinAppStatus>) -> Vec<(String, String, String, String)> {
    let mut out: Vec<_> = status
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            (
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                c.message.clone(),
            )
        })
        .collect();
    out.sort();
    out
}

/// A child as JSON without what differs between two namespaces and owners:
/// identity, owner references, the applied-hash (it covers them), status,
/// and the Service's allocated IPs.
fn comparable<K: serde::Serialize>(obj: &K) -> Value {
    let mut v = serde_json::to_value(obj).unwrap();
    if let Some(meta) = v["metadata"].as_object_mut() {
        for f in [
            "namespace",
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generation",
            "managedFields",
            "ownerReferences",
        ] {
            meta.remove(f);
        }
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove("spindle.spinkube.dev/applied-hash");
            a.remove("deployment.kubernetes.io/revision");
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    if let Some(spec) = v["spec"].as_object_mut() {
        for f in ["clusterIP", "clusterIPs"] {
            spec.remove(f);
        }
    }
    v
}

/// The single controller ownerReference of `obj`: (apiVersion, uid).
fn controller_owner<K: Resource>(obj: &K) -> (String, String) {
    let owners = obj.owner_references();
    assert_eq!(owners.len(), 1, "one owner: {owners:?}");
    assert_eq!(owners[0].controller, Some(true));
    (owners[0].api_version.clone(), owners[0].uid.clone())
}

async fn children(ns: &TestNamespace, name: &str) -> (Deployment, Service, Secret) {
    wait_for(
        &format!("children of {name} in {}", ns.name),
        TIMEOUT,
        || async {
            let d = ns.api::<Deployment>().get_opt(name).await.ok()??;
            let s = ns.api::<Service>().get_opt(name).await.ok()??;
            let sec = ns
                .api::<Secret>()
                .get_opt(&format!("{name}-runtime-config"))
                .await
                .ok()??;
            Some((d, s, sec))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn article_manifest_runs_like_its_canonical_twin() {
    let (old_ns, new_ns) = (
        namespace_with_executor().await,
        namespace_with_executor().await,
    );
    let (op_old, op_new) = (
        Operator::start(&old_ns.name).await,
        Operator::start(&new_ns.name).await,
    );

    // The article, verbatim, in one namespace; `spindle convert` of it in the other.
    old_ns
        .apply_yaml(ARTICLE)
        .await
        .expect("the article's manifest applies");
    let twin = convert_with_cli(ARTICLE);
    assert!(twin.contains(CANONICAL_API_VERSION), "{twin}");
    new_ns
        .apply_yaml(&twin)
        .await
        .expect("the converted manifest applies");

    // Status is written back to the legacy object, pods counted (kwok makes them Ready).
    let old = wait_legacy(&old_ns, "inference-edge", "3 ready replicas", |a| {
        a.status.as_ref().is_some_and(|s| s.ready_replicas == 3)
            && condition(a.status.as_ref(), "Ready").is_some_and(|c| c.status == "True")
    })
    .await;
    let new = wait_app(&new_ns, "inference-edge", "3 ready replicas", |a| {
        a.status.as_ref().is_some_and(|s| s.ready_replicas == 3)
            && condition(a.status.as_ref(), "Ready").is_some_and(|c| c.status == "True")
    })
    .await;
    let (old_status, new_status) = (old.status.clone().unwrap(), new.status.clone().unwrap());
    assert_eq!(conditions(Some(&old_status)), conditions(Some(&new_status)));
    assert_eq!(old_status.observed_generation, old.metadata.generation);
    assert_eq!(old_status.replicas, Some(3));
    assert_eq!(old_status.selector, new_status.selector);
    assert_eq!(
        old_status.deployment_name.as_deref(),
        Some("inference-edge")
    );
    assert_eq!(old_status.service_name.as_deref(), Some("inference-edge"));

    // The children are the same objects, apart from namespace and owner.
    let (od, os, osec) = children(&old_ns, "inference-edge").await;
    let (nd, ns_, nsec) = children(&new_ns, "inference-edge").await;
    pretty_eq(&comparable(&od), &comparable(&nd), "Deployment");
    pretty_eq(&comparable(&os), &comparable(&ns_), "Service");
    pretty_eq(
        &comparable(&osec),
        &comparable(&nsec),
        "runtime-config Secret",
    );
    let old_uid = old.uid().unwrap();
    for owner in [
        controller_owner(&od),
        controller_owner(&os),
        controller_owner(&osec),
    ] {
        assert_eq!(owner, (LEGACY_API_VERSION.to_owned(), old_uid.clone()));
    }
    assert_eq!(controller_owner(&nd).0, CANONICAL_API_VERSION);

    // The article's Redis store is in runtime-config.toml.
    let toml =
        String::from_utf8(osec.data.as_ref().unwrap()["runtime-config.toml"].0.clone()).unwrap();
    let parsed: toml_table::Table = toml_table::parse(&toml);
    assert_eq!(
        parsed.get("key_value_store.default", "type"),
        Some("redis"),
        "{toml}"
    );
    assert_eq!(
        parsed.get("key_value_store.default", "url"),
        Some("redis://redis:6379"),
        "{toml}"
    );

    // Events are about the legacy object.
    let events = events_about(&old_ns, "inference-edge").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("DeploymentCreated")
                && e.regarding.as_ref().and_then(|r| r.api_version.as_deref())
                    == Some(LEGACY_API_VERSION)),
        "a DeploymentCreated event about the legacy object: {events:#?}"
    );

    // `kubectl get spinapps` keeps meaning the canonical group.
    let listed = old_ns
        .kubectl(&["get", "spinapps", "-o", "name"])
        .await
        .unwrap();
    assert!(
        listed.trim().is_empty(),
        "canonical SpinApps only: {listed:?}"
    );
    let listed = old_ns
        .kubectl(&["get", "spinapps.core.spinoperator.dev", "-o", "name"])
        .await
        .unwrap();
    assert!(listed.contains("inference-edge"), "{listed:?}");

    // A spec change of the legacy object rolls out, like a canonical one.
    old_ns
        .apply_yaml(&ARTICLE.replace("replicas: 3", "replicas: 2"))
        .await
        .unwrap();
    wait_for(
        "the Deployment to follow the legacy spec",
        TIMEOUT,
        || async {
            let d = old_ns
                .api::<Deployment>()
                .get("inference-edge")
                .await
                .ok()?;
            (d.spec.replicas == Some(2)).then_some(())
        },
    )
    .await
    .unwrap();

    // Deleting the legacy object garbage-collects its children.
    old_ns
        .api::<LegacySpinApp>()
        .delete("inference-edge", &DeleteParams::foreground())
        .await
        .unwrap();
    wait_for(
        "children of the legacy object to be collected",
        TIMEOUT,
        || async {
            let gone = old_ns
                .api::<Deployment>()
                .get_opt("inference-edge")
                .await
                .ok()?
                .is_none()
                && old_ns
                    .api::<Service>()
                    .get_opt("inference-edge")
                    .await
                    .ok()?
                    .is_none()
                && old_ns
                    .api::<Secret>()
                    .get_opt("inference-edge-runtime-config")
                    .await
                    .ok()?
                    .is_none();
            gone.then_some(())
        },
    )
    .await
    .unwrap();

    op_old.stop().await;
    op_new.stop().await;
    old_ns.cleanup().await;
    new_ns.cleanup().await;
}

fn pretty_eq(a: &Value, b: &Value, what: &str) {
    assert!(
        a == b,
        "{what} differs between the legacy object and its canonical twin:\nlegacy:    {}\ncanonical: {}",
        serde_json::to_string_pretty(a).unwrap(),
        serde_json::to_string_pretty(b).unwrap()
    );
}

/// Just enough TOML reading for `[table] key = "value"` lines.
mod toml_table {
    pub struct Table(Vec<(String, String, String)>);

    pub fn parse(text: &str) -> Table {
        let mut section = String::new();
        let mut out = Vec::new();
        for line in text.lines().map(str::trim) {
            if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = s.to_owned();
            } else if let Some((k, v)) = line.split_once('=') {
                out.push((
                    section.clone(),
                    k.trim().to_owned(),
                    v.trim().trim_matches('"').to_owned(),
                ));
            }
        }
        Table(out)
    }

    impl Table {
        pub fn get(&self, section: &str, key: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(s, k, _)| s == section && k == key)
                .map(|(_, _, v)| v.as_str())
        }
    }
}

/// The article with its spec changed by `edit`.
fn variant(edit: impl Fn(&str) -> String) -> String {
    edit(ARTICLE)
}

#[tokio::test]
async fn invalid_variants_are_flagged_like_their_canonical_twins() {
    let (old_ns, new_ns) = (
        namespace_with_executor().await,
        namespace_with_executor().await,
    );

    // No image: the apiserver rejects both with the same message.
    let no_image = variant(|a| a.replace("  image: \"ghcr.io/my-org/inference:v1.0\"\n", ""));
    let twin = spindle::api::compat::convert_manifests(&no_image).unwrap();
    let old_err = old_ns
        .apply_yaml(&no_image)
        .await
        .expect_err("no image is rejected");
    let new_err = new_ns
        .apply_yaml(&twin)
        .await
        .expect_err("no image is rejected (canonical)");
    let (old_s, new_s) = (api_status(&old_err).unwrap(), api_status(&new_err).unwrap());
    assert_eq!(old_s.code, 422, "{old_s:?}");
    assert_eq!(old_s.code, new_s.code);
    assert!(old_s.message.contains("spec.image"), "{}", old_s.message);
    assert_eq!(
        old_s.message.replace("core.spinoperator.dev", "GROUP"),
        new_s.message.replace("core.spinkube.dev", "GROUP"),
    );

    // An empty image: the same CEL rule and message.
    let empty_image = variant(|a| a.replace("\"ghcr.io/my-org/inference:v1.0\"", "\"\""));
    let twin = spindle::api::compat::convert_manifests(&empty_image).unwrap();
    let old_err = old_ns
        .apply_yaml(&empty_image)
        .await
        .expect_err("empty image is rejected");
    let new_err = new_ns
        .apply_yaml(&twin)
        .await
        .expect_err("empty image is rejected (canonical)");
    let (old_s, new_s) = (api_status(&old_err).unwrap(), api_status(&new_err).unwrap());
    assert!(
        old_s.message.contains("image must be an OCI reference"),
        "{}",
        old_s.message
    );
    assert_eq!(
        old_s.message.replace("core.spinoperator.dev", "GROUP"),
        new_s.message.replace("core.spinkube.dev", "GROUP"),
    );

    // A bad store type and a store without url are accepted by the schema and
    // flagged by the operator: same conditions, no children.
    let op_old = Operator::start(&old_ns.name).await;
    let op_new = Operator::start(&new_ns.name).await;
    let cases = [
        (
            "bad-type",
            variant(|a| a.replace("type: redis", "type: memcached")),
            "UnknownStoreType",
        ),
        (
            "no-url",
            variant(|a| a.replace("        url: redis://redis:6379\n", "")),
            "",
        ),
    ];
    for (name, yaml, reason) in cases {
        let yaml = yaml.replace("name: inference-edge", &format!("name: {name}"));
        let twin = spindle::api::compat::convert_manifests(&yaml).unwrap();
        old_ns
            .apply_yaml(&yaml)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        new_ns
            .apply_yaml(&twin)
            .await
            .unwrap_or_else(|e| panic!("{name} (canonical): {e:#}"));
        let flagged = |s: Option<&SpinAppStatus>| {
            condition(s, "RuntimeConfigReady")
                .is_some_and(|c| c.status == "False" && (reason.is_empty() || c.reason == reason))
        };
        let old = wait_legacy(&old_ns, name, "RuntimeConfigReady=False", |a| {
            flagged(a.status.as_ref())
        })
        .await;
        let new = wait_app(&new_ns, name, "RuntimeConfigReady=False", |a| {
            flagged(a.status.as_ref())
        })
        .await;
        assert_eq!(
            conditions(old.status.as_ref()),
            conditions(new.status.as_ref()),
            "{name}: the legacy object is flagged exactly like its twin"
        );
        assert!(
            old_ns
                .api::<Deployment>()
                .get_opt(name)
                .await
                .unwrap()
                .is_none(),
            "{name}: nothing is rolled out"
        );
        let old_reason = condition(old.status.as_ref(), "RuntimeConfigReady")
            .unwrap()
            .reason
            .clone();
        let warned = wait_for(&format!("{name}: a Warning event"), TIMEOUT, || async {
            events_about(&old_ns, name).await.into_iter().find(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.reason.as_deref() == Some(old_reason.as_str())
            })
        })
        .await
        .unwrap();
        assert_eq!(
            warned.regarding.and_then(|r| r.api_version).as_deref(),
            Some(LEGACY_API_VERSION)
        );
    }

    op_old.stop().await;
    op_new.stop().await;
    old_ns.cleanup().await;
    new_ns.cleanup().await;
}

fn canonical_app(name: &str, image: &str) -> String {
    format!(
        "apiVersion: core.spinkube.dev/v1alpha1\nkind: SpinApp\nmetadata: {{name: {name}}}\n\
         spec: {{executor: containerd-shim-spin, image: '{image}', replicas: 1}}\n"
    )
}

fn legacy_app(name: &str, image: &str) -> String {
    format!(
        "apiVersion: core.spinoperator.dev/v1alpha1\nkind: SpinApp\nmetadata: {{name: {name}}}\n\
         spec: {{executor: containerd-shim-spin, image: '{image}', replicas: 1}}\n"
    )
}

/// Wait until the Deployment `name` is controlled by `uid` and runs `image`.
async fn wait_deployment(ns: &TestNamespace, name: &str, uid: &str, image: &str) {
    wait_for(
        &format!("Deployment {name} owned by {uid} running {image}"),
        TIMEOUT,
        || async {
            let d = ns.api::<Deployment>().get_opt(name).await.ok()??;
            let owners = d.owner_references();
            let running = d
                .spec
                .template
                .spec
                .as_ref()?
                .containers
                .first()?
                .image
                .clone()?;
            (owners.len() == 1 && owners[0].uid == uid && running == image).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn name_clash_between_groups_is_a_condition_on_the_newer_object() {
    let ns = namespace_with_executor().await;
    let op = Operator::start(&ns.name).await;

    // Canonical first: it keeps the children; the legacy one waits.
    ns.apply_yaml(&canonical_app("clash", "ghcr.io/x/canonical:v1"))
        .await
        .unwrap();
    let canonical = wait_app(&ns, "clash", "children applied", |a| {
        a.status.as_ref().is_some_and(|s| s.service_name.is_some())
    })
    .await;
    let canonical_uid = canonical.uid().unwrap();
    ns.apply_yaml(&legacy_app("clash", "ghcr.io/x/legacy:v1"))
        .await
        .unwrap();
    let blocked = wait_legacy(&ns, "clash", "Ready=False NameConflict", |a| {
        condition(a.status.as_ref(), "Ready")
            .is_some_and(|c| c.status == "False" && c.reason == "NameConflict")
    })
    .await;
    let message = &condition(blocked.status.as_ref(), "Ready").unwrap().message;
    assert!(
        message.contains("core.spinkube.dev") && message.contains("clash"),
        "the message names the other object: {message}"
    );
    let event = wait_for(
        "a NameConflict event about the legacy object",
        TIMEOUT,
        || async {
            events_about(&ns, "clash").await.into_iter().find(|e| {
                e.reason.as_deref() == Some("NameConflict")
                    && e.regarding.as_ref().and_then(|r| r.api_version.as_deref())
                        == Some(LEGACY_API_VERSION)
            })
        },
    )
    .await
    .unwrap();
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    // The children stay the canonical app's, untouched, and nobody fights.
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_deployment(&ns, "clash", &canonical_uid, "ghcr.io/x/canonical:v1").await;
    let service = ns.api::<Service>().get("clash").await.unwrap();
    assert_eq!(controller_owner(&service).1, canonical_uid);
    // Spindle's writes change the generation or the applied-hash (status
    // updates by the Deployment controller change neither).
    let written = |d: Deployment| {
        let hash = d
            .annotations()
            .get("spindle.spinkube.dev/applied-hash")
            .cloned();
        (d.metadata.generation, hash)
    };
    let before = written(ns.api::<Deployment>().get("clash").await.unwrap());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = written(ns.api::<Deployment>().get("clash").await.unwrap());
    assert_eq!(before, after, "no writes to the winner's Deployment");
    let canonical = ns.api::<SpinApp>().get("clash").await.unwrap();
    assert!(
        condition(canonical.status.as_ref(), "Ready").is_none_or(|c| c.reason != "NameConflict"),
        "the older object is not blocked: {:?}",
        canonical.status
    );
    let legacy_status = blocked.status.as_ref().unwrap();
    assert_eq!(
        legacy_status.ready_replicas, 0,
        "the rival's pods are not counted"
    );

    // Deleting the older object hands the name over.
    let legacy_uid = blocked.uid().unwrap();
    ns.api::<SpinApp>()
        .delete("clash", &DeleteParams::background())
        .await
        .unwrap();
    wait_deployment(&ns, "clash", &legacy_uid, "ghcr.io/x/legacy:v1").await;
    wait_legacy(&ns, "clash", "not blocked any more", |a| {
        condition(a.status.as_ref(), "Ready").is_some_and(|c| c.reason != "NameConflict")
    })
    .await;

    // Now the canonical one is newer: it waits, the legacy one keeps the children.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ns.apply_yaml(&canonical_app("clash", "ghcr.io/x/canonical:v2"))
        .await
        .unwrap();
    let blocked = wait_app(&ns, "clash", "Ready=False NameConflict", |a| {
        common::has_condition(a, "Ready", "False", Some("NameConflict"))
    })
    .await;
    let message = &common::condition(&blocked, "Ready").unwrap().message;
    assert!(message.contains("core.spinoperator.dev"), "{message}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_deployment(&ns, "clash", &legacy_uid, "ghcr.io/x/legacy:v1").await;

    op.stop().await;
    ns.cleanup().await;
}

#[tokio::test]
async fn operator_runs_without_the_legacy_group() {
    // `--legacy-group=false` (the chart sets it when it does not install the
    // legacy CRD): canonical apps run, legacy objects are left alone.
    let ns = namespace_with_executor().await;
    let metrics = spindle::metrics::Metrics::new();
    let readiness = spindle::http::Readiness::default();
    let config = spindle::controller::Config {
        namespace: Some(ns.name.clone()),
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        legacy_group: false,
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(spindle::controller::run_until(
        common::counting_client(&metrics).await,
        config,
        async move {
            let _ = rx.await;
        },
    ));
    wait_for("caches to sync", TIMEOUT, || async {
        readiness.is_ready().then_some(())
    })
    .await
    .unwrap();
    ns.apply_yaml(&legacy_app("old", "ghcr.io/x/old:v1"))
        .await
        .unwrap();
    ns.apply_yaml(&canonical_app("new", "ghcr.io/x/new:v1"))
        .await
        .unwrap();
    wait_app(&ns, "new", "children applied", |a| {
        a.status.as_ref().is_some_and(|s| s.service_name.is_some())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(legacy(&ns, "old").await.unwrap().status.is_none());
    assert!(
        ns.api::<Deployment>()
            .get_opt("old")
            .await
            .unwrap()
            .is_none()
    );
    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("stops")
        .expect("task");
    ns.cleanup().await;
}

#[tokio::test]
async fn operator_copes_without_access_to_the_legacy_group() {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use kube::api::PostParams;

    let ns = namespace_with_executor().await;
    let user = format!("spindle-without-legacy-{}", ns.name);
    // Every right the operator may need except the legacy group: the built-in
    // `admin` role everywhere (so this test does not track each new watch)
    // plus the canonical group, RuntimeClasses and EndpointSlice writes.
    // Cluster-scoped, named after the namespace, removed below.
    let cluster_name = format!("t-{}", ns.name);
    let role: ClusterRole = serde_json::from_value(serde_json::json!({
        "metadata": {"name": cluster_name},
        "rules": [
            {"apiGroups": ["core.spinkube.dev"], "resources": ["spinapps", "spinappexecutors", "spinapps/status", "spinappexecutors/status", "spinapps/finalizers", "spinappexecutors/finalizers"], "verbs": ["get", "list", "watch", "patch", "update"]},
            {"apiGroups": ["node.k8s.io"], "resources": ["runtimeclasses"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["create", "patch", "delete"]}
        ]
    }))
    .unwrap();
    let binding = |name: &str, role: &str| -> ClusterRoleBinding {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
        }))
        .unwrap()
    };
    let admin_binding = format!("{cluster_name}-admin");
    let roles: kube::Api<ClusterRole> = kube::Api::all(ns.client.clone());
    let bindings: kube::Api<ClusterRoleBinding> = kube::Api::all(ns.client.clone());
    roles.create(&PostParams::default(), &role).await.unwrap();
    for b in [
        binding(&cluster_name, &cluster_name),
        binding(&admin_binding, "admin"),
    ] {
        bindings.create(&PostParams::default(), &b).await.unwrap();
    }

    let kubeconfig = kube::config::Kubeconfig::read_from(spindle_e2e::kubeconfig_path()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    config.auth_info.impersonate = Some(user.clone());
    let client = kube::Client::try_from(config).unwrap();
    let denied = kube::Api::<LegacySpinApp>::namespaced(client.clone(), &ns.name)
        .list_metadata(&kube::api::ListParams::default().limit(1))
        .await;
    assert!(
        matches!(&denied, Err(kube::Error::Api(s)) if s.code == 403),
        "the test user must not read the legacy group: {denied:?}"
    );

    let readiness = spindle::http::Readiness::default();
    let config = spindle::controller::Config {
        namespace: Some(ns.name.clone()),
        readiness: readiness.clone(),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(spindle::controller::run_until(client, config, async move {
        let _ = rx.await;
    }));
    wait_for(
        "caches to sync without the legacy group",
        TIMEOUT,
        || async { readiness.is_ready().then_some(()) },
    )
    .await
    .unwrap();
    ns.apply_yaml(&canonical_app("new", "ghcr.io/x/new:v1"))
        .await
        .unwrap();
    wait_app(&ns, "new", "children applied", |a| {
        a.status.as_ref().is_some_and(|s| s.service_name.is_some())
    })
    .await;
    assert!(!task.is_finished(), "the operator keeps running");

    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("stops")
        .expect("task");
    for name in [&cluster_name, &admin_binding] {
        let _ = bindings.delete(name, &DeleteParams::default()).await;
    }
    let _ = roles.delete(&cluster_name, &DeleteParams::default()).await;
    ns.cleanup().await;
}
