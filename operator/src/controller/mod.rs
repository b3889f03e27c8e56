//! The controllers: [`spinapp`] turns SpinApps into a Deployment, a Service
//! and a runtime-config Secret; [`executor`] guards SpinAppExecutors with a
//! finalizer and reports whether their RuntimeClass exists.
//!
//! # What is watched, and why (cache size and RBAC)
//!
//! | watch | objects | cached | purpose |
//! | --- | --- | --- | --- |
//! | SpinApps | full, managedFields stripped | yes (the controller's store) | the primary objects |
//! | Deployments, Services `app.kubernetes.io/managed-by=spindle` | full, managedFields stripped | yes | owned children: triggers and the "nothing changed, skip the write" check |
//! | Secrets with label `core.spinkube.dev/app-name` | full, managedFields stripped | yes | Spindle's runtime-config Secrets and spin-operator's `<app>-<hash>` Secrets (garbage-collected after a migration) |
//! | SpinAppExecutors | full | yes | executor lookups and triggers |
//! | RuntimeClasses (cluster) | full | yes | `ExecutorReady` checks and triggers |
//! | Secrets, ConfigMaps (all) | **metadata only**, not cached | no | trigger the apps that reference them (via [`references::ReferenceIndex`]); the few referenced objects are read with GET during a reconcile |
//!
//! RBAC: the owned-Secret watch needs `list`/`watch` on Secrets anyway (as in
//! spin-operator, whose `Owns(Secret)` does the same), so the metadata-only
//! watch of referenced Secrets adds no permission, while keeping Secret values
//! of unrelated Secrets out of the operator's memory: the apiserver sends only
//! `PartialObjectMetadata` for them. A design without any `list`/`watch` on
//! Secrets would have to poll referenced Secrets and could not notice a
//! deleted runtime-config Secret, so it was not chosen.
//!
//! A reconcile starts only once every cache has finished its first list
//! ([`Context::caches_synced`], [`cache::Synced`]): an empty cache would read
//! as "the executor does not exist".

pub mod backoff;
pub mod cache;
pub mod executor;
pub mod legacy;
pub mod references;
pub mod scale_to_zero;
pub mod spinapp;

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use crate::api::compat::LegacySpinApp;
use crate::api::{SpinApp, SpinAppExecutor};
use crate::apply::{APP_NAME_LABEL, MANAGED_BY, MANAGED_BY_LABEL};
use crate::http::Readiness;
use crate::metrics::Metrics;
use backoff::Backoff;
use references::{RefKind, ReferenceIndex};

/// Reporter (controller name) of Spindle's events.
pub const REPORTER: &str = "spindle";

/// Settings of the controllers.
#[derive(Clone, Debug)]
pub struct Config {
    /// Watch only this namespace; `None` = all namespaces.
    pub namespace: Option<String>,
    /// Reconciles running at once, per controller.
    pub concurrency: u16,
    /// How often a healthy app is reconciled even without changes.
    pub resync_interval: Duration,
    /// Metrics to record into.
    pub metrics: Metrics,
    /// Set to synced once every cache has its initial list.
    pub readiness: Readiness,
    /// The `reportingInstance` of events (e.g. the pod name).
    pub instance: Option<String>,
    /// Resolves `spec.image` to a digest and checks its format before
    /// anything is rolled out; `None` = resolution disabled
    /// (`--resolve-images=false`): `spec.image` goes to the pod as written.
    pub resolver: Option<Arc<crate::oci::Resolver>>,
    /// Reconcile SpinApps of the legacy group `core.spinoperator.dev` when
    /// its CRD is installed (see [`legacy`]).
    pub legacy_group: bool,
    /// Scale to zero: where the activators are, port range, timings.
    pub scale_to_zero: scale_to_zero::Options,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            namespace: None,
            concurrency: 4,
            resync_interval: Duration::from_secs(3600),
            metrics: Metrics::new(),
            readiness: Readiness::default(),
            instance: None,
            resolver: None,
            legacy_group: true,
            scale_to_zero: scale_to_zero::Options::default(),
        }
    }
}

/// Errors of a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing or deleting a child failed.
    #[error(transparent)]
    Apply(#[from] crate::apply::Error),
    /// A read or the status write failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: kube::Error,
    },
    /// The app has problems that may go away by themselves (a missing
    /// executor or Secret); it is retried with backoff. Details are in its
    /// status conditions and events.
    #[error("app is blocked: {0}")]
    Blocked(String),
    /// The registry could not be asked about `spec.image` (a transient
    /// error); retried with backoff. Details are in the `ImageResolved` condition.
    #[error("resolving the image: {0}")]
    Image(String),
    /// An executor cannot be deleted while apps use it.
    #[error("SpinAppExecutor is still used by {0}")]
    ExecutorInUse(String),
    /// The finalizer helper failed.
    #[error(transparent)]
    Finalizer(#[from] Box<kube::runtime::finalizer::Error<Error>>),
    /// An object lacks metadata the apiserver always sets.
    #[error("object without {0}")]
    IncompleteObject(&'static str),
    /// A cache the reconcile reads has not finished its first list; retried
    /// with backoff (a missing list/watch permission keeps it here).
    #[error("the {0} cache has not finished its first list within {CACHE_SYNC_WAIT:?}")]
    CacheNotSynced(&'static str),
}

impl Error {
    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> String {
        match self {
            Error::Apply(e) => format!("apply_{}", e.metric_label()),
            Error::Kube { .. } => "kube".into(),
            Error::Blocked(_) => "blocked".into(),
            Error::Image(_) => "image".into(),
            Error::ExecutorInUse(_) => "executor_in_use".into(),
            Error::Finalizer(_) => "finalizer".into(),
            Error::IncompleteObject(_) => "incomplete_object".into(),
            Error::CacheNotSynced(_) => "cache_not_synced".into(),
        }
    }
}

/// Shared state of the reconcilers. Cloned (with its own reference index and
/// backoff) for the legacy SpinApp controller.
#[derive(Clone)]
pub struct Context {
    /// Client for the apiserver.
    pub client: Client,
    /// Event recorder (reporter `spindle`).
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Metrics,
    /// Settings.
    pub config: Config,
    /// Cached SpinApps.
    pub apps: Store<SpinApp>,
    /// Cached Deployments made by Spindle.
    pub deployments: Store<Deployment>,
    /// Cached Services made by Spindle.
    pub services: Store<Service>,
    /// Cached Secrets labelled with an app name.
    pub secrets: Store<Secret>,
    /// Cached SpinAppExecutors.
    pub executors: Store<SpinAppExecutor>,
    /// Cached RuntimeClasses.
    pub runtime_classes: Store<RuntimeClass>,
    /// Which apps reference which Secrets/ConfigMaps.
    pub references: Arc<ReferenceIndex>,
    /// Per-object retry backoff.
    pub backoff: Arc<Backoff>,
    /// Which SpinApps this context reconciles (canonical or legacy group).
    pub group: legacy::AppGroup,
    /// Cached legacy SpinApps; `None` without the legacy controller.
    pub legacy_apps: Option<Store<LegacySpinApp>>,
    /// Scale-to-zero state (activator port table, activity, its caches).
    pub scale: Arc<scale_to_zero::Shared>,
    /// The first-list signals of every cache above (see [`Context::caches_synced`]).
    pub caches: Arc<[cache::Synced]>,
}

/// How long a reconcile waits for the caches it reads (see [`Context::caches_synced`]).
pub const CACHE_SYNC_WAIT: Duration = Duration::from_secs(30);

impl Context {
    /// Wait until every cache a reconcile reads has finished its first list.
    /// Before that an empty cache reads as "the executor does not exist", and
    /// the app would get a wrong condition (and no trigger when the cache
    /// fills, because the watch's initial objects pass before the store swaps
    /// them in). Waiting inside a reconcile is safe: the controller keeps
    /// polling its watch streams while reconciles run.
    pub async fn caches_synced(&self) -> Result<(), Error> {
        cache::wait_all(&self.caches, CACHE_SYNC_WAIT)
            .await
            .map_err(Error::CacheNotSynced)
    }

    /// An API for a namespaced kind in `namespace`.
    pub fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Publish an event about `regarding`; failures are logged, never fatal.
    pub async fn publish(
        &self,
        regarding: &k8s_openapi::api::core::v1::ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
        secondary: Option<k8s_openapi::api::core::v1::ObjectReference>,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary,
        };
        if let Err(error) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(%error, reason, "could not publish event");
        }
    }
}

fn api_in<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Probe that the CRDs are installed: a `list` of SpinApps with `limit=1`.
pub async fn check_crds_installed(client: &Client, namespace: Option<&str>) -> Result<(), Error> {
    let apps: Api<SpinApp> = api_in(client, namespace);
    let executors: Api<SpinAppExecutor> = api_in(client, namespace);
    let params = kube::api::ListParams::default().limit(1);
    apps.list_metadata(&params)
        .await
        .map_err(|source| Error::Kube {
            what: "listing SpinApps (are the CRDs installed?)".into(),
            source,
        })?;
    executors
        .list_metadata(&params)
        .await
        .map_err(|source| Error::Kube {
            what: "listing SpinAppExecutors (are the CRDs installed?)".into(),
            source,
        })?;
    Ok(())
}

/// Run both controllers until `shutdown` resolves; running reconciles finish first.
pub async fn run_until(
    client: Client,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = config.namespace.as_deref();
    let watches = cache::Watches::new(&config.metrics);
    let watch = watcher::Config::default().any_semantic();
    let owned = watch
        .clone()
        .labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));

    let (deployments, deployments_synced, deployment_events) =
        cache::cached::<Deployment>("Deployment", api_in(&client, ns), owned.clone(), &watches);
    let (services, services_synced, service_events) =
        cache::cached::<Service>("Service", api_in(&client, ns), owned, &watches);
    let (secrets, secrets_synced, secret_events) = cache::cached::<Secret>(
        "Secret",
        api_in(&client, ns),
        watch.clone().labels(APP_NAME_LABEL),
        &watches,
    );
    let (executors, executors_synced, executor_events) = cache::cached::<SpinAppExecutor>(
        "SpinAppExecutor",
        api_in(&client, ns),
        watch.clone(),
        &watches,
    );
    let (runtime_classes, runtime_classes_synced, runtime_class_events) =
        cache::cached::<RuntimeClass>(
            "RuntimeClass",
            Api::all(client.clone()),
            watch.clone(),
            &watches,
        );
    let mut legacy = legacy::Legacy::setup(
        &client,
        ns,
        &config,
        watch.clone(),
        &watches,
        executors.clone(),
    )
    .await;
    let legacy_apps = legacy.as_ref().map(legacy::Legacy::store);
    let tap = legacy::Legacy::tap(legacy.as_ref());

    // The controller's own store, built here so that it has a first-list signal too.
    let (apps, apps_synced, app_events) =
        cache::cached_events::<SpinApp>("SpinApp", api_in(&client, ns), watch.clone(), &watches);
    let app_controller = Controller::for_stream(app_events.applied_objects(), apps.clone())
        .with_config(kube::runtime::controller::Config::default().concurrency(config.concurrency));
    // The poller stops when `_scale_poller` is dropped at the end of the run.
    let (scale, scale_triggers, _scale_poller) =
        scale_to_zero::start(&client, ns, &config.scale_to_zero, apps.clone(), &watches);
    let references = Arc::new(ReferenceIndex::default());
    let backoff = Arc::new(Backoff::default());
    let mut caches = vec![
        apps_synced,
        deployments_synced,
        services_synced,
        secrets_synced,
        executors_synced,
        runtime_classes_synced,
    ];
    caches.extend(legacy.as_ref().map(legacy::Legacy::synced));
    caches.extend(scale.synced().iter().cloned());
    let caches: Arc<[cache::Synced]> = caches.into();

    let reporter = Reporter {
        controller: REPORTER.into(),
        instance: config.instance.clone(),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics: config.metrics.clone(),
        config: config.clone(),
        apps: apps.clone(),
        deployments: deployments.clone(),
        services: services.clone(),
        secrets: secrets.clone(),
        executors: executors.clone(),
        runtime_classes: runtime_classes.clone(),
        references: references.clone(),
        backoff: backoff.clone(),
        group: legacy::AppGroup::Canonical,
        legacy_apps: legacy_apps.clone(),
        scale,
        caches: caches.clone(),
    });

    // Referenced Secrets/ConfigMaps: metadata only, mapped through the index.
    // (`Api<PartialObjectMeta<K>>` makes the watch request metadata only.)
    let referenced_secrets = cache::watch(
        "referenced Secret",
        api_in::<PartialObjectMeta<Secret>>(&client, ns),
        watch.clone(),
        &watches,
    )
    .touched_objects();
    let referenced_config_maps = cache::watch(
        "referenced ConfigMap",
        api_in::<PartialObjectMeta<ConfigMap>>(&client, ns),
        watch.clone(),
        &watches,
    )
    .touched_objects();
    let (index_s, index_c) = (references.clone(), references.clone());
    let (apps_e, apps_r, executors_r) = (apps.clone(), apps.clone(), executors.clone());

    let (shutdown_tx, shutdown_rx) = futures::channel::oneshot::channel::<()>();
    let shutdown_rx = shutdown_rx.map(|_| ()).shared();

    let app_controller = app_controller
        .owns_stream(tap.owned(deployment_events))
        .owns_stream(tap.owned(service_events))
        .owns_stream(tap.owned(secret_events))
        .watches_stream(tap.executors(executor_events), move |executor| {
            apps_using_executor(&apps_e, &executor, |a: &SpinApp| &a.spec.executor)
        })
        .watches_stream(tap.runtime_classes(runtime_class_events), move |rc| {
            apps_using_runtime_class(&apps_r, &executors_r, &rc)
        })
        .watches_stream(
            tap.referenced(RefKind::Secret, referenced_secrets),
            move |s| referencing_apps(&index_s, RefKind::Secret, &s),
        )
        .watches_stream(
            tap.referenced(RefKind::ConfigMap, referenced_config_maps),
            move |c| referencing_apps(&index_c, RefKind::ConfigMap, &c),
        )
        .reconcile_on(legacy::Legacy::canonical_triggers(
            &mut legacy,
            apps.clone(),
        ))
        .reconcile_on(scale_triggers)
        .reconcile_on(retry_failed(&watches, backoff))
        .graceful_shutdown_on(shutdown_rx.clone())
        .run(spinapp::reconcile, spinapp::error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "spinapp controller");
            }
        });

    let legacy_controller = legacy::Legacy::run(
        legacy,
        &client,
        ns,
        watch.clone(),
        &watches,
        &ctx,
        shutdown_rx.clone(),
    );
    // The executor controller's own watches: the streams above are consumed
    // by the app controller.
    let (executor_store, _, own_executor_events) = cache::cached_events::<SpinAppExecutor>(
        "SpinAppExecutor (executor controller)",
        api_in(&client, ns),
        watch.clone(),
        &watches,
    );
    let executor_runtime_classes = cache::watch(
        "RuntimeClass (executor controller)",
        Api::<RuntimeClass>::all(client.clone()),
        watch,
        &watches,
    )
    .touched_objects();
    let executor_controller =
        Controller::for_stream(own_executor_events.applied_objects(), executor_store)
            .with_config(
                kube::runtime::controller::Config::default().concurrency(config.concurrency),
            )
            .watches_stream(executor_runtime_classes, {
                let executors = executors.clone();
                move |rc| executors_using_runtime_class(&executors, &rc)
            })
            .graceful_shutdown_on(shutdown_rx)
            .run(executor::reconcile, executor::error_policy, ctx.clone())
            .for_each(|result| async move {
                if let Err(error) = result {
                    tracing::debug!(%error, "spinappexecutor controller");
                }
            });

    let readiness = config.readiness.clone();
    let synced = async move {
        match futures::future::try_join_all(caches.iter().map(cache::Synced::wait)).await {
            Ok(_) => {
                tracing::info!("caches synced");
                readiness.set_caches_synced(true);
            }
            Err(cache) => tracing::error!(cache, "a watch ended before its first list"),
        }
    };

    let stop = async move {
        shutdown.await;
        tracing::info!("shutting down controllers; running reconciles finish first");
        let _ = shutdown_tx.send(());
        futures::future::pending::<()>().await;
    };

    tracing::info!(
        namespace = ns.unwrap_or("<all>"),
        concurrency = config.concurrency,
        "starting controllers"
    );
    // The controllers end after a graceful shutdown; `stop` and `synced`
    // never end the run by themselves.
    let controllers =
        futures::future::join3(app_controller, executor_controller, legacy_controller);
    let helpers = futures::future::join(stop, synced.then(|()| futures::future::pending::<()>()));
    futures::future::select(Box::pin(controllers), Box::pin(helpers)).await;
    config.readiness.set_caches_synced(false);
}

/// The apps of either group that name `executor` (`executor_of` reads an
/// app's `spec.executor`).
pub(crate) fn apps_using_executor<K>(
    apps: &Store<K>,
    executor: &SpinAppExecutor,
    executor_of: impl Fn(&K) -> &str,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    let ns = executor.namespace().unwrap_or_default();
    let name = executor.name_any();
    apps.state()
        .iter()
        .filter(|a| a.meta().namespace.as_deref() == Some(ns.as_str()) && executor_of(a) == name)
        .map(|a| ObjectRef::from_obj(a.as_ref()))
        .collect()
}

fn apps_using_runtime_class(
    apps: &Store<SpinApp>,
    executors: &Store<SpinAppExecutor>,
    rc: &RuntimeClass,
) -> Vec<ObjectRef<SpinApp>> {
    executors_using_runtime_class(executors, rc)
        .into_iter()
        .filter_map(|r| executors.get(&r))
        .flat_map(|e| apps_using_executor(apps, &e, |a: &SpinApp| &a.spec.executor))
        .collect()
}

fn executors_using_runtime_class(
    executors: &Store<SpinAppExecutor>,
    rc: &RuntimeClass,
) -> Vec<ObjectRef<SpinAppExecutor>> {
    let name = rc.name_any();
    executors
        .state()
        .iter()
        .filter(|e| {
            e.spec
                .deployment_config
                .as_ref()
                .and_then(|d| d.runtime_class_name.as_deref())
                == Some(name.as_str())
        })
        .map(|e| ObjectRef::from_obj(e.as_ref()))
        .collect()
}

fn referencing_apps<K: Resource>(
    index: &ReferenceIndex,
    kind: RefKind,
    obj: &K,
) -> Vec<ObjectRef<SpinApp>> {
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    let name = obj.meta().name.clone().unwrap_or_default();
    index
        .users(kind, &ns, &name)
        .into_iter()
        .map(|app| ObjectRef::new(&app).within(&ns))
        .collect()
}

/// The apps whose last reconcile failed, each time a cache completes a
/// re-list. A reconcile that failed while the apiserver was away would
/// otherwise wait out its backoff (minutes after a long outage) although
/// nothing is wrong any more, and nothing else triggers it when the app
/// itself did not change meanwhile.
pub(crate) fn retry_failed<K>(
    watches: &cache::Watches,
    backoff: Arc<Backoff>,
) -> impl futures::Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + 'static,
{
    watches.relisted().flat_map(move |()| {
        let apps: Vec<ObjectRef<K>> = backoff
            .failing()
            .iter()
            .filter_map(|key| {
                let (ns, name) = key.split_once('/')?;
                // Executor keys (`executor:ns/name`) retry on their own.
                (!ns.contains(':')).then(|| ObjectRef::new(name).within(ns))
            })
            .collect();
        futures::stream::iter(apps)
    })
}

/// Reconcile outcome used by both controllers' error policies.
pub(crate) fn retry_after(
    ctx: &Context,
    key: &str,
    error: &Error,
    controller: &'static str,
) -> Action {
    ctx.metrics
        .reconcile_failed(controller, &error.metric_label());
    let delay = match error {
        // Waiting for apps to go away: poll at a steady pace.
        Error::ExecutorInUse(_) => Duration::from_secs(5),
        _ => ctx.backoff.failed(key),
    };
    match error {
        Error::Blocked(_) | Error::ExecutorInUse(_) | Error::Image(_) => {
            tracing::info!(object = key, %error, retry_in = ?delay, "{controller} reconcile blocked")
        }
        _ => {
            tracing::warn!(object = key, %error, retry_in = ?delay, "{controller} reconcile failed")
        }
    }
    Action::requeue(delay)
}

/// `namespace/name` of an object, for logs and the backoff tracker.
pub(crate) fn object_key<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or(""),
        obj.meta().name.as_deref().unwrap_or("")
    )
}
