//! Resolve an image reference to a digest-pinned reference and a format,
//! with a small in-memory cache and in-flight de-duplication.
//!
//! - Cache key: (normalized reference, fingerprints of the candidate
//!   credentials). Fingerprints are salted hashes; secrets are never keys.
//! - Concurrent resolves of one key share one registry round trip (the first
//!   caller fetches, the others wait for its result; if the first caller is
//!   cancelled, a waiter takes over).
//! - A successful resolve of a digest reference is kept for the life of the
//!   process: content behind a digest cannot change, so it is fetched and
//!   format-checked once.
//! - A successful resolve of a tag is reused while younger than the caller's
//!   `max_age` (default [`ResolverConfig::tag_ttl`]); errors are shared with
//!   concurrent callers and kept for [`ResolverConfig::error_ttl`] so that a
//!   registry outage is not hammered by every app at once.
//! - Re-resolving mutable tags periodically is off by default; per app, the
//!   annotation [`IMAGE_REFRESH_INTERVAL_ANNOTATION`] sets an interval
//!   (parsed by [`refresh_interval`]); the controller decides when to call.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use oci_client::Client;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use sha2::{Digest as _, Sha256};
use tracing::{debug, info};

use super::format::{
    self, Classification, Descriptor, ImageFormat, ImageManifest, Manifest, Platform, ScanLimits,
};
use super::{Credentials, Error, ImageRef, Keyring};

/// Per-app annotation: re-resolve the app's (mutable) tag this often, e.g.
/// `"5m"`, `"1h30m"`. Unset, empty or `"0"`: never re-resolve a tag once its
/// digest is in the app's status (the default).
pub const IMAGE_REFRESH_INTERVAL_ANNOTATION: &str = "spindle.spinkube.dev/image-refresh-interval";

/// The shortest refresh interval accepted, to protect registries.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// Parse the [`IMAGE_REFRESH_INTERVAL_ANNOTATION`] of an app: `Ok(None)` when
/// unset or off, `Err` with a message for a malformed or too short value.
pub fn refresh_interval(
    annotations: Option<&BTreeMap<String, String>>,
) -> Result<Option<Duration>, String> {
    let Some(raw) = annotations.and_then(|a| a.get(IMAGE_REFRESH_INTERVAL_ANNOTATION)) else {
        return Ok(None);
    };
    let value = raw.trim();
    if value.is_empty() || value == "0" {
        return Ok(None);
    }
    let bad = || {
        format!(
            "annotation {IMAGE_REFRESH_INTERVAL_ANNOTATION}={raw:?} is not a duration such as 30s, 5m or 1h30m"
        )
    };
    let mut total = Duration::ZERO;
    let mut rest = value;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let secs = match &rest[..unit] {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => return Err(bad()),
        };
        rest = &rest[unit..];
        total += Duration::from_secs(n.checked_mul(secs).ok_or_else(bad)?);
    }
    if total == Duration::ZERO {
        return Ok(None);
    }
    if total < MIN_REFRESH_INTERVAL {
        return Err(format!(
            "annotation {IMAGE_REFRESH_INTERVAL_ANNOTATION}={raw:?} is shorter than the minimum of {}s",
            MIN_REFRESH_INTERVAL.as_secs()
        ));
    }
    Ok(Some(total))
}

/// When to use plain HTTP instead of HTTPS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PlainHttp {
    /// Plain HTTP for loopback registries (127.0.0.0/8, `localhost`, `::1`)
    /// only; HTTPS everywhere else.
    #[default]
    LoopbackOnly,
    /// HTTPS everywhere.
    Never,
}

impl PlainHttp {
    pub(crate) fn protocol_for(self, image: &ImageRef) -> ClientProtocol {
        match self {
            PlainHttp::LoopbackOnly if image.is_loopback() => ClientProtocol::Http,
            _ => ClientProtocol::Https,
        }
    }
}

/// Whether `image`'s registry (`host` or `host:port`, as written in the
/// reference) is exactly one of `insecure`, case-insensitive: `host:5000`
/// does not allow `host:5001`, and a bare `host` allows only `host` without a port.
pub(crate) fn is_insecure_registry(image: &ImageRef, insecure: &[String]) -> bool {
    insecure.iter().any(|entry| {
        let entry = entry.trim();
        !entry.is_empty() && entry.eq_ignore_ascii_case(image.registry())
    })
}

/// Resolver settings.
#[derive(Clone, Debug)]
pub struct ResolverConfig {
    /// Plain HTTP policy.
    pub plain_http: PlainHttp,
    /// Registries (`host` or `host:port`, as in the image reference) reached
    /// over plain HTTP in addition to what `plain_http` allows
    /// (`spindle run --insecure-registry`). Exact matches only.
    pub insecure_registries: Vec<String>,
    /// How long a resolved tag is reused when the caller gives no `max_age`.
    pub tag_ttl: Duration,
    /// How long an error is reused (shared by all apps on the same image).
    pub error_ttl: Duration,
    /// Deadline for one resolve (all registry round trips).
    pub timeout: Duration,
    /// Cache capacity (entries).
    pub max_entries: usize,
    /// Largest image config read.
    pub max_config_bytes: u64,
    /// Bounds for looking for `/spin.toml` in plain images.
    pub scan: ScanLimits,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            plain_http: PlainHttp::default(),
            insecure_registries: Vec::new(),
            tag_ttl: Duration::from_secs(60),
            error_ttl: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_entries: 4096,
            max_config_bytes: 1 << 20,
            scan: ScanLimits::default(),
        }
    }
}

/// A resolved image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// Digest-pinned reference for the pod spec: `registry/repo:tag@sha256:…`
    /// (or `registry/repo@sha256:…` when no tag was written).
    pub image: String,
    /// Digest of the image manifest that runs (for an index, the WASI entry's).
    pub digest: String,
    /// The index's digest when the reference named an index.
    pub index_digest: Option<String>,
    /// The packaging format.
    pub format: ImageFormat,
}

/// Counters, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResolverStats {
    /// Resolves that went to the registry.
    pub fetches: u64,
    /// Resolves answered from the cache or by joining an in-flight fetch.
    pub hits: u64,
}

#[derive(Clone)]
struct Outcome {
    result: Result<Resolved, Error>,
    at: Instant,
}

#[derive(Default)]
struct Slot {
    cell: tokio::sync::OnceCell<Outcome>,
}

type Key = (String, String);

/// Resolves images; cheap to share (`Arc`) between reconciles.
pub struct Resolver {
    config: ResolverConfig,
    cache: Mutex<HashMap<Key, Arc<Slot>>>,
    fetches: AtomicU64,
    hits: AtomicU64,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::new(ResolverConfig::default())
    }
}

impl Resolver {
    /// A resolver with an empty cache.
    pub fn new(config: ResolverConfig) -> Self {
        super::ensure_crypto_provider();
        Resolver {
            config,
            cache: Mutex::new(HashMap::new()),
            fetches: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ResolverConfig {
        &self.config
    }

    /// Counters since creation.
    pub fn stats(&self) -> ResolverStats {
        ResolverStats {
            fetches: self.fetches.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
        }
    }

    /// Resolve `image` with credentials from `keyring` (every matching
    /// credential is tried in turn, most specific first; anonymous if none
    /// match). A tag result younger than `max_age` (default
    /// [`ResolverConfig::tag_ttl`]) is reused.
    pub async fn resolve(
        &self,
        image: &str,
        keyring: &Keyring,
        max_age: Option<Duration>,
    ) -> Result<Resolved, Error> {
        let r = ImageRef::parse(image)?;
        let candidates = keyring.lookup(&r);
        self.resolve_ref(&r, candidates, max_age).await
    }

    /// [`Resolver::resolve`] with an explicit list of candidate credentials.
    pub async fn resolve_ref(
        &self,
        r: &ImageRef,
        candidates: Vec<Credentials>,
        max_age: Option<Duration>,
    ) -> Result<Resolved, Error> {
        let candidates = if candidates.is_empty() {
            vec![Credentials::Anonymous]
        } else {
            candidates
        };
        let fingerprints = candidates
            .iter()
            .map(Credentials::fingerprint)
            .collect::<Vec<_>>()
            .join(",");
        let key = (r.to_string(), fingerprints);
        let slot = self.slot(&key, r.digest().is_some(), max_age);
        let fetched = AtomicBool::new(false);
        let outcome = slot
            .cell
            .get_or_init(|| async {
                fetched.store(true, Ordering::Relaxed);
                self.fetches.fetch_add(1, Ordering::Relaxed);
                let result = self.fetch(r, &candidates).await;
                match &result {
                    Ok(res) => info!(image = %r, pinned = %res.image, format = %res.format, "resolved image"),
                    Err(e) => info!(image = %r, reason = e.reason(), error = %e, "image resolution failed"),
                }
                Outcome {
                    result,
                    at: Instant::now(),
                }
            })
            .await;
        if !fetched.load(Ordering::Relaxed) {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        outcome.result.clone()
    }

    /// The cache slot for `key`: the existing one when still in flight or
    /// fresh, else a new empty one.
    fn slot(&self, key: &Key, is_digest: bool, max_age: Option<Duration>) -> Arc<Slot> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let tag_age = max_age.unwrap_or(self.config.tag_ttl);
        let fresh = |o: &Outcome, age: Duration| match &o.result {
            Ok(_) if is_digest => true,
            Ok(_) => o.at.elapsed() <= age,
            Err(_) => o.at.elapsed() < self.config.error_ttl,
        };
        if let Some(slot) = cache.get(key)
            && slot.cell.get().is_none_or(|o| fresh(o, tag_age))
        {
            return slot.clone();
        }
        if cache.len() >= self.config.max_entries {
            // Drop what is stale by the default TTL; then the oldest.
            let ttl = self.config.tag_ttl;
            cache.retain(|(reference, _), s| match s.cell.get() {
                None => true,
                Some(o) => match &o.result {
                    Ok(_) if reference.contains('@') => true,
                    Ok(_) => o.at.elapsed() <= ttl,
                    Err(_) => false,
                },
            });
            while cache.len() >= self.config.max_entries {
                let oldest = cache
                    .iter()
                    .filter_map(|(k, s)| s.cell.get().map(|o| (k.clone(), o.at)))
                    .min_by_key(|(_, at)| *at)
                    .map(|(k, _)| k);
                match oldest {
                    Some(k) => cache.remove(&k),
                    None => break,
                };
            }
        }
        let slot = Arc::new(Slot::default());
        cache.insert(key.clone(), slot.clone());
        slot
    }

    /// Registry round trips for one resolve, trying each credential.
    async fn fetch(&self, r: &ImageRef, candidates: &[Credentials]) -> Result<Resolved, Error> {
        let mut last = None;
        for (i, creds) in candidates.iter().enumerate() {
            debug!(image = %r, credentials = ?creds, attempt = i + 1, "resolving image");
            let attempt = tokio::time::timeout(
                self.config.timeout,
                self.fetch_with(r, creds.to_registry_auth()),
            )
            .await;
            match attempt {
                Ok(Err(e @ Error::Unauthorized { .. })) => last = Some(e),
                Ok(result) => return result,
                Err(_) => {
                    return Err(Error::RegistryUnavailable {
                        registry: r.registry().to_string(),
                        detail: format!("no answer within {}s", self.config.timeout.as_secs()),
                    });
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Unauthorized {
            registry: r.registry().to_string(),
            repository: r.repository().to_string(),
            detail: "no credentials to try".into(),
        }))
    }

    async fn fetch_with(&self, r: &ImageRef, auth: RegistryAuth) -> Result<Resolved, Error> {
        let protocol = if is_insecure_registry(r, &self.config.insecure_registries) {
            ClientProtocol::Http
        } else {
            self.config.plain_http.protocol_for(r)
        };
        let client = registry_client(protocol);
        let reference = r.to_string();
        let oci_err = |e| Error::from_oci(e, r.registry(), r.repository(), &reference);
        let invalid = |detail: String| Error::InvalidArtifact {
            reference: reference.clone(),
            registry: r.registry().to_string(),
            detail,
        };

        let (body, digest) = client
            .pull_manifest_raw(r.oci(), &auth, format::MANIFEST_MEDIA_TYPES)
            .await
            .map_err(oci_err)?;
        let (manifest, digest, index_digest) = match format::parse_manifest(&body)
            .map_err(&invalid)?
        {
            Manifest::Image(m) => (m, digest, None),
            Manifest::Index(index) => {
                let Some(entry) = format::select_wasm_entry(&index) else {
                    let platforms: Vec<String> = index
                        .manifests
                        .iter()
                        .map(|m| {
                            m.platform
                                .as_ref()
                                .map(Platform::to_string)
                                .unwrap_or_else(|| "unknown".into())
                        })
                        .collect();
                    return Err(Error::NotASpinApp {
                        reference: r.pinned(&digest),
                        config_media_type: index.media_type.clone().unwrap_or_else(|| format::OCI_INDEX.into()),
                        layer_media_types: index.manifests.iter().map(|m| m.media_type.clone()).collect(),
                        platform: Some(platforms.join(", ")),
                        detail: "an image index without a WASI (wasi/wasip1/wasip2 or wasm) platform entry".into(),
                    });
                };
                let child = r.with_digest(&entry.digest);
                let (body, child_digest) = client
                    .pull_manifest_raw(&child, &auth, format::MANIFEST_MEDIA_TYPES)
                    .await
                    .map_err(oci_err)?;
                match format::parse_manifest(&body).map_err(&invalid)? {
                    Manifest::Image(m) => (m, child_digest, Some(digest)),
                    Manifest::Index(_) => {
                        return Err(invalid("an image index nested in an image index".into()));
                    }
                }
            }
        };
        let pinned = r.pinned(&digest);
        let done = |format| {
            Ok(Resolved {
                image: pinned.clone(),
                digest: digest.clone(),
                index_digest: index_digest.clone(),
                format,
            })
        };
        let not_spin = |platform: Option<&Platform>, detail: String| Error::NotASpinApp {
            reference: pinned.clone(),
            config_media_type: manifest.config.media_type.clone(),
            layer_media_types: manifest
                .layers
                .iter()
                .map(|l| l.media_type.clone())
                .collect(),
            platform: platform.map(Platform::to_string),
            detail,
        };

        match format::classify(&manifest) {
            Classification::Format(f) => done(f),
            Classification::NotSpin(detail) => {
                // Name the platform in the message when the config is an image config.
                let platform = if [format::OCI_IMAGE_CONFIG, format::DOCKER_IMAGE_CONFIG]
                    .contains(&manifest.config.media_type.as_str())
                {
                    self.read_blob(&client, r, &manifest.config, self.config.max_config_bytes)
                        .await
                        .ok()
                        .and_then(|c| format::config_platform(&c))
                } else {
                    None
                };
                Err(not_spin(platform.as_ref(), detail))
            }
            Classification::PlainImage => {
                let config = self
                    .read_blob(&client, r, &manifest.config, self.config.max_config_bytes)
                    .await?;
                let platform = format::config_platform(&config);
                if !platform.as_ref().is_some_and(Platform::is_wasm) {
                    return Err(not_spin(
                        platform.as_ref(),
                        "a container image whose platform is not WASI (os wasi/wasip1/wasip2 or architecture wasm)".into(),
                    ));
                }
                match self.scan_for_spin_toml(&client, r, &manifest).await? {
                    ScanResult::Found => done(ImageFormat::SpinImage),
                    ScanResult::NotFound(summary) => Err(not_spin(
                        platform.as_ref(),
                        format!("a WASI image without /spin.toml at its root ({summary})"),
                    )),
                }
            }
        }
    }

    async fn scan_for_spin_toml(
        &self,
        client: &Client,
        r: &ImageRef,
        manifest: &ImageManifest,
    ) -> Result<ScanResult, Error> {
        let limits = self.config.scan;
        let (mut scanned, mut skipped, mut total) = (0usize, Vec::new(), 0u64);
        for layer in &manifest.layers {
            let size = u64::try_from(layer.size).unwrap_or(u64::MAX);
            if !format::scannable_layer(&layer.media_type) {
                skipped.push(format!(
                    "{} ({}: compression not read)",
                    short(&layer.digest),
                    layer.media_type
                ));
                continue;
            }
            if size > limits.max_layer_bytes
                || scanned >= limits.max_layers
                || total.saturating_add(size) > limits.max_total_bytes
            {
                skipped.push(format!(
                    "{} ({} bytes: over the scan limits)",
                    short(&layer.digest),
                    layer.size
                ));
                continue;
            }
            let data = self
                .read_blob(client, r, layer, limits.max_layer_bytes)
                .await?;
            total += data.len() as u64;
            scanned += 1;
            match format::layer_has_spin_toml(&layer.media_type, &data) {
                Ok(true) => return Ok(ScanResult::Found),
                Ok(false) => {}
                Err(e) => skipped.push(format!("{} ({e})", short(&layer.digest))),
            }
        }
        let mut summary = format!("{scanned} of {} layers read", manifest.layers.len());
        if !skipped.is_empty() {
            summary.push_str(&format!(
                "; not read: {}; layers over {} MiB are not read",
                skipped.join(", "),
                limits.max_layer_bytes >> 20
            ));
        }
        Ok(ScanResult::NotFound(summary))
    }

    /// Download a blob of at most `cap` bytes and check its digest.
    async fn read_blob(
        &self,
        client: &Client,
        r: &ImageRef,
        desc: &Descriptor,
        cap: u64,
    ) -> Result<Vec<u8>, Error> {
        let reference = r.to_string();
        let invalid = |detail: String| Error::InvalidArtifact {
            reference: reference.clone(),
            registry: r.registry().to_string(),
            detail,
        };
        if u64::try_from(desc.size).is_ok_and(|s| s > cap) {
            return Err(invalid(format!(
                "blob {} is {} bytes, over the {cap}-byte limit",
                desc.digest, desc.size
            )));
        }
        let oref = r.with_digest(&desc.digest);
        let mut stream = client
            .pull_blob_stream(&oref, desc.digest.as_str())
            .await
            .map_err(|e| Error::from_oci(e, r.registry(), r.repository(), &reference))?;
        let mut data = Vec::new();
        while let Some(chunk) = stream.stream.next().await {
            let chunk = chunk.map_err(|e| Error::RegistryUnavailable {
                registry: r.registry().to_string(),
                detail: format!("reading blob {}: {e}", desc.digest),
            })?;
            data.extend_from_slice(&chunk);
            if data.len() as u64 > cap {
                return Err(invalid(format!(
                    "blob {} is over the {cap}-byte limit",
                    desc.digest
                )));
            }
        }
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
        if actual != desc.digest {
            return Err(invalid(format!(
                "blob digest mismatch: expected {}, got {actual}",
                desc.digest
            )));
        }
        Ok(data)
    }
}

enum ScanResult {
    Found,
    NotFound(String),
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

/// An `oci-client` client speaking `protocol`
/// (see [`PlainHttp::protocol_for`] and [`is_insecure_registry`]).
pub(crate) fn registry_client(protocol: ClientProtocol) -> Client {
    super::ensure_crypto_provider();
    Client::new(ClientConfig {
        protocol,
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(5)),
        read_timeout: Some(Duration::from_secs(20)),
        user_agent: concat!("spindle/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(v: &str) -> BTreeMap<String, String> {
        [(IMAGE_REFRESH_INTERVAL_ANNOTATION.to_string(), v.to_string())].into()
    }

    #[test]
    fn refresh_interval_parsing() {
        assert_eq!(refresh_interval(None), Ok(None));
        assert_eq!(refresh_interval(Some(&BTreeMap::new())), Ok(None));
        assert_eq!(refresh_interval(Some(&ann("0"))), Ok(None));
        assert_eq!(refresh_interval(Some(&ann(""))), Ok(None));
        assert_eq!(
            refresh_interval(Some(&ann("5m"))),
            Ok(Some(Duration::from_secs(300)))
        );
        assert_eq!(
            refresh_interval(Some(&ann("1h30m"))),
            Ok(Some(Duration::from_secs(5400)))
        );
        assert_eq!(
            refresh_interval(Some(&ann("45s"))),
            Ok(Some(Duration::from_secs(45)))
        );
        for bad in ["5", "m", "5d", "-5m", "5m3", "1.5h", "five"] {
            assert!(refresh_interval(Some(&ann(bad))).is_err(), "{bad}");
        }
        let e = refresh_interval(Some(&ann("5s"))).unwrap_err();
        assert!(e.contains("minimum"), "{e}");
    }

    #[test]
    fn plain_http_only_for_loopback() {
        let lo = ImageRef::parse("127.0.0.1:5000/a:1").unwrap();
        let remote = ImageRef::parse("ghcr.io/a:1").unwrap();
        assert_eq!(
            PlainHttp::LoopbackOnly.protocol_for(&lo),
            ClientProtocol::Http
        );
        assert_eq!(
            PlainHttp::LoopbackOnly.protocol_for(&remote),
            ClientProtocol::Https
        );
        assert_eq!(PlainHttp::Never.protocol_for(&lo), ClientProtocol::Https);
        let insecure = vec![
            "registry.local:5000".to_string(),
            "plain.example".to_string(),
        ];
        let yes = ImageRef::parse("registry.local:5000/a:1").unwrap();
        let other_port = ImageRef::parse("registry.local:5001/a:1").unwrap();
        let bare = ImageRef::parse("plain.example/a:1").unwrap();
        assert!(is_insecure_registry(&yes, &insecure));
        assert!(!is_insecure_registry(&other_port, &insecure));
        assert!(is_insecure_registry(&bare, &insecure));
        let bare_with_port = ImageRef::parse("plain.example:5000/a:1").unwrap();
        assert!(!is_insecure_registry(&bare_with_port, &insecure));
        assert!(!is_insecure_registry(&remote, &insecure));
    }

    #[tokio::test]
    async fn invalid_reference_fails_without_network() {
        let r = Resolver::default();
        let e = r
            .resolve("Not A Ref", &Keyring::new(), None)
            .await
            .unwrap_err();
        assert_eq!(e.reason(), "InvalidReference");
        assert_eq!(r.stats().fetches, 0);
    }

    #[tokio::test]
    async fn connection_refused_is_unavailable_and_shared() {
        // Bind then drop a listener to get a port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let r = Resolver::new(ResolverConfig {
            error_ttl: Duration::from_secs(60),
            ..Default::default()
        });
        let image = format!("127.0.0.1:{port}/app:v1");
        let keyring = Keyring::new();
        let results =
            futures::future::join_all((0..20).map(|_| r.resolve(&image, &keyring, None))).await;
        for res in &results {
            let e = res.as_ref().unwrap_err();
            assert_eq!(e.reason(), "RegistryUnavailable", "{e}");
            assert!(e.is_transient());
        }
        assert_eq!(r.stats().fetches, 1, "{:?}", r.stats());
        assert_eq!(r.stats().hits, 19);
    }
}
