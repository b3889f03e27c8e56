//! Image resolution and `spindle push` against REAL registries (CNCF
//! distribution 2.8, Debian package `docker-registry`) on 127.0.0.1: one
//! anonymous, one with htpasswd basic auth. Each test starts its own
//! registry processes on free ports with a generated config, and kills them
//! (by their own PID) when done. No kube cluster is needed, except by
//! [`controller_pins_images_and_rejects_non_spin_apps`] (the controller,
//! in process, with a resolver; needs `SPINDLE_TEST_KUBECONFIG` like the
//! other cluster tests).
//!
//! Install: `apt-get install -y docker-registry apache2-utils`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use spindle::oci::format::{self, Platform};
use spindle::oci::push::{self, Artifact, Blob};
use spindle::oci::{
    Credentials, ImageFormat, ImageRef, Keyring, PlainHttp, Resolver, ResolverConfig,
};

const USER: &str = "spindle";
const PASSWORD: &str = "s3cret-registry-password";

// ---------------------------------------------------------------------------
// Registry harness

/// A `docker-registry` process we started. Dropping it kills that PID.
struct Registry {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    auth: bool,
}

fn registry_binary() -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/bin", "/usr/local/bin"])
    {
        let p = Path::new(dir).join("docker-registry");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "the `docker-registry` binary (CNCF distribution 2.8) is not installed; these tests need a real registry.\n\
         Install it with: apt-get update && apt-get install -y docker-registry apache2-utils"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl Registry {
    async fn start(auth: bool) -> Registry {
        let dir = std::env::temp_dir().join(format!(
            "spindle-oci-registry-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let mut reg = Registry {
            child: None,
            port: free_port(),
            dir,
            auth,
        };
        reg.write_config();
        reg.spawn().await;
        reg
    }

    fn write_config(&self) {
        let mut auth = String::new();
        if self.auth {
            // distribution accepts bcrypt entries only: `htpasswd -B`.
            let out = Command::new("htpasswd")
                .args(["-Bbn", USER, PASSWORD])
                .output()
                .expect("htpasswd (apache2-utils) is needed: apt-get install -y apache2-utils");
            assert!(out.status.success(), "htpasswd failed");
            std::fs::write(self.dir.join("htpasswd"), out.stdout).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: spindle-test\n    path: {}\n",
                self.dir.join("htpasswd").display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{}\n{auth}",
            self.dir.join("data").display(),
            self.port
        );
        std::fs::write(self.dir.join("config.yml"), config).unwrap();
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("registry.log"))
            .unwrap();
        let child = Command::new(registry_binary())
            .arg("serve")
            .arg(self.dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                break;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("docker-registry exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "registry did not listen on {}: {}",
                self.port,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kill our registry process (by its PID) and wait for it.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port with the same storage.
    async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn image(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.host())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// HTTP requests the registry served so far, from its access log.
    fn requests(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| {
                [
                    "\"GET /v2/",
                    "\"HEAD /v2/",
                    "\"PUT /v2/",
                    "\"POST /v2/",
                    "\"PATCH /v2/",
                ]
                .iter()
                .any(|m| l.contains(m))
            })
            .count()
    }

    fn credentials(&self) -> Credentials {
        if self.auth {
            Credentials::basic(USER, PASSWORD)
        } else {
            Credentials::Anonymous
        }
    }

    async fn push(&self, repo_tag: &str, artifact: &Artifact) -> String {
        let r = ImageRef::parse(&self.image(repo_tag)).unwrap();
        push::push(&r, artifact, &self.credentials(), PlainHttp::LoopbackOnly)
            .await
            .unwrap_or_else(|e| panic!("push {repo_tag}: {e}"))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------
// Fixtures

/// A minimal valid Wasm component.
fn component_wasm() -> Vec<u8> {
    wat::parse_str("(component (core module (func (export \"run\"))))").unwrap()
}

/// A Spin app directory: spin.toml, a component, a small and a large file.
fn spin_app_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("spindle-oci-app-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("static")).unwrap();
    std::fs::write(dir.join("app.wasm"), component_wasm()).unwrap();
    std::fs::write(dir.join("static/index.html"), "<h1>hello</h1>").unwrap();
    std::fs::write(dir.join("static/big.txt"), "x".repeat(4096)).unwrap();
    std::fs::write(
        dir.join("spin.toml"),
        format!(
            r#"spin_manifest_version = 2

[application]
name = "{name}"
version = "1.0.0"

[variables]
greeting = {{ default = "hello" }}

[[trigger.http]]
route = "/..."
component = "web"

[component.web]
source = "app.wasm"
files = ["static"]
allowed_outbound_hosts = []
[component.web.variables]
greeting = "{{{{ greeting }}}}"
"#
        ),
    )
    .unwrap();
    dir
}

fn spin_artifact(name: &str) -> Artifact {
    let dir = spin_app_dir(name);
    let app = push::load_app(&dir).unwrap();
    assert!(app.warnings.is_empty(), "{:?}", app.warnings);
    let a = push::spin_artifact(&app, Some("2026-01-01T00:00:00Z"));
    let _ = std::fs::remove_dir_all(dir);
    a
}

fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&b.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

/// A plain image: OCI config with `os`/`architecture`, one tar+gzip layer.
fn plain_image(os: &str, arch: &str, files: &[(&str, &[u8])]) -> Artifact {
    let layer = Blob::new(format::OCI_LAYER_TAR_GZIP, tar_gz(files));
    let config = serde_json::json!({
        "os": os,
        "architecture": arch,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    let config = Blob::new(
        format::OCI_IMAGE_CONFIG,
        serde_json::to_vec(&config).unwrap(),
    );
    Artifact::image(config, vec![layer], BTreeMap::new())
}

fn resolver() -> Resolver {
    Resolver::new(ResolverConfig {
        error_ttl: Duration::ZERO,
        ..Default::default()
    })
}

fn secret(name: &str, type_: &str, key: &str, data: String) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        type_: Some(type_.into()),
        data: Some([(key.to_string(), ByteString(data.into_bytes()))].into()),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn every_format_resolves_to_the_pushed_digest() {
    let reg = Registry::start(false).await;
    let res = resolver();
    let none = Keyring::new();

    // 1. spin registry push format, built by `spindle push`'s code.
    let spin = spin_artifact("hello");
    let spin_digest = reg.push("apps/hello:v1", &spin).await;
    assert_eq!(spin_digest, spin.digest());
    let r = res
        .resolve(&reg.image("apps/hello:v1"), &none, None)
        .await
        .unwrap();
    assert_eq!(r.format, ImageFormat::SpinRegistryPush);
    assert_eq!(r.digest, spin_digest);
    assert_eq!(
        r.image,
        format!("{}:v1@{spin_digest}", reg.image("apps/hello"))
    );
    assert_eq!(r.index_digest, None);

    // The locked app layer in the registry references the wasm layer by digest.
    let manifest: format::ImageManifest = serde_json::from_slice(&spin.manifest).unwrap();
    let wasm_layer = manifest
        .layers
        .iter()
        .find(|l| l.media_type == format::WASM_LAYER)
        .unwrap();
    assert_eq!(wasm_layer.digest, push::sha256_digest(&component_wasm()));
    let locked = spin
        .blobs
        .iter()
        .find(|b| b.media_type == format::SPIN_LOCKED_APP)
        .unwrap();
    let locked: serde_json::Value = serde_json::from_slice(&locked.data).unwrap();
    assert_eq!(
        locked["components"][0]["source"]["digest"],
        wasm_layer.digest
    );
    assert!(
        manifest
            .layers
            .iter()
            .any(|l| l.media_type == format::DATA_LAYER),
        "the 4 KiB file is a data layer"
    );

    // A digest reference resolves to itself, without a tag.
    let by_digest = reg.image(&format!("apps/hello@{spin_digest}"));
    let r = res.resolve(&by_digest, &none, None).await.unwrap();
    assert_eq!(r.image, by_digest);
    assert_eq!(r.format, ImageFormat::SpinRegistryPush);

    // 2. A single application/wasm component (wkg oci push format).
    let comp = push::component_artifact(component_wasm(), None);
    let comp_digest = reg.push("components/hello:1.0.0", &comp).await;
    let r = res
        .resolve(&reg.image("components/hello:1.0.0"), &none, None)
        .await
        .unwrap();
    assert_eq!(
        (r.format, r.digest.as_str()),
        (ImageFormat::WasmComponent, comp_digest.as_str())
    );

    // 3. A plain wasi/wasm image holding /spin.toml.
    let wasm = component_wasm();
    let image = plain_image(
        "wasip1",
        "wasm",
        &[
            ("spin.toml", b"spin_manifest_version = 2\n"),
            ("app.wasm", &wasm),
        ],
    );
    let image_digest = reg.push("images/hello:v1", &image).await;
    let r = res
        .resolve(&reg.image("images/hello:v1"), &none, None)
        .await
        .unwrap();
    assert_eq!(
        (r.format, r.digest.as_str()),
        (ImageFormat::SpinImage, image_digest.as_str())
    );

    // A WASI image without /spin.toml is rejected, saying what was read.
    let no_toml = plain_image("wasi", "wasm", &[("app.wasm", &wasm)]);
    reg.push("images/no-toml:v1", &no_toml).await;
    let e = res
        .resolve(&reg.image("images/no-toml:v1"), &none, None)
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "NotASpinApp", "{e}");
    assert!(
        e.to_string().contains("/spin.toml") && e.to_string().contains("1 of 1 layers read"),
        "{e}"
    );

    // 4. A Linux container image: NotASpinApp naming media types and platform.
    let linux = plain_image("linux", "amd64", &[("bin/sh", b"#!ELF")]);
    let linux_digest = reg.push("images/linux:v1", &linux).await;
    let e = res
        .resolve(&reg.image("images/linux:v1"), &none, None)
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "NotASpinApp");
    assert!(!e.is_transient());
    let msg = e.to_string();
    assert!(msg.contains(format::OCI_LAYER_TAR_GZIP), "{msg}");
    assert!(msg.contains(format::OCI_IMAGE_CONFIG), "{msg}");
    assert!(msg.contains("linux/amd64"), "{msg}");

    // 5. An image index with a linux entry and a wasm entry → the wasm entry.
    let platform = |os: &str, arch: &str| {
        Some(Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: None,
        })
    };
    // Index entries must live in the index's repository.
    reg.push("apps/hello:linux", &linux).await;
    let index = Artifact::index(vec![
        linux.descriptor(platform("linux", "amd64")),
        spin.descriptor(platform("wasip1", "wasm")),
    ]);
    let index_digest = reg.push("apps/hello:multi", &index).await;
    let r = res
        .resolve(&reg.image("apps/hello:multi"), &none, None)
        .await
        .unwrap();
    assert_eq!(r.format, ImageFormat::SpinRegistryPush);
    assert_eq!(r.digest, spin_digest, "pinned to the wasm platform entry");
    assert_eq!(r.index_digest.as_deref(), Some(index_digest.as_str()));
    assert_eq!(
        r.image,
        format!("{}:multi@{spin_digest}", reg.image("apps/hello"))
    );

    // An index without a WASI entry is not a Spin app; the message lists the platforms.
    let linux_only = Artifact::index(vec![linux.descriptor(platform("linux", "amd64"))]);
    reg.push("images/linux:multi", &linux_only).await;
    let e = res
        .resolve(&reg.image("images/linux:multi"), &none, None)
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "NotASpinApp");
    assert!(
        e.to_string().contains("linux/amd64") && e.to_string().contains(format::OCI_MANIFEST),
        "{e}"
    );
    assert_ne!(linux_digest, spin_digest);

    // 6. Unknown tag / repository / digest → NotFound.
    for missing in [
        reg.image("apps/hello:nope"),
        reg.image("apps/unknown:v1"),
        reg.image(&format!("apps/hello@sha256:{}", "1".repeat(64))),
    ] {
        let e = res.resolve(&missing, &none, None).await.unwrap_err();
        assert_eq!(e.reason(), "NotFound", "{missing}: {e}");
        assert!(!e.is_transient());
    }
}

#[tokio::test]
async fn private_registry_needs_matching_pull_secrets() {
    let reg = Registry::start(true).await;
    let spin = spin_artifact("private");
    let digest = reg.push("team/private:v1", &spin).await;
    let image = reg.image("team/private:v1");
    let res = resolver();

    // Pushing without credentials is refused too.
    let anon = push::push(
        &ImageRef::parse(&image).unwrap(),
        &spin,
        &Credentials::Anonymous,
        PlainHttp::LoopbackOnly,
    )
    .await;
    assert_eq!(anon.unwrap_err().reason(), "Unauthorized");

    // No credentials → Unauthorized (not transient), and no secret in the message.
    let e = res
        .resolve(&image, &Keyring::new(), None)
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "Unauthorized", "{e}");
    assert!(!e.is_transient());

    // dockerconfigjson with `auth` (base64 user:password), keyed with a scheme.
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let json = secret(
        "regcred",
        "kubernetes.io/dockerconfigjson",
        ".dockerconfigjson",
        format!(
            r#"{{"auths": {{"http://{}": {{"auth": "{auth}"}}}}}}"#,
            reg.host()
        ),
    );
    let (keyring, problems) = Keyring::from_secrets([&json]);
    assert!(problems.is_empty(), "{problems:?}");
    let r = res.resolve(&image, &keyring, None).await.unwrap();
    assert_eq!(
        (r.digest.as_str(), r.format),
        (digest.as_str(), ImageFormat::SpinRegistryPush)
    );

    // Legacy dockercfg with username/password, keyed by host/path prefix.
    let cfg = secret(
        "legacy",
        "kubernetes.io/dockercfg",
        ".dockercfg",
        format!(
            r#"{{"{}/team": {{"username": "{USER}", "password": "{PASSWORD}"}}}}"#,
            reg.host()
        ),
    );
    let (keyring, problems) = Keyring::from_secrets([&cfg]);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        res.resolve(&image, &keyring, None).await.unwrap().digest,
        digest
    );

    // Credentials for another port do not match → anonymous → Unauthorized.
    let other = secret(
        "other",
        "kubernetes.io/dockerconfigjson",
        ".dockerconfigjson",
        format!(r#"{{"auths": {{"127.0.0.1:1": {{"auth": "{auth}"}}}}}}"#),
    );
    let (keyring, _) = Keyring::from_secrets([&other]);
    assert_eq!(
        res.resolve(&image, &keyring, None)
            .await
            .unwrap_err()
            .reason(),
        "Unauthorized"
    );

    // A wrong password → Unauthorized, and the message never contains it.
    let wrong = secret(
        "wrong",
        "kubernetes.io/dockerconfigjson",
        ".dockerconfigjson",
        format!(
            r#"{{"auths": {{"{}": {{"username": "{USER}", "password": "wrong-pass-123"}}}}}}"#,
            reg.host()
        ),
    );
    let (keyring, _) = Keyring::from_secrets([&wrong]);
    let e = res.resolve(&image, &keyring, None).await.unwrap_err();
    assert_eq!(e.reason(), "Unauthorized");
    let shown = format!("{e} {e:?} {keyring:?}");
    assert!(
        !shown.contains("wrong-pass-123") && !shown.contains(PASSWORD),
        "{shown}"
    );

    // Two matching secrets, the more specific one wrong: the next one is tried.
    let (keyring, _) = Keyring::from_secrets([
        &json,
        &secret(
            "specific-but-wrong",
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            format!(
                r#"{{"auths": {{"{}/team/private": {{"username": "{USER}", "password": "nope"}}}}}}"#,
                reg.host()
            ),
        ),
    ]);
    assert_eq!(keyring.lookup(&ImageRef::parse(&image).unwrap()).len(), 2);
    assert_eq!(
        res.resolve(&image, &keyring, None).await.unwrap().digest,
        digest
    );
}

#[tokio::test]
async fn registry_outage_is_transient_and_recovers() {
    let mut reg = Registry::start(false).await;
    let comp = push::component_artifact(component_wasm(), None);
    let digest = reg.push("outage/app:v1", &comp).await;
    let image = reg.image("outage/app:v1");
    let res = resolver();
    let none = Keyring::new();
    assert_eq!(
        res.resolve(&image, &none, None).await.unwrap().digest,
        digest
    );

    reg.stop();
    // max_age 0: do not answer from the cache, ask the registry.
    let e = res
        .resolve(&image, &none, Some(Duration::ZERO))
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "RegistryUnavailable", "{e}");
    assert!(e.is_transient());
    assert!(e.to_string().contains(&reg.host()), "{e}");

    // A digest reference already resolved needs no registry at all.
    let pinned = reg.image(&format!("outage/app@{digest}"));
    // (not yet resolved by digest: that needs the registry)
    assert_eq!(
        res.resolve(&pinned, &none, None)
            .await
            .unwrap_err()
            .reason(),
        "RegistryUnavailable"
    );

    reg.restart().await;
    let r = res
        .resolve(&image, &none, Some(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(r.digest, digest);
    assert_eq!(
        res.resolve(&pinned, &none, None).await.unwrap().digest,
        digest
    );
    reg.stop();
    // Now cached forever: no registry needed.
    assert_eq!(
        res.resolve(&pinned, &none, None).await.unwrap().digest,
        digest
    );
}

#[tokio::test]
async fn concurrent_resolves_share_registry_round_trips() {
    let reg = Registry::start(false).await;
    let spin = spin_artifact("cached");
    let digest = reg.push("cache/app:v1", &spin).await;
    let image = reg.image("cache/app:v1");
    let res = Arc::new(Resolver::default());
    let keyring = Arc::new(Keyring::new());

    // Let the access log settle, then count.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = reg.requests();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (res, keyring, image) = (res.clone(), keyring.clone(), image.clone());
            tokio::spawn(async move { res.resolve(&image, &keyring, None).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().digest, digest);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first_batch = reg.requests() - before;
    println!("registry HTTP requests for 100 concurrent resolves of one tag: {first_batch}");
    assert!(first_batch >= 1, "the registry must have been asked");
    assert!(
        first_batch <= 4,
        "100 concurrent resolves made {first_batch} registry requests"
    );
    assert_eq!(res.stats().fetches, 1, "{:?}", res.stats());
    assert_eq!(res.stats().hits, 99);

    // Within the TTL: answered from the cache, zero requests.
    let before = reg.requests();
    let again =
        futures::future::join_all((0..100).map(|_| res.resolve(&image, &keyring, None))).await;
    assert!(
        again
            .iter()
            .all(|r| r.as_ref().is_ok_and(|r| r.digest == digest))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second_batch = reg.requests() - before;
    println!("registry HTTP requests for 100 more resolves within the TTL: {second_batch}");
    assert_eq!(second_batch, 0);

    // Different credentials are a different cache key (one more round trip).
    let mut other = Keyring::new();
    other.add(&reg.host(), Credentials::basic("someone", "x"));
    res.resolve(&image, &other, None).await.unwrap();
    assert_eq!(res.stats().fetches, 2);
}

// ---------------------------------------------------------------------------
// The controller with a resolver (needs the test cluster)

/// The SpinApp controller, in process, with image resolution on: the
/// Deployment runs the digest-pinned image and the status reports it; a
/// Linux image gives `ImageResolved=False` (NotASpinApp) and no Deployment.
#[tokio::test]
async fn controller_pins_images_and_rejects_non_spin_apps() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::node::v1::RuntimeClass;
    use kube::Api;
    use spindle::api::SpinApp;
    use spindle_e2e::{TestNamespace, wait_for};

    const TIMEOUT: Duration = Duration::from_secs(60);
    let reg = Registry::start(false).await;
    let component = push::component_artifact(component_wasm(), None);
    let digest = reg.push("apps/one:v1", &component).await;
    let linux = plain_image("linux", "amd64", &[("bin/sh", b"#!ELF")]);
    reg.push("images/linux:v1", &linux).await;

    let ns = TestNamespace::new().await;
    let rcs: Api<RuntimeClass> = Api::all(ns.client.clone());
    if rcs.get_opt("wasmtime-spin-v2").await.unwrap().is_none() {
        let rc: RuntimeClass = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "wasmtime-spin-v2"}, "handler": "spin"}),
        )
        .unwrap();
        match rcs.create(&Default::default(), &rc).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("creating the RuntimeClass: {e}"),
        }
    }
    ns.apply_yaml(&format!(
        r#"
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinAppExecutor
metadata: {{name: containerd-shim-spin}}
spec:
  createDeployment: true
  deploymentConfig: {{runtimeClassName: wasmtime-spin-v2}}
---
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinApp
metadata: {{name: good}}
spec: {{image: "{good}", executor: containerd-shim-spin, replicas: 1}}
---
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinApp
metadata: {{name: linux}}
spec: {{image: "{linux}", executor: containerd-shim-spin, replicas: 1}}
"#,
        good = reg.image("apps/one:v1"),
        linux = reg.image("images/linux:v1"),
    ))
    .await
    .expect("applying the fixtures");

    let readiness = spindle::http::Readiness::default();
    let config = spindle::controller::Config {
        namespace: Some(ns.name.clone()),
        readiness: readiness.clone(),
        instance: Some(format!("test-{}", ns.name)),
        resolver: Some(Arc::new(resolver())),
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(spindle::controller::run_until(
        ns.client.clone(),
        config,
        async move {
            let _ = stopped.await;
        },
    ));

    let pinned = format!("{}:v1@{digest}", reg.image("apps/one"));
    let deployments: Api<Deployment> = ns.api();
    let deployment = wait_for("the good app's Deployment", TIMEOUT, || async {
        deployments.get_opt("good").await.ok()?
    })
    .await
    .unwrap();
    let containers = &deployment.spec.template.spec.unwrap().containers;
    assert_eq!(containers[0].image.as_deref(), Some(pinned.as_str()));

    let apps: Api<SpinApp> = ns.api();
    let condition = |app: &SpinApp, status: &str, reason: &str| {
        app.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "ImageResolved" && c.status == status && c.reason == reason)
        })
    };
    let good = wait_for("good: ImageResolved=True", TIMEOUT, || async {
        let app = apps.get("good").await.ok()?;
        condition(&app, "True", "WasmComponent").then_some(app)
    })
    .await
    .unwrap();
    let status = good.status.unwrap();
    assert_eq!(status.resolved_image.as_deref(), Some(pinned.as_str()));
    assert_eq!(status.image_format.as_deref(), Some("WasmComponent"));

    let linux = wait_for(
        "linux: ImageResolved=False NotASpinApp",
        TIMEOUT,
        || async {
            let app = apps.get("linux").await.ok()?;
            condition(&app, "False", "NotASpinApp").then_some(app)
        },
    )
    .await
    .unwrap();
    let status = linux.status.unwrap();
    assert!(status.resolved_image.is_none(), "{status:?}");
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "NotASpinApp"),
        "{status:?}"
    );
    assert!(deployments.get_opt("linux").await.unwrap().is_none());

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), operator).await;
    ns.cleanup().await;
}
