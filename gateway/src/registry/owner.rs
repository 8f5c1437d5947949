//! The owner task of one workspace: the only place its start, stop and idle timer happen.
//!
//! It reacts to four inputs, one at a time: commands (wake, start, stop, settings), the provider's
//! state changes, the workspace's connection count (a `watch` the leases update), and its own
//! timers (the in-flight transition, the idle deadline, the task poll). Because nothing else
//! starts or stops the workspace, "exactly one start however many clients connect" and "stop
//! once, never while connected" are properties of this loop.
//!
//! # Idle stop
//!
//! The idle timer runs while the workspace is `running`, no transition is in flight, it has no
//! counted connection, its service reports no active agent task, and it is not `keep_active`.
//! Any change that breaks one of those cancels the timer; when it fires, the conditions are
//! checked again before the stop.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use protocol::WorkspaceStatus;
use protocol::control::ErrorCode;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::{Command, Connections, Handle, Settings, Snapshot, StopReason, TaskProbe};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::provider::{Endpoint, Provider, ProviderError, StateChange};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How an in-flight transition ended.
enum Outcome {
    Started(Result<Endpoint, ProviderError>, Duration),
    StartTimedOut,
    Stopped(Result<(), ProviderError>),
}

/// What the in-flight transition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Start,
    Stop,
}

pub(super) struct Owner {
    pub(super) handle: Arc<Handle>,
    pub(super) provider: Arc<dyn Provider>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) probe: Arc<dyn TaskProbe>,
    pub(super) settings: Settings,
    pub(super) status_tx: watch::Sender<Snapshot>,
    pub(super) commands: mpsc::UnboundedReceiver<Command>,
    pub(super) connections: watch::Receiver<Connections>,
    pub(super) keep_active: bool,
    /// The workspace's own idle timeout, if it overrides the gateway's.
    pub(super) idle_timeout: Option<Duration>,
    pub(super) shutdown: CancellationToken,
}

/// The owner's mutable state beyond its inputs.
struct State {
    transition: Option<(Kind, BoxFuture<Outcome>)>,
    /// A client asked to wake the workspace while it was stopping: start once it has stopped.
    wake_after_stop: bool,
    /// A stop was asked for while a start was in flight: stop once it has started.
    stop_after_start: Option<StopReason>,
    idle_deadline: Option<Instant>,
    /// Since when nothing has kept the workspace busy: the last connection closed, the last
    /// agent task ended, or a start began. The idle timeout counts from here — not from when
    /// the timer could first be armed, which may be later (a client that disconnects while its
    /// workspace still boots must not add the boot time to the idle timeout).
    idle_since: Instant,
    probe: Option<BoxFuture<Result<u32, String>>>,
    next_poll: Instant,
}

impl Owner {
    pub(super) async fn run(mut self) {
        let mut state = State {
            transition: None,
            wake_after_stop: false,
            stop_after_start: None,
            idle_deadline: None,
            idle_since: Instant::now(),
            probe: None,
            next_poll: Instant::now(),
        };
        // The record the owner was made from may be older than the provider's state (a
        // transition published before this owner was registered): start from the fresh one.
        if let Ok(record) = self.provider.get(self.handle.id).await {
            self.observed(
                &mut state,
                StateChange {
                    id: record.id(),
                    status: record.status(),
                    message: record.workspace.error_message.clone(),
                },
            );
        }
        self.reevaluate_idle(&mut state);
        loop {
            let polling =
                self.snapshot().status == WorkspaceStatus::Running && state.probe.is_none();
            let next_poll = state.next_poll;
            let transition = async {
                match state.transition.as_mut() {
                    Some((_, fut)) => fut.await,
                    None => std::future::pending().await,
                }
            };
            let idle = async {
                match state.idle_deadline {
                    Some(deadline) => sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            let probe = async {
                match state.probe.as_mut() {
                    Some(fut) => fut.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                command = self.commands.recv() => match command {
                    Some(Command::Deleted) | None => {
                        self.publish(Snapshot { deleted: true, ..Snapshot::of(WorkspaceStatus::Stopped) });
                        return;
                    }
                    Some(command) => self.command(&mut state, command),
                },
                outcome = transition => {
                    state.transition = None;
                    self.finished(&mut state, outcome);
                }
                changed = self.connections.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.connections.borrow_and_update();
                    // A new connection must find the workspace awake: cancel the timer at once.
                    self.reevaluate_idle(&mut state);
                }
                () = idle => {
                    state.idle_deadline = None;
                    self.handle.idle_stop_at_ms.store(0, Ordering::Relaxed);
                    if self.idle_eligible(&state) {
                        tracing::info!(workspace = %self.handle.id, "idle timeout: stopping");
                        self.begin_stop(&mut state, StopReason::Idle);
                    }
                }
                () = sleep_until(next_poll), if polling => {
                    state.next_poll = Instant::now() + self.settings.task_poll_interval;
                    if let Some(endpoint) = self.provider.endpoint(self.handle.id) {
                        let probe = self.probe.clone();
                        state.probe = Some(Box::pin(async move { probe.active_tasks(&endpoint).await }));
                    }
                }
                tasks = probe => {
                    state.probe = None;
                    match tasks {
                        Ok(n) => {
                            let before = self.handle.active_tasks.swap(n, Ordering::Relaxed);
                            if n == 0 && before > 0 {
                                state.idle_since = Instant::now();
                            }
                        }
                        // An unreachable service has no task we know of; the provider reports
                        // its death separately.
                        Err(error) => {
                            tracing::debug!(workspace = %self.handle.id, %error, "task probe failed");
                            self.handle.active_tasks.store(0, Ordering::Relaxed);
                        }
                    }
                    self.reevaluate_idle(&mut state);
                }
            }
        }
    }

    fn snapshot(&self) -> Snapshot {
        self.status_tx.borrow().clone()
    }

    fn command(&mut self, state: &mut State, command: Command) {
        let status = self.snapshot().status;
        match command {
            Command::Wake => match (status, state.transition.as_ref().map(|(k, _)| *k)) {
                // A stop is waiting for this start to finish: start again after it.
                (_, Some(Kind::Start)) if state.stop_after_start.is_some() => {
                    state.wake_after_stop = true;
                }
                (_, Some(Kind::Start)) | (WorkspaceStatus::Running, None) => {}
                // Still being created or stopped: start as soon as it is `stopped`.
                (_, Some(Kind::Stop))
                | (WorkspaceStatus::Stopping | WorkspaceStatus::Creating, None) => {
                    state.wake_after_stop = true;
                    state.stop_after_start = None;
                }
                (status, None) if status.is_startable() => self.begin_start(state),
                // `starting` reported by the provider without our start (another replica) or
                // `stop_failed`: nothing sensible to do but wait for the next state.
                _ => {}
            },
            Command::Start(reply) => {
                let result = if status == WorkspaceStatus::Creating {
                    state.wake_after_stop = true;
                    Ok(())
                } else if state.transition.is_none() && status.is_startable() {
                    self.begin_start(state);
                    Ok(())
                } else if stop_pending(state) {
                    state.wake_after_stop = true;
                    Ok(())
                } else {
                    Err(Error::WrongState(status))
                };
                let _ = reply.send(result);
            }
            Command::Stop(reason, reply) => {
                let result = match state.transition.as_ref().map(|(k, _)| *k) {
                    // The provider cannot stop what it is still starting: stop once it has
                    // started. Say `stopping` now, so nobody takes it for running meanwhile.
                    Some(Kind::Start) => {
                        state.stop_after_start = Some(reason);
                        state.wake_after_stop = false;
                        self.publish(Snapshot::of(WorkspaceStatus::Stopping));
                        Ok(())
                    }
                    Some(Kind::Stop) => {
                        state.wake_after_stop = false;
                        Ok(())
                    }
                    None if status.is_stoppable() => {
                        self.begin_stop(state, reason);
                        Ok(())
                    }
                    None => Err(Error::WrongState(status)),
                };
                let _ = reply.send(result);
            }
            Command::Settings {
                keep_active,
                idle_timeout,
            } => {
                if self.keep_active && !keep_active {
                    // Idle from now, not from whenever it last had a connection.
                    state.idle_since = Instant::now();
                }
                self.keep_active = keep_active;
                if self.idle_timeout != idle_timeout {
                    self.idle_timeout = idle_timeout;
                    // Re-arm with the new timeout, counted from now.
                    state.idle_deadline = None;
                    state.idle_since = Instant::now();
                }
                self.reevaluate_idle(state);
            }
            Command::Observed(change) => self.observed(state, change),
            Command::Deleted => unreachable!("handled by the loop"),
        }
    }

    /// A state the provider reported, which may or may not be one of our own transitions.
    fn observed(&mut self, state: &mut State, change: StateChange) {
        let current = self.snapshot();
        if change.status == current.status {
            return;
        }
        match change.status {
            WorkspaceStatus::Error => {
                let code = if state.transition.as_ref().map(|(k, _)| *k) == Some(Kind::Start) {
                    ErrorCode::StartFailed
                } else {
                    ErrorCode::BackendLost
                };
                let message = change
                    .message
                    .unwrap_or_else(|| "workspace failed".to_owned());
                self.publish(Snapshot::failed(code, message));
            }
            // Our start reached `running`, but a stop is waiting for it: still `stopping`.
            WorkspaceStatus::Running if state.stop_after_start.is_some() => {}
            status => self.publish(Snapshot {
                message: change.message,
                ..Snapshot::of(status)
            }),
        }
        if change.status == WorkspaceStatus::Stopped
            && state.transition.is_none()
            && std::mem::take(&mut state.wake_after_stop)
        {
            self.begin_start(state);
        }
        self.reevaluate_idle(state);
    }

    fn begin_start(&mut self, state: &mut State) {
        self.metrics.start_called();
        state.idle_since = Instant::now();
        self.publish(Snapshot::of(WorkspaceStatus::Starting));
        let provider = self.provider.clone();
        let id = self.handle.id;
        let budget = self.settings.boot_timeout;
        let began = Instant::now();
        tracing::info!(workspace = %id, "starting workspace");
        state.transition = Some((
            Kind::Start,
            Box::pin(async move {
                match tokio::time::timeout(budget, provider.start(id)).await {
                    Ok(result) => Outcome::Started(result, began.elapsed()),
                    Err(_) => Outcome::StartTimedOut,
                }
            }),
        ));
        self.reevaluate_idle(state);
    }

    fn begin_stop(&mut self, state: &mut State, reason: StopReason) {
        self.metrics.stop_called(reason.label());
        if reason != StopReason::StartTimeout {
            self.publish(Snapshot::of(WorkspaceStatus::Stopping));
        }
        let provider = self.provider.clone();
        let id = self.handle.id;
        tracing::info!(workspace = %id, reason = reason.label(), "stopping workspace");
        state.transition = Some((
            Kind::Stop,
            Box::pin(async move { Outcome::Stopped(provider.stop(id).await) }),
        ));
        self.reevaluate_idle(state);
    }

    fn finished(&mut self, state: &mut State, outcome: Outcome) {
        let id = self.handle.id;
        match outcome {
            Outcome::Started(Ok(_), took) => {
                self.metrics.wake_took(took.as_secs_f64());
                tracing::info!(workspace = %id, took_ms = took.as_millis() as u64, "workspace running");
                if let Some(reason) = state.stop_after_start.take() {
                    self.begin_stop(state, reason);
                } else {
                    self.publish(Snapshot::of(WorkspaceStatus::Running));
                    state.next_poll = Instant::now();
                }
            }
            Outcome::Started(Err(error), _) => {
                tracing::warn!(workspace = %id, %error, "workspace failed to start");
                self.metrics.start_failed("start_failed");
                if state.stop_after_start.take().is_some() {
                    state.wake_after_stop = false;
                }
                let message = match error {
                    ProviderError::StartFailed(msg) => msg,
                    other => other.to_string(),
                };
                self.publish(Snapshot::failed(ErrorCode::StartFailed, message));
            }
            Outcome::StartTimedOut => {
                let budget = self.settings.boot_timeout;
                tracing::warn!(workspace = %id, ?budget, "workspace start timed out");
                self.metrics.start_failed("start_timeout");
                self.publish(Snapshot::failed(
                    ErrorCode::StartTimeout,
                    format!(
                        "workspace did not start within {}",
                        humantime::format_duration(budget)
                    ),
                ));
                // Clean up whatever the provider left half-started.
                if state.stop_after_start.take().is_some() {
                    state.wake_after_stop = false;
                }
                self.begin_stop(state, StopReason::StartTimeout);
            }
            Outcome::Stopped(Ok(())) => {
                let current = self.snapshot();
                // After a timed-out start the clients were told `error`; keep saying so until
                // someone wakes it again.
                if current.error != Some(ErrorCode::StartTimeout) {
                    self.publish(Snapshot::of(WorkspaceStatus::Stopped));
                }
                self.handle.active_tasks.store(0, Ordering::Relaxed);
                if std::mem::take(&mut state.wake_after_stop) {
                    self.begin_start(state);
                }
            }
            Outcome::Stopped(Err(error)) => {
                tracing::error!(workspace = %id, %error, "workspace failed to stop");
                state.wake_after_stop = false;
                self.publish(Snapshot {
                    message: Some(error.to_string()),
                    ..Snapshot::of(WorkspaceStatus::StopFailed)
                });
            }
        }
        self.reevaluate_idle(state);
    }

    fn idle_eligible(&self, state: &State) -> bool {
        self.snapshot().status == WorkspaceStatus::Running
            && state.transition.is_none()
            && self.connections.borrow().open == 0
            && self.handle.active_tasks.load(Ordering::Relaxed) == 0
            && !self.keep_active
    }

    /// Arms, moves or cancels the idle timer to match the current conditions.
    fn reevaluate_idle(&mut self, state: &mut State) {
        // The last release, read here rather than only when its change is delivered: another
        // input may be handled first, and a visit may have come and gone in between.
        if let Some(closed) = self.connections.borrow().last_closed {
            state.idle_since = state.idle_since.max(closed);
        }
        if !self.idle_eligible(state) {
            if state.idle_deadline.take().is_some() {
                self.handle.idle_stop_at_ms.store(0, Ordering::Relaxed);
            }
            return;
        }
        let timeout = self.idle_timeout.unwrap_or(self.settings.idle_timeout);
        let deadline = state.idle_since + timeout;
        if state.idle_deadline == Some(deadline) {
            return;
        }
        state.idle_deadline = Some(deadline);
        let left = deadline.saturating_duration_since(Instant::now());
        let at = time::OffsetDateTime::now_utc() + left;
        let ms = (at.unix_timestamp_nanos() / 1_000_000).max(1) as u64;
        self.handle.idle_stop_at_ms.store(ms, Ordering::Relaxed);
    }

    fn publish(&self, snapshot: Snapshot) {
        let previous = self.status_tx.send_replace(snapshot.clone());
        if previous != snapshot {
            let _ = self.handle.events.send(snapshot);
        }
    }
}

/// Whether the workspace is on its way to `stopped`: a stop in flight, or one waiting for the
/// start in flight to finish.
fn stop_pending(state: &State) -> bool {
    match state.transition.as_ref().map(|(k, _)| *k) {
        Some(Kind::Stop) => true,
        Some(Kind::Start) => state.stop_after_start.is_some(),
        None => false,
    }
}
