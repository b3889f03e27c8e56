//! Benchmark of the activator data plane on loopback (no cluster needed):
//!
//! - wake overhead: a request is held while no pod listens; the pod binds
//!   after a random 5-30 ms; overhead = response time − max(sent, listen)
//!   (the pod answers at once). p50/p99 over `--cold-starts` (default 200).
//! - proxy overhead at a fixed arrival rate (default 1,000 req/s for 5 s):
//!   latency through the activator minus latency straight to the pod.
//! - activator RSS with `--idle-apps` (default 1,000) idle app listeners.
//!
//! Run: `cargo run --release -p spindle-e2e --bin activator-bench`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spindle::activator::{
    Activator, ActivatorMetrics, AppSettings, Backends, BoxFuture, Config, DemandError,
    DemandSignal,
};
use spindle::scale::AppKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct NoDemand;

impl DemandSignal for NoDemand {
    fn signal(&self, _: &AppKey, _: u32) -> BoxFuture<Result<(), DemandError>> {
        Box::pin(async { Ok(()) })
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

/// Serve `HTTP/1.1 200` to every request on `listener`.
fn serve(listener: TcpListener) {
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
}

async fn get(addr: SocketAddr) -> u16 {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return 0;
    };
    let _ = s.set_nodelay(true);
    if s.write_all(b"GET / HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return 0;
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cold_starts = arg("--cold-starts", 200);
    let rate = arg("--rate", 1000);
    let seconds = arg("--seconds", 5);
    let idle_apps = arg("--idle-apps", 1000);

    let activator = Activator::new(
        Config {
            listen_ip: [127, 0, 0, 1].into(),
            max_pending_global: 20_000,
        },
        ActivatorMetrics::new(),
        Arc::new(NoDemand),
    );
    let key = AppKey::new("bench", "app");
    let app = activator
        .add_app(0, key.clone(), AppSettings::default())
        .await?;

    // 1. Wake overhead.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut overheads = Vec::new();
    let mut failures = 0;
    for _ in 0..cold_starts {
        let pod = free_port().await;
        activator.set_backends(
            &key,
            Backends {
                ready: vec![],
                not_ready: vec![pod],
            },
        );
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(5 + seed % 26);
        let sent = Instant::now();
        let client = tokio::spawn(async move {
            let status = get(app).await;
            (status, Instant::now())
        });
        tokio::time::sleep(delay).await;
        let listener = TcpListener::bind(pod).await?;
        let listen = Instant::now();
        serve(listener);
        let (status, done) = client.await?;
        if status != 200 {
            failures += 1;
            continue;
        }
        overheads.push(done - listen.max(sent));
    }
    overheads.sort();
    println!(
        "wake_overhead_ms cold_starts={} failures={} p50={:.2} p99={:.2} max={:.2}",
        overheads.len(),
        failures,
        pct(&overheads, 0.5),
        pct(&overheads, 0.99),
        pct(&overheads, 1.0)
    );

    // 2. Proxy overhead at a fixed arrival rate, new connection per request.
    let pod = free_port().await;
    serve(TcpListener::bind(pod).await?);
    activator.set_backends(
        &key,
        Backends {
            ready: vec![pod],
            not_ready: vec![],
        },
    );
    for (label, target) in [("direct", pod), ("activator", app)] {
        let total = rate * seconds;
        let period = Duration::from_secs_f64(1.0 / rate as f64);
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(total as usize);
        for i in 0..total {
            let at = start + period * u32::try_from(i).unwrap_or(u32::MAX);
            tokio::time::sleep_until(at.into()).await;
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                (get(target).await, t.elapsed())
            }));
        }
        let mut lat = Vec::new();
        let mut bad = 0;
        for t in tasks {
            let (status, d) = t.await?;
            if status == 200 {
                lat.push(d);
            } else {
                bad += 1;
            }
        }
        lat.sort();
        println!(
            "latency_ms path={label} rate={rate} requests={} errors={bad} p50={:.3} p99={:.3}",
            lat.len(),
            pct(&lat, 0.5),
            pct(&lat, 0.99)
        );
    }

    // 3. RSS with idle apps (listeners, no traffic).
    let before = rss_kib();
    for i in 0..idle_apps {
        activator
            .add_app(
                0,
                AppKey::new("bench", format!("idle-{i}")),
                AppSettings::default(),
            )
            .await?;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_kib();
    println!(
        "rss_kib idle_apps={idle_apps} before={before} after={after} per_app={:.1}",
        (after.saturating_sub(before)) as f64 / idle_apps.max(1) as f64
    );
    Ok(())
}
