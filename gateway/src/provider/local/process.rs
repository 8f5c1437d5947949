//! Supervising `aether-workspace` processes: launching one in its own process group, waiting
//! for its readiness line, signalling the group, and telling whether a pid is still one of ours.
//!
//! Everything here works on pids rather than on a [`tokio::process::Child`] where it can, because
//! a workspace outlives the gateway that started it: after a gateway restart the new gateway knows
//! only the pid and port stored in the registry.

use std::io;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::watch;
use uuid::Uuid;

/// The line every server binary prints on stdout once it is bound and ready.
const READY_PREFIX: &str = "listening on ";

/// A child that prints this many lines without the readiness line is not a workspace service.
const MAX_PRE_READY_LINES: usize = 1000;

/// How much of the end of a workspace's log goes into an error message.
const LOG_TAIL_BYTES: u64 = 600;

/// How often [`wait_exit`] looks at `/proc` while a stop waits for a process to go.
const EXIT_POLL: Duration = Duration::from_millis(50);

/// What to run for one workspace.
#[derive(Debug, Clone)]
pub(super) struct Launch {
    pub(super) bin: PathBuf,
    pub(super) volume: PathBuf,
    pub(super) log: PathBuf,
    pub(super) id: Uuid,
}

/// A launched workspace service whose readiness line has not been read yet.
#[derive(Debug)]
pub(super) struct Launched {
    pub(super) child: Child,
    pub(super) pid: i32,
    pub(super) stdout: Lines<BufReader<ChildStdout>>,
}

/// Why a launched service did not become ready.
#[derive(Debug, thiserror::Error)]
pub(super) enum NotReady {
    #[error("workspace service exited (status {status}) before it was ready{log}")]
    Exited { status: String, log: String },
    #[error("workspace service printed no readiness line: {0}")]
    Garbled(String),
    #[error("reading the workspace service's stdout: {0}")]
    Io(#[from] io::Error),
}

/// Starts `<bin> --listen 127.0.0.1:0 --volume <dir> --workspace-id <id>` in a new process
/// group, so that it outlives this gateway (no kill-on-drop, no shared group to receive the
/// terminal's Ctrl-C) and so that a stop can signal everything it started at once.
///
/// stdout is piped for the readiness line; stderr goes to the workspace's log file in the data
/// directory rather than to a pipe, because a pipe would break (EPIPE) when the gateway restarts
/// while the workspace keeps running.
pub(super) async fn launch(launch: &Launch) -> io::Result<Launched> {
    let mut attempt = 0;
    loop {
        match launch_once(launch) {
            // "Text file busy": the binary was just written (an upgrade, a test script) and a
            // writable descriptor to it is still open somewhere, e.g. inherited by a concurrent
            // fork that has not exec'd yet. It clears within moments.
            Err(e) if e.raw_os_error() == Some(Errno::ETXTBSY as i32) && attempt < 5 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

fn launch_once(launch: &Launch) -> io::Result<Launched> {
    let log = std::fs::File::create(&launch.log)?;
    let mut cmd = Command::new(&launch.bin);
    cmd.arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--volume")
        .arg(&launch.volume)
        .arg("--workspace-id")
        .arg(launch.id.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .process_group(0)
        .kill_on_drop(false);
    let mut child = cmd.spawn()?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| io::Error::other("spawned process has no pid"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("spawned process has no stdout"))?;
    Ok(Launched {
        child,
        pid,
        stdout: BufReader::new(stdout).lines(),
    })
}

/// Reads stdout until the readiness line and returns the announced address. Not bounded in
/// time: the caller wraps it in its readiness timeout.
pub(super) async fn wait_ready(
    launched: &mut Launched,
    log: &Path,
) -> Result<SocketAddr, NotReady> {
    for _ in 0..MAX_PRE_READY_LINES {
        match launched.stdout.next_line().await? {
            Some(line) => {
                if let Some(addr) = line.trim().strip_prefix(READY_PREFIX) {
                    return addr
                        .parse()
                        .map_err(|_| NotReady::Garbled(format!("bad address in {line:?}")));
                }
            }
            None => {
                let status = launched.child.wait().await?;
                return Err(NotReady::Exited {
                    status: exit_status(&status),
                    log: log_tail(log).await,
                });
            }
        }
    }
    Err(NotReady::Garbled(format!(
        "{MAX_PRE_READY_LINES} lines without {READY_PREFIX:?}"
    )))
}

/// `exit code 1`, `signal 9`, in the words an operator reads in `error_message`.
pub(super) fn exit_status(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by {s}"),
            Err(_) => format!("killed by signal {sig}"),
        },
        _ => status.to_string(),
    }
}

/// The last lines of a workspace's log, formatted to follow an error message (`: …`), or
/// nothing if the log is empty or unreadable.
async fn log_tail(log: &Path) -> String {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let Ok(mut file) = tokio::fs::File::open(log).await else {
        return String::new();
    };
    let Ok(len) = file.metadata().await.map(|m| m.len()) else {
        return String::new();
    };
    if file
        .seek(io::SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))
        .await
        .is_err()
    {
        return String::new();
    }
    let mut buf = Vec::new();
    if file.read_to_end(&mut buf).await.is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {}", text.replace('\n', " | "))
    }
}

/// Sends `signal` to the process group led by `pid`. A group that is already gone is fine.
pub(super) fn signal_group(pid: i32, signal: Signal) -> Result<(), Errno> {
    match killpg(Pid::from_raw(pid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether `pid` is a live process. A zombie counts as dead: it has exited and only waits to be
/// reaped (by us, or by init after a gateway restart).
pub(super) fn is_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        // No /proc (or not readable): ask the kernel whether the pid exists.
        Err(_) => !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH)),
    }
}

/// Whether `pid` runs the workspace service of workspace `id` — a pid stored before a restart
/// may since have been reused by an unrelated process, which we must never signal.
pub(super) fn is_workspace_process(pid: i32, id: Uuid) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let id = id.to_string();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.windows(2)
        .any(|w| w[0] == b"--workspace-id" && w[1] == id.as_bytes())
}

/// Waits until `pid` has exited (its monitor says so, or `/proc` does), at most `limit`.
/// Returns whether it exited.
pub(super) async fn wait_exit(
    pid: i32,
    exited: &mut watch::Receiver<bool>,
    limit: Duration,
) -> bool {
    let wait = async {
        loop {
            if *exited.borrow_and_update() || !is_alive(pid) {
                return;
            }
            tokio::select! {
                changed = exited.changed() => {
                    if changed.is_err() {
                        // The monitor is gone (provider shutting down): rely on /proc alone.
                        tokio::time::sleep(EXIT_POLL).await;
                    }
                }
                () = tokio::time::sleep(EXIT_POLL) => {}
            }
        }
    };
    tokio::time::timeout(limit, wait).await.is_ok()
}

/// Ends the process group led by `pid`: SIGTERM, up to `grace` to exit, then SIGKILL and up to
/// `kill_wait` more. Returns an error message if the process is still there after that.
pub(super) async fn terminate(
    pid: i32,
    exited: &mut watch::Receiver<bool>,
    grace: Duration,
    kill_wait: Duration,
) -> Result<(), String> {
    if let Err(e) = signal_group(pid, Signal::SIGTERM) {
        tracing::warn!(pid, error = %e, "SIGTERM to workspace process group failed");
    }
    if wait_exit(pid, exited, grace).await {
        return Ok(());
    }
    tracing::warn!(
        pid,
        ?grace,
        "workspace service ignored SIGTERM; sending SIGKILL"
    );
    if let Err(e) = signal_group(pid, Signal::SIGKILL) {
        return Err(format!("SIGKILL to process group {pid} failed: {e}"));
    }
    if wait_exit(pid, exited, kill_wait).await {
        Ok(())
    } else {
        Err(format!(
            "process {pid} still running {kill_wait:?} after SIGKILL"
        ))
    }
}

/// SIGKILLs the process group of every workspace service whose volume lies under `volumes`,
/// and returns how many it found. For test harnesses: a gateway killed outright leaves its
/// services running on purpose (the next gateway adopts them), which a test must not leak.
pub(super) fn kill_services_under(volumes: &Path) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let ours = args.windows(2).any(|w| {
            w[0] == b"--volume" && Path::new(std::ffi::OsStr::from_bytes(w[1])).starts_with(volumes)
        }) && args.iter().any(|a| *a == b"--workspace-id");
        if ours && is_alive(pid) {
            let _ = signal_group(pid, Signal::SIGKILL);
            killed += 1;
        }
    }
    killed
}

/// Asks a workspace service's `/healthz` which workspace it serves; `None` if it does not answer
/// like a workspace service.
pub(super) async fn healthz_workspace_id(client: &reqwest::Client, port: u16) -> Option<Uuid> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Health {
        status: String,
        workspace_id: Uuid,
    }
    let url = format!("http://127.0.0.1:{port}/healthz");
    let response = client.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let health: Health = response.json().await.ok()?;
    (health.status == "ok").then_some(health.workspace_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_and_ownership_come_from_proc() {
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(is_alive(me));
        assert!(!is_alive(0));
        assert!(!is_alive(i32::MAX));
        // This test binary was not started with `--workspace-id`.
        assert!(!is_workspace_process(me, Uuid::new_v4()));
    }

    #[tokio::test]
    async fn a_workspace_process_is_recognised_by_its_id_argument() {
        let id = Uuid::new_v4();
        let mut child = Command::new("sh")
            .args(["-c", "echo ready; read _", "sh", "--workspace-id"])
            .arg(id.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id().unwrap()).unwrap();
        // Until the child runs, exec may not have set up its command line yet.
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(stdout.next_line().await.unwrap().as_deref(), Some("ready"));
        assert!(is_workspace_process(pid, id));
        assert!(!is_workspace_process(pid, Uuid::new_v4()));
        child.kill().await.unwrap();
        let status = child.wait().await.unwrap();
        assert_eq!(exit_status(&status), "killed by SIGKILL");
        assert!(!is_alive(pid));
    }
}
