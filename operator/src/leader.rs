//! Leader election with a `coordination.k8s.io/v1` Lease, so that two
//! replicas never reconcile at the same time.
//!
//! The algorithm is client-go's: the holder renews `renewTime` every
//! [`LeaseConfig::renew_interval`]; another candidate takes the lease over only
//! after it has seen the lease record unchanged for a whole
//! `leaseDurationSeconds` on its *own* clock (so clock skew between nodes does
//! not matter). Every write is a full update guarded by the `resourceVersion`
//! that was read, so of two racing candidates exactly one wins (the other gets
//! 409 Conflict). A holder that cannot renew within
//! [`LeaseConfig::renew_deadline`] gives leadership up, which is before any
//! other candidate may take the lease over.
//!
//! Why not a crate: `kube-lease-manager` 0.13 supports kube 5, but it renews
//! with unguarded patches and keeps reporting leadership while renewals fail
//! with API errors; `kube-leader-election` is still on kube 4.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::Mutex;

use crate::apply::FIELD_MANAGER;
use crate::fence::Fence;

/// Leader-election settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease, e.g. `spindle-leader`.
    pub name: String,
    /// This replica's identity (unique per replica, e.g. the pod name).
    pub identity: String,
    /// How long a lease is valid after its last renewal (15 s).
    pub lease_duration: Duration,
    /// How long the holder keeps trying to renew before it gives up (10 s).
    pub renew_deadline: Duration,
    /// How often the holder renews (5 s).
    pub renew_interval: Duration,
    /// How often a candidate retries to acquire (2 s).
    pub retry_interval: Duration,
}

impl LeaseConfig {
    /// The defaults: lease 15 s, renew every 5 s, give up after 10 s without a renewal.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_interval: Duration::from_secs(5),
            retry_interval: Duration::from_secs(2),
        }
    }
}

/// Errors talking to the apiserver about the Lease.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request for the Lease failed.
    #[error("lease {name:?}: {source}")]
    Kube {
        /// Lease name.
        name: String,
        /// The underlying error.
        #[source]
        source: kube::Error,
    },
}

/// Why a holder stopped being the leader.
#[derive(Debug, thiserror::Error)]
pub enum LostLease {
    /// Another replica holds the lease now.
    #[error("lease {name:?} is now held by {holder:?}")]
    TakenOver {
        /// Lease name.
        name: String,
        /// The new holder.
        holder: String,
    },
    /// Renewals failed for longer than the renew deadline.
    #[error("could not renew lease {name:?} within {deadline:?}: {reason}")]
    RenewFailed {
        /// Lease name.
        name: String,
        /// The renew deadline.
        deadline: Duration,
        /// The last error.
        reason: String,
    },
}

/// The lease record as last observed, and when (on this replica's clock).
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    transitions: Option<i32>,
    duration_seconds: Option<i32>,
    at: Instant,
}

/// One replica's side of the election.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Mutex<Option<Observed>>,
    fence: Fence,
}

/// Result of one acquire-or-renew attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// This replica holds the lease.
    Leader,
    /// Another replica holds a valid lease.
    Follower {
        /// Who holds it.
        holder: String,
    },
    /// Another candidate won a race for the same resourceVersion; retry.
    Conflict,
}

impl LeaderElector {
    /// An elector for the Lease described by `config`. `client` must not be
    /// fenced by [`LeaderElector::fence`]: the elector's own Lease writes are
    /// what opens it.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        let api = Api::namespaced(client, &config.namespace);
        let fence = Fence::leased(config.renew_deadline);
        Self {
            api,
            config,
            observed: Mutex::new(None),
            fence,
        }
    }

    /// The fence that is open while this replica's leadership is fresh; put
    /// it on the client the controllers write with.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// The settings.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    fn kube_err(&self, source: kube::Error) -> Error {
        Error::Kube {
            name: self.config.name.clone(),
            source,
        }
    }

    /// One attempt to acquire the lease, or renew it when this replica holds
    /// it; success opens the fence from the time the attempt began.
    pub async fn try_acquire_or_renew(&self) -> Result<Attempt, Error> {
        let sent = Instant::now();
        let attempt = self.attempt().await;
        match &attempt {
            Ok(Attempt::Leader) => self.fence.renewed(sent),
            Ok(Attempt::Follower { .. }) => self.fence.revoke(),
            Ok(Attempt::Conflict) | Err(_) => {}
        }
        attempt
    }

    async fn attempt(&self) -> Result<Attempt, Error> {
        let now = MicroTime(Timestamp::now());
        let duration_seconds =
            i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.kube_err(e))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&post_params(), &lease).await {
                Ok(_) => Ok(Attempt::Leader),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Conflict),
                Err(e) => Err(self.kube_err(e)),
            };
        };

        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let observed_at = self.observe(&spec).await;
        let ours = holder.as_deref() == Some(self.config.identity.as_str());
        if let Some(holder) = &holder
            && !ours
        {
            let valid_for = Duration::from_secs(
                u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
            );
            if observed_at.elapsed() < valid_for {
                return Ok(Attempt::Follower {
                    holder: holder.clone(),
                });
            }
        }

        let transitions = spec.lease_transitions.unwrap_or(0);
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(duration_seconds),
            acquire_time: if ours {
                spec.acquire_time.clone()
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
            ..spec
        });
        // `replace` sends metadata.resourceVersion as read: a concurrent
        // writer makes this fail with 409 instead of being overwritten.
        match self
            .api
            .replace(&self.config.name, &post_params(), &lease)
            .await
        {
            Ok(updated) => {
                if let Some(spec) = &updated.spec {
                    self.observe(spec).await;
                }
                Ok(Attempt::Leader)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Conflict),
            Err(e) => Err(self.kube_err(e)),
        }
    }

    /// Record the lease as seen now; returns when this record was first seen.
    async fn observe(&self, spec: &LeaseSpec) -> Instant {
        let mut observed = self.observed.lock().await;
        let same = observed.as_ref().is_some_and(|o| {
            o.holder == spec.holder_identity
                && o.renew_time == spec.renew_time
                && o.transitions == spec.lease_transitions
                && o.duration_seconds == spec.lease_duration_seconds
        });
        if !same {
            *observed = Some(Observed {
                holder: spec.holder_identity.clone(),
                renew_time: spec.renew_time.clone(),
                transitions: spec.lease_transitions,
                duration_seconds: spec.lease_duration_seconds,
                at: Instant::now(),
            });
        }
        observed.as_ref().map(|o| o.at).unwrap_or_else(Instant::now)
    }

    /// Wait until this replica holds the lease.
    pub async fn acquire(&self) {
        let mut last_holder = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leader) => {
                    tracing::info!(lease = %self.config.name, identity = %self.config.identity, "acquired leader lease");
                    return;
                }
                Ok(Attempt::Follower { holder }) => {
                    if last_holder.as_ref() != Some(&holder) {
                        tracing::info!(lease = %self.config.name, %holder, "another replica is the leader; waiting");
                        last_holder = Some(holder);
                    }
                }
                Ok(Attempt::Conflict) => {}
                Err(error) => tracing::warn!(%error, "could not acquire leader lease; retrying"),
            }
            tokio::time::sleep(self.config.retry_interval).await;
        }
    }

    /// Keep renewing the lease; returns when leadership is lost, with the
    /// fence closed.
    pub async fn hold(&self) -> LostLease {
        let lost = self.renew_until_lost().await;
        self.fence.revoke();
        lost
    }

    async fn renew_until_lost(&self) -> LostLease {
        let mut last_renewal = Instant::now();
        let mut wait = self.config.renew_interval;
        let retry = self.config.retry_interval.min(self.config.renew_interval);
        loop {
            tokio::time::sleep(wait).await;
            let reason = match self.try_acquire_or_renew().await {
                Ok(Attempt::Leader) => {
                    last_renewal = Instant::now();
                    wait = self.config.renew_interval;
                    continue;
                }
                Ok(Attempt::Follower { holder }) => {
                    return LostLease::TakenOver {
                        name: self.config.name.clone(),
                        holder,
                    };
                }
                Ok(Attempt::Conflict) => {
                    "the lease kept changing under this replica (409 Conflict)".to_owned()
                }
                Err(error) => error.to_string(),
            };
            if last_renewal.elapsed() + retry >= self.config.renew_deadline {
                return LostLease::RenewFailed {
                    name: self.config.name.clone(),
                    deadline: self.config.renew_deadline,
                    reason,
                };
            }
            tracing::warn!(%reason, "renewing the leader lease failed; retrying");
            wait = retry;
        }
    }

    /// Give the lease up (if this replica holds it) so another replica can
    /// take over at once instead of waiting for it to expire.
    pub async fn release(&self) -> Result<(), Error> {
        self.fence.revoke();
        let Some(mut lease) = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.kube_err(e))?
        else {
            return Ok(());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        let now = MicroTime(Timestamp::now());
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            renew_time: Some(now.clone()),
            acquire_time: Some(now),
            ..spec
        });
        match self
            .api
            .replace(&self.config.name, &post_params(), &lease)
            .await
        {
            Ok(_) => {
                tracing::info!(lease = %self.config.name, "released leader lease");
                Ok(())
            }
            // Someone else changed it meanwhile: it is not ours any more.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(self.kube_err(e)),
        }
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    }
}

/// A default identity: the pod name (`POD_NAME`), else the host name, with the
/// process id so two processes on one host never share an identity.
pub fn default_identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return pod;
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "spindle".to_owned());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_client_go() {
        let c = LeaseConfig::new("ns", "spindle-leader", "me");
        assert_eq!(c.lease_duration, Duration::from_secs(15));
        assert_eq!(c.renew_interval, Duration::from_secs(5));
        assert!(
            c.renew_deadline < c.lease_duration,
            "a holder must give up before others may take over"
        );
        assert!(c.renew_interval < c.renew_deadline);
    }

    #[test]
    fn identity_is_not_empty() {
        assert!(!default_identity().is_empty());
    }
}
