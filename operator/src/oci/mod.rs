//! Wasm OCI artifacts: resolve `spec.image` to a digest, check that it is a
//! format the Spin shim runs, read registry credentials from
//! `imagePullSecrets`, and package Spin apps (`spindle push`).
//!
//! One concept per module:
//! - [`reference`]: parsing image references, digest pinning, loopback checks;
//! - [`credentials`]: `imagePullSecrets` → per-registry credentials, matched
//!   the way the kubelet does;
//! - [`format`]: the media types of the three formats the shim runs, and the
//!   pure classification of manifests (shared by resolve and push);
//! - [`resolver`]: registry round trips, the cache and in-flight de-duplication;
//! - [`push`]: building and pushing `spin registry push`-format artifacts and
//!   single components;
//! - [`error`]: the resolver's error type, with a condition `reason()`;
//! - [`app`]: the per-app decision the SpinApp reconciler makes (reuse the
//!   status digest, resolve, or keep the last digest on registry errors).
//!
//! See `docs/oci.md` for the user-facing description.

pub mod app;
pub mod credentials;
pub mod error;
pub mod format;
pub mod push;
pub mod reference;
pub mod resolver;

pub use credentials::{Credentials, Keyring};
pub use error::Error;
pub use format::ImageFormat;
pub use reference::ImageRef;
pub use resolver::{
    IMAGE_REFRESH_INTERVAL_ANNOTATION, PlainHttp, Resolved, Resolver, ResolverConfig,
    refresh_interval,
};

/// Install the process-wide rustls crypto provider (ring) used by the
/// registry client, once. Safe to call many times; a provider installed by
/// someone else first is kept.
pub(crate) fn ensure_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
