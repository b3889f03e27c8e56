//! The scale-to-zero step of the SpinApp reconcile (docs/scale-to-zero.md).
//!
//! [`prepare`] runs before the children are applied: it observes the app
//! (kcm's EndpointSlices, the Deployment, the demand Lease, the activators'
//! slices and their `/v1/activity`), calls [`scale::decide`] and performs the
//! writes that must come *before* the Deployment changes: the
//! `<app>-activator` EndpointSlice, the dataplane probe, and the replica count
//! the Deployment is then applied with (0 to scale down, N to wake). [`finish`]
//! runs after the children are applied: it removes the slice when the
//! decision says so (only after a ready pod was observed), publishes events
//! and returns `status.scaleToZero` and the requeue delay.
//!
//! Activity: warm requests go straight to the pods, so the activator cannot
//! see them. Once an app looks idle, its slice joins the pods' endpoints for
//! an observation window (two activity polls): new connections then reach
//! the activator too, which proxies them to the pods and reports them in
//! `/v1/activity`. Only a window without any request scales the app down.
//! Connections pinned to a pod for the whole window are not seen (see
//! docs/scale-to-zero.md).
//!
//! Nothing is written when nothing changed: the slice is compared with the
//! cache ([`crate::apply::apply`]), the replica count rides on the
//! Deployment's own apply, the port on the Service's, and the status is only
//! written when it differs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};

use super::cache::{Synced, Watches, cached};
use super::{Context, Error};
use crate::activator::kube::{
    LEASE_APP_NAME_LABEL, LEASE_APP_NAMESPACE_LABEL, demand_lease_name, route_annotations,
};
use crate::api::{ScaleToZeroStatus, SpinApp};
use crate::apply::{self, APP_NAME_LABEL};
use crate::model::{App, ExecutorMode, Replicas};
use crate::scale::render::{SERVICE_NAME_LABEL, activator_slice, activator_slice_name};
use crate::scale::{
    self, Action, AppKey, Claim, DEFAULT_PORT_RANGE, Decision, Inputs, PortAllocator, Probe,
    Refusal, Settings, State, observe, parse_port_annotation,
};

/// Settings of the scale-to-zero step.
#[derive(Clone, Debug)]
pub struct Options {
    /// Namespace of the activator Service and of the demand Leases.
    pub activator_namespace: String,
    /// Name of the activator Service (its EndpointSlices list the ready activators).
    pub activator_service: String,
    /// Port of the activators' admin endpoint (`/v1/activity`).
    pub activator_admin_port: u16,
    /// Poll this address instead of every ready activator's pod IP (tests,
    /// or an operator running outside the cluster).
    pub activator_admin_addr: Option<SocketAddr>,
    /// Activator ports assigned to apps (the activators' `--port-range`).
    pub port_range: RangeInclusive<u16>,
    /// How often the activators' activity is read.
    pub activity_poll: Duration,
    /// Replaces every app's `idleTimeout` (tests: the CRD's minimum is 30 s).
    pub idle_timeout_override: Option<Duration>,
    /// Check that the dataplane routes the Service to the activator before
    /// the first scale-down of an app (a request to its ClusterIP).
    pub dataplane_probe: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            activator_namespace: "spindle-system".into(),
            activator_service: "spindle-activator".into(),
            activator_admin_port: 9090,
            activator_admin_addr: None,
            port_range: DEFAULT_PORT_RANGE,
            activity_poll: Duration::from_secs(10),
            idle_timeout_override: None,
            dataplane_probe: true,
        }
    }
}

impl Options {
    /// The observation window before a scale-down: two activity polls.
    pub fn observe_window(&self) -> Duration {
        self.activity_poll * 2
    }
}

/// Flags of `spindle run` for scale to zero.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Namespace of the activator Service and the demand Leases (default:
    /// `POD_NAMESPACE`, else `spindle-system`).
    #[arg(long, env = "SPINDLE_ACTIVATOR_NAMESPACE")]
    pub activator_namespace: Option<String>,
    /// Name of the activator Service.
    #[arg(
        long,
        env = "SPINDLE_ACTIVATOR_SERVICE",
        default_value = "spindle-activator"
    )]
    pub activator_service: String,
    /// Port of the activators' admin endpoint.
    #[arg(long, env = "SPINDLE_ACTIVATOR_ADMIN_PORT", default_value_t = 9090)]
    pub activator_admin_port: u16,
    /// Activator ports assigned to apps, `first-last` (the activators' `--port-range`).
    #[arg(long, env = "SPINDLE_ACTIVATOR_PORT_RANGE", default_value = "20000-29999", value_parser = crate::scale::parse_port_range)]
    pub activator_port_range: RangeInclusive<u16>,
    /// Seconds between reads of the activators' activity.
    #[arg(long, env = "SPINDLE_ACTIVITY_POLL_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub activity_poll_seconds: u64,
    /// Probe the dataplane (a request to the app's ClusterIP) before an app's
    /// first scale-down (`--scale-to-zero-dataplane-probe=false` where the
    /// operator cannot reach ClusterIPs).
    #[arg(
        long,
        env = "SPINDLE_SCALE_TO_ZERO_DATAPLANE_PROBE",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub scale_to_zero_dataplane_probe: bool,
    /// Tests only: replace every app's idleTimeout (milliseconds).
    #[arg(long, hide = true, env = "SPINDLE_SCALE_TO_ZERO_IDLE_MS")]
    pub scale_to_zero_idle_ms: Option<u64>,
    /// Tests only: read activity from this address instead of the activator pods.
    #[arg(long, hide = true, env = "SPINDLE_ACTIVATOR_ADMIN_ADDR_OVERRIDE")]
    pub activator_admin_addr_override: Option<SocketAddr>,
}

impl Args {
    /// The options these flags describe.
    pub fn options(&self) -> Options {
        Options {
            activator_namespace: self
                .activator_namespace
                .clone()
                .or_else(|| {
                    std::env::var("POD_NAMESPACE")
                        .ok()
                        .filter(|v| !v.is_empty())
                })
                .unwrap_or_else(|| "spindle-system".into()),
            activator_service: self.activator_service.clone(),
            activator_admin_port: self.activator_admin_port,
            activator_admin_addr: self.activator_admin_addr_override,
            port_range: self.activator_port_range.clone(),
            activity_poll: Duration::from_secs(self.activity_poll_seconds),
            idle_timeout_override: self.scale_to_zero_idle_ms.map(Duration::from_millis),
            dataplane_probe: self.scale_to_zero_dataplane_probe,
        }
    }
}

/// What one activity poll reported for an app (summed over activators).
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    port: u16,
    last_request: Option<SystemTime>,
    pending: u32,
}

/// `/v1/activity` entries (the activator's `Activity`).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    namespace: String,
    name: String,
    port: u16,
    #[serde(default)]
    last_request_unix_ms: Option<u64>,
    #[serde(default)]
    pending: u32,
}

#[derive(Default)]
struct ActivityView {
    /// Last poll that reached at least one activator.
    polled_at: Option<SystemTime>,
    apps: HashMap<AppKey, Seen>,
}

/// What this process remembers per app (lost on restart: every default is
/// the conservative one, e.g. a restart restarts the idle clock).
#[derive(Debug, Clone)]
struct Memory {
    first_seen: SystemTime,
    ready_since: Option<SystemTime>,
    probe: Option<(u16, Probe, Instant)>,
    /// The last transitions this process made, so that a reconcile working
    /// from a cached SpinApp older than its own status write keeps them.
    transitions: Transitions,
}

#[derive(Debug, Clone, Default)]
struct Transitions {
    scale_down: Option<Time>,
    wake: Option<Time>,
    activity: Option<Time>,
}

/// How long a failed dataplane probe is trusted before it is tried again.
const PROBE_RETRY: Duration = Duration::from_secs(300);

/// State shared by the reconciles.
pub struct Shared {
    options: Options,
    ports: Mutex<Option<PortAllocator>>,
    memory: Mutex<HashMap<AppKey, Memory>>,
    activity: Mutex<ActivityView>,
    app_slices: Store<EndpointSlice>,
    activator_slices: Store<EndpointSlice>,
    leases: Store<Lease>,
    /// First-list signals of the three caches above.
    synced: [Synced; 3],
}

impl Shared {
    /// First-list signals of the scale-to-zero caches (a reconcile waits for them).
    pub fn synced(&self) -> &[Synced] {
        &self.synced
    }

    fn seen(&self, key: &AppKey) -> (Option<SystemTime>, Option<Seen>) {
        let view = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        (view.polled_at, view.apps.get(key).copied())
    }
}

/// Aborts the activity poller when dropped.
pub struct Guard(tokio::task::JoinHandle<()>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn enabled(app: &SpinApp) -> bool {
    app.spec
        .scale_to_zero
        .as_ref()
        .is_some_and(|s| s.enabled == Some(true))
}

/// Start the watches and the activity poller. Returns the shared state, a
/// stream of apps to reconcile (a pod became ready, demand appeared, the
/// activators changed) that must be driven by the controller
/// (`reconcile_on`), and a guard that stops the poller.
pub fn start(
    client: &Client,
    namespace: Option<&str>,
    options: &Options,
    apps: Store<SpinApp>,
    watches: &Watches,
) -> (
    Arc<Shared>,
    impl Stream<Item = ObjectRef<SpinApp>> + Send + 'static,
    Guard,
) {
    let watch = watcher::Config::default().any_semantic();
    let slices_api: Api<EndpointSlice> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (app_slices, app_slices_synced, app_slice_events) = cached(
        "app EndpointSlice",
        slices_api,
        watch.clone().labels(APP_NAME_LABEL),
        watches,
    );
    let (activator_slices, activator_slices_synced, activator_events) = cached(
        "activator EndpointSlice",
        Api::<EndpointSlice>::namespaced(client.clone(), &options.activator_namespace),
        watch.clone().labels(&format!(
            "{SERVICE_NAME_LABEL}={}",
            options.activator_service
        )),
        watches,
    );
    let (leases, leases_synced, lease_events) = cached(
        "demand Lease",
        Api::<Lease>::namespaced(client.clone(), &options.activator_namespace),
        watch.labels(LEASE_APP_NAME_LABEL),
        watches,
    );
    let shared = Arc::new(Shared {
        options: options.clone(),
        ports: Mutex::new(None),
        memory: Mutex::new(HashMap::new()),
        activity: Mutex::new(ActivityView::default()),
        app_slices,
        activator_slices,
        leases,
        synced: [app_slices_synced, activator_slices_synced, leases_synced],
    });

    // Triggers, only for apps with scale to zero on (kcm's slice updates of
    // every other app must not cost reconciles).
    let scaled = {
        let apps = apps.clone();
        move |ns: Option<String>, name: Option<&String>| -> Vec<ObjectRef<SpinApp>> {
            let (Some(ns), Some(name)) = (ns, name) else {
                return Vec::new();
            };
            let r = ObjectRef::new(name).within(&ns);
            match apps.get(&r) {
                Some(app) if enabled(&app) => vec![r],
                _ => Vec::new(),
            }
        }
    };
    let by_slice = {
        let scaled = scaled.clone();
        app_slice_events.filter_map(move |s| {
            let refs = s
                .ok()
                .map(|s| scaled(s.namespace(), s.labels().get(SERVICE_NAME_LABEL)))
                .unwrap_or_default();
            futures::future::ready(Some(futures::stream::iter(refs)))
        })
    };
    let by_lease = lease_events.filter_map(move |l| {
        let refs = l
            .ok()
            .map(|l| {
                scaled(
                    l.labels().get(LEASE_APP_NAMESPACE_LABEL).cloned(),
                    l.labels().get(LEASE_APP_NAME_LABEL),
                )
            })
            .unwrap_or_default();
        futures::future::ready(Some(futures::stream::iter(refs)))
    });
    let all_scaled = move || -> Vec<ObjectRef<SpinApp>> {
        apps.state()
            .iter()
            .filter(|a| enabled(a))
            .map(|a| ObjectRef::from_obj(a.as_ref()))
            .collect()
    };
    let by_activator = {
        let all_scaled = all_scaled.clone();
        activator_events.filter_map(move |e| {
            let refs = if e.is_ok() { all_scaled() } else { Vec::new() };
            futures::future::ready(Some(futures::stream::iter(refs)))
        })
    };
    let triggers = futures::stream::select(
        futures::stream::select(by_slice.flatten(), by_lease.flatten()),
        by_activator.flatten(),
    );

    let poller = tokio::spawn(poll_activity(shared.clone()));
    (shared, triggers, Guard(poller))
}

/// Read `/v1/activity` from every ready activator, forever.
async fn poll_activity(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.options.activity_poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let addrs: Vec<SocketAddr> = match shared.options.activator_admin_addr {
            Some(addr) => vec![addr],
            None => observe::ready_activators(&shared.activator_slices.state_cloned())
                .iter()
                .filter_map(|a| a.ip.parse().ok())
                .map(|ip| SocketAddr::new(ip, shared.options.activator_admin_port))
                .collect(),
        };
        let mut apps: HashMap<AppKey, Seen> = HashMap::new();
        let mut reached = false;
        for addr in addrs {
            match http_get_json::<Vec<Report>>(addr, "/v1/activity").await {
                Ok(reports) => {
                    reached = true;
                    for r in reports {
                        let seen = apps.entry(AppKey::new(r.namespace, r.name)).or_default();
                        seen.port = r.port;
                        seen.pending = seen.pending.saturating_add(r.pending);
                        let last = r
                            .last_request_unix_ms
                            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
                        seen.last_request = seen.last_request.max(last);
                    }
                }
                Err(error) => tracing::debug!(%addr, %error, "reading activator activity"),
            }
        }
        if reached {
            let mut view = shared.activity.lock().unwrap_or_else(|e| e.into_inner());
            view.polled_at = Some(SystemTime::now());
            view.apps = apps;
        }
    }
}

trait StoreExt<K> {
    fn state_cloned(&self) -> Vec<K>;
}

impl<K: Resource<DynamicType = ()> + Clone> StoreExt<K> for Store<K> {
    fn state_cloned(&self) -> Vec<K> {
        self.state().iter().map(|k| (**k).clone()).collect()
    }
}

/// A plain HTTP/1.1 GET of a small JSON document (the activators' admin
/// endpoint answers with a Content-Length).
async fn http_get_json<T: serde::de::DeserializeOwned>(
    addr: SocketAddr,
    path: &str,
) -> Result<T, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        // 10k apps × ~150 bytes fit easily.
        (&mut s)
            .take(16 * 1024 * 1024)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .map_err(|_| "timed out".to_owned())??;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP header")?;
    let head = String::from_utf8_lossy(&buf[..split]);
    if head.split(' ').nth(1) != Some("200") {
        return Err(format!(
            "answered {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    serde_json::from_slice(&buf[split + 4..]).map_err(|e| e.to_string())
}

/// Add what a scale-to-zero app's Deployment needs (preStop drain, grace
/// period, readiness probe); other apps' Deployments are returned unchanged.
pub fn decorate_deployment(mut deployment: Deployment, app: &SpinApp) -> Deployment {
    if let Ok(Some(settings)) = Settings::from_spec(app.spec.scale_to_zero.as_ref()) {
        scale::render::add_to_deployment(&mut deployment, &settings);
    }
    deployment
}

/// The decision for one reconcile, with what [`finish`] still has to do.
pub struct Plan {
    key: AppKey,
    /// `None`: scale to zero is off for this app.
    decision: Option<Decision>,
    port: Option<u16>,
    slice: Option<EndpointSlice>,
    service_uid: Option<String>,
    performed: Vec<Action>,
    last_activity: Option<SystemTime>,
}

/// What [`finish`] reports.
pub struct Finished {
    /// `status.scaleToZero` (`None`: not a scale-to-zero app).
    pub status: Option<ScaleToZeroStatus>,
    /// Decide again after this long.
    pub requeue_after: Option<Duration>,
}

impl Finished {
    /// The requeue delay: `default`, or sooner when scale to zero has a deadline.
    pub fn requeue(&self, default: Duration) -> Duration {
        self.requeue_after.map_or(default, |d| d.min(default))
    }
}

fn kube_err(what: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { what, source }
}

/// Observe, decide, and perform the writes that precede the Deployment
/// apply. Sets `model.replicas` (0 when going or staying at zero) and the
/// Service's route annotations.
pub async fn prepare(app: &SpinApp, ctx: &Context, model: &mut App) -> Result<Plan, Error> {
    let shared = &ctx.scale;
    let ns = model.namespace.clone();
    let key = AppKey::new(&ns, &model.name);
    let settings = match Settings::from_spec(app.spec.scale_to_zero.as_ref()) {
        Ok(s) => s,
        Err(error) => {
            // The CRD rejects these; an old object may still carry one.
            tracing::warn!(object = %key, %error, "ignoring invalid scaleToZero");
            None
        }
    };
    let settings = settings.filter(|_| !matches!(model.executor, ExecutorMode::NoDeployment));

    // The app's slices (kcm's and ours); the caches are synced (the
    // reconcile waited for them, see `Context::caches_synced`).
    let slices: Vec<EndpointSlice> = shared
        .app_slices
        .state()
        .iter()
        .filter(|s| {
            s.namespace().as_deref() == Some(ns.as_str())
                && s.labels().get(SERVICE_NAME_LABEL) == Some(&model.name)
        })
        .map(|s| (**s).clone())
        .collect();
    let ours = slices
        .iter()
        .find(|s| s.name_any() == activator_slice_name(&model.name))
        .cloned();
    let service = ctx.services.get(&ObjectRef::new(&model.name).within(&ns));
    let service_uid = service.as_ref().and_then(|s| s.uid());

    let Some(settings) = settings else {
        // Off: release the port; the decision removes a leftover slice.
        if let Some(ports) = shared
            .ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            ports.release(&key, Instant::now());
        }
        shared
            .memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        let actions = if ours.is_some() {
            vec![Action::DeleteActivatorSlice]
        } else {
            Vec::new()
        };
        return Ok(Plan {
            key,
            decision: Some(Decision {
                state: None,
                actions,
                refusal: None,
                requeue_after: None,
            }),
            port: None,
            slice: ours,
            service_uid,
            performed: Vec::new(),
            last_activity: None,
        });
    };

    // Port: rebuilt from the Services' annotations once, then allocated.
    let port = {
        let mut ports = shared.ports.lock().unwrap_or_else(|e| e.into_inner());
        let table = ports.get_or_insert_with(|| {
            let mut table = PortAllocator::new(shared.options.port_range.clone());
            let services = ctx.services.state();
            let claims = services.iter().filter_map(|s| {
                let port = parse_port_annotation(
                    s.annotations()
                        .get(scale::ACTIVATOR_PORT_ANNOTATION)?
                        .as_str(),
                )?;
                Some(Claim {
                    app: AppKey::new(s.namespace()?, s.name_any()),
                    port,
                    created: s
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| SystemTime::from(t.0)),
                })
            });
            let losers = table.rebuild(claims.collect::<Vec<_>>());
            if !losers.is_empty() {
                tracing::warn!(apps = ?losers, "activator port claimed twice; the younger apps get new ports");
            }
            table
        });
        match table.allocate(&key, Instant::now()) {
            Ok(port) => Some(port),
            Err(error) => {
                tracing::warn!(object = %key, %error, "no activator port");
                None
            }
        }
    };
    if let Some(port) = port {
        model
            .service_annotations
            .extend(route_annotations(port, &settings));
    }

    let now = SystemTime::now();
    let serving_replicas = match model.replicas {
        Replicas::Fixed(n) => n,
        // The HPA scales from 1; the activator wakes to 1.
        Replicas::Autoscaled => 1,
    };
    let deployment = ctx
        .deployments
        .get(&ObjectRef::new(&model.name).within(&ns));
    let deployment_replicas = match &deployment {
        Some(d) => d.spec.replicas.unwrap_or(1),
        None => serving_replicas,
    };
    let ready_pods = observe::ready_pods(&slices);
    let existing_pods: u32 = slices
        .iter()
        .filter(|s| s.name_any() != activator_slice_name(&model.name))
        .flat_map(|s| s.endpoints.iter().flatten())
        .map(|e| u32::try_from(e.addresses.len()).unwrap_or(u32::MAX))
        .sum();
    let activators = observe::ready_activators(&shared.activator_slices.state_cloned());
    let lease = shared
        .leases
        .get(&ObjectRef::new(&demand_lease_name(&key)).within(&shared.options.activator_namespace));
    let (demand_active, pending) = observe::demand(lease.as_deref(), now);
    let (polled_at, seen) = shared.seen(&key);
    let fresh = polled_at.is_some_and(|t| {
        now.duration_since(t).unwrap_or_default() <= shared.options.activity_poll * 3
    });
    let activity_signal_known = fresh && seen.is_some_and(|s| Some(s.port) == port);

    let (memory, probe) = {
        let mut all = shared.memory.lock().unwrap_or_else(|e| e.into_inner());
        let m = all.entry(key.clone()).or_insert_with(|| Memory {
            first_seen: now,
            ready_since: None,
            probe: None,
            transitions: Transitions::default(),
        });
        if ready_pods == 0 {
            m.ready_since = None;
        } else if m.ready_since.is_none() {
            m.ready_since = Some(now);
        }
        let probe = match (m.probe, port) {
            _ if !shared.options.dataplane_probe => Probe::Passed,
            (Some((p, Probe::Failed, at)), Some(port)) if p == port => {
                if at.elapsed() < PROBE_RETRY {
                    Probe::Failed
                } else {
                    Probe::NotRun
                }
            }
            (Some((p, result, _)), Some(port)) if p == port => result,
            _ => Probe::NotRun,
        };
        (m.clone(), probe)
    };
    let previous = app.status.as_ref().and_then(|s| s.scale_to_zero.as_ref());
    let last_wake = previous
        .and_then(|p| p.last_wake_time.clone())
        .max(memory.transitions.wake.clone())
        .map(|t| SystemTime::from(t.0));
    let last_activity = [
        Some(memory.first_seen),
        memory.ready_since,
        last_wake,
        seen.and_then(|s| s.last_request),
        seen.filter(|s| s.pending > 0).map(|_| now),
    ]
    .into_iter()
    .flatten()
    .max();

    let inputs = Inputs {
        enabled: true,
        serving_replicas,
        ready_pods,
        existing_pods,
        deployment_replicas,
        demand_active,
        pending,
        last_activity,
        activity_signal_known,
        ready_activators: u32::try_from(activators.len()).unwrap_or(u32::MAX),
        slice_present: ours.is_some(),
        port_assigned: port.is_some(),
        probe,
        ready_since: memory.ready_since,
        idle_timeout: shared
            .options
            .idle_timeout_override
            .unwrap_or(settings.idle_timeout),
        slice_since: ours
            .as_ref()
            .and_then(|s| s.metadata.creation_timestamp.as_ref())
            .map(|t| SystemTime::from(t.0)),
        observe_window: shared.options.observe_window(),
        now,
    };
    let mut decision = scale::decide(&inputs);
    tracing::debug!(object = %key, ?inputs, ?decision, "scale to zero");

    // Writes before the Deployment apply, in order; stop at the first that
    // cannot be made (the next reconcile decides again).
    let mut performed = Vec::new();
    let mut replicas = if deployment_replicas == 0 {
        0
    } else {
        serving_replicas
    };
    let mut slice = ours;
    for action in decision.actions.clone() {
        match action {
            Action::ApplyActivatorSlice => {
                let (Some(port), Some(uid)) = (port, service_uid.as_deref()) else {
                    // No Service yet: its creation triggers the next reconcile.
                    break;
                };
                let desired = activator_slice(&key, uid, port, &activators);
                let applied =
                    apply::apply(&ctx.api::<EndpointSlice>(&ns), desired, slice.clone(), uid)
                        .await?;
                slice = Some(applied.into_object());
                performed.push(action);
            }
            Action::RunDataplaneProbe => {
                let result = dataplane_probe(app, &key, service.as_deref()).await;
                if let Some(port) = port {
                    let mut all = shared.memory.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(m) = all.get_mut(&key) {
                        m.probe = Some((port, result, Instant::now()));
                    }
                }
                if result != Probe::Passed {
                    decision.state = Some(State::Serving);
                    decision.refusal = Some(Refusal::DataplaneProbeFailed);
                    decision.requeue_after = Some(Duration::from_secs(1));
                    break;
                }
                performed.push(action);
            }
            Action::ScaleToZero => {
                replicas = 0;
                if model.replicas == Replicas::Autoscaled {
                    scale_patch(ctx, &ns, &model.name, &observe::scale_down_patch(), false).await?;
                }
                performed.push(action);
            }
            Action::Wake(n) => {
                replicas = n;
                if model.replicas == Replicas::Autoscaled {
                    scale_patch(
                        ctx,
                        &ns,
                        &model.name,
                        &serde_json::json!({"spec": {"replicas": n}}),
                        true,
                    )
                    .await?;
                }
                performed.push(action);
            }
            // After the Deployment apply (see `finish`).
            Action::DeleteActivatorSlice => {}
        }
    }
    if let Replicas::Fixed(_) = model.replicas {
        model.replicas = Replicas::Fixed(replicas);
    }
    // Writes not performed are dropped from what `finish` reports.
    let stopped_early = decision
        .actions
        .iter()
        .any(|a| !matches!(a, Action::DeleteActivatorSlice) && !performed.contains(a));
    if stopped_early {
        decision
            .actions
            .retain(|a| performed.contains(a) && !matches!(a, Action::DeleteActivatorSlice));
        decision.requeue_after = Some(
            decision
                .requeue_after
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1)),
        );
    }
    Ok(Plan {
        key,
        decision: Some(decision),
        port,
        slice,
        service_uid,
        performed,
        last_activity,
    })
}

async fn scale_patch(
    ctx: &Context,
    ns: &str,
    name: &str,
    patch: &serde_json::Value,
    json_patch: bool,
) -> Result<(), Error> {
    let api = ctx.api::<Deployment>(ns);
    let params = PatchParams {
        field_manager: Some(apply::FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    // One leader wakes, so a merge patch is enough; a 409/422 still means
    // someone else changed the scale first.
    let result = api.patch_scale(name, &params, &Patch::Merge(patch)).await;
    match result {
        Ok(_) => Ok(()),
        // The `test` op failed: someone else woke it already.
        Err(kube::Error::Api(s)) if json_patch && (s.code == 409 || s.code == 422) => Ok(()),
        Err(source) => Err(kube_err(format!("scaling Deployment {ns}/{name}"))(source)),
    }
}

async fn dataplane_probe(
    app: &SpinApp,
    key: &AppKey,
    service: Option<&k8s_openapi::api::core::v1::Service>,
) -> Probe {
    let Some(ip) = service
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.cluster_ip.as_deref())
        .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
    else {
        return Probe::Failed;
    };
    let addr = SocketAddr::new(ip, crate::render::service::SERVICE_PORT as u16);
    let uid = app.uid().unwrap_or_default();
    // kube-proxy spreads connections at random over the pods and the activator,
    // so with n ready pods one attempt reaches the activator with p = 1/(n+1).
    // 8 attempts per endpoint keep a false "not routed" below 1/3000 for one pod
    // and 0.2 % for ten; each miss is one GET to the app.
    let ready = app.status.as_ref().map_or(0, |s| s.ready_replicas.max(0)) as usize;
    let attempts = (8 * (ready + 1)).min(64);
    // The probe runs inside a reconcile: bound it as a whole, so an unrouted
    // ClusterIP (every connect timing out) costs seconds, not attempts x timeout.
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut last = None;
    for _ in 0..attempts {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match observe::dataplane_probe(
            addr,
            &uid,
            &key.namespace,
            &key.name,
            left.min(Duration::from_secs(2)),
        )
        .await
        {
            Ok(()) => return Probe::Passed,
            Err(error) => last = Some(error),
        }
    }
    if let Some(error) = last {
        tracing::warn!(object = %key, %error, "dataplane probe failed: the Service is not routed to the activator; not scaling to zero");
    }
    Probe::Failed
}

/// A status time as the apiserver stores it (whole seconds), so that a
/// status built again compares equal to the stored one.
fn whole_seconds(t: SystemTime) -> Option<Time> {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
    Timestamp::from_second(i64::try_from(secs).ok()?)
        .ok()
        .map(Time)
}

/// After the children are applied: remove the slice if decided, publish
/// events, and return `status.scaleToZero` and the requeue delay.
pub async fn finish(plan: Plan, app: &SpinApp, ctx: &Context) -> Result<Finished, Error> {
    let Some(decision) = plan.decision else {
        return Ok(Finished {
            status: None,
            requeue_after: None,
        });
    };
    let ns = plan.key.namespace.clone();
    let regarding = ctx.regarding(app);
    if decision.actions.contains(&Action::DeleteActivatorSlice)
        && let (Some(slice), Some(uid)) = (plan.slice.as_ref(), plan.service_uid.as_deref())
    {
        apply::delete_if_owned(&ctx.api::<EndpointSlice>(&ns), slice, uid).await?;
    }
    let Some(state) = decision.state else {
        // Off (or stopped by the user with replicas 0).
        let status = decision.refusal.map(|r| ScaleToZeroStatus {
            reason: Some(r.as_str().to_owned()),
            ..Default::default()
        });
        return Ok(Finished {
            status,
            requeue_after: None,
        });
    };

    let mut previous = app
        .status
        .as_ref()
        .and_then(|s| s.scale_to_zero.clone())
        .unwrap_or_default();
    let remembered = ctx
        .scale
        .memory
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&plan.key)
        .map(|m| m.transitions.clone())
        .unwrap_or_default();
    previous.last_scale_down_time = previous.last_scale_down_time.max(remembered.scale_down);
    previous.last_wake_time = previous.last_wake_time.max(remembered.wake);
    if remembered.activity.is_some() {
        previous.last_activity_time = remembered.activity;
    }
    let now = whole_seconds(SystemTime::now()).unwrap_or_else(|| Time(Timestamp::now()));
    let mut status = ScaleToZeroStatus {
        state: Some(state.as_str().to_owned()),
        reason: decision.refusal.map(|r| r.as_str().to_owned()),
        activator_port: plan.port.map(i32::from),
        last_activity_time: previous.last_activity_time.clone(),
        last_scale_down_time: previous.last_scale_down_time.clone(),
        last_wake_time: previous.last_wake_time.clone(),
    };
    if plan.performed.contains(&Action::ScaleToZero) {
        ctx.metrics.scale_transition("down");
        status.last_scale_down_time = Some(now.clone());
        status.last_activity_time = plan.last_activity.and_then(whole_seconds);
        ctx.publish(
            &regarding,
            EventType::Normal,
            "ScaledToZero",
            "no request within the idle timeout; scaling to zero (requests now wake the app through the activator)".into(),
            None,
        )
        .await;
    }
    if let Some(Action::Wake(n)) = plan.performed.iter().find(|a| matches!(a, Action::Wake(_))) {
        ctx.metrics.scale_transition("up");
        status.last_wake_time = Some(now.clone());
        let why = match decision.refusal {
            Some(Refusal::ActivatorUnavailable) => "no activator is ready",
            _ => "requests are waiting in the activator",
        };
        ctx.publish(
            &regarding,
            EventType::Normal,
            "Woke",
            format!("{why}; scaling to {n} replica(s)"),
            None,
        )
        .await;
    }
    if let Some(
        r @ (Refusal::ActivatorUnavailable
        | Refusal::DataplaneProbeFailed
        | Refusal::PortsExhausted),
    ) = decision.refusal
        && previous.reason.as_deref() != Some(r.as_str())
    {
        ctx.publish(
            &regarding,
            EventType::Warning,
            "ScaleToZeroSuspended",
            format!("{r}: the app is not scaled to zero until this clears"),
            None,
        )
        .await;
    }
    // A refusal may clear without an event (a Lease expiring, activity
    // becoming known): look again at the poll pace.
    let requeue_after = match decision.refusal {
        None | Some(Refusal::ReplicasZero) => decision.requeue_after,
        Some(Refusal::PortsExhausted) => Some(Duration::from_secs(60)),
        Some(_) => Some(
            decision
                .requeue_after
                .unwrap_or(ctx.scale.options.activity_poll)
                .min(ctx.scale.options.activity_poll),
        ),
    };
    // Demand Leases trigger canonical SpinApps only (the trigger stream maps
    // to them); other groups look at demand on the poll pace instead.
    let requeue_after = if matches!(ctx.group, super::legacy::AppGroup::Canonical) {
        requeue_after
    } else {
        Some(requeue_after.map_or(ctx.scale.options.activity_poll, |d| {
            d.min(ctx.scale.options.activity_poll)
        }))
    };
    if let Some(m) = ctx
        .scale
        .memory
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(&plan.key)
    {
        m.transitions = Transitions {
            scale_down: status.last_scale_down_time.clone(),
            wake: status.last_wake_time.clone(),
            activity: status.last_activity_time.clone(),
        };
    }
    Ok(Finished {
        status: Some(status),
        requeue_after,
    })
}
