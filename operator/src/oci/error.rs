//! Errors of image resolution, each with a status-condition reason.
//!
//! Messages name the registry, repository and what went wrong; they never
//! contain credentials (registry clients put credentials in headers, never in
//! URLs, and registry response bodies quoted here are truncated).

use oci_client::errors::{OciDistributionError, OciErrorCode};

/// Why an image could not be resolved to a runnable Spin artifact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `spec.image` is not a valid OCI reference.
    #[error("invalid image reference {reference:?}: {message}")]
    InvalidReference {
        /// The reference as written.
        reference: String,
        /// What is wrong with it.
        message: String,
    },
    /// The registry answered 401/403: no credentials, or wrong ones.
    #[error(
        "registry {registry} denied access to {repository} ({detail}); check that the app's imagePullSecrets hold credentials for {registry}"
    )]
    Unauthorized {
        /// Registry host.
        registry: String,
        /// Repository in that registry.
        repository: String,
        /// The registry's answer.
        detail: String,
    },
    /// Unknown repository, tag or digest.
    #[error("{reference} was not found in registry {registry}: {detail}")]
    NotFound {
        /// The reference that was looked up.
        reference: String,
        /// Registry host.
        registry: String,
        /// The registry's answer.
        detail: String,
    },
    /// Connection errors, timeouts, 5xx and 429 answers: worth retrying.
    #[error("registry {registry} is unavailable: {detail}")]
    RegistryUnavailable {
        /// Registry host.
        registry: String,
        /// What failed.
        detail: String,
    },
    /// The artifact exists but is none of the formats the Spin shim runs.
    #[error(
        "{reference} is not a Spin app: {detail} (config media type: {config_media_type}; layer media types: [{}]; platform: {})",
        layer_media_types.join(", "),
        platform.as_deref().unwrap_or("unknown")
    )]
    NotASpinApp {
        /// The reference that was resolved (digest-pinned when known).
        reference: String,
        /// Media type of the manifest's config (or of the manifest for an index).
        config_media_type: String,
        /// Media types of the layers (or of the index entries), in order.
        layer_media_types: Vec<String>,
        /// `os/architecture` from the image config or index entries, when known.
        platform: Option<String>,
        /// Why it was rejected.
        detail: String,
    },
    /// The registry returned something that is not a valid manifest or blob
    /// (unparseable JSON, digest mismatch).
    #[error("registry {registry} returned an invalid artifact for {reference}: {detail}")]
    InvalidArtifact {
        /// The reference that was resolved.
        reference: String,
        /// Registry host.
        registry: String,
        /// What is wrong.
        detail: String,
    },
}

impl Error {
    /// The `reason` of the `ImageResolved=False` status condition.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidReference { .. } => "InvalidReference",
            Error::Unauthorized { .. } => "Unauthorized",
            Error::NotFound { .. } => "NotFound",
            Error::RegistryUnavailable { .. } => "RegistryUnavailable",
            Error::NotASpinApp { .. } => "NotASpinApp",
            Error::InvalidArtifact { .. } => "InvalidArtifact",
        }
    }

    /// Whether retrying later (with backoff) can succeed without anyone
    /// changing the SpinApp or the registry content. Only registry outages
    /// are transient; the others need a fix (credentials, tag, image).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::RegistryUnavailable { .. })
    }

    /// Map an `oci-client` error for a request about `reference` in `registry`.
    pub(crate) fn from_oci(
        err: OciDistributionError,
        registry: &str,
        repository: &str,
        reference: &str,
    ) -> Error {
        let unauthorized = |detail: String| Error::Unauthorized {
            registry: registry.to_string(),
            repository: repository.to_string(),
            detail,
        };
        let not_found = |detail: String| Error::NotFound {
            reference: reference.to_string(),
            registry: registry.to_string(),
            detail,
        };
        let unavailable = |detail: String| Error::RegistryUnavailable {
            registry: registry.to_string(),
            detail,
        };
        let invalid = |detail: String| Error::InvalidArtifact {
            reference: reference.to_string(),
            registry: registry.to_string(),
            detail,
        };
        match err {
            OciDistributionError::UnauthorizedError { .. } => {
                unauthorized("401 Unauthorized".into())
            }
            OciDistributionError::AuthenticationFailure(msg) => {
                unauthorized(format!("token request failed: {}", truncate(&msg)))
            }
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                let detail = truncate(
                    &envelope
                        .errors
                        .iter()
                        .map(|e| format!("{:?}: {}", e.code, e.message))
                        .collect::<Vec<_>>()
                        .join("; "),
                );
                if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    unauthorized(detail)
                } else if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::NotFound
                            | OciErrorCode::BlobUnknown
                    )
                }) {
                    not_found(detail)
                } else if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Toomanyrequests))
                {
                    unavailable(detail)
                } else {
                    invalid(detail)
                }
            }
            OciDistributionError::ServerError { code, message, .. } => {
                let detail = format!("HTTP {code}: {}", truncate(&message));
                match code {
                    401 | 403 => unauthorized(detail),
                    404 => not_found(detail),
                    429 | 500..=599 => unavailable(detail),
                    _ => invalid(detail),
                }
            }
            OciDistributionError::ImageManifestNotFoundError(msg) => not_found(truncate(&msg)),
            OciDistributionError::RequestError(e) if e.status().is_some() => {
                let code = e.status().map(|s| s.as_u16()).unwrap_or_default();
                let detail = format!("HTTP {code}");
                match code {
                    401 | 403 => unauthorized(detail),
                    404 => not_found(detail),
                    429 | 500..=599 => unavailable(detail),
                    _ => invalid(detail),
                }
            }
            OciDistributionError::RequestError(e) => {
                let kind = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect error"
                } else {
                    "request error"
                };
                unavailable(describe_chain(kind, &e))
            }
            OciDistributionError::IoError(e) => unavailable(format!("I/O error: {e}")),
            other => invalid(truncate(&other.to_string())),
        }
    }
}

/// An error and its source chain on one line, e.g. "connect error: tcp
/// connect error: Connection refused (os error 111)".
fn describe_chain(kind: &str, e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = kind.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    truncate(&msg)
}

/// Registry answers can be long HTML pages; keep status readable.
pub(crate) fn truncate(s: &str) -> String {
    const MAX: usize = 300;
    let s = s.trim();
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_and_transience() {
        let e = Error::RegistryUnavailable {
            registry: "r".into(),
            detail: "d".into(),
        };
        assert_eq!(e.reason(), "RegistryUnavailable");
        assert!(e.is_transient());
        let e = Error::NotFound {
            reference: "r/x:1".into(),
            registry: "r".into(),
            detail: "d".into(),
        };
        assert_eq!(e.reason(), "NotFound");
        assert!(!e.is_transient());
    }

    #[test]
    fn not_a_spin_app_names_media_types_and_platform() {
        let e = Error::NotASpinApp {
            reference: "r/x@sha256:00".into(),
            config_media_type: "application/vnd.oci.image.config.v1+json".into(),
            layer_media_types: vec!["application/vnd.oci.image.layer.v1.tar+gzip".into()],
            platform: Some("linux/amd64".into()),
            detail: "a container image".into(),
        };
        let msg = e.to_string();
        assert!(
            msg.contains("application/vnd.oci.image.layer.v1.tar+gzip"),
            "{msg}"
        );
        assert!(msg.contains("linux/amd64"), "{msg}");
        assert_eq!(e.reason(), "NotASpinApp");
    }

    #[test]
    fn server_errors_map_by_status() {
        let map = |code| {
            Error::from_oci(
                OciDistributionError::ServerError {
                    code,
                    url: "http://r/v2/x/manifests/1".into(),
                    message: "m".into(),
                },
                "r",
                "x",
                "r/x:1",
            )
            .reason()
        };
        assert_eq!(map(401), "Unauthorized");
        assert_eq!(map(403), "Unauthorized");
        assert_eq!(map(404), "NotFound");
        assert_eq!(map(503), "RegistryUnavailable");
        assert_eq!(map(429), "RegistryUnavailable");
        assert_eq!(map(400), "InvalidArtifact");
    }

    #[test]
    fn truncates_on_char_boundary() {
        let long = "é".repeat(400);
        let t = truncate(&long);
        assert!(t.len() <= 304);
        assert!(t.ends_with('…'));
    }
}
