//! (i) Startup: a reconcile runs only once every cache it reads has finished
//! its first list, so an app whose executor exists is never reported with a
//! missing executor, however the initial lists race; and that wait is woken
//! when the caches fill, not by its timeout.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use spindle::api::SpinApp;
use spindle_e2e::wait_for;

use crate::common::*;

#[tokio::test]
async fn first_reconcile_after_startup_sees_the_existing_executor() {
    let ns = namespace_with_executor().await;
    // Big executors make the executor list slower than the app list, so the
    // app's first reconcile would run before the executor cache is filled.
    let padding = "x".repeat(200 * 1024);
    for i in 0..8 {
        ns.apply_yaml(&format!(
            "apiVersion: core.spinkube.dev/v1alpha1\nkind: SpinAppExecutor\nmetadata:\n  name: padding-{i}\n  annotations: {{padding: {padding}}}\nspec: {{createDeployment: false}}\n"
        ))
        .await
        .expect("a padding executor");
    }
    ns.apply_yaml("apiVersion: core.spinkube.dev/v1alpha1\nkind: SpinApp\nmetadata: {name: early}\nspec: {executor: containerd-shim-spin, image: 'ghcr.io/x/early:v1'}\n")
        .await
        .expect("the app");

    // Every Ready reason the app ever has, from before the operator starts.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let api: Api<SpinApp> = ns.api();
    let recorder = tokio::spawn({
        let seen = seen.clone();
        watcher(
            api,
            watcher::Config::default().fields("metadata.name=early"),
        )
        .applied_objects()
        .for_each(move |app| {
            if let Ok(app) = app {
                let reason =
                    condition(&app, "Ready").map_or("<none>".to_owned(), |c| c.reason.clone());
                seen.lock().unwrap().push(reason);
            }
            futures::future::ready(())
        })
    });
    wait_for("the recording watch to list the app", TIMEOUT, || async {
        (!seen.lock().unwrap().is_empty()).then_some(())
    })
    .await
    .unwrap();

    let t0 = std::time::Instant::now();
    let operator = Operator::start(&ns.name).await;
    wait_app(&ns, "early", "Ready=True", |app| {
        has_condition(app, "Ready", "True", None)
    })
    .await;
    // The watch may lag the GET a little.
    wait_for("the watch to see Ready=True", TIMEOUT, || async {
        seen.lock()
            .unwrap()
            .iter()
            .any(|r| r == "Ready")
            .then_some(())
    })
    .await
    .unwrap();
    recorder.abort();
    let took = t0.elapsed();
    let reasons = seen.lock().unwrap().clone();
    assert!(
        !reasons.iter().any(|r| r == "MissingExecutor"),
        "the app was reported without its executor: Ready reasons over time {reasons:?}"
    );
    // A reconcile whose wait for the caches is never woken ends only by the
    // wait's timeout (kube's Store::wait_until_ready wakes one waiter).
    assert!(
        took < spindle::controller::CACHE_SYNC_WAIT,
        "Ready after {took:?}: the first reconcile waited for its caches until the timeout"
    );
    operator.stop().await;
    ns.cleanup().await;
}
