//! (e) Deleting a SpinApp garbage-collects its children; (h) the executor
//! finalizer blocks deletion while an app uses it.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::DeleteParams;
use kube::{Api, ResourceExt};
use spindle::api::{SpinApp, SpinAppExecutor};
use spindle_e2e::wait_for;

use crate::common::*;

const APP: &str = "apiVersion: core.spinkube.dev/v1alpha1\nkind: SpinApp\nmetadata: {name: doomed}\nspec: {executor: containerd-shim-spin, image: 'ghcr.io/x/d:v1'}\n";

#[tokio::test]
async fn deleting_the_app_collects_its_children() {
    let ns = namespace_with_executor().await;
    let op = Operator::start(&ns.name).await;
    ns.apply_yaml(APP).await.unwrap();
    wait_app(&ns, "doomed", "children applied", |a| {
        a.status.as_ref().is_some_and(|s| s.service_name.is_some())
    })
    .await;
    let (d, s, sec) = (
        ns.api::<Deployment>(),
        ns.api::<Service>(),
        ns.api::<Secret>(),
    );
    assert!(d.get_opt("doomed").await.unwrap().is_some());
    ns.api::<SpinApp>()
        .delete("doomed", &DeleteParams::foreground())
        .await
        .unwrap();
    wait_for("children to be garbage-collected", TIMEOUT, || async {
        let gone = d.get_opt("doomed").await.ok()?.is_none()
            && s.get_opt("doomed").await.ok()?.is_none()
            && sec.get_opt("doomed-runtime-config").await.ok()?.is_none();
        gone.then_some(())
    })
    .await
    .unwrap();
    op.stop().await;
    ns.cleanup().await;
}

#[tokio::test]
async fn executor_deletion_waits_for_its_apps() {
    let ns = namespace_with_executor().await;
    let op = Operator::start(&ns.name).await;
    let executors: Api<SpinAppExecutor> = ns.api();
    wait_for("the finalizer on the executor", TIMEOUT, || async {
        let e = executors.get("containerd-shim-spin").await.ok()?;
        e.finalizers()
            .iter()
            .any(|f| f == "core.spinkube.dev/finalizer")
            .then_some(())
    })
    .await
    .unwrap();
    ns.apply_yaml(APP).await.unwrap();
    wait_app(&ns, "doomed", "children applied", |a| {
        a.status.as_ref().is_some_and(|s| s.service_name.is_some())
    })
    .await;

    executors
        .delete("containerd-shim-spin", &DeleteParams::default())
        .await
        .unwrap();
    let note = wait_event(&ns, "containerd-shim-spin", "Warning", "ExecutorInUse").await;
    assert!(note.contains("doomed"), "the event names the app: {note}");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let e = executors
        .get("containerd-shim-spin")
        .await
        .expect("the executor must still exist");
    assert!(e.metadata.deletion_timestamp.is_some());

    ns.api::<SpinApp>()
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the executor to be deleted", TIMEOUT, || async {
        executors
            .get_opt("containerd-shim-spin")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await
    .unwrap();
    op.stop().await;
    ns.cleanup().await;
}
