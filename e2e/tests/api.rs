//! The API against a real kube-apiserver: the CRDs install, every valid
//! manifest under `e2e/testdata/valid/` is accepted and round-trips through
//! the Rust types, every invalid one under `e2e/testdata/invalid/` is rejected
//! with the message its `# expect:` header names, the scale subresource works
//! with `kubectl scale`, and `kubectl explain` shows the field docs.
//!
//! Needs `SPINDLE_TEST_KUBECONFIG` (run `e2e/scripts/test.sh`).

use std::time::Duration;

use serde_json::{Value, json};
use spindle_e2e::{TestNamespace, api_status, kubectl, repo_root};

/// `(file name, contents)` of every `e2e/testdata/<dir>/*.yaml`, sorted.
fn testdata(dir: &str) -> Vec<(String, String)> {
    let dir = repo_root().join("e2e/testdata").join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .expect("utf-8 file name")
                .to_string();
            let text = std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            (name, text)
        })
        .collect();
    files.sort();
    files
}

/// At most `max` characters of `s`, for readable failure lists.
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}… ({} more bytes)", &s[..i], s.len() - i),
        None => s.to_string(),
    }
}

/// The single YAML document of a test file, as JSON.
fn single_doc(file: &str, text: &str) -> Value {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).unwrap_or_else(|e| panic!("{file}: bad YAML: {e}"));
    let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    assert_eq!(docs.len(), 1, "{file}: one object per test file");
    docs.into_iter().next().expect("one doc")
}

/// Every field of `want` is in `have` with the same value (`have` may have
/// more, e.g. server-side defaults). Returns the first difference.
fn subset_diff(want: &Value, have: &Value, path: &str) -> Option<String> {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w.iter().find_map(|(k, wv)| match h.get(k) {
            Some(hv) => subset_diff(wv, hv, &format!("{path}.{k}")),
            None => Some(format!("{path}.{k} is missing (wanted {wv})")),
        }),
        (Value::Array(w), Value::Array(h)) if w.len() == h.len() => w
            .iter()
            .zip(h)
            .enumerate()
            .find_map(|(i, (wv, hv))| subset_diff(wv, hv, &format!("{path}[{i}]"))),
        _ if want == have => None,
        _ => Some(format!("{path}: wanted {want}, got {have}")),
    }
}

mod crds {
    use super::*;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, Patch, PatchParams};

    #[tokio::test]
    async fn crds_install_and_become_established() {
        let ns = TestNamespace::new().await; // applies crds/*.yaml and waits
        let api: Api<CustomResourceDefinition> = Api::all(ns.client.clone());
        let files = spindle_e2e::crd_files().expect("crds/");
        assert_eq!(
            files.len(),
            spindle::api::crds().len(),
            "one file per CRD in crds/"
        );
        for path in files {
            let text = std::fs::read_to_string(&path).expect("read CRD");
            let local: CustomResourceDefinition = serde_saphyr::from_str(&text).expect("parse CRD");
            let name = local.metadata.name.clone().expect("name");
            let stored = api.get(&name).await.expect("CRD on the server");
            let conditions = stored
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            for wanted in ["Established", "NamesAccepted"] {
                assert!(
                    conditions
                        .iter()
                        .any(|c| c.type_ == wanted && c.status == "True"),
                    "{name}: {wanted} is not True: {conditions:?}"
                );
            }
            // The server kept everything we sent (schemas, CEL rules, subresources).
            let want = serde_json::to_value(&local.spec).expect("json");
            let have = serde_json::to_value(&stored.spec).expect("json");
            if let Some(diff) = subset_diff(&want, &have, "spec") {
                panic!("{name}: the apiserver changed the CRD: {diff}");
            }
            // Re-applying the same content is a no-op (idempotent across test processes).
            let again = api
                .patch(
                    &name,
                    &PatchParams::apply(spindle_e2e::FIELD_MANAGER).force(),
                    &Patch::Apply(&local),
                )
                .await
                .expect("re-apply CRD");
            assert_eq!(
                again.metadata.resource_version, stored.metadata.resource_version,
                "{name}: re-apply changed it"
            );
        }
        let spinapps = api
            .get("spinapps.core.spinkube.dev")
            .await
            .expect("spinapps CRD");
        let sub = spinapps.spec.versions[0]
            .subresources
            .as_ref()
            .expect("subresources");
        assert!(sub.status.is_some(), "status subresource");
        let scale = sub.scale.as_ref().expect("scale subresource");
        assert_eq!(scale.spec_replicas_path, ".spec.replicas");
        assert_eq!(
            scale.label_selector_path.as_deref(),
            Some(".status.selector")
        );
        ns.cleanup().await;
    }
}

mod valid {
    use super::*;
    use spindle::api::compat::LegacySpinApp;
    use spindle::api::{SpinApp, SpinAppExecutor};

    #[tokio::test]
    async fn valid_manifests_are_accepted_and_round_trip() {
        let files = testdata("valid");
        assert!(
            files.len() >= 15,
            "want at least 15 valid manifests, have {}",
            files.len()
        );
        let ns = TestNamespace::new().await;
        let mut failures = Vec::new();
        for (file, text) in &files {
            if let Err(e) = check(&ns, file, text).await {
                failures.push(format!("{file}: {}", clip(&format!("{e:#}"), 1500)));
            }
        }
        ns.cleanup().await;
        assert!(
            failures.is_empty(),
            "{} of {} valid manifests failed:\n{}",
            failures.len(),
            files.len(),
            failures.join("\n")
        );
    }

    async fn check(ns: &TestNamespace, file: &str, text: &str) -> anyhow::Result<()> {
        let original = single_doc(file, text);
        let kind = original["kind"].as_str().unwrap_or_default().to_string();
        let name = original["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let want_spec = &original["spec"];

        let stored = ns.apply_yaml(text).await?;
        let stored_spec = &stored[0].data["spec"];
        // The apiserver kept every field (nothing pruned or rewritten); it may add defaults.
        if let Some(diff) = subset_diff(want_spec, stored_spec, "spec") {
            anyhow::bail!("the apiserver did not keep the spec: {diff}");
        }
        // Read back through the Rust types and serialize again: nothing lost, nothing added.
        let api_version = original["apiVersion"].as_str().unwrap_or_default();
        let typed_spec = match (api_version, kind.as_str()) {
            ("core.spinkube.dev/v1alpha1", "SpinApp") => {
                serde_json::to_value(ns.api::<SpinApp>().get(&name).await?.spec)?
            }
            ("core.spinkube.dev/v1alpha1", "SpinAppExecutor") => {
                serde_json::to_value(ns.api::<SpinAppExecutor>().get(&name).await?.spec)?
            }
            ("core.spinoperator.dev/v1alpha1", "SpinApp") => {
                serde_json::to_value(ns.api::<LegacySpinApp>().get(&name).await?.spec)?
            }
            (v, k) => anyhow::bail!("unexpected kind {v} {k}"),
        };
        if typed_spec != *stored_spec {
            let diff = subset_diff(stored_spec, &typed_spec, "spec")
                .or_else(|| {
                    subset_diff(&typed_spec, stored_spec, "spec")
                        .map(|d| format!("added by the Rust types: {d}"))
                })
                .unwrap_or_default();
            anyhow::bail!(
                "the spec does not round-trip through the Rust types: {diff}\nserver: {stored_spec}\nrust:   {typed_spec}"
            );
        }
        Ok(())
    }
}

mod invalid {
    use super::*;

    /// The `# expect: <fragment>` lines of a test file.
    fn expectations(text: &str) -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# expect:"))
            .map(|f| f.trim().to_string())
            .filter(|f| !f.is_empty())
            .collect()
    }

    /// The HTTP status the apiserver answers with: 422 (Invalid) unless a
    /// `# expect-code: <code>` header says otherwise.
    fn expected_code(text: &str) -> u16 {
        text.lines()
            .find_map(|l| l.strip_prefix("# expect-code:"))
            .map(|c| c.trim().parse().expect("# expect-code: <number>"))
            .unwrap_or(422)
    }

    #[tokio::test]
    async fn invalid_manifests_are_rejected_with_their_message() {
        let files = testdata("invalid");
        assert!(
            files.len() >= 15,
            "want at least 15 invalid manifests, have {}",
            files.len()
        );
        let ns = TestNamespace::new().await;
        let mut failures = Vec::new();
        for (file, text) in &files {
            let expects = expectations(text);
            assert!(
                !expects.is_empty(),
                "{file}: needs a `# expect: <message fragment>` header"
            );
            single_doc(file, text);
            match ns.apply_yaml(text).await {
                Ok(_) => failures.push(format!(
                    "{file}: accepted, but should be rejected with {expects:?}"
                )),
                Err(e) => match api_status(&e) {
                    None => failures.push(format!(
                        "{file}: failed before reaching the apiserver: {}",
                        clip(&format!("{e:#}"), 1500)
                    )),
                    Some(status) if status.code != expected_code(text) => failures.push(format!(
                        "{file}: HTTP {} instead of {}: {}",
                        status.code,
                        expected_code(text),
                        clip(&status.message, 1500)
                    )),
                    Some(status) => {
                        for want in &expects {
                            if !status.message.contains(want.as_str()) {
                                failures.push(format!(
                                    "{file}: message lacks {want:?}: {}",
                                    clip(&status.message, 1500)
                                ));
                            }
                        }
                    }
                },
            }
        }
        ns.cleanup().await;
        assert!(
            failures.is_empty(),
            "{} of {} invalid manifests failed:\n{}",
            failures.len(),
            files.len(),
            failures.join("\n")
        );
    }

    /// Every CEL rule in the CRDs has an invalid manifest that triggers it
    /// (matched by message), so a new rule cannot land untested. No cluster needed.
    #[test]
    fn every_cel_rule_has_an_invalid_manifest() {
        fn messages(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::Array(rules)) = m.get("x-kubernetes-validations") {
                        for r in rules {
                            out.push(
                                r["message"]
                                    .as_str()
                                    .unwrap_or_else(|| panic!("CEL rule without a message: {r}"))
                                    .to_string(),
                            );
                        }
                    }
                    m.values().for_each(|v| messages(v, out));
                }
                Value::Array(a) => a.iter().for_each(|v| messages(v, out)),
                _ => {}
            }
        }
        let mut rules = Vec::new();
        for crd in spindle::api::crds() {
            messages(&serde_json::to_value(&crd).expect("json"), &mut rules);
        }
        rules.sort();
        rules.dedup();
        assert!(rules.len() >= 20, "found only {} CEL messages", rules.len());
        let expects: Vec<String> = testdata("invalid")
            .iter()
            .flat_map(|(_, t)| expectations(t))
            .collect();
        for e in &expects {
            assert!(
                e.len() >= 15,
                "expectation {e:?} is too vague to identify one rule"
            );
        }
        let untested: Vec<&String> = rules
            .iter()
            .filter(|m| !expects.iter().any(|e| m.contains(e.as_str())))
            .collect();
        assert!(
            untested.is_empty(),
            "CEL rules without an invalid manifest in e2e/testdata/invalid/: {untested:#?}"
        );
    }
}

mod scale {
    use super::*;
    use kube::api::{Patch, PatchParams};
    use spindle::api::SpinApp;

    const APP: &str = "apiVersion: core.spinkube.dev/v1alpha1
kind: SpinApp
metadata:
  name: scaled
spec:
  image: ghcr.io/example/app:v1
  executor: containerd-shim-spin
  replicas: 1
";

    #[tokio::test]
    async fn kubectl_scale_sets_spec_replicas_and_scale_reports_selector() {
        let ns = TestNamespace::new().await;
        ns.apply_yaml(APP).await.expect("apply SpinApp");
        let api = ns.api::<SpinApp>();

        ns.kubectl(&["scale", "spinapp/scaled", "--replicas=3"])
            .await
            .expect("kubectl scale");
        assert_eq!(api.get("scaled").await.expect("get").spec.replicas, Some(3));

        // Before the operator reports status there is no selector yet.
        let scale = api.get_scale("scaled").await.expect("get /scale");
        assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(3));
        assert_eq!(
            scale
                .status
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default(),
            ""
        );

        // Report status through the status subresource, as the operator does.
        let selector = "core.spinkube.dev/app.scaled.status=ready";
        let status = json!({
            "apiVersion": "core.spinkube.dev/v1alpha1",
            "kind": "SpinApp",
            "status": {"readyReplicas": 2, "replicas": 3, "selector": selector}
        });
        api.patch_status(
            "scaled",
            &PatchParams::apply(spindle_e2e::FIELD_MANAGER).force(),
            &Patch::Apply(&status),
        )
        .await
        .expect("patch status");

        let out = ns
            .kubectl(&["get", "--subresource=scale", "spinapp/scaled", "-o", "json"])
            .await
            .expect("kubectl get scale");
        let scale: Value = serde_json::from_str(&out).expect("scale JSON");
        assert_eq!(scale["kind"], "Scale", "{scale}");
        assert_eq!(scale["spec"]["replicas"], 3, "{scale}");
        assert_eq!(
            scale["status"]["replicas"], 2,
            "status.replicas is .status.readyReplicas: {scale}"
        );
        assert_eq!(scale["status"]["selector"], selector, "{scale}");

        // An app whose replicas the autoscaler owns cannot be scaled by hand.
        ns.apply_yaml(
            &APP.replace("name: scaled", "name: autoscaled")
                .replace("replicas: 1", "enableAutoscaling: true"),
        )
        .await
        .expect("apply autoscaled SpinApp");
        let err = ns
            .kubectl(&["scale", "spinapp/autoscaled", "--replicas=2"])
            .await
            .expect_err("scale should be refused");
        assert!(
            format!("{err:#}").contains("replicas must not be set when enableAutoscaling is true"),
            "{err:#}"
        );
        assert_eq!(
            api.get("autoscaled").await.expect("get").spec.replicas,
            None
        );

        // Scale to zero is allowed (spin-operator's webhook forbids replicas: 0).
        ns.kubectl(&["scale", "spinapp/scaled", "--replicas=0"])
            .await
            .expect("kubectl scale to 0");
        assert_eq!(api.get("scaled").await.expect("get").spec.replicas, Some(0));
        // A stale precondition is refused and changes nothing.
        let err = ns
            .kubectl(&[
                "scale",
                "spinapp/scaled",
                "--current-replicas=5",
                "--replicas=4",
            ])
            .await
            .expect_err("precondition should fail");
        assert!(
            format!("{err:#}").contains("Expected replicas to be 5"),
            "{err:#}"
        );
        assert_eq!(api.get("scaled").await.expect("get").spec.replicas, Some(0));
        ns.cleanup().await;
    }
}

mod explain {
    use super::*;

    /// `kubectl explain` reads the published OpenAPI, which lags a freshly
    /// installed CRD by a moment: retry until it shows what we want.
    async fn explain(field: &str, wanted: &[&str]) -> String {
        let start = std::time::Instant::now();
        loop {
            let last = match kubectl(&["explain", field]).await {
                Ok(out) if wanted.iter().all(|w| out.contains(w)) => return out,
                Ok(out) => out,
                Err(e) => format!("{e:#}"),
            };
            if start.elapsed() > Duration::from_secs(60) {
                panic!(
                    "kubectl explain {field} did not show {wanted:?} within 60s; last output:\n{last}"
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    #[tokio::test]
    async fn kubectl_explain_shows_field_descriptions() {
        let ns = TestNamespace::new().await; // CRDs installed
        let out = explain(
            "spinapp.spec.runtimeConfig",
            &[
                "GROUP:      core.spinkube.dev",
                "Spin runtime configuration",
                "keyValueStores",
                "Key-value stores, by name",
                "loadFromSecret",
                "runtime-config.toml",
                "sqliteDatabases",
                "llmCompute",
            ],
        )
        .await;
        assert!(out.contains("FIELD: runtimeConfig"), "{out}");
        explain(
            "spinappexecutor.spec.deploymentConfig.otel",
            &["exporter_otlp_endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT"],
        )
        .await;
        explain("sapp.spec.port", &["Service's targetPort", "<integer>"]).await;
        ns.cleanup().await;
    }
}
