//! Labels, selectors and metadata shared by every object Spindle creates.
//!
//! The selector keys are spin-operator's, so Deployments it made can be
//! adopted (a Deployment's selector is immutable).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::model::App;

/// `app.kubernetes.io/managed-by`.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "spindle";
/// `core.spinkube.dev/app-name`: the app an object belongs to.
pub const APP_NAME_LABEL: &str = "core.spinkube.dev/app-name";
/// Value of the per-app status label that selects serving pods.
pub const STATUS_READY: &str = "ready";

/// `core.spinkube.dev/app.<app>.status`.
pub fn status_label_key(app_name: &str) -> String {
    format!("core.spinkube.dev/app.{app_name}.status")
}

/// Labels of every object Spindle creates for the app.
pub fn object_labels(app_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
        (APP_NAME_LABEL.to_owned(), app_name.to_owned()),
    ])
}

/// The Deployment's selector.
pub fn selector_labels(app_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (APP_NAME_LABEL.to_owned(), app_name.to_owned()),
        (status_label_key(app_name), STATUS_READY.to_owned()),
    ])
}

/// The Service's selector (only the status label, as in spin-operator).
pub fn service_selector(app_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(status_label_key(app_name), STATUS_READY.to_owned())])
}

/// The Deployment selector as a label-selector string, for the scale
/// subresource's `status.selector` (what HPAs read).
pub fn selector_string(app_name: &str) -> String {
    selector_labels(app_name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Pod labels: the user's podLabels plus the selector labels (which win).
pub fn pod_labels(app: &App) -> BTreeMap<String, String> {
    let mut labels = app.pod_labels.clone();
    labels.extend(selector_labels(&app.name));
    labels
}

/// The controller reference to the SpinApp: garbage collection and `Owns` watches.
pub fn owner_reference(app: &App) -> OwnerReference {
    OwnerReference {
        api_version: "core.spinkube.dev/v1alpha1".to_owned(),
        kind: "SpinApp".to_owned(),
        name: app.name.clone(),
        uid: app.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Metadata of a child object; empty annotations are left out.
pub(crate) fn object_meta(
    app: &App,
    name: String,
    annotations: &BTreeMap<String, String>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(app.namespace.clone()),
        labels: Some(object_labels(&app.name)),
        annotations: non_empty(annotations),
        owner_references: Some(vec![owner_reference(app)]),
        ..Default::default()
    }
}

pub(crate) fn non_empty<K: Clone + Ord, V: Clone>(map: &BTreeMap<K, V>) -> Option<BTreeMap<K, V>> {
    (!map.is_empty()).then(|| map.clone())
}

pub(crate) fn non_empty_vec<T: Clone>(items: &[T]) -> Option<Vec<T>> {
    (!items.is_empty()).then(|| items.to_vec())
}
