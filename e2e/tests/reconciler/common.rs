//! Shared helpers of the reconciler tests: an in-process operator scoped to
//! the test's namespace, fixtures and wait helpers.

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use spindle::api::SpinApp;
use spindle::metrics::Metrics;
use spindle_e2e::{TestNamespace, kubeconfig_path, wait_for};

/// Default timeout of the waits in these tests.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A RuntimeClass every test may use; created once, never deleted.
pub const RUNTIME_CLASS: &str = "wasmtime-spin-v2";

/// A client whose requests are counted into `metrics`.
pub async fn counting_client(metrics: &Metrics) -> Client {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path).expect("reading the test kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("loading the test kubeconfig");
    kube::client::ClientBuilder::try_from(config)
        .expect("building a client")
        .with_layer(&metrics.count_requests())
        .build()
}

/// The operator, running in this process, watching one namespace.
pub struct Operator {
    /// Metrics of this operator instance (requests, reconciles).
    pub metrics: Metrics,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Operator {
    /// Start the controllers for `namespace`; returns once the caches are synced.
    pub async fn start(namespace: &str) -> Self {
        let metrics = Metrics::new();
        let client = counting_client(&metrics).await;
        let readiness = spindle::http::Readiness::default();
        let config = spindle::controller::Config {
            namespace: Some(namespace.to_owned()),
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            instance: Some(format!("test-{namespace}")),
            ..Default::default()
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(spindle::controller::run_until(client, config, async move {
            let _ = rx.await;
        }));
        wait_for("the operator's caches to sync", TIMEOUT, || async {
            readiness.is_ready().then_some(())
        })
        .await
        .expect("caches sync");
        Self {
            metrics,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Graceful shutdown; waits for running reconciles.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("operator stops within 30 s")
                .expect("operator task");
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Create a cluster-scoped RuntimeClass unless it exists.
pub async fn ensure_runtime_class(client: &Client, name: &str) {
    let api: Api<RuntimeClass> = Api::all(client.clone());
    if api
        .get_opt(name)
        .await
        .expect("reading RuntimeClass")
        .is_some()
    {
        return;
    }
    let rc: RuntimeClass =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "handler": "spin"}))
            .unwrap();
    match api.create(&PostParams::default(), &rc).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating RuntimeClass {name}: {e}"),
    }
}

/// The standard shim executor (`containerd-shim-spin`, RuntimeClass [`RUNTIME_CLASS`]).
pub const SHIM_EXECUTOR: &str = r#"
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinAppExecutor
metadata:
  name: containerd-shim-spin
spec:
  createDeployment: true
  deploymentConfig:
    runtimeClassName: wasmtime-spin-v2
"#;

/// Test namespace with the shim executor and its RuntimeClass.
pub async fn namespace_with_executor() -> TestNamespace {
    let ns = TestNamespace::new().await;
    ensure_runtime_class(&ns.client, RUNTIME_CLASS).await;
    ns.apply_yaml(SHIM_EXECUTOR)
        .await
        .expect("applying the executor");
    ns
}

/// Wait until the SpinApp satisfies `check`; returns it.
pub async fn wait_app(
    ns: &TestNamespace,
    name: &str,
    what: &str,
    check: impl Fn(&SpinApp) -> bool,
) -> SpinApp {
    let api: Api<SpinApp> = ns.api();
    let result = wait_for(&format!("SpinApp {name}: {what}"), TIMEOUT, || async {
        let app = api.get_opt(name).await.ok()??;
        check(&app).then_some(app)
    })
    .await;
    match result {
        Ok(app) => app,
        Err(e) => {
            let app = api.get_opt(name).await.ok().flatten();
            panic!("{e}\nlast seen status: {:#?}", app.and_then(|a| a.status));
        }
    }
}

/// The condition of `type_` on the app, if any.
pub fn condition<'a>(app: &'a SpinApp, type_: &str) -> Option<&'a Condition> {
    app.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Whether the app has condition `type_` with `status` (and `reason`, if given).
pub fn has_condition(app: &SpinApp, type_: &str, status: &str, reason: Option<&str>) -> bool {
    condition(app, type_)
        .is_some_and(|c| c.status == status && reason.is_none_or(|r| c.reason == r))
}

/// Events (events.k8s.io/v1) about the object named `name` in the namespace.
pub async fn events_about(ns: &TestNamespace, name: &str) -> Vec<Event> {
    let api: Api<Event> = ns.api();
    api.list(&ListParams::default())
        .await
        .expect("listing events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// Wait for an event about `name` with `type_` and `reason`; returns its note.
pub async fn wait_event(ns: &TestNamespace, name: &str, type_: &str, reason: &str) -> String {
    wait_for(
        &format!("a {type_} event {reason} about {name}"),
        TIMEOUT,
        || async {
            events_about(ns, name)
                .await
                .into_iter()
                .find(|e| e.type_.as_deref() == Some(type_) && e.reason.as_deref() == Some(reason))
                .map(|e| e.note.unwrap_or_default())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}
