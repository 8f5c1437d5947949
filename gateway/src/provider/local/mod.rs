//! The embedded default provider: workspaces are `aether-workspace` processes on this machine.
//!
//! # Layout
//!
//! - [`store`]: the registry in an embedded database (`<data_dir>/workspaces.redb`, redb): every
//!   workspace record, its owner, and the pid and port of its running service, so that a
//!   restarted gateway finds what is still running.
//! - [`process`]: launching a service in its own process group, its readiness line, signals,
//!   liveness and `/healthz` probes.
//! - [`lifecycle`]: start, stop, recovery at start-up and the monitors that notice a service that
//!   died by itself.
//! - this module: configuration, the in-memory view of the registry, create/update/delete and
//!   the [`Provider`] implementation.
//!
//! # On disk
//!
//! ```text
//! <data_dir>/workspaces.redb     the registry
//! <data_dir>/volumes/<id>/       each workspace's persistent directory (--volume)
//! <data_dir>/logs/<id>.log       stderr of the workspace's service, truncated at each start
//! ```
//!
//! # Concurrency
//!
//! Memory is the source of truth while the gateway runs: one map of [`Entry`]s behind a std
//! `Mutex`. Every transition is a check-and-set on one entry done under that lock (never across
//! an `.await`), and it publishes its [`StateChange`] under the lock too, so subscribers see the
//! states of a workspace in the order they happened. The file follows: after each change the
//! entry's *current* state is written on the blocking pool (redb commits fsync, which must not
//! stall a runtime thread), see [`store::Store::save`].
//!
//! Background tasks (monitors of running services) hold only a `Weak` reference, so dropping the
//! provider closes the database at once — and leaves the services running, which is what a
//! gateway restart needs.

mod lifecycle;
mod process;
mod store;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use protocol::WorkspaceStatus;
use protocol::rest::UpdateWorkspace;
use time::OffsetDateTime;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::store::{Store, Stored};
use super::{Endpoint, NewWorkspace, Provider, ProviderError, Record, StateChange};

/// How many state changes a slow subscriber may fall behind before it sees `Lagged`.
const EVENT_CAPACITY: usize = 1024;

/// How the local provider runs workspaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    /// Holds the registry, the volumes and the service logs.
    pub data_dir: PathBuf,
    /// The `aether-workspace` binary.
    pub workspace_bin: PathBuf,
    /// Extra time a start takes before the service is launched, so that local workspaces can
    /// behave like VMs that boot (`AETHER_GATEWAY_LOCAL_BOOT_DELAY`).
    pub boot_delay: Duration,
    /// How long a stop waits after SIGTERM before it sends SIGKILL.
    pub stop_grace: Duration,
    /// How long a launched service has to print its readiness line.
    pub ready_timeout: Duration,
}

impl LocalConfig {
    pub const DEFAULT_BOOT_DELAY: Duration = Duration::ZERO;
    pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
    pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

    /// The defaults, with the service binary found by [`LocalConfig::default_workspace_bin`].
    pub fn new(data_dir: impl Into<PathBuf>) -> LocalConfig {
        LocalConfig {
            data_dir: data_dir.into(),
            workspace_bin: Self::default_workspace_bin(),
            boot_delay: Self::DEFAULT_BOOT_DELAY,
            stop_grace: Self::DEFAULT_STOP_GRACE,
            ready_timeout: Self::DEFAULT_READY_TIMEOUT,
        }
    }

    /// `aether-workspace` next to the running executable (where cargo and the release archives
    /// put it), else whatever `aether-workspace` is on `PATH`.
    pub fn default_workspace_bin() -> PathBuf {
        let name = "aether-workspace";
        std::env::current_exe()
            .ok()
            .and_then(|exe| {
                let dir = exe.parent()?;
                // Test executables live one level down, in target/<profile>/deps.
                [dir.join(name), dir.parent()?.join(name)]
                    .into_iter()
                    .find(|p| p.is_file())
            })
            .unwrap_or_else(|| PathBuf::from(name))
    }

    fn registry_path(&self) -> PathBuf {
        self.data_dir.join("workspaces.redb")
    }

    fn volume_dir(&self, id: Uuid) -> PathBuf {
        self.data_dir.join("volumes").join(id.to_string())
    }

    fn log_path(&self, id: Uuid) -> PathBuf {
        self.data_dir.join("logs").join(format!("{id}.log"))
    }
}

/// The embedded default [`Provider`]. See the module docs.
#[derive(Debug)]
pub struct LocalProvider {
    shared: Arc<Shared>,
}

/// What the provider and its tasks share.
#[derive(Debug)]
struct Shared {
    config: LocalConfig,
    store: Store,
    /// A std `Mutex` rather than a `DashMap`: every transition is a check-and-set over several
    /// fields of one entry that must happen together with publishing, each takes microseconds and
    /// never spans an `.await`, and a machine runs tens of workspaces, not millions — per-shard
    /// locking would buy nothing.
    entries: Mutex<HashMap<Uuid, Entry>>,
    events: broadcast::Sender<StateChange>,
    /// For `/healthz` probes at recovery.
    http: reqwest::Client,
    /// Cancelled when the provider is dropped: monitors stop watching, services keep running.
    shutdown: CancellationToken,
    /// Tells the boots of one workspace apart, so a late step of an abandoned boot cannot touch
    /// the state of a newer one.
    next_boot: AtomicU64,
}

/// One workspace as the provider holds it in memory.
#[derive(Debug)]
struct Entry {
    stored: Stored,
    /// An in-flight start, which later `start` calls join and `stop` cancels.
    boot: Option<lifecycle::Boot>,
    /// The running service, watched by a monitor task.
    proc: Option<lifecycle::Proc>,
    /// Set while `delete` removes the volume: the workspace no longer accepts calls.
    deleting: bool,
}

impl Entry {
    fn record(&self) -> Record {
        Record {
            workspace: self.stored.workspace.clone(),
            owner: self.stored.owner.clone(),
        }
    }

    fn status(&self) -> WorkspaceStatus {
        self.stored.workspace.status
    }

    /// Moves to `status` (with `message` for `error` and `stop_failed`), refreshes `updated_at`
    /// and publishes the change. Called with the entries lock held, which orders the events.
    fn transition(
        &mut self,
        status: WorkspaceStatus,
        message: Option<String>,
        events: &broadcast::Sender<StateChange>,
    ) {
        let workspace = &mut self.stored.workspace;
        workspace.status = status;
        workspace.error_message = message.clone();
        workspace.updated_at = OffsetDateTime::now_utc();
        // No subscriber is not an error: nobody is waiting on this workspace.
        let _ = events.send(StateChange {
            id: workspace.id,
            status,
            message,
        });
    }
}

impl LocalProvider {
    /// Opens (or creates) the data directory and its registry. Call [`Provider::recover`] once
    /// before serving, so records left `running` by a previous gateway are reconciled.
    pub fn open(config: LocalConfig) -> Result<Arc<LocalProvider>, ProviderError> {
        for dir in [
            config.data_dir.clone(),
            config.data_dir.join("volumes"),
            config.data_dir.join("logs"),
        ] {
            std::fs::create_dir_all(&dir).map_err(|e| {
                ProviderError::Backend(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let store = Store::open(&config.registry_path()).map_err(backend)?;
        let entries = store
            .load()
            .map_err(backend)?
            .into_iter()
            .map(|stored| {
                let entry = Entry {
                    stored,
                    boot: None,
                    proc: None,
                    deleting: false,
                };
                (entry.stored.workspace.id, entry)
            })
            .collect();
        let http = reqwest::Client::builder()
            .timeout(lifecycle::HEALTHZ_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| ProviderError::Backend(format!("http client: {e}")))?;
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Ok(Arc::new(LocalProvider {
            shared: Arc::new(Shared {
                config,
                store,
                entries: Mutex::new(entries),
                events,
                http,
                shutdown: CancellationToken::new(),
                next_boot: AtomicU64::new(1),
            }),
        }))
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &LocalConfig {
        &self.shared.config
    }

    /// Where the volume of workspace `id` lives.
    pub fn volume_dir(&self, id: Uuid) -> PathBuf {
        self.shared.config.volume_dir(id)
    }

    /// The pid of the running service of workspace `id`, if any (for diagnostics and tests).
    pub fn pid(&self, id: Uuid) -> Option<i32> {
        self.shared
            .lock()
            .get(&id)
            .and_then(|e| e.stored.runtime)
            .map(|rt| rt.pid)
    }
}

/// Kills every workspace service started with a volume under `<data_dir>/volumes` — whether or
/// not a provider is open on it — and returns how many there were.
///
/// For test harnesses only: a gateway that is killed leaves its workspace services running on
/// purpose (the next gateway on the same data directory adopts them), so a test that throws the
/// data directory away must end them itself.
#[doc(hidden)]
pub fn kill_services_in(data_dir: &Path) -> usize {
    // Processes were started with the path as given; compare both spellings.
    let given = data_dir.join("volumes");
    let mut killed = process::kill_services_under(&given);
    if let Ok(canonical) = std::fs::canonicalize(data_dir)
        && canonical.join("volumes") != given
    {
        killed += process::kill_services_under(&canonical.join("volumes"));
    }
    killed
}

impl Drop for LocalProvider {
    fn drop(&mut self) {
        // Monitors let go of their services; the services keep running for the next gateway.
        self.shared.shutdown.cancel();
    }
}

fn backend(e: Box<store::StoreError>) -> ProviderError {
    ProviderError::Backend(e.to_string())
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Entry>> {
        // A panic under the lock leaves plain data behind, still consistent enough to serve.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on the live entry `id` under the lock.
    fn with_entry<T>(
        &self,
        id: Uuid,
        f: impl FnOnce(&mut Entry, &broadcast::Sender<StateChange>) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        let mut entries = self.lock();
        let entry = entries
            .get_mut(&id)
            .filter(|e| !e.deleting)
            .ok_or(ProviderError::NotFound)?;
        f(entry, &self.events)
    }

    /// Writes the current state of `id` (or its absence) to the registry.
    async fn persist(self: &Arc<Self>, id: Uuid) -> Result<(), ProviderError> {
        let shared = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            shared
                .store
                .save(id, || shared.lock().get(&id).map(|e| e.stored.clone()))
        })
        .await
        .map_err(|e| ProviderError::Backend(format!("registry write task: {e}")))?
        .map_err(backend)
    }

    /// [`Shared::persist`] for background steps, whose caller has nobody to return an error to.
    async fn persist_or_log(self: &Arc<Self>, id: Uuid) {
        if let Err(e) = self.persist(id).await {
            tracing::error!(workspace_id = %id, error = %e, "cannot write the workspace registry");
        }
    }

    async fn create(
        self: &Arc<Self>,
        owner: &str,
        project_id: Uuid,
        spec: NewWorkspace,
    ) -> Result<Record, ProviderError> {
        spec.hardware.validate().map_err(ProviderError::Invalid)?;
        let workspace = Record::creating(owner, project_id, spec).workspace;
        let id = workspace.id;
        let record = {
            let mut entries = self.lock();
            let mut entry = Entry {
                stored: Stored {
                    workspace,
                    owner: owner.to_owned(),
                    runtime: None,
                },
                boot: None,
                proc: None,
                deleting: false,
            };
            entry.transition(WorkspaceStatus::Creating, None, &self.events);
            let record = entry.record();
            entries.insert(id, entry);
            record
        };
        if let Err(e) = self.persist(id).await {
            self.lock().remove(&id);
            return Err(e);
        }
        // Provisioning is a directory here, but it is a VM elsewhere: the caller gets `creating`
        // now and sees `stopped` published when it is done.
        tokio::spawn(Arc::clone(self).provision(id));
        Ok(record)
    }

    /// `creating` → `stopped`: makes the volume directory.
    async fn provision(self: Arc<Self>, id: Uuid) {
        let volume = self.config.volume_dir(id);
        let made = {
            let volume = volume.clone();
            tokio::task::spawn_blocking(move || std::fs::create_dir_all(&volume))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
        };
        let changed = self.with_entry(id, |entry, events| {
            if entry.status() != WorkspaceStatus::Creating {
                // Started (which provisions too) or deleted meanwhile.
                return Ok(false);
            }
            match &made {
                Ok(()) => {
                    entry.stored.workspace.machine_id = Some(format!("local-{id}"));
                    entry.stored.workspace.private_ip = Some("127.0.0.1".to_owned());
                    entry.transition(WorkspaceStatus::Stopped, None, events);
                }
                Err(e) => entry.transition(
                    WorkspaceStatus::Error,
                    Some(format!("cannot create volume {}: {e}", volume.display())),
                    events,
                ),
            }
            Ok(true)
        });
        match changed {
            Ok(true) => self.persist_or_log(id).await,
            Ok(false) => {}
            Err(_) => {
                // Deleted while we made its directory: do not leave it behind.
                let _ = tokio::fs::remove_dir_all(&volume).await;
            }
        }
    }

    async fn update(
        self: &Arc<Self>,
        id: Uuid,
        update: UpdateWorkspace,
    ) -> Result<Record, ProviderError> {
        let record = self.with_entry(id, |entry, _| {
            let workspace = &mut entry.stored.workspace;
            update.apply_to(workspace).map_err(ProviderError::Invalid)?;
            workspace.updated_at = OffsetDateTime::now_utc();
            Ok(entry.record())
        })?;
        self.persist(id).await?;
        Ok(record)
    }

    async fn delete(self: &Arc<Self>, id: Uuid) -> Result<(), ProviderError> {
        let status = self.with_entry(id, |entry, _| Ok(entry.status()))?;
        if status.is_stoppable() {
            match self.stop(id).await {
                // Stopped by someone else meanwhile: just as good.
                Ok(()) | Err(ProviderError::InvalidState(_)) => {}
                Err(e) => return Err(e),
            }
        }
        // Claim it: from here on it answers `NotFound` to everyone else.
        self.with_entry(id, |entry, _| match entry.status() {
            WorkspaceStatus::Stopped | WorkspaceStatus::Error | WorkspaceStatus::Creating => {
                entry.deleting = true;
                Ok(())
            }
            other => Err(ProviderError::InvalidState(other)),
        })?;
        let volume = self.config.volume_dir(id);
        let log = self.config.log_path(id);
        let removed = tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_file(&log);
            match std::fs::remove_dir_all(&volume) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(format!("cannot remove volume {}: {e}", volume.display()))
                }
                _ => Ok(()),
            }
        })
        .await
        .map_err(|e| ProviderError::Backend(format!("volume removal task: {e}")))?;
        if let Err(message) = removed {
            // Keep the record so that the delete can be retried.
            if let Some(entry) = self.lock().get_mut(&id) {
                entry.deleting = false;
            }
            return Err(ProviderError::Backend(message));
        }
        self.lock().remove(&id);
        self.persist(id).await
    }

    fn endpoint(&self, id: Uuid) -> Option<Endpoint> {
        let entries = self.lock();
        let entry = entries.get(&id)?;
        if entry.status() != WorkspaceStatus::Running {
            return None;
        }
        let port = entry.stored.runtime?.port?;
        Some(endpoint(port))
    }
}

fn endpoint(port: u16) -> Endpoint {
    Endpoint {
        base_url: format!("http://127.0.0.1:{port}"),
    }
}

/// The directories a workspace's launch needs, created if missing.
fn ensure_dirs(volume: &Path, log: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(volume)?;
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    Ok(())
}

#[async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn list(&self, owner: Option<&str>) -> Result<Vec<Record>, ProviderError> {
        let mut records: Vec<Record> = self
            .shared
            .lock()
            .values()
            .filter(|e| !e.deleting && owner.is_none_or(|o| e.stored.owner == o))
            .map(Entry::record)
            .collect();
        records.sort_by_key(|r| (r.workspace.created_at, r.workspace.id));
        Ok(records)
    }

    async fn get(&self, id: Uuid) -> Result<Record, ProviderError> {
        self.shared.with_entry(id, |entry, _| Ok(entry.record()))
    }

    async fn create(
        &self,
        owner: &str,
        project_id: Uuid,
        spec: NewWorkspace,
    ) -> Result<Record, ProviderError> {
        self.shared.create(owner, project_id, spec).await
    }

    async fn update(&self, id: Uuid, update: UpdateWorkspace) -> Result<Record, ProviderError> {
        self.shared.update(id, update).await
    }

    async fn delete(&self, id: Uuid) -> Result<(), ProviderError> {
        self.shared.delete(id).await
    }

    async fn start(&self, id: Uuid) -> Result<Endpoint, ProviderError> {
        self.shared.start(id).await
    }

    async fn stop(&self, id: Uuid) -> Result<(), ProviderError> {
        self.shared.stop(id).await
    }

    fn endpoint(&self, id: Uuid) -> Option<Endpoint> {
        self.shared.endpoint(id)
    }

    fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.shared.events.subscribe()
    }

    async fn recover(&self) -> Result<(), ProviderError> {
        self.shared.recover().await
    }
}

/// A fresh "has it exited?" flag for a process nobody monitors (a sender that is gone at once:
/// waiters fall back to `/proc`).
fn unwatched() -> watch::Receiver<bool> {
    watch::channel(false).1
}
