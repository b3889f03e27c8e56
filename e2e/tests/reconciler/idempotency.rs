//! (g) After convergence, re-reconciling an unchanged app sends no write
//! request at all (children compared with the cache, status compared first).

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use spindle::api::SpinApp;
use spindle::metrics::Metrics;
use spindle_e2e::wait_for;

use crate::common::*;

fn writes(m: &Metrics) -> u64 {
    ["create", "update", "patch", "delete"]
        .iter()
        .map(|v| m.requests_with_verb(v))
        .sum()
}

/// Wait until the write count has not changed for `quiet`.
async fn settle(m: &Metrics, quiet: Duration) -> u64 {
    let mut last = writes(m);
    let mut since = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = writes(m);
        if now != last {
            last = now;
            since = std::time::Instant::now();
        } else if since.elapsed() >= quiet {
            return now;
        }
    }
}

#[tokio::test]
async fn unchanged_app_causes_no_writes() {
    let ns = namespace_with_executor().await;
    ns.apply_yaml("apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\nstringData: {url: 'redis://r:6379'}\n").await.unwrap();
    let op = Operator::start(&ns.name).await;
    ns.apply_yaml(
        r#"
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinApp
metadata: {name: calm}
spec:
  executor: containerd-shim-spin
  image: ghcr.io/x/calm:v1
  replicas: 0
  resources: {limits: {cpu: "0.5", memory: 128Mi}}
  variables: [{name: greeting, value: hi}]
  runtimeConfig:
    keyValueStores:
    - name: default
      type: redis
      options: [{name: url, valueFrom: {secretKeyRef: {name: creds, key: url}}}]
"#,
    )
    .await
    .unwrap();
    // Scaled to zero: readiness does not depend on fake pods, so the status
    // is stable and any write after convergence is Spindle's fault.
    wait_app(&ns, "calm", "Ready", |a| {
        has_condition(a, "Ready", "True", Some("ScaledToZero"))
    })
    .await;
    let converged = settle(&op.metrics, Duration::from_secs(2)).await;
    assert!(converged > 0);

    let apps: kube::Api<SpinApp> = ns.api();
    let deployments: kube::Api<Deployment> = ns.api();
    let status_before = apps.get("calm").await.unwrap().status;
    let reconciled = |before: u64| {
        let metrics = op.metrics.clone();
        async move {
            wait_for("a reconcile", TIMEOUT, || async {
                (metrics.reconciles("spinapp") > before).then_some(())
            })
            .await
            .unwrap();
        }
    };

    // 1. A metadata-only change of the app triggers a reconcile.
    let before = op.metrics.reconciles("spinapp");
    let poke = serde_json::json!({"metadata": {"labels": {"poke": "1"}}});
    apps.patch("calm", &PatchParams::default(), &Patch::Merge(poke))
        .await
        .unwrap();
    reconciled(before).await;
    // 2. So does a change to a child by someone else, in a field Spindle does
    //    not manage. (A label: a Deployment's annotations count as spec and
    //    bump its generation, which is a real change to report.)
    let before = op.metrics.reconciles("spinapp");
    let poke = serde_json::json!({"metadata": {"labels": {"other-tool": "x"}}});
    deployments
        .patch("calm", &PatchParams::default(), &Patch::Merge(poke))
        .await
        .unwrap();
    reconciled(before).await;
    // 3. And a change to a referenced Secret that does not change its value.
    let before = op.metrics.reconciles("spinapp");
    ns.apply_yaml("apiVersion: v1\nkind: Secret\nmetadata: {name: creds, labels: {touched: 'yes'}}\nstringData: {url: 'redis://r:6379'}\n")
        .await
        .unwrap();
    reconciled(before).await;
    let after = settle(&op.metrics, Duration::from_secs(2)).await;
    let write_counts: Vec<_> = op
        .metrics
        .request_counts()
        .into_iter()
        .filter(|(l, _)| ["create", "update", "patch", "delete"].contains(&l.verb))
        .collect();
    let status_after = apps.get("calm").await.unwrap().status;
    assert_eq!(status_after, status_before, "the status changed");
    assert_eq!(
        after, converged,
        "re-reconciling an unchanged app wrote (totals so far): {write_counts:?}"
    );

    // Control: a real drift is repaired (so the check above is not vacuous).
    deployments
        .patch(
            "calm",
            &PatchParams::apply("intruder").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 5}
            })),
        )
        .await
        .unwrap();
    wait_for("the replica drift to be repaired", TIMEOUT, || async {
        (deployments.get("calm").await.ok()?.spec.replicas == Some(0)).then_some(())
    })
    .await
    .unwrap();
    assert!(writes(&op.metrics) > after);
    op.stop().await;
    ns.cleanup().await;
}
