//! Per-object exponential backoff for failed reconciles.
//!
//! kube's `Controller` calls `error_policy` with the failed object; this
//! tracker remembers how many times in a row each object failed, so a broken
//! object is retried quickly at first (0.5 s, 1 s, 2 s, ...) and then at most
//! every [`MAX_DELAY`], while other objects are unaffected. A successful
//! reconcile resets the object's count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// First retry delay.
pub const BASE_DELAY: Duration = Duration::from_millis(500);
/// Upper bound of the retry delay.
pub const MAX_DELAY: Duration = Duration::from_secs(300);

/// The delay before retry number `failures` (1 = first failure).
pub fn delay(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    BASE_DELAY.saturating_mul(1u32 << exp).min(MAX_DELAY)
}

/// Consecutive failures per object key.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Record a failure of `key` and return how long to wait before retrying.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        delay(*n)
    }

    /// Forget the failures of `key` after a successful reconcile.
    pub fn succeeded(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(key);
    }

    /// The keys whose last reconcile failed.
    pub fn failing(&self) -> Vec<String> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.keys().cloned().collect()
    }

    /// Consecutive failures of `key` so far.
    pub fn failures(&self, key: &str) -> u32 {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.get(key).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_up_to_the_cap() {
        assert_eq!(delay(1), Duration::from_millis(500));
        assert_eq!(delay(2), Duration::from_secs(1));
        assert_eq!(delay(3), Duration::from_secs(2));
        assert_eq!(delay(10), Duration::from_secs(256));
        assert_eq!(delay(11), MAX_DELAY);
        assert_eq!(delay(u32::MAX), MAX_DELAY);
        assert_eq!(delay(0), BASE_DELAY);
    }

    #[test]
    fn backoff_is_per_object_and_resets() {
        let b = Backoff::default();
        assert_eq!(b.failed("ns/a"), Duration::from_millis(500));
        assert_eq!(b.failed("ns/a"), Duration::from_secs(1));
        assert_eq!(
            b.failed("ns/b"),
            Duration::from_millis(500),
            "other objects are unaffected"
        );
        assert_eq!(b.failures("ns/a"), 2);
        let mut failing = b.failing();
        failing.sort();
        assert_eq!(failing, ["ns/a", "ns/b"]);
        b.succeeded("ns/a");
        assert_eq!(b.failing(), ["ns/b"]);
        assert_eq!(b.failures("ns/a"), 0);
        assert_eq!(b.failed("ns/a"), Duration::from_millis(500));
    }
}
