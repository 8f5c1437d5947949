//! Start, stop and recovery of local workspaces, and the monitors that notice a service that
//! died by itself.
//!
//! A start runs as a task the provider owns (a *boot*), and `start` only waits for its result:
//! the gateway bounds a wake with its boot budget and may drop the `start` future, which must not
//! orphan a half-started process. A later `start` joins the boot in flight; `stop` cancels it,
//! and the boot kills what it launched before it reports back.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use nix::sys::signal::Signal;
use protocol::WorkspaceStatus;
use tokio::io::{BufReader, Lines};
use tokio::process::{Child, ChildStdout};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::process::{self, Launch};
use super::store::Runtime;
use super::{Endpoint, ProviderError, Shared, endpoint, ensure_dirs, unwatched};

/// How long a `/healthz` probe at recovery may take.
pub(super) const HEALTHZ_TIMEOUT: Duration = Duration::from_secs(3);

/// How often an adopted service (one a previous gateway started) is checked for liveness: we
/// are not its parent, so no `wait` tells us when it exits.
const ADOPTED_POLL: Duration = Duration::from_secs(1);

/// How long to wait for a process to go after SIGKILL before calling the stop failed.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How long a stop waits for a cancelled boot to clean up (it only has to SIGKILL and reap).
const BOOT_CANCEL_WAIT: Duration = Duration::from_secs(15);

/// What a boot reports: `None` while it runs.
type BootResult = Option<Result<Endpoint, ProviderError>>;

/// An in-flight start.
#[derive(Debug)]
pub(super) struct Boot {
    generation: u64,
    cancel: CancellationToken,
    result: watch::Receiver<BootResult>,
}

/// A running service: its pid (which leads its process group) and a flag its monitor raises
/// when it exits.
#[derive(Debug)]
pub(super) struct Proc {
    pid: i32,
    exited: watch::Receiver<bool>,
}

/// Why a boot ended early, before the state says so.
enum BootEnd {
    /// Stop cancelled it, or the state moved on: whoever did that owns the state now.
    Abandoned,
    /// It failed: the workspace goes to `error` with this message.
    Failed(String),
}

impl Shared {
    pub(super) async fn start(self: &Arc<Self>, id: Uuid) -> Result<Endpoint, ProviderError> {
        let mut result = self.with_entry(id, |entry, events| {
            if let Some(boot) = &entry.boot {
                // A start is already in flight (its caller may have given up): join it.
                return Ok(boot.result.clone());
            }
            let status = entry.status();
            if !status.is_startable() {
                return Err(ProviderError::InvalidState(status));
            }
            entry.transition(WorkspaceStatus::Starting, None, events);
            let generation = self.next_boot.fetch_add(1, Ordering::Relaxed);
            let cancel = CancellationToken::new();
            let (result_tx, result_rx) = watch::channel(None);
            entry.boot = Some(Boot {
                generation,
                cancel: cancel.clone(),
                result: result_rx.clone(),
            });
            tokio::spawn(Arc::clone(self).boot(id, generation, cancel, result_tx));
            Ok(result_rx)
        })?;
        wait_boot(&mut result).await
    }

    /// The boot task: runs [`Shared::boot_steps`], then reports. The `Arc` is dropped *before*
    /// the result is sent, so a caller that drops the provider right after `start` returned
    /// really closes its database.
    async fn boot(
        self: Arc<Self>,
        id: Uuid,
        generation: u64,
        cancel: CancellationToken,
        result_tx: watch::Sender<BootResult>,
    ) {
        let result = match self.boot_steps(id, generation, &cancel).await {
            Ok(endpoint) => Ok(endpoint),
            Err(BootEnd::Abandoned) => Err(ProviderError::StartFailed("start cancelled".into())),
            Err(BootEnd::Failed(message)) => {
                let failed = self.with_entry(id, |entry, events| {
                    if !is_current(entry, generation) {
                        return Ok(false);
                    }
                    entry.boot = None;
                    entry.stored.runtime = None;
                    entry.transition(WorkspaceStatus::Error, Some(message.clone()), events);
                    Ok(true)
                });
                if failed == Ok(true) {
                    tracing::warn!(workspace_id = %id, %message, "workspace start failed");
                    self.persist_or_log(id).await;
                }
                Err(ProviderError::StartFailed(message))
            }
        };
        drop(self);
        let _ = result_tx.send(Some(result));
    }

    async fn boot_steps(
        self: &Arc<Self>,
        id: Uuid,
        generation: u64,
        cancel: &CancellationToken,
    ) -> Result<Endpoint, BootEnd> {
        self.persist_or_log(id).await;
        tokio::select! {
            () = tokio::time::sleep(self.config.boot_delay) => {}
            () = cancel.cancelled() => return Err(BootEnd::Abandoned),
        }

        let launch = Launch {
            bin: self.config.workspace_bin.clone(),
            volume: self.config.volume_dir(id),
            log: self.config.log_path(id),
            id,
        };
        let dirs = {
            let (volume, log) = (launch.volume.clone(), launch.log.clone());
            tokio::task::spawn_blocking(move || ensure_dirs(&volume, &log)).await
        };
        match dirs {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(BootEnd::Failed(format!("cannot create volume: {e}"))),
            Err(e) => return Err(BootEnd::Failed(format!("volume task: {e}"))),
        }
        let mut launched = process::launch(&launch).await.map_err(|e| {
            BootEnd::Failed(format!(
                "cannot launch {}: {e}",
                self.config.workspace_bin.display()
            ))
        })?;
        let pid = launched.pid;
        tracing::info!(workspace_id = %id, pid, "workspace service launched");

        // Record the pid before waiting for readiness, so that whatever happens to this gateway
        // from here on, the next one can find the process and clean it up.
        let recorded = self.with_entry(id, |entry, _| {
            if !is_current(entry, generation) {
                return Ok(false);
            }
            entry.stored.runtime = Some(Runtime { pid, port: None });
            Ok(true)
        });
        if recorded != Ok(true) {
            kill_launched(launched).await;
            return Err(BootEnd::Abandoned);
        }
        self.persist_or_log(id).await;

        let ready = tokio::select! {
            ready = tokio::time::timeout(
                self.config.ready_timeout,
                process::wait_ready(&mut launched, &launch.log),
            ) => ready,
            () = cancel.cancelled() => {
                kill_launched(launched).await;
                self.forget_runtime(id, pid);
                return Err(BootEnd::Abandoned);
            }
        };
        let addr = match ready {
            Ok(Ok(addr)) => addr,
            Ok(Err(not_ready)) => {
                kill_launched(launched).await;
                return Err(BootEnd::Failed(not_ready.to_string()));
            }
            Err(_elapsed) => {
                kill_launched(launched).await;
                return Err(BootEnd::Failed(format!(
                    "workspace service not ready within {}",
                    humantime::format_duration(self.config.ready_timeout)
                )));
            }
        };

        let (exited_tx, exited_rx) = watch::channel(false);
        let running = self.with_entry(id, |entry, events| {
            if !is_current(entry, generation) {
                return Ok(false);
            }
            entry.boot = None;
            entry.stored.runtime = Some(Runtime {
                pid,
                port: Some(addr.port()),
            });
            // A start straight from `creating` provisioned it too.
            let workspace = &mut entry.stored.workspace;
            workspace
                .machine_id
                .get_or_insert_with(|| format!("local-{id}"));
            workspace
                .private_ip
                .get_or_insert_with(|| "127.0.0.1".to_owned());
            entry.proc = Some(Proc {
                pid,
                exited: exited_rx,
            });
            entry.transition(WorkspaceStatus::Running, None, events);
            Ok(true)
        });
        if running != Ok(true) {
            kill_launched(launched).await;
            self.forget_runtime(id, pid);
            return Err(BootEnd::Abandoned);
        }
        tracing::info!(workspace_id = %id, pid, %addr, "workspace running");
        tokio::spawn(monitor_child(
            Arc::downgrade(self),
            id,
            pid,
            launched.child,
            launched.stdout,
            exited_tx,
            self.shutdown.clone(),
        ));
        self.persist_or_log(id).await;
        Ok(endpoint(addr.port()))
    }

    /// Clears the runtime facts of `id` if they still name `pid` (a cancelled boot cleaned up).
    fn forget_runtime(&self, id: Uuid, pid: i32) {
        let _ = self.with_entry(id, |entry, _| {
            if entry.stored.runtime.is_some_and(|rt| rt.pid == pid) {
                entry.stored.runtime = None;
            }
            Ok(())
        });
    }

    pub(super) async fn stop(self: &Arc<Self>, id: Uuid) -> Result<(), ProviderError> {
        let (boot, proc) = self.with_entry(id, |entry, events| {
            let status = entry.status();
            if !status.is_stoppable() {
                return Err(ProviderError::InvalidState(status));
            }
            entry.transition(WorkspaceStatus::Stopping, None, events);
            Ok((entry.boot.take(), entry.proc.take()))
        })?;
        self.persist_or_log(id).await;

        if let Some(mut boot) = boot {
            boot.cancel.cancel();
            if tokio::time::timeout(BOOT_CANCEL_WAIT, wait_boot(&mut boot.result))
                .await
                .is_err()
            {
                tracing::warn!(workspace_id = %id, "cancelled start did not report back");
            }
        }

        // The process to end: the monitored one, else whatever pid is still recorded (a boot
        // that could not reap its child, a `stop_failed` left by an earlier stop).
        let proc = proc.or_else(|| {
            let pid = self
                .lock()
                .get(&id)
                .and_then(|e| e.stored.runtime)
                .map(|rt| rt.pid)?;
            Some(Proc {
                pid,
                exited: unwatched(),
            })
        });
        let ended = match proc {
            Some(mut proc) if process::is_alive(proc.pid) => {
                match process::terminate(
                    proc.pid,
                    &mut proc.exited,
                    self.config.stop_grace,
                    KILL_WAIT,
                )
                .await
                {
                    Ok(()) => Ok(()),
                    Err(message) => Err((message, proc)),
                }
            }
            _ => Ok(()),
        };

        let result = self.with_entry(id, |entry, events| match ended {
            Ok(()) => {
                entry.stored.runtime = None;
                entry.transition(WorkspaceStatus::Stopped, None, events);
                Ok(())
            }
            Err((message, proc)) => {
                // Keep watching it: a later stop tries again.
                entry.proc = Some(proc);
                entry.transition(WorkspaceStatus::StopFailed, Some(message.clone()), events);
                Err(ProviderError::StopFailed(message))
            }
        });
        self.persist_or_log(id).await;
        match &result {
            Ok(()) => tracing::info!(workspace_id = %id, "workspace stopped"),
            Err(e) => tracing::error!(workspace_id = %id, error = %e, "workspace stop failed"),
        }
        result
    }

    /// A service exited by itself: a running workspace goes to `error`, so sessions learn of
    /// it. During a stop the stop owns the state, so nothing happens here.
    async fn on_exit(self: Arc<Self>, id: Uuid, pid: i32, message: String) {
        let changed = self.with_entry(id, |entry, events| {
            let ours = entry.stored.runtime.is_some_and(|rt| rt.pid == pid);
            if !ours || entry.status() != WorkspaceStatus::Running {
                return Ok(false);
            }
            entry.stored.runtime = None;
            entry.proc = None;
            entry.transition(WorkspaceStatus::Error, Some(message.clone()), events);
            Ok(true)
        });
        if changed == Ok(true) {
            tracing::warn!(workspace_id = %id, pid, %message, "workspace service died");
            self.persist_or_log(id).await;
        }
    }

    /// Reconciles the registry with what really runs; see [`super::Provider::recover`].
    pub(super) async fn recover(self: &Arc<Self>) -> Result<(), ProviderError> {
        let work: Vec<(Uuid, WorkspaceStatus, Option<Runtime>)> = self
            .lock()
            .values()
            .map(|e| (e.stored.workspace.id, e.status(), e.stored.runtime))
            .collect();
        let tasks = work
            .into_iter()
            .map(|(id, status, runtime)| Arc::clone(self).recover_one(id, status, runtime));
        futures_util::future::join_all(tasks).await;
        Ok(())
    }

    async fn recover_one(
        self: Arc<Self>,
        id: Uuid,
        status: WorkspaceStatus,
        runtime: Option<Runtime>,
    ) {
        match status {
            WorkspaceStatus::Creating => return self.provision(id).await,
            WorkspaceStatus::Stopped | WorkspaceStatus::Error if runtime.is_none() => return,
            _ => {}
        }
        // Only a `running` or `starting` workspace is adopted: a `stopping` or `stop_failed` one
        // was meant to stop, so that stop is finished instead.
        let wanted_running = matches!(status, WorkspaceStatus::Running | WorkspaceStatus::Starting);
        let ours = runtime
            .filter(|rt| process::is_alive(rt.pid) && process::is_workspace_process(rt.pid, id));
        if let Some(Runtime {
            pid,
            port: Some(port),
        }) = ours
            && wanted_running
            && self.answers_healthz(port, id).await
        {
            return self.adopt(id, pid, port).await;
        }

        let ended = match ours {
            Some(rt) => {
                tracing::info!(workspace_id = %id, pid = rt.pid, "ending a leftover workspace service");
                process::terminate(rt.pid, &mut unwatched(), self.config.stop_grace, KILL_WAIT)
                    .await
                    .map_err(|message| (message, rt.pid))
            }
            None => Ok(()),
        };
        let _ = self.with_entry(id, |entry, events| {
            match &ended {
                Ok(()) => {
                    entry.stored.runtime = None;
                    entry.transition(WorkspaceStatus::Stopped, None, events);
                }
                Err((message, pid)) => {
                    entry.proc = Some(Proc {
                        pid: *pid,
                        exited: unwatched(),
                    });
                    entry.transition(WorkspaceStatus::StopFailed, Some(message.clone()), events);
                }
            }
            Ok(())
        });
        self.persist_or_log(id).await;
    }

    /// Whether the service on `port` says it serves workspace `id` (twice, for a loaded machine).
    async fn answers_healthz(&self, port: u16, id: Uuid) -> bool {
        for _ in 0..2 {
            if process::healthz_workspace_id(&self.http, port).await == Some(id) {
                return true;
            }
        }
        false
    }

    /// Takes over a service a previous gateway started.
    async fn adopt(self: Arc<Self>, id: Uuid, pid: i32, port: u16) {
        let (exited_tx, exited_rx) = watch::channel(false);
        let adopted = self.with_entry(id, |entry, events| {
            entry.stored.runtime = Some(Runtime {
                pid,
                port: Some(port),
            });
            entry.proc = Some(Proc {
                pid,
                exited: exited_rx,
            });
            if entry.status() == WorkspaceStatus::Running {
                entry.stored.workspace.error_message = None;
            } else {
                entry.transition(WorkspaceStatus::Running, None, events);
            }
            Ok(())
        });
        if adopted.is_ok() {
            tracing::info!(workspace_id = %id, pid, port, "adopted a running workspace service");
            tokio::spawn(monitor_adopted(
                Arc::downgrade(&self),
                id,
                pid,
                exited_tx,
                self.shutdown.clone(),
            ));
            self.persist_or_log(id).await;
        }
    }
}

/// Whether `entry` is still in the boot `generation` started (not stopped, deleted, or restarted
/// meanwhile).
fn is_current(entry: &super::Entry, generation: u64) -> bool {
    entry.status() == WorkspaceStatus::Starting
        && entry
            .boot
            .as_ref()
            .is_some_and(|b| b.generation == generation)
}

/// Waits for a boot's result. The boot always reports, even when cancelled; "abandoned" covers
/// a boot task that panicked.
async fn wait_boot(result: &mut watch::Receiver<BootResult>) -> Result<Endpoint, ProviderError> {
    let abandoned = || Err(ProviderError::StartFailed("start abandoned".into()));
    match result.wait_for(Option::is_some).await {
        Ok(r) => r.clone().unwrap_or_else(abandoned),
        Err(_) => abandoned(),
    }
}

/// Ends a process that never became a running workspace: SIGKILL to its group (it has nothing
/// worth a graceful stop yet), then reap it.
async fn kill_launched(mut launched: process::Launched) {
    if let Err(e) = process::signal_group(launched.pid, Signal::SIGKILL) {
        tracing::warn!(pid = launched.pid, error = %e, "SIGKILL to a failed start's group failed");
    }
    // Bounded: a process stuck in the kernel must not hold the boot forever; tokio reaps an
    // unwaited child later.
    let _ = tokio::time::timeout(KILL_WAIT, launched.child.wait()).await;
}

/// Watches a service this gateway launched until it exits, draining its stdout meanwhile (a
/// full pipe would block it).
async fn monitor_child(
    shared: Weak<Shared>,
    id: Uuid,
    pid: i32,
    mut child: Child,
    mut stdout: Lines<BufReader<ChildStdout>>,
    exited_tx: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let mut stdout_open = true;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            line = stdout.next_line(), if stdout_open => match line {
                Ok(Some(line)) => tracing::debug!(workspace_id = %id, %line, "workspace stdout"),
                _ => stdout_open = false,
            },
            // The provider is gone: let go of the child, which keeps running.
            () = shutdown.cancelled() => return,
        }
    };
    let _ = exited_tx.send(true);
    let status = match status {
        Ok(status) => process::exit_status(&status),
        Err(e) => format!("unknown: {e}"),
    };
    if let Some(shared) = shared.upgrade() {
        shared
            .on_exit(id, pid, format!("workspace service exited ({status})"))
            .await;
    }
}

/// Watches a service a previous gateway launched. We are not its parent, so liveness is polled.
async fn monitor_adopted(
    shared: Weak<Shared>,
    id: Uuid,
    pid: i32,
    exited_tx: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(ADOPTED_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if !process::is_alive(pid) {
                    break;
                }
            }
            () = shutdown.cancelled() => return,
        }
    }
    let _ = exited_tx.send(true);
    if let Some(shared) = shared.upgrade() {
        shared
            .on_exit(
                id,
                pid,
                "workspace service exited (status unknown: started by a previous gateway)".into(),
            )
            .await;
    }
}
