//! The `agent` channel: tasks that run the agent command in the volume and stream its output.
//!
//! A `prompt` starts a task: the configured `--agent-command` (run with `sh -c`, the prompt on its
//! stdin and in `AETHER_PROMPT_FILE`), or by default the built-in runner, which runs the prompt as
//! a bash script. The process gets its own process group; its stdout and stderr share one pipe,
//! whose bytes stream to every socket as ordered `text` events. Status events: `running` at start,
//! then `completed` (exit 0), `failed` (other exit, signal, or spawn failure; with `exitCode` and a
//! `message`) or `aborted` (after `abort {taskId}`, which signals the whole process group).
//!
//! Every task keeps a bounded history (its status and the tail of its text) that is replayed to
//! sockets that connect later. The number of active tasks is served by `GET /status`, for the
//! gateway's idle timer.
//!
//! Locking: one `std::sync::Mutex` over the task table and the fan-out list, so that a replay and
//! the live events after it are in order; never held across `.await`.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use protocol::ServerMessage;
use protocol::agent::{AgentClient, AgentServer, TaskStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::outbox::{Fanout, Outbox, SocketId, encode};
use crate::utf8::Utf8Stream;

/// After `abort` (SIGTERM to the group), how long before SIGKILL.
const KILL_AFTER_TERM: Duration = Duration::from_secs(2);
/// After the process exits, how long the pipe may take to drain (grandchildren may hold it).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);
/// Size of one pipe read.
const READ_CHUNK: usize = 16 * 1024;

/// Why an agent request failed; sent back as an error frame.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AgentError {
    #[error("task {0:?} is already running")]
    AlreadyRunning(String),
    #[error("no running task {0:?}")]
    NoTask(String),
    #[error("no pending request {0:?}")]
    NoRequest(String),
    #[error("no pending tool call {0:?}")]
    NoToolCall(String),
    #[error("the service is shutting down")]
    ShuttingDown,
}

/// What the agent runs.
#[derive(Debug, Clone)]
pub(crate) struct AgentConfig {
    pub(crate) volume: PathBuf,
    pub(crate) command: Option<String>,
    pub(crate) history_bytes: usize,
    pub(crate) tasks_kept: usize,
}

struct Task {
    id: String,
    status: TaskStatus,
    exit_code: Option<i32>,
    message: Option<String>,
    /// The tail of the task's text, at most `history_bytes`.
    text: String,
    pid: Option<u32>,
    aborting: bool,
    /// Cancelled when the task ended.
    done: CancellationToken,
}

struct Inner {
    tasks: VecDeque<Task>,
    fanout: Fanout,
    provider: Option<String>,
    model: Option<String>,
    closed: bool,
}

/// The agent: its tasks and the sockets following them.
pub(crate) struct Agent {
    config: AgentConfig,
    inner: Mutex<Inner>,
}

impl Agent {
    pub(crate) fn new(config: AgentConfig) -> Arc<Agent> {
        Arc::new(Agent {
            config,
            inner: Mutex::new(Inner {
                tasks: VecDeque::new(),
                fanout: Fanout::default(),
                provider: None,
                model: None,
                closed: false,
            }),
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("agent state poisoned")
    }

    /// Tasks not yet completed, failed or aborted.
    pub(crate) fn active_tasks(&self) -> usize {
        self.inner()
            .tasks
            .iter()
            .filter(|t| t.status.is_active())
            .count()
    }

    /// Subscribes a socket, replaying every kept task's history first.
    pub(crate) fn subscribe(&self, outbox: &Outbox) {
        let mut inner = self.inner();
        for task in &inner.tasks {
            outbox.reply_msg(&status_msg(&task.id, TaskStatus::Running, None, None));
            if !task.text.is_empty() {
                outbox.reply_msg(&text_msg(&task.id, task.text.clone()));
            }
            if task.status != TaskStatus::Running {
                outbox.reply_msg(&status_msg(
                    &task.id,
                    task.status,
                    task.exit_code,
                    task.message.clone(),
                ));
            }
        }
        inner.fanout.insert(outbox.clone());
    }

    pub(crate) fn unsubscribe(&self, socket: SocketId) {
        self.inner().fanout.remove(socket);
    }

    /// Handles one client message.
    pub(crate) fn handle(
        self: &Arc<Self>,
        msg: AgentClient,
        outbox: &Outbox,
    ) -> Result<(), AgentError> {
        match msg {
            AgentClient::Prompt { prompt, task_id } => {
                self.start(prompt, task_id)?;
                Ok(())
            }
            AgentClient::Abort { task_id } => self.abort(&task_id),
            AgentClient::Settings { provider, model } => {
                let mut inner = self.inner();
                if provider.is_some() {
                    inner.provider = provider;
                }
                if model.is_some() {
                    inner.model = model;
                }
                let reply = ServerMessage::Agent(AgentServer::Settings {
                    provider: inner.provider.clone(),
                    model: inner.model.clone(),
                });
                drop(inner);
                outbox.reply_msg(&reply);
                Ok(())
            }
            // The built-in runner and a plain CLI agent never ask for tools or permissions.
            AgentClient::ToolResponse { tool_call_id, .. } => {
                Err(AgentError::NoToolCall(tool_call_id))
            }
            AgentClient::Approve { request_id } | AgentClient::Reject { request_id } => {
                Err(AgentError::NoRequest(request_id))
            }
        }
    }

    /// Starts a task; returns its id.
    pub(crate) fn start(
        self: &Arc<Self>,
        prompt: String,
        task_id: Option<String>,
    ) -> Result<String, AgentError> {
        let id = task_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let done = CancellationToken::new();
        let (provider, model) = {
            let mut inner = self.inner();
            if inner.closed {
                return Err(AgentError::ShuttingDown);
            }
            if let Some(pos) = inner.tasks.iter().position(|t| t.id == id) {
                if inner.tasks[pos].status.is_active() {
                    return Err(AgentError::AlreadyRunning(id));
                }
                inner.tasks.remove(pos);
            }
            // Keep at most `tasks_kept`, dropping the oldest finished ones.
            while inner.tasks.len() >= self.config.tasks_kept {
                match inner.tasks.iter().position(|t| !t.status.is_active()) {
                    Some(pos) => {
                        inner.tasks.remove(pos);
                    }
                    None => break,
                }
            }
            inner.tasks.push_back(Task {
                id: id.clone(),
                status: TaskStatus::Running,
                exit_code: None,
                message: None,
                text: String::new(),
                pid: None,
                aborting: false,
                done: done.clone(),
            });
            inner
                .fanout
                .send(&encode(&status_msg(&id, TaskStatus::Running, None, None)));
            (inner.provider.clone(), inner.model.clone())
        };
        let agent = self.clone();
        let task_id = id.clone();
        tokio::spawn(async move {
            let outcome = agent.run(&task_id, prompt, provider, model).await;
            agent.finish(&task_id, outcome);
            done.cancel();
        });
        Ok(id)
    }

    fn abort(&self, task_id: &str) -> Result<(), AgentError> {
        let mut inner = self.inner();
        let task = inner
            .tasks
            .iter_mut()
            .find(|t| t.id == task_id && t.status.is_active())
            .ok_or_else(|| AgentError::NoTask(task_id.to_owned()))?;
        task.aborting = true;
        let pid = task.pid;
        let done = task.done.clone();
        drop(inner);
        if let Some(pid) = pid {
            signal_group(pid, Signal::SIGTERM);
            tokio::spawn(async move {
                if tokio::time::timeout(KILL_AFTER_TERM, done.cancelled())
                    .await
                    .is_err()
                {
                    signal_group(pid, Signal::SIGKILL);
                }
            });
        }
        Ok(())
    }

    /// Runs the task's process to its end; returns how it ended.
    async fn run(
        self: &Arc<Self>,
        task_id: &str,
        prompt: String,
        provider: Option<String>,
        model: Option<String>,
    ) -> Outcome {
        let script = match write_prompt_file(task_id, &prompt).await {
            Ok(path) => path,
            Err(e) => return Outcome::SpawnFailed(format!("could not store the prompt: {e}")),
        };
        let outcome = self
            .run_with(task_id, &script, prompt, provider, model)
            .await;
        let _ = tokio::fs::remove_file(&script).await;
        outcome
    }

    async fn run_with(
        self: &Arc<Self>,
        task_id: &str,
        script: &std::path::Path,
        prompt: String,
        provider: Option<String>,
        model: Option<String>,
    ) -> Outcome {
        let (reader, writer) = match std::io::pipe() {
            Ok(p) => p,
            Err(e) => return Outcome::SpawnFailed(format!("pipe: {e}")),
        };
        let mut cmd = match &self.config.command {
            Some(command) => {
                let mut cmd = tokio::process::Command::new("sh");
                cmd.arg("-c").arg(command).stdin(Stdio::piped());
                cmd
            }
            None => {
                let mut cmd = tokio::process::Command::new("bash");
                cmd.arg(script).stdin(Stdio::null());
                cmd
            }
        };
        let writer2 = match writer.try_clone() {
            Ok(w) => w,
            Err(e) => return Outcome::SpawnFailed(format!("pipe: {e}")),
        };
        cmd.current_dir(&self.config.volume)
            .stdout(writer)
            .stderr(writer2)
            .env("AETHER_TASK_ID", task_id)
            .env("AETHER_PROMPT_FILE", script)
            .process_group(0)
            .kill_on_drop(true);
        if let Some(p) = provider {
            cmd.env("AETHER_AGENT_PROVIDER", p);
        }
        if let Some(m) = model {
            cmd.env("AETHER_AGENT_MODEL", m);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Outcome::SpawnFailed(format!("could not start the agent: {e}")),
        };
        // Our copies of the pipe's write end must go, or the reader never sees end of file.
        drop(cmd);
        let pid = child.id();
        {
            let mut inner = self.inner();
            if let Some(task) = inner.tasks.iter_mut().find(|t| t.id == task_id) {
                task.pid = pid;
                if task.aborting {
                    // Aborted before the process existed.
                    if let Some(pid) = pid {
                        signal_group(pid, Signal::SIGKILL);
                    }
                }
            }
        }
        if let Some(mut stdin) = child.stdin.take() {
            tokio::spawn(async move {
                // An agent that never reads its stdin is fine: ignore EPIPE.
                let _ = stdin.write_all(prompt.as_bytes()).await;
            });
        }
        let mut reading =
            match tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader)) {
                Ok(pipe) => tokio::spawn(stream_text(pipe, self.clone(), task_id.to_owned())),
                Err(e) => {
                    signal_group_of(&child, Signal::SIGKILL);
                    let _ = child.wait().await;
                    return Outcome::SpawnFailed(format!("pipe: {e}"));
                }
            };
        let status = child.wait().await;
        if tokio::time::timeout(DRAIN_AFTER_EXIT, &mut reading)
            .await
            .is_err()
        {
            reading.abort();
        }
        match status {
            Ok(status) => match status.code() {
                Some(code) => Outcome::Exited(code),
                None => Outcome::Signalled(
                    std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0),
                ),
            },
            Err(e) => Outcome::SpawnFailed(format!("wait: {e}")),
        }
    }

    fn text(&self, task_id: &str, content: String) {
        if content.is_empty() {
            return;
        }
        let mut inner = self.inner();
        let limit = self.config.history_bytes;
        if let Some(task) = inner.tasks.iter_mut().find(|t| t.id == task_id) {
            task.text.push_str(&content);
            if task.text.len() > limit {
                let cut = task.text.len() - limit;
                let cut = (cut..=task.text.len())
                    .find(|&i| task.text.is_char_boundary(i))
                    .unwrap_or(task.text.len());
                task.text.drain(..cut);
            }
        }
        inner.fanout.send(&encode(&text_msg(task_id, content)));
    }

    fn finish(&self, task_id: &str, outcome: Outcome) {
        let mut inner = self.inner();
        let Some(task) = inner.tasks.iter_mut().find(|t| t.id == task_id) else {
            return;
        };
        let (status, exit_code, message) = if task.aborting {
            let code = match outcome {
                Outcome::Exited(c) => Some(c),
                _ => None,
            };
            (TaskStatus::Aborted, code, Some("aborted".to_owned()))
        } else {
            match outcome {
                Outcome::Exited(0) => (TaskStatus::Completed, Some(0), None),
                Outcome::Exited(c) => (
                    TaskStatus::Failed,
                    Some(c),
                    Some(format!("exited with status {c}")),
                ),
                Outcome::Signalled(sig) => (
                    TaskStatus::Failed,
                    None,
                    Some(format!("killed by signal {sig:?}")),
                ),
                Outcome::SpawnFailed(msg) => (TaskStatus::Failed, None, Some(msg)),
            }
        };
        task.status = status;
        task.exit_code = exit_code;
        task.message = message.clone();
        task.pid = None;
        tracing::info!(task = %task_id, ?status, ?exit_code, "agent task ended");
        inner
            .fanout
            .send(&encode(&status_msg(task_id, status, exit_code, message)));
    }

    /// Shutdown: refuse new tasks, end the running ones (SIGTERM, then SIGKILL), wait at most
    /// `grace`.
    pub(crate) async fn shutdown(&self, grace: Duration) {
        let running: Vec<(Option<u32>, CancellationToken)> = {
            let mut inner = self.inner();
            inner.closed = true;
            inner
                .tasks
                .iter_mut()
                .filter(|t| t.status.is_active())
                .map(|t| {
                    t.aborting = true;
                    (t.pid, t.done.clone())
                })
                .collect()
        };
        for (pid, _) in &running {
            if let Some(pid) = pid {
                signal_group(*pid, Signal::SIGTERM);
            }
        }
        let all_done = async {
            for (_, done) in &running {
                done.cancelled().await;
            }
        };
        if tokio::time::timeout(grace, all_done).await.is_err() {
            for (pid, _) in &running {
                if let Some(pid) = pid {
                    signal_group(*pid, Signal::SIGKILL);
                }
            }
        }
    }
}

enum Outcome {
    Exited(i32),
    Signalled(i32),
    SpawnFailed(String),
}

fn signal_group(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid)
        && let Err(e) = killpg(Pid::from_raw(pid), signal)
    {
        tracing::debug!(%e, ?signal, "killpg failed");
    }
}

fn status_msg(
    task_id: &str,
    status: TaskStatus,
    exit_code: Option<i32>,
    message: Option<String>,
) -> ServerMessage {
    ServerMessage::Agent(AgentServer::Status {
        task_id: task_id.to_owned(),
        status,
        exit_code,
        message,
    })
}

fn text_msg(task_id: &str, content: String) -> ServerMessage {
    ServerMessage::Agent(AgentServer::Text {
        task_id: task_id.to_owned(),
        content,
    })
}

/// The prompt, stored outside the volume for the process to read.
async fn write_prompt_file(task_id: &str, prompt: &str) -> std::io::Result<PathBuf> {
    let safe: String = task_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let path = std::env::temp_dir().join(format!(
        "aether-agent-{}-{}-{}.sh",
        std::process::id(),
        safe,
        uuid::Uuid::new_v4().simple()
    ));
    tokio::fs::write(&path, prompt).await?;
    Ok(path)
}

/// Pipe → `text` events, split only at character boundaries.
async fn stream_text(
    mut pipe: tokio::net::unix::pipe::Receiver,
    agent: Arc<Agent>,
    task_id: String,
) {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut decoder = Utf8Stream::default();
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => agent.text(&task_id, decoder.decode(&buf[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    agent.text(&task_id, decoder.finish());
}

fn signal_group_of(child: &tokio::process::Child, signal: Signal) {
    if let Some(pid) = child.id() {
        signal_group(pid, signal);
    }
}
