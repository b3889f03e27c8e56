//! (d) Bad input → the right condition and a Warning event, no panic, the
//! running version untouched, and recovery once fixed.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::Api;
use kube::api::DeleteParams;
use spindle_e2e::{api_status, wait_for};

use crate::common::*;

fn app(name: &str, executor: &str, extra: &str) -> String {
    format!(
        "apiVersion: core.spinkube.dev/v1alpha1\nkind: SpinApp\nmetadata: {{name: {name}}}\nspec:\n  executor: {executor}\n  image: ghcr.io/x/{name}:v1\n{extra}"
    )
}

async fn wait_deployment(ns: &spindle_e2e::TestNamespace, name: &str) -> Deployment {
    let api: Api<Deployment> = ns.api();
    wait_for(&format!("Deployment {name}"), TIMEOUT, || async {
        api.get_opt(name).await.ok()?
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn missing_executor_is_reported_and_recovers() {
    let ns = namespace_with_executor().await;
    let op = Operator::start(&ns.name).await;
    ns.apply_yaml(&app("orphan", "not-yet", "")).await.unwrap();
    let a = wait_app(&ns, "orphan", "ExecutorReady=False", |a| {
        has_condition(a, "ExecutorReady", "False", Some("MissingExecutor"))
    })
    .await;
    assert!(has_condition(&a, "Ready", "False", Some("MissingExecutor")));
    let note = wait_event(&ns, "orphan", "Warning", "MissingExecutor").await;
    assert!(
        note.contains("not-yet"),
        "the event names the executor: {note}"
    );
    assert!(
        ns.api::<Deployment>()
            .get_opt("orphan")
            .await
            .unwrap()
            .is_none()
    );

    ns.apply_yaml(&SHIM_EXECUTOR.replace("name: containerd-shim-spin", "name: not-yet"))
        .await
        .unwrap();
    wait_app(&ns, "orphan", "ExecutorReady=True", |a| {
        has_condition(a, "ExecutorReady", "True", None)
    })
    .await;
    wait_deployment(&ns, "orphan").await;
    op.stop().await;
    ns.cleanup().await;
}

#[tokio::test]
async fn missing_runtime_class_is_reported_and_recovers() {
    let ns = namespace_with_executor().await;
    let rc_name = format!("rc-{}", ns.name);
    ns.apply_yaml(
        &SHIM_EXECUTOR
            .replace("name: containerd-shim-spin", "name: custom")
            .replace(RUNTIME_CLASS, &rc_name),
    )
    .await
    .unwrap();
    let op = Operator::start(&ns.name).await;
    ns.apply_yaml(&app("needs-rc", "custom", "")).await.unwrap();
    wait_app(&ns, "needs-rc", "RuntimeClassNotFound", |a| {
        has_condition(a, "ExecutorReady", "False", Some("RuntimeClassNotFound"))
    })
    .await;
    let note = wait_event(&ns, "needs-rc", "Warning", "RuntimeClassNotFound").await;
    assert!(note.contains(&rc_name), "{note}");
    // The executor reports it too.
    let executors: Api<spindle::api::SpinAppExecutor> = ns.api();
    wait_for(
        "the executor's RuntimeClassFound=False",
        TIMEOUT,
        || async {
            let e = executors.get("custom").await.ok()?;
            e.status?
                .conditions
                .iter()
                .any(|c| c.type_ == "RuntimeClassFound" && c.status == "False")
                .then_some(())
        },
    )
    .await
    .unwrap();

    ensure_runtime_class(&ns.client, &rc_name).await;
    wait_app(&ns, "needs-rc", "recovered", |a| {
        has_condition(a, "ExecutorReady", "True", None)
    })
    .await;
    wait_deployment(&ns, "needs-rc").await;
    wait_for("the executor's RuntimeClassFound=True", TIMEOUT, || async {
        let e = executors.get("custom").await.ok()?;
        e.status?
            .conditions
            .iter()
            .any(|c| c.type_ == "RuntimeClassFound" && c.status == "True")
            .then_some(())
    })
    .await
    .unwrap();
    let _ = Api::<RuntimeClass>::all(ns.client.clone())
        .delete(&rc_name, &DeleteParams::default())
        .await;
    op.stop().await;
    ns.cleanup().await;
}

#[tokio::test]
async fn broken_config_never_takes_a_running_app_down() {
    let ns = namespace_with_executor().await;
    let op = Operator::start(&ns.name).await;
    let good = "  runtimeConfig:\n    keyValueStores:\n    - name: default\n      type: redis\n      options: [{name: url, value: 'redis://ok:6379'}]\n";
    ns.apply_yaml(&app("steady", "containerd-shim-spin", good))
        .await
        .unwrap();
    wait_app(&ns, "steady", "Ready", |a| {
        has_condition(a, "Ready", "True", None)
    })
    .await;
    let before = wait_deployment(&ns, "steady").await;

    // Invalid redis URL.
    ns.apply_yaml(&app(
        "steady",
        "containerd-shim-spin",
        &good.replace("redis://ok:6379", "http://not-redis"),
    ))
    .await
    .unwrap();
    let a = wait_app(&ns, "steady", "InvalidRedisUrl", |a| {
        has_condition(a, "RuntimeConfigReady", "False", Some("InvalidRedisUrl"))
    })
    .await;
    assert!(has_condition(&a, "Ready", "False", Some("InvalidRedisUrl")));
    let note = wait_event(&ns, "steady", "Warning", "InvalidRedisUrl").await;
    assert!(
        note.contains("redis://"),
        "the message says what to use: {note}"
    );
    assert!(
        !note.contains("http://not-redis"),
        "URLs may hold passwords and are not echoed: {note}"
    );
    let during = wait_deployment(&ns, "steady").await;
    assert_eq!(
        during.metadata.generation, before.metadata.generation,
        "the running Deployment was changed"
    );
    assert_eq!(
        a.status.as_ref().unwrap().ready_replicas,
        1,
        "the app still runs"
    );

    // Missing referenced Secret.
    let from_secret = "  runtimeConfig:\n    keyValueStores:\n    - name: default\n      type: redis\n      options:\n      - name: url\n        valueFrom: {secretKeyRef: {name: later, key: url}}\n";
    ns.apply_yaml(&app("steady", "containerd-shim-spin", from_secret))
        .await
        .unwrap();
    wait_app(&ns, "steady", "SecretNotFound", |a| {
        has_condition(a, "ReferencesResolved", "False", Some("SecretNotFound"))
    })
    .await;
    let note = wait_event(&ns, "steady", "Warning", "SecretNotFound").await;
    assert!(note.contains("later"), "{note}");
    assert_eq!(
        wait_deployment(&ns, "steady").await.metadata.generation,
        before.metadata.generation
    );

    // Fix it by creating the Secret: the app recovers without another spec change.
    ns.apply_yaml("apiVersion: v1\nkind: Secret\nmetadata: {name: later}\nstringData: {url: 'redis://fixed:6379'}\n").await.unwrap();
    wait_app(&ns, "steady", "recovered", |a| {
        has_condition(a, "ReferencesResolved", "True", None)
            && has_condition(a, "RuntimeConfigReady", "True", None)
    })
    .await;
    op.stop().await;
    ns.cleanup().await;
}

#[tokio::test]
async fn invocation_memory_above_the_limit_is_refused_with_a_fix() {
    let ns = namespace_with_executor().await;
    let op = Operator::start(&ns.name).await;
    let err = ns
        .apply_yaml(&app(
            "greedy",
            "containerd-shim-spin",
            "  resources: {limits: {memory: 64Mi}}\n  invocationLimits: {memory: 128Mi}\n",
        ))
        .await
        .expect_err("the apiserver must refuse it");
    let status = api_status(&err).expect("an API error");
    assert_eq!(status.code, 422);
    assert!(
        status
            .message
            .contains("invocationLimits.memory must not exceed resources.limits.memory"),
        "{}",
        status.message
    );
    // Within the limit it is accepted and reconciled.
    ns.apply_yaml(&app(
        "greedy",
        "containerd-shim-spin",
        "  resources: {limits: {memory: 128Mi}}\n  invocationLimits: {memory: 64Mi}\n",
    ))
    .await
    .unwrap();
    wait_app(&ns, "greedy", "SpecValid", |a| {
        has_condition(a, "SpecValid", "True", None)
    })
    .await;
    wait_deployment(&ns, "greedy").await;
    op.stop().await;
    ns.cleanup().await;
}
