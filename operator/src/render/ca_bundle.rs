//! The default CA bundle Secret (`spin-ca`) an executor with
//! `installDefaultCACerts: true` asks for: Mozilla's root store as a PEM file,
//! mounted by apps at `/etc/ssl/certs/ca-certificates.crt` so outbound HTTPS from
//! a Spin app works on images that ship no CA store.
//!
//! The roots come from `webpki-root-certs` (the rustls project's packaging of
//! the Mozilla CA list), so the bundle moves with a dependency update, not a
//! file someone has to remember to refresh.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::labels::{MANAGED_BY, MANAGED_BY_LABEL};
use crate::model::CA_CERT_KEY;

/// Label on the CA Secrets Spindle creates, naming the executor that asked first.
pub const CA_BUNDLE_EXECUTOR_LABEL: &str = "core.spinkube.dev/ca-bundle-for-executor";

/// Mozilla's root certificates, PEM-encoded, one after another.
pub fn mozilla_ca_bundle() -> String {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut pem = String::new();
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        let b64 = engine.encode(cert.as_ref());
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            // base64 output is ASCII, so every chunk is valid UTF-8.
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem
}

/// The CA Secret `name` in `namespace`. Not owned by the executor: apps of
/// other executors may mount it, and deleting an executor must not break them
/// (spin-operator creates it once per namespace and leaves it, too).
pub fn ca_bundle_secret(namespace: &str, name: &str, executor: &str, bundle: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
                (CA_BUNDLE_EXECUTOR_LABEL.to_owned(), executor.to_owned()),
            ])),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            CA_CERT_KEY.to_owned(),
            ByteString(bundle.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_is_every_mozilla_root_as_pem() {
        let pem = mozilla_ca_bundle();
        let n = webpki_root_certs::TLS_SERVER_ROOT_CERTS.len();
        assert!(n > 100, "Mozilla's store has well over 100 roots, got {n}");
        assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----\n").count(), n);
        assert_eq!(pem.matches("-----END CERTIFICATE-----\n").count(), n);
        // Lines are at most 64 characters (RFC 7468) and decode back to the DER.
        let first = pem
            .split("-----BEGIN CERTIFICATE-----\n")
            .nth(1)
            .and_then(|b| b.split("-----END CERTIFICATE-----").next())
            .expect("a first certificate");
        assert!(first.lines().all(|l| l.len() <= 64));
        let der = base64::engine::general_purpose::STANDARD
            .decode(first.replace('\n', ""))
            .expect("base64");
        assert_eq!(der, webpki_root_certs::TLS_SERVER_ROOT_CERTS[0].as_ref());
        // A Secret holds at most 1 MiB.
        assert!(pem.len() < 1024 * 1024, "bundle is {} bytes", pem.len());
    }

    #[test]
    fn secret_holds_the_bundle_under_the_mounted_key() {
        let s = ca_bundle_secret("ns", "spin-ca", "shim", "PEM");
        assert_eq!(s.metadata.name.as_deref(), Some("spin-ca"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("ns"));
        let labels = s.metadata.labels.as_ref().expect("labels");
        assert_eq!(
            labels.get(MANAGED_BY_LABEL).map(String::as_str),
            Some(MANAGED_BY)
        );
        assert_eq!(
            labels.get(CA_BUNDLE_EXECUTOR_LABEL).map(String::as_str),
            Some("shim")
        );
        assert!(s.metadata.owner_references.is_none());
        let data = s.data.expect("data");
        assert_eq!(
            data.get(CA_CERT_KEY).map(|b| b.0.as_slice()),
            Some(&b"PEM"[..])
        );
    }
}
