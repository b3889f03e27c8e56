//! Writing children: server-side apply as field manager `spindle`, and
//! deleting only what Spindle owns.
//!
//! Idempotency: [`apply`] skips the request when nothing Spindle manages would
//! change. It stamps every applied object with [`APPLIED_HASH_ANNOTATION`], a
//! hash of exactly what Spindle applied, and skips the write when the current
//! object carries the same hash *and* still contains every field of the desired
//! object (so a field another actor changed or removed is put back). A field
//! Spindle stops setting changes the hash, so removals are applied too.
//!
//! Ownership: an existing object is only overwritten when it has an
//! ownerReference to the app being reconciled, and only deleted when it also
//! still has that ownerReference (checked again by a UID precondition).

use std::fmt::Debug;

use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The field manager of every write Spindle makes.
pub const FIELD_MANAGER: &str = "spindle";
/// Label on every child Spindle creates; owned watches are filtered by it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "spindle";
/// Label naming the SpinApp a child belongs to (spin-operator compatible).
pub const APP_NAME_LABEL: &str = "core.spinkube.dev/app-name";
/// Hash of the object as Spindle last applied it (see the module docs).
pub const APPLIED_HASH_ANNOTATION: &str = "spindle.spinkube.dev/applied-hash";

/// Errors of the apply/delete helpers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver rejected a request.
    #[error("{verb} {kind} {name:?}: {source}")]
    Kube {
        /// `get`, `apply` or `delete`.
        verb: &'static str,
        /// Kind of the object.
        kind: String,
        /// Name of the object.
        name: String,
        /// The underlying error.
        #[source]
        source: kube::Error,
    },
    /// The object could not be serialized (a bug).
    #[error("serializing {kind} {name:?}: {source}")]
    Serialize {
        /// Kind of the object.
        kind: String,
        /// Name of the object.
        name: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// An object with the child's name exists but does not belong to the app.
    #[error(
        "a {kind} named {name:?} already exists and is not owned by this SpinApp; rename the SpinApp or delete/rename the existing {kind}"
    )]
    NotOwned {
        /// Kind of the object.
        kind: String,
        /// Name of the object.
        name: String,
    },
}

impl Error {
    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::Serialize { .. } => "serialize",
            Error::NotOwned { .. } => "not_owned",
        }
    }
}

/// What [`apply`] did.
#[derive(Debug)]
pub enum Applied<K> {
    /// Nothing Spindle manages differs; no request was sent.
    Unchanged(K),
    /// The object did not exist and was created.
    Created(K),
    /// The object existed and was changed.
    Updated(K),
}

impl<K> Applied<K> {
    /// The object as it is now in the cluster (or in the cache).
    pub fn object(&self) -> &K {
        match self {
            Applied::Unchanged(k) | Applied::Created(k) | Applied::Updated(k) => k,
        }
    }

    /// The object, by value.
    pub fn into_object(self) -> K {
        match self {
            Applied::Unchanged(k) | Applied::Created(k) | Applied::Updated(k) => k,
        }
    }

    /// `"Created"`, `"Updated"` or `None` when nothing was written.
    pub fn verb(&self) -> Option<&'static str> {
        match self {
            Applied::Unchanged(_) => None,
            Applied::Created(_) => Some("Created"),
            Applied::Updated(_) => Some("Updated"),
        }
    }
}

/// Server-side apply parameters: field manager `spindle`, forcing conflicts
/// (Spindle is the authority for the fields it sets).
pub fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Apply `desired` unless the current object already matches it.
///
/// `current` is the object as the reconciler last saw it (from its cache);
/// `None` means "not in the cache", in which case the object is read once, so
/// that an object Spindle does not own is never overwritten. `owner_uid` is
/// the UID of the SpinApp the child belongs to.
pub async fn apply<K>(
    api: &Api<K>,
    mut desired: K,
    current: Option<K>,
    owner_uid: &str,
) -> Result<Applied<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let kind = K::kind(&()).into_owned();
    let name = desired.name_any();
    let hash = applied_hash(&desired).map_err(|source| Error::Serialize {
        kind: kind.clone(),
        name: name.clone(),
        source,
    })?;
    desired
        .annotations_mut()
        .insert(APPLIED_HASH_ANNOTATION.to_owned(), hash.clone());

    let current = match current {
        Some(c) => Some(c),
        None => api.get_opt(&name).await.map_err(|source| Error::Kube {
            verb: "get",
            kind: kind.clone(),
            name: name.clone(),
            source,
        })?,
    };

    if let Some(current) = &current {
        if !is_owned_by(current, owner_uid) {
            return Err(Error::NotOwned { kind, name });
        }
        if up_to_date(&desired, current, &hash) {
            return Ok(Applied::Unchanged(current.clone()));
        }
    }

    let applied = api
        .patch(&name, &apply_params(), &Patch::Apply(&desired))
        .await
        .map_err(|source| Error::Kube {
            verb: "apply",
            kind,
            name,
            source,
        })?;
    Ok(match current {
        None => Applied::Created(applied),
        Some(_) => Applied::Updated(applied),
    })
}

/// Whether `current` (as stored) already has everything `desired` sets, and
/// was last applied from the same desired object.
pub fn up_to_date<K: Resource + Serialize>(desired: &K, current: &K, hash: &str) -> bool {
    if current
        .annotations()
        .get(APPLIED_HASH_ANNOTATION)
        .map(String::as_str)
        != Some(hash)
    {
        return false;
    }
    match (serde_json::to_value(desired), serde_json::to_value(current)) {
        (Ok(d), Ok(c)) => contains(&d, &c, false),
        _ => false,
    }
}

/// Hash of what Spindle applies (without the hash annotation itself).
pub fn applied_hash<K: Resource + Serialize>(desired: &K) -> Result<String, serde_json::Error> {
    let mut value = serde_json::to_value(desired)?;
    if let Some(metadata) = value
        .pointer_mut("/metadata")
        .and_then(Value::as_object_mut)
    {
        let now_empty = match metadata
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
        {
            Some(annotations) => {
                annotations.remove(APPLIED_HASH_ANNOTATION);
                annotations.is_empty()
            }
            None => false,
        };
        if now_empty || metadata.get("annotations").is_some_and(Value::is_null) {
            metadata.remove("annotations");
        }
    }
    // serde_json maps are sorted (no preserve_order), so this is canonical.
    let bytes = serde_json::to_vec(&value)?;
    let digest = Sha256::digest(&bytes);
    Ok(digest.iter().take(10).map(|b| format!("{b:02x}")).collect())
}

/// Whether the object has an ownerReference to the object with `owner_uid`.
pub fn is_owned_by<K: Resource>(obj: &K, owner_uid: &str) -> bool {
    obj.owner_references().iter().any(|r| r.uid == owner_uid)
}

/// Whether the object has a *controller* ownerReference to `owner_uid`.
pub fn is_controlled_by<K: Resource>(obj: &K, owner_uid: &str) -> bool {
    obj.owner_references()
        .iter()
        .any(|r| r.uid == owner_uid && r.controller == Some(true))
}

/// Delete `obj` if it is still owned by the app with `owner_uid`.
///
/// Returns whether a delete was sent. The delete carries a UID precondition, so
/// an object that was replaced meanwhile (same name, new UID) is left alone. A
/// missing object counts as deleted.
pub async fn delete_if_owned<K>(api: &Api<K>, obj: &K, owner_uid: &str) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    if !is_owned_by(obj, owner_uid) || obj.meta().deletion_timestamp.is_some() {
        return Ok(false);
    }
    let name = obj.name_any();
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: obj.uid(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(&name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(false),
        Err(source) => Err(Error::Kube {
            verb: "delete",
            kind: K::kind(&()).into_owned(),
            name,
            source,
        }),
    }
}

/// Whether every field of `desired` is present with the same value in `actual`.
///
/// - objects: every key of `desired` must be in `actual` (null or empty values
///   match a missing key, because the apiserver drops them);
/// - arrays: the elements of `desired` must appear in `actual` in order (other
///   actors may add elements to merge-keyed lists such as env or containers);
/// - under a `resources` key, strings that are Kubernetes quantities compare by
///   value (`1000m` equals `1`), because the apiserver canonicalizes them.
pub fn contains(desired: &Value, actual: &Value, in_resources: bool) -> bool {
    match (desired, actual) {
        (Value::Null, _) => true,
        (Value::Object(d), Value::Object(a)) => d.iter().all(|(k, dv)| match a.get(k) {
            Some(av) => contains(dv, av, in_resources || k == "resources"),
            None => is_empty(dv),
        }),
        (Value::Object(d), Value::Null) => d.values().all(is_empty),
        (Value::Array(d), Value::Array(a)) => {
            let mut rest = a.iter();
            d.iter()
                .all(|dv| rest.any(|av| contains(dv, av, in_resources)))
        }
        (Value::Array(d), Value::Null) => d.is_empty(),
        (Value::String(d), Value::String(a)) => {
            d == a
                || (in_resources
                    && matches!((parse_quantity(d), parse_quantity(a)), (Some(x), Some(y)) if x == y))
        }
        (Value::Number(d), Value::Number(a)) => d.as_f64() == a.as_f64(),
        (d, a) => d == a,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(o) => o.values().all(is_empty),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// A Kubernetes quantity as a number (enough precision to compare spellings
/// of the same value: `1Gi`, `1024Mi`, `0.5`, `500m`, `1e3`).
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use serde_json::json;

    #[test]
    fn contains_ignores_server_defaults_and_additions() {
        let desired = json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [
            {"name": "app", "image": "x:1", "ports": [{"containerPort": 80, "name": "http-app"}],
             "resources": {"limits": {"cpu": "0.5", "memory": "128Mi"}}}
        ]}}}, "metadata": {"annotations": {}}});
        let actual = json!({"spec": {"replicas": 2, "revisionHistoryLimit": 10, "template": {"spec": {"containers": [
            {"name": "sidecar", "image": "y"},
            {"name": "app", "image": "x:1", "terminationMessagePath": "/dev/termination-log",
             "ports": [{"containerPort": 80, "name": "http-app", "protocol": "TCP"}],
             "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}}}
        ]}}}, "metadata": {"uid": "u"}});
        assert!(contains(&desired, &actual, false));
    }

    #[test]
    fn contains_detects_changes_and_removals_by_others() {
        let desired = json!({"spec": {"replicas": 2, "env": [{"name": "A", "value": "1"}]}});
        assert!(!contains(
            &desired,
            &json!({"spec": {"replicas": 3, "env": [{"name": "A", "value": "1"}]}}),
            false
        ));
        assert!(!contains(
            &desired,
            &json!({"spec": {"replicas": 2, "env": []}}),
            false
        ));
        assert!(!contains(
            &desired,
            &json!({"spec": {"env": [{"name": "A", "value": "1"}]}}),
            false
        ));
        // Quantity equivalence only applies under `resources`.
        assert!(!contains(
            &json!({"value": "1000"}),
            &json!({"value": "1k"}),
            false
        ));
        assert!(contains(
            &json!({"resources": {"value": "1000"}}),
            &json!({"resources": {"value": "1k"}}),
            false
        ));
    }

    #[test]
    fn parses_quantities() {
        assert_eq!(parse_quantity("128Mi"), Some(134217728.0));
        assert_eq!(parse_quantity("0.5"), parse_quantity("500m"));
        assert_eq!(parse_quantity("1e3"), parse_quantity("1k"));
        assert_eq!(parse_quantity("1Gi"), parse_quantity("1024Mi"));
        assert_eq!(parse_quantity("abc"), None);
        assert_eq!(parse_quantity("12Xi"), None);
    }

    fn cm(data: &[(&str, &str)], hash: Option<&str>) -> ConfigMap {
        let mut cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("c".into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
            ),
            ..Default::default()
        };
        if let Some(h) = hash {
            cm.annotations_mut()
                .insert(APPLIED_HASH_ANNOTATION.into(), h.into());
        }
        cm
    }

    #[test]
    fn up_to_date_needs_same_hash_and_fields() {
        let desired = cm(&[("a", "1")], None);
        let hash = applied_hash(&desired).unwrap();
        assert!(up_to_date(
            &desired,
            &cm(&[("a", "1"), ("b", "2")], Some(&hash)),
            &hash
        ));
        assert!(
            !up_to_date(&desired, &cm(&[("a", "2")], Some(&hash)), &hash),
            "drift is repaired"
        );
        assert!(
            !up_to_date(&desired, &cm(&[("a", "1")], Some("other")), &hash),
            "removals change the hash"
        );
        assert!(!up_to_date(&desired, &cm(&[("a", "1")], None), &hash));
        // The hash ignores the annotation it is stored in.
        let stamped = cm(&[("a", "1")], Some(&hash));
        assert_eq!(applied_hash(&stamped).unwrap(), hash);
        assert_ne!(applied_hash(&cm(&[("a", "2")], None)).unwrap(), hash);
    }

    #[test]
    fn ownership() {
        let mut obj = cm(&[], None);
        assert!(!is_owned_by(&obj, "u1"));
        obj.owner_references_mut().push(OwnerReference {
            uid: "u1".into(),
            ..Default::default()
        });
        assert!(is_owned_by(&obj, "u1"));
        assert!(!is_controlled_by(&obj, "u1"));
        obj.owner_references_mut()[0].controller = Some(true);
        assert!(is_controlled_by(&obj, "u1"));
        assert!(!is_owned_by(&obj, "u2"));
    }
}
