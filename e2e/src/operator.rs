//! The real operator binary (`spindle run`, see [`crate::built_spindle_bin`]) as a
//! child process of a test: started with its own `--http-addr` on 127.0.0.1, its
//! output in a log file (kept across restarts, shown by [`OperatorProcess::log_tail`]),
//! signalled and restarted by its own PID.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::http_get_local;

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Value of one exact series (`name{labels} `, with the trailing space) in an
/// OpenMetrics body.
pub fn metric_value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// The writes (create, update, patch, delete) counted by
/// `spindle_kubernetes_requests_total`, without the leader Lease's own.
pub fn app_writes(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("spindle_kubernetes_requests_total{"))
        .filter(|l| {
            ["create", "update", "patch", "delete"]
                .iter()
                .any(|v| l.contains(&format!("verb=\"{v}\"")))
        })
        .filter(|l| !l.contains("resource=\"leases\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One `spindle run` process (restartable with the same command line).
pub struct OperatorProcess {
    child: tokio::process::Child,
    /// Port of its `--http-addr` (`/readyz`, `/metrics`).
    pub port: u16,
    /// Its `--identity`.
    pub identity: String,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    kubeconfig: PathBuf,
    args: Vec<String>,
    /// How many times it was started.
    pub starts: u32,
}

impl OperatorProcess {
    /// Starts `spindle run --identity IDENTITY --http-addr 127.0.0.1:<free> ARGS...`
    /// against `kubeconfig`, logging at `info,spindle=debug` to a file in the temp dir.
    pub fn start(kubeconfig: &Path, identity: &str, args: &[&str]) -> anyhow::Result<Self> {
        let port = free_port()?;
        let log = std::env::temp_dir().join(format!(
            "spindle-{identity}-{}-{port}.log",
            std::process::id()
        ));
        let mut all: Vec<String> = vec![
            "run".into(),
            "--identity".into(),
            identity.into(),
            "--http-addr".into(),
            format!("127.0.0.1:{port}"),
            "--log-level".into(),
            "info,spindle=debug".into(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let child = Self::spawn(kubeconfig, &all, &log, 1)?;
        Ok(Self {
            child,
            port,
            identity: identity.to_owned(),
            log,
            kubeconfig: kubeconfig.to_owned(),
            args: all,
            starts: 1,
        })
    }

    fn spawn(
        kubeconfig: &Path,
        args: &[String],
        log: &Path,
        start: u32,
    ) -> anyhow::Result<tokio::process::Child> {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        writeln!(file, "==== start {start}: spindle {}", args.join(" "))?;
        tokio::process::Command::new(crate::built_spindle_bin()?)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            // Plain text in the log file, for the tails a failure prints.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .context("starting the spindle binary")
    }

    /// Its PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`, `TERM`) to its PID.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.pid().context("the operator is not running")?;
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} {pid}: {status}");
        Ok(())
    }

    /// SIGKILL, reap, and start the same command line again (same port and identity).
    pub async fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        self.signal("KILL")?;
        self.child.wait().await?;
        self.starts += 1;
        self.child = Self::spawn(&self.kubeconfig, &self.args, &self.log, self.starts)?;
        Ok(())
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// `/readyz`'s status code, or None when it does not answer.
    pub async fn readyz(&self) -> Option<u16> {
        http_get_local(self.port, "/readyz").await.map(|(c, _)| c)
    }

    /// The `/metrics` body, or None when it does not answer.
    pub async fn metrics(&self) -> Option<String> {
        http_get_local(self.port, "/metrics").await.map(|(_, b)| b)
    }

    /// Whether `spindle_leader` is 1.
    pub async fn is_leader(&self) -> bool {
        self.metrics()
            .await
            .is_some_and(|m| metric_value(&m, "spindle_leader ") == Some(1.0))
    }

    /// Waits until `/readyz` answers 200; fails at once if the process exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                bail!(
                    "spindle run ({}) exited before it was ready: {status}\n{}",
                    self.identity,
                    self.log_tail(40)
                );
            }
            if self.readyz().await == Some(200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "spindle run ({}) was not ready within {timeout:?}\n{}",
                    self.identity,
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The last `lines` lines of its log, headed by the file's name.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!(
            "---- {} log ({}), last {} lines ----\n{tail}",
            self.identity,
            self.log.display(),
            all.len().min(lines)
        )
    }

    /// How many lines of its log contain `needle` (e.g. ` WARN `, ` ERROR `).
    pub fn log_count(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}
