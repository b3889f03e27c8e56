//! A REAL OCI registry for tests: CNCF distribution 2.8 (Debian package
//! `docker-registry`) on 127.0.0.1, anonymous or with htpasswd basic auth.
//! Each [`Registry`] is its own process on a free port with a generated
//! config and storage in a temporary directory; it is killed by its own PID
//! on [`Registry::stop`] or drop, and [`Registry::restart`] brings it back on
//! the same port with the same storage (registry outage and recovery).
//!
//! Install: `apt-get install -y docker-registry apache2-utils` (`.ci/run` does).
//!
//! ```no_run
//! # async fn demo() {
//! use spindle_e2e::registry::{Registry, linux_image};
//! let reg = Registry::start(true).await; // with basic auth
//! let digest = reg.push("images/linux:v1", &linux_image()).await;
//! assert!(digest.starts_with("sha256:"));
//! # }
//! ```

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use spindle::oci::format;
use spindle::oci::push::{self, Artifact, Blob};
use spindle::oci::{Credentials, ImageRef, PlainHttp};

/// User name of the registries started with auth.
pub const USER: &str = "spindle";
/// Password of the registries started with auth (test-only; never a real secret).
pub const PASSWORD: &str = "s3cret-registry-password";

/// A `docker-registry` process this test started. Dropping it kills that PID
/// and removes its storage.
pub struct Registry {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    auth: bool,
}

/// The registry binary: `$SPINDLE_REGISTRY_BIN`, else `docker-registry` or
/// `registry` on `PATH` (or `/usr/bin`). Panics with install instructions
/// when missing: the tests that need a registry must not pass without one.
pub fn registry_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("SPINDLE_REGISTRY_BIN") {
        return PathBuf::from(bin);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    for name in ["docker-registry", "registry"] {
        for dir in path.split(':').chain(["/usr/bin", "/usr/local/bin"]) {
            let p = Path::new(dir).join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "the `docker-registry` binary (CNCF distribution 2.8) is not installed; these tests need a real registry.\n\
         Install it with: apt-get update && apt-get install -y docker-registry apache2-utils"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a free port on 127.0.0.1")
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl Registry {
    /// Start a registry on a free loopback port; `auth` = htpasswd basic auth
    /// with [`USER`]/[`PASSWORD`]. Returns once it accepts connections.
    pub async fn start(auth: bool) -> Registry {
        let dir = std::env::temp_dir().join(format!(
            "spindle-oci-registry-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).expect("creating the registry directory");
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
            std::fs::write(self.dir.join("htpasswd"), out.stdout).expect("writing htpasswd");
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
        std::fs::write(self.dir.join("config.yml"), config).expect("writing config.yml");
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("registry.log"))
            .expect("opening registry.log");
        let child = Command::new(registry_binary())
            .arg("serve")
            .arg(self.dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("registry.log"))
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
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
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

    /// Kill our registry process (by its PID) and wait for it. Its port and
    /// storage are kept for [`Registry::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is running (not stopped, not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Start again (stopping first if running) on the same port with the
    /// same storage: what was pushed before is served again.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the registry requires basic auth.
    pub fn has_auth(&self) -> bool {
        self.auth
    }

    /// `127.0.0.1:<port>/<repo_tag>`.
    pub fn image(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.host())
    }

    /// The registry's log (stdout and stderr, access log included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// Registry API requests (`/v2/...`) served so far, from the access log.
    pub fn requests(&self) -> usize {
        self.requests_matching(|_| true)
    }

    /// Access-log lines of `/v2/` requests for which `keep` is true (e.g.
    /// `|l| l.contains("\"GET /v2/apps/one/manifests/")`).
    pub fn requests_matching(&self, keep: impl Fn(&str) -> bool) -> usize {
        self.log()
            .lines()
            .filter(|l| {
                ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"]
                    .iter()
                    .any(|m| l.contains(&format!("\"{m} /v2/")))
            })
            .filter(|l| keep(l))
            .count()
    }

    /// The credentials that work here (anonymous without auth).
    pub fn credentials(&self) -> Credentials {
        if self.auth {
            Credentials::basic(USER, PASSWORD)
        } else {
            Credentials::Anonymous
        }
    }

    /// A `.dockerconfigjson` document (`{"auths": {...}}`) with this
    /// registry's credentials, for a `kubernetes.io/dockerconfigjson` Secret.
    pub fn docker_config_json(&self) -> String {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        let host = self.host();
        serde_json::json!({"auths": {host: {"auth": auth}}}).to_string()
    }

    /// `GET http://<host><path>` (e.g. `/v2/<repo>/manifests/<digest>`) with
    /// `Accept: accept`, and basic auth when the registry has it: the status
    /// code and the body. For reading back what was pushed.
    pub async fn get(&self, path: &str, accept: &str) -> std::io::Result<(u16, Vec<u8>)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        let auth = if self.auth {
            let b64 =
                base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
            format!("Authorization: Basic {b64}\r\n")
        } else {
            String::new()
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: {accept}\r\n{auth}Connection: close\r\n\r\n",
            self.host()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| bad("no end of HTTP headers"))?;
        let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| bad("no HTTP status"))?;
        let mut body = raw[split + 4..].to_vec();
        if head.contains("transfer-encoding: chunked") {
            body = dechunk(&body).ok_or_else(|| bad("malformed chunked body"))?;
        }
        Ok((code, body))
    }

    /// Push `artifact` as `<repo_tag>` with [`Registry::credentials`];
    /// returns its manifest digest. Panics on failure.
    pub async fn push(&self, repo_tag: &str, artifact: &Artifact) -> String {
        let r = ImageRef::parse(&self.image(repo_tag))
            .unwrap_or_else(|e| panic!("image reference {repo_tag}: {e}"));
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

/// Decode an HTTP/1.1 chunked body.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

// ---------------------------------------------------------------------------
// Artifacts that are not Spin apps

/// A gzip-compressed tar of `files` (path, content).
pub fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data).expect("tar entry");
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&b.into_inner().expect("tar")).expect("gzip");
    gz.finish().expect("gzip")
}

/// A plain image: OCI image config with `os`/`architecture`, one tar+gzip layer.
pub fn plain_image(os: &str, arch: &str, files: &[(&str, &[u8])]) -> Artifact {
    let layer = Blob::new(format::OCI_LAYER_TAR_GZIP, tar_gz(files));
    let config = serde_json::json!({
        "os": os,
        "architecture": arch,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    let config = Blob::new(
        format::OCI_IMAGE_CONFIG,
        serde_json::to_vec(&config).expect("json"),
    );
    Artifact::image(config, vec![layer], BTreeMap::new())
}

/// A Linux container image (linux/amd64, `bin/sh`): not a Spin app.
pub fn linux_image() -> Artifact {
    plain_image("linux", "amd64", &[("bin/sh", b"#!ELF")])
}
