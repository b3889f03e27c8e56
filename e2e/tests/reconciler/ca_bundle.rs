//! (i) An executor with `installDefaultCACerts` gets the CA bundle Secret its
//! apps mount; a Secret of that name that already exists is left as it is.

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use spindle_e2e::wait_for;

use crate::common::*;

const CA_EXECUTOR: &str = r#"
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinAppExecutor
metadata: {name: with-ca}
spec:
  createDeployment: true
  deploymentConfig:
    runtimeClassName: wasmtime-spin-v2
    installDefaultCACerts: true
---
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinApp
metadata: {name: tls-client}
spec: {executor: with-ca, image: "ghcr.io/x/tls:v1"}
"#;

#[tokio::test]
async fn default_ca_bundle_is_created_once_and_mounted() {
    let ns = namespace_with_executor().await;
    let op = Operator::start(&ns.name).await;
    ns.apply_yaml(CA_EXECUTOR).await.unwrap();
    let secrets = ns.api::<Secret>();
    let secret = wait_for("Secret spin-ca", TIMEOUT, || async {
        secrets.get_opt("spin-ca").await.ok()?
    })
    .await
    .unwrap();
    let pem = String::from_utf8(
        secret.data.as_ref().unwrap()["ca-certificates.crt"]
            .0
            .clone(),
    )
    .expect("PEM is text");
    let certs = pem.matches("-----BEGIN CERTIFICATE-----").count();
    assert!(certs > 100, "the bundle holds {certs} certificates");
    assert!(
        secret.metadata.owner_references.is_none(),
        "other executors' apps may mount it: it must not be garbage-collected with the executor"
    );
    let note = wait_event(&ns, "with-ca", "Normal", "CABundleCreated").await;
    assert!(note.contains("spin-ca"), "{note}");

    // The app mounts it where TLS clients look.
    let deployments = ns.api::<Deployment>();
    let d = wait_for("Deployment tls-client", TIMEOUT, || async {
        deployments.get_opt("tls-client").await.ok()?
    })
    .await
    .unwrap();
    let pod = d.spec.template.spec.expect("pod spec");
    let mount = pod.containers[0]
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.mount_path == "/etc/ssl/certs/ca-certificates.crt")
        .expect("CA mount")
        .clone();
    let volume = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == mount.name)
        .expect("CA volume");
    assert_eq!(
        volume.secret.unwrap().secret_name.as_deref(),
        Some("spin-ca")
    );
    op.stop().await;
}

#[tokio::test]
async fn existing_secret_of_that_name_is_never_touched() {
    let ns = namespace_with_executor().await;
    let mine = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("spin-ca".into()),
            ..Default::default()
        },
        data: Some(
            [(
                "ca-certificates.crt".to_owned(),
                ByteString(b"my own corporate CA".to_vec()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    let secrets = ns.api::<Secret>();
    let created = secrets.create(&PostParams::default(), &mine).await.unwrap();
    let op = Operator::start(&ns.name).await;
    ns.apply_yaml(CA_EXECUTOR).await.unwrap();
    // The executor is reconciled (its status is written after the CA step).
    wait_for("executor with-ca reconciled", TIMEOUT, || async {
        let e = ns
            .api::<spindle::api::SpinAppExecutor>()
            .get("with-ca")
            .await
            .ok()?;
        (!e.status?.conditions.is_empty()).then_some(())
    })
    .await
    .unwrap();
    let after = secrets.get("spin-ca").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, created.metadata.resource_version,
        "the user's Secret was modified"
    );
    assert_eq!(
        after.data.unwrap()["ca-certificates.crt"].0,
        b"my own corporate CA".to_vec()
    );
    assert!(
        events_about(&ns, "with-ca")
            .await
            .iter()
            .all(|e| e.reason.as_deref() != Some("CABundleCreated"))
    );
    op.stop().await;
}
