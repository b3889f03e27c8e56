//! Image references: parsing, normalization and digest pinning.
//!
//! Parsing follows the distribution reference grammar (via `oci-client`):
//! `nginx` is `docker.io/library/nginx:latest`, `index.docker.io` is
//! `docker.io`. A pinned reference keeps the tag for readability:
//! `registry/repo:tag@sha256:…` (kubelet and containerd pull by the digest
//! and ignore the tag when both are present); a reference written with only
//! a digest pins to `registry/repo@sha256:…`.

use std::fmt;
use std::net::IpAddr;

use oci_client::Reference;

use super::Error;

/// A parsed, normalized image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    inner: Reference,
}

impl ImageRef {
    /// Parse `s` (as written in `spec.image`).
    pub fn parse(s: &str) -> Result<Self, Error> {
        let invalid = |message: String| Error::InvalidReference {
            reference: s.to_string(),
            message,
        };
        if s.trim() != s || s.is_empty() {
            return Err(invalid(
                "must be non-empty and contain no surrounding whitespace".into(),
            ));
        }
        let inner = Reference::try_from(s).map_err(|e| invalid(e.to_string()))?;
        if inner.repository().bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid("repository names must be lowercase".into()));
        }
        if let Some(d) = inner.digest()
            && !d.starts_with("sha256:")
        {
            return Err(invalid("only sha256 digests are supported".into()));
        }
        Ok(ImageRef { inner })
    }

    /// Registry as written after normalization, with port: `ghcr.io`,
    /// `127.0.0.1:5000`, `docker.io`.
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// Host part of the registry, without port.
    pub fn host(&self) -> &str {
        split_host_port(self.registry()).0
    }

    /// Port of the registry, if one is written.
    pub fn port(&self) -> Option<&str> {
        split_host_port(self.registry()).1
    }

    /// Repository path, e.g. `library/nginx`.
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// Tag, if any (`latest` is filled in when neither tag nor digest is written).
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// Digest, if the reference is pinned.
    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    /// Whether the registry is on the loopback interface (127.0.0.0/8,
    /// `localhost`, `::1`): the only registries reached over plain HTTP.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(self.host())
    }

    /// The reference pinned to `digest`: `registry/repo:tag@digest`, or
    /// `registry/repo@digest` when no tag was written.
    pub fn pinned(&self, digest: &str) -> String {
        match self.tag() {
            Some(tag) => format!("{}:{tag}@{digest}", self.name()),
            None => format!("{}@{digest}", self.name()),
        }
    }

    /// The same repository at another digest (for index entries and blobs).
    pub(crate) fn with_digest(&self, digest: &str) -> Reference {
        Reference::with_digest(
            self.registry().to_string(),
            self.repository().to_string(),
            digest.to_string(),
        )
    }

    pub(crate) fn oci(&self) -> &Reference {
        &self.inner
    }
}

impl fmt::Display for ImageRef {
    /// The normalized reference: `registry/repo:tag`, `registry/repo@digest`
    /// or `registry/repo:tag@digest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner)
    }
}

/// Whether a pinned reference (as stored in `status.resolvedImage`) was
/// resolved from `spec_image`: same repository and tag, or, for a spec image
/// written with a digest, exactly that digest. Used to decide whether the
/// status value can be reused without asking the registry again.
pub fn pinned_matches(spec_image: &str, resolved: &str) -> bool {
    let (Ok(spec), Ok(pinned)) = (ImageRef::parse(spec_image), ImageRef::parse(resolved)) else {
        return false;
    };
    if pinned.digest().is_none() || spec.name() != pinned.name() {
        return false;
    }
    match spec.digest() {
        Some(d) => pinned.digest() == Some(d),
        None => spec.tag() == pinned.tag(),
    }
}

/// Split `host[:port]` (IPv6 literals in brackets).
pub(crate) fn split_host_port(registry: &str) -> (&str, Option<&str>) {
    if let Some(rest) = registry.strip_prefix('[')
        && let Some(end) = rest.find(']')
    {
        let host = &registry[..end + 2];
        let port = registry[end + 2..].strip_prefix(':');
        return (host, port);
    }
    match registry.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (registry, None),
    }
}

/// `localhost`, 127.0.0.0/8 or `::1` (brackets allowed).
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalizes_docker_hub() {
        let r = ImageRef::parse("nginx").unwrap();
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.repository(), "library/nginx");
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.pinned(D), format!("docker.io/library/nginx:latest@{D}"));
        let r = ImageRef::parse("index.docker.io/foo/bar:1").unwrap();
        assert_eq!(r.registry(), "docker.io");
    }

    #[test]
    fn pins_keep_tag_or_digest_only() {
        let r = ImageRef::parse("ghcr.io/org/app:v1").unwrap();
        assert_eq!(r.pinned(D), format!("ghcr.io/org/app:v1@{D}"));
        let r = ImageRef::parse(&format!("ghcr.io/org/app@{D}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.pinned(D), format!("ghcr.io/org/app@{D}"));
    }

    #[test]
    fn rejects_invalid() {
        for bad in [
            "",
            " x",
            "UPPER/case",
            "a b",
            "ghcr.io/x@sha256:zz",
            "x@md5:0123456789abcdef0123456789abcdef",
        ] {
            let e = ImageRef::parse(bad).unwrap_err();
            assert_eq!(e.reason(), "InvalidReference", "{bad}");
        }
    }

    #[test]
    fn loopback_detection() {
        assert!(ImageRef::parse("127.0.0.1:5000/a:1").unwrap().is_loopback());
        assert!(ImageRef::parse("127.3.4.5:5000/a:1").unwrap().is_loopback());
        assert!(ImageRef::parse("localhost:5000/a:1").unwrap().is_loopback());
        assert!(ImageRef::parse("localhost/a:1").unwrap().is_loopback());
        assert!(!ImageRef::parse("10.0.0.1:5000/a:1").unwrap().is_loopback());
        assert!(!ImageRef::parse("ghcr.io/a:1").unwrap().is_loopback());
        assert!(
            !ImageRef::parse("localhost.evil.com/a:1")
                .unwrap()
                .is_loopback()
        );
        assert!(is_loopback_host("[::1]"));
        assert_eq!(split_host_port("[::1]:5000"), ("[::1]", Some("5000")));
        assert_eq!(split_host_port("r.io:443"), ("r.io", Some("443")));
        assert_eq!(split_host_port("r.io"), ("r.io", None));
    }

    #[test]
    fn pinned_matching() {
        let pinned = format!("ghcr.io/org/app:v1@{D}");
        assert!(pinned_matches("ghcr.io/org/app:v1", &pinned));
        assert!(!pinned_matches("ghcr.io/org/app:v2", &pinned));
        assert!(!pinned_matches("ghcr.io/org/other:v1", &pinned));
        assert!(pinned_matches(
            &format!("ghcr.io/org/app@{D}"),
            &format!("ghcr.io/org/app@{D}")
        ));
        assert!(!pinned_matches("ghcr.io/org/app:v1", "ghcr.io/org/app:v1"));
        assert!(pinned_matches(
            "nginx",
            &format!("docker.io/library/nginx:latest@{D}")
        ));
    }
}
