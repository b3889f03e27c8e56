//! (f) Two operator processes (the real binary) with leader election: only
//! the leader writes; when it stops, the other takes over.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use spindle_e2e::operator::app_writes;
use spindle_e2e::{http_get_local, kubeconfig_path, wait_for};

use crate::common::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Value of a metric line (exact series) in an OpenMetrics body.
fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

struct Replica {
    child: tokio::process::Child,
    port: u16,
    identity: String,
    log: PathBuf,
}

/// A failing test shows what each replica logged (the log files stay for a look).
impl Drop for Replica {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(200)..].join("\n");
            eprintln!(
                "---- {} log ({}), last {} lines ----\n{tail}",
                self.identity,
                self.log.display(),
                lines.len().min(200)
            );
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

impl Replica {
    fn start(ns: &str, identity: &str) -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("spindle-{ns}-{identity}.log"));
        let log_file = std::fs::File::create(&log).expect("creating the replica's log file");
        let child = tokio::process::Command::new(
            spindle_e2e::built_spindle_bin().unwrap_or_else(|e| panic!("{e:#}")),
        )
        .args([
            "run",
            "--namespace",
            ns,
            "--leader-election-namespace",
            ns,
            "--lease-name",
            "spindle-leader",
            // Test images (ghcr.io/...) are not reachable here.
            "--resolve-images=false",
        ])
        .args([
            "--identity",
            identity,
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--log-level",
            "info,spindle=debug",
        ])
        .env("KUBECONFIG", kubeconfig_path())
        .stdout(log_file.try_clone().expect("log file"))
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .expect("starting the spindle binary");
        Self {
            child,
            port,
            identity: identity.to_owned(),
            log,
        }
    }

    async fn metrics(&self) -> String {
        http_get_local(self.port, "/metrics")
            .await
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    async fn is_leader(&self) -> bool {
        metric(&self.metrics().await, "spindle_leader ") == Some(1.0)
    }

    /// SIGTERM (graceful: releases the lease) and wait for the exit.
    async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .unwrap()
    }
}

#[tokio::test]
async fn only_the_leader_reconciles() {
    let ns = namespace_with_executor().await;
    let mut a = Replica::start(&ns.name, "replica-a");
    wait_for("replica-a to lead", TIMEOUT, || async {
        a.is_leader().await.then_some(())
    })
    .await
    .unwrap();
    let mut b = Replica::start(&ns.name, "replica-b");
    wait_for("replica-b to be ready as a standby", TIMEOUT, || async {
        (http_get_local(b.port, "/readyz").await?.0 == 200).then_some(())
    })
    .await
    .unwrap();
    assert!(!b.is_leader().await, "two leaders");

    ns.apply_yaml("apiVersion: core.spinkube.dev/v1alpha1\nkind: SpinApp\nmetadata: {name: led}\nspec: {executor: containerd-shim-spin, image: 'ghcr.io/x/led:v1'}\n")
        .await
        .unwrap();
    wait_app(&ns, "led", "Ready", |app| {
        has_condition(app, "Ready", "True", None)
    })
    .await;
    assert!(
        app_writes(&a.metrics().await) > 0.0,
        "the leader wrote nothing"
    );
    assert_eq!(
        app_writes(&b.metrics().await),
        0.0,
        "the standby wrote: {}",
        b.metrics().await
    );
    let events: Vec<_> = events_about(&ns, "led")
        .await
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("spindle"))
        .collect();
    assert!(!events.is_empty());
    for e in &events {
        assert_eq!(
            e.reporting_instance.as_deref(),
            Some("replica-a"),
            "event from a non-leader: {e:?}"
        );
    }

    // Graceful stop of the leader releases the lease; the standby takes over at once.
    let exit = a.terminate().await;
    assert!(exit.success(), "leader exit: {exit}");
    wait_for("replica-b to lead", Duration::from_secs(20), || async {
        b.is_leader().await.then_some(())
    })
    .await
    .unwrap();
    ns.apply_yaml("apiVersion: core.spinkube.dev/v1alpha1\nkind: SpinApp\nmetadata: {name: led}\nspec: {executor: containerd-shim-spin, image: 'ghcr.io/x/led:v1', replicas: 2}\n")
        .await
        .unwrap();
    let deployments: kube::Api<Deployment> = ns.api();
    wait_for("replica-b to scale the Deployment", TIMEOUT, || async {
        (deployments.get("led").await.ok()?.spec.replicas == Some(2)).then_some(())
    })
    .await
    .unwrap();
    let d = deployments.get("led").await.unwrap();
    assert!(
        d.managed_fields()
            .iter()
            .any(|m| m.manager.as_deref() == Some("spindle"))
    );
    assert!(app_writes(&b.metrics().await) > 0.0);
    let exit = b.terminate().await;
    assert!(exit.success(), "standby exit: {exit}");
    ns.cleanup().await;
}
