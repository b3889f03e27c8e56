//! Reflector-backed caches, each with a [`Synced`] signal that says when its
//! first list is done.
//!
//! Why not `Store::wait_until_ready`: it is a oneshot receiver that keeps only
//! the waker of the task that polled it last, so of several reconciles waiting
//! at once all but one may sleep forever (seen as apps that never converged
//! after a start or a leader change). Any number of tasks can wait on a
//! [`Synced`].

use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

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

/// Whether a cache has finished its first list (it stays so across re-lists).
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

/// A cache of `api`'s objects (managedFields stripped: nothing reads them) and
/// its watch events. The store is updated before an event is passed on, and
/// the signal is raised once the first list is in the store.
pub fn cached_events<K>(
    name: &'static str,
    api: Api<K>,
    config: watcher::Config,
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
    let stream = watcher(api, config)
        .default_backoff()
        .modify(|obj: &mut K| obj.meta_mut().managed_fields = None)
        .reflect(writer)
        .inspect(move |event| {
            if let Ok(watcher::Event::InitDone) = event {
                raise();
            }
        });
    (reader, synced, stream)
}

/// [`cached_events`] as a stream of the objects that changed or went away.
pub fn cached<K>(
    name: &'static str,
    api: Api<K>,
    config: watcher::Config,
) -> (
    Store<K>,
    Synced,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Cacheable,
{
    let (store, synced, events) = cached_events(name, api, config);
    (store, synced, events.touched_objects())
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
}
