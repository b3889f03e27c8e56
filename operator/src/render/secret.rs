//! The generated runtime-config Secret.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::labels::object_meta;
use crate::model::{App, RUNTIME_CONFIG_KEY, RuntimeConfigSource, runtime_config_secret_name};

/// `<app>-runtime-config` holding the rendered TOML, or `None` with
/// `loadFromSecret` (the user's Secret is mounted instead). Uses `data`, not
/// `stringData`, so server-side apply compares like with like.
pub fn runtime_config_secret(app: &App) -> Option<Secret> {
    let RuntimeConfigSource::Generated { toml } = &app.runtime_config else {
        return None;
    };
    Some(Secret {
        metadata: object_meta(app, runtime_config_secret_name(&app.name), &BTreeMap::new()),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            RUNTIME_CONFIG_KEY.to_owned(),
            ByteString(toml.as_bytes().to_vec()),
        )])),
        ..Default::default()
    })
}
