//! The workspace registry: one owner task per workspace, and the handles sessions use.
//!
//! Every side effect on a workspace — start, stop, the idle timer — happens in its owner task
//! ([`owner`]), one at a time. That is what makes a wake single-flight however many clients
//! connect at once, and what makes "a connect during `stopping` waits for `stopped`, then starts"
//! one branch of one `match` instead of a race between tasks.
//!
//! Sessions and REST handlers hold an `Arc<`[`Handle`]`>`: they read the current
//! [`Snapshot`], subscribe to its transitions, send commands, and take [`Lease`]s.
//!
//! A dispatcher task forwards the provider's state changes (a workspace service that died, a
//! stop that finished) to the owner of that workspace.

mod lease;
mod owner;
pub mod probe;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use protocol::WorkspaceStatus;
use protocol::control::ErrorCode;
use time::OffsetDateTime;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

pub use lease::{Connections, Lease};
pub use probe::{HttpTaskProbe, TaskProbe};

use crate::error::Error;
use crate::metrics::Metrics;
use crate::provider::{Provider, Record};

/// Sessions of one workspace that may be connecting to its service at the same time. Measured
/// with 5,000 clients waking one workspace: 16 let `running` reach the last clients 132 ms after
/// the workspace was ready (p99), 4 brought it to 85 ms.
const CONCURRENT_CONNECTS: usize = 4;

/// Timing of the owner tasks.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a running workspace may have no connection and no task before it is stopped.
    pub idle_timeout: Duration,
    /// How long a start may take before the wake fails with `start_timeout`.
    pub boot_timeout: Duration,
    /// How often a running workspace's service is asked for its active agent tasks.
    pub task_poll_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            idle_timeout: Duration::from_secs(600),
            boot_timeout: Duration::from_secs(300),
            task_poll_interval: Duration::from_secs(5),
        }
    }
}

/// A workspace's state as sessions see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub status: WorkspaceStatus,
    /// Why, for `error` and `stop_failed`.
    pub message: Option<String>,
    /// The stable code of the failure, for `error`.
    pub error: Option<ErrorCode>,
    /// The workspace was deleted: sessions close with 4004.
    pub deleted: bool,
}

impl Snapshot {
    pub fn of(status: WorkspaceStatus) -> Snapshot {
        Snapshot {
            status,
            message: None,
            error: None,
            deleted: false,
        }
    }

    fn failed(code: ErrorCode, message: String) -> Snapshot {
        Snapshot {
            status: WorkspaceStatus::Error,
            message: Some(message),
            error: Some(code),
            deleted: false,
        }
    }
}

/// Why a workspace was stopped, for `aether_gateway_workspace_stops_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Idle,
    User,
    Delete,
    StartTimeout,
}

impl StopReason {
    pub fn label(self) -> &'static str {
        match self {
            StopReason::Idle => "idle",
            StopReason::User => "user",
            StopReason::Delete => "delete",
            StopReason::StartTimeout => "start_timeout",
        }
    }
}

/// Messages to an owner task.
#[derive(Debug)]
enum Command {
    /// A client wants the workspace running (connect).
    Wake,
    /// `POST /start`: start it if it is startable.
    Start(oneshot::Sender<Result<(), Error>>),
    /// `POST /stop` and deletes: stop it if it is stoppable.
    Stop(StopReason, oneshot::Sender<Result<(), Error>>),
    /// The workspace's idle settings changed (`PATCH`).
    Settings {
        keep_active: bool,
        idle_timeout: Option<Duration>,
    },
    /// The provider reported a state.
    Observed(crate::provider::StateChange),
    /// The workspace was deleted: tell every session and end the owner.
    Deleted,
}

/// The shared face of one workspace's owner task.
pub struct Handle {
    id: Uuid,
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<Snapshot>,
    events: broadcast::Sender<Snapshot>,
    connections: watch::Sender<Connections>,
    active_tasks: AtomicU32,
    /// When the idle timer will fire, as Unix milliseconds; 0 when it is not running.
    idle_stop_at_ms: AtomicU64,
    /// Bounds the sessions connecting to the workspace service at once (see
    /// [`Handle::connect_permit`]).
    connects: tokio::sync::Semaphore,
}

impl Handle {
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The current state.
    pub fn snapshot(&self) -> Snapshot {
        self.status.borrow().clone()
    }

    /// The current state and every transition after it. Subscribing before reading makes sure
    /// no transition falls between the two.
    pub fn subscribe(&self) -> (Snapshot, broadcast::Receiver<Snapshot>) {
        let rx = self.events.subscribe();
        (self.snapshot(), rx)
    }

    /// Counts a connection until the lease drops.
    pub fn lease(self: &Arc<Self>) -> Lease {
        Lease::new(self.clone())
    }

    /// Waits for a turn to open a connection to the workspace service. When a workspace that
    /// thousands of clients waited for becomes running, every session would otherwise start its
    /// upstream handshake at once, and those handshakes would delay the `running` frames still to
    /// be written to the others; with a bound, the frames go out first.
    pub async fn connect_permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.connects
            .acquire()
            .await
            .expect("the connect semaphore is never closed")
    }

    /// Counted connections open now.
    pub fn connections(&self) -> u32 {
        self.connections.borrow().open
    }

    /// Agent tasks the workspace service last reported.
    pub fn active_tasks(&self) -> u32 {
        self.active_tasks.load(Ordering::Relaxed)
    }

    /// When the idle timer will stop the workspace, if it is running.
    pub fn idle_stop_at(&self) -> Option<OffsetDateTime> {
        match self.idle_stop_at_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok(),
        }
    }

    /// Asks the owner to make the workspace running. Progress arrives on [`Handle::subscribe`].
    pub fn wake(&self) {
        let _ = self.commands.send(Command::Wake);
    }

    /// Starts the workspace if its state allows (`POST /start`).
    pub async fn start(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Start(tx))?;
        rx.await
            .map_err(|_| Error::Internal("workspace owner ended".into()))?
    }

    /// Stops the workspace if its state allows.
    pub async fn stop(&self, reason: StopReason) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Stop(reason, tx))?;
        rx.await
            .map_err(|_| Error::Internal("workspace owner ended".into()))?
    }

    /// Tells the owner the workspace's idle settings changed.
    pub fn update_settings(&self, keep_active: bool, idle_timeout: Option<Duration>) {
        let _ = self.commands.send(Command::Settings {
            keep_active,
            idle_timeout,
        });
    }

    fn send(&self, command: Command) -> Result<(), Error> {
        self.commands
            .send(command)
            .map_err(|_| Error::Internal("workspace owner ended".into()))
    }
}

/// Every workspace's handle, created on first use.
pub struct Registry {
    provider: Arc<dyn Provider>,
    metrics: Arc<Metrics>,
    probe: Arc<dyn TaskProbe>,
    settings: Settings,
    /// A DashMap because every connect reads it from whichever thread accepted the socket; its
    /// guards never cross an `.await` (the `Arc` is cloned out in the same statement).
    handles: DashMap<Uuid, Arc<Handle>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Registry {
    pub fn new(
        provider: Arc<dyn Provider>,
        metrics: Arc<Metrics>,
        probe: Arc<dyn TaskProbe>,
        settings: Settings,
        shutdown: CancellationToken,
    ) -> Arc<Registry> {
        Arc::new(Registry {
            provider,
            metrics,
            probe,
            settings,
            handles: DashMap::new(),
            tasks: TaskTracker::new(),
            shutdown,
        })
    }

    pub fn provider(&self) -> &Arc<dyn Provider> {
        &self.provider
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Starts forwarding provider state changes to owners, and creates owners for workspaces
    /// that are running now, so their idle timers run even if nobody ever connects.
    pub async fn start(self: &Arc<Self>) -> Result<(), Error> {
        let events = self.provider.subscribe();
        let registry = self.clone();
        self.tasks.spawn(registry.dispatch(events));
        for record in self.provider.list(None).await? {
            if record.status() != WorkspaceStatus::Stopped {
                self.handle(&record);
            }
        }
        Ok(())
    }

    /// The handle of a workspace, spawning its owner on first use.
    pub fn handle(&self, record: &Record) -> Arc<Handle> {
        if let Some(handle) = self.handles.get(&record.id()).map(|h| h.clone()) {
            return handle;
        }
        self.handles
            .entry(record.id())
            .or_insert_with(|| self.spawn_owner(record))
            .clone()
    }

    /// The handle of a workspace if it has an owner already.
    pub fn get(&self, id: Uuid) -> Option<Arc<Handle>> {
        self.handles.get(&id).map(|h| h.clone())
    }

    /// Forgets a deleted workspace: its sessions are told, its owner ends.
    pub fn remove(&self, id: Uuid) {
        if let Some((_, handle)) = self.handles.remove(&id) {
            let _ = handle.commands.send(Command::Deleted);
        }
    }

    /// Waits for owner tasks to finish after shutdown was signalled.
    pub async fn closed(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn spawn_owner(&self, record: &Record) -> Arc<Handle> {
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let initial = Snapshot {
            status: record.status(),
            message: record.workspace.error_message.clone(),
            error: (record.status() == WorkspaceStatus::Error).then_some(ErrorCode::StartFailed),
            deleted: false,
        };
        let (status_tx, status_rx) = watch::channel(initial);
        // Transitions are few; 64 lets a slow waiter lag without losing the last state (a lagged
        // receiver falls back to the current snapshot).
        let (events, _) = broadcast::channel(64);
        let (connections, connections_rx) = watch::channel(Connections::default());
        let handle = Arc::new(Handle {
            id: record.id(),
            commands: commands_tx,
            status: status_rx,
            events,
            connections,
            active_tasks: AtomicU32::new(0),
            idle_stop_at_ms: AtomicU64::new(0),
            connects: tokio::sync::Semaphore::new(CONCURRENT_CONNECTS),
        });
        let owner = owner::Owner {
            handle: handle.clone(),
            provider: self.provider.clone(),
            metrics: self.metrics.clone(),
            probe: self.probe.clone(),
            settings: self.settings.clone(),
            status_tx,
            commands: commands_rx,
            connections: connections_rx,
            keep_active: record.workspace.keep_active,
            idle_timeout: record.workspace.idle_timeout_secs.map(Duration::from_secs),
            shutdown: self.shutdown.clone(),
        };
        self.tasks.spawn(owner.run());
        handle
    }

    async fn dispatch(
        self: Arc<Self>,
        mut events: broadcast::Receiver<crate::provider::StateChange>,
    ) {
        loop {
            let change = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                change = events.recv() => change,
            };
            match change {
                Ok(change) => {
                    let handle = self.get(change.id);
                    match handle {
                        Some(handle) => {
                            let _ = handle.commands.send(Command::Observed(change));
                        }
                        // A workspace nobody has touched yet started or changed by itself:
                        // give it an owner so its idle timer runs.
                        None if change.status == WorkspaceStatus::Running => {
                            if let Ok(record) = self.provider.get(change.id).await {
                                self.handle(&record);
                            }
                        }
                        None => {}
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "provider events lagged; resynchronising");
                    self.resync().await;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// After missed provider events, tell every owner the provider's current state.
    async fn resync(&self) {
        let Ok(records) = self.provider.list(None).await else {
            return;
        };
        for record in records {
            if let Some(handle) = self.get(record.id()) {
                let _ = handle
                    .commands
                    .send(Command::Observed(crate::provider::StateChange {
                        id: record.id(),
                        status: record.status(),
                        message: record.workspace.error_message.clone(),
                    }));
            }
        }
    }
}

#[cfg(test)]
mod tests;
