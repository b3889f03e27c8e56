//! Scale to zero against a real kube-apiserver: the `spec.scaleToZero` CEL
//! rules accept and reject what they should (with their messages), manifests
//! without the field are stored untouched (spin-operator compatibility), and
//! the activator's demand-Lease writer creates, renews and shares Leases.
//!
//! Needs `SPINDLE_TEST_KUBECONFIG` (run `e2e/scripts/test.sh`); the minimal
//! control plane (etcd + kube-apiserver) is enough.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use serde_json::json;
use spindle::activator::DemandSignal;
use spindle::activator::kube::{LEASE_PENDING_ANNOTATION, LeaseDemand, demand_lease_name};
use spindle::api::SpinApp;
use spindle::scale::AppKey;
use spindle_e2e::{TestNamespace, api_status};

fn app(name: &str, scale_to_zero: serde_json::Value) -> String {
    let mut spec = json!({"executor": "containerd-shim-spin", "image": "ghcr.io/example/app:v1"});
    if !scale_to_zero.is_null() {
        spec["scaleToZero"] = scale_to_zero;
    }
    serde_json::to_string(&json!({
        "apiVersion": "core.spinkube.dev/v1alpha1",
        "kind": "SpinApp",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("json")
}

#[tokio::test]
async fn valid_scale_to_zero_specs_are_accepted_and_round_trip() {
    let ns = TestNamespace::new().await;
    let full = json!({
        "enabled": true, "idleTimeout": "2m", "coldStartTimeout": "1m30s",
        "maxPendingRequests": 50, "drainSeconds": 30
    });
    ns.apply_yaml(&app("full", full.clone()))
        .await
        .expect("full spec accepted");
    ns.apply_yaml(&app("minimal", json!({"enabled": true})))
        .await
        .expect("enabled only accepted");
    ns.apply_yaml(&app(
        "boundary",
        json!({"enabled": true, "idleTimeout": "30s", "coldStartTimeout": "1s", "drainSeconds": 5}),
    ))
    .await
    .expect("boundaries accepted");

    let stored = ns.api::<SpinApp>().get("full").await.expect("get");
    let s = stored.spec.scale_to_zero.expect("scaleToZero stored");
    assert_eq!(s.idle_timeout.as_deref(), Some("2m"));
    let settings = spindle::scale::Settings::from_spec(Some(&s))
        .expect("valid")
        .expect("enabled");
    assert_eq!(settings.cold_start_timeout, Duration::from_secs(90));
    assert_eq!(settings.drain_seconds, 30);
    ns.cleanup().await;
}

#[tokio::test]
async fn spin_operator_manifests_are_stored_without_scale_to_zero() {
    let ns = TestNamespace::new().await;
    ns.apply_yaml(&app("plain", serde_json::Value::Null))
        .await
        .expect("accepted");
    let raw = ns
        .kubectl(&["get", "spinapp", "plain", "-o", "json"])
        .await
        .expect("kubectl get");
    let v: serde_json::Value = serde_json::from_str(&raw).expect("json");
    assert!(
        v["spec"].get("scaleToZero").is_none(),
        "the apiserver added scaleToZero: {}",
        v["spec"]
    );
    let stored = ns.api::<SpinApp>().get("plain").await.expect("get");
    assert_eq!(
        spindle::scale::Settings::from_spec(stored.spec.scale_to_zero.as_ref()),
        Ok(None)
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn invalid_scale_to_zero_specs_are_rejected_with_clear_messages() {
    let ns = TestNamespace::new().await;
    let cases = [
        (
            json!({"enabled": true, "idleTimeout": "29s"}),
            "idleTimeout must be at least 30s",
        ),
        (
            json!({"enabled": true, "idleTimeout": "2 minutes"}),
            "idleTimeout must be a duration such as 120s",
        ),
        (
            json!({"enabled": true, "idleTimeout": "120"}),
            "idleTimeout must be a duration such as 120s",
        ),
        (
            json!({"enabled": true, "coldStartTimeout": "11m"}),
            "coldStartTimeout must be between 1s and 10m",
        ),
        (
            json!({"enabled": true, "coldStartTimeout": "500ms"}),
            "coldStartTimeout must be between 1s and 10m",
        ),
        (json!({"enabled": true, "drainSeconds": 4}), "drainSeconds"),
        (
            json!({"enabled": true, "drainSeconds": 301}),
            "drainSeconds",
        ),
        (
            json!({"enabled": true, "maxPendingRequests": 0}),
            "maxPendingRequests",
        ),
    ];
    let mut failures = Vec::new();
    for (i, (stz, want)) in cases.iter().enumerate() {
        match ns.apply_yaml(&app(&format!("bad{i}"), stz.clone())).await {
            Ok(_) => failures.push(format!("{stz} was accepted")),
            Err(e) => {
                let msg = api_status(&e)
                    .map(|s| s.message.clone())
                    .unwrap_or_else(|| format!("{e:#}"));
                if !msg.contains(want) {
                    failures.push(format!("{stz}: message {msg:?} lacks {want:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    ns.cleanup().await;
}

#[tokio::test]
async fn demand_lease_is_created_renewed_and_shared_by_activators() {
    let ns = TestNamespace::new().await;
    let app = AppKey::new("apps", "hello");
    let a = LeaseDemand::new(ns.client.clone(), &ns.name, "activator-a");
    let b = LeaseDemand::new(ns.client.clone(), &ns.name, "activator-b");
    let leases = ns.api::<Lease>();

    a.signal(&app, 3)
        .await
        .expect("first signal creates the Lease");
    let first = leases
        .get(&demand_lease_name(&app))
        .await
        .expect("lease exists");
    let spec = first.spec.clone().expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("activator-a"));
    assert_eq!(spec.lease_duration_seconds, Some(5));
    assert_eq!(
        first.metadata.annotations.as_ref().expect("annotations")[LEASE_PENDING_ANNOTATION],
        "3"
    );
    assert_eq!(
        first.metadata.labels.as_ref().expect("labels")["spindle.spinkube.dev/app-name"],
        "hello"
    );

    tokio::time::sleep(Duration::from_millis(20)).await;
    // A second activator renews the same Lease without a conflict.
    b.signal(&app, 7).await.expect("second activator renews");
    let second = leases
        .get(&demand_lease_name(&app))
        .await
        .expect("lease exists");
    let (t1, t2) = (
        spec.renew_time.expect("renewTime").0,
        second
            .spec
            .as_ref()
            .and_then(|s| s.renew_time.clone())
            .expect("renewTime")
            .0,
    );
    assert!(t2 > t1, "renewTime did not advance: {t1} → {t2}");
    assert_eq!(
        second.metadata.annotations.as_ref().expect("annotations")[LEASE_PENDING_ANNOTATION],
        "7"
    );
    assert_eq!(
        second.metadata.uid, first.metadata.uid,
        "the Lease was recreated instead of patched"
    );
    ns.cleanup().await;
}
