//! The service's configuration: a plain struct with documented defaults, filled by the binary
//! from flags and `AETHER_WORKSPACE_*` variables, and by tests directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default listen address: loopback, port 3001 (the port the ports channel never reports).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3001";
/// Default size of each terminal session's output ring buffer (256 KiB).
pub const DEFAULT_RING_BYTES: usize = 256 * 1024;
/// Default bound of each socket's outgoing queue, in bytes of queued frames (1 MiB).
pub const DEFAULT_SOCKET_QUEUE_BYTES: usize = 1024 * 1024;
/// Default bound of each agent task's kept text history (256 KiB).
pub const DEFAULT_AGENT_HISTORY_BYTES: usize = 256 * 1024;
/// Default number of agent tasks whose history is kept.
pub const DEFAULT_AGENT_TASKS_KEPT: usize = 64;
/// Default interval between two scans of `/proc/net/tcp{,6}`.
pub const DEFAULT_PORTS_INTERVAL: Duration = Duration::from_secs(1);
/// Default bound on the whole shutdown, from SIGTERM to exit.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything [`crate::Server`] needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (`--listen`).
    pub listen: SocketAddr,
    /// The workspace's persistent directory; created if missing (`--volume`).
    pub volume: PathBuf,
    /// Echoed by `/healthz` (`--workspace-id`).
    pub workspace_id: Option<String>,
    /// Size of each terminal session's output ring (`--ring-bytes`).
    pub ring_bytes: usize,
    /// Shell for terminal sessions (`--shell`, default `bash`).
    pub shell: String,
    /// The agent command, run with `sh -c` (`--agent-command`); `None` runs the built-in runner,
    /// which executes the prompt as a bash script.
    pub agent_command: Option<String>,
    /// Bytes of agent text kept per task for replay (`--agent-history-bytes`).
    pub agent_history_bytes: usize,
    /// How many tasks' histories are kept (`--agent-tasks-kept`).
    pub agent_tasks_kept: usize,
    /// Per-socket outgoing queue bound, in bytes (`--socket-queue-bytes`). A socket whose queue
    /// would exceed it is dropped from fan-out and closed with 4008.
    pub socket_queue_bytes: usize,
    /// Interval of the listening-port scan (`--ports-interval`).
    pub ports_interval: Duration,
    /// Bound on shutdown (`--shutdown-grace`).
    pub shutdown_grace: Duration,
}

impl Config {
    /// The defaults, with `volume` as given.
    pub fn new(volume: impl Into<PathBuf>) -> Config {
        Config {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            volume: volume.into(),
            workspace_id: None,
            ring_bytes: DEFAULT_RING_BYTES,
            shell: "bash".to_owned(),
            agent_command: None,
            agent_history_bytes: DEFAULT_AGENT_HISTORY_BYTES,
            agent_tasks_kept: DEFAULT_AGENT_TASKS_KEPT,
            socket_queue_bytes: DEFAULT_SOCKET_QUEUE_BYTES,
            ports_interval: DEFAULT_PORTS_INTERVAL,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }

    /// Checks the values; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.ring_bytes < 1024 {
            return Err(format!(
                "ring-bytes must be at least 1024, got {}",
                self.ring_bytes
            ));
        }
        if self.socket_queue_bytes < 1024 {
            return Err(format!(
                "socket-queue-bytes must be at least 1024, got {}",
                self.socket_queue_bytes
            ));
        }
        if self.agent_history_bytes < 1024 {
            return Err(format!(
                "agent-history-bytes must be at least 1024, got {}",
                self.agent_history_bytes
            ));
        }
        if self.agent_tasks_kept == 0 {
            return Err("agent-tasks-kept must be at least 1".to_owned());
        }
        if self.ports_interval < Duration::from_millis(50) {
            return Err("ports-interval must be at least 50ms".to_owned());
        }
        if self.shell.trim().is_empty() {
            return Err("shell must not be empty".to_owned());
        }
        Ok(())
    }
}
