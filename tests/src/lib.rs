//! End-to-end test harness: starts the real binaries (`aether-gateway`, `aether-workspace`,
//! `aether`) as processes on port 0 and waits for the readiness line each prints
//! (`listening on <addr>` on stdout) — never a sleep.
//!
//! The binaries are those of the same `cargo test`/`cargo nextest` build: integration tests of a
//! workspace build every binary of the workspace first. `AETHER_BIN_DIR` overrides where they are.
//!
//! Every process is killed when its handle drops, so a failing test leaves nothing behind.

pub mod client;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The HS256 secret every test gateway is started with.
pub const TEST_SECRET: &str = "aether-test-secret-0123456789abcdef";

/// Path of one of the workspace's binaries.
pub fn bin_path(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("AETHER_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    // target/<profile>/deps/<test-exe> → target/<profile>/<name>
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}

/// A child process that is killed on drop, with the address it announced.
pub struct Running {
    pub child: Child,
    pub addr: SocketAddr,
    /// Lines of stdout after the readiness line, for tests that read more.
    pub stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Running {
    /// Starts `cmd` and waits for its `listening on <addr>` line.
    pub async fn start(mut cmd: Command) -> Result<Running> {
        cmd.stdout(Stdio::piped()).kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next_line().await? {
                Some(line) => {
                    if let Some(addr) = line.trim().strip_prefix("listening on ") {
                        break addr
                            .parse()
                            .with_context(|| format!("bad address in {line:?}"))?;
                    }
                }
                None => {
                    let status = child.wait().await?;
                    bail!("{cmd:?} exited ({status}) before it was ready");
                }
            }
        };
        Ok(Running {
            child,
            addr,
            stdout: lines,
        })
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit code.
    pub async fn terminate(&mut self) -> Result<Option<i32>> {
        if let Some(pid) = self.child.id() {
            // SAFETY-free: the `kill` command keeps unsafe code out of the harness.
            Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await?;
        }
        Ok(self.child.wait().await?.code())
    }
}

/// A gateway process with the embedded default, in its own data directory.
pub struct Gateway {
    pub proc: Running,
    pub data_dir: tempfile::TempDir,
}

/// Options for [`Gateway::start`].
#[derive(Debug, Clone, Default)]
pub struct GatewayOptions {
    /// Extra flags after `serve`.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl Drop for Gateway {
    /// The gateway process is killed when `proc` drops, but the workspace services it started
    /// outlive it on purpose (a restarted gateway adopts them): end them here, or every test
    /// would leave its shells running.
    fn drop(&mut self) {
        gateway::provider::local::kill_services_in(self.data_dir.path());
    }
}

impl Gateway {
    /// Starts `aether-gateway serve` on `127.0.0.1:0` with [`TEST_SECRET`].
    pub async fn start(opts: GatewayOptions) -> Result<Gateway> {
        let data_dir = tempfile::tempdir()?;
        let proc = Self::start_in(data_dir.path(), &opts).await?;
        Ok(Gateway { proc, data_dir })
    }

    /// Starts a gateway on an existing data directory (to test restarts).
    pub async fn start_in(data_dir: &Path, opts: &GatewayOptions) -> Result<Running> {
        let mut cmd = Command::new(bin_path("aether-gateway"));
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .args(&opts.args)
            .env("AETHER_GATEWAY_JWT_SECRET", TEST_SECRET)
            .env("AETHER_GATEWAY_WORKSPACE_BIN", bin_path("aether-workspace"))
            .env_remove("AETHER_GATEWAY_LISTEN")
            .env_remove("AETHER_GATEWAY_DATA_DIR");
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        Running::start(cmd).await
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.proc.addr)
    }

    pub fn ws_url(&self, workspace: &str) -> String {
        format!("ws://{}/workspaces/{workspace}/ws", self.proc.addr)
    }
}

/// A token for `sub`, signed with [`TEST_SECRET`], valid for an hour.
pub fn token(sub: &str) -> String {
    token_with(sub, 3600, TEST_SECRET)
}

/// A token for `sub` that expires `ttl_secs` from now (negative: already expired).
pub fn token_with(sub: &str, ttl_secs: i64, secret: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = serde_json::json!({
        "sub": sub,
        "aud": "authenticated",
        "role": "authenticated",
        "iat": now,
        "exp": now + ttl_secs,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).expect("HMAC key"),
    )
    .expect("encode token")
}

/// A workspace-service process on `127.0.0.1:0` with a fresh volume.
pub struct WorkspaceService {
    pub proc: Running,
    pub volume: tempfile::TempDir,
}

impl WorkspaceService {
    pub async fn start(args: &[&str]) -> Result<WorkspaceService> {
        let volume = tempfile::tempdir()?;
        let mut cmd = Command::new(bin_path("aether-workspace"));
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--volume")
            .arg(volume.path())
            .args(args);
        let proc = Running::start(cmd).await?;
        Ok(WorkspaceService { proc, volume })
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.proc.addr)
    }
}

impl Gateway {
    /// Starts a gateway on an existing data directory and a given address — the one a stopped
    /// gateway had, so that clients reconnecting to the old URL find the new process.
    ///
    /// The old process's port can take a moment to be free after it exits, so a start that fails
    /// before it is ready is retried with a short backoff for up to 15 s.
    pub async fn start_at(
        data_dir: &Path,
        addr: SocketAddr,
        opts: &GatewayOptions,
    ) -> Result<Running> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
        let mut backoff = std::time::Duration::from_millis(50);
        loop {
            let mut cmd = Command::new(bin_path("aether-gateway"));
            cmd.arg("serve")
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--data-dir")
                .arg(data_dir)
                .args(&opts.args)
                .env("AETHER_GATEWAY_JWT_SECRET", TEST_SECRET)
                .env("AETHER_GATEWAY_WORKSPACE_BIN", bin_path("aether-workspace"))
                .env_remove("AETHER_GATEWAY_LISTEN")
                .env_remove("AETHER_GATEWAY_DATA_DIR");
            for (k, v) in &opts.env {
                cmd.env(k, v);
            }
            match Running::start(cmd).await {
                Ok(running) => return Ok(running),
                Err(e) if tokio::time::Instant::now() < deadline => {
                    eprintln!("gateway restart on {addr} failed, retrying: {e:#}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_millis(500));
                }
                Err(e) => return Err(e.context(format!("restart the gateway on {addr}"))),
            }
        }
    }
}
