//! Kubernetes-backed parts of the activator: the demand Lease writer, backend
//! discovery from kcm's EndpointSlices, and the route table from Services.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};

use super::core::{
    Activator, AppSettings, BackendDiscovery, Backends, BoxFuture, DemandError, DemandSignal,
};
use crate::render::labels::{APP_NAME_LABEL, MANAGED_BY, MANAGED_BY_LABEL};
use crate::scale::render::{
    SERVICE_NAME_LABEL, SERVICE_PORT_NAME, SLICE_MANAGED_BY, SLICE_MANAGED_BY_LABEL,
};
use crate::scale::{ACTIVATOR_PORT_ANNOTATION, AppKey, parse_duration, parse_port_annotation};

/// Lease duration of a demand Lease.
pub const DEMAND_LEASE_SECONDS: i32 = 5;
/// Service annotation with the app's cold-start timeout (written by the operator).
pub const COLD_START_TIMEOUT_ANNOTATION: &str = "spindle.spinkube.dev/cold-start-timeout";
/// Service annotation with the app's pending-request cap (written by the operator).
pub const MAX_PENDING_ANNOTATION: &str = "spindle.spinkube.dev/max-pending-requests";
/// Label on demand Leases: the app's namespace.
pub const LEASE_APP_NAMESPACE_LABEL: &str = "spindle.spinkube.dev/app-namespace";
/// Label on demand Leases: the app's name.
pub const LEASE_APP_NAME_LABEL: &str = "spindle.spinkube.dev/app-name";
/// Annotation on demand Leases: requests waiting.
pub const LEASE_PENDING_ANNOTATION: &str = "spindle.spinkube.dev/pending";

/// Name of an app's demand Lease.
pub fn demand_lease_name(app: &AppKey) -> String {
    format!("demand.{}.{}", app.namespace, app.name)
}

/// Writes `<namespace>/demand.<ns>.<app>` Leases: created on first demand,
/// then merge-patched (no resourceVersion precondition, so several
/// activators never conflict).
#[derive(Clone)]
pub struct LeaseDemand {
    api: Api<Lease>,
    identity: String,
}

impl LeaseDemand {
    /// Leases go to `namespace`; `identity` is this activator pod.
    pub fn new(client: Client, namespace: &str, identity: impl Into<String>) -> Self {
        LeaseDemand {
            api: Api::namespaced(client, namespace),
            identity: identity.into(),
        }
    }
}

impl DemandSignal for LeaseDemand {
    fn signal(&self, app: &AppKey, pending: u32) -> BoxFuture<Result<(), DemandError>> {
        let this = self.clone();
        let app = app.clone();
        Box::pin(async move {
            let name = demand_lease_name(&app);
            let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
            let patch = serde_json::json!({
                "metadata": {
                    "labels": {
                        LEASE_APP_NAMESPACE_LABEL: app.namespace,
                        LEASE_APP_NAME_LABEL: app.name,
                    },
                    "annotations": { LEASE_PENDING_ANNOTATION: pending.to_string() },
                },
                "spec": {
                    "holderIdentity": this.identity,
                    "leaseDurationSeconds": DEMAND_LEASE_SECONDS,
                    "renewTime": now,
                },
            });
            let err = |e: kube::Error| DemandError {
                app: app.clone(),
                message: e.to_string(),
            };
            match this
                .api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(err(e)),
            }
            let mut lease: Lease = serde_json::from_value(patch).map_err(|e| DemandError {
                app: app.clone(),
                message: e.to_string(),
            })?;
            lease.metadata.name = Some(name.clone());
            match this.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                // Another activator created it first: patch instead.
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let patch = serde_json::json!({"spec": {"renewTime": now, "holderIdentity": this.identity}});
                    this.api
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map(|_| ())
                        .map_err(err)
                }
                Err(e) => Err(err(e)),
            }
        })
    }
}

/// Backends from kcm's EndpointSlices of the apps' Services (label
/// `core.spinkube.dev/app-name`, which kcm copies from the Service), ignoring
/// Spindle's own activator slices.
pub struct SliceDiscovery {
    client: Client,
}

impl SliceDiscovery {
    /// Watch in every namespace.
    pub fn new(client: Client) -> Self {
        SliceDiscovery { client }
    }
}

/// Ready and not-ready (never terminating) pod endpoints of one slice, on
/// the port named like the Service port.
pub fn slice_backends(slice: &EndpointSlice) -> Backends {
    let mut out = Backends::default();
    let Some(port) = slice
        .ports
        .iter()
        .flatten()
        .find(|p| {
            p.name.as_deref() == Some(SERVICE_PORT_NAME)
                || slice.ports.as_ref().is_some_and(|ps| ps.len() == 1)
        })
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
    else {
        return out;
    };
    for ep in slice.endpoints.iter().flatten() {
        let c = ep.conditions.clone().unwrap_or_default();
        if c.terminating == Some(true) {
            continue;
        }
        for a in &ep.addresses {
            let Ok(ip) = a.parse::<IpAddr>() else {
                continue;
            };
            let addr = SocketAddr::new(ip, port);
            // Unset `ready` means ready (EndpointConditions semantics).
            if c.ready.unwrap_or(true) {
                out.ready.push(addr);
            } else {
                out.not_ready.push(addr);
            }
        }
    }
    out
}

impl BackendDiscovery for SliceDiscovery {
    fn run(self: Arc<Self>, activator: Activator) -> BoxFuture<()> {
        Box::pin(async move {
            let api: Api<EndpointSlice> = Api::all(self.client.clone());
            let cfg = watcher::Config::default().labels(&format!(
                "{APP_NAME_LABEL},{SLICE_MANAGED_BY_LABEL}!={SLICE_MANAGED_BY}"
            ));
            // slice (ns, name) → (app, backends); per app, the union.
            let mut slices: HashMap<(String, String), (AppKey, Backends)> = HashMap::new();
            let mut init: Option<HashMap<(String, String), (AppKey, Backends)>> = None;
            let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
            while let Some(event) = stream.next().await {
                let mut touched: Vec<AppKey> = Vec::new();
                match event {
                    Ok(Event::Apply(s)) | Ok(Event::InitApply(s)) if init.is_none() => {
                        if let Some((k, v)) = slice_entry(&s) {
                            touched.push(v.0.clone());
                            if let Some(old) = slices.insert(k, v) {
                                touched.push(old.0);
                            }
                        }
                    }
                    Ok(Event::InitApply(s)) => {
                        if let (Some(map), Some((k, v))) = (init.as_mut(), slice_entry(&s)) {
                            map.insert(k, v);
                        }
                    }
                    Ok(Event::Apply(_)) => {}
                    Ok(Event::Delete(s)) => {
                        let key = (s.namespace().unwrap_or_default(), s.name_any());
                        if let Some(old) = slices.remove(&key) {
                            touched.push(old.0);
                        }
                    }
                    Ok(Event::Init) => init = Some(HashMap::new()),
                    Ok(Event::InitDone) => {
                        let fresh = init.take().unwrap_or_default();
                        touched.extend(slices.values().map(|v| v.0.clone()));
                        touched.extend(fresh.values().map(|v| v.0.clone()));
                        slices = fresh;
                    }
                    Err(error) => tracing::warn!(%error, "EndpointSlice watch failed; retrying"),
                }
                touched.sort();
                touched.dedup();
                for app in touched {
                    let mut b = Backends::default();
                    for (k, v) in slices.values() {
                        if *k == app {
                            b.ready.extend(&v.ready);
                            b.not_ready.extend(&v.not_ready);
                        }
                    }
                    activator.set_backends(&app, b);
                }
            }
        })
    }
}

fn slice_entry(s: &EndpointSlice) -> Option<((String, String), (AppKey, Backends))> {
    let ns = s.namespace()?;
    let service = s.labels().get(SERVICE_NAME_LABEL)?.clone();
    Some((
        (ns.clone(), s.name_any()),
        (AppKey::new(ns, service), slice_backends(s)),
    ))
}

/// Route of one app, read from its Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The app.
    pub app: AppKey,
    /// Activator port.
    pub port: u16,
    /// Settings from the Service annotations (defaults when absent).
    pub settings: AppSettings,
}

/// The route a Spindle Service carries, if any.
pub fn service_route(svc: &Service) -> Option<Route> {
    let ann = svc.metadata.annotations.as_ref()?;
    let port = parse_port_annotation(ann.get(ACTIVATOR_PORT_ANNOTATION)?)?;
    let mut settings = AppSettings::default();
    if let Some(d) = ann
        .get(COLD_START_TIMEOUT_ANNOTATION)
        .and_then(|v| parse_duration(v))
    {
        settings.cold_start_timeout = d;
    }
    if let Some(n) = ann
        .get(MAX_PENDING_ANNOTATION)
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
    {
        settings.max_pending = n;
    }
    Some(Route {
        app: AppKey::new(svc.namespace()?, svc.name_any()),
        port,
        settings,
    })
}

/// The Service annotations the operator writes for the activator.
pub fn route_annotations(port: u16, settings: &crate::scale::Settings) -> BTreeMap<String, String> {
    BTreeMap::from([
        (ACTIVATOR_PORT_ANNOTATION.to_owned(), port.to_string()),
        (
            COLD_START_TIMEOUT_ANNOTATION.to_owned(),
            format!("{}ms", settings.cold_start_timeout.as_millis()),
        ),
        (
            MAX_PENDING_ANNOTATION.to_owned(),
            settings.max_pending.to_string(),
        ),
    ])
}

/// One route per port in `range`. Two apps on one port (two operators
/// allocating from one activator's port space) are a conflict: the app
/// already listening keeps the port, else the first by namespace/name, so
/// the listener never flaps between them. Returns the contested ports too.
pub fn routes_by_port<'a>(
    routes: impl Iterator<Item = &'a Route>,
    range: &std::ops::RangeInclusive<u16>,
    current: impl Fn(u16) -> Option<AppKey>,
) -> (HashMap<u16, &'a Route>, BTreeMap<u16, Vec<AppKey>>) {
    let mut by_port: BTreeMap<u16, Vec<&Route>> = BTreeMap::new();
    for r in routes.filter(|r| range.contains(&r.port)) {
        by_port.entry(r.port).or_default().push(r);
    }
    let mut wanted = HashMap::new();
    let mut conflicts = BTreeMap::new();
    for (port, mut rs) in by_port {
        rs.sort_by(|a, b| a.app.cmp(&b.app));
        if rs.len() > 1 {
            conflicts.insert(port, rs.iter().map(|r| r.app.clone()).collect());
        }
        let now = current(port);
        let kept = rs
            .iter()
            .find(|r| Some(&r.app) == now.as_ref())
            .unwrap_or(&rs[0]);
        wanted.insert(port, *kept);
    }
    (wanted, conflicts)
}

/// Keep the activator's listeners in line with Spindle's Services. Calls
/// `on_synced` once the first full list has been applied. A port that
/// disappears keeps its listener for `linger` (stale kube-proxy rules).
pub async fn sync_routes(
    client: Client,
    activator: Activator,
    range: std::ops::RangeInclusive<u16>,
    linger: Duration,
    on_synced: impl Fn() + Send,
) {
    let api: Api<Service> = Api::all(client);
    let cfg = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let mut routes: HashMap<(String, String), Route> = HashMap::new();
    let mut init: Option<HashMap<(String, String), Route>> = None;
    let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
    while let Some(event) = stream.next().await {
        let mut changed = false;
        match event {
            Ok(Event::Init) => init = Some(HashMap::new()),
            Ok(Event::InitApply(s)) => {
                if let (Some(map), Some(r)) = (init.as_mut(), service_route(&s)) {
                    map.insert((r.app.namespace.clone(), r.app.name.clone()), r);
                }
            }
            Ok(Event::InitDone) => {
                routes = init.take().unwrap_or_default();
                changed = true;
                on_synced();
            }
            Ok(Event::Apply(s)) => {
                let key = (s.namespace().unwrap_or_default(), s.name_any());
                match service_route(&s) {
                    Some(r) => routes.insert(key, r),
                    None => routes.remove(&key),
                };
                changed = true;
            }
            Ok(Event::Delete(s)) => {
                routes.remove(&(s.namespace().unwrap_or_default(), s.name_any()));
                changed = true;
            }
            Err(error) => tracing::warn!(%error, "Service watch failed; retrying"),
        }
        if !changed {
            continue;
        }
        if activator.is_draining() {
            // Shutting down: no new listeners.
            return;
        }
        let (wanted, conflicts) =
            routes_by_port(routes.values(), &range, |port| activator.app_key_on(port));
        activator
            .metrics()
            .port_conflicts
            .set(conflicts.len() as i64);
        for (port, apps) in &conflicts {
            tracing::warn!(
                port,
                apps = ?apps.iter().map(ToString::to_string).collect::<Vec<_>>(),
                kept = %wanted[port].app,
                "several apps claim one activator port (two operators sharing one activator?); \
                 only the kept app is served on it"
            );
        }
        for r in wanted.values() {
            if let Err(error) = activator.add_app(r.port, r.app.clone(), r.settings).await {
                tracing::error!(%error, app = %r.app, "cannot listen for app");
            }
        }
        for port in activator.ports() {
            if !wanted.contains_key(&port) {
                activator.set_routed(port, false);
                let activator = activator.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(linger).await;
                    activator.remove_app_if_unrouted(port);
                });
            }
        }
    }
}
