//! Reading keys of the Secrets and ConfigMaps an app references.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};

/// Why a referenced key could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefError {
    /// The object is not in the map the controller fetched.
    ObjectNotFound,
    /// The object exists but has no such key.
    KeyNotFound,
}

/// The bytes of `key` in Secret `name`. `data` is already base64-decoded by
/// k8s-openapi; `stringData` is only seen on objects that were never stored
/// (tests, dry runs) and wins over `data`, as when the apiserver merges it.
pub(crate) fn secret_value<'a>(
    secrets: &'a BTreeMap<String, Secret>,
    name: &str,
    key: &str,
) -> Result<&'a [u8], RefError> {
    let secret = secrets.get(name).ok_or(RefError::ObjectNotFound)?;
    if let Some(v) = secret.string_data.as_ref().and_then(|d| d.get(key)) {
        return Ok(v.as_bytes());
    }
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.0.as_slice())
        .ok_or(RefError::KeyNotFound)
}

/// The bytes of `key` in ConfigMap `name` (`data`, then `binaryData`).
pub(crate) fn config_map_value<'a>(
    config_maps: &'a BTreeMap<String, ConfigMap>,
    name: &str,
    key: &str,
) -> Result<&'a [u8], RefError> {
    let cm = config_maps.get(name).ok_or(RefError::ObjectNotFound)?;
    if let Some(v) = cm.data.as_ref().and_then(|d| d.get(key)) {
        return Ok(v.as_bytes());
    }
    cm.binary_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.0.as_slice())
        .ok_or(RefError::KeyNotFound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn reads_data_string_data_and_binary_data() {
        let mut secrets = BTreeMap::new();
        secrets.insert(
            "s".to_owned(),
            Secret {
                data: Some([("a".to_owned(), ByteString(b"A".to_vec()))].into()),
                string_data: Some(
                    [
                        ("b".to_owned(), "B".to_owned()),
                        ("a".to_owned(), "A2".to_owned()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
        );
        assert_eq!(secret_value(&secrets, "s", "a"), Ok(&b"A2"[..]));
        assert_eq!(secret_value(&secrets, "s", "b"), Ok(&b"B"[..]));
        assert_eq!(secret_value(&secrets, "s", "c"), Err(RefError::KeyNotFound));
        assert_eq!(
            secret_value(&secrets, "t", "a"),
            Err(RefError::ObjectNotFound)
        );

        let mut cms = BTreeMap::new();
        cms.insert(
            "c".to_owned(),
            ConfigMap {
                data: Some([("x".to_owned(), "X".to_owned())].into()),
                binary_data: Some([("y".to_owned(), ByteString(vec![0xff]))].into()),
                ..Default::default()
            },
        );
        assert_eq!(config_map_value(&cms, "c", "x"), Ok(&b"X"[..]));
        assert_eq!(config_map_value(&cms, "c", "y"), Ok(&[0xff][..]));
        assert_eq!(config_map_value(&cms, "c", "z"), Err(RefError::KeyNotFound));
        assert_eq!(
            config_map_value(&cms, "d", "x"),
            Err(RefError::ObjectNotFound)
        );
    }
}
