//! (b) A Deployment that rolls out (kwok pods) makes the SpinApp Ready=True;
//! before that it is not Ready and reports the rollout.

use futures::TryStreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use spindle::api::SpinApp;

use crate::common::*;

#[tokio::test]
async fn rollout_makes_the_app_ready() {
    let ns = namespace_with_executor().await;
    let op = Operator::start(&ns.name).await;

    // Record every status the app goes through, from before it exists.
    let api: kube::Api<SpinApp> = ns.api();
    let watch =
        watcher(api, watcher::Config::default().fields("metadata.name=web")).applied_objects();
    let recorder = tokio::spawn(async move {
        let mut seen: Vec<(String, String, i32)> = Vec::new();
        let mut stream = std::pin::pin!(watch);
        while let Ok(Some(app)) = stream.try_next().await {
            if let Some(ready) = condition(&app, "Ready") {
                let entry = (
                    ready.status.clone(),
                    ready.reason.clone(),
                    app.status.as_ref().unwrap().ready_replicas,
                );
                if seen.last() != Some(&entry) {
                    seen.push(entry.clone());
                }
                if ready.status == "True" {
                    return (seen, app);
                }
            }
        }
        panic!("watch ended: {seen:?}");
    });

    ns.apply_yaml(
        "apiVersion: core.spinkube.dev/v1alpha1\nkind: SpinApp\nmetadata: {name: web}\nspec: {executor: containerd-shim-spin, image: 'ghcr.io/x/web:v1', replicas: 2}\n",
    )
    .await
    .unwrap();
    let (seen, app) = tokio::time::timeout(TIMEOUT, recorder)
        .await
        .expect("Ready=True within 60 s")
        .unwrap();
    assert!(
        seen.len() >= 2,
        "the app was Ready at once, without a rollout phase: {seen:?}"
    );
    assert_eq!(seen[0].0, "False", "first status: {seen:?}");
    assert!(
        ["RollingOut", "DeploymentNotFound"].contains(&seen[0].1.as_str()),
        "first status names the rollout: {seen:?}"
    );
    let status = app.status.as_ref().unwrap();
    assert_eq!(status.ready_replicas, 2);
    assert_eq!(status.replicas, Some(2));
    assert!(has_condition(&app, "Available", "True", None), "{status:?}");
    assert!(
        has_condition(&app, "Progressing", "True", None),
        "{status:?}"
    );
    op.stop().await;
    ns.cleanup().await;
}
