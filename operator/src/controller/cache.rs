//! Reflector-backed caches, each with a [`Synced`] signal that says when its
//! first list is done.
//!
//! Why not `Store::wait_until_ready`: it is a oneshot receiver that keeps only
//! the waker of the task that polled it last, so of several reconciles waiting
//! at once all but one may sleep forever (seen as apps that never converged
//! after a start or a leader change). Any number of tasks can wait on a
//! [`Synced`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::{Backoff, StreamBackoff};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// What a cache can hold: a kind with static type information that can be
/// watched and shared between tasks.
pub trait Cacheable:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
}

impl<K> Cacheable for K where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// Whether a cache has finished its first list. It stays raised across
/// re-lists: the store keeps serving the previous list until the new one is
/// complete, and what changed is passed on after the swap
/// ([`cached_events`]), so a reconcile that read the old state runs again.
#[derive(Clone, Debug)]
pub struct Synced {
    name: &'static str,
    rx: watch::Receiver<bool>,
}

impl Synced {
    /// A signal and the function that raises it.
    fn new(name: &'static str) -> (Self, impl Fn() + Send + Sync + 'static) {
        let (tx, rx) = watch::channel(false);
        let raise = move || {
            tx.send_replace(true);
        };
        (Self { name, rx }, raise)
    }

    /// What is cached, for messages (`SpinAppExecutor`, ...).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether the first list is done.
    pub fn is_synced(&self) -> bool {
        *self.rx.borrow()
    }

    /// Wait for the first list; `Err(name)` if the watch ended before it.
    pub async fn wait(&self) -> Result<(), &'static str> {
        let mut rx = self.rx.clone();
        rx.wait_for(|synced| *synced)
            .await
            .map(|_| ())
            .map_err(|_| self.name)
    }
}

/// Wait until every cache in `caches` has finished its first list, at most
/// `timeout`; `Err` names one that has not.
pub async fn wait_all(caches: &[Synced], timeout: Duration) -> Result<(), &'static str> {
    // Every reconcile asks; after start-up the answer needs no timer.
    if caches.iter().all(Synced::is_synced) {
        return Ok(());
    }
    let all = futures::future::join_all(caches.iter().map(Synced::wait));
    match tokio::time::timeout(timeout, all).await {
        Ok(results) => results.into_iter().collect(),
        Err(_) => Err(caches
            .iter()
            .find(|c| !c.is_synced())
            .map_or("?", Synced::name)),
    }
}

/// What every watch of one operator run shares: the metrics its errors go
/// to, and a signal raised whenever a cache completes a re-list (the watch
/// had failed: an apiserver restart, a 410).
#[derive(Clone)]
pub struct Watches {
    metrics: Metrics,
    relisted: Arc<watch::Sender<u64>>,
}

impl Watches {
    /// Watches counting their errors into `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            metrics: metrics.clone(),
            relisted: Arc::new(watch::channel(0).0),
        }
    }

    /// One item each time a cache has completed a re-list since the last
    /// poll (several re-lists at once may give one item).
    pub fn relisted(&self) -> impl Stream<Item = ()> + Send + 'static {
        futures::stream::unfold(self.relisted.subscribe(), |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        })
    }

    fn relist_done(&self) {
        self.relisted.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// The backoff of one watch: 250 ms doubling to at most 5 s, with jitter,
/// reset by the next event that gets through.
///
/// kube's `default_backoff` (800 ms to 30 s) resets only after 120 s without
/// an error, so a watch that failed a few times during an apiserver restart
/// waits up to 30 s per retry once the apiserver is back; the retries here
/// are per watch, so a small cap costs one cheap request per watch and is
/// still gentle with an apiserver that is down.
pub fn watch_backoff() -> impl Backoff {
    watcher::ExponentialBackoff::from(
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(250))
            .with_max_delay(Duration::from_secs(5))
            .with_factor(2.0)
            .with_jitter()
            .without_max_times(),
    )
}

/// The events of a watch of `api`, each watch retrying on its own
/// [`watch_backoff`]; errors are logged and counted
/// (`spindle_watch_errors_total{watch=name}`) and never passed on.
///
/// Why they are not passed on: a kube `Controller` merges all its trigger
/// streams into one and backs that one off on any error, so one watch's 410
/// after an apiserver restart would delay the triggers of every other watch
/// (seen as reconciles stalled for minutes). The watcher recovers by itself
/// (a 410 makes it list again), so the error has nothing left to tell.
pub fn watch<K>(
    name: &'static str,
    api: Api<K>,
    config: watcher::Config,
    watches: &Watches,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let metrics = watches.metrics.clone();
    StreamBackoff::new(watcher(api, config), watch_backoff()).filter_map(move |event| {
        futures::future::ready(match event {
            Ok(event) => Some(Ok(event)),
            Err(error) => {
                metrics.watch_error(name);
                tracing::warn!(watch = name, %error, "watch failed; retrying");
                None
            }
        })
    })
}

/// A cache of `api`'s objects (managedFields stripped: nothing reads them) and
/// its watch events (see [`watch`]). The signal is raised once the first list
/// is in the store.
///
/// Objects of a list (the first one, or the re-list after a 410) are passed on
/// only once the store holds the whole list, and only those that changed: new
/// ones, ones with another resourceVersion, and (as deletions) ones that are
/// gone. Passed on as they arrive, they would trigger reconciles that read the
/// store before it is swapped to the new list (an app reconciled at its old
/// generation, its Deployment read as it was before the restart), and nothing
/// would trigger them again once it is.
pub fn cached_events<K>(
    name: &'static str,
    api: Api<K>,
    config: watcher::Config,
    watches: &Watches,
) -> (
    Store<K>,
    Synced,
    impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
)
where
    K: Cacheable,
{
    let (reader, writer) = reflector::store();
    let (synced, raise) = Synced::new(name);
    let reflected = watch(name, api, config, watches)
        .modify(|obj: &mut K| obj.meta_mut().managed_fields = None)
        .reflect(writer)
        .inspect(move |event| {
            if let Ok(watcher::Event::InitDone) = event {
                raise();
            }
        });
    (
        reader.clone(),
        synced,
        after_swap(reader, reflected, Some(watches.clone())),
    )
}

/// `reflected` (events already applied to `store`) with each list's objects
/// held back until the swap, then only the changes (see [`cached_events`]).
fn after_swap<K, S>(
    store: Store<K>,
    reflected: S,
    watches: Option<Watches>,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Cacheable,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let mut relist = Relist::new(store.clone(), watches);
    reflected
        .flat_map(move |event| futures::stream::iter(relist.step(event)))
        .filter_map(move |item| {
            futures::future::ready(match item {
                Ok(pending) => pending.resolve(&store).map(Ok),
                Err(error) => Some(Err(error)),
            })
        })
}

/// [`cached_events`] as a stream of the objects that changed or went away.
pub fn cached<K>(
    name: &'static str,
    api: Api<K>,
    config: watcher::Config,
    watches: &Watches,
) -> (
    Store<K>,
    Synced,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Cacheable,
{
    let (store, synced, events) = cached_events(name, api, config, watches);
    (store, synced, events.touched_objects())
}

/// Holds a list's objects back until the store has swapped them in, then
/// names those that differ from what the store held before.
struct Relist<K: Cacheable> {
    store: Store<K>,
    /// The store as it was when the list began; `Some` during a list.
    before: Option<Vec<Arc<K>>>,
    /// Whether a list has completed before (the next one is a re-list).
    listed: bool,
    /// Told about each completed re-list.
    watches: Option<Watches>,
}

/// One item [`Relist::step`] passes on; objects are read from the store only
/// when the item is polled, so a big list is never copied at once.
enum Pending<K: Cacheable> {
    /// A watch event, passed on as it is.
    Event(watcher::Event<K>),
    /// An object of the list that is new or changed.
    Changed(ObjectRef<K>),
    /// An object the list no longer has (as it was before).
    Gone(Arc<K>),
}

impl<K: Cacheable> Relist<K> {
    fn new(store: Store<K>, watches: Option<Watches>) -> Self {
        Self {
            store,
            before: None,
            listed: false,
            watches,
        }
    }

    /// Called with every event after the store has applied it.
    fn step(
        &mut self,
        event: Result<watcher::Event<K>, watcher::Error>,
    ) -> Vec<Result<Pending<K>, watcher::Error>> {
        let event = match event {
            Ok(event) => event,
            Err(error) => return vec![Err(error)],
        };
        match event {
            watcher::Event::Init => {
                // A list that restarts before it is done keeps the first
                // snapshot: the store has not been swapped since.
                if self.before.is_none() {
                    self.before = Some(self.store.state());
                }
                vec![Ok(Pending::Event(watcher::Event::Init))]
            }
            watcher::Event::InitApply(_) => Vec::new(),
            watcher::Event::InitDone => {
                let before = self.before.take().unwrap_or_default();
                if std::mem::replace(&mut self.listed, true)
                    && let Some(watches) = &self.watches
                {
                    watches.relist_done();
                }
                let mut out = vec![Ok(Pending::Event(watcher::Event::InitDone))];
                out.extend(changes(before, self.store.state()).into_iter().map(Ok));
                out
            }
            event => vec![Ok(Pending::Event(event))],
        }
    }
}

/// What differs between two states of a store: objects of `after` that are
/// new or have another resourceVersion, and objects of `before` that are gone.
fn changes<K: Cacheable>(before: Vec<Arc<K>>, after: Vec<Arc<K>>) -> Vec<Pending<K>> {
    let mut old: HashMap<ObjectRef<K>, Arc<K>> = before
        .into_iter()
        .map(|obj| (ObjectRef::from_obj(obj.as_ref()), obj))
        .collect();
    let mut out = Vec::new();
    for obj in after {
        let key = ObjectRef::from_obj(obj.as_ref());
        let same = old
            .remove(&key)
            .is_some_and(|o| o.meta().resource_version == obj.meta().resource_version);
        if !same {
            out.push(Pending::Changed(key));
        }
    }
    out.extend(old.into_values().map(Pending::Gone));
    out
}

impl<K: Cacheable> Pending<K> {
    /// The event to pass on.
    fn resolve(self, store: &Store<K>) -> Option<watcher::Event<K>> {
        match self {
            Pending::Event(event) => Some(event),
            // The store is not touched between the swap and the last of these
            // items: the watch is polled again only after they are passed on.
            Pending::Changed(key) => store
                .get(&key)
                .map(|obj| watcher::Event::Apply(obj.as_ref().clone())),
            Pending::Gone(obj) => Some(watcher::Event::Delete(obj.as_ref().clone())),
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_waiter_wakes_when_the_signal_is_raised() {
        let (synced, raise) = Synced::new("Thing");
        // Many concurrent waiters: the case Store::wait_until_ready gets wrong.
        let waiters: Vec<_> = (0..16)
            .map(|_| {
                let s = synced.clone();
                tokio::spawn(async move { s.wait().await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(!synced.is_synced());
        raise();
        for w in waiters {
            let r = tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .expect("a waiter was not woken")
                .unwrap();
            assert_eq!(r, Ok(()));
        }
        assert!(synced.is_synced());
    }

    #[tokio::test]
    async fn wait_all_names_the_cache_that_is_late() {
        let (a, raise_a) = Synced::new("A");
        let (b, _raise_b) = Synced::new("B");
        raise_a();
        let r = wait_all(&[a.clone(), b], Duration::from_millis(50)).await;
        assert_eq!(r, Err("B"));
        assert_eq!(wait_all(&[a], Duration::from_millis(50)).await, Ok(()));
    }

    #[tokio::test]
    async fn a_watch_that_ends_before_its_first_list_is_an_error() {
        let (s, raise) = Synced::new("Gone");
        drop(raise);
        assert_eq!(s.wait().await, Err("Gone"));
    }

    fn config_map(name: &str, rv: &str) -> k8s_openapi::api::core::v1::ConfigMap {
        k8s_openapi::api::core::v1::ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Runs `events` through a real reflector and [`after_swap`]; returns what
    /// was passed on, each with the resourceVersion the store held for that
    /// object at the moment it was passed on.
    async fn pass(
        events: Vec<watcher::Event<k8s_openapi::api::core::v1::ConfigMap>>,
    ) -> Vec<(String, String, Option<String>)> {
        use k8s_openapi::api::core::v1::ConfigMap;
        let (reader, writer) = reflector::store::<ConfigMap>();
        let reflected = futures::stream::iter(events.into_iter().map(Ok)).reflect(writer);
        let out = after_swap(reader.clone(), reflected, None);
        futures::pin_mut!(out);
        let mut seen = Vec::new();
        while let Some(event) = out.next().await {
            let (what, obj) = match event.unwrap() {
                watcher::Event::Apply(o) => ("apply", o),
                watcher::Event::Delete(o) => ("delete", o),
                _ => continue,
            };
            let in_store = reader
                .get(&ObjectRef::from_obj(&obj))
                .and_then(|o| o.metadata.resource_version.clone());
            seen.push((
                format!("{what} {}", obj.metadata.name.clone().unwrap()),
                obj.metadata.resource_version.clone().unwrap(),
                in_store,
            ));
        }
        seen.sort();
        seen
    }

    #[tokio::test]
    async fn a_list_is_passed_on_after_the_store_holds_it() {
        use watcher::Event::*;
        let seen = pass(vec![
            Init,
            InitApply(config_map("a", "1")),
            InitApply(config_map("b", "1")),
            InitDone,
        ])
        .await;
        let s = |x: &str| Some(x.to_owned());
        assert_eq!(
            seen,
            vec![
                ("apply a".into(), "1".into(), s("1")),
                ("apply b".into(), "1".into(), s("1")),
            ]
        );
    }

    #[tokio::test]
    async fn a_relist_passes_on_only_what_changed_after_the_swap() {
        use watcher::Event::*;
        let seen = pass(vec![
            Init,
            InitApply(config_map("same", "1")),
            InitApply(config_map("changed", "1")),
            InitApply(config_map("gone", "1")),
            InitDone,
            // The re-list after a 410: "changed" was updated, "gone" deleted
            // and "new" created while the watch was down.
            Init,
            InitApply(config_map("same", "1")),
            InitApply(config_map("changed", "2")),
            InitApply(config_map("new", "3")),
            InitDone,
        ])
        .await;
        let s = |x: &str| Some(x.to_owned());
        assert_eq!(
            seen,
            vec![
                ("apply changed".into(), "1".into(), s("1")),
                // Passed on once the store holds the new version, never before.
                ("apply changed".into(), "2".into(), s("2")),
                ("apply gone".into(), "1".into(), s("1")),
                ("apply new".into(), "3".into(), s("3")),
                ("apply same".into(), "1".into(), s("1")),
                // Gone from the new list: passed on as a deletion, and no
                // longer in the store.
                ("delete gone".into(), "1".into(), None),
            ]
        );
    }

    #[tokio::test]
    async fn a_list_restarted_before_its_end_compares_with_the_store_before_it() {
        use watcher::Event::*;
        let seen = pass(vec![
            Init,
            InitApply(config_map("a", "1")),
            InitDone,
            Init,
            InitApply(config_map("a", "2")),
            // The list failed part way and started again.
            Init,
            InitApply(config_map("a", "2")),
            InitDone,
        ])
        .await;
        let s = |x: &str| Some(x.to_owned());
        assert_eq!(
            seen,
            vec![
                ("apply a".into(), "1".into(), s("1")),
                ("apply a".into(), "2".into(), s("2")),
            ]
        );
    }

    #[tokio::test]
    async fn events_between_lists_pass_as_they_come() {
        use watcher::Event::*;
        let seen = pass(vec![
            Init,
            InitDone,
            Apply(config_map("a", "5")),
            Delete(config_map("a", "6")),
        ])
        .await;
        assert_eq!(
            seen,
            vec![
                ("apply a".into(), "5".into(), Some("5".into())),
                ("delete a".into(), "6".into(), None),
            ]
        );
    }
}
