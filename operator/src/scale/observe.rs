//! Turning observed objects into decision [`Inputs`](super::Inputs), and
//! the writes the decision asks for. Pure except [`dataplane_probe`].

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::render::{ActivatorEndpoint, SLICE_MANAGED_BY, SLICE_MANAGED_BY_LABEL};

/// Annotation on demand Leases with the number of waiting requests.
const PENDING_ANNOTATION: &str = "spindle.spinkube.dev/pending";

fn ours(slice: &EndpointSlice) -> bool {
    slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SLICE_MANAGED_BY_LABEL))
        .map(String::as_str)
        == Some(SLICE_MANAGED_BY)
}

/// Ready pod endpoints in the Service's slices, ignoring Spindle's own
/// activator slice (an endpoint with unset `ready` counts as ready).
pub fn ready_pods(slices: &[EndpointSlice]) -> u32 {
    let mut n = 0u32;
    for s in slices.iter().filter(|s| !ours(s)) {
        for ep in s.endpoints.iter().flatten() {
            let c = ep.conditions.clone().unwrap_or_default();
            if c.ready.unwrap_or(true) && c.terminating != Some(true) {
                n = n.saturating_add(u32::try_from(ep.addresses.len()).unwrap_or(u32::MAX));
            }
        }
    }
    n
}

/// Whether Spindle's activator slice is among the Service's slices.
pub fn activator_slice_present(slices: &[EndpointSlice]) -> bool {
    slices.iter().any(ours)
}

/// Ready activator pods from the `spindle-activator` Service's slices.
pub fn ready_activators(slices: &[EndpointSlice]) -> Vec<ActivatorEndpoint> {
    let mut out = Vec::new();
    for s in slices {
        for ep in s.endpoints.iter().flatten() {
            let c = ep.conditions.clone().unwrap_or_default();
            if !c.ready.unwrap_or(true) || c.terminating == Some(true) {
                continue;
            }
            let pod = ep.target_ref.as_ref().and_then(|r| r.name.clone());
            for ip in &ep.addresses {
                out.push(ActivatorEndpoint {
                    ip: ip.clone(),
                    pod: pod.clone().unwrap_or_else(|| ip.clone()),
                    node: ep.node_name.clone(),
                    zone: ep.zone.clone(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.pod.cmp(&b.pod).then_with(|| a.ip.cmp(&b.ip)));
    out.dedup();
    out
}

/// `(demand active, pending)` from the app's demand Lease: active while
/// `renewTime + leaseDurationSeconds > now`.
pub fn demand(lease: Option<&Lease>, now: SystemTime) -> (bool, u32) {
    let Some(lease) = lease else {
        return (false, 0);
    };
    let Some(spec) = &lease.spec else {
        return (false, 0);
    };
    let (Some(renew), Some(secs)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return (false, 0);
    };
    let renewed = SystemTime::from(renew.0);
    let active = renewed + Duration::from_secs(u64::try_from(secs).unwrap_or(0)) > now;
    let pending = lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PENDING_ANNOTATION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (active, if active { pending } else { 0 })
}

/// JSON patch for `deployments/<app>/scale` waking from 0: it fails (409/422)
/// unless replicas is still 0, so concurrent wakers are idempotent.
pub fn wake_patch(replicas: i32) -> serde_json::Value {
    serde_json::json!([
        {"op": "test", "path": "/spec/replicas", "value": 0},
        {"op": "replace", "path": "/spec/replicas", "value": replicas},
    ])
}

/// Merge patch for `deployments/<app>/scale` to zero.
pub fn scale_down_patch() -> serde_json::Value {
    serde_json::json!({"spec": {"replicas": 0}})
}

/// A failed dataplane probe.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No connection or no HTTP answer.
    #[error("probing {addr}: {message}")]
    Unreachable {
        /// The ClusterIP:port probed.
        addr: SocketAddr,
        /// What failed.
        message: String,
    },
    /// Something other than the activator answered (the dataplane ignored the slice).
    #[error("probing {addr}: answered by something other than the activator (status {status})")]
    WrongAnswer {
        /// The ClusterIP:port probed.
        addr: SocketAddr,
        /// HTTP status received.
        status: u16,
    },
}

/// The dataplane probe (docs/scale-to-zero.md, "How it works"): `GET /` to the Service's
/// ClusterIP with `Spindle-Probe: <uid>`; passes when the activator answers
/// `200 <ns>/<app>` itself. Run it while the app still has ready pods and the
/// activator slice is applied: kube-proxy prefers neither, so the caller
/// repeats it a few times (e.g. 5) and passes on the first activator answer.
pub async fn dataplane_probe(
    addr: SocketAddr,
    uid: &str,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), ProbeError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fail = |message: String| ProbeError::Unreachable { addr, message };
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let req = format!(
            "GET / HTTP/1.1\r\nhost: {name}.{namespace}\r\nspindle-probe: {uid}\r\nconnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut buf = Vec::new();
        // The activator's answer is tiny; bound what we read from anything else.
        (&mut s)
            .take(64 * 1024)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok::<_, ProbeError>(String::from_utf8_lossy(&buf).into_owned())
    };
    let text = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| fail("timed out".into()))??;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim())
        .unwrap_or("");
    if status == 200 && body == format!("{namespace}/{name}") {
        Ok(())
    } else {
        Err(ProbeError::WrongAnswer { addr, status })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ready_pods_ignore_our_slice_and_terminating_pods() {
        let kcm = slice(serde_json::json!({
            "metadata": {"name": "a-x", "labels": {"endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.244.0.1"], "conditions": {"ready": true}},
                {"addresses": ["10.244.0.2"], "conditions": {"ready": false}},
                {"addresses": ["10.244.0.3"], "conditions": {"ready": false, "serving": true, "terminating": true}}
            ]
        }));
        let act = slice(serde_json::json!({
            "metadata": {"name": "a-activator", "labels": {"endpointslice.kubernetes.io/managed-by": "spindle.spinkube.dev"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.255.1"], "conditions": {"ready": true}}]
        }));
        assert_eq!(ready_pods(&[kcm.clone(), act.clone()]), 1);
        assert!(activator_slice_present(&[kcm.clone(), act]));
        assert!(!activator_slice_present(&[kcm]));
    }

    #[test]
    fn demand_expires_with_the_lease() {
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "demand.apps.a", "annotations": {"spindle.spinkube.dev/pending": "4"}},
            "spec": {"renewTime": "2027-01-01T00:00:00.000000Z", "leaseDurationSeconds": 5}
        }))
        .unwrap();
        let renew = SystemTime::from(lease.spec.as_ref().unwrap().renew_time.as_ref().unwrap().0);
        assert_eq!(
            demand(Some(&lease), renew + Duration::from_secs(4)),
            (true, 4)
        );
        assert_eq!(
            demand(Some(&lease), renew + Duration::from_secs(5)),
            (false, 0)
        );
        assert_eq!(demand(None, renew), (false, 0));
    }

    #[test]
    fn patches() {
        assert_eq!(wake_patch(2)[0]["op"], "test");
        assert_eq!(wake_patch(2)[1]["value"], 2);
        assert_eq!(scale_down_patch()["spec"]["replicas"], 0);
    }

    #[tokio::test]
    async fn probe_passes_only_on_the_activators_answer() {
        use crate::activator::{
            Activator, ActivatorMetrics, AppSettings, BoxFuture, Config, DemandError, DemandSignal,
        };
        use crate::scale::AppKey;
        struct NoDemand;
        impl DemandSignal for NoDemand {
            fn signal(&self, _: &AppKey, _: u32) -> BoxFuture<Result<(), DemandError>> {
                Box::pin(async { Ok(()) })
            }
        }
        let a = Activator::new(
            Config {
                listen_ip: [127, 0, 0, 1].into(),
                max_pending_global: 10,
            },
            ActivatorMetrics::new(),
            std::sync::Arc::new(NoDemand),
        );
        let addr = a
            .add_app(0, AppKey::new("apps", "hello"), AppSettings::default())
            .await
            .unwrap();
        let t = Duration::from_secs(2);
        dataplane_probe(addr, "uid", "apps", "hello", t)
            .await
            .expect("activator answers");
        // Wrong app on that port (e.g. a stale port mapping): fails.
        assert!(matches!(
            dataplane_probe(addr, "uid", "apps", "other", t).await,
            Err(ProbeError::WrongAnswer { status: 200, .. })
        ));
        // Nothing listening: fails.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed = l.local_addr().unwrap();
        drop(l);
        assert!(matches!(
            dataplane_probe(closed, "uid", "apps", "hello", t).await,
            Err(ProbeError::Unreachable { .. })
        ));
    }
}
