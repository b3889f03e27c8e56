//! Index from referenced Secrets/ConfigMaps back to the SpinApps that use them.
//!
//! Filled by the SpinApp reconciler from [`crate::model::references`] each
//! time it reconciles an app, read by the watch mappers: a change to a
//! referenced object re-reconciles exactly the apps that read it. An app that
//! has not been reconciled yet is not in the index, but its first reconcile
//! reads the referenced objects anyway.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use crate::model::References;

/// Kind of a referenced object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefKind {
    /// A Secret.
    Secret,
    /// A ConfigMap.
    ConfigMap,
}

type Key = (RefKind, String, String); // (kind, namespace, name)

/// The index; cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct ReferenceIndex {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// (kind, namespace, name) → app names in that namespace.
    users: HashMap<Key, BTreeSet<String>>,
    /// (namespace, app) → what it referenced at its last reconcile.
    by_app: HashMap<(String, String), References>,
}

impl ReferenceIndex {
    /// Record what app `namespace/app` references now.
    pub fn set(&self, namespace: &str, app: &str, refs: &References) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let app_key = (namespace.to_owned(), app.to_owned());
        if inner.by_app.get(&app_key) == Some(refs) {
            return;
        }
        if let Some(old) = inner.by_app.remove(&app_key) {
            for key in keys(namespace, &old) {
                if let Some(users) = inner.users.get_mut(&key) {
                    users.remove(app);
                    if users.is_empty() {
                        inner.users.remove(&key);
                    }
                }
            }
        }
        for key in keys(namespace, refs) {
            inner.users.entry(key).or_default().insert(app.to_owned());
        }
        if !refs.secrets.is_empty() || !refs.config_maps.is_empty() {
            inner.by_app.insert(app_key, refs.clone());
        }
    }

    /// Forget an app (it was deleted).
    pub fn remove(&self, namespace: &str, app: &str) {
        self.set(namespace, app, &References::default());
    }

    /// The apps in `namespace` that reference the object.
    pub fn users(&self, kind: RefKind, namespace: &str, name: &str) -> Vec<String> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .users
            .get(&(kind, namespace.to_owned(), name.to_owned()))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Number of apps with references (for tests and diagnostics).
    pub fn apps(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_app
            .len()
    }
}

fn keys(namespace: &str, refs: &References) -> Vec<Key> {
    refs.secrets
        .iter()
        .map(|n| (RefKind::Secret, namespace.to_owned(), n.clone()))
        .chain(
            refs.config_maps
                .iter()
                .map(|n| (RefKind::ConfigMap, namespace.to_owned(), n.clone())),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(secrets: &[&str], cms: &[&str]) -> References {
        References {
            secrets: secrets.iter().map(|s| (*s).to_owned()).collect(),
            config_maps: cms.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn maps_objects_to_apps_and_follows_changes() {
        let index = ReferenceIndex::default();
        index.set("a", "app1", &refs(&["s1", "shared"], &["c1"]));
        index.set("a", "app2", &refs(&["shared"], &[]));
        index.set("b", "app3", &refs(&["shared"], &[]));
        assert_eq!(
            index.users(RefKind::Secret, "a", "shared"),
            vec!["app1", "app2"]
        );
        assert_eq!(index.users(RefKind::Secret, "b", "shared"), vec!["app3"]);
        assert_eq!(index.users(RefKind::ConfigMap, "a", "c1"), vec!["app1"]);
        assert!(
            index.users(RefKind::ConfigMap, "a", "s1").is_empty(),
            "kinds are separate"
        );

        index.set("a", "app1", &refs(&["s2"], &[]));
        assert!(index.users(RefKind::Secret, "a", "s1").is_empty());
        assert_eq!(index.users(RefKind::Secret, "a", "shared"), vec!["app2"]);
        assert_eq!(index.users(RefKind::Secret, "a", "s2"), vec!["app1"]);

        index.remove("a", "app2");
        assert!(index.users(RefKind::Secret, "a", "shared").is_empty());
        assert_eq!(index.apps(), 2);
    }
}
