//! Activator port allocation (docs/scale-to-zero.md, "How it works"): lowest free port in the range,
//! rebuilt from Service annotations, released ports quarantined.

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant, SystemTime};

/// The Service annotation that durably records an app's activator port.
pub const ACTIVATOR_PORT_ANNOTATION: &str = "spindle.spinkube.dev/activator-port";
/// Default activator port range (outside the ephemeral and NodePort ranges).
pub const DEFAULT_PORT_RANGE: RangeInclusive<u16> = 20000..=29999;
/// A released port is not handed out again for this long, so that stale
/// kube-proxy rules cannot carry one app's callers to another.
pub const PORT_QUARANTINE: Duration = Duration::from_secs(600);

/// A port range flag (`first-last`, e.g. `20000-29999`), as the operator and
/// the activator both take it (`--activator-port-range`).
pub fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let (a, b) = s
        .split_once('-')
        .ok_or("expected first-last, e.g. 20000-29999")?;
    let (a, b): (u16, u16) = (
        a.trim().parse().map_err(|_| "bad first port")?,
        b.trim().parse().map_err(|_| "bad last port")?,
    );
    if a == 0 || a > b {
        return Err("the range must be non-empty and start above 0".into());
    }
    Ok(a..=b)
}

/// An app, as `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppKey {
    /// Namespace.
    pub namespace: String,
    /// SpinApp name.
    pub name: String,
}

impl AppKey {
    /// `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        AppKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// No port left.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("every activator port in {first}-{last} is in use or quarantined")]
pub struct PortsExhausted {
    /// First port of the range.
    pub first: u16,
    /// Last port of the range.
    pub last: u16,
}

/// An existing claim read from a Service annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The app.
    pub app: AppKey,
    /// The annotation's port.
    pub port: u16,
    /// The Service's creation time (older claims win conflicts).
    pub created: Option<SystemTime>,
}

/// The allocation table. Owned by the leader; rebuilt with [`PortAllocator::rebuild`]
/// after the Service cache has synced and before any allocation.
#[derive(Debug, Clone)]
pub struct PortAllocator {
    range: RangeInclusive<u16>,
    by_port: BTreeMap<u16, AppKey>,
    by_app: HashMap<AppKey, u16>,
    quarantine: BTreeMap<u16, Instant>,
}

impl PortAllocator {
    /// An empty table over `range`.
    pub fn new(range: RangeInclusive<u16>) -> Self {
        PortAllocator {
            range,
            by_port: BTreeMap::new(),
            by_app: HashMap::new(),
            quarantine: BTreeMap::new(),
        }
    }

    /// Rebuild from the annotations found on Services. Claims outside the
    /// range are dropped; when two apps claim one port the older Service keeps
    /// it (ties: the smaller key). Returns the apps whose claim lost, which
    /// need a new port (and a new dataplane probe).
    pub fn rebuild(&mut self, claims: impl IntoIterator<Item = Claim>) -> Vec<AppKey> {
        self.by_port.clear();
        self.by_app.clear();
        let mut claims: Vec<Claim> = claims.into_iter().collect();
        // Oldest first; unknown creation times last.
        claims.sort_by(|a, b| {
            (a.created.is_none(), a.created, &a.app).cmp(&(b.created.is_none(), b.created, &b.app))
        });
        let mut losers = Vec::new();
        for claim in claims {
            if !self.range.contains(&claim.port)
                || self.by_port.contains_key(&claim.port)
                || self.by_app.contains_key(&claim.app)
            {
                if !self.by_app.contains_key(&claim.app) {
                    losers.push(claim.app);
                }
                continue;
            }
            self.by_port.insert(claim.port, claim.app.clone());
            self.by_app.insert(claim.app, claim.port);
        }
        losers.retain(|app| !self.by_app.contains_key(app));
        losers.sort();
        losers.dedup();
        losers
    }

    /// The app's port, allocating the lowest free, unquarantined one if it has none.
    pub fn allocate(&mut self, app: &AppKey, now: Instant) -> Result<u16, PortsExhausted> {
        if let Some(port) = self.by_app.get(app) {
            return Ok(*port);
        }
        self.quarantine.retain(|_, until| *until > now);
        let port = self
            .range
            .clone()
            .find(|p| !self.by_port.contains_key(p) && !self.quarantine.contains_key(p))
            .ok_or(PortsExhausted {
                first: *self.range.start(),
                last: *self.range.end(),
            })?;
        self.by_port.insert(port, app.clone());
        self.by_app.insert(app.clone(), port);
        Ok(port)
    }

    /// Release the app's port (the app was deleted or turned scale to zero off);
    /// the port is quarantined for [`PORT_QUARANTINE`].
    pub fn release(&mut self, app: &AppKey, now: Instant) -> Option<u16> {
        let port = self.by_app.remove(app)?;
        self.by_port.remove(&port);
        self.quarantine.insert(port, now + PORT_QUARANTINE);
        Some(port)
    }

    /// The app's port, if it has one.
    pub fn get(&self, app: &AppKey) -> Option<u16> {
        self.by_app.get(app).copied()
    }

    /// The app on a port.
    pub fn app_on(&self, port: u16) -> Option<&AppKey> {
        self.by_port.get(&port)
    }

    /// Ports neither allocated nor quarantined at `now`.
    pub fn free(&self, now: Instant) -> usize {
        let quarantined = self
            .quarantine
            .iter()
            .filter(|(p, until)| **until > now && !self.by_port.contains_key(p))
            .count();
        self.range.len() - self.by_port.len() - quarantined
    }
}

/// Parses the annotation value.
pub fn parse_port_annotation(value: &str) -> Option<u16> {
    value.trim().parse().ok().filter(|p| *p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> AppKey {
        AppKey::new("ns", n)
    }

    #[test]
    fn lowest_free_port_and_stable_per_app() {
        let now = Instant::now();
        let mut a = PortAllocator::new(100..=104);
        assert_eq!(a.allocate(&key("a"), now), Ok(100));
        assert_eq!(a.allocate(&key("b"), now), Ok(101));
        assert_eq!(a.allocate(&key("a"), now), Ok(100));
        assert_eq!(a.app_on(101), Some(&key("b")));
        assert_eq!(a.free(now), 3);
    }

    #[test]
    fn released_ports_are_quarantined_then_reused() {
        let now = Instant::now();
        let mut a = PortAllocator::new(100..=101);
        a.allocate(&key("a"), now).unwrap();
        a.allocate(&key("b"), now).unwrap();
        assert_eq!(a.release(&key("a"), now), Some(100));
        assert_eq!(a.free(now), 0);
        assert_eq!(
            a.allocate(&key("c"), now + Duration::from_secs(599)),
            Err(PortsExhausted {
                first: 100,
                last: 101
            })
        );
        assert_eq!(a.allocate(&key("c"), now + PORT_QUARANTINE), Ok(100));
        // Quarantine skips to the next free port rather than failing.
        let mut a = PortAllocator::new(100..=102);
        a.allocate(&key("a"), now).unwrap();
        a.release(&key("a"), now);
        assert_eq!(a.allocate(&key("b"), now), Ok(101));
    }

    #[test]
    fn rebuild_keeps_the_older_claim_and_reports_losers() {
        let t = SystemTime::UNIX_EPOCH;
        let mut a = PortAllocator::new(100..=199);
        let losers = a.rebuild([
            Claim {
                app: key("young"),
                port: 150,
                created: Some(t + Duration::from_secs(20)),
            },
            Claim {
                app: key("old"),
                port: 150,
                created: Some(t + Duration::from_secs(10)),
            },
            Claim {
                app: key("outside"),
                port: 5000,
                created: Some(t),
            },
            Claim {
                app: key("fine"),
                port: 100,
                created: None,
            },
        ]);
        assert_eq!(losers, vec![key("outside"), key("young")]);
        assert_eq!(a.get(&key("old")), Some(150));
        assert_eq!(a.get(&key("fine")), Some(100));
        // New allocations avoid rebuilt ports.
        let now = Instant::now();
        assert_eq!(a.allocate(&key("young"), now), Ok(101));
    }

    #[test]
    fn exhaustion() {
        let now = Instant::now();
        let mut a = PortAllocator::new(7..=7);
        a.allocate(&key("a"), now).unwrap();
        assert!(a.allocate(&key("b"), now).is_err());
        assert_eq!(parse_port_annotation(" 20417 "), Some(20417));
        assert_eq!(parse_port_annotation("0"), None);
        assert_eq!(parse_port_annotation("x"), None);
    }
}
