//! End-to-end scenarios, written once and run against whichever cluster
//! `SPINDLE_TEST_KUBECONFIG` points at:
//!
//! * the local control plane (`e2e/scripts/test.sh`): real apiserver,
//!   controller-manager and scheduler, kwok as a fake kubelet. Pods are only
//!   *reported* Running/Ready, nothing executes, nothing answers HTTP. The
//!   operator is the real `spindle` binary run out of cluster, scoped to each
//!   scenario's namespace and killed by its PID at the end.
//! * kind (`SPINDLE_E2E_CLUSTER=kind`, after `e2e/kind/up.sh` and
//!   `source .spindle/kind/env`): real pods on containerd-shim-spin, the
//!   operator installed in-cluster by `helm install`, real HTTP from a curl pod.
//!
//! Each scenario checks what the cluster can show; what it cannot (HTTP on
//! kwok, image resolution before it is wired into the controller, scale to
//! zero without the activator) is a separate scenario that is SKIPPED with the
//! reason printed, and counted as skipped (libtest's "ignored"), never as
//! passed. This binary has its own harness (`harness = false`): it runs the
//! scenarios one after the other (clusters and the 2-core machine are shared)
//! and prints libtest's summary line, which `e2e/scripts/test.sh` adds up.
//!
//! Usage: `cargo test -p spindle-e2e --test scenarios [-- FILTER...] [--list]`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod, Secret, Service};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use spindle::api::SpinApp;
use spindle_e2e::scenario::{Args, Outcome, Selection};
use spindle_e2e::{
    TestNamespace, crd_established, http_get_local, kubeconfig_path, kubectl, repo_root, scenarios,
    wait_for,
};

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

fn main() {
    let args = Args::from_env();
    let selection = Selection::new(
        &scenarios![
            s1_helm_install_and_operator_ready,
            s2_hello_rolls_out,
            s2_hello_answers_http,
            s3_kv_runtime_config_has_redis_url,
            s3_kv_redis_round_trip,
            s4_secret_change_rolls_pods,
            s4_secret_change_app_still_answers,
            s5_scale_subresource_to_three_ready_pods,
            s6_not_a_spin_app_and_private_registry,
            s7_scale_to_zero,
            s8_delete_leaves_nothing,
        ],
        &args,
    );
    if args.list {
        selection.list();
        return;
    }
    selection.announce("scenarios");
    let summary = selection.run("--- scenario", 15);
    summary.print();
    println!(
        "scenarios: {} passed, {} failed, {} skipped",
        summary.passed, summary.failed, summary.ignored
    );
    summary.exit();
}

// ---------------------------------------------------------------------------
// The cluster and what it can do
// ---------------------------------------------------------------------------

/// Where the scenarios run.
struct Cluster {
    /// `SPINDLE_E2E_CLUSTER=kind`: the whole stack from `e2e/kind/up.sh`.
    kind: bool,
    /// Whether pods really run (no kwok fake nodes).
    real_pods: bool,
}

impl Cluster {
    async fn detect(client: &Client) -> anyhow::Result<Self> {
        let kind = std::env::var("SPINDLE_E2E_CLUSTER").is_ok_and(|v| v == "kind");
        let nodes = Api::<Node>::all(client.clone())
            .list(&ListParams::default())
            .await
            .context("listing nodes")?;
        ensure!(!nodes.items.is_empty(), "the cluster has no nodes");
        let fake = |n: &Node| {
            n.annotations()
                .get("kwok.x-k8s.io/node")
                .map(String::as_str)
                == Some("fake")
                || n.labels().get("type").map(String::as_str) == Some("kwok")
        };
        let real_pods = !nodes.items.iter().any(fake);
        ensure!(
            !kind || real_pods,
            "SPINDLE_E2E_CLUSTER=kind but the cluster has kwok (fake) nodes: SPINDLE_TEST_KUBECONFIG points at the wrong cluster"
        );
        Ok(Self { kind, real_pods })
    }

    /// Real HTTP into pods: a curl pod reaching app Services.
    fn http(&self) -> Result<(), String> {
        if self.kind && self.real_pods {
            Ok(())
        } else {
            Err(
                "needs pods that really run and answer HTTP (kind: SPINDLE_E2E_CLUSTER=kind); \
                 on this cluster kwok only reports pods as Ready"
                    .into(),
            )
        }
    }

    fn timeout(&self) -> Duration {
        if self.real_pods {
            Duration::from_secs(240)
        } else {
            Duration::from_secs(60)
        }
    }
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn hello_image() -> String {
    env_or(
        "SPINDLE_E2E_HELLO_IMAGE",
        "kind-registry:5000/spindle/hello:v1",
    )
}

fn kv_image() -> String {
    env_or("SPINDLE_E2E_KV_IMAGE", "kind-registry:5000/spindle/kv:v1")
}

fn runtime_class() -> String {
    env_or("SPINDLE_E2E_RUNTIME_CLASS", "wasmtime-spin-v2")
}

fn versions() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(repo_root().join("e2e/scripts/versions.sh"))
        .expect("reading e2e/scripts/versions.sh");
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| {
            k.chars()
                .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
        })
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

fn spindle_cache() -> PathBuf {
    std::env::var_os("SPINDLE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache")
                });
            base.join("spindle")
        })
}

fn helm_bin() -> PathBuf {
    std::env::var_os("SPINDLE_E2E_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            spindle_cache()
                .join(format!("helm-{}", versions()["HELM_VERSION"]))
                .join("helm")
        })
}

async fn run_cmd(
    program: &std::path::Path,
    args: &[&str],
    stdin: Option<&str>,
) -> anyhow::Result<String> {
    use tokio::io::AsyncWriteExt;
    let helm_home = repo_root().join(".spindle/scenarios-helm-home");
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .env("HELM_CACHE_HOME", helm_home.join("cache"))
        .env("HELM_CONFIG_HOME", helm_home.join("config"))
        .env("HELM_DATA_HOME", helm_home.join("data"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running {}", program.display()))?;
    if let Some(input) = stdin {
        let mut w = child.stdin.take().expect("stdin");
        w.write_all(input.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{} {} failed ({}): {}{}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            stdout
        );
    }
    Ok(stdout)
}

// ---------------------------------------------------------------------------
// The operator
// ---------------------------------------------------------------------------

/// The real `spindle` binary run out of cluster, scoped to one namespace;
/// killed by its own PID when dropped. On kind the in-cluster operator
/// (installed by up.sh's `helm install`) is used and this is `None`.
struct LocalOperator {
    child: tokio::process::Child,
    port: u16,
}

impl LocalOperator {
    async fn start(namespace: &str) -> anyhow::Result<Self> {
        Self::start_resolving(namespace, false).await
    }

    /// `resolve`: resolve images (s6 uses loopback registries, which are
    /// reached over plain HTTP without further flags).
    async fn start_resolving(namespace: &str, resolve: bool) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = tokio::process::Command::new(spindle_e2e::built_spindle_bin()?)
            .args(["run", "--namespace", namespace, "--leader-elect=false"])
            // Otherwise the scenario images (kind-registry:5000/...) are not
            // reachable from here: pods get `spec.image` as written.
            .arg(format!("--resolve-images={resolve}"))
            .args([
                "--http-addr",
                &format!("127.0.0.1:{port}"),
                "--log-level",
                "info",
            ])
            .env("KUBECONFIG", kubeconfig_path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the spindle binary")?;
        let mut op = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = op.child.try_wait()? {
                bail!("spindle run exited before it was ready: {status}");
            }
            if http_get_local(port, "/readyz")
                .await
                .is_some_and(|(code, _)| code == 200)
            {
                return Ok(op);
            }
            ensure!(
                Instant::now() < deadline,
                "spindle run was not ready on /readyz within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SIGTERM by our own PID: a graceful shutdown, then wait.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
                .await
                .is_err()
            {
                let _ = self.child.kill().await;
            }
        }
    }
}

/// A scenario's world: a fresh namespace with the shim executor, the cluster's
/// capabilities and (locally) an operator for that namespace.
struct Env {
    ns: TestNamespace,
    cluster: Cluster,
    operator: Option<LocalOperator>,
}

impl Env {
    async fn new() -> anyhow::Result<Self> {
        Self::create(false).await
    }

    /// `resolve_images`: the local operator resolves images (kind: no effect,
    /// the in-cluster operator's settings come from up.sh).
    async fn create(resolve_images: bool) -> anyhow::Result<Self> {
        let ns = TestNamespace::new().await;
        let cluster = Cluster::detect(&ns.client).await?;
        ensure_runtime_class(&ns.client, &cluster).await?;
        ns.apply_yaml(&format!(
            "apiVersion: core.spinkube.dev/v1alpha1\nkind: SpinAppExecutor\nmetadata:\n  name: containerd-shim-spin\n\
             spec:\n  createDeployment: true\n  deploymentConfig:\n    runtimeClassName: {}\n",
            runtime_class()
        ))
        .await?;
        let operator = if cluster.kind {
            None
        } else {
            Some(LocalOperator::start_resolving(&ns.name, resolve_images).await?)
        };
        Ok(Self {
            ns,
            cluster,
            operator,
        })
    }

    async fn finish(self) {
        if let Some(op) = self.operator {
            op.stop().await;
        }
        self.ns.cleanup().await;
    }

    fn client(&self) -> Client {
        self.ns.client.clone()
    }

    async fn apply_app(
        &self,
        name: &str,
        image: &str,
        extra_spec: serde_json::Value,
    ) -> anyhow::Result<()> {
        let mut spec = json!({"image": image, "executor": "containerd-shim-spin", "replicas": 1,
            "checks": {"readiness": {"httpGet": {"path": "/health"}, "initialDelaySeconds": 1, "periodSeconds": 2}}});
        if name != "hello" {
            // Only hello serves /health.
            spec.as_object_mut().expect("object").remove("checks");
        }
        for (k, v) in extra_spec.as_object().cloned().unwrap_or_default() {
            spec[k] = v;
        }
        let app = json!({"apiVersion": "core.spinkube.dev/v1alpha1", "kind": "SpinApp",
            "metadata": {"name": name}, "spec": spec});
        self.ns.apply_yaml(&serde_json::to_string(&app)?).await?;
        Ok(())
    }

    /// Waits until the app's Deployment is Available with `replicas` ready pods.
    async fn wait_available(&self, name: &str, replicas: i32) -> anyhow::Result<Deployment> {
        let api: Api<Deployment> = self.ns.api();
        let r = wait_for(
            &format!("Deployment {name} Available with {replicas} ready replicas"),
            self.cluster.timeout(),
            || async {
                let d = api.get_opt(name).await.ok()??;
                let s = d.status.as_ref()?;
                let available = s.conditions.as_ref()?.iter().any(|c| {
                    c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")
                });
                let rolled = s.observed_generation == d.metadata.generation
                    && s.updated_replicas == Some(replicas)
                    && s.replicas == Some(replicas);
                (available && rolled && s.ready_replicas == Some(replicas)).then_some(d)
            },
        )
        .await;
        if r.is_err() {
            let dump = self
                .ns
                .kubectl(&["get", "spinapp,deploy,rs,pods", "-o", "wide"])
                .await
                .unwrap_or_default();
            let status = self
                .ns
                .kubectl(&["get", "spinapp", name, "-o", "jsonpath={.status}"])
                .await
                .unwrap_or_default();
            return r.with_context(|| format!("objects:\n{dump}\nSpinApp status: {status}"));
        }
        r
    }

    /// Applies Redis (e2e/kind/manifests/redis.yaml) and waits for it.
    async fn redis(&self) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(repo_root().join("e2e/kind/manifests/redis.yaml"))?;
        self.ns.apply_yaml(&text).await?;
        self.wait_available("redis", 1).await?;
        Ok(())
    }

    fn redis_url(&self, db: u32) -> String {
        format!("redis://redis.{}.svc.cluster.local:6379/{db}", self.ns.name)
    }

    /// The kv app, its Redis URL from Secret `redis-url` (DB `db`).
    async fn kv_app(&self, db: u32) -> anyhow::Result<()> {
        self.redis().await?;
        self.ns
            .apply_yaml(&serde_json::to_string(
                &json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "redis-url"}, "stringData": {"url": self.redis_url(db)}}),
            )?)
            .await?;
        self.apply_app(
            "kv",
            &kv_image(),
            json!({"runtimeConfig": {"keyValueStores": [{"name": "default", "type": "redis",
                "options": [{"name": "url", "valueFrom": {"secretKeyRef": {"name": "redis-url", "key": "url"}}}]}]}}),
        )
        .await?;
        self.wait_available("kv", 1).await?;
        Ok(())
    }

    /// The curl pod (e2e/kind/manifests/curl.yaml), Ready.
    async fn curl_pod(&self) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(repo_root().join("e2e/kind/manifests/curl.yaml"))?;
        self.ns.apply_yaml(&text).await?;
        self.ns
            .kubectl(&[
                "wait",
                "--for=condition=Ready",
                "pod/curl",
                "--timeout=180s",
            ])
            .await?;
        Ok(())
    }

    /// One HTTP request from the curl pod; retried while the Service has no
    /// ready endpoint yet (connection errors), not on HTTP errors.
    async fn http(
        &self,
        method: &str,
        url: &str,
        body: Option<&str>,
    ) -> anyhow::Result<(u16, String)> {
        let mut args = vec![
            "exec",
            "curl",
            "--",
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-X",
            method,
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
        ];
        if let Some(b) = body {
            args.extend(["--data-binary", b, "-H", "content-type: application/json"]);
        }
        args.push(url);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match self.ns.kubectl(&args).await {
                Ok(out) => {
                    let (body, code) = out.rsplit_once('\n').unwrap_or(("", out.as_str()));
                    let code: u16 = code
                        .trim()
                        .parse()
                        .with_context(|| format!("curl output {out:?}"))?;
                    return Ok((code, body.to_owned()));
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("  {method} {url}: {e:#}; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn svc_url(&self, app: &str, path: &str) -> String {
        format!("http://{app}.{}.svc.cluster.local{path}", self.ns.name)
    }

    /// `redis-cli -n <db> KEYS '*'` in the Redis pod.
    async fn redis_keys(&self, db: u32) -> anyhow::Result<Vec<String>> {
        let out = self
            .ns
            .kubectl(&[
                "exec",
                "deploy/redis",
                "--",
                "redis-cli",
                "-n",
                &db.to_string(),
                "KEYS",
                "*",
            ])
            .await?;
        Ok(out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }
}

async fn ensure_runtime_class(client: &Client, cluster: &Cluster) -> anyhow::Result<()> {
    let name = runtime_class();
    let api: Api<RuntimeClass> = Api::all(client.clone());
    if api.get_opt(&name).await?.is_some() {
        return Ok(());
    }
    ensure!(
        !cluster.kind,
        "RuntimeClass {name} is missing: up.sh installs it with the chart (runtimeClass.create=true)"
    );
    let rc: RuntimeClass =
        serde_json::from_value(json!({"metadata": {"name": name}, "handler": "spin"}))?;
    match api.create(&PostParams::default(), &rc).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn pod_template_annotation(d: &Deployment, key: &str) -> Option<String> {
    d.spec
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(key)
        .cloned()
}

async fn runtime_config_toml(env: &Env, app: &str) -> Option<String> {
    let s = env
        .ns
        .api::<Secret>()
        .get_opt(&format!("{app}-runtime-config"))
        .await
        .ok()??;
    let data = s.data?.remove("runtime-config.toml")?;
    String::from_utf8(data.0).ok()
}

// ---------------------------------------------------------------------------
// 1. One `helm install`: CRDs and operator; the operator becomes ready.
// ---------------------------------------------------------------------------

async fn s1_helm_install_and_operator_ready() -> anyhow::Result<Outcome> {
    let ns = TestNamespace::new().await;
    let cluster = Cluster::detect(&ns.client).await?;
    let client = ns.client.clone();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let helm = helm_bin();
    if cluster.kind {
        // up.sh did the one `helm install`; check what it produced.
        let release = env_or("SPINDLE_E2E_RELEASE", "spindle");
        let release_ns = env_or("SPINDLE_E2E_RELEASE_NAMESPACE", "spindle-system");
        let status: serde_json::Value = serde_json::from_str(
            &run_cmd(
                &helm,
                &["status", &release, "-n", &release_ns, "-o", "json"],
                None,
            )
            .await?,
        )?;
        ensure!(
            status["info"]["status"] == "deployed",
            "helm release {release}: {}",
            status["info"]
        );
        for name in [
            "spinapps.core.spinkube.dev",
            "spinappexecutors.core.spinkube.dev",
        ] {
            let crd = crds.get(name).await?;
            ensure!(crd_established(&crd), "CRD {name} is not Established");
            ensure!(
                crd.annotations().get("meta.helm.sh/release-name") == Some(&release),
                "CRD {name} is not part of release {release}: {:?}",
                crd.annotations()
            );
        }
        let deploys: Api<Deployment> = Api::namespaced(client.clone(), &release_ns);
        let list = deploys
            .list(&ListParams::default().labels("app.kubernetes.io/instance=spindle"))
            .await?;
        let op = list
            .items
            .iter()
            .find(|d| {
                d.spec.template.spec.as_ref().is_some_and(|p| {
                    p.containers.iter().any(|c| {
                        c.args
                            .as_ref()
                            .is_some_and(|a| a.iter().any(|x| x == "run"))
                    })
                })
            })
            .context("no operator Deployment in the release namespace")?;
        let ready = op
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        ensure!(
            ready >= 1,
            "operator Deployment {} has no ready pod",
            op.name_any()
        );
        let probe = op.spec.template.spec.as_ref().and_then(|p| {
            p.containers[0]
                .readiness_probe
                .as_ref()?
                .http_get
                .as_ref()?
                .path
                .clone()
        });
        ensure!(
            probe.as_deref() == Some("/readyz"),
            "operator readiness probe: {probe:?}"
        );
        eprintln!(
            "  release {release} deployed; operator {} Ready (readiness = GET /readyz)",
            op.name_any()
        );
        ns.cleanup().await;
        return Ok(Outcome::Passed);
    }

    // Local control plane: the same one-command install, into this namespace.
    // kwok cannot run the operator's pod (it only reports it Ready), so the
    // real binary runs out of cluster and must become ready on /readyz.
    eprintln!(
        "  note: on kwok the in-cluster operator pod does not run; the operator binary runs out of cluster"
    );
    let release = format!("s1-{}", &ns.name[ns.name.len() - 6..]);
    let rc_name = format!("spindle-{}", ns.name);
    let out = run_cmd(
        &helm,
        &[
            "install",
            &release,
            repo_root()
                .join("charts/spindle")
                .to_str()
                .expect("utf-8 path"),
            "-n",
            &ns.name,
            // The CRDs already exist (applied by the other tests): adopt them.
            "--take-ownership",
            "--set",
            &format!("operator.watchNamespace={}", ns.name),
            "--set",
            "runtimeClass.create=true",
            "--set",
            &format!("runtimeClass.name={rc_name}"),
            "--set",
            "executor.create=true",
            "--set",
            &format!("executor.runtimeClassName={rc_name}"),
            "--set",
            &format!("executor.namespaces={{{}}}", ns.name),
            "--wait",
            "--timeout",
            "2m",
        ],
        None,
    )
    .await?;
    ensure!(out.contains("STATUS: deployed"), "helm install: {out}");
    for name in [
        "spinapps.core.spinkube.dev",
        "spinappexecutors.core.spinkube.dev",
    ] {
        let crd = crds.get(name).await?;
        ensure!(crd_established(&crd), "CRD {name} is not Established");
        ensure!(
            crd.annotations().get("meta.helm.sh/release-name") == Some(&release),
            "CRD {name} was not installed/adopted by release {release}"
        );
    }
    Api::<RuntimeClass>::all(client.clone())
        .get(&rc_name)
        .await
        .context("the chart's RuntimeClass")?;
    let exec_out = ns
        .kubectl(&[
            "get",
            "spinappexecutor",
            "containerd-shim-spin",
            "-o",
            "name",
        ])
        .await?;
    ensure!(
        exec_out.trim() == "spinappexecutor.core.spinkube.dev/containerd-shim-spin",
        "{exec_out}"
    );

    let op = LocalOperator::start(&ns.name).await?;
    let (code, body) = http_get_local(op.port, "/readyz")
        .await
        .context("/readyz")?;
    ensure!(code == 200, "/readyz: {code} {body}");
    op.stop().await;

    let out = run_cmd(
        &helm,
        &["uninstall", &release, "-n", &ns.name, "--wait"],
        None,
    )
    .await?;
    ensure!(out.contains("uninstalled"), "helm uninstall: {out}");
    ensure!(
        Api::<RuntimeClass>::all(client.clone())
            .get_opt(&rc_name)
            .await?
            .is_none(),
        "the chart's RuntimeClass survived helm uninstall"
    );
    ensure!(
        crds.get_opt("spinapps.core.spinkube.dev").await?.is_some(),
        "helm uninstall deleted the CRDs (they are annotated keep)"
    );
    ns.cleanup().await;
    Ok(Outcome::Passed)
}

// ---------------------------------------------------------------------------
// 2. hello: Deployment Available; GET /health, POST /inference from inside.
// ---------------------------------------------------------------------------

async fn s2_hello_rolls_out() -> anyhow::Result<Outcome> {
    let env = Env::new().await?;
    env.apply_app("hello", &hello_image(), json!({})).await?;
    let d = env.wait_available("hello", 1).await?;
    let pod = d.spec.template.spec.clone().context("pod spec")?;
    ensure!(
        pod.runtime_class_name == Some(runtime_class()),
        "runtimeClassName {:?}",
        pod.runtime_class_name
    );
    ensure!(
        pod.containers[0].image.as_deref() == Some(hello_image().as_str()),
        "image {:?}",
        pod.containers[0].image
    );
    let svc = env
        .ns
        .api::<Service>()
        .get("hello")
        .await
        .context("Service hello")?;
    ensure!(
        svc.spec
            .and_then(|s| s.ports)
            .is_some_and(|p| p[0].port == 80),
        "Service hello port 80"
    );
    let api: Api<SpinApp> = env.ns.api();
    wait_for(
        "SpinApp hello status.readyReplicas = 1",
        env.cluster.timeout(),
        || async {
            let app = api.get("hello").await.ok()?;
            (app.status?.ready_replicas == 1).then_some(())
        },
    )
    .await?;
    env.finish().await;
    Ok(Outcome::Passed)
}

async fn s2_hello_answers_http() -> anyhow::Result<Outcome> {
    let client = spindle_e2e::client().await?;
    if let Err(reason) = Cluster::detect(&client).await?.http() {
        return Ok(Outcome::Skipped(reason));
    }
    let env = Env::new().await?;
    env.apply_app("hello", &hello_image(), json!({})).await?;
    env.wait_available("hello", 1).await?;
    env.curl_pod().await?;
    let (code, body) = env
        .http("GET", &env.svc_url("hello", "/health"), None)
        .await?;
    ensure!(code == 200, "GET /health: {code} {body}");
    let (code, body) = env
        .http(
            "POST",
            &env.svc_url("hello", "/inference"),
            Some(r#"{"tokens":[1,2,3],"max_length":8}"#),
        )
        .await?;
    ensure!(code == 200, "POST /inference: {code} {body}");
    let v: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("/inference body {body:?}"))?;
    let tokens = v["tokens"]
        .as_array()
        .with_context(|| format!("no tokens in {body}"))?;
    ensure!(
        !tokens.is_empty() && tokens.iter().all(|t| t.is_u64()),
        "tokens: {body}"
    );
    env.finish().await;
    Ok(Outcome::Passed)
}

// ---------------------------------------------------------------------------
// 3. kv with Redis: runtime config; PUT/GET round trip; key visible in Redis.
// ---------------------------------------------------------------------------

async fn s3_kv_runtime_config_has_redis_url() -> anyhow::Result<Outcome> {
    let env = Env::new().await?;
    env.kv_app(0).await?;
    let url = env.redis_url(0);
    let toml = wait_for(
        "kv-runtime-config with the Redis URL",
        env.cluster.timeout(),
        || async {
            runtime_config_toml(&env, "kv")
                .await
                .filter(|t| t.contains(&url))
        },
    )
    .await?;
    ensure!(
        toml.contains("[key_value_store.default]") && toml.contains("type = \"redis\""),
        "{toml}"
    );
    let d = env.ns.api::<Deployment>().get("kv").await?;
    let volumes = d
        .spec
        .template
        .spec
        .and_then(|p| p.volumes)
        .unwrap_or_default();
    ensure!(
        volumes
            .iter()
            .any(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref())
                == Some("kv-runtime-config")),
        "the kv pods do not mount kv-runtime-config"
    );
    env.finish().await;
    Ok(Outcome::Passed)
}

async fn s3_kv_redis_round_trip() -> anyhow::Result<Outcome> {
    let client = spindle_e2e::client().await?;
    if let Err(reason) = Cluster::detect(&client).await?.http() {
        return Ok(Outcome::Skipped(reason));
    }
    let env = Env::new().await?;
    env.kv_app(0).await?;
    env.curl_pod().await?;
    let (code, body) = env
        .http("PUT", &env.svc_url("kv", "/foo"), Some("bar"))
        .await?;
    ensure!(code == 201, "PUT /foo: {code} {body}");
    let (code, body) = env.http("GET", &env.svc_url("kv", "/foo"), None).await?;
    ensure!(code == 200 && body == "bar", "GET /foo: {code} {body:?}");
    let keys = env.redis_keys(0).await?;
    ensure!(
        keys.iter().any(|k| k.contains("foo")),
        "redis-cli KEYS '*': {keys:?}"
    );
    env.finish().await;
    Ok(Outcome::Passed)
}

// ---------------------------------------------------------------------------
// 4. A referenced Secret changes: pods roll; the app still answers.
// ---------------------------------------------------------------------------

/// Changes the Redis URL in Secret `redis-url` to DB 1 and waits for the new
/// config hash, a new ReplicaSet and a finished rollout.
async fn change_secret_and_wait_roll(env: &Env) -> anyhow::Result<()> {
    const HASH: &str = "spindle.spinkube.dev/config-hash";
    let deploys: Api<Deployment> = env.ns.api();
    let before = deploys.get("kv").await?;
    let hash_before =
        pod_template_annotation(&before, HASH).context("no config-hash on the kv pod template")?;
    let rs_api: Api<ReplicaSet> = env.ns.api();
    let rs_before: Vec<String> = rs_api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|r| r.name_any())
        .collect();

    let secrets: Api<Secret> = env.ns.api();
    secrets
        .patch(
            "redis-url",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"url": env.redis_url(1)}})),
        )
        .await?;
    let after = wait_for(
        "a new config-hash on the kv pod template",
        env.cluster.timeout(),
        || async {
            let d = deploys.get("kv").await.ok()?;
            pod_template_annotation(&d, HASH)
                .filter(|h| *h != hash_before)
                .map(|_| d)
        },
    )
    .await?;
    ensure!(
        after.metadata.generation > before.metadata.generation,
        "the Deployment did not change"
    );
    wait_for("a new ReplicaSet for kv", env.cluster.timeout(), || async {
        let list = rs_api.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|r| !rs_before.contains(&r.name_any()))
            .then_some(())
    })
    .await?;
    env.wait_available("kv", 1).await?;
    let url = env.redis_url(1);
    wait_for(
        "kv-runtime-config with the new URL",
        env.cluster.timeout(),
        || async {
            runtime_config_toml(env, "kv")
                .await
                .filter(|t| t.contains(&url))
        },
    )
    .await?;
    // Old pods are gone once the rollout is complete.
    let pods = env
        .ns
        .api::<Pod>()
        .list(&ListParams::default().labels("core.spinkube.dev/app-name=kv"))
        .await?;
    for p in &pods.items {
        let hash = p.annotations().get(HASH).cloned();
        ensure!(
            hash.as_deref() != Some(hash_before.as_str())
                || p.metadata.deletion_timestamp.is_some(),
            "pod {} still runs the old config",
            p.name_any()
        );
    }
    Ok(())
}

async fn s4_secret_change_rolls_pods() -> anyhow::Result<Outcome> {
    let env = Env::new().await?;
    env.kv_app(0).await?;
    change_secret_and_wait_roll(&env).await?;
    env.finish().await;
    Ok(Outcome::Passed)
}

async fn s4_secret_change_app_still_answers() -> anyhow::Result<Outcome> {
    let client = spindle_e2e::client().await?;
    if let Err(reason) = Cluster::detect(&client).await?.http() {
        return Ok(Outcome::Skipped(reason));
    }
    let env = Env::new().await?;
    env.kv_app(0).await?;
    env.curl_pod().await?;
    let (code, body) = env
        .http("PUT", &env.svc_url("kv", "/before"), Some("0"))
        .await?;
    ensure!(code == 201, "PUT /before: {code} {body}");
    change_secret_and_wait_roll(&env).await?;
    // The new pods use DB 1: the old key is not there, new writes land in DB 1.
    let (code, body) = env
        .http("PUT", &env.svc_url("kv", "/after"), Some("1"))
        .await?;
    ensure!(code == 201, "PUT /after: {code} {body}");
    let (code, body) = env.http("GET", &env.svc_url("kv", "/after"), None).await?;
    ensure!(code == 200 && body == "1", "GET /after: {code} {body:?}");
    let (code, _) = env.http("GET", &env.svc_url("kv", "/before"), None).await?;
    ensure!(code == 404, "GET /before after the switch to DB 1: {code}");
    let keys = env.redis_keys(1).await?;
    ensure!(
        keys.iter().any(|k| k.contains("after")),
        "redis-cli -n 1 KEYS '*': {keys:?}"
    );
    env.finish().await;
    Ok(Outcome::Passed)
}

// ---------------------------------------------------------------------------
// 5. kubectl scale spinapp/hello --replicas=3 → 3 ready pods.
// ---------------------------------------------------------------------------

async fn s5_scale_subresource_to_three_ready_pods() -> anyhow::Result<Outcome> {
    let env = Env::new().await?;
    env.apply_app("hello", &hello_image(), json!({})).await?;
    env.wait_available("hello", 1).await?;
    let out = env
        .ns
        .kubectl(&["scale", "spinapp/hello", "--replicas=3"])
        .await?;
    ensure!(out.contains("scaled"), "kubectl scale: {out}");
    env.wait_available("hello", 3).await?;
    // Pods being deleted are not part of the app any more (a ReplicaSet may replace a
    // pod at any time), so "three ready pods" counts the live ones only.
    let pods_api = env.ns.api::<Pod>();
    let live_ready = wait_for(
        "three live hello pods, all Ready",
        env.cluster.timeout(),
        || async {
            let pods = pods_api
                .list(&ListParams::default().labels("core.spinkube.dev/app-name=hello"))
                .await
                .ok()?;
            let live: Vec<_> = pods
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            let ready = live
                .iter()
                .filter(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                })
                .count();
            (live.len() == 3 && ready == 3).then_some(ready)
        },
    )
    .await;
    if let Err(e) = live_ready {
        let dump = env
            .ns
            .kubectl(&[
                "get",
                "pods",
                "-o",
                "custom-columns=NAME:.metadata.name,DELETING:.metadata.deletionTimestamp,\
                 PHASE:.status.phase,READY:.status.conditions[?(@.type=='Ready')].status,\
                 NODE:.spec.nodeName",
            ])
            .await
            .unwrap_or_default();
        return Err(e.context(format!("pods:\n{dump}")));
    }
    let api: Api<SpinApp> = env.ns.api();
    wait_for(
        "SpinApp hello status.readyReplicas = 3",
        env.cluster.timeout(),
        || async {
            let app = api.get("hello").await.ok()?;
            (app.spec.replicas == Some(3) && app.status?.ready_replicas == 3).then_some(())
        },
    )
    .await?;
    env.finish().await;
    Ok(Outcome::Passed)
}

// ---------------------------------------------------------------------------
// 6. Image resolution: NotASpinApp; private registry without/with pull secret.
// ---------------------------------------------------------------------------

/// Why the operator does not resolve images on this cluster, if it does not.
async fn image_resolution_unavailable(cluster: &Cluster) -> anyhow::Result<Option<String>> {
    if cluster.kind {
        if std::env::var("SPINDLE_E2E_RESOLVE_IMAGES").is_ok_and(|v| v == "1") {
            return Ok(None);
        }
        return Ok(Some(format!(
            "the in-cluster operator does not resolve images: {}",
            env_or(
                "SPINDLE_E2E_RESOLVE_REASON",
                "SPINDLE_E2E_RESOLVE_IMAGES is not 1 (see e2e/kind/up.sh)"
            )
        )));
    }
    let help = run_cmd(&spindle_e2e::built_spindle_bin()?, &["run", "--help"], None).await?;
    if !help.contains("--resolve-images") {
        return Ok(Some(
            "image resolution (operator/src/oci) is not wired into the controller yet: \
             `spindle run` has no --resolve-images flag"
                .into(),
        ));
    }
    Ok(None)
}

async fn wait_reason(env: &Env, app: &str, reason: &str) -> anyhow::Result<()> {
    let api: Api<SpinApp> = env.ns.api();
    wait_for(
        &format!("SpinApp {app}: a condition with reason {reason}"),
        env.cluster.timeout(),
        || async {
            let a = api.get(app).await.ok()?;
            a.status?
                .conditions
                .iter()
                .any(|c| c.reason == reason)
                .then_some(())
        },
    )
    .await?;
    let pods = env
        .ns
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!("core.spinkube.dev/app-name={app}")))
        .await?;
    ensure!(pods.items.is_empty(), "SpinApp {app} ({reason}) has pods");
    Ok(())
}

/// Where scenario 6's images are: kind's registries (from up.sh, through
/// SPINDLE_E2E_* variables) or two loopback registries started here.
struct S6Images {
    plain: String,
    private: String,
    user: String,
    password: String,
    /// The private image's digest, when this process pushed it.
    private_digest: Option<String>,
    /// Loopback registries started here; killed (by PID) on drop.
    _registries: Vec<spindle_e2e::registry::Registry>,
}

impl S6Images {
    fn kind() -> Self {
        Self {
            plain: env_or("SPINDLE_E2E_PLAIN_IMAGE", ""),
            private: env_or("SPINDLE_E2E_PRIVATE_IMAGE", ""),
            user: env_or("SPINDLE_E2E_PRIVATE_USER", ""),
            password: env_or("SPINDLE_E2E_PRIVATE_PASSWORD", ""),
            private_digest: None,
            _registries: Vec::new(),
        }
    }

    /// Two real registries (docker-registry) on 127.0.0.1: an anonymous one
    /// with a Linux image, one with htpasswd auth with a Wasm component.
    async fn local() -> Self {
        use spindle::oci::push;
        use spindle_e2e::registry::{self, Registry};
        let anonymous = Registry::start(false).await;
        let private = Registry::start(true).await;
        anonymous
            .push("library/linux:v1", &registry::linux_image())
            .await;
        let wasm = wat::parse_str("(component (core module (func (export \"run\"))))")
            .expect("a valid component");
        let digest = private
            .push("spindle/private:v1", &push::component_artifact(wasm, None))
            .await;
        Self {
            plain: anonymous.image("library/linux:v1"),
            private: private.image("spindle/private:v1"),
            user: registry::USER.into(),
            password: registry::PASSWORD.into(),
            private_digest: Some(digest),
            _registries: vec![anonymous, private],
        }
    }
}

async fn s6_not_a_spin_app_and_private_registry() -> anyhow::Result<Outcome> {
    let client = spindle_e2e::client().await?;
    let cluster = Cluster::detect(&client).await?;
    if let Some(reason) = image_resolution_unavailable(&cluster).await? {
        return Ok(Outcome::Skipped(reason));
    }
    let images = if cluster.kind {
        S6Images::kind()
    } else {
        S6Images::local().await
    };
    ensure!(
        !images.plain.is_empty() && !images.private.is_empty(),
        "SPINDLE_E2E_PLAIN_IMAGE / SPINDLE_E2E_PRIVATE_IMAGE are not set (see e2e/kind/up.sh)"
    );
    let env = Env::create(true).await?;
    let deployments: Api<Deployment> = env.ns.api();

    // A Linux image: NotASpinApp, no pods, and no Deployment at all.
    env.apply_app("plain", &images.plain, json!({})).await?;
    wait_reason(&env, "plain", "NotASpinApp").await?;
    ensure!(
        deployments.get_opt("plain").await?.is_none(),
        "a Deployment was made for a Linux image"
    );

    // A private image without a pull secret: Unauthorized, nothing rolled out.
    env.apply_app("private", &images.private, json!({})).await?;
    wait_reason(&env, "private", "Unauthorized").await?;
    ensure!(
        deployments.get_opt("private").await?.is_none(),
        "a Deployment was made for an image the operator could not read"
    );

    // With the pull secret: resolved, pinned to the digest, rolled out.
    let registry = images
        .private
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let auth = format!("{}:{}", images.user, images.password);
    let config = json!({"auths": {registry: {"auth": base64_encode(auth.as_bytes())}}});
    env.ns
        .apply_yaml(&serde_json::to_string(
            &json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "registry-creds"}, "type": "kubernetes.io/dockerconfigjson",
            "stringData": {".dockerconfigjson": config.to_string()}}),
        )?)
        .await?;
    env.apply_app(
        "private",
        &images.private,
        json!({"imagePullSecrets": [{"name": "registry-creds"}]}),
    )
    .await?;
    let deployment = env.wait_available("private", 1).await?;
    let image = deployment
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|p| p.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    match &images.private_digest {
        Some(digest) => ensure!(
            image == format!("{}@{digest}", images.private),
            "the Deployment runs {image}, not {}@{digest}",
            images.private
        ),
        None => ensure!(
            image.starts_with(&images.private) && image.contains("@sha256:"),
            "the Deployment runs {image}, not {} pinned to a digest",
            images.private
        ),
    }
    let app = env.ns.api::<SpinApp>().get("private").await?;
    let status = app.status.unwrap_or_default();
    ensure!(
        status.resolved_image.as_deref() == Some(image.as_str()),
        "status.resolvedImage {:?} != the Deployment's {image}",
        status.resolved_image
    );
    ensure!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "ImageResolved" && c.status == "True"),
        "no ImageResolved=True: {:?}",
        status.conditions
    );
    env.finish().await;
    Ok(Outcome::Passed)
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

// ---------------------------------------------------------------------------
// 7. Scale to zero (needs spec.scaleToZero in the CRD and a deployed activator).
// ---------------------------------------------------------------------------

async fn s7_scale_to_zero() -> anyhow::Result<Outcome> {
    let client = spindle_e2e::client().await?;
    let cluster = Cluster::detect(&client).await?;
    let crd = Api::<CustomResourceDefinition>::all(client.clone())
        .get("spinapps.core.spinkube.dev")
        .await?;
    if !serde_json::to_string(&crd.spec)?.contains("\"scaleToZero\"") {
        return Ok(Outcome::Skipped(
            "the SpinApp CRD has no spec.scaleToZero".into(),
        ));
    }
    if let Err(reason) = cluster.http() {
        return Ok(Outcome::Skipped(format!(
            "waking an app takes a real request: {reason}; the netns tier runs this with real HTTP \
             (e2e/tests/scale_to_zero_netns.rs)"
        )));
    }
    // The chart installs the activator by default: on a cluster that serves HTTP its
    // absence is a broken install, not a reason to skip.
    let activators = Api::<Deployment>::all(client.clone())
        .list(&ListParams::default().labels("app.kubernetes.io/component=activator"))
        .await?;
    ensure!(
        !activators.items.is_empty(),
        "no activator Deployment (app.kubernetes.io/component=activator): install the chart with activator.enabled=true"
    );
    let env = Env::new().await?;
    env.apply_app(
        "hello",
        &hello_image(),
        json!({"scaleToZero": {"enabled": true, "idleTimeout": "30s"}}),
    )
    .await?;
    env.wait_available("hello", 1).await?;
    let deploys: Api<Deployment> = env.ns.api();
    wait_for(
        "hello scaled to zero after 30s idle",
        Duration::from_secs(300),
        || async {
            let d = deploys.get("hello").await.ok()?;
            (d.spec.replicas == Some(0)).then_some(())
        },
    )
    .await?;
    env.curl_pod().await?;
    let (code, body) = env
        .http("GET", &env.svc_url("hello", "/health"), None)
        .await?;
    ensure!(
        code == 200,
        "GET /health on an app at zero (held, woken): {code} {body}"
    );
    let d = deploys.get("hello").await?;
    ensure!(
        d.spec.replicas.unwrap_or(0) >= 1,
        "the request did not wake the app"
    );
    env.finish().await;
    Ok(Outcome::Passed)
}

// ---------------------------------------------------------------------------
// 8. Delete everything: no leftovers.
// ---------------------------------------------------------------------------

async fn s8_delete_leaves_nothing() -> anyhow::Result<Outcome> {
    let env = Env::new().await?;
    env.apply_app("hello", &hello_image(), json!({})).await?;
    env.kv_app(0).await?;
    env.wait_available("hello", 1).await?;
    let sel = ListParams::default().labels("core.spinkube.dev/app-name");
    ensure!(
        !env.ns.api::<Secret>().list(&sel).await?.items.is_empty(),
        "no runtime-config Secret before delete"
    );
    let apps: Api<SpinApp> = env.ns.api();
    apps.delete_collection(&DeleteParams::foreground(), &ListParams::default())
        .await?;
    let client = env.client();
    let ns = env.ns.name.clone();
    wait_for(
        "no SpinApp children left",
        env.cluster.timeout(),
        || async {
            let sel = ListParams::default().labels("core.spinkube.dev/app-name");
            let n = Api::<SpinApp>::namespaced(client.clone(), &ns)
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .len()
                + Api::<Deployment>::namespaced(client.clone(), &ns)
                    .list(&sel)
                    .await
                    .ok()?
                    .items
                    .len()
                + Api::<ReplicaSet>::namespaced(client.clone(), &ns)
                    .list(&sel)
                    .await
                    .ok()?
                    .items
                    .len()
                + Api::<Service>::namespaced(client.clone(), &ns)
                    .list(&sel)
                    .await
                    .ok()?
                    .items
                    .len()
                + Api::<Secret>::namespaced(client.clone(), &ns)
                    .list(&sel)
                    .await
                    .ok()?
                    .items
                    .len()
                + Api::<Pod>::namespaced(client.clone(), &ns)
                    .list(&sel)
                    .await
                    .ok()?
                    .items
                    .len();
            (n == 0).then_some(())
        },
    )
    .await
    .with_context(|| "leftovers after deleting the SpinApps")?;
    // Then the namespace itself (executor finalizer released, everything gone).
    let Env {
        ns: test_ns,
        operator,
        ..
    } = env;
    kubectl(&["delete", "namespace", &test_ns.name, "--wait=false"]).await?;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let name = test_ns.name.clone();
    let gone = wait_for(
        "the namespace to be deleted",
        Duration::from_secs(180),
        || async {
            match namespaces.get_opt(&name).await {
                Ok(None) => Some(()),
                _ => None,
            }
        },
    )
    .await;
    if let Some(op) = operator {
        op.stop().await;
    }
    test_ns.cleanup().await;
    gone.with_context(|| format!("namespace {name} was not deleted (a finalizer left behind?)"))?;
    Ok(Outcome::Passed)
}
