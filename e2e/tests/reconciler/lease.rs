//! The Lease-based leader elector against the apiserver: one holder at a
//! time, takeover only after expiry (or release), resourceVersion-guarded.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use spindle::leader::{Attempt, LeaderElector, LeaseConfig};
use spindle_e2e::TestNamespace;

fn config(ns: &str, identity: &str) -> LeaseConfig {
    LeaseConfig {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        renew_interval: Duration::from_millis(500),
        retry_interval: Duration::from_millis(200),
        ..LeaseConfig::new(ns, "test-lease", identity)
    }
}

#[tokio::test]
async fn one_holder_at_a_time() {
    let ns = TestNamespace::new().await;
    let a = LeaderElector::new(ns.client.clone(), config(&ns.name, "a"));
    let b = LeaderElector::new(ns.client.clone(), config(&ns.name, "b"));

    assert_eq!(
        a.try_acquire_or_renew().await.unwrap(),
        Attempt::Leader,
        "a creates the lease"
    );
    assert_eq!(
        b.try_acquire_or_renew().await.unwrap(),
        Attempt::Follower { holder: "a".into() }
    );
    assert_eq!(
        a.try_acquire_or_renew().await.unwrap(),
        Attempt::Leader,
        "a renews"
    );
    let lease = ns.api::<Lease>().get("test-lease").await.unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_eq!(spec.lease_duration_seconds, Some(2));

    // While a keeps renewing, b never takes over.
    let holding = tokio::spawn(async move {
        let lost = a.hold().await;
        (a, lost)
    });
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            matches!(
                b.try_acquire_or_renew().await.unwrap(),
                Attempt::Follower { .. }
            ),
            "b took a renewed lease"
        );
    }
    holding.abort();
    let _ = holding.await;

    // a stopped renewing (crashed): b takes over only after a full lease duration.
    let started = std::time::Instant::now();
    b.acquire().await;
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "took over too early: {:?}",
        started.elapsed()
    );
    let lease = ns.api::<Lease>().get("test-lease").await.unwrap();
    assert_eq!(
        lease.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("b")
    );
    assert_eq!(lease.spec.as_ref().unwrap().lease_transitions, Some(1));

    // A released lease is free at once.
    b.release().await.unwrap();
    let c = LeaderElector::new(ns.client.clone(), config(&ns.name, "c"));
    assert_eq!(c.try_acquire_or_renew().await.unwrap(), Attempt::Leader);

    // b, believing it still holds the lease, loses it on its next renewal.
    let lost = tokio::time::timeout(Duration::from_secs(5), b.hold())
        .await
        .expect("b notices");
    assert!(lost.to_string().contains("held by \"c\""), "{lost}");
    ns.cleanup().await;
}
