//! Registry credentials from `imagePullSecrets`, matched the way the kubelet
//! matches them (`pkg/credentialprovider/keyring.go`):
//!
//! - Secrets of type `kubernetes.io/dockerconfigjson` (key `.dockerconfigjson`,
//!   `{"auths": {...}}`) and `kubernetes.io/dockercfg` (key `.dockercfg`, the
//!   bare map) are read; each entry's `auth` (base64 `user:password`) wins
//!   over `username`/`password`.
//! - Keys are schemeless URLs `host[:port][/path]`: `https://`/`http://` is
//!   stripped, a trailing `/`, `/v1/` or `/v2/` path is treated as "the whole
//!   host", and `index.docker.io`, `registry-1.docker.io` and `docker.io` are
//!   the same host (`docker.io`).
//! - A key matches an image when the hosts have the same number of
//!   dot-separated parts and each matches (a part may be a glob: `*`, `?`),
//!   the ports are equal (both absent, or the same), and the key's path is a
//!   string prefix of the image's `/repository`.
//! - Keys are tried most specific first (reverse lexicographic order, as the
//!   kubelet does); every match is a candidate, tried in turn on 401/403.
//! - No match: anonymous.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::ImageRef;

/// Secret type and key of a `~/.docker/config.json`-style pull secret.
pub const DOCKER_CONFIG_JSON_TYPE: &str = "kubernetes.io/dockerconfigjson";
/// Data key of a [`DOCKER_CONFIG_JSON_TYPE`] Secret.
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
/// Secret type of a legacy `~/.dockercfg`-style pull secret.
pub const DOCKER_CFG_TYPE: &str = "kubernetes.io/dockercfg";
/// Data key of a [`DOCKER_CFG_TYPE`] Secret.
pub const DOCKER_CFG_KEY: &str = ".dockercfg";

/// Credentials for one registry. `Debug` never prints the password.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Credentials {
    /// No credentials.
    #[default]
    Anonymous,
    /// HTTP basic credentials (also exchanged for a bearer token by
    /// registries that use token auth).
    Basic {
        /// User name.
        username: String,
        /// Password or access token.
        password: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

impl Credentials {
    /// Basic credentials; empty user and password mean anonymous.
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Self {
        let (username, password) = (username.into(), password.into());
        if username.is_empty() && password.is_empty() {
            Credentials::Anonymous
        } else {
            Credentials::Basic { username, password }
        }
    }

    /// A short, salted hash identifying these credentials within this
    /// process (for cache keys). The salt is random per process, so the value
    /// cannot be used to guess a password offline.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(process_salt());
        match self {
            Credentials::Anonymous => h.update(b"anonymous"),
            Credentials::Basic { username, password } => {
                h.update(b"basic\0");
                h.update(username.as_bytes());
                h.update(b"\0");
                h.update(password.as_bytes());
            }
        }
        hex::encode(&h.finalize()[..12])
    }

    pub(crate) fn to_registry_auth(&self) -> RegistryAuth {
        match self {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
        }
    }
}

fn process_salt() -> &'static [u8; 16] {
    static SALT: OnceLock<[u8; 16]> = OnceLock::new();
    SALT.get_or_init(|| {
        let mut salt = [0u8; 16];
        for (i, chunk) in salt.chunks_mut(8).enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(i);
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default(),
            );
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
        salt
    })
}

/// A pull secret that could not be used. Messages name the Secret and the
/// problem, never its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// The Secret's type is not a docker config type.
    #[error(
        "Secret {secret} has type {type_:?}; pull secrets must be kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg"
    )]
    WrongType {
        /// Secret name.
        secret: String,
        /// Its type.
        type_: String,
    },
    /// The key for the Secret's type is missing.
    #[error("Secret {secret} has no {key} key")]
    MissingKey {
        /// Secret name.
        secret: String,
        /// The expected key.
        key: String,
    },
    /// The docker config is not valid JSON of the expected shape.
    #[error("Secret {secret}: {key} is not a valid docker config ({problem})")]
    Invalid {
        /// Secret name.
        secret: String,
        /// Data key.
        key: String,
        /// Where it went wrong (line/column, never the content).
        problem: String,
    },
}

#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, DockerConfigEntry>,
}

#[derive(Deserialize, Default)]
struct DockerConfigEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Clone, Debug)]
struct KeyringEntry {
    /// `host[:port][/path]`, normalized.
    key: String,
    host: String,
    port: Option<String>,
    path: String,
    credentials: Credentials,
}

/// Credentials by registry key, looked up per image.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    entries: Vec<KeyringEntry>,
}

impl Keyring {
    /// An empty keyring: every lookup is anonymous.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add credentials for a registry key (`host[:port][/path]`, optionally
    /// with a scheme).
    pub fn add(&mut self, key: &str, credentials: Credentials) {
        let Some((host, port, path)) = normalize_key(key) else {
            return;
        };
        let key = format!(
            "{host}{}{path}",
            port.as_ref().map(|p| format!(":{p}")).unwrap_or_default()
        );
        self.entries.push(KeyringEntry {
            key,
            host,
            port,
            path,
            credentials,
        });
        // Most specific first, exactly like the kubelet: reverse-sorted keys.
        self.entries.sort_by(|a, b| b.key.cmp(&a.key));
    }

    /// Add every entry of a `.dockerconfigjson` (`{"auths": {...}}`).
    pub fn add_docker_config_json(
        &mut self,
        secret: &str,
        data: &[u8],
    ) -> Result<(), CredentialsError> {
        let cfg: DockerConfigJson = serde_json::from_slice(data)
            .map_err(|e| json_problem(secret, DOCKER_CONFIG_JSON_KEY, &e))?;
        self.add_entries(secret, DOCKER_CONFIG_JSON_KEY, cfg.auths)
    }

    /// Add every entry of a legacy `.dockercfg` (a bare map of entries).
    pub fn add_dockercfg(&mut self, secret: &str, data: &[u8]) -> Result<(), CredentialsError> {
        let cfg: BTreeMap<String, DockerConfigEntry> =
            serde_json::from_slice(data).map_err(|e| json_problem(secret, DOCKER_CFG_KEY, &e))?;
        self.add_entries(secret, DOCKER_CFG_KEY, cfg)
    }

    fn add_entries(
        &mut self,
        secret: &str,
        key: &str,
        entries: BTreeMap<String, DockerConfigEntry>,
    ) -> Result<(), CredentialsError> {
        let mut parsed = Vec::with_capacity(entries.len());
        for (registry, entry) in entries {
            let creds = match entry.auth.as_deref().filter(|a| !a.is_empty()) {
                Some(auth) => decode_auth(auth).ok_or_else(|| CredentialsError::Invalid {
                    secret: secret.to_string(),
                    key: key.to_string(),
                    problem: format!(
                        "the auth field of entry {registry:?} is not base64 of user:password"
                    ),
                })?,
                None => Credentials::basic(
                    entry.username.unwrap_or_default(),
                    entry.password.unwrap_or_default(),
                ),
            };
            parsed.push((registry, creds));
        }
        for (registry, creds) in parsed {
            self.add(&registry, creds);
        }
        Ok(())
    }

    /// Build a keyring from the app's pull Secrets. Secrets that cannot be
    /// used are skipped (as the kubelet does) and reported.
    pub fn from_secrets<'a>(
        secrets: impl IntoIterator<Item = &'a Secret>,
    ) -> (Keyring, Vec<CredentialsError>) {
        let mut keyring = Keyring::new();
        let mut problems = Vec::new();
        for secret in secrets {
            if let Err(e) = keyring.add_secret(secret) {
                problems.push(e);
            }
        }
        (keyring, problems)
    }

    /// Add one pull Secret.
    pub fn add_secret(&mut self, secret: &Secret) -> Result<(), CredentialsError> {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let type_ = secret.type_.clone().unwrap_or_default();
        let (key, json) = match type_.as_str() {
            DOCKER_CONFIG_JSON_TYPE => (DOCKER_CONFIG_JSON_KEY, true),
            DOCKER_CFG_TYPE => (DOCKER_CFG_KEY, false),
            _ => {
                return Err(CredentialsError::WrongType {
                    secret: name,
                    type_,
                });
            }
        };
        let data = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|s| s.clone().into_bytes())
            })
            .ok_or_else(|| CredentialsError::MissingKey {
                secret: name.clone(),
                key: key.to_string(),
            })?;
        if json {
            self.add_docker_config_json(&name, &data)
        } else {
            self.add_dockercfg(&name, &data)
        }
    }

    /// Every credential matching `image`, most specific first. Empty means
    /// pull anonymously.
    pub fn lookup(&self, image: &ImageRef) -> Vec<Credentials> {
        let host = normalize_host(image.host());
        let port = image.port().map(str::to_string);
        let path = format!("/{}", image.repository());
        let mut out: Vec<Credentials> = Vec::new();
        for e in &self.entries {
            if e.port == port
                && hosts_match(&e.host, &host)
                && path.starts_with(&e.path)
                && !out.contains(&e.credentials)
            {
                out.push(e.credentials.clone());
            }
        }
        out
    }

    /// Whether the keyring has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn json_problem(secret: &str, key: &str, e: &serde_json::Error) -> CredentialsError {
    // serde_json messages may quote values from the document: report only
    // the category and position.
    CredentialsError::Invalid {
        secret: secret.to_string(),
        key: key.to_string(),
        problem: format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ),
    }
}

fn decode_auth(auth: &str) -> Option<Credentials> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let s = String::from_utf8(bytes).ok()?;
    let (user, pass) = s.split_once(':')?;
    Some(Credentials::basic(user, pass))
}

/// `host`, `port`, `path` of a keyring key; `None` for an empty key.
fn normalize_key(key: &str) -> Option<(String, Option<String>, String)> {
    let mut k = key.trim();
    for scheme in ["https://", "http://"] {
        if k.len() >= scheme.len() && k[..scheme.len()].eq_ignore_ascii_case(scheme) {
            k = &k[scheme.len()..];
        }
    }
    let (hostport, path) = match k.find('/') {
        Some(i) => (&k[..i], &k[i..]),
        None => (k, ""),
    };
    if hostport.is_empty() {
        return None;
    }
    let mut path = path.trim_end_matches('/').to_string();
    if path == "/v1" || path == "/v2" {
        path.clear();
    }
    let (host, port) = super::reference::split_host_port(hostport);
    Some((normalize_host(host), port.map(str::to_string), path))
}

fn normalize_host(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        _ => host,
    }
}

/// Same number of dot-separated parts, each matching as a glob.
fn hosts_match(pattern: &str, host: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let h: Vec<&str> = host.split('.').collect();
    p.len() == h.len()
        && p.iter()
            .zip(&h)
            .all(|(p, h)| glob(p.as_bytes(), h.as_bytes()))
}

/// `*` and `?` glob within one host part.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && glob(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn img(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn user(c: &Credentials) -> &str {
        match c {
            Credentials::Basic { username, .. } => username,
            Credentials::Anonymous => "",
        }
    }

    #[test]
    fn debug_redacts() {
        let c = Credentials::basic("alice", "hunter2");
        let d = format!("{c:?}");
        assert!(d.contains("alice") && !d.contains("hunter2"), "{d}");
        let fp = c.fingerprint();
        assert!(!fp.contains("hunter2"));
        assert_eq!(fp, Credentials::basic("alice", "hunter2").fingerprint());
        assert_ne!(fp, Credentials::basic("alice", "other").fingerprint());
        assert_ne!(fp, Credentials::Anonymous.fingerprint());
    }

    #[test]
    fn dockerconfigjson_auth_and_username_password() {
        let mut k = Keyring::new();
        let json = format!(
            r#"{{"auths": {{"https://ghcr.io": {{"auth": "{}"}}, "quay.io/org": {{"username": "u2", "password": "p2"}}}}}}"#,
            b64("u1:p:with:colons")
        );
        k.add_docker_config_json("s", json.as_bytes()).unwrap();
        assert_eq!(
            k.lookup(&img("ghcr.io/a/b:1")),
            vec![Credentials::basic("u1", "p:with:colons")]
        );
        assert_eq!(
            k.lookup(&img("quay.io/org/app:1")),
            vec![Credentials::basic("u2", "p2")]
        );
        assert!(k.lookup(&img("quay.io/other/app:1")).is_empty());
        assert!(k.lookup(&img("docker.io/library/nginx")).is_empty());
    }

    #[test]
    fn most_specific_first_and_all_matches() {
        let mut k = Keyring::new();
        k.add("quay.io", Credentials::basic("host", "x"));
        k.add("quay.io/org", Credentials::basic("org", "x"));
        k.add("quay.io/org/app", Credentials::basic("app", "x"));
        let users: Vec<String> = k
            .lookup(&img("quay.io/org/app:1"))
            .iter()
            .map(|c| user(c).to_string())
            .collect();
        assert_eq!(users, ["app", "org", "host"]);
        let users: Vec<String> = k
            .lookup(&img("quay.io/org/other:1"))
            .iter()
            .map(|c| user(c).to_string())
            .collect();
        assert_eq!(users, ["org", "host"]);
    }

    #[test]
    fn docker_hub_aliases_and_v1_paths() {
        for key in [
            "https://index.docker.io/v1/",
            "index.docker.io",
            "docker.io",
            "registry-1.docker.io",
        ] {
            let mut k = Keyring::new();
            k.add(key, Credentials::basic("hub", "x"));
            assert_eq!(k.lookup(&img("nginx")).len(), 1, "{key}");
            assert_eq!(k.lookup(&img("docker.io/me/app:1")).len(), 1, "{key}");
            assert!(k.lookup(&img("ghcr.io/me/app:1")).is_empty(), "{key}");
        }
    }

    #[test]
    fn ports_and_globs() {
        let mut k = Keyring::new();
        k.add("127.0.0.1:5000", Credentials::basic("p5000", "x"));
        k.add("*.example.com", Credentials::basic("glob", "x"));
        assert_eq!(k.lookup(&img("127.0.0.1:5000/a:1")).len(), 1);
        assert!(k.lookup(&img("127.0.0.1:5001/a:1")).is_empty());
        assert!(k.lookup(&img("127.0.0.1/a:1")).is_empty());
        assert_eq!(k.lookup(&img("reg.example.com/a:1")).len(), 1);
        // A glob matches one part only, like the kubelet.
        assert!(k.lookup(&img("a.reg.example.com/a:1")).is_empty());
        assert!(k.lookup(&img("example.com/a:1")).is_empty());
    }

    #[test]
    fn dockercfg_legacy() {
        let mut k = Keyring::new();
        let json = format!(
            r#"{{"my.registry:8443": {{"auth": "{}", "email": "e@x"}}}}"#,
            b64("legacy:pw")
        );
        k.add_dockercfg("s", json.as_bytes()).unwrap();
        assert_eq!(
            k.lookup(&img("my.registry:8443/x/y:1")),
            vec![Credentials::basic("legacy", "pw")]
        );
    }

    #[test]
    fn secrets_and_errors_never_leak() {
        let secret = |name: &str, type_: &str, key: &str, data: &str| Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            type_: Some(type_.into()),
            data: Some([(key.to_string(), ByteString(data.as_bytes().to_vec()))].into()),
            ..Default::default()
        };
        let good = secret(
            "good",
            DOCKER_CONFIG_JSON_TYPE,
            DOCKER_CONFIG_JSON_KEY,
            &format!(
                r#"{{"auths":{{"r.io":{{"auth":"{}"}}}}}}"#,
                b64("u:topsecret")
            ),
        );
        let wrong_type = secret("opaque", "Opaque", "x", "y");
        let bad_json = secret(
            "bad",
            DOCKER_CONFIG_JSON_TYPE,
            DOCKER_CONFIG_JSON_KEY,
            r#"{"auths": {"r.io": {"auth": 42, "password": "topsecret"}}}"#,
        );
        let bad_auth = secret(
            "badauth",
            DOCKER_CONFIG_JSON_TYPE,
            DOCKER_CONFIG_JSON_KEY,
            r#"{"auths": {"r.io": {"auth": "topsecret!!"}}}"#,
        );
        let missing = secret("missing", DOCKER_CFG_TYPE, DOCKER_CONFIG_JSON_KEY, "{}");
        let (k, problems) =
            Keyring::from_secrets([&good, &wrong_type, &bad_json, &bad_auth, &missing]);
        assert_eq!(
            k.lookup(&img("r.io/a:1")),
            vec![Credentials::basic("u", "topsecret")]
        );
        assert_eq!(problems.len(), 4, "{problems:?}");
        for p in &problems {
            let msg = p.to_string();
            assert!(!msg.contains("topsecret"), "{msg}");
        }
        assert!(matches!(problems[0], CredentialsError::WrongType { .. }));
        assert!(matches!(problems[3], CredentialsError::MissingKey { .. }));
    }
}
