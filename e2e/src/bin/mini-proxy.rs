//! kube-proxy stand-in of the netns test tier (docs/e2e.md): one instance is
//! one node's dataplane for the Services of one namespace.
//!
//! It follows Services and EndpointSlices the way kube-proxy does: one watch
//! per kind, events applied in the order they arrived, a relist replacing the
//! whole cache at once; slices belong to a Service by the
//! `kubernetes.io/service-name` label, whoever manages them (kcm's slices and
//! spindle's additive activator slice alike); endpoint ports are matched by the
//! Service port's name; ready endpoints are used, and only when there are none,
//! serving-and-terminating ones. Each event takes effect `--lag-ms` after it
//! arrived (a node whose kube-proxy syncs late), still in order.
//!
//! It listens on every ClusterIP:port of the namespace's Services (TCP) and
//! forwards each new connection to one endpoint picked at random, for the
//! connection's lifetime, as kube-proxy's conntrack-pinned DNAT does. With no
//! endpoint, or when the endpoint refuses, the client's connection is reset
//! (kube-proxy REJECTs). Several instances emulate several nodes: instance
//! `--node-index k` listens on the ClusterIP with `k` added to its second octet
//! (10.96.x.y → 10.(96+k).x.y, inside the tier's local 10.96.0.0/12), so the
//! node-0 instance answers on the real ClusterIP and a client picks its "node"
//! by address.
//!
//! `--log` gets JSON lines: `synced` (first full sync applied), `endpoints`
//! (a Service port's applied endpoint set changed: `ready`, `fallback`), `conn`
//! (a connection and its backend, or `reject`). Run it inside the tier's
//! namespace.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use clap::Parser;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::watcher;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

#[derive(Parser, Debug)]
#[command(about = "kube-proxy stand-in for the netns test tier")]
struct Args {
    /// Namespace whose Services this instance proxies.
    #[arg(long)]
    namespace: String,
    /// Delay between an event's arrival and its effect.
    #[arg(long, default_value_t = 0)]
    lag_ms: u64,
    /// Emulated node: listens on the ClusterIP plus this many in its second octet.
    #[arg(long, default_value_t = 0)]
    node_index: u8,
    /// JSON-lines log (sync, endpoint changes, connections).
    #[arg(long)]
    log: PathBuf,
}

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// With DNAT the client's own SYN retries (over a minute) reach the endpoint;
/// a short timeout here would turn a full accept queue into a lost request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

struct Log(Mutex<std::fs::File>);

impl Log {
    fn event(&self, mut v: serde_json::Value) {
        v["t_ms"] = json!(now_ms());
        let mut line = v.to_string();
        line.push('\n');
        if let Ok(mut f) = self.0.lock()
            && let Err(e) = f.write_all(line.as_bytes())
        {
            eprintln!("mini-proxy: writing the log: {e}");
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// A watch event of either kind, as it arrived.
// Each event moves once through a channel: boxing the larger one buys nothing.
#[allow(clippy::large_enum_variant)]
enum Ev {
    Svc(Result<watcher::Event<Service>, watcher::Error>),
    Slice(Result<watcher::Event<EndpointSlice>, watcher::Error>),
}

/// What kube-proxy keeps per Service port.
#[derive(Default, Clone, PartialEq, Debug)]
struct Backends {
    ready: Vec<SocketAddr>,
    /// Serving and terminating: used only while nothing is ready.
    fallback: Vec<SocketAddr>,
}

#[derive(Default)]
struct Cache {
    services: BTreeMap<String, Service>,
    slices: BTreeMap<String, EndpointSlice>,
    /// Relists in progress (built aside, swapped in at InitDone).
    svc_init: Option<BTreeMap<String, Service>>,
    slice_init: Option<BTreeMap<String, EndpointSlice>>,
    svc_synced: bool,
    slice_synced: bool,
}

/// The applied dataplane: listener address → backends.
type Table = Arc<RwLock<HashMap<SocketAddr, (String, Backends)>>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.log)
        .with_context(|| format!("opening {}", args.log.display()))?;
    let log = Arc::new(Log(Mutex::new(file)));
    let client = kube::Client::try_default()
        .await
        .context("connecting to the cluster (KUBECONFIG)")?;
    let services: Api<Service> = Api::namespaced(client.clone(), &args.namespace);
    let slices: Api<EndpointSlice> = Api::namespaced(client, &args.namespace);
    let svc_events = watcher(services, watcher::Config::default())
        .map(Ev::Svc)
        .boxed();
    let slice_events = watcher(slices, watcher::Config::default())
        .map(Ev::Slice)
        .boxed();
    let mut events = futures::stream::select(svc_events, slice_events);

    // Arrival → the delayed applier, in order.
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Ev)>();
    tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            if tx.send((Instant::now(), ev)).is_err() {
                break;
            }
        }
    });

    let table: Table = Arc::default();
    let mut listeners: HashMap<SocketAddr, JoinHandle<()>> = HashMap::new();
    let mut cache = Cache::default();
    let mut applied: BTreeMap<String, Backends> = BTreeMap::new();
    let lag = Duration::from_millis(args.lag_ms);
    let mut synced_logged = false;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    eprintln!(
        "mini-proxy: namespace {} node {} lag {:?}",
        args.namespace, args.node_index, lag
    );
    loop {
        let (arrived, ev) = tokio::select! {
            e = rx.recv() => match e { Some(e) => e, None => break },
            _ = term.recv() => break,
        };
        let due = arrived + lag;
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {},
            _ = term.recv() => break,
        }
        apply(&mut cache, ev);
        if !(cache.svc_synced && cache.slice_synced) {
            continue;
        }
        if !synced_logged {
            synced_logged = true;
            log.event(json!({"ev": "synced", "lag_ms": args.lag_ms, "node": args.node_index}));
        }
        // Rebuild the dataplane from the cache, as a kube-proxy sync does.
        let wanted = dataplane(&cache, args.node_index);
        for (key, b) in wanted.values() {
            if applied.get(key) != Some(b) {
                log.event(json!({"ev": "endpoints", "svc": key,
                    "ready": b.ready.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    "fallback": b.fallback.iter().map(|a| a.to_string()).collect::<Vec<_>>()}));
            }
        }
        applied = wanted
            .values()
            .map(|(k, b)| (k.clone(), b.clone()))
            .collect();
        *table.write().unwrap_or_else(|e| e.into_inner()) = wanted.clone();
        listeners.retain(|addr, task| {
            let keep = wanted.contains_key(addr);
            if !keep {
                task.abort();
            }
            keep
        });
        for addr in wanted.keys() {
            if listeners.contains_key(addr) {
                continue;
            }
            match listen(*addr) {
                Ok(l) => {
                    listeners.insert(*addr, tokio::spawn(accept(l, table.clone(), log.clone())));
                }
                Err(e) => eprintln!("mini-proxy: listening on {addr}: {e}"),
            }
        }
    }
    for task in listeners.values() {
        task.abort();
    }
    Ok(())
}

/// A listener with a backlog deep enough for a burst of thousands of connects.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

fn key_of(m: &kube::api::ObjectMeta) -> String {
    m.name.clone().unwrap_or_default()
}

fn apply(cache: &mut Cache, ev: Ev) {
    match ev {
        // The watcher retries by itself; an error changes nothing applied.
        Ev::Svc(Err(e)) | Ev::Slice(Err(e)) => eprintln!("mini-proxy: watch error: {e}"),
        Ev::Svc(Ok(e)) => match e {
            watcher::Event::Init => cache.svc_init = Some(BTreeMap::new()),
            watcher::Event::InitApply(s) => {
                if let Some(m) = cache.svc_init.as_mut() {
                    m.insert(key_of(&s.metadata), s);
                }
            }
            watcher::Event::InitDone => {
                if let Some(m) = cache.svc_init.take() {
                    cache.services = m;
                }
                cache.svc_synced = true;
            }
            watcher::Event::Apply(s) => {
                cache.services.insert(key_of(&s.metadata), s);
            }
            watcher::Event::Delete(s) => {
                cache.services.remove(&key_of(&s.metadata));
            }
        },
        Ev::Slice(Ok(e)) => match e {
            watcher::Event::Init => cache.slice_init = Some(BTreeMap::new()),
            watcher::Event::InitApply(s) => {
                if let Some(m) = cache.slice_init.as_mut() {
                    m.insert(key_of(&s.metadata), s);
                }
            }
            watcher::Event::InitDone => {
                if let Some(m) = cache.slice_init.take() {
                    cache.slices = m;
                }
                cache.slice_synced = true;
            }
            watcher::Event::Apply(s) => {
                cache.slices.insert(key_of(&s.metadata), s);
            }
            watcher::Event::Delete(s) => {
                cache.slices.remove(&key_of(&s.metadata));
            }
        },
    }
}

/// The node's listener for a ClusterIP: the second octet shifted by the node index.
fn node_addr(cluster_ip: Ipv4Addr, node_index: u8) -> Ipv4Addr {
    let [a, b, c, d] = cluster_ip.octets();
    Ipv4Addr::new(a, b.wrapping_add(node_index), c, d)
}

/// Listener address → ("svc:portname", backends) for every TCP Service port.
fn dataplane(cache: &Cache, node_index: u8) -> HashMap<SocketAddr, (String, Backends)> {
    let mut out = HashMap::new();
    for (name, svc) in &cache.services {
        let Some(spec) = &svc.spec else { continue };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .and_then(|i| i.parse::<Ipv4Addr>().ok())
        else {
            continue; // headless or not yet allocated
        };
        for port in spec.ports.iter().flatten() {
            if port.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                continue;
            }
            let port_name = port.name.clone().unwrap_or_default();
            let Ok(listen_port) = u16::try_from(port.port) else {
                continue;
            };
            let backends = backends_for(cache, name, &port_name);
            let addr = SocketAddr::new(IpAddr::V4(node_addr(ip, node_index)), listen_port);
            out.insert(addr, (format!("{name}:{port_name}"), backends));
        }
    }
    out
}

fn backends_for(cache: &Cache, service: &str, port_name: &str) -> Backends {
    let (mut ready, mut fallback) = (BTreeSet::new(), BTreeSet::new());
    for slice in cache.slices.values() {
        let owner = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL));
        if owner.map(String::as_str) != Some(service) || slice.address_type != "IPv4" {
            continue;
        }
        let Some(port) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name
                && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
        }) else {
            continue;
        };
        let Some(port) = port.port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for ep in slice.endpoints.iter().flatten() {
            let c = ep.conditions.clone().unwrap_or_default();
            // Unset conditions mean ready (discovery/v1 semantics).
            let is_ready = c.ready.unwrap_or(true);
            let serving = c.serving.unwrap_or(is_ready);
            let terminating = c.terminating.unwrap_or(false);
            for a in &ep.addresses {
                let Ok(ip) = a.parse::<IpAddr>() else {
                    continue;
                };
                let addr = SocketAddr::new(ip, port);
                if is_ready {
                    ready.insert(addr);
                } else if serving && terminating {
                    fallback.insert(addr);
                }
            }
        }
    }
    Backends {
        ready: ready.into_iter().collect(),
        fallback: fallback.into_iter().collect(),
    }
}

async fn accept(listener: TcpListener, table: Table, log: Arc<Log>) {
    let local = listener.local_addr().ok();
    let mut seed = now_ms() | 1;
    loop {
        let Ok((client, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        // splitmix64: kube-proxy picks endpoints at random (a bare xorshift's low
        // bits, used by `% len`, are too regular for that).
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let r = z ^ (z >> 31);
        let pick = local.and_then(|addr| {
            let t = table.read().unwrap_or_else(|e| e.into_inner());
            let (svc, b) = t.get(&addr)?;
            let set = if b.ready.is_empty() {
                &b.fallback
            } else {
                &b.ready
            };
            let backend = *set.get((r % set.len().max(1) as u64) as usize)?;
            Some((svc.clone(), backend))
        });
        let log = log.clone();
        tokio::spawn(async move {
            let Some((svc, backend)) = pick else {
                log.event(json!({"ev": "conn", "from": peer.to_string(), "to": local.map(|a| a.to_string()), "backend": "reject"}));
                reset(client);
                return;
            };
            log.event(json!({"ev": "conn", "svc": svc, "from": peer.to_string(), "backend": backend.to_string()}));
            let upstream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await;
            let mut upstream = match upstream {
                Ok(Ok(s)) => s,
                _ => {
                    log.event(
                        json!({"ev": "conn_refused", "svc": svc, "backend": backend.to_string()}),
                    );
                    reset(client);
                    return;
                }
            };
            let _ = upstream.set_nodelay(true);
            let mut client = client;
            let _ = client.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
    }
}

/// Closes with RST, what a client sees when kube-proxy rejects.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}
