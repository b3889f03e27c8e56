//! (c) Referenced Secrets roll the pods (config-hash changes) and stale
//! Secrets of earlier renders are deleted.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use spindle::api::SpinApp;
use spindle_e2e::wait_for;

use crate::common::*;

fn config_hash(d: &Deployment) -> String {
    d.spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get("spindle.spinkube.dev/config-hash"))
        .cloned()
        .unwrap_or_default()
}

fn toml(s: &Secret) -> String {
    String::from_utf8(s.data.as_ref().unwrap()["runtime-config.toml"].0.clone()).unwrap()
}

#[tokio::test]
async fn referenced_secret_change_rolls_pods_and_stale_secrets_go() {
    let ns = namespace_with_executor().await;
    let op = Operator::start(&ns.name).await;
    ns.apply_yaml(
        r#"
apiVersion: v1
kind: Secret
metadata: {name: redis}
stringData: {url: "redis://one:6379"}
---
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinApp
metadata: {name: kv}
spec:
  executor: containerd-shim-spin
  image: ghcr.io/x/kv:v1
  runtimeConfig:
    keyValueStores:
    - name: default
      type: redis
      options:
      - name: url
        valueFrom: {secretKeyRef: {name: redis, key: url}}
"#,
    )
    .await
    .unwrap();
    let app = wait_app(&ns, "kv", "children applied", |a| {
        a.status.as_ref().is_some_and(|s| s.service_name.is_some())
    })
    .await;
    let deployments = ns.api::<Deployment>();
    let secrets = ns.api::<Secret>();
    let before = config_hash(&deployments.get("kv").await.unwrap());
    assert!(!before.is_empty());
    assert!(toml(&secrets.get("kv-runtime-config").await.unwrap()).contains("redis://one:6379"));

    // A leftover spin-operator Secret (`<app>-<hash>`, owned by the app, non-controller ref).
    let uid = app.uid().unwrap();
    ns.apply_yaml(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: kv-1a2b3c4d\n  labels: {{core.spinkube.dev/app-name: kv}}\n  ownerReferences:\n  - {{apiVersion: core.spinkube.dev/v1alpha1, kind: SpinApp, name: kv, uid: {uid}}}\nstringData: {{runtime-config.toml: ''}}\n"
    ))
    .await
    .unwrap();
    // A Secret that merely carries the label but is not owned by the app stays.
    ns.apply_yaml("apiVersion: v1\nkind: Secret\nmetadata:\n  name: kv-not-ours\n  labels: {core.spinkube.dev/app-name: kv}\nstringData: {a: b}\n")
        .await
        .unwrap();

    // Change the referenced Secret: the TOML and the pod template follow.
    ns.apply_yaml("apiVersion: v1\nkind: Secret\nmetadata: {name: redis}\nstringData: {url: \"redis://two:6379\"}\n").await.unwrap();
    let after = wait_for("the config hash to change", TIMEOUT, || async {
        let h = config_hash(&deployments.get("kv").await.ok()?);
        (h != before).then_some(h)
    })
    .await
    .unwrap();
    assert_ne!(after, before);
    assert!(toml(&secrets.get("kv-runtime-config").await.unwrap()).contains("redis://two:6379"));

    wait_for(
        "the stale spin-operator Secret to be deleted",
        TIMEOUT,
        || async {
            secrets
                .get_opt("kv-1a2b3c4d")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await
    .unwrap();
    wait_event(&ns, "kv", "Normal", "SecretDeleted").await;
    assert!(
        secrets.get_opt("kv-not-ours").await.unwrap().is_some(),
        "a Secret the app does not own was deleted"
    );

    // Switch to loadFromSecret: the generated Secret is no longer needed.
    ns.apply_yaml("apiVersion: v1\nkind: Secret\nmetadata: {name: own-config}\nstringData: {runtime-config.toml: ''}\n").await.unwrap();
    let api: kube::Api<SpinApp> = ns.api();
    api.patch(
        "kv",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"runtimeConfig": {"keyValueStores": null, "loadFromSecret": "own-config"}}})),
    )
    .await
    .unwrap();
    wait_for("kv-runtime-config to be deleted", TIMEOUT, || async {
        secrets
            .get_opt("kv-runtime-config")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await
    .unwrap();
    assert!(
        secrets.get_opt("own-config").await.unwrap().is_some(),
        "the user's Secret must stay"
    );
    op.stop().await;
    ns.cleanup().await;
}
