//! The local servers the harness starts: the gateway (`--spawn`) and workspace services (the
//! `direct` and `nginx` baselines). Each announces readiness with `listening on ADDR` on stdout;
//! its stderr goes to a log file in the run's temporary directory, and it is killed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a server may take to print its readiness line (a loaded 2-core machine).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the project's binaries are: `--bin-dir`, else next to `aether-load` itself.
pub fn bin_dir(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(d) = given {
        return Ok(d.to_path_buf());
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("exe dir")?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

/// A server process, killed on drop.
pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
    pub pid: u32,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stderr to `log` and waits for `listening on ADDR`.
    pub async fn start(mut cmd: Command, log: PathBuf) -> Result<Proc> {
        let err = std::fs::File::create(&log).with_context(|| format!("{}", log.display()))?;
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        // Name only the program in errors: the environment holds the gateway's secret.
        let program = cmd.as_std().get_program().to_string_lossy().into_owned();
        let mut child = cmd.spawn().with_context(|| format!("spawn {program}"))?;
        let pid = child.id().context("pid")?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(READY_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(a) = line.trim().strip_prefix("listening on ") {
                    return a.parse::<SocketAddr>().context("address");
                }
            }
            bail!("exited before it was ready")
        })
        .await
        .context("not ready in time")
        .and_then(|r| r)
        .with_context(|| {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("{program}; its log ends:\n{}", tail.join("\n"))
        })?;
        // Keep draining stdout so a chatty server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Proc {
            child,
            addr,
            pid,
            log,
        })
    }

    /// SIGTERM (through `kill`: no unsafe code here), then SIGKILL after a grace period.
    pub async fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    /// The last lines of the log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// SIGTERM to every pid in `pids` still running `program` (a pid may have been reused), then
/// SIGKILL to what is left after a grace period.
pub async fn terminate(pids: &[u32], program: &str) {
    let ours = |pid: &u32| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(program))
            .unwrap_or(false)
    };
    let signal = |sig: &'static str, pids: Vec<u32>| async move {
        if pids.is_empty() {
            return;
        }
        let _ = Command::new("kill")
            .arg(sig)
            .args(pids.iter().map(u32::to_string))
            .status()
            .await;
    };
    signal("-TERM", pids.iter().copied().filter(ours).collect()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(ours).collect();
        if left.is_empty() {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            signal("-KILL", left).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Settings of a spawned gateway.
pub struct GatewaySpawn<'a> {
    pub bin_dir: &'a Path,
    pub data_dir: &'a Path,
    pub secret: &'a str,
    pub idle_timeout: Duration,
    pub boot_delay: Duration,
    /// Inherited by the workspace services the gateway's local provider starts.
    pub ports_interval: Duration,
}

pub async fn spawn_gateway(s: GatewaySpawn<'_>) -> Result<Proc> {
    let mut cmd = Command::new(s.bin_dir.join("aether-gateway"));
    cmd.arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(s.data_dir)
        .env("AETHER_GATEWAY_JWT_SECRET", s.secret)
        .env(
            "AETHER_GATEWAY_IDLE_TIMEOUT",
            humantime::format_duration(s.idle_timeout).to_string(),
        )
        .env(
            "AETHER_GATEWAY_LOCAL_BOOT_DELAY",
            humantime::format_duration(s.boot_delay).to_string(),
        )
        .env(
            "AETHER_GATEWAY_WORKSPACE_BIN",
            s.bin_dir.join("aether-workspace"),
        )
        .env(
            "AETHER_WORKSPACE_PORTS_INTERVAL",
            humantime::format_duration(s.ports_interval).to_string(),
        )
        .env_remove("AETHER_GATEWAY_LISTEN")
        .env_remove("AETHER_GATEWAY_DATA_DIR");
    if std::env::var_os("RUST_LOG").is_none() {
        // Logging every connection would cost the gateway more than the relay under test.
        cmd.env("RUST_LOG", "warn");
    }
    Proc::start(cmd, s.data_dir.join("gateway.log")).await
}

pub async fn spawn_workspace(
    bin_dir: &Path,
    volume: &Path,
    log: PathBuf,
    ports_interval: Duration,
) -> Result<Proc> {
    std::fs::create_dir_all(volume)?;
    let mut cmd = Command::new(bin_dir.join("aether-workspace"));
    cmd.arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--volume")
        .arg(volume)
        .env(
            "AETHER_WORKSPACE_PORTS_INTERVAL",
            humantime::format_duration(ports_interval).to_string(),
        );
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "warn");
    }
    Proc::start(cmd, log).await
}
