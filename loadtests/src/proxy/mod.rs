//! The proxy baselines: Debian's nginx and HAProxy in front of the same workspace services as the
//! `direct` baseline, each run in the foreground from its own temporary directory and stopped when
//! the run ends.
//!
//! Neither can report a port it picked itself, so the harness binds free ports, releases them,
//! writes them into the configuration, and starts again with other ports if the proxy finds one
//! taken in between. Readiness is a successful TCP connect to every port (neither prints anything
//! when ready).

pub mod haproxy;
pub mod nginx;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How many times a start is tried with fresh ports.
const START_TRIES: usize = 5;
/// How long a proxy may take to accept on every port.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a graceful stop may take before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A proxy process in the foreground, killed on drop.
pub struct Foreground {
    child: Child,
    pub pid: u32,
    /// The addresses it listens on, in the order its configuration was given them.
    pub addrs: Vec<SocketAddr>,
    /// The signal that stops it gracefully (`QUIT` for nginx, `USR1` for HAProxy).
    stop_signal: &'static str,
}

impl Foreground {
    /// Starts the proxy that `command(ports)` describes on `ports` free ports, retrying with other
    /// ports when it fails (one may have been taken in between). `log` is where it reports errors.
    pub async fn start(
        ports: usize,
        log: &Path,
        stop_signal: &'static str,
        mut command: impl FnMut(&[u16]) -> Result<Command>,
    ) -> Result<Foreground> {
        let mut last_err = None;
        for _ in 0..START_TRIES {
            let ports = (0..ports)
                .map(|_| free_port())
                .collect::<Result<Vec<_>>>()?;
            match Self::try_start(command(&ports)?, &ports, log, stop_signal).await {
                Ok(proxy) => return Ok(proxy),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("tried at least once"))
    }

    async fn try_start(
        mut cmd: Command,
        ports: &[u16],
        log: &Path,
        stop_signal: &'static str,
    ) -> Result<Foreground> {
        let program = cmd.as_std().get_program().to_string_lossy().into_owned();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {program}"))?;
        let pid = child.id().context("pid")?;
        let addrs: Vec<SocketAddr> = ports.iter().map(|&p| ([127, 0, 0, 1], p).into()).collect();
        let deadline = Instant::now() + READY_TIMEOUT;
        for &addr in &addrs {
            loop {
                if let Some(status) = child.try_wait()? {
                    let log = std::fs::read_to_string(log).unwrap_or_default();
                    bail!("{program} exited ({status}) on ports {ports:?}: {log}");
                }
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("{program} not listening on {addr} in time");
                }
                // Polling the port is the readiness check: the proxy prints nothing when ready.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(Foreground {
            child,
            pid,
            addrs,
            stop_signal,
        })
    }

    /// The graceful stop signal (through `kill`: no unsafe code here), then SIGKILL.
    pub async fn stop(&mut self) {
        let _ = Command::new("kill")
            .args([&format!("-{}", self.stop_signal), &self.pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(STOP_GRACE, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// A port that was free a moment ago.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}
