//! SpinApps of the legacy group `core.spinoperator.dev` (see
//! [`crate::api::compat`]).
//!
//! A legacy object is converted with [`LegacySpinApp::to_canonical`] and
//! reconciled by the very same code as a canonical one
//! ([`super::spinapp::reconcile`]): same model, same render, same apply. What
//! differs is only where things point, and that is decided by the
//! [`Context`]'s [`AppGroup`]: children's ownerReferences, the `regarding` of
//! events and the status write go to the object the user applied. The legacy
//! controller has its own [`Context`] (its own reference index and backoff,
//! keyed by `namespace/name` like the canonical ones) sharing every cache.
//!
//! Name clash: a canonical and a legacy SpinApp with the same name in one
//! namespace would render the same children. The older object
//! (`creationTimestamp`; on a tie the canonical one) keeps them; the newer
//! gets `Ready=False`, reason `NameConflict`, and writes nothing
//! ([`name_conflict`]). Deleting the older one hands the name over: each
//! controller is triggered by the other group's objects of the same name.
//!
//! Triggers: the children, executor, RuntimeClass and referenced-object watch
//! streams are shared with the canonical controller; [`Tap`] copies the
//! events that concern legacy apps into a channel the legacy controller reads
//! (after the shared caches were updated, as for the canonical controller).
//!
//! When the legacy CRD is not installed (or not readable), the operator logs
//! it once and runs without this controller ([`Legacy::setup`]).

use std::borrow::Cow;
use std::sync::Arc;

use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use futures::stream::BoxStream;
use futures::{Future, FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use super::cache::{Synced, Watches, cached};
use super::references::{RefKind, ReferenceIndex};
use super::{Config, Context, Error, api_in, object_key, retry_after, spinapp};
use crate::api::compat::{LEGACY_GROUP, LegacySpinApp};
use crate::api::{SpinApp, SpinAppExecutor};
use crate::status::{self, ConditionProblem};

/// Controller name of the legacy SpinApps (metrics, logs).
const CONTROLLER: &str = "spinapp_legacy";

/// Which API group a SpinApp reconcile acts for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AppGroup {
    /// `core.spinkube.dev`.
    #[default]
    Canonical,
    /// `core.spinoperator.dev`.
    Legacy,
}

impl AppGroup {
    /// The controller name (metrics label, logs).
    pub fn controller(self) -> &'static str {
        match self {
            AppGroup::Canonical => "spinapp",
            AppGroup::Legacy => CONTROLLER,
        }
    }

    /// `apiVersion` of the group's SpinApps.
    pub fn api_version(self) -> Cow<'static, str> {
        match self {
            AppGroup::Canonical => SpinApp::api_version(&()),
            AppGroup::Legacy => LegacySpinApp::api_version(&()),
        }
    }

    /// The API group.
    pub fn group(self) -> &'static str {
        match self {
            AppGroup::Canonical => crate::api::GROUP,
            AppGroup::Legacy => LEGACY_GROUP,
        }
    }

    /// The kind as `kubectl` spells it unambiguously.
    pub fn display(self) -> &'static str {
        match self {
            AppGroup::Canonical => "SpinApp",
            AppGroup::Legacy => "SpinApp.core.spinoperator.dev",
        }
    }

    fn other(self) -> AppGroup {
        match self {
            AppGroup::Canonical => AppGroup::Legacy,
            AppGroup::Legacy => AppGroup::Canonical,
        }
    }
}

impl Context {
    /// The object events about `app` are about: the one the user applied.
    pub(crate) fn regarding(&self, app: &SpinApp) -> ObjectReference {
        let mut reference = app.object_ref(&());
        reference.api_version = Some(self.group.api_version().into_owned());
        reference
    }

    /// The controller ownerReference children of `app` carry.
    pub(crate) fn owner_ref(&self, app: &SpinApp) -> Option<OwnerReference> {
        let mut owner = app.controller_owner_ref(&())?;
        owner.api_version = self.group.api_version().into_owned();
        Some(owner)
    }
}

/// Whether an object of `group` with metadata `me` must leave the name to
/// `rival` (of the other group): the older one keeps it, a tie goes to the
/// canonical group.
fn yields_to(group: AppGroup, me: &ObjectMeta, rival: &ObjectMeta) -> bool {
    let created = |m: &ObjectMeta| m.creation_timestamp.as_ref().map(|t| t.0);
    match (created(me), created(rival)) {
        (Some(mine), Some(theirs)) if mine != theirs => theirs < mine,
        _ => group == AppGroup::Legacy,
    }
}

/// The `NameConflict` problem when an object of the other group with the
/// same name owns the name (see the module docs); `None` otherwise.
///
/// The caches say whether to look; a fresh read confirms, so that a rival
/// that was just deleted does not block the hand-over until the next retry.
pub(crate) async fn name_conflict(
    app: &SpinApp,
    ctx: &Context,
) -> Result<Option<ConditionProblem>, Error> {
    let ns = app.namespace().unwrap_or_default();
    let name = app.name_any();
    let cached = match ctx.group {
        AppGroup::Canonical => match &ctx.legacy_apps {
            Some(store) => store
                .get(&ObjectRef::new(&name).within(&ns))
                .map(|r| r.metadata.clone()),
            None => return Ok(None),
        },
        AppGroup::Legacy => ctx
            .apps
            .get(&ObjectRef::new(&name).within(&ns))
            .map(|r| r.metadata.clone()),
    };
    if !cached.is_some_and(|rival| yields_to(ctx.group, &app.metadata, &rival)) {
        return Ok(None);
    }
    let rival_group = ctx.group.other();
    let fresh = match rival_group {
        AppGroup::Canonical => ctx
            .api::<SpinApp>(&ns)
            .get_metadata_opt(&name)
            .await
            .map(|m| m.map(|m| m.metadata)),
        AppGroup::Legacy => ctx
            .api::<LegacySpinApp>(&ns)
            .get_metadata_opt(&name)
            .await
            .map(|m| m.map(|m| m.metadata)),
    }
    .map_err(|source| Error::Kube {
        what: format!("reading {} {ns}/{name}", rival_group.display()),
        source,
    })?;
    let Some(rival) = fresh else {
        return Ok(None);
    };
    if !yields_to(ctx.group, &app.metadata, &rival) {
        return Ok(None);
    }
    let created = rival
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    Ok(Some(ConditionProblem {
        condition_type: status::READY.into(),
        reason: "NameConflict".into(),
        message: format!(
            "{} {ns}/{name} (group {}, created {created}) has the same name and was created first \
             (on a tie {} wins); both would produce the same Deployment, Service and Secret, so this \
             one writes none. Rename or delete one of them",
            rival_group.display(),
            rival_group.group(),
            crate::api::GROUP,
        ),
    }))
}

/// Reconcile one legacy SpinApp: convert it, then reconcile it exactly like a
/// canonical one (with `ctx.group` = [`AppGroup::Legacy`]).
pub async fn reconcile(legacy: Arc<LegacySpinApp>, ctx: Arc<Context>) -> Result<Action, Error> {
    match legacy.to_canonical() {
        Ok(app) => spinapp::reconcile(Arc::new(app), ctx).await,
        Err(error) => {
            // The CRD's rules reject these shapes; kept for objects stored
            // before a rule existed.
            let mut app = SpinApp::new(&legacy.name_any(), legacy.spec.canonical.clone());
            app.metadata = legacy.metadata.clone();
            app.status = legacy.status.clone();
            let problem = ConditionProblem {
                condition_type: status::SPEC_VALID.into(),
                reason: "InvalidRuntimeConfig".into(),
                message: error.to_string(),
            };
            spinapp::report_unconvertible(&app, &ctx, problem).await
        }
    }
}

/// Error policy: per-object exponential backoff.
pub fn error_policy(legacy: Arc<LegacySpinApp>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_after(&ctx, &object_key(legacy.as_ref()), error, CONTROLLER)
}

/// The legacy controller's watch and trigger channels, set up before the
/// shared [`Context`] exists.
pub struct Legacy {
    store: Store<LegacySpinApp>,
    synced: Synced,
    events: BoxStream<'static, Result<LegacySpinApp, watcher::Error>>,
    triggers: UnboundedReceiver<ObjectRef<LegacySpinApp>>,
    tap: Tap,
    canonical: Option<UnboundedReceiver<ObjectRef<SpinApp>>>,
    references: Arc<ReferenceIndex>,
}

impl Legacy {
    /// Probe the legacy CRD; `None` (logged once) when it is turned off, not
    /// installed or not readable, so the operator runs without it.
    pub async fn setup(
        client: &Client,
        namespace: Option<&str>,
        config: &Config,
        watch: watcher::Config,
        watches: &Watches,
        executors: Store<SpinAppExecutor>,
    ) -> Option<Legacy> {
        if !config.legacy_group {
            tracing::info!(
                "legacy group {LEGACY_GROUP} turned off (--legacy-group=false); its SpinApps are not reconciled"
            );
            return None;
        }
        let api: Api<LegacySpinApp> = api_in(client, namespace);
        let params = kube::api::ListParams::default().limit(1);
        if let Err(error) = api.list_metadata(&params).await {
            match &error {
                kube::Error::Api(s) if s.code == 404 => tracing::info!(
                    "CRD spinapps.{LEGACY_GROUP} is not installed; SpinApps of the legacy group are not reconciled \
                     (install it and restart the operator to change that)"
                ),
                _ => tracing::warn!(
                    %error,
                    "cannot list SpinApps of the legacy group {LEGACY_GROUP}; running without that controller"
                ),
            }
            return None;
        }
        let (store, synced, events) =
            cached::<LegacySpinApp>("legacy SpinApp", api, watch, watches);
        let (to_legacy, triggers) = unbounded();
        let (to_canonical, canonical) = unbounded();
        let references = Arc::new(ReferenceIndex::default());
        // Legacy changes (deletions above all) may hand a name over to a
        // canonical app: trigger it once the legacy cache is up to date.
        let events = events
            .inspect(move |event| {
                if let Ok(legacy) = event {
                    let _ = to_canonical.unbounded_send(
                        ObjectRef::new(&legacy.name_any())
                            .within(&legacy.namespace().unwrap_or_default()),
                    );
                }
            })
            .boxed();
        let tap = Tap {
            inner: Some(Arc::new(TapInner {
                sender: to_legacy,
                apps: store.clone(),
                executors,
                references: references.clone(),
            })),
        };
        Some(Legacy {
            store,
            synced,
            events,
            triggers,
            tap,
            canonical: Some(canonical),
            references,
        })
    }

    /// The cache of legacy SpinApps.
    pub fn store(&self) -> Store<LegacySpinApp> {
        self.store.clone()
    }

    /// The legacy cache's first-list signal.
    pub fn synced(&self) -> Synced {
        self.synced.clone()
    }

    /// The tap for the shared watch streams.
    pub fn tap(legacy: Option<&Legacy>) -> Tap {
        legacy.map(|l| l.tap.clone()).unwrap_or_default()
    }

    /// Canonical SpinApps to reconcile because a legacy one with the same
    /// name changed (empty without the legacy controller).
    pub fn canonical_triggers(
        legacy: &mut Option<Legacy>,
        apps: Store<SpinApp>,
    ) -> BoxStream<'static, ObjectRef<SpinApp>> {
        match legacy.as_mut().and_then(|l| l.canonical.take()) {
            // Only names a canonical app has: a clash is rare.
            Some(rx) => rx
                .filter(move |r| futures::future::ready(apps.get(r).is_some()))
                .boxed(),
            None => futures::stream::empty().boxed(),
        }
    }

    /// Run the legacy controller with a copy of the canonical context until
    /// `shutdown`; finishes at once without the legacy controller.
    pub fn run(
        legacy: Option<Legacy>,
        client: &Client,
        namespace: Option<&str>,
        watch: watcher::Config,
        watches: &Watches,
        canonical_ctx: &Context,
        shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    ) -> BoxFuture {
        let Some(legacy) = legacy else {
            return futures::future::ready(()).boxed();
        };
        let backoff = Arc::new(super::backoff::Backoff::default());
        let ctx = Arc::new(Context {
            group: AppGroup::Legacy,
            references: legacy.references.clone(),
            backoff: backoff.clone(),
            ..canonical_ctx.clone()
        });
        // Canonical changes (deletions above all) may hand a name over to a
        // legacy app. Metadata only: nothing else of them is needed.
        let apps = legacy.store.clone();
        let canonical = super::cache::watch(
            "SpinApp metadata (legacy controller)",
            api_in::<PartialObjectMeta<SpinApp>>(client, namespace),
            watch,
            watches,
        )
        .touched_objects();
        Controller::for_stream(legacy.events, legacy.store)
            .with_config(
                kube::runtime::controller::Config::default()
                    .concurrency(canonical_ctx.config.concurrency),
            )
            .reconcile_on(legacy.triggers)
            .reconcile_on(super::retry_failed(watches, backoff))
            .watches_stream(canonical, move |app| {
                let key = ObjectRef::<LegacySpinApp>::new(&app.name_any())
                    .within(&app.namespace().unwrap_or_default());
                apps.get(&key).map(|_| key)
            })
            .graceful_shutdown_on(shutdown)
            .run(reconcile, error_policy, ctx)
            .for_each(|result| async move {
                if let Err(error) = result {
                    tracing::debug!(%error, "{CONTROLLER} controller");
                }
            })
            .boxed()
    }
}

fn legacy_apps_using(
    apps: &Store<LegacySpinApp>,
    executor: &SpinAppExecutor,
) -> Vec<ObjectRef<LegacySpinApp>> {
    super::apps_using_executor(apps, executor, |a: &LegacySpinApp| {
        &a.spec.canonical.executor
    })
}

/// A boxed controller future.
pub type BoxFuture = futures::future::BoxFuture<'static, ()>;

/// Copies events of the shared watch streams that concern legacy apps into
/// the legacy controller's trigger channel. A no-op without it.
#[derive(Clone, Default)]
pub struct Tap {
    inner: Option<Arc<TapInner>>,
}

struct TapInner {
    sender: UnboundedSender<ObjectRef<LegacySpinApp>>,
    apps: Store<LegacySpinApp>,
    executors: Store<SpinAppExecutor>,
    references: Arc<ReferenceIndex>,
}

impl Tap {
    fn pass<T, E, S, F>(
        &self,
        stream: S,
        map: F,
    ) -> impl Stream<Item = Result<T, E>> + use<T, E, S, F>
    where
        S: Stream<Item = Result<T, E>>,
        F: Fn(&TapInner, &T) -> Vec<ObjectRef<LegacySpinApp>>,
    {
        let inner = self.inner.clone();
        stream.inspect(move |event| {
            if let (Some(inner), Ok(obj)) = (&inner, event) {
                for target in map(inner, obj) {
                    // The receiver is gone only during shutdown.
                    let _ = inner.sender.unbounded_send(target);
                }
            }
        })
    }

    /// Children (Deployments, Services, Secrets) owned by a legacy app.
    pub fn owned<K, E, S>(&self, stream: S) -> impl Stream<Item = Result<K, E>> + use<K, E, S>
    where
        K: Resource,
        S: Stream<Item = Result<K, E>>,
    {
        self.pass(stream, |_, child: &K| {
            let ns = child.meta().namespace.as_deref();
            child
                .owner_references()
                .iter()
                .filter_map(|o| ObjectRef::from_owner_ref(ns, o, ()))
                .collect()
        })
    }

    /// SpinAppExecutors: the legacy apps that use one.
    pub fn executors<E, S>(
        &self,
        stream: S,
    ) -> impl Stream<Item = Result<SpinAppExecutor, E>> + use<E, S>
    where
        S: Stream<Item = Result<SpinAppExecutor, E>>,
    {
        self.pass(stream, |inner, executor: &SpinAppExecutor| {
            legacy_apps_using(&inner.apps, executor)
        })
    }

    /// RuntimeClasses: the legacy apps whose executor names one.
    pub fn runtime_classes<E, S>(
        &self,
        stream: S,
    ) -> impl Stream<Item = Result<k8s_openapi::api::node::v1::RuntimeClass, E>> + use<E, S>
    where
        S: Stream<Item = Result<k8s_openapi::api::node::v1::RuntimeClass, E>>,
    {
        self.pass(stream, |inner, rc| {
            super::executors_using_runtime_class(&inner.executors, rc)
                .into_iter()
                .filter_map(|r| inner.executors.get(&r))
                .flat_map(|e| legacy_apps_using(&inner.apps, &e))
                .collect()
        })
    }

    /// Referenced Secrets or ConfigMaps: the legacy apps that read one.
    pub fn referenced<K, E, S>(
        &self,
        kind: RefKind,
        stream: S,
    ) -> impl Stream<Item = Result<K, E>> + use<K, E, S>
    where
        K: Resource,
        S: Stream<Item = Result<K, E>>,
    {
        self.pass(stream, move |inner, obj: &K| {
            let ns = obj.meta().namespace.clone().unwrap_or_default();
            let name = obj.meta().name.clone().unwrap_or_default();
            inner
                .references
                .users(kind, &ns, &name)
                .into_iter()
                .map(|app| ObjectRef::new(&app).within(&ns))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn meta(secs: i64) -> ObjectMeta {
        ObjectMeta {
            creation_timestamp: Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(secs).unwrap(),
            )),
            ..Default::default()
        }
    }

    #[test]
    fn the_older_object_keeps_the_name_and_ties_go_to_the_canonical_group() {
        use AppGroup::*;
        assert!(yields_to(Legacy, &meta(10), &meta(5)));
        assert!(!yields_to(Legacy, &meta(5), &meta(10)));
        assert!(yields_to(Canonical, &meta(10), &meta(5)));
        assert!(!yields_to(Canonical, &meta(5), &meta(10)));
        assert!(yields_to(Legacy, &meta(7), &meta(7)));
        assert!(!yields_to(Canonical, &meta(7), &meta(7)));
    }

    #[test]
    fn children_point_at_the_object_the_user_applied() {
        assert_eq!(
            AppGroup::Legacy.api_version(),
            "core.spinoperator.dev/v1alpha1"
        );
        assert_eq!(
            AppGroup::Canonical.api_version(),
            "core.spinkube.dev/v1alpha1"
        );
    }
}
