//! Helpers for Spindle's cluster tests.
//!
//! Tests run against a real kube-apiserver, never a mock: the local control
//! plane from `e2e/scripts/controlplane.sh` (what `e2e/scripts/test.sh`
//! starts), or any cluster whose kubeconfig is in `SPINDLE_TEST_KUBECONFIG`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let ns = spindle_e2e::TestNamespace::new().await; // CRDs installed, fresh namespace
//! ns.apply_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n").await?;
//! let out = ns.kubectl(&["get", "configmap", "c", "-o", "name"]).await?;
//! assert_eq!(out.trim(), "configmap/c");
//! ns.cleanup().await; // or just drop it
//! # Ok(()) }
//! ```

pub mod operator;
pub mod registry;
pub mod scenario;

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{Scope, pinned_kind};
use kube::{Client, Config};
use tokio::sync::OnceCell;

/// Environment variable holding the kubeconfig of the cluster to test against.
pub const KUBECONFIG_ENV: &str = "SPINDLE_TEST_KUBECONFIG";

/// Field manager for everything the tests apply.
pub const FIELD_MANAGER: &str = "spindle-e2e";

/// The workspace root (`crds/`, `e2e/testdata/` are below it).
///
/// Read at run time first: cargo sets `CARGO_MANIFEST_DIR` for `cargo test`, and a
/// test binary reused from a shared `CARGO_TARGET_DIR` (CI keeps one outside the
/// clone) may have been compiled in another checkout.
pub fn repo_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .expect("e2e/ has a parent")
        .to_path_buf()
}

/// The `spindle` binary the tests run: `$SPINDLE_BIN`, else the debug build
/// in `$CARGO_TARGET_DIR` (CI keeps it outside the clone), else `target/`.
pub fn spindle_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("SPINDLE_BIN") {
        return PathBuf::from(bin);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_relative() {
                repo_root().join(t)
            } else {
                t
            }
        })
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("debug").join("spindle")
}

/// [`spindle_bin`] if it is built, else an error that says how to build it.
pub fn built_spindle_bin() -> anyhow::Result<PathBuf> {
    let path = spindle_bin();
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: run `cargo build -p spindle` (e2e/scripts/test.sh does)",
        path.display()
    );
    Ok(path)
}

/// Path of the test cluster's kubeconfig. Panics with instructions when unset:
/// a cluster test must never pass by silently skipping.
/// The shim's RuntimeClass and a `containerd-shim-spin` executor that uses it
/// (apply into a test namespace with [`TestNamespace::apply_yaml`]).
pub const SHIM_EXECUTOR: &str = r#"
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: wasmtime-spin-v2}
handler: spin
---
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinAppExecutor
metadata: {name: containerd-shim-spin}
spec:
  createDeployment: true
  deploymentConfig: {runtimeClassName: wasmtime-spin-v2}
"#;

pub fn kubeconfig_path() -> PathBuf {
    match std::env::var_os(KUBECONFIG_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "{KUBECONFIG_ENV} is not set. Cluster tests need a real kube-apiserver: run them with \
             `e2e/scripts/test.sh`, or start one with `e2e/scripts/controlplane.sh start` and \
             `source <(e2e/scripts/controlplane.sh env)` before `cargo test`."
        ),
    }
}

/// A kube [`Client`] for the test cluster.
pub async fn client() -> anyhow::Result<Client> {
    let path = kubeconfig_path();
    let kubeconfig =
        Kubeconfig::read_from(&path).with_context(|| format!("reading {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading {}", path.display()))?;
    Client::try_from(config).context("building the kube client")
}

static CRDS_INSTALLED: OnceCell<()> = OnceCell::const_new();

/// Server-side applies every CRD in `crds/*.yaml` and waits until each is
/// Established. Idempotent, also across concurrent test processes (same field
/// manager, same content); runs once per test process.
pub async fn ensure_crds(client: &Client) -> anyhow::Result<()> {
    CRDS_INSTALLED
        .get_or_try_init(|| async {
            let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
            let mut names = Vec::new();
            for path in crd_files()? {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let crd: CustomResourceDefinition = serde_saphyr::from_str(&text)
                    .with_context(|| format!("parsing {}", path.display()))?;
                let name = crd.metadata.name.clone().context("CRD without a name")?;
                crds.patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&crd),
                )
                .await
                .with_context(|| format!("applying {}", path.display()))?;
                names.push(name);
            }
            for name in names {
                wait_for(
                    &format!("CRD {name} to be Established"),
                    Duration::from_secs(30),
                    || async {
                        let crd = crds.get(&name).await.ok()?;
                        crd_established(&crd).then_some(())
                    },
                )
                .await?;
            }
            Ok(())
        })
        .await
        .copied()
}

/// The committed CRD files, `crds/*.yaml`, sorted.
pub fn crd_files() -> anyhow::Result<Vec<PathBuf>> {
    let dir = repo_root().join("crds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!(
            "no CRDs in {}; run `cargo run -p spindle -- crd --out-dir crds`",
            dir.display()
        );
    }
    Ok(files)
}

/// Whether a CRD has condition `Established=True`.
pub fn crd_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// A uniquely named namespace on the test cluster, with Spindle's CRDs
/// installed. Deleted (best effort) by [`TestNamespace::cleanup`] or on drop;
/// set `SPINDLE_TEST_KEEP_NAMESPACES=1` to keep it for debugging.
pub struct TestNamespace {
    /// Client for the test cluster.
    pub client: Client,
    /// The namespace's name, `t-<test>-<random>`.
    pub name: String,
    cleaned: bool,
}

impl TestNamespace {
    /// Connects, installs the CRDs and creates the namespace. The name is
    /// derived from the running test's name. Panics (failing the test) when the
    /// cluster is not reachable.
    pub async fn new() -> Self {
        let test = std::thread::current().name().unwrap_or("test").to_string();
        match Self::create(&test).await {
            Ok(ns) => ns,
            Err(e) => panic!("setting up a test namespace for {test}: {e:#}"),
        }
    }

    async fn create(test: &str) -> anyhow::Result<Self> {
        let client = client().await?;
        ensure_crds(&client).await?;
        let name = namespace_name(test);
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"spindle.dev/e2e": "true"}}
        }))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(Self {
            client,
            name,
            cleaned: false,
        })
    }

    /// An [`Api`] for a namespaced kind in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Server-side applies a (multi-document) YAML stream; namespaced objects
    /// without a namespace go into this one. Unknown fields are rejected, as
    /// `kubectl apply` does. Returns the objects as the server stored them.
    pub async fn apply_yaml(&self, yaml: &str) -> anyhow::Result<Vec<DynamicObject>> {
        apply_yaml(&self.client, Some(&self.name), yaml).await
    }

    /// Runs [`kubectl`] with `--namespace` set to this namespace.
    pub async fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["--namespace", self.name.as_str()];
        all.extend_from_slice(args);
        kubectl(&all).await
    }

    /// Deletes the namespace (best effort, without waiting for finalization).
    pub async fn cleanup(mut self) {
        self.cleaned = true;
        delete_namespace(&self.client, &self.name).await;
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // Drop cannot await, and the test's runtime may be shutting down or be
        // single-threaded: delete from a thread with its own runtime and client.
        let name = std::mem::take(&mut self.name);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let client = client().await.ok()?;
                delete_namespace(&client, &name).await;
                Some(())
            })
        })
        .join();
    }
}

async fn delete_namespace(client: &Client, name: &str) {
    if std::env::var_os("SPINDLE_TEST_KEEP_NAMESPACES").is_some_and(|v| v == "1") {
        eprintln!("keeping test namespace {name}");
        return;
    }
    // The test's operator is gone by now, so nothing would remove the executors'
    // finalizer and the namespace would stay Terminating for ever.
    let executors: Api<spindle::api::SpinAppExecutor> = Api::namespaced(client.clone(), name);
    if let Ok(list) = executors.list_metadata(&Default::default()).await {
        let strip = serde_json::json!({"metadata": {"finalizers": null}});
        for e in list.items {
            if let Some(n) = e.metadata.name {
                let _ = executors
                    .patch(&n, &PatchParams::default(), &Patch::Merge(&strip))
                    .await;
            }
        }
    }
    if let Err(e) = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::background())
        .await
    {
        eprintln!("warning: deleting test namespace {name}: {e}");
    }
}

/// `t-<test>-<random>`: a DNS-1123 label (≤ 63 chars) from the test's name.
fn namespace_name(test: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let short = test.rsplit("::").next().unwrap_or(test);
    let mut slug: String = short
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    slug.truncate(40);
    let slug = slug.trim_matches('-');
    let slug = if slug.is_empty() { "test" } else { slug };
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("t-{slug}-{:06x}", h.finish() & 0xff_ffff)
}

/// Server-side applies a (multi-document) YAML stream with field manager
/// [`FIELD_MANAGER`], resolving each kind through discovery. Namespaced objects
/// without `metadata.namespace` go into `namespace` (an error if `None`).
pub async fn apply_yaml(
    client: &Client,
    namespace: Option<&str>,
    yaml: &str,
) -> anyhow::Result<Vec<DynamicObject>> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(yaml).context("parsing YAML")?;
    let params = PatchParams::apply(FIELD_MANAGER)
        .force()
        .validation_strict();
    let mut applied = Vec::new();
    for doc in docs.into_iter().filter(|d| !d.is_null()) {
        let mut obj: DynamicObject =
            serde_json::from_value(doc).context("not a Kubernetes object")?;
        let types = obj
            .types
            .clone()
            .ok_or_else(|| anyhow!("object without apiVersion/kind"))?;
        let gvk =
            GroupVersionKind::try_from(&types).map_err(|e| anyhow!("bad apiVersion/kind: {e}"))?;
        let name = obj
            .metadata
            .name
            .clone()
            .ok_or_else(|| anyhow!("{} without metadata.name", types.kind))?;
        let (resource, caps) = pinned_kind(client, &gvk)
            .await
            .with_context(|| format!("discovering {}/{}", types.api_version, types.kind))?;
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Cluster => Api::all_with(client.clone(), &resource),
            Scope::Namespaced => {
                let ns = obj
                    .metadata
                    .namespace
                    .clone()
                    .or(namespace.map(str::to_string))
                    .ok_or_else(|| anyhow!("{} {name} needs a namespace", types.kind))?;
                obj.metadata.namespace = Some(ns.clone());
                Api::namespaced_with(client.clone(), &ns, &resource)
            }
        };
        let stored = api
            .patch(&name, &params, &Patch::Apply(&obj))
            .await
            .with_context(|| format!("applying {} {name}", types.kind))?;
        applied.push(stored);
    }
    Ok(applied)
}

/// The `kubectl` to run: `$SPINDLE_KUBECTL`, else `kubectl` from `PATH`
/// (`controlplane.sh env` puts the built one first).
pub fn kubectl_path() -> PathBuf {
    std::env::var_os("SPINDLE_KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("kubectl"))
}

/// Runs kubectl against the test cluster (`--kubeconfig` from
/// `SPINDLE_TEST_KUBECONFIG`) and returns its stdout; a non-zero exit is an
/// error carrying stderr.
pub async fn kubectl(args: &[&str]) -> anyhow::Result<String> {
    let bin = kubectl_path();
    let out = tokio::process::Command::new(&bin)
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| {
            format!(
                "running {} (build it with e2e/scripts/build-tools.sh k8s)",
                bin.display()
            )
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "kubectl {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            stdout
        );
    }
    Ok(stdout)
}

/// Polls `check` (every 100 ms) until it returns `Some`, or fails after
/// `timeout` with an error naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
/// A bare `GET http://127.0.0.1:{port}{path}` (HTTP/1.1, `Connection: close`):
/// the status code and body, or None if the server is not answering. Enough for
/// the operator's health and metrics endpoints without a client dependency.
pub async fn http_get_local(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).await.ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((code, body))
}

/// The API error status inside an error chain, if the apiserver answered with one.
pub fn api_status(err: &anyhow::Error) -> Option<&kube::core::Status> {
    err.chain()
        .find_map(|e| match e.downcast_ref::<kube::Error>() {
            Some(kube::Error::Api(status)) => Some(status.as_ref()),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_are_unique_dns_labels() {
        let a = namespace_name("api::valid::manifests_round_trip");
        let b = namespace_name("api::valid::manifests_round_trip");
        assert_ne!(a, b);
        assert!(a.starts_with("t-manifests-round-trip-"), "{a}");
        let long = namespace_name(&"X_".repeat(100));
        assert!(long.len() <= 63, "{long}");
        for n in [a, long, namespace_name("::")] {
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{n}"
            );
            assert!(!n.ends_with('-'), "{n}");
        }
    }
}
