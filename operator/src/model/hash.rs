//! The pod template's config hash: changes exactly when something the pods
//! read at start (runtime config, referenced Secret/ConfigMap keys) changes.

use sha2::{Digest, Sha256};

/// Where the runtime config comes from, as hashed.
pub(crate) enum RuntimeConfigMaterial<'a> {
    /// The rendered TOML.
    Generated(&'a str),
    /// The user's Secret and the bytes of its `runtime-config.toml` key.
    FromSecret { name: &'a str, content: &'a [u8] },
}

/// One Secret/ConfigMap key an env var reads; `value` is `None` when an
/// optional reference is absent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ReferencedKey<'a> {
    pub kind: &'static str,
    pub name: &'a str,
    pub key: &'a str,
    pub value: Option<&'a [u8]>,
}

/// Hex of the first 16 bytes of a SHA-256 over length-prefixed fields, so no
/// two different inputs share an encoding. Only the digest leaves this function.
pub(crate) fn config_hash(
    runtime_config: RuntimeConfigMaterial<'_>,
    referenced: &[ReferencedKey<'_>],
) -> String {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(b"spindle-config-hash-v1");
    match runtime_config {
        RuntimeConfigMaterial::Generated(toml) => {
            field(b"generated");
            field(toml.as_bytes());
        }
        RuntimeConfigMaterial::FromSecret { name, content } => {
            field(b"from-secret");
            field(name.as_bytes());
            field(content);
        }
    }
    let mut referenced = referenced.to_vec();
    referenced.sort();
    referenced.dedup();
    for r in &referenced {
        field(r.kind.as_bytes());
        field(r.name.as_bytes());
        field(r.key.as_bytes());
        match r.value {
            Some(v) => {
                field(b"present");
                field(v);
            }
            None => field(b"absent"),
        }
    }
    let digest = h.finalize();
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(name: &'a str, value: Option<&'a [u8]>) -> ReferencedKey<'a> {
        ReferencedKey {
            kind: "Secret",
            name,
            key: "k",
            value,
        }
    }

    #[test]
    fn stable_and_sensitive_to_every_input() {
        let base = config_hash(
            RuntimeConfigMaterial::Generated("a"),
            &[key("s", Some(b"v"))],
        );
        assert_eq!(base.len(), 32);
        assert!(base.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            base,
            config_hash(
                RuntimeConfigMaterial::Generated("a"),
                &[key("s", Some(b"v"))]
            )
        );
        let variants = [
            config_hash(
                RuntimeConfigMaterial::Generated("b"),
                &[key("s", Some(b"v"))],
            ),
            config_hash(
                RuntimeConfigMaterial::Generated("a"),
                &[key("s", Some(b"w"))],
            ),
            config_hash(RuntimeConfigMaterial::Generated("a"), &[key("s", None)]),
            config_hash(
                RuntimeConfigMaterial::Generated("a"),
                &[key("t", Some(b"v"))],
            ),
            config_hash(RuntimeConfigMaterial::Generated("a"), &[]),
            config_hash(
                RuntimeConfigMaterial::FromSecret {
                    name: "a",
                    content: b"",
                },
                &[key("s", Some(b"v"))],
            ),
        ];
        for v in variants {
            assert_ne!(v, base);
        }
    }

    #[test]
    fn order_and_duplicates_of_references_do_not_matter() {
        let a = key("a", Some(b"1"));
        let b = key("b", Some(b"2"));
        assert_eq!(
            config_hash(
                RuntimeConfigMaterial::Generated(""),
                &[a.clone(), b.clone()]
            ),
            config_hash(RuntimeConfigMaterial::Generated(""), &[b, a.clone(), a])
        );
    }

    #[test]
    fn length_prefixing_prevents_ambiguity() {
        let ab = ReferencedKey {
            kind: "Secret",
            name: "ab",
            key: "c",
            value: Some(b""),
        };
        let a_bc = ReferencedKey {
            kind: "Secret",
            name: "a",
            key: "bc",
            value: Some(b""),
        };
        assert_ne!(
            config_hash(RuntimeConfigMaterial::Generated(""), &[ab]),
            config_hash(RuntimeConfigMaterial::Generated(""), &[a_bc])
        );
    }
}
