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

/// The operator side of scale to zero against the dev control plane (kwok
/// pods, kcm EndpointSlices): the controller runs in this process with a
/// write-counting client, the real `spindle activator` runs as a child
/// process on 127.0.0.1. kwok pod IPs are not reachable here, so a held
/// request wakes the app but is never answered by it (the netns tier covers
/// that); the activator's admin endpoint is reached through the operator's
/// test-only address override, while its availability still comes from an
/// EndpointSlice of a `spindle-activator` Service, as in a cluster.
mod operator_side {
    use std::net::SocketAddr;
    use std::ops::RangeInclusive;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::{ListParams, Patch, PatchParams};
    use kube::{Api, ResourceExt};
    use spindle::api::SpinApp;
    use spindle::controller::scale_to_zero::Options;
    use spindle::metrics::Metrics;
    use spindle_e2e::{TestNamespace, built_spindle_bin, kubeconfig_path, wait_for};

    const TIMEOUT: Duration = Duration::from_secs(60);
    use spindle_e2e::SHIM_EXECUTOR as EXECUTOR;

    fn writes(m: &Metrics) -> u64 {
        ["create", "update", "patch", "delete"]
            .iter()
            .map(|v| m.requests_with_verb(v))
            .sum()
    }

    /// Writes per `verb resource`, for the diagnostics printed with each phase.
    fn write_counts(m: &Metrics) -> std::collections::BTreeMap<String, u64> {
        m.request_counts()
            .into_iter()
            .filter(|(l, _)| ["create", "update", "patch", "delete"].contains(&l.verb))
            .map(|(l, n)| (format!("{} {}", l.verb, l.resource), n))
            .collect()
    }

    fn diff(
        before: &std::collections::BTreeMap<String, u64>,
        after: &std::collections::BTreeMap<String, u64>,
    ) -> String {
        after
            .iter()
            .filter_map(|(k, n)| {
                let d = n - before.get(k).copied().unwrap_or(0);
                (d > 0).then(|| format!("{k}: {d}"))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    struct Operator {
        metrics: Metrics,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Operator {
        async fn start(ns: &str, options: Options) -> Self {
            let metrics = Metrics::new();
            let path = kubeconfig_path();
            let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig");
            let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .expect("kube config");
            let client = kube::client::ClientBuilder::try_from(config)
                .expect("client")
                .with_layer(&metrics.count_requests())
                .build();
            let readiness = spindle::http::Readiness::default();
            let config = spindle::controller::Config {
                namespace: Some(ns.to_owned()),
                metrics: metrics.clone(),
                readiness: readiness.clone(),
                instance: Some(format!("test-{ns}")),
                scale_to_zero: options,
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
            Operator {
                metrics,
                stop: Some(tx),
                task,
            }
        }

        async fn stop(mut self) {
            if let Some(tx) = self.stop.take() {
                let _ = tx.send(());
            }
            let _ = tokio::time::timeout(Duration::from_secs(30), &mut self.task).await;
        }
    }

    /// The real activator process; killed (by its own handle) when dropped.
    struct ActivatorProcess {
        child: tokio::process::Child,
        admin: SocketAddr,
    }

    impl ActivatorProcess {
        async fn start(ns: &str, range: &RangeInclusive<u16>) -> Self {
            let bin = built_spindle_bin().unwrap_or_else(|e| panic!("{e:#}"));
            let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let child = tokio::process::Command::new(bin)
                .args([
                    "activator",
                    "--admin-addr",
                    &admin.to_string(),
                    "--listen-ip",
                    "127.0.0.1",
                    "--port-range",
                    &format!("{}-{}", range.start(), range.end()),
                    "--namespace",
                    ns,
                    "--identity",
                    "test-activator",
                    "--shutdown-delay-seconds",
                    "0",
                ])
                .env("KUBECONFIG", kubeconfig_path())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .expect("starting spindle activator");
            wait_for("the activator to be ready", TIMEOUT, || async {
                spindle_e2e::http_get_local(admin.port(), "/readyz")
                    .await
                    .filter(|(code, _)| *code == 200)
            })
            .await
            .expect("activator ready");
            ActivatorProcess { child, admin }
        }

        async fn stop(mut self) {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }

    /// A selector-less `spindle-activator` Service with one ready endpoint,
    /// as kcm would publish for one activator pod.
    async fn publish_activator(ns: &TestNamespace) {
        ns.apply_yaml(
            r#"
apiVersion: v1
kind: Service
metadata: {name: spindle-activator}
spec:
  ports: [{name: admin, port: 9090}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: spindle-activator-test
  labels: {kubernetes.io/service-name: spindle-activator}
addressType: IPv4
ports: [{name: admin, port: 9090, protocol: TCP}]
endpoints:
- addresses: ["10.244.255.1"]
  conditions: {ready: true}
  targetRef: {kind: Pod, name: spindle-activator-0}
"#,
        )
        .await
        .expect("publishing the activator");
    }

    fn options(ns: &str, range: RangeInclusive<u16>, admin: Option<SocketAddr>) -> Options {
        Options {
            activator_namespace: ns.to_owned(),
            activator_admin_addr: admin,
            port_range: range,
            activity_poll: Duration::from_secs(1),
            idle_timeout_override: Some(Duration::from_secs(4)),
            // ClusterIPs are not routed on the dev control plane.
            dataplane_probe: false,
            ..Default::default()
        }
    }

    fn app_yaml(name: &str, replicas: i32) -> String {
        format!(
            r#"
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinApp
metadata: {{name: {name}}}
spec:
  executor: containerd-shim-spin
  image: ghcr.io/example/app:v1
  replicas: {replicas}
  scaleToZero: {{enabled: true, idleTimeout: 30s, coldStartTimeout: 10s, drainSeconds: 5}}
"#
        )
    }

    fn state(app: &SpinApp) -> Option<&str> {
        app.status
            .as_ref()?
            .scale_to_zero
            .as_ref()?
            .state
            .as_deref()
    }

    fn ready(app: &SpinApp) -> Option<(&str, &str)> {
        let c = app
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")?;
        Some((c.status.as_str(), c.reason.as_str()))
    }

    async fn wait_state(apps: &Api<SpinApp>, name: &str, want: &str) -> SpinApp {
        let found = wait_for(&format!("{name} to be {want}"), TIMEOUT, || async {
            let app = apps.get_opt(name).await.ok()??;
            (state(&app) == Some(want)).then_some(app)
        })
        .await;
        match found {
            Ok(app) => app,
            Err(e) => {
                let last = apps.get_opt(name).await.ok().flatten();
                panic!("{e}; last status: {:#?}", last.and_then(|a| a.status))
            }
        }
    }

    /// Ready pod endpoints in kcm's slices of the app.
    fn kcm_ready(slices: &[EndpointSlice]) -> usize {
        slices
            .iter()
            .filter(|s| !s.name_any().ends_with("-activator"))
            .flat_map(|s| s.endpoints.iter().flatten())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .count()
    }

    async fn app_slices(ns: &TestNamespace, name: &str) -> Vec<EndpointSlice> {
        ns.api::<EndpointSlice>()
            .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}")))
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }

    /// Wait until the write count has not changed for `quiet`; returns it.
    async fn settle(m: &Metrics, quiet: Duration) -> u64 {
        let mut last = writes(m);
        let mut since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = writes(m);
            if now != last {
                (last, since) = (now, Instant::now());
            } else if since.elapsed() >= quiet {
                return now;
            }
        }
    }

    #[tokio::test]
    async fn idle_app_goes_to_zero_behind_the_activator_and_a_request_wakes_it() {
        let ns = TestNamespace::new().await;
        ns.apply_yaml(EXECUTOR).await.expect("executor");
        let range = 29800..=29899;
        let activator = ActivatorProcess::start(&ns.name, &range).await;
        publish_activator(&ns).await;
        let op = Operator::start(&ns.name, options(&ns.name, range, Some(activator.admin))).await;
        let apps: Api<SpinApp> = ns.api();
        let deployments: Api<Deployment> = ns.api();
        ns.apply_yaml(&app_yaml("sleepy", 2)).await.expect("app");

        // Serving first: kwok pods become ready, the slice applied while no
        // pod was ready goes away.
        wait_state(&apps, "sleepy", "Serving").await;
        let serving_writes = writes(&op.metrics);
        let serving_counts = write_counts(&op.metrics);
        let service = ns.api::<Service>().get("sleepy").await.expect("service");
        let port: u16 = service.annotations()["spindle.spinkube.dev/activator-port"]
            .parse()
            .expect("port annotation");
        assert!((29800..=29899).contains(&port), "{port}");

        // Idle after 4 s (test override) + the 2 s observation window.
        let t = Instant::now();
        let idle = wait_state(&apps, "sleepy", "Idle").await;
        let idle_after = t.elapsed();
        assert_eq!(ready(&idle), Some(("True", "ScaledToZero")));
        let s = idle
            .status
            .as_ref()
            .unwrap()
            .scale_to_zero
            .as_ref()
            .unwrap();
        assert_eq!(s.activator_port, Some(i32::from(port)));
        assert!(s.last_scale_down_time.is_some());
        assert_eq!(op.metrics.scale_transitions("down"), 1);
        assert_eq!(op.metrics.scale_transitions("up"), 0);
        let d = deployments.get("sleepy").await.unwrap();
        assert_eq!(d.spec.replicas, Some(0));
        let pod = d.spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.termination_grace_period_seconds, Some(15));
        assert!(
            pod.containers[0]
                .lifecycle
                .as_ref()
                .unwrap()
                .pre_stop
                .is_some()
        );
        let slice = ns
            .api::<EndpointSlice>()
            .get("sleepy-activator")
            .await
            .expect("activator slice present while idle");
        assert_eq!(slice.ports.as_ref().unwrap()[0].port, Some(i32::from(port)));
        assert_eq!(
            slice.endpoints.as_ref().unwrap()[0].addresses,
            vec!["10.244.255.1".to_owned()]
        );
        ns.kubectl(&[
            "wait",
            "--for=condition=Ready",
            "spinapp/sleepy",
            "--timeout=5s",
        ])
        .await
        .expect("kubectl wait --for=condition=Ready works for an idle app");
        let down_writes = settle(&op.metrics, Duration::from_secs(2)).await - serving_writes;
        eprintln!(
            "scale-down: {down_writes} API writes ({}), Idle {idle_after:?} after Serving",
            diff(&serving_counts, &write_counts(&op.metrics))
        );

        // Idle: no writes over several polls and requeues, nor on a reconcile
        // forced by a metadata change.
        let before = writes(&op.metrics);
        let before_counts = write_counts(&op.metrics);
        let reconciles = op.metrics.reconciles("spinapp");
        tokio::time::sleep(Duration::from_secs(5)).await;
        apps.patch(
            "sleepy",
            &PatchParams::apply("spindle-e2e-touch"),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "core.spinkube.dev/v1alpha1", "kind": "SpinApp",
                "metadata": {"name": "sleepy", "annotations": {"touched": "1"}}
            })),
        )
        .await
        .expect("touch");
        wait_for("a reconcile", TIMEOUT, || async {
            (op.metrics.reconciles("spinapp") > reconciles).then_some(())
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle_writes = writes(&op.metrics) - before;
        eprintln!(
            "idle: {idle_writes} API writes ({}) over {} reconciles",
            diff(&before_counts, &write_counts(&op.metrics)),
            op.metrics.reconciles("spinapp") - reconciles
        );
        assert_eq!(idle_writes, 0, "an idle app must cost no writes");
        assert_eq!(state(&apps.get("sleepy").await.unwrap()), Some("Idle"));

        // A request to the activator: held, demand Lease, woken.
        let wake_start = writes(&op.metrics);
        let wake_counts = write_counts(&op.metrics);
        let t = Instant::now();
        let mut held = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("the activator listens on the app's port");
        tokio::io::AsyncWriteExt::write_all(
            &mut held,
            b"GET / HTTP/1.1\r\nhost: sleepy\r\nconnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        // The slice stays until a ready pod is observed.
        let deadline = Instant::now() + TIMEOUT;
        let mut saw_ready_with_slice = false;
        loop {
            let slices = app_slices(&ns, "sleepy").await;
            let ours = slices.iter().any(|s| s.name_any() == "sleepy-activator");
            let ready = kcm_ready(&slices);
            saw_ready_with_slice |= ours && ready > 0;
            if !ours {
                assert!(
                    ready > 0,
                    "the activator slice was removed while no pod was ready"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the app did not wake (slice still present)"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let woke_after = t.elapsed();
        // Removal waits for the 1 s hysteresis after the first ready pod.
        assert!(
            saw_ready_with_slice,
            "never saw a ready pod beside the slice"
        );
        let d = deployments.get("sleepy").await.unwrap();
        assert_eq!(d.spec.replicas, Some(2), "woken to spec.replicas");
        let app = wait_state(&apps, "sleepy", "Serving").await;
        assert!(
            app.status
                .unwrap()
                .scale_to_zero
                .unwrap()
                .last_wake_time
                .is_some()
        );
        assert_eq!(op.metrics.scale_transitions("up"), 1);
        assert_eq!(op.metrics.scale_transitions("down"), 1);
        assert!(
            op.metrics
                .encode()
                .contains("spindle_scale_to_zero_transitions_total{direction=\"up\"} 1"),
            "{}",
            op.metrics.encode()
        );
        drop(held);
        let wake_writes = settle(&op.metrics, Duration::from_secs(2)).await - wake_start;
        eprintln!(
            "wake: {wake_writes} operator API writes ({}), slice removed {woke_after:?} after the request",
            diff(&wake_counts, &write_counts(&op.metrics))
        );
        // Bounds: the slice, the Deployment and up to 2 events per switch;
        // the status follows the Deployment's pods (replicas, readyReplicas,
        // Available) besides the state, so it is written a few times.
        assert!(down_writes <= 12, "scale-down took {down_writes} writes");
        assert!(wake_writes <= 14, "wake took {wake_writes} writes");

        op.stop().await;
        activator.stop().await;
        ns.cleanup().await;
    }

    #[tokio::test]
    async fn without_an_activator_apps_keep_serving_and_manual_zero_still_stops_them() {
        let ns = TestNamespace::new().await;
        ns.apply_yaml(EXECUTOR).await.expect("executor");
        // No activator Service: nothing may be scaled down.
        let op = Operator::start(&ns.name, options(&ns.name, 29900..=29949, None)).await;
        let apps: Api<SpinApp> = ns.api();
        let deployments: Api<Deployment> = ns.api();
        ns.apply_yaml(&app_yaml("lonely", 1)).await.expect("app");
        // The reason appears with the first status, before the pod is up: wait for
        // both, then check Ready holds while the app is refused a scale-down.
        wait_for(
            "lonely Ready and reporting ActivatorUnavailable",
            TIMEOUT,
            || async {
                let app = apps.get_opt("lonely").await.ok()??;
                let s = app.status.as_ref()?.scale_to_zero.as_ref()?;
                (s.state.as_deref() == Some("Serving")
                    && s.reason.as_deref() == Some("ActivatorUnavailable")
                    && ready(&app).map(|r| r.0) == Some("True"))
                .then_some(())
            },
        )
        .await
        .unwrap();
        // Past the idle timeout (4 s) and the observation window: still serving.
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert_eq!(
            deployments.get("lonely").await.unwrap().spec.replicas,
            Some(1)
        );
        assert!(
            ns.api::<EndpointSlice>()
                .get_opt("lonely-activator")
                .await
                .unwrap()
                .is_none(),
            "no activator slice without an activator"
        );
        // Manual replicas 0 keeps working.
        ns.apply_yaml(&app_yaml("lonely", 0))
            .await
            .expect("replicas 0");
        let app = wait_for("lonely stopped", TIMEOUT, || async {
            let app = apps.get_opt("lonely").await.ok()??;
            let d = deployments.get_opt("lonely").await.ok()??;
            let s = app.status.as_ref()?.scale_to_zero.as_ref()?;
            (d.spec.replicas == Some(0)
                && s.reason.as_deref() == Some("ReplicasZero")
                && ready(&app) == Some(("True", "ScaledToZero")))
            .then_some(app)
        })
        .await
        .unwrap();
        assert!(app.status.is_some());
        op.stop().await;
        ns.cleanup().await;
    }
}
