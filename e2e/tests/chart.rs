//! The Helm chart (`charts/spindle`), with the real `helm` CLI and real
//! kube-apiservers.
//!
//! * Render tests (no cluster): `helm lint --strict`, `helm template` with the
//!   defaults and with every optional feature on, the CRD templates embed the
//!   generated CRDs verbatim, least-privilege RBAC, the hardened pod, the
//!   executor's hook-then-adopt rendering, `helm package` content.
//! * [`lifecycle_on_a_fresh_control_plane`] starts its OWN control plane
//!   (`controlplane.sh start` with a private `SPINDLE_STATE`: etcd,
//!   kube-apiserver, controller-manager, scheduler, kwok), so "fresh cluster"
//!   is literal and cluster-scoped
//!   objects (CRDs, ClusterRoles, the RuntimeClass) are not shared with other
//!   test binaries: bad values fail `helm install` and leave the cluster
//!   untouched, server-side dry runs of the rendered manifests, the one-command
//!   install, a second release with `crds.install=false`, `helm upgrade` that
//!   changes a CRD, `helm uninstall` leaving only the kept CRDs (and the kept
//!   executor), reinstall, and adopting foreign CRDs with `--take-ownership`.
//! * [`operator_with_chart_rbac_reconciles_every_feature_without_a_403`]
//!   starts its own FULL control plane (+ controller-manager, scheduler, kwok)
//!   and runs the real `target/debug/spindle` with exactly the arguments of the
//!   chart's Deployment, impersonating the chart's ServiceAccount, against
//!   SpinApps of every feature; it asserts convergence and zero 403s (the
//!   apiserver's own `apiserver_request_total{code="403"}` counter, the
//!   operator's log and the events), and that the operator's peak RSS fits the
//!   chart's memory limit.
//! * [`chart_toggles_grant_what_the_operator_watches`] (fault tier, scenario
//!   5) renders the chart under each documented toggle and runs the real
//!   operator with that render's flags and a TokenRequest token of its
//!   ServiceAccount, one variant after the other on one full control plane:
//!   `/readyz` 200, apps Ready, zero 403s.
//!
//! The cluster tests run one after the other (a process-wide lock): the
//! machine has two cores.
//!
//! Tools: `e2e/scripts/build-tools.sh k8s etcd kwok helm`; the operator:
//! `cargo build -p spindle`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spindle_e2e::repo_root;

// ---------------------------------------------------------------------------
// Tools and commands
// ---------------------------------------------------------------------------

/// `KEY=value` lines of `e2e/scripts/versions.sh`.
fn versions() -> BTreeMap<String, String> {
    let path = repo_root().join("e2e/scripts/versions.sh");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| {
            k.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn version(key: &str) -> String {
    versions()
        .get(key)
        .cloned()
        .unwrap_or_else(|| panic!("{key} missing from e2e/scripts/versions.sh"))
}

/// `$SPINDLE_CACHE`, as versions.sh computes it.
fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("SPINDLE_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("spindle");
    }
    PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/spindle")
}

fn tool(dir: &str, name: &str) -> PathBuf {
    let path = cache_dir().join(dir).join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it with `e2e/scripts/build-tools.sh {}`",
        path.display(),
        if name == "helm" {
            "helm"
        } else {
            "k8s etcd kwok"
        }
    );
    path
}

fn helm_bin() -> PathBuf {
    tool(&format!("helm-{}", version("HELM_VERSION")), "helm")
}

fn kubectl_bin() -> PathBuf {
    tool(&format!("k8s-{}", version("K8S_VERSION")), "kubectl")
}

/// The Kubernetes version offline renders assume (`helm template
/// --kube-version`): the one the control plane runs.
fn kube_version() -> String {
    version("K8S_VERSION").trim_start_matches('v').to_string()
}

fn chart_dir() -> PathBuf {
    repo_root().join("charts/spindle")
}

/// A private scratch directory under the repo's git-ignored `.spindle/`.
fn scratch(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let dir = repo_root()
        .join(".spindle")
        .join(format!("chart-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// Result of a finished command.
struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
    cmdline: String,
}

impl Out {
    fn combined(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs a command to completion with an isolated Helm home and an optional
/// kubeconfig and stdin.
fn run(program: &Path, args: &[&str], kubeconfig: Option<&Path>, stdin: Option<&str>) -> Out {
    let helm_home = repo_root().join(".spindle/chart-helm-home");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("HELM_CACHE_HOME", helm_home.join("cache"))
        .env("HELM_CONFIG_HOME", helm_home.join("config"))
        .env("HELM_DATA_HOME", helm_home.join("data"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match kubeconfig {
        Some(k) => cmd.env("KUBECONFIG", k),
        // Never talk to whatever cluster the developer's shell points at.
        None => cmd.env("KUBECONFIG", "/dev/null"),
    };
    let cmdline = format!("{} {}", program.display(), args.join(" "));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmdline}: {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())
            .expect("writing stdin");
    }
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {cmdline}: {e}"));
    Out {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        cmdline,
    }
}

/// Runs a command that must succeed; returns its stdout.
fn must(program: &Path, args: &[&str], kubeconfig: Option<&Path>, stdin: Option<&str>) -> String {
    let out = run(program, args, kubeconfig, stdin);
    assert!(
        out.ok,
        "`{}` failed:\n{}\n{}",
        out.cmdline, out.stdout, out.stderr
    );
    out.stdout
}

fn helm(args: &[&str], kubeconfig: Option<&Path>) -> String {
    must(&helm_bin(), args, kubeconfig, None)
}

/// Like [`wait_until`], with a failure message computed at the time of failure.
fn wait_until_or<T>(
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {}",
            describe()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Polls `check` every 500 ms until it returns `Some` or `timeout` passes.
fn wait_until<T>(what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    wait_until_or(timeout, check, || what.to_string())
}

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

/// `helm template` of `chart` with extra args, as YAML text.
fn template(chart: &Path, release: &str, namespace: &str, extra: &[&str]) -> String {
    let kv = kube_version();
    let chart = chart.to_str().expect("utf-8 path");
    let mut args = vec![
        "template",
        release,
        chart,
        "--namespace",
        namespace,
        "--kube-version",
        &kv,
    ];
    args.extend_from_slice(extra);
    helm(&args, None)
}

/// `helm template` of `chart` with extra args; the objects as JSON.
fn render_at(chart: &Path, release: &str, namespace: &str, extra: &[&str]) -> Vec<Value> {
    parse_docs(&template(chart, release, namespace, extra))
}

fn render(extra: &[&str]) -> Vec<Value> {
    render_at(&chart_dir(), "spindle", "spindle-system", extra)
}

fn render_text(release: &str, namespace: &str, extra: &[&str]) -> String {
    template(&chart_dir(), release, namespace, extra)
}

fn parse_docs(yaml: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml)
        .unwrap_or_else(|e| panic!("helm output is not YAML: {e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn all_features() -> String {
    chart_dir()
        .join("ci/all-features-values.yaml")
        .to_str()
        .expect("utf-8")
        .to_string()
}

fn kind_name(o: &Value) -> String {
    format!(
        "{}/{}",
        o["kind"].as_str().unwrap_or("?"),
        o["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// Whether an object belongs to the scale-to-zero activator (checked by
/// the activator tests; the other tests look at the operator's objects).
fn is_activator(o: &Value) -> bool {
    o["metadata"]["labels"]["app.kubernetes.io/component"] == "activator"
}

/// The operator's objects of `kind` (the activator's are left out).
fn find<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter()
        .filter(|o| o["kind"] == kind && !is_activator(o))
        .collect()
}

/// The activator's objects of `kind`.
fn find_activator<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter()
        .filter(|o| o["kind"] == kind && is_activator(o))
        .collect()
}

/// The only object in `found`; `what` names it when there is not exactly one.
fn only<'a>(found: Vec<&'a Value>, what: &str) -> &'a Value {
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {what}, got {:?}",
        found.iter().map(|o| kind_name(o)).collect::<Vec<_>>()
    );
    found[0]
}

/// The operator's only object of `kind`.
fn one<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    only(find(objs, kind), kind)
}

/// The activator's only object of `kind`.
fn one_activator<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    only(find_activator(objs, kind), &format!("activator {kind}"))
}

/// The elements of a JSON array of strings (`args`, `verbs`, `resources`).
fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_else(|| panic!("not a string: {s}")))
        .collect()
}

fn kinds(objs: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for o in objs {
        *m.entry(o["kind"].as_str().unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    m
}

fn operator_container(objs: &[Value]) -> &Value {
    let deployment = one(objs, "Deployment");
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one operator container");
    &containers[0]
}

fn args_of(objs: &[Value]) -> Vec<&str> {
    strs(&operator_container(objs)["args"])
}

/// Asserts that a command line has each of `want` among its args.
fn assert_has_args(args: &[&str], want: &[&str]) {
    for want in want {
        assert!(args.contains(want), "missing {want} in {args:?}");
    }
}

/// The generated CRDs in `crds/`, parsed, by name.
fn repo_crds() -> BTreeMap<String, Value> {
    spindle_e2e::crd_files()
        .expect("crds/")
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).expect("reading CRD");
            let v: Value =
                serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (
                v["metadata"]["name"]
                    .as_str()
                    .expect("CRD name")
                    .to_string(),
                v,
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Render tests (no cluster)
// ---------------------------------------------------------------------------

/// The chart embeds `charts/spindle/files/crds/*.yaml`, which must be exact
/// copies of the generated `crds/*.yaml` (same files, same bytes).
#[test]
fn chart_crd_sources_are_byte_identical_to_generated_crds() {
    let list = |dir: &Path| -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).expect("read"),
                )
            })
            .collect()
    };
    let generated = list(&repo_root().join("crds"));
    let embedded = list(&chart_dir().join("files/crds"));
    assert!(!generated.is_empty(), "crds/ is empty");
    assert_eq!(
        generated.keys().collect::<Vec<_>>(),
        embedded.keys().collect::<Vec<_>>(),
        "charts/spindle/files/crds must hold the same files as crds/: run e2e/scripts/chart-sync-crds.sh"
    );
    for (name, bytes) in &generated {
        assert!(
            embedded[name] == *bytes,
            "charts/spindle/files/crds/{name} differs from crds/{name}: run e2e/scripts/chart-sync-crds.sh"
        );
    }
}

/// `helm lint --strict` passes with the defaults and with every optional
/// feature on, without a single warning.
#[test]
fn helm_lint_is_clean_with_defaults_and_with_every_feature_on() {
    let kv = kube_version();
    let chart = chart_dir();
    let chart = chart.to_str().expect("utf-8");
    let all = all_features();
    for extra in [
        vec![],
        vec!["-f", all.as_str()],
        vec!["--set", "operator.watchNamespace=apps"],
    ] {
        let mut args = vec!["lint", "--strict", chart, "--kube-version", &kv];
        args.extend_from_slice(&extra);
        let out = run(&helm_bin(), &args, None, None);
        let text = out.combined();
        assert!(out.ok, "helm lint {extra:?} failed:\n{text}");
        assert!(
            text.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{text}"
        );
        assert!(
            !text.contains("[WARNING]") && !text.contains("[ERROR]"),
            "helm lint {extra:?} is not clean:\n{text}"
        );
    }
}

/// The default render is exactly the documented object set, with no webhook
/// or cert-manager object, and the operator pod is hardened.
#[test]
fn default_render_is_the_documented_set_with_a_hardened_pod() {
    let objs = render(&[]);
    let want: BTreeMap<String, usize> = [
        // The operator's and the activator's.
        ("ClusterRole", 2),
        ("ClusterRoleBinding", 2),
        ("CustomResourceDefinition", repo_crds().len()),
        ("Deployment", 2),
        ("Pod", 1),                 // the helm test hook
        ("PodDisruptionBudget", 1), // the activator's (2 replicas)
        // Leader election; the activator's demand Leases; the operator's
        // read access to those Leases and to the activator's slices.
        ("Role", 3),
        ("RoleBinding", 3),
        ("Service", 2),
        ("ServiceAccount", 2),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n))
    .collect();
    assert_eq!(kinds(&objs), want);
    for o in &objs {
        let kind = o["kind"].as_str().unwrap_or_default();
        assert!(
            !kind.contains("Webhook"),
            "no admission webhooks: {}",
            kind_name(o)
        );
        assert!(
            !o["apiVersion"]
                .as_str()
                .unwrap_or_default()
                .starts_with("cert-manager.io"),
            "no cert-manager: {}",
            kind_name(o)
        );
    }

    let deployment = one(&objs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(
        deployment["spec"]["strategy"]["type"], "Recreate",
        "one replica never overlaps with its successor"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["serviceAccountName"], "spindle");
    let c = operator_container(&objs);
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert!(sc["capabilities"]["add"].is_null(), "no capabilities added");
    assert_eq!(
        c["image"], "ghcr.io/spindle-operator/spindle:0.1.0",
        "tag defaults to appVersion"
    );
    assert!(
        c["resources"]["requests"]["memory"].is_string()
            && c["resources"]["limits"]["memory"].is_string()
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let args = args_of(&objs);
    assert_has_args(
        &args,
        &[
            "run",
            "--http-addr=0.0.0.0:8080",
            "--concurrency=4",
            "--log-format=json",
            "--log-level=info",
            "--leader-elect=true",
            "--leader-election-namespace=spindle-system",
            "--lease-name=spindle-leader",
        ],
    );
    assert!(
        !args.iter().any(|a| a.starts_with("--namespace")),
        "watches all namespaces by default"
    );
    let env: Vec<&str> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        env,
        [
            "POD_NAME",
            "POD_NAMESPACE",
            "SPINDLE_RESOLVE_IMAGES",
            "SPINDLE_LEGACY_GROUP"
        ]
    );
    assert_eq!(
        c["env"][2]["value"], "true",
        "image resolution on by default"
    );

    let service = one(&objs, "Service");
    assert_eq!(service["spec"]["ports"][0]["port"], 8080);
    assert_eq!(
        service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"],
        "the Service selects the operator pods"
    );

    let test_pod = one(&objs, "Pod");
    assert_eq!(test_pod["metadata"]["annotations"]["helm.sh/hook"], "test");
    let cmd = test_pod["spec"]["containers"][0]["command"]
        .as_array()
        .expect("command");
    assert!(
        cmd.iter()
            .any(|a| a == "http://spindle-metrics.spindle-system.svc:8080/readyz"),
        "the helm test GETs /readyz through the metrics Service: {cmd:?}"
    );
    assert_eq!(
        test_pod["spec"]["containers"][0]["image"],
        "curlimages/curl:8.11.1"
    );
    let custom = render(&["--set", "tests.image=registry.example/curl:1"]);
    assert_eq!(
        one(&custom, "Pod")["spec"]["containers"][0]["image"],
        "registry.example/curl:1",
        "test image is configurable"
    );
}

/// The operator's objects that only optional features render.
const OPTIONAL_KINDS: [&str; 5] = [
    "NetworkPolicy",
    "PodDisruptionBudget",
    "RuntimeClass",
    "ServiceMonitor",
    "SpinAppExecutor",
];

/// With every optional feature on, every optional object renders with the
/// configured values.
#[test]
fn all_features_render_every_optional_object() {
    let all = all_features();
    let objs = render(&["-f", &all]);
    for kind in OPTIONAL_KINDS {
        assert_eq!(
            find(&objs, kind).len(),
            1,
            "{kind} missing with every feature on"
        );
    }
    let deployment = one(&objs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    let anti = &deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"];
    let term = &anti["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(
        term["podAffinityTerm"]["topologyKey"], "kubernetes.io/hostname",
        "2 replicas spread across nodes: {anti}"
    );
    assert_eq!(
        term["podAffinityTerm"]["labelSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert!(
        anti["requiredDuringSchedulingIgnoredDuringExecution"].is_null(),
        "anti-affinity is only preferred"
    );
    assert_eq!(
        operator_container(&objs)["image"],
        "ghcr.io/spindle-operator/spindle@sha256:0000000000000000000000000000000000000000000000000000000000000000"
    );
    let args = args_of(&objs);
    assert!(
        args.contains(&"--log-format=text") && args.contains(&"--concurrency=8"),
        "{args:?}"
    );

    let rc = one(&objs, "RuntimeClass");
    assert_eq!(rc["metadata"]["name"], "wasmtime-spin-v2");
    assert_eq!(rc["handler"], "spin");
    assert_eq!(rc["scheduling"]["nodeSelector"]["spin"], "true");

    let sae = one(&objs, "SpinAppExecutor");
    assert_eq!(sae["metadata"]["name"], "containerd-shim-spin");
    assert_eq!(sae["metadata"]["namespace"], "default");
    assert_eq!(sae["spec"]["createDeployment"], true);
    assert_eq!(
        sae["spec"]["deploymentConfig"]["runtimeClassName"],
        "wasmtime-spin-v2"
    );
    assert_eq!(
        sae["spec"]["deploymentConfig"]["otel"]["exporter_otlp_endpoint"],
        "http://otel-collector.monitoring:4318"
    );

    let sm = one(&objs, "ServiceMonitor");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "http");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    let service = one(&objs, "Service");
    for (k, v) in sm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("selector")
    {
        assert_eq!(
            &service["metadata"]["labels"][k], v,
            "the ServiceMonitor selects the metrics Service ({k})"
        );
    }

    let np = one(&objs, "NetworkPolicy");
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let egress = np["spec"]["egress"].as_array().expect("egress");
    assert!(
        egress
            .iter()
            .any(|r| r["to"][0]["ipBlock"]["cidr"] == "10.0.0.0/8"),
        "apiserver egress: {egress:?}"
    );
    assert!(
        egress.iter().any(|r| r["ports"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["port"] == 53))),
        "DNS egress"
    );
    assert_eq!(np["spec"]["ingress"][0]["ports"][0]["port"], "http");

    let pdb = one(&objs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    for o in &objs {
        assert_eq!(
            o["metadata"]["labels"]["example.com/team"],
            "platform",
            "commonLabels on {}",
            kind_name(o)
        );
    }

    // Optional objects are really optional: the default render has none.
    let defaults = render(&[]);
    for kind in OPTIONAL_KINDS {
        assert!(
            find(&defaults, kind).is_empty(),
            "{kind} rendered by default"
        );
    }
    // And switches work on their own.
    let no_svc = render(&["--set", "metrics.service.enabled=false"]);
    assert!(
        find(&no_svc, "Service").is_empty() && find(&no_svc, "Pod").is_empty(),
        "no Service, no helm test"
    );
    let no_crds = render(&["--set", "crds.install=false"]);
    assert!(
        find(&no_crds, "CustomResourceDefinition").is_empty(),
        "crds.install=false renders no CRD"
    );
    let no_le = render(&["--set", "operator.leaderElection.enabled=false"]);
    assert!(args_of(&no_le).contains(&"--leader-elect=false"));
    let no_le_roles: Vec<String> = find(&no_le, "Role").iter().map(|r| kind_name(r)).collect();
    assert_eq!(
        no_le_roles,
        ["Role/spindle-scale-to-zero"],
        "no leader election, no leader-election Role"
    );
    let two_ns = render(&[
        "--set",
        "executor.create=true",
        "--set",
        "executor.namespaces={a,b}",
    ]);
    let ns: BTreeSet<&str> = find(&two_ns, "SpinAppExecutor")
        .iter()
        .map(|o| o["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(
        ns,
        BTreeSet::from(["a", "b"]),
        "one executor per listed namespace"
    );
}

/// The CRD templates reproduce the generated CRDs exactly (same spec, same
/// name), add the release labels, and carry `helm.sh/resource-policy: keep`
/// unless `crds.keep=false`.
#[test]
fn crd_templates_embed_the_generated_crds_and_are_kept() {
    let generated = repo_crds();
    let objs = render(&["--set", "crds.annotations.example\\.com/x=y"]);
    let rendered = find(&objs, "CustomResourceDefinition");
    assert_eq!(rendered.len(), generated.len());
    for crd in rendered {
        let name = crd["metadata"]["name"].as_str().expect("name");
        let source = generated
            .get(name)
            .unwrap_or_else(|| panic!("rendered CRD {name} is not in crds/"));
        assert_eq!(
            crd["spec"], source["spec"],
            "{name}: the template must emit the generated spec verbatim"
        );
        assert_eq!(crd["apiVersion"], source["apiVersion"]);
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{name}"
        );
        assert_eq!(
            crd["metadata"]["annotations"]["example.com/x"], "y",
            "{name}: crds.annotations"
        );
        assert_eq!(
            crd["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "Helm"
        );
    }
    let not_kept = render(&["--set", "crds.keep=false"]);
    for crd in find(&not_kept, "CustomResourceDefinition") {
        assert!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"].is_null(),
            "crds.keep=false: {}",
            kind_name(crd)
        );
    }
}

/// Every rule is explicit (no `*`), nothing grants escalation, the Lease
/// rights are a Role in the release namespace pinned to the Lease's name, and
/// with `operator.watchNamespace` the namespaced rights become a Role there.
#[test]
fn rbac_is_least_privilege() {
    let check_rules = |o: &Value| {
        for rule in o["rules"].as_array().expect("rules") {
            for key in ["apiGroups", "resources", "verbs", "resourceNames"] {
                for v in rule[key].as_array().into_iter().flatten() {
                    let v = v.as_str().expect("string");
                    assert!(
                        !v.contains('*'),
                        "{}: wildcard in {key}: {rule}",
                        kind_name(o)
                    );
                }
            }
            let verbs = strs(&rule["verbs"]);
            for bad in ["escalate", "bind", "impersonate", "deletecollection"] {
                assert!(
                    !verbs.contains(&bad),
                    "{}: verb {bad}: {rule}",
                    kind_name(o)
                );
            }
            assert!(
                rule["nonResourceURLs"].is_null(),
                "{}: no nonResourceURLs",
                kind_name(o)
            );
            let resources = strs(&rule["resources"]);
            for forbidden in [
                "pods",
                "nodes",
                "clusterroles",
                "clusterrolebindings",
                "roles",
                "rolebindings",
                "serviceaccounts",
                "customresourcedefinitions",
                "namespaces",
            ] {
                assert!(
                    !resources.contains(&forbidden),
                    "{}: the operator never needs {forbidden}",
                    kind_name(o)
                );
            }
            if resources.contains(&"secrets") || resources.contains(&"configmaps") {
                assert!(
                    !verbs.contains(&"update"),
                    "Secrets/ConfigMaps are written with apply only: {rule}"
                );
            }
            if resources.contains(&"configmaps") {
                assert_eq!(verbs, ["get", "list", "watch"], "ConfigMaps are read-only");
            }
        }
    };
    let objs = render(&[]);
    for kind in ["ClusterRole", "Role"] {
        for o in find(&objs, kind) {
            check_rules(o);
        }
    }
    for kind in ["ClusterRoleBinding", "RoleBinding"] {
        for b in find(&objs, kind) {
            assert_ne!(b["roleRef"]["name"], "cluster-admin");
            assert_ne!(b["roleRef"]["name"], "admin");
            assert_eq!(
                b["subjects"],
                json!([{"kind": "ServiceAccount", "name": "spindle", "namespace": "spindle-system"}])
            );
        }
    }
    let cluster_role = one(&objs, "ClusterRole");
    let rules = cluster_role["rules"].as_array().unwrap();
    assert!(
        !rules
            .iter()
            .any(|r| r["apiGroups"] == json!(["coordination.k8s.io"])),
        "Lease rights must not be cluster-wide"
    );
    let roles = find(&objs, "Role");
    assert_eq!(roles.len(), 2, "leader election and scale to zero");
    let lease_role = roles
        .iter()
        .find(|r| r["metadata"]["name"] == "spindle-leader-election")
        .expect("the leader-election Role");
    assert_eq!(lease_role["metadata"]["namespace"], "spindle-system");
    for r in lease_role["rules"].as_array().unwrap() {
        assert_eq!(r["resources"], json!(["leases"]));
        let verbs = r["verbs"].as_array().unwrap();
        if verbs != &vec![json!("create")] {
            assert_eq!(
                r["resourceNames"],
                json!(["spindle-leader"]),
                "get/update only on the named Lease: {r}"
            );
        }
    }

    // Namespace-scoped operator: namespaced rights only in that namespace.
    let scoped = render(&["--set", "operator.watchNamespace=apps"]);
    let cr = one(&scoped, "ClusterRole");
    let cluster_resources: Vec<&Value> = cr["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["resources"].as_array().unwrap())
        .collect();
    assert_eq!(
        cluster_resources,
        [&json!("runtimeclasses")],
        "only RuntimeClasses stay cluster-wide"
    );
    let roles = find(&scoped, "Role");
    let apps_role = roles
        .iter()
        .find(|r| r["metadata"]["namespace"] == "apps")
        .expect("a Role in the watched namespace");
    check_rules(apps_role);
    assert!(
        apps_role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["resources"][0] == "spinapps")
    );
    assert!(args_of(&scoped).contains(&"--namespace=apps"));
}

/// `crds.legacyGroup.enabled` (default true) installs the
/// `core.spinoperator.dev` CRD with its RBAC rules and lets the operator
/// reconcile it; `false` leaves out both and tells the operator.
#[test]
fn legacy_group_can_be_turned_off() {
    let legacy_rules = |objs: &[Value]| -> usize {
        find(objs, "ClusterRole")
            .iter()
            .flat_map(|r| r["rules"].as_array().unwrap())
            .filter(|r| r["apiGroups"] == json!(["core.spinoperator.dev"]))
            .count()
    };
    let env = |objs: &[Value]| {
        operator_container(objs)["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "SPINDLE_LEGACY_GROUP")
            .map(|e| e["value"].clone())
    };
    let legacy_crd = |objs: &[Value]| {
        find(objs, "CustomResourceDefinition")
            .iter()
            .any(|c| c["metadata"]["name"] == "spinapps.core.spinoperator.dev")
    };
    let on = render(&[]);
    assert!(legacy_crd(&on));
    assert_eq!(
        legacy_rules(&on),
        3,
        "spinapps, spinapps/status, spinapps/finalizers"
    );
    assert_eq!(env(&on), Some(json!("true")));
    let off = render(&["--set", "crds.legacyGroup.enabled=false"]);
    assert!(!legacy_crd(&off));
    assert_eq!(
        find(&off, "CustomResourceDefinition").len(),
        repo_crds().len() - 1
    );
    assert_eq!(legacy_rules(&off), 0);
    assert_eq!(env(&off), Some(json!("false")));
}

/// The default executor is a post-install hook (with the release's ownership
/// metadata) while the SpinAppExecutor kind is unknown, and a plain release
/// resource once it is known, so that Helm adopts the hook-made object.
#[test]
fn executor_is_a_hook_until_its_kind_exists_then_a_release_resource() {
    let set = ["--set", "executor.create=true"];
    let objs = render(&set);
    let hook = one(&objs, "SpinAppExecutor");
    let a = &hook["metadata"]["annotations"];
    assert_eq!(a["helm.sh/hook"], "post-install");
    assert_eq!(a["meta.helm.sh/release-name"], "spindle");
    assert_eq!(a["meta.helm.sh/release-namespace"], "spindle-system");
    assert_eq!(a["helm.sh/resource-policy"], "keep");
    assert_eq!(
        hook["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "Helm"
    );

    let known = render(&[
        "--set",
        "executor.create=true",
        "--api-versions",
        "core.spinkube.dev/v1alpha1/SpinAppExecutor",
    ]);
    let plain = one(&known, "SpinAppExecutor");
    assert!(
        plain["metadata"]["annotations"]["helm.sh/hook"].is_null(),
        "a release resource once the kind exists"
    );
    assert_eq!(
        plain["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
}

/// `helm package` ships the CRD sources, the schema and the test hook.
#[test]
fn helm_package_contains_the_crd_sources_and_the_schema() {
    let dir = scratch("package");
    let chart = chart_dir();
    helm(
        &[
            "package",
            chart.to_str().unwrap(),
            "--destination",
            dir.to_str().unwrap(),
        ],
        None,
    );
    let tgz = dir.join("spindle-0.1.0.tgz");
    let listing = must(
        Path::new("tar"),
        &["tzf", tgz.to_str().unwrap()],
        None,
        None,
    );
    let crd_files: Vec<String> = spindle_e2e::crd_files()
        .expect("crds/")
        .iter()
        .map(|p| {
            format!(
                "spindle/files/crds/{}",
                p.file_name().unwrap().to_string_lossy()
            )
        })
        .collect();
    for want in crd_files.iter().map(String::as_str).chain([
        "spindle/values.schema.json",
        "spindle/templates/crds.yaml",
        "spindle/templates/tests/test-readyz.yaml",
    ]) {
        assert!(
            listing.lines().any(|l| l == want),
            "{want} missing from the package:\n{listing}"
        );
    }
    // The packaged chart renders the same CRDs as the source tree.
    let packaged = render_at(&tgz, "spindle", "spindle-system", &[]);
    assert_eq!(
        find(&packaged, "CustomResourceDefinition").len(),
        repo_crds().len()
    );
    std::fs::remove_dir_all(&dir).ok();
}

// ---------------------------------------------------------------------------
// Private control planes
// ---------------------------------------------------------------------------

/// Serializes the cluster tests of this binary (two cores).
static CLUSTER_LOCK: Mutex<()> = Mutex::new(());

/// A control plane of our own, started by `controlplane.sh` with a private
/// `SPINDLE_STATE`; stopped (by its recorded PIDs) on drop.
struct ControlPlane {
    state: PathBuf,
    kubeconfig: PathBuf,
    /// [`CLUSTER_LOCK`], held until the control plane has been stopped
    /// (fields drop after [`Drop::drop`]).
    _serial: MutexGuard<'static, ()>,
}

impl ControlPlane {
    /// Waits for the other cluster tests of this binary, then starts.
    fn start(name: &str, full: bool) -> Self {
        let serial = CLUSTER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let state = scratch(name);
        let script = repo_root().join("e2e/scripts/controlplane.sh");
        let mut args = vec!["start"];
        if !full {
            args.push("--minimal");
        }
        let cp = ControlPlane {
            kubeconfig: state.join("kubeconfig"),
            state,
            _serial: serial,
        };
        // controlplane.sh picks random free ports; another process can take
        // one before etcd/apiserver binds it ("address already in use"). A
        // start that fails is stopped (by PID) and retried, at most 3 times.
        let mut failures = Vec::new();
        for _ in 0..3 {
            let out = Command::new(&script)
                .args(&args)
                .env("SPINDLE_STATE", &cp.state)
                .output()
                .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
            if out.status.success() {
                return cp;
            }
            failures.push(format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
            let _ = Command::new(&script)
                .arg("stop")
                .env("SPINDLE_STATE", &cp.state)
                .output();
        }
        panic!(
            "controlplane.sh {args:?} failed 3 times:\n{}",
            failures.join("\n---\n")
        );
    }

    /// A control plane with the namespace `apps` and the chart installed by
    /// `helm <install>`.
    fn with_chart(name: &str, full: bool, install: &[&str]) -> Self {
        let cp = Self::start(name, full);
        cp.kubectl(&["create", "namespace", "apps"]);
        cp.helm(install);
        cp
    }

    fn kubectl(&self, args: &[&str]) -> String {
        must(&kubectl_bin(), args, Some(&self.kubeconfig), None)
    }

    fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> String {
        must(&kubectl_bin(), args, Some(&self.kubeconfig), Some(stdin))
    }

    fn try_kubectl(&self, args: &[&str]) -> Out {
        run(&kubectl_bin(), args, Some(&self.kubeconfig), None)
    }

    fn try_kubectl_stdin(&self, args: &[&str], stdin: &str) -> Out {
        run(&kubectl_bin(), args, Some(&self.kubeconfig), Some(stdin))
    }

    /// `kubectl apply --dry-run=server` of `yaml`; kubectl's report.
    fn server_dry_run(&self, yaml: &str) -> String {
        self.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], yaml)
    }

    fn wait_established(&self, crd: &str) {
        self.kubectl(&[
            "wait",
            "--for=condition=Established",
            &format!("crd/{crd}"),
            "--timeout=30s",
        ]);
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.kubectl(&a)).expect("kubectl -o json")
    }

    /// `metadata.uid` of the object `get <args>` names.
    fn uid(&self, args: &[&str]) -> String {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        self.json(&a)["metadata"]["uid"]
            .as_str()
            .expect("uid")
            .to_string()
    }

    fn exists(&self, args: &[&str]) -> bool {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "name", "--ignore-not-found"]);
        !self.kubectl(&a).trim().is_empty()
    }

    fn helm(&self, args: &[&str]) -> String {
        helm(args, Some(&self.kubeconfig))
    }

    fn try_helm(&self, args: &[&str]) -> Out {
        run(&helm_bin(), args, Some(&self.kubeconfig), None)
    }

    /// `helm install`/`upgrade` that must end with the release deployed.
    fn helm_deployed(&self, args: &[&str]) -> String {
        let out = self.helm(args);
        assert!(
            out.contains("STATUS: deployed"),
            "helm {args:?} did not deploy:\n{out}"
        );
        out
    }

    /// A release's objects as Helm recorded them: `what` is `manifest` (the
    /// release resources) or `hooks`.
    fn release_objects(&self, what: &str, release: &str, namespace: &str) -> Vec<Value> {
        parse_docs(&self.helm(&["get", what, release, "-n", namespace]))
    }

    /// The only container of a Deployment the chart installed in
    /// `spindle-system`.
    fn chart_container(&self, deployment: &str) -> Value {
        let d = self.json(&["get", "deployment", deployment, "-n", "spindle-system"]);
        d["spec"]["template"]["spec"]["containers"][0].clone()
    }

    /// Writes a kubeconfig that impersonates the ServiceAccount
    /// `spindle-system/<name>` with the groups a pod's token carries (an
    /// out-of-cluster process then has exactly the chart's RBAC); its path.
    fn impersonating_kubeconfig(&self, name: &str) -> PathBuf {
        let mut kubeconfig: Value =
            serde_json::from_str(&self.kubectl(&["config", "view", "--raw", "-o", "json"]))
                .unwrap();
        kubeconfig["users"][0]["user"]["as"] =
            json!(format!("system:serviceaccount:spindle-system:{name}"));
        kubeconfig["users"][0]["user"]["as-groups"] = json!([
            "system:serviceaccounts",
            "system:serviceaccounts:spindle-system",
            "system:authenticated"
        ]);
        let path = self.state.join(format!("kubeconfig-{name}-sa"));
        std::fs::write(&path, serde_json::to_string_pretty(&kubeconfig).unwrap()).unwrap();
        path
    }

    /// Writes a kubeconfig that authenticates with a token of the
    /// ServiceAccount `<namespace>/<name>` from the TokenRequest API
    /// (`kubectl create token`), the kind of token the kubelet projects into
    /// the operator's pod: the apiserver's authenticator, not impersonation,
    /// decides who the process is. Its path.
    fn token_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let token = self.kubectl(&["create", "token", name, "-n", namespace, "--duration=1h"]);
        let mut kubeconfig: Value =
            serde_json::from_str(&self.kubectl(&["config", "view", "--raw", "-o", "json"]))
                .unwrap();
        kubeconfig["users"][0]["user"] = json!({ "token": token.trim() });
        let path = self
            .state
            .join(format!("kubeconfig-{namespace}-{name}-token"));
        std::fs::write(&path, serde_json::to_string_pretty(&kubeconfig).unwrap()).unwrap();
        path
    }

    /// Names of every listable cluster-scoped object (`<resource>/<name>`),
    /// except Namespaces (Helm never deletes the ones `--create-namespace`
    /// made; checked separately) and the apiserver's self-managed objects.
    fn cluster_scoped(&self) -> BTreeSet<String> {
        let resources = self.kubectl(&[
            "api-resources",
            "--namespaced=false",
            "--verbs=list",
            "-o",
            "name",
        ]);
        let mut all = BTreeSet::new();
        for r in resources.lines().map(str::trim).filter(|r| !r.is_empty()) {
            if matches!(
                r,
                "namespaces" | "componentstatuses" | "nodes" | "ipaddresses.networking.k8s.io"
            ) {
                continue;
            }
            for name in self.kubectl(&["get", r, "-o", "name"]).lines() {
                all.insert(name.trim().to_string());
            }
        }
        all
    }

    /// Sum of the apiserver's `apiserver_request_total` samples with code 403.
    fn forbidden_requests(&self) -> u64 {
        let metrics = self.kubectl(&["get", "--raw", "/metrics"]);
        metrics
            .lines()
            .filter(|l| l.starts_with("apiserver_request_total{") && l.contains("code=\"403\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let script = repo_root().join("e2e/scripts/controlplane.sh");
        let _ = Command::new(&script)
            .arg("stop")
            .env("SPINDLE_STATE", &self.state)
            .output();
        if std::env::var_os("SPINDLE_TEST_KEEP_STATE").is_none() {
            let _ = std::fs::remove_dir_all(&self.state);
        }
    }
}

/// A ServiceMonitor CRD standing in for prometheus-operator's, with a
/// structural schema for the fields the chart sets (so a typo in the chart's
/// ServiceMonitor is still rejected by the server-side dry run).
const SERVICE_MONITOR_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        required: [spec]
        properties:
          spec:
            type: object
            required: [endpoints, selector]
            properties:
              namespaceSelector:
                type: object
                properties:
                  any: {type: boolean}
                  matchNames: {type: array, items: {type: string}}
              selector:
                type: object
                properties:
                  matchLabels: {type: object, additionalProperties: {type: string}}
              endpoints:
                type: array
                items:
                  type: object
                  properties:
                    port: {type: string}
                    path: {type: string}
                    scheme: {type: string, enum: [http, https]}
                    interval: {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
                    scrapeTimeout: {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
                    relabelings: {type: array, items: {type: object, x-kubernetes-preserve-unknown-fields: true}}
                    metricRelabelings: {type: array, items: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"#;

/// The CRD the upgrade test changes and the adoption checks look at.
const SPINAPPS_CRD: &str = "spinapps.core.spinkube.dev";

/// Names of the generated CRDs (`crds/`), which the chart installs.
fn crd_names() -> Vec<String> {
    repo_crds().into_keys().collect()
}

/// What a `helm uninstall` leaves cluster-wide: the kept CRDs, plus the local
/// APIService the apiserver itself registers for each CRD group/version (it
/// exists exactly as long as the CRDs do).
fn kept_after_uninstall() -> BTreeSet<String> {
    let mut kept = BTreeSet::new();
    for (name, crd) in repo_crds() {
        kept.insert(format!(
            "customresourcedefinition.apiextensions.k8s.io/{name}"
        ));
        let group = crd["spec"]["group"].as_str().expect("group");
        for v in crd["spec"]["versions"].as_array().expect("versions") {
            let version = v["name"].as_str().expect("version name");
            kept.insert(format!(
                "apiservice.apiregistration.k8s.io/{version}.{group}"
            ));
        }
    }
    kept
}

/// `helm install spindle` into `spindle-system` with the executor (in
/// `apps`) and the RuntimeClass, waiting for the release; then `extra`.
fn install_with_executor<'a>(chart: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "install",
        "spindle",
        chart,
        "-n",
        "spindle-system",
        "--create-namespace",
        "--set",
        "executor.create=true",
        "--set",
        "executor.namespaces={apps}",
        "--set",
        "runtimeClass.create=true",
        // With executor.create on a first install, --wait makes Helm wait for
        // the CRDs to be Established before the post-install hook creates the
        // executors (without it the hook can race the CRD registration).
        "--wait",
        "--timeout=3m",
    ];
    args.extend_from_slice(extra);
    args
}

/// The UIDs of the CRDs `names`: unchanged UIDs mean updated in place.
fn crd_uids(cp: &ControlPlane, names: &[String]) -> Vec<String> {
    names.iter().map(|n| cp.uid(&["crd", n])).collect()
}

/// The SpinApp CRD's printer columns, and whether the column the upgrade
/// test adds is among them.
fn upgrade_probe_column(cp: &ControlPlane) -> (bool, Value) {
    let columns =
        cp.json(&["get", "crd", SPINAPPS_CRD])["spec"]["versions"][0]["additionalPrinterColumns"]
            .clone();
    let found = columns
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "UpgradeProbe");
    (found, columns)
}

/// Install, dry runs, second release, upgrade that changes a CRD, uninstall,
/// reinstall and adoption, on a control plane that starts empty.
#[test]
fn lifecycle_on_a_fresh_control_plane() {
    // The full tier (controller-manager, scheduler, kwok): `helm install --wait`
    // needs the Deployment's ReplicaSet and pods to report ready.
    let cp = ControlPlane::start("lifecycle", true);
    let crd_names = crd_names();
    let chart = chart_dir();
    let chart = chart.to_str().expect("utf-8");
    let empty = cp.cluster_scoped();
    assert!(
        !empty.iter().any(|n| n.contains("spinkube")),
        "a fresh control plane has no Spindle CRDs"
    );

    // 1. Bad values fail `helm install` with the schema's message and create nothing.
    let bad: [(&[&str], &str); 10] = [
        (
            &["--set", "replicas=-1"],
            "at '/replicas': minimum: got -1, want 0",
        ),
        (
            &["--set", "operator.logFormat=xml"],
            "at '/operator/logFormat': value must be one of 'json', 'text'",
        ),
        (&["--set", "http.port=70000"], "at '/http/port': maximum"),
        (
            &["--set", "metrics.service.port=0"],
            "at '/metrics/service/port': minimum: got 0, want 1",
        ),
        (
            &["--set", "operator.concurrency=0"],
            "at '/operator/concurrency': minimum",
        ),
        (
            &["--set", "image.pullPolicy=Sometimes"],
            "at '/image/pullPolicy': value must be one of",
        ),
        (
            &["--set", "activator.portRange=20000"],
            "at '/activator/portRange'",
        ),
        (
            &["--set", "replicaz=2"],
            "additional properties 'replicaz' not allowed",
        ),
        (
            &["--set", "executor.namespaces[0]=Bad_NS"],
            "at '/executor/namespaces/0'",
        ),
        (
            &[
                "--set",
                "replicas=2",
                "--set",
                "operator.leaderElection.enabled=false",
            ],
            "replicas > 1 requires operator.leaderElection.enabled=true",
        ),
    ];
    for (set, message) in bad {
        let mut args = vec![
            "install",
            "bad",
            chart,
            "-n",
            "bad-values",
            "--create-namespace",
        ];
        args.extend_from_slice(set);
        let out = cp.try_helm(&args);
        assert!(!out.ok, "helm install {set:?} must fail");
        assert!(
            out.stderr.contains(message),
            "helm install {set:?}: expected {message:?} in:\n{}",
            out.stderr
        );
    }
    assert_eq!(
        cp.helm(&["list", "--all-namespaces", "--all", "-q"]).trim(),
        "",
        "no release recorded"
    );
    assert!(
        !cp.exists(&["namespace", "bad-values"]),
        "a rejected install creates no namespace"
    );
    assert_eq!(
        cp.cluster_scoped(),
        empty,
        "a rejected install creates nothing cluster-scoped"
    );

    // 2. Server-side dry run of the default render on the empty cluster: the
    //    apiserver validates every object (CRD schemas, RBAC, Deployment, the
    //    helm-test Pod). The release namespace enforces the "restricted" Pod
    //    Security Standard, so the Pods are checked against it too.
    cp.kubectl(&["create", "namespace", "spindle-system"]);
    cp.kubectl(&[
        "label",
        "namespace",
        "spindle-system",
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    ]);
    cp.kubectl(&["create", "namespace", "apps"]);
    // The helm-test Pod runs as the namespace's default ServiceAccount, which
    // the controller-manager creates shortly after the namespace.
    wait_until(
        "the default ServiceAccount of spindle-system",
        Duration::from_secs(60),
        || {
            cp.exists(&["serviceaccount", "default", "-n", "spindle-system"])
                .then_some(())
        },
    );
    let default_yaml = render_text("spindle", "spindle-system", &[]);
    let dry = cp.server_dry_run(&default_yaml);
    assert!(dry.contains("customresourcedefinition.apiextensions.k8s.io/spinapps.core.spinkube.dev created (server dry run)"), "{dry}");
    assert!(
        dry.contains("pod/spindle-test-readyz created (server dry run)"),
        "the helm test Pod is valid: {dry}"
    );
    assert!(
        dry.contains("deployment.apps/spindle created (server dry run)"),
        "{dry}"
    );
    assert!(
        !cp.exists(&["crd", SPINAPPS_CRD]),
        "a dry run creates nothing"
    );
    cp.kubectl_stdin(&["apply", "-f", "-"], SERVICE_MONITOR_CRD);
    cp.wait_established("servicemonitors.monitoring.coreos.com");
    let before = cp.cluster_scoped();

    // 3. One command installs everything on the fresh cluster (CRDs from the
    //    release, the executor through the post-install hook).
    let install_args = install_with_executor(chart, &[]);
    cp.helm_deployed(&install_args);
    for crd in &crd_names {
        cp.wait_established(crd);
        let c = cp.json(&["get", "crd", crd]);
        assert_eq!(
            c["metadata"]["annotations"]["meta.helm.sh/release-name"], "spindle",
            "{crd} belongs to the release"
        );
        assert_eq!(
            c["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
    }
    for obj in [
        &["serviceaccount", "spindle", "-n", "spindle-system"][..],
        &["deployment", "spindle", "-n", "spindle-system"],
        &["service", "spindle-metrics", "-n", "spindle-system"],
        &["role", "spindle-leader-election", "-n", "spindle-system"],
        &[
            "rolebinding",
            "spindle-leader-election",
            "-n",
            "spindle-system",
        ],
        &["clusterrole", "spindle-spindle-system"],
        &["clusterrolebinding", "spindle-spindle-system"],
        &["runtimeclass", "wasmtime-spin-v2"],
    ] {
        assert!(cp.exists(obj), "missing after install: {obj:?}");
    }
    // The operator's pod, as the ReplicaSet creates it, passes PSA "restricted"
    // (dry run after the install: the ServiceAccount admission needs the SA).
    let rendered = parse_docs(&default_yaml);
    let template = &one(&rendered, "Deployment")["spec"]["template"];
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "spindle-operator-psa", "namespace": "spindle-system", "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    });
    let out = cp.try_kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &pod.to_string());
    assert!(
        out.ok && !out.stderr.contains("violate"),
        "the operator pod must satisfy PodSecurity restricted:\n{}\n{}",
        out.stdout,
        out.stderr
    );

    let executor = cp.json(&[
        "get",
        "spinappexecutor",
        "containerd-shim-spin",
        "-n",
        "apps",
    ]);
    assert_eq!(
        executor["spec"]["deploymentConfig"]["runtimeClassName"],
        "wasmtime-spin-v2"
    );
    assert_eq!(
        executor["metadata"]["annotations"]["meta.helm.sh/release-name"],
        "spindle"
    );
    let executor_uid = executor["metadata"]["uid"].as_str().unwrap().to_string();
    let hooks = cp.release_objects("hooks", "spindle", "spindle-system");
    assert_eq!(
        find(&hooks, "SpinAppExecutor").len(),
        1,
        "first install: the executor is a post-install hook"
    );
    let manifest = cp.release_objects("manifest", "spindle", "spindle-system");
    assert!(
        find(&manifest, "SpinAppExecutor").is_empty(),
        "first install: not yet a release resource"
    );
    let installed_crd_uids = crd_uids(&cp, &crd_names);

    // User data that must survive upgrade and uninstall.
    cp.kubectl_stdin(
        &["apply", "-n", "apps", "-f", "-"],
        "apiVersion: core.spinkube.dev/v1alpha1\nkind: SpinApp\nmetadata: {name: keep-me}\nspec: {image: ghcr.io/example/app:v1, executor: containerd-shim-spin, replicas: 1, port: 8080}\n",
    );
    let keep_me = ["spinapp", "keep-me", "-n", "apps"];
    let app_uid = cp.uid(&keep_me);

    // 4. Server-side dry run of the all-features render (the CRDs exist now).
    let all = all_features();
    let all_yaml = render_text(
        "allfeat",
        "allfeat-system",
        &[
            "-f",
            &all,
            "--api-versions",
            "core.spinkube.dev/v1alpha1/SpinAppExecutor",
        ],
    );
    cp.kubectl(&["create", "namespace", "allfeat-system"]);
    let dry = cp.server_dry_run(&all_yaml);
    for want in [
        "networkpolicy.networking.k8s.io/allfeat-spindle created (server dry run)",
        "poddisruptionbudget.policy/allfeat-spindle created (server dry run)",
        "servicemonitor.monitoring.coreos.com/allfeat-spindle created (server dry run)",
        "spinappexecutor.core.spinkube.dev/containerd-shim-spin created (server dry run)",
        "deployment.apps/allfeat-spindle created (server dry run)",
    ] {
        assert!(dry.contains(want), "missing {want:?} in:\n{dry}");
    }
    cp.kubectl(&["delete", "namespace", "allfeat-system", "--wait=false"]);

    // 5. A second release in the same cluster, CRDs left to the first one.
    cp.kubectl(&["create", "namespace", "tenant-b"]);
    cp.helm_deployed(&[
        "install",
        "spindle",
        chart,
        "-n",
        "tenant-b",
        "--set",
        "crds.install=false",
        "--set",
        "operator.watchNamespace=tenant-b",
    ]);
    assert!(
        cp.exists(&["clusterrole", "spindle-tenant-b"])
            && cp.exists(&["role", "spindle", "-n", "tenant-b"])
    );
    assert_eq!(
        cp.json(&["get", "crd", SPINAPPS_CRD])["metadata"]["annotations"]["meta.helm.sh/release-namespace"],
        "spindle-system"
    );

    // 6. helm upgrade with a chart whose SpinApp CRD has an extra printer column.
    let copy = scratch("upgrade-chart").join("spindle");
    copy_dir(&chart_dir(), &copy);
    let crd_file = copy.join("files/crds/spinapps.core.spinkube.dev.yaml");
    let text = std::fs::read_to_string(&crd_file).unwrap();
    let anchor = "  - additionalPrinterColumns:\n";
    assert!(
        text.contains(anchor),
        "printer columns anchor in {}",
        crd_file.display()
    );
    let column = "    - description: Added by the chart upgrade test\n      jsonPath: .spec.port\n      name: UpgradeProbe\n      priority: 1\n      type: integer\n";
    std::fs::write(
        &crd_file,
        text.replacen(anchor, &format!("{anchor}{column}"), 1),
    )
    .unwrap();
    let chart_yaml = copy.join("Chart.yaml");
    let meta = std::fs::read_to_string(&chart_yaml).unwrap().replacen(
        "version: 0.1.0",
        "version: 0.1.1-upgradetest",
        1,
    );
    std::fs::write(&chart_yaml, meta).unwrap();
    let mut upgrade_args = install_args.to_vec();
    upgrade_args[0] = "upgrade";
    upgrade_args[2] = copy.to_str().unwrap();
    upgrade_args.retain(|a| *a != "--create-namespace");
    let out = cp.helm_deployed(&upgrade_args);
    assert!(out.contains("REVISION: 2"), "{out}");
    let (added, columns) = upgrade_probe_column(&cp);
    assert!(added, "helm upgrade updated the CRD: {columns}");
    let wide = cp.kubectl(&["get", "spinapps", "-n", "apps", "-o", "wide"]);
    assert!(
        wide.lines()
            .next()
            .unwrap_or_default()
            .contains("UPGRADEPROBE")
            && wide.contains("8080"),
        "{wide}"
    );
    assert_eq!(
        cp.uid(&keep_me),
        app_uid,
        "the app survived the CRD upgrade"
    );
    assert_eq!(
        crd_uids(&cp, &crd_names),
        installed_crd_uids,
        "the CRDs were updated in place, not recreated"
    );
    // The hook-made executor is now a release resource (adopted, not recreated).
    let manifest = cp.release_objects("manifest", "spindle", "spindle-system");
    assert_eq!(
        find(&manifest, "SpinAppExecutor").len(),
        1,
        "after the upgrade the executor is a release resource"
    );
    assert_eq!(
        cp.uid(&["spinappexecutor", "containerd-shim-spin", "-n", "apps"]),
        executor_uid
    );

    // 7. helm uninstall: only the kept CRDs (and the kept executor and apps) remain.
    let out = cp.helm(&["uninstall", "spindle", "-n", "tenant-b"]);
    assert!(out.contains("uninstalled"), "{out}");
    let out = cp.helm(&["uninstall", "spindle", "-n", "spindle-system"]);
    for crd in &crd_names {
        assert!(
            out.contains(&format!("[CustomResourceDefinition] {crd}")),
            "helm reports {crd} as kept:\n{out}"
        );
    }
    let expected = kept_after_uninstall();
    let last = std::cell::RefCell::new(BTreeSet::new());
    let leftovers = wait_until_or(
        Duration::from_secs(60),
        || {
            let added: BTreeSet<String> =
                cp.cluster_scoped().difference(&before).cloned().collect();
            *last.borrow_mut() = added.clone();
            (added == expected).then_some(added)
        },
        || {
            format!(
                "cluster-scoped objects to be deleted; besides the snapshot there are: {:?}",
                last.borrow()
            )
        },
    );
    assert_eq!(
        leftovers, expected,
        "uninstall leaves only the kept CRDs behind"
    );
    assert!(
        before.difference(&cp.cluster_scoped()).next().is_none(),
        "uninstall removed nothing it did not create"
    );
    for ns in ["spindle-system", "tenant-b"] {
        let left = cp.kubectl(&[
            "get",
            "deployments,services,serviceaccounts,roles,rolebindings,configmaps,secrets",
            "-n",
            ns,
            "-o",
            "name",
            "-l",
            "app.kubernetes.io/instance=spindle",
        ]);
        assert_eq!(left.trim(), "", "release objects left in {ns}");
        let sa = cp.kubectl(&["get", "serviceaccounts", "-n", ns, "-o", "name"]);
        assert!(!sa.contains("serviceaccount/spindle"), "{sa}");
    }
    assert_eq!(cp.uid(&keep_me), app_uid, "SpinApps survive uninstall");
    assert!(
        cp.exists(&["spinappexecutor", "containerd-shim-spin", "-n", "apps"]),
        "the executor is kept, like the CRDs"
    );

    // 8. Reinstalling the same release adopts the kept CRDs and executor.
    cp.helm_deployed(&install_args);
    assert_eq!(crd_uids(&cp, &crd_names), installed_crd_uids);
    let (added, columns) = upgrade_probe_column(&cp);
    assert!(!added, "reinstall applied the chart's CRD: {columns}");
    cp.helm(&["uninstall", "spindle", "-n", "spindle-system"]);

    // 9. CRDs owned by someone else (e.g. kubectl-applied spin-operator CRDs or
    //    another release): a plain install refuses, --take-ownership adopts.
    let install_other = [
        "install",
        "other",
        chart,
        "-n",
        "other-system",
        "--create-namespace",
    ];
    let out = cp.try_helm(&install_other);
    assert!(!out.ok, "install must refuse CRDs owned by another release");
    assert!(
        out.stderr.contains("invalid ownership metadata") && out.stderr.contains("spindle"),
        "{}",
        out.stderr
    );
    assert!(
        cp.helm(&["list", "-n", "other-system", "--all", "-q"])
            .trim()
            .is_empty(),
        "a refused install records no release"
    );
    cp.helm_deployed(&[&install_other[..], &["--take-ownership"]].concat());
    assert_eq!(
        cp.json(&["get", "crd", SPINAPPS_CRD])["metadata"]["annotations"]["meta.helm.sh/release-name"],
        "other"
    );
    assert_eq!(
        crd_uids(&cp, &crd_names),
        installed_crd_uids,
        "adopted in place"
    );
    cp.helm(&["uninstall", "other", "-n", "other-system"]);
    std::fs::remove_dir_all(copy.parent().expect("scratch dir")).ok();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------
// RBAC proof: the real operator, impersonating the chart's ServiceAccount
// ---------------------------------------------------------------------------

/// Fixtures in namespace `apps`: Secrets, ConfigMaps, executors and one
/// SpinApp per feature.
const RBAC_FIXTURES: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: redis}
stringData: {url: "redis://redis.apps:6379"}
---
apiVersion: v1
kind: Secret
metadata: {name: own-runtime-config}
stringData:
  runtime-config.toml: |
    [key_value_store.default]
    type = "spin"
---
apiVersion: v1
kind: Secret
metadata: {name: app-secrets}
stringData: {token: s3cr3t}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data: {greeting: hello, sqlite-path: /data/db.sqlite}
---
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinAppExecutor
metadata: {name: spintainer}
spec:
  createDeployment: true
  deploymentConfig: {spinImage: "ghcr.io/fermyon/spin:v3.6.3"}
---
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinAppExecutor
metadata: {name: external}
spec: {createDeployment: false}
---
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinAppExecutor
metadata: {name: guarded}
spec:
  createDeployment: true
  deploymentConfig: {runtimeClassName: wasmtime-spin-v2}
---
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinApp
metadata: {name: basic}
spec: {image: "ghcr.io/example/hello@sha256:1111111111111111111111111111111111111111111111111111111111111111", executor: containerd-shim-spin, replicas: 2}
---
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinApp
metadata: {name: typed-runtime-config}
spec:
  image: "ghcr.io/example/kv@sha256:2222222222222222222222222222222222222222222222222222222222222222"
  executor: containerd-shim-spin
  replicas: 1
  runtimeConfig:
    keyValueStores:
    - name: default
      type: redis
      options:
      - name: url
        valueFrom: {secretKeyRef: {name: redis, key: url}}
    sqliteDatabases:
    - name: default
      type: spin
      options:
      - name: path
        valueFrom: {configMapKeyRef: {name: app-config, key: sqlite-path}}
    llmCompute:
      type: remote_http
      options:
      - {name: url, value: "http://llm.apps:8080"}
      - name: auth_token
        valueFrom: {secretKeyRef: {name: app-secrets, key: token}}
---
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinApp
metadata: {name: load-from-secret}
spec:
  image: "ghcr.io/example/kv@sha256:3333333333333333333333333333333333333333333333333333333333333333"
  executor: containerd-shim-spin
  replicas: 1
  runtimeConfig: {loadFromSecret: own-runtime-config}
---
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinApp
metadata: {name: variables}
spec:
  image: "ghcr.io/example/vars@sha256:4444444444444444444444444444444444444444444444444444444444444444"
  executor: containerd-shim-spin
  replicas: 1
  variables:
  - {name: plain, value: "1"}
  - name: token
    valueFrom: {secretKeyRef: {name: app-secrets, key: token}}
  - name: greeting
    valueFrom: {configMapKeyRef: {name: app-config, key: greeting}}
---
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinApp
metadata: {name: everything-else}
spec:
  image: "ghcr.io/example/hello@sha256:5555555555555555555555555555555555555555555555555555555555555555"
  executor: containerd-shim-spin
  replicas: 1
  port: 8080
  components: [hello]
  imagePullSecrets: [{name: app-secrets}]
  checks:
    readiness: {httpGet: {path: /health}}
    liveness: {httpGet: {path: /health}}
  resources:
    limits: {memory: 128Mi, cpu: 500m}
    requests: {memory: 64Mi, cpu: 50m}
  invocationLimits: {memory: 32Mi}
  podLabels: {team: platform}
  podAnnotations: {example.com/a: b}
  deploymentAnnotations: {example.com/d: e}
  serviceAnnotations: {example.com/s: t}
  volumes: [{name: scratch, emptyDir: {}}]
  volumeMounts: [{name: scratch, mountPath: /scratch}]
  nodeSelector: {kubernetes.io/os: linux}
  tolerations: [{key: spin, operator: Exists, effect: NoSchedule}]
---
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinApp
metadata: {name: autoscaled}
spec:
  image: "ghcr.io/example/hello@sha256:6666666666666666666666666666666666666666666666666666666666666666"
  executor: containerd-shim-spin
  enableAutoscaling: true
---
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinApp
metadata: {name: spintainer-app}
spec:
  image: "ghcr.io/example/hello@sha256:7777777777777777777777777777777777777777777777777777777777777777"
  executor: spintainer
  replicas: 1
---
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinApp
metadata: {name: service-only}
spec:
  image: "ghcr.io/example/hello@sha256:8888888888888888888888888888888888888888888888888888888888888888"
  executor: external
  replicas: 1
---
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinApp
metadata: {name: guarded-app}
spec:
  image: "ghcr.io/example/hello@sha256:9999999999999999999999999999999999999999999999999999999999999999"
  executor: guarded
  replicas: 1
---
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinApp
metadata: {name: missing-executor}
spec:
  image: "ghcr.io/example/hello@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
  executor: does-not-exist
  replicas: 1
---
apiVersion: core.spinoperator.dev/v1alpha1
kind: SpinApp
metadata: {name: legacy-article}
spec:
  image: "ghcr.io/example/hello@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
  executor: containerd-shim-spin
  replicas: 1
  runtime-config:
    key_value_stores:
      default: {type: redis, url: "redis://redis.apps:6379"}
"#;

/// Apps that must end with a ready Deployment: (name, replicas).
const ROLLED_OUT: [(&str, i64); 7] = [
    ("basic", 2),
    ("typed-runtime-config", 1),
    ("load-from-secret", 1),
    ("variables", 1),
    ("everything-else", 1),
    ("autoscaled", 1),
    ("spintainer-app", 1),
];

/// `target/debug/spindle`, checked before a test takes the lock and starts
/// a control plane for nothing.
fn spindle_binary() -> PathBuf {
    spindle_e2e::built_spindle_bin().unwrap_or_else(|e| panic!("{e:#}"))
}

/// A container's args with each one that starts with an override's prefix
/// (`--http-addr=`) replaced by that override's full argument.
fn overridden_args(container: &Value, overrides: &[(&str, String)]) -> Vec<String> {
    strs(&container["args"])
        .into_iter()
        .map(|a| {
            overrides
                .iter()
                .find(|(prefix, _)| a.starts_with(prefix))
                .map_or_else(|| a.to_string(), |(_, arg)| arg.clone())
        })
        .collect()
}

/// A container's env entries with a literal value (e.g.
/// SPINDLE_RESOLVE_IMAGES); [`SpindleProcess::start`] sets the fieldRef ones.
fn literal_env(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Asserts each `kubectl auth can-i <query>` answer (`yes`/`no`) in `table`,
/// for `who` (as `kubectl` runs it).
fn assert_can_i(who: &str, kubectl: impl Fn(&[&str]) -> Out, table: &[(&str, &str)]) {
    for &(query, expect) in table {
        let mut args = vec!["auth", "can-i"];
        args.extend(query.split_whitespace());
        let out = kubectl(&args);
        assert_eq!(
            out.stdout.trim(),
            expect,
            "{who} can-i {query}: {}",
            out.stderr
        );
    }
}

/// A `spindle` process (the operator or the activator) with its output in a
/// log file; killed on drop if a test fails first.
struct SpindleProcess {
    /// "operator" or "activator", for failure messages.
    what: &'static str,
    args: Vec<String>,
    child: std::process::Child,
    log: PathBuf,
}

impl SpindleProcess {
    /// Starts `spindle <args>` as the pod `spindle-system/<pod_name>` would
    /// run it (`env` plus POD_NAME/POD_NAMESPACE, which the kubelet sets from
    /// fieldRefs), talking to the apiserver through `kubeconfig`.
    fn start(
        what: &'static str,
        args: Vec<String>,
        env: Vec<(String, String)>,
        kubeconfig: &Path,
        pod_name: &str,
        log: PathBuf,
    ) -> Self {
        Self::start_in(what, args, env, kubeconfig, "spindle-system", pod_name, log)
    }

    /// [`SpindleProcess::start`] as a pod of the release namespace `pod_namespace`.
    fn start_in(
        what: &'static str,
        args: Vec<String>,
        env: Vec<(String, String)>,
        kubeconfig: &Path,
        pod_namespace: &str,
        pod_name: &str,
        log: PathBuf,
    ) -> Self {
        let spindle = spindle_binary();
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(&spindle)
            .args(&args)
            .envs(env)
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", pod_name)
            .env("POD_NAMESPACE", pod_namespace)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", spindle.display()));
        SpindleProcess {
            what,
            args,
            child,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log (a long log buries the failure).
    fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// [`wait_until`] with the process's log in the timeout message.
    fn wait_until<T>(&self, what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
        wait_until_or(timeout, check, || format!("{what}; log:\n{}", self.log()))
    }

    /// Waits (60 s) for `/readyz` on `port` to answer 200: the caches synced
    /// (what `helm test` and the readiness probe check).
    fn wait_ready(&self, port: u16) {
        self.wait_until(
            &format!(
                "the {}'s /readyz to return 200 (started with the chart's args {:?})",
                self.what, self.args
            ),
            Duration::from_secs(60),
            || (http_get(port, "/readyz")?.0 == 200).then_some(()),
        );
    }

    /// Zero 403s since `forbidden_before`: the apiserver's own counter and
    /// the process's log.
    fn assert_no_403s(&self, cp: &ControlPlane, forbidden_before: u64) {
        let forbidden = cp.forbidden_requests() - forbidden_before;
        let log_text = self.log();
        let denied: Vec<&str> = log_text.lines().filter(|l| mentions_403(l)).collect();
        assert!(
            forbidden == 0 && denied.is_empty(),
            "the {} hit {forbidden} 403s with the chart's RBAC; log lines:\n{}\nfull log:\n{log_text}",
            self.what,
            denied.join("\n")
        );
    }

    /// `VmHWM` (peak RSS) in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("operator /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }

    /// SIGTERM (graceful shutdown, Lease release), then wait.
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the operator did not exit within 20 s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for SpindleProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether a log line reports an authorization failure: "forbidden"
/// anywhere, or a 403 status code (`code: 403`, `"code":403`, `403 Forbidden`),
/// but not the digits 403 inside a timestamp or a hash.
fn mentions_403(line: &str) -> bool {
    let lower = line.to_lowercase();
    if lower.contains("forbidden") {
        return true;
    }
    let bytes = lower.as_bytes();
    lower.match_indices("403").any(|(i, _)| {
        let before = if i == 0 { b' ' } else { bytes[i - 1] };
        let after = bytes.get(i + 3).copied().unwrap_or(b' ');
        let standalone =
            |c: u8| !(c.is_ascii_alphanumeric() || c == b'.' || c == b'-' || c == b'_');
        standalone(before) && standalone(after)
    })
}

#[test]
fn mentions_403_matches_errors_not_timestamps() {
    assert!(mentions_403(
        r#"{"error":"ApiError: secrets is forbidden: User ... (ErrorResponse { code: 403 })"}"#
    ));
    assert!(mentions_403(r#"{"status":403}"#));
    assert!(mentions_403("HTTP 403 from the apiserver"));
    assert!(!mentions_403(
        r#"{"timestamp":"2026-11-25T14:16:44.403003Z","message":"created"}"#
    ));
    assert!(!mentions_403("image sha256:ab403cd and port 14030"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::Read as _;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, buf))
}

/// Parses a Kubernetes memory quantity (`128Mi`, `1Gi`, `500M`) into bytes.
fn quantity_bytes(q: &str) -> u64 {
    let units: [(&str, u64); 6] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, mult) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().expect("quantity number") * mult;
        }
    }
    q.parse().expect("plain byte quantity")
}

/// The chart's RBAC is sufficient: the real operator, run with the chart
/// Deployment's own arguments while impersonating the chart's ServiceAccount,
/// reconciles SpinApps of every feature to convergence without a single 403.
#[test]
fn operator_with_chart_rbac_reconciles_every_feature_without_a_403() {
    spindle_binary();
    let chart = chart_dir();
    let cp = ControlPlane::with_chart(
        "rbac",
        true,
        &install_with_executor(
            chart.to_str().unwrap(),
            &["--set", "operator.resolveImages=false"],
        ),
    );
    // The in-cluster Deployment cannot run (kwok pods run nothing): scale it
    // away so that only the out-of-cluster operator below holds the Lease.
    cp.kubectl(&[
        "scale",
        "deployment/spindle",
        "-n",
        "spindle-system",
        "--replicas=0",
    ]);

    // The chart Deployment's own command line.
    let container = cp.chart_container("spindle");
    let memory_limit = quantity_bytes(
        container["resources"]["limits"]["memory"]
            .as_str()
            .expect("memory limit"),
    );
    let port = free_port();
    let args = overridden_args(
        &container,
        &[("--http-addr=", format!("--http-addr=127.0.0.1:{port}"))],
    );

    let impersonating = cp.impersonating_kubeconfig("spindle");
    let as_sa = |args: &[&str]| run(&kubectl_bin(), args, Some(&impersonating), None);
    let whoami = as_sa(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(
        whoami.stdout.trim(),
        "system:serviceaccount:spindle-system:spindle",
        "{}",
        whoami.stderr
    );
    let denied = as_sa(&["get", "clusterroles"]);
    assert!(
        !denied.ok && denied.stderr.contains("forbidden"),
        "impersonation must not be admin: {}",
        denied.stderr
    );
    assert_can_i(
        "operator",
        as_sa,
        &[
            ("list spinapps.core.spinkube.dev --all-namespaces", "yes"),
            ("watch secrets --all-namespaces", "yes"),
            ("update secrets --all-namespaces", "no"),
            ("create pods --all-namespaces", "no"),
            ("create leases.coordination.k8s.io -n=spindle-system", "yes"),
            ("create leases.coordination.k8s.io -n=apps", "no"),
        ],
    );

    cp.kubectl_stdin(&["apply", "-n", "apps", "-f", "-"], RBAC_FIXTURES);
    let forbidden_before = cp.forbidden_requests();

    let env = literal_env(&container);
    assert!(
        env.iter().any(|(k, _)| k == "SPINDLE_RESOLVE_IMAGES"),
        "{env:?}"
    );
    let operator = SpindleProcess::start(
        "operator",
        args,
        env,
        &impersonating,
        "spindle-rbac-test",
        cp.state.join("operator.log"),
    );
    operator.wait_ready(port);

    // Convergence: every rolled-out app has its Deployment ready and reports it.
    // Fail fast (with the log) on the first 403 instead of timing out later.
    let no_403_yet = || {
        let now = cp.forbidden_requests();
        assert!(
            now == forbidden_before,
            "the apiserver answered {} requests with 403 since the operator started; log:\n{}",
            now - forbidden_before,
            operator.log()
        );
    };
    let converged = |name: &str, replicas: i64| -> Option<()> {
        no_403_yet();
        let out = cp.try_kubectl(&["get", "spinapp", name, "-n", "apps", "-o", "json"]);
        let app: Value = serde_json::from_str(&out.stdout).ok()?;
        (app["status"]["readyReplicas"].as_i64() == Some(replicas)).then_some(())?;
        let d = cp.try_kubectl(&["get", "deployment", name, "-n", "apps", "-o", "json"]);
        let d: Value = serde_json::from_str(&d.stdout).ok()?;
        (d["status"]["readyReplicas"].as_i64() == Some(replicas)).then_some(())?;
        cp.exists(&["service", name, "-n", "apps"]).then_some(())
    };
    // On a timeout: what the app, its Deployment and pods say, and the operator's log.
    let explain = |name: &str, replicas: i64| {
        let get = |args: &[&str]| {
            let out = cp.try_kubectl(args);
            format!("{}{}", out.stdout, out.stderr)
        };
        let status =
            |kind: &str| get(&["get", kind, name, "-n", "apps", "-o", "jsonpath={.status}"]);
        format!(
            "SpinApp {name} to converge with {replicas} ready\n--- app status:\n{}\n--- deployment status:\n{}\n--- pods:\n{}\n--- operator log (last 150 lines):\n{}",
            status("spinapp"),
            status("deployment"),
            get(&["get", "pods", "-n", "apps", "-o", "wide"]),
            operator.log_tail(150),
        )
    };
    for (name, replicas) in ROLLED_OUT {
        wait_until_or(
            Duration::from_secs(180),
            || converged(name, replicas),
            || explain(name, replicas),
        );
    }
    operator.wait_until(
        "the Service of service-only",
        Duration::from_secs(60),
        || {
            cp.exists(&["service", "service-only", "-n", "apps"])
                .then_some(())
        },
    );
    assert!(
        !cp.exists(&["deployment", "service-only", "-n", "apps"]),
        "createDeployment=false: no Deployment"
    );
    // The legacy group: children owned by the legacy object (blockOwnerDeletion
    // needs its finalizers right), status written back to it.
    operator.wait_until(
        "legacy SpinApp legacy-article to converge",
        Duration::from_secs(120),
        || {
            no_403_yet();
            let out = cp.try_kubectl(&[
                "get",
                "spinapps.core.spinoperator.dev",
                "legacy-article",
                "-n",
                "apps",
                "-o",
                "json",
            ]);
            let app: Value = serde_json::from_str(&out.stdout).ok()?;
            (app["status"]["readyReplicas"].as_i64() == Some(1)).then_some(())
        },
    );
    wait_until_or(
        Duration::from_secs(120),
        || converged("guarded-app", 1),
        || explain("guarded-app", 1),
    );
    // The missing executor is reported, and nothing is created for the app.
    operator.wait_until(
        "a Warning event about the missing executor",
        Duration::from_secs(60),
        || {
            let ev = cp.json(&[
                "get",
                "events.events.k8s.io",
                "-n",
                "apps",
                "--field-selector",
                "regarding.name=missing-executor",
            ]);
            ev["items"]
                .as_array()?
                .iter()
                .any(|e| e["type"] == "Warning")
                .then_some(())
        },
    );
    assert!(!cp.exists(&["deployment", "missing-executor", "-n", "apps"]));
    let var_env = cp.json(&["get", "deployment", "variables", "-n", "apps"])["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        var_env.contains("SPIN_VARIABLE_TOKEN") && var_env.contains("app-secrets"),
        "variables from a Secret: {var_env}"
    );

    // The executor finalizer: deletion waits until no app uses the executor.
    cp.kubectl(&[
        "delete",
        "spinappexecutor",
        "guarded",
        "-n",
        "apps",
        "--wait=false",
    ]);
    std::thread::sleep(Duration::from_secs(3));
    let guarded = cp.json(&["get", "spinappexecutor", "guarded", "-n", "apps"]);
    assert!(
        guarded["metadata"]["deletionTimestamp"].is_string(),
        "deletion requested"
    );
    assert!(
        guarded["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty()),
        "held by the finalizer while guarded-app uses it"
    );
    cp.kubectl(&[
        "delete",
        "spinapp",
        "guarded-app",
        "-n",
        "apps",
        "--wait=false",
    ]);
    operator.wait_until(
        "the unused executor to be deleted",
        Duration::from_secs(60),
        || (!cp.exists(&["spinappexecutor", "guarded", "-n", "apps"])).then_some(()),
    );

    // Metrics are served (the ServiceMonitor's target).
    let (code, body) = http_get(port, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200, "{body}");

    // Zero 403s: the apiserver's own counter, the operator's log, the events.
    std::thread::sleep(Duration::from_secs(2));
    operator.assert_no_403s(&cp, forbidden_before);
    let events = cp
        .kubectl(&["get", "events.events.k8s.io", "-A", "-o", "json"])
        .to_lowercase();
    assert!(
        !events.contains("forbidden"),
        "an event mentions forbidden: {events}"
    );

    // Peak memory (debug build, so an upper bound for the release build) fits the chart's limit.
    let peak = operator.peak_rss_kib() * 1024;
    eprintln!(
        "operator peak RSS (debug build, {} apps): {} KiB; chart limit {} KiB",
        ROLLED_OUT.len() + 3,
        peak / 1024,
        memory_limit / 1024
    );
    assert!(
        peak < memory_limit,
        "peak RSS {peak} B exceeds the chart's memory limit {memory_limit} B"
    );

    let status = operator.stop();
    assert!(
        status.success(),
        "the operator exits cleanly on SIGTERM: {status}"
    );
    // Leadership was released on shutdown (so a standby takes over at once).
    let lease = cp.json(&["get", "lease", "spindle-leader", "-n", "spindle-system"]);
    let holder = lease["spec"]["holderIdentity"].as_str().unwrap_or_default();
    assert_ne!(
        holder, "spindle-rbac-test",
        "the Lease is released on shutdown: {lease}"
    );
}

// ---------------------------------------------------------------------------
// Fault tier, scenario 5: the chart's toggles
// ---------------------------------------------------------------------------

/// The documented toggles that change what the operator runs with (flags,
/// environment, RBAC): each alone, and all at once. `{apps}` stands for the
/// variant's app namespace. `runtimeClass.create` and the `serviceAccount`
/// values change neither the operator's flags nor its rules; `rbac.create=false`
/// renders no rules at all (the platform brings them; chart README).
const TOGGLES: [(&str, &[&str]); 6] = [
    ("default", &[]),
    ("no-activator", &["activator.enabled=false"]),
    (
        "no-leader-election",
        &["operator.leaderElection.enabled=false"],
    ),
    ("watch-namespace", &["operator.watchNamespace={apps}"]),
    ("no-legacy-group", &["crds.legacyGroup.enabled=false"]),
    (
        "all-off",
        &[
            "activator.enabled=false",
            "operator.leaderElection.enabled=false",
            "operator.watchNamespace={apps}",
            "crds.legacyGroup.enabled=false",
        ],
    ),
];

/// What each toggle variant reconciles: a plain app, a scale-to-zero app
/// (its watches are the ones that depend on the activator) and a legacy-group
/// app.
const TOGGLE_FIXTURES: &str = r#"
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinAppExecutor
metadata: {name: containerd-shim-spin}
spec: {createDeployment: true, deploymentConfig: {runtimeClassName: wasmtime-spin-v2}}
---
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinApp
metadata: {name: hello}
spec: {image: "ghcr.io/example/hello@sha256:1111111111111111111111111111111111111111111111111111111111111111", executor: containerd-shim-spin, replicas: 1}
---
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinApp
metadata: {name: sleepy}
spec:
  image: "ghcr.io/example/hello@sha256:2222222222222222222222222222222222222222222222222222222222222222"
  executor: containerd-shim-spin
  replicas: 1
  scaleToZero: {enabled: true}
---
apiVersion: core.spinoperator.dev/v1alpha1
kind: SpinApp
metadata: {name: legacy}
spec:
  image: "ghcr.io/example/hello@sha256:3333333333333333333333333333333333333333333333333333333333333333"
  executor: containerd-shim-spin
  replicas: 1
"#;

/// The RBAC kinds (and the ServiceAccount) of a render: what the operator's
/// permissions are made of.
const RBAC_KINDS: [&str; 5] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

/// Fault tier, scenario 5 ("the chart toggles"): under every documented
/// toggle the chart's RBAC covers every watch the operator it configures
/// starts. Each variant is rendered by the real helm into its own release
/// namespace, its ServiceAccount and RBAC objects are applied, and the real
/// operator runs with that Deployment's flags and environment and a
/// TokenRequest token of that ServiceAccount: `/readyz` 200, the apps Ready,
/// zero 403s (the apiserver's counter and the log), finalizers removed on
/// deletion, a clean exit.
///
/// One full control plane for all variants, one variant at a time: a
/// cluster-wide operator reconciles every namespace, so two at once would
/// share apps, and the apiserver's 403 counter could not tell whose request
/// was denied.
#[test]
fn chart_toggles_grant_what_the_operator_watches() {
    spindle_binary();
    let chart = chart_dir();
    let cp = ControlPlane::start("toggles", true);
    // The CRDs and the RuntimeClass as a release installs them, once: they
    // are cluster-scoped and the same in every variant (with the legacy CRD
    // present, `crds.legacyGroup.enabled=false` must still keep the operator
    // away from legacy SpinApps).
    let cluster: Vec<Value> = render_at(
        &chart,
        "toggle",
        "spindle-system",
        &["--set", "runtimeClass.create=true"],
    )
    .into_iter()
    .filter(|o| o["kind"] == "CustomResourceDefinition" || o["kind"] == "RuntimeClass")
    .collect();
    assert_eq!(cluster.len(), 4, "the chart's CRDs and RuntimeClass");
    cp.kubectl_stdin(
        &["apply", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "List", "items": cluster}).to_string(),
    );
    for crd in crd_names() {
        cp.wait_established(&crd);
    }
    for (name, sets) in TOGGLES {
        let started = Instant::now();
        run_toggle(&cp, &chart, name, sets);
        eprintln!("toggle {name}: passed in {:?}", started.elapsed());
    }
}

/// One variant of [`chart_toggles_grant_what_the_operator_watches`].
fn run_toggle(cp: &ControlPlane, chart: &Path, name: &str, sets: &[&str]) {
    let sys = format!("sys-{name}");
    let apps = format!("apps-{name}");
    cp.kubectl(&["create", "namespace", &sys]);
    cp.kubectl(&["create", "namespace", &apps]);
    let sets: Vec<String> = sets.iter().map(|s| s.replace("{apps}", &apps)).collect();
    let mut extra = vec!["--set", "operator.resolveImages=false"];
    for s in &sets {
        extra.extend(["--set", s.as_str()]);
    }
    let objs = render_at(chart, "toggle", &sys, &extra);
    let rbac: Vec<&Value> = objs
        .iter()
        .filter(|o| RBAC_KINDS.iter().any(|k| o["kind"] == *k))
        .collect();
    cp.kubectl_stdin(
        &["apply", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "List", "items": rbac}).to_string(),
    );
    let container = operator_container(&objs);
    let env = literal_env(container);
    let legacy = env
        .iter()
        .any(|(k, v)| k == "SPINDLE_LEGACY_GROUP" && v == "true");
    let sa = one(&objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName")
        .to_string();
    let kubeconfig = cp.token_kubeconfig(&sys, &sa);
    let as_sa = |args: &[&str]| run(&kubectl_bin(), args, Some(&kubeconfig), None);
    let whoami = as_sa(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(
        whoami.stdout.trim(),
        format!("system:serviceaccount:{sys}:{sa}"),
        "{name}: {}",
        whoami.stderr
    );
    // Least privilege still holds: a watched namespace confines the rules.
    let elsewhere = if sets
        .iter()
        .any(|s| s.starts_with("operator.watchNamespace="))
    {
        "no"
    } else {
        "yes"
    };
    assert_can_i(
        name,
        as_sa,
        &[
            (&format!("watch secrets -n={apps}"), "yes"),
            ("watch secrets -n=default", elsewhere),
            ("create pods --all-namespaces", "no"),
        ],
    );

    cp.kubectl_stdin(&["apply", "-n", &apps, "-f", "-"], TOGGLE_FIXTURES);
    let forbidden_before = cp.forbidden_requests();
    let port = free_port();
    let operator = SpindleProcess::start_in(
        "operator",
        overridden_args(
            container,
            &[("--http-addr=", format!("--http-addr=127.0.0.1:{port}"))],
        ),
        env,
        &kubeconfig,
        &sys,
        &format!("toggle-{name}"),
        cp.state.join(format!("operator-{name}.log")),
    );
    operator.wait_ready(port);

    let app = |resource: &str, app: &str| -> Option<Value> {
        let out = cp.try_kubectl(&["get", resource, app, "-n", &apps, "-o", "json"]);
        serde_json::from_str(&out.stdout).ok()
    };
    let ready = |resource: &str, name: &str| -> Option<Value> {
        let a = app(resource, name)?;
        let conditions = a["status"]["conditions"].as_array()?;
        let is_ready = conditions
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        (is_ready && a["status"]["readyReplicas"].as_i64() == Some(1)).then_some(a)
    };
    let explain = |what: &str| {
        let statuses = cp.try_kubectl(&[
            "get",
            "spinapps.core.spinkube.dev,spinapps.core.spinoperator.dev,deployments",
            "-n",
            &apps,
            "-o",
            "jsonpath={range .items[*]}{.kind}/{.metadata.name}: {.status}{\"\\n\"}{end}",
        ]);
        format!(
            "{name} ({sets:?}): {what}\n--- statuses:\n{}{}\n--- operator log (last 100 lines):\n{}",
            statuses.stdout,
            statuses.stderr,
            operator.log_tail(100)
        )
    };
    let no_403_yet = || {
        let now = cp.forbidden_requests();
        assert!(
            now == forbidden_before,
            "{name} ({sets:?}): the apiserver answered {} requests with 403 since the operator started; log:\n{}",
            now - forbidden_before,
            operator.log_tail(100)
        );
    };
    wait_until_or(
        Duration::from_secs(180),
        || {
            no_403_yet();
            ready("spinapps.core.spinkube.dev", "hello")
        },
        || explain("SpinApp hello Ready with 1 ready replica"),
    );
    // Scale to zero is on for this app, but no activator runs here (the
    // test runs none, and `activator.enabled=false` installs none): it keeps
    // serving from its pods and says why it is not scaled down.
    wait_until_or(
        Duration::from_secs(120),
        || {
            no_403_yet();
            ready("spinapps.core.spinkube.dev", "sleepy").filter(|a| {
                let s = &a["status"]["scaleToZero"];
                s["state"] == "Serving" && s["reason"] == "ActivatorUnavailable"
            })
        },
        || explain("SpinApp sleepy Ready, scaleToZero Serving with reason ActivatorUnavailable"),
    );
    if legacy {
        wait_until_or(
            Duration::from_secs(120),
            || {
                no_403_yet();
                ready("spinapps.core.spinoperator.dev", "legacy")
            },
            || explain("legacy SpinApp Ready"),
        );
    } else {
        let l = app("spinapps.core.spinoperator.dev", "legacy").expect("legacy SpinApp");
        assert!(
            l["status"].is_null(),
            "{name}: crds.legacyGroup.enabled=false, yet the legacy SpinApp has a status: {l}"
        );
        assert!(
            !cp.exists(&["deployment", "legacy", "-n", &apps]),
            "{name}: a Deployment for the legacy SpinApp"
        );
    }

    // Deletion goes through the finalizers (patch) without a 403 either.
    cp.kubectl(&[
        "delete",
        "spinapps.core.spinkube.dev,spinappexecutors.core.spinkube.dev",
        "--all",
        "-n",
        &apps,
        "--timeout=60s",
    ]);
    std::thread::sleep(Duration::from_secs(2));
    operator.assert_no_403s(cp, forbidden_before);
    let (code, body) = http_get(port, "/readyz").expect("GET /readyz");
    assert_eq!(code, 200, "{name}: /readyz at the end: {body}");
    let status = operator.stop();
    assert!(status.success(), "{name}: exit on SIGTERM: {status}");
}

// ---------------------------------------------------------------------------
// The scale-to-zero activator
// ---------------------------------------------------------------------------

fn rule_list(o: &Value) -> Vec<(Vec<String>, Vec<String>)> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    o["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| (strings(&r["resources"]), strings(&r["verbs"])))
        .collect()
}

#[test]
fn activator_is_installed_by_default_with_least_privilege_and_wired_to_the_operator() {
    let objs = render(&[]);
    let deployment = one_activator(&objs, "Deployment");
    assert_eq!(deployment["metadata"]["name"], "spindle-activator");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0,
        "a rollout never drops below the wanted activators"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "spindle-activator");
    let c = &pod["containers"][0];
    assert_eq!(
        c["image"],
        operator_container(&objs)["image"],
        "the operator's image"
    );
    let args = strs(&c["args"]);
    assert_eq!(args[0], "activator");
    assert_has_args(
        &args,
        &[
            "--admin-addr=0.0.0.0:9090",
            "--port-range=20000-29999",
            "--max-pending-global=20000",
        ],
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert!(c["resources"]["limits"]["memory"].is_string());

    // The Service the operator reads, selecting exactly the activator pods.
    let service = one_activator(&objs, "Service");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (k, v) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "Service selector {k}");
    }
    assert_eq!(service["spec"]["ports"][0]["port"], 9090);
    let pdb = one_activator(&objs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);

    // The operator is told where the activators are.
    let op_args = args_of(&objs);
    assert_has_args(
        &op_args,
        &[
            "--activator-namespace=spindle-system",
            "--activator-service=spindle-activator",
            "--activator-port-range=20000-29999",
            "--activator-admin-port=9090",
        ],
    );

    // RBAC: the activator reads Services and EndpointSlices and writes
    // Leases in the release namespace only; nothing else.
    let cr = one_activator(&objs, "ClusterRole");
    for (resources, verbs) in rule_list(cr) {
        assert!(
            resources == ["services"] || resources == ["endpointslices"],
            "{resources:?}"
        );
        assert_eq!(verbs, ["get", "list", "watch"], "read-only cluster-wide");
    }
    let roles = find_activator(&objs, "Role");
    let role = |name: &str| {
        *roles
            .iter()
            .find(|r| r["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("Role {name}"))
    };
    let leases = role("spindle-activator");
    assert_eq!(leases["metadata"]["namespace"], "spindle-system");
    assert_eq!(
        rule_list(leases),
        [(
            vec!["leases".to_string()],
            vec!["get".into(), "create".into(), "patch".into()]
        )]
    );
    let bindings: Vec<&Value> = find_activator(&objs, "RoleBinding")
        .into_iter()
        .chain(find_activator(&objs, "ClusterRoleBinding"))
        .collect();
    for b in bindings {
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": "spindle-activator", "namespace": "spindle-system"}]),
            "{}",
            kind_name(b)
        );
    }
    // The operator's side (read the demand Leases and the activator slices)
    // is the operator's own, rendered with or without the activator: the
    // operator watches both either way.
    let operator_side = |objs: &[Value]| -> Vec<(Vec<String>, Vec<String>)> {
        let role = only(
            find(objs, "Role")
                .into_iter()
                .filter(|r| r["metadata"]["name"] == "spindle-scale-to-zero")
                .collect(),
            "Role spindle-scale-to-zero",
        );
        assert_eq!(role["metadata"]["namespace"], "spindle-system");
        let binding = only(
            find(objs, "RoleBinding")
                .into_iter()
                .filter(|r| r["metadata"]["name"] == "spindle-scale-to-zero")
                .collect(),
            "RoleBinding spindle-scale-to-zero",
        );
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "spindle", "namespace": "spindle-system"}])
        );
        rule_list(role)
    };
    let read = || vec!["get".to_string(), "list".into(), "watch".into()];
    let want = vec![
        (vec!["leases".to_string()], read()),
        (vec!["endpointslices".to_string()], read()),
    ];
    assert_eq!(operator_side(&objs), want, "the operator only reads here");
    // The operator writes the activator slices.
    let operator_rules = rule_list(one(&objs, "ClusterRole"));
    assert!(
        operator_rules.iter().any(|(r, v)| r == &["endpointslices"]
            && v.contains(&"patch".to_string())
            && v.contains(&"delete".to_string())),
        "{operator_rules:?}"
    );

    // Off: nothing of the activator, no flags for the operator.
    let off = render(&["--set", "activator.enabled=false"]);
    assert!(
        off.iter().all(|o| !is_activator(o)),
        "activator objects with activator.enabled=false"
    );
    assert!(!args_of(&off).iter().any(|a| a.starts_with("--activator-")));
    assert_eq!(operator_side(&off), want, "activator.enabled=false");
    // One replica: no PDB (it would block every drain).
    let single = render(&["--set", "activator.replicas=1"]);
    assert!(find_activator(&single, "PodDisruptionBudget").is_empty());
}

/// The chart's activator RBAC is sufficient: the real `spindle activator`,
/// run with the chart Deployment's arguments while impersonating its
/// ServiceAccount, syncs its routes from the Services, opens the app's port
/// and writes the demand Lease for a held request, without a single 403.
#[test]
fn activator_with_chart_rbac_holds_a_request_and_signals_demand_without_a_403() {
    spindle_binary();
    let chart = chart_dir();
    // Only the API is needed: no pod runs.
    let cp = ControlPlane::with_chart(
        "activator-rbac",
        false,
        &[
            "install",
            "spindle",
            chart.to_str().unwrap(),
            "-n",
            "spindle-system",
            "--create-namespace",
        ],
    );
    let container = cp.chart_container("spindle-activator");
    let admin = free_port();
    let app_port = 29_950;
    let mut args = overridden_args(
        &container,
        &[
            ("--admin-addr=", format!("--admin-addr=127.0.0.1:{admin}")),
            // A narrow range: other tests may listen on 127.0.0.1 too.
            (
                "--port-range=",
                format!("--port-range={app_port}-{app_port}"),
            ),
        ],
    );
    args.push("--listen-ip=127.0.0.1".to_string());

    let impersonating = cp.impersonating_kubeconfig("spindle-activator");
    assert_can_i(
        "activator",
        |args| run(&kubectl_bin(), args, Some(&impersonating), None),
        &[
            ("watch services --all-namespaces", "yes"),
            (
                "watch endpointslices.discovery.k8s.io --all-namespaces",
                "yes",
            ),
            ("create endpointslices.discovery.k8s.io -n=apps", "no"),
            ("get secrets --all-namespaces", "no"),
            ("list pods --all-namespaces", "no"),
            ("patch leases.coordination.k8s.io -n=spindle-system", "yes"),
            ("create leases.coordination.k8s.io -n=apps", "no"),
        ],
    );
    // The operator's scale-to-zero rights, as its ServiceAccount.
    assert_can_i(
        "operator",
        |args| {
            cp.try_kubectl(&[args, &["--as=system:serviceaccount:spindle-system:spindle"]].concat())
        },
        &[
            ("patch endpointslices.discovery.k8s.io -n=apps", "yes"),
            ("delete endpointslices.discovery.k8s.io -n=apps", "yes"),
            ("patch deployments.apps/scale -n=apps", "yes"),
            ("watch leases.coordination.k8s.io -n=spindle-system", "yes"),
        ],
    );

    // An app Service as the operator writes it for a scale-to-zero app.
    cp.kubectl_stdin(
        &["apply", "-n", "apps", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Service
metadata:
  name: hello
  labels: {{app.kubernetes.io/managed-by: spindle, core.spinkube.dev/app-name: hello}}
  annotations: {{spindle.spinkube.dev/activator-port: "{app_port}", spindle.spinkube.dev/cold-start-timeout: "3000ms"}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8080}}]
  selector: {{core.spinkube.dev/app-name: hello}}
"#
        ),
    );
    let forbidden_before = cp.forbidden_requests();
    let activator = SpindleProcess::start(
        "activator",
        args,
        Vec::new(),
        &impersonating,
        "spindle-activator-test",
        cp.state.join("activator.log"),
    );
    activator.wait_ready(admin);
    // A request for the app: held (no pod), and demand is signalled.
    let mut held = activator.wait_until(
        &format!("the activator listening on {app_port}"),
        Duration::from_secs(30),
        || std::net::TcpStream::connect(("127.0.0.1", app_port)).ok(),
    );
    held.write_all(b"GET / HTTP/1.1\r\nhost: hello\r\nconnection: close\r\n\r\n")
        .unwrap();
    let lease = activator.wait_until("the demand Lease", Duration::from_secs(30), || {
        let out = cp.try_kubectl(&[
            "get",
            "lease",
            "demand.apps.hello",
            "-n",
            "spindle-system",
            "-o",
            "json",
        ]);
        out.ok
            .then(|| serde_json::from_str::<Value>(&out.stdout).ok())
            .flatten()
    });
    assert_eq!(lease["spec"]["holderIdentity"], "spindle-activator-test");
    // The held request ends with 503 + Retry-After after the cold-start timeout.
    held.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut held, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.to_lowercase().contains("retry-after"), "{answer}");

    std::thread::sleep(Duration::from_secs(1));
    activator.assert_no_403s(&cp, forbidden_before);
    let _ = activator.stop();
}
