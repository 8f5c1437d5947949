//! A test double: an in-memory [`Provider`] with no processes, for tests that run with paused
//! tokio time, where real workspace services cannot start.
//!
//! It behaves like the local provider as far as states go (`creating` → `stopped` → `starting`
//! → `running` → `stopping` → `stopped`, every state published), and lets a test script what a
//! real provider does by itself:
//!
//! - [`MemoryProvider::set_start_delay`]: how long a start takes (a `tokio::time::sleep`, so
//!   paused time makes it instant yet ordered);
//! - [`MemoryProvider::fail_next_start`] / [`MemoryProvider::hang_next_start`]: the next start
//!   ends in `error`, or never finishes (for boot-budget tests);
//! - [`MemoryProvider::start_calls`] / [`MemoryProvider::stop_calls`]: how often the gateway
//!   really asked (single-flight wakes, exactly-once idle stops);
//! - [`MemoryProvider::kill`]: the workspace's service dies under its sessions (`error`);
//! - [`MemoryProvider::set_base_url`]: where `endpoint` points, e.g. at a real workspace service
//!   or a fake one the test runs.
//!
//! Not for production: nothing is persisted and nothing really runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use protocol::WorkspaceStatus;
use protocol::rest::UpdateWorkspace;
use time::OffsetDateTime;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{Endpoint, NewWorkspace, Provider, ProviderError, Record, StateChange};

/// What the next start does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NextStart {
    Succeed,
    Fail(String),
    Hang,
}

/// The scriptable knobs, behind one lock with the records.
#[derive(Debug)]
struct State {
    records: HashMap<Uuid, Record>,
    start_delay: Duration,
    stop_delay: Duration,
    next_start: NextStart,
    base_url: String,
}

/// An in-memory [`Provider`] for tests; see the module docs.
#[derive(Debug)]
pub struct MemoryProvider {
    /// A std `Mutex`: every operation is a short check-and-set on one record, never across an
    /// `.await`.
    state: Mutex<State>,
    events: broadcast::Sender<StateChange>,
    starts: AtomicUsize,
    stops: AtomicUsize,
}

impl Default for MemoryProvider {
    fn default() -> Self {
        MemoryProvider::new()
    }
}

impl MemoryProvider {
    /// No workspaces, instant starts and stops, endpoints at `http://127.0.0.1:9`.
    pub fn new() -> MemoryProvider {
        MemoryProvider {
            state: Mutex::new(State {
                records: HashMap::new(),
                start_delay: Duration::ZERO,
                stop_delay: Duration::ZERO,
                next_start: NextStart::Succeed,
                base_url: "http://127.0.0.1:9".to_owned(),
            }),
            events: broadcast::channel(1024).0,
            starts: AtomicUsize::new(0),
            stops: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long each start takes from `starting` to `running`.
    pub fn set_start_delay(&self, delay: Duration) {
        self.lock().start_delay = delay;
    }

    /// How long each stop takes from `stopping` to `stopped`.
    pub fn set_stop_delay(&self, delay: Duration) {
        self.lock().stop_delay = delay;
    }

    /// The next start ends in `error` with `message` (after the start delay).
    pub fn fail_next_start(&self, message: impl Into<String>) {
        self.lock().next_start = NextStart::Fail(message.into());
    }

    /// The next start stays `starting` forever (until stopped).
    pub fn hang_next_start(&self) {
        self.lock().next_start = NextStart::Hang;
    }

    /// Where `endpoint` points for every running workspace.
    pub fn set_base_url(&self, base_url: impl Into<String>) {
        self.lock().base_url = base_url.into();
    }

    /// How many times `start` was called (including refused ones).
    pub fn start_calls(&self) -> usize {
        self.starts.load(Ordering::SeqCst)
    }

    /// How many times `stop` was called (including refused ones).
    pub fn stop_calls(&self) -> usize {
        self.stops.load(Ordering::SeqCst)
    }

    /// Adds a workspace as it is, e.g. already `running`, without publishing.
    pub fn insert(&self, record: Record) {
        self.lock().records.insert(record.id(), record);
    }

    /// Simulates the workspace's service dying: `error` with `message`, published.
    pub fn kill(&self, id: Uuid, message: impl Into<String>) -> Result<(), ProviderError> {
        self.transition(id, None, WorkspaceStatus::Error, Some(message.into()))
    }

    /// Sets the state of `id` (if it is in one of `from`, when given) and publishes it.
    fn transition(
        &self,
        id: Uuid,
        from: Option<&dyn Fn(WorkspaceStatus) -> bool>,
        status: WorkspaceStatus,
        message: Option<String>,
    ) -> Result<(), ProviderError> {
        let mut state = self.lock();
        let record = state.records.get_mut(&id).ok_or(ProviderError::NotFound)?;
        let current = record.status();
        if from.is_some_and(|ok| !ok(current)) {
            return Err(ProviderError::InvalidState(current));
        }
        record.workspace.status = status;
        record.workspace.error_message = message.clone();
        record.workspace.updated_at = OffsetDateTime::now_utc();
        let _ = self.events.send(StateChange {
            id,
            status,
            message,
        });
        Ok(())
    }

    fn status(&self, id: Uuid) -> Option<WorkspaceStatus> {
        self.lock().records.get(&id).map(Record::status)
    }
}

#[async_trait]
impl Provider for MemoryProvider {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn list(&self, owner: Option<&str>) -> Result<Vec<Record>, ProviderError> {
        let mut records: Vec<Record> = self
            .lock()
            .records
            .values()
            .filter(|r| owner.is_none_or(|o| r.owner == o))
            .cloned()
            .collect();
        records.sort_by_key(|r| (r.workspace.created_at, r.workspace.id));
        Ok(records)
    }

    async fn get(&self, id: Uuid) -> Result<Record, ProviderError> {
        self.lock()
            .records
            .get(&id)
            .cloned()
            .ok_or(ProviderError::NotFound)
    }

    async fn create(
        &self,
        owner: &str,
        project_id: Uuid,
        spec: NewWorkspace,
    ) -> Result<Record, ProviderError> {
        spec.hardware.validate().map_err(ProviderError::Invalid)?;
        let record = Record::creating(owner, project_id, spec);
        let id = record.id();
        self.insert(record.clone());
        let _ = self.events.send(StateChange {
            id,
            status: WorkspaceStatus::Creating,
            message: None,
        });
        // Provisioning is instant here; the caller still sees `creating` first, as with a real
        // provider.
        self.transition(id, None, WorkspaceStatus::Stopped, None)?;
        Ok(record)
    }

    async fn update(&self, id: Uuid, update: UpdateWorkspace) -> Result<Record, ProviderError> {
        let mut state = self.lock();
        let record = state.records.get_mut(&id).ok_or(ProviderError::NotFound)?;
        update
            .apply_to(&mut record.workspace)
            .map_err(ProviderError::Invalid)?;
        record.workspace.updated_at = OffsetDateTime::now_utc();
        Ok(record.clone())
    }

    async fn delete(&self, id: Uuid) -> Result<(), ProviderError> {
        if self.status(id).is_some_and(WorkspaceStatus::is_stoppable) {
            self.stop(id).await?;
        }
        self.lock()
            .records
            .remove(&id)
            .map(drop)
            .ok_or(ProviderError::NotFound)
    }

    async fn start(&self, id: Uuid) -> Result<Endpoint, ProviderError> {
        self.starts.fetch_add(1, Ordering::SeqCst);
        self.transition(
            id,
            Some(&WorkspaceStatus::is_startable),
            WorkspaceStatus::Starting,
            None,
        )?;
        let (delay, next) = {
            let mut state = self.lock();
            let next = std::mem::replace(&mut state.next_start, NextStart::Succeed);
            (state.start_delay, next)
        };
        tokio::time::sleep(delay).await;
        match next {
            NextStart::Succeed => {
                // A stop during the delay wins: the workspace is no longer `starting`.
                self.transition(
                    id,
                    Some(&|s| s == WorkspaceStatus::Starting),
                    WorkspaceStatus::Running,
                    None,
                )
                .map_err(|_| ProviderError::StartFailed("start cancelled".into()))?;
                let base_url = self.lock().base_url.clone();
                Ok(Endpoint { base_url })
            }
            NextStart::Fail(message) => {
                let _ = self.transition(
                    id,
                    Some(&|s| s == WorkspaceStatus::Starting),
                    WorkspaceStatus::Error,
                    Some(message.clone()),
                );
                Err(ProviderError::StartFailed(message))
            }
            NextStart::Hang => std::future::pending().await,
        }
    }

    async fn stop(&self, id: Uuid) -> Result<(), ProviderError> {
        self.stops.fetch_add(1, Ordering::SeqCst);
        self.transition(
            id,
            Some(&WorkspaceStatus::is_stoppable),
            WorkspaceStatus::Stopping,
            None,
        )?;
        let delay = self.lock().stop_delay;
        tokio::time::sleep(delay).await;
        self.transition(id, None, WorkspaceStatus::Stopped, None)
    }

    fn endpoint(&self, id: Uuid) -> Option<Endpoint> {
        let state = self.lock();
        let record = state.records.get(&id)?;
        (record.status() == WorkspaceStatus::Running).then(|| Endpoint {
            base_url: state.base_url.clone(),
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.events.subscribe()
    }

    async fn recover(&self) -> Result<(), ProviderError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn start_takes_the_delay_and_publishes_each_state() {
        let provider = MemoryProvider::new();
        let mut events = provider.subscribe();
        let record = provider
            .create("alice", Uuid::new_v4(), NewWorkspace::default())
            .await
            .unwrap();
        let id = record.id();
        provider.set_start_delay(Duration::from_secs(30));
        let started = tokio::time::Instant::now();
        provider.start(id).await.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(30));
        provider.stop(id).await.unwrap();
        let mut seen = Vec::new();
        while let Ok(change) = events.try_recv() {
            seen.push(change.status);
        }
        use WorkspaceStatus::*;
        assert_eq!(
            seen,
            [Creating, Stopped, Starting, Running, Stopping, Stopped]
        );
        assert_eq!((provider.start_calls(), provider.stop_calls()), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn scripted_failures_and_deaths() {
        let provider = MemoryProvider::new();
        let id = provider
            .create("alice", Uuid::new_v4(), NewWorkspace::default())
            .await
            .unwrap()
            .id();
        provider.fail_next_start("boom");
        assert_eq!(
            provider.start(id).await,
            Err(ProviderError::StartFailed("boom".into()))
        );
        assert_eq!(provider.status(id), Some(WorkspaceStatus::Error));

        provider.hang_next_start();
        let hung = tokio::time::timeout(Duration::from_secs(600), provider.start(id)).await;
        assert!(hung.is_err());
        provider.stop(id).await.unwrap();

        provider.set_base_url("http://127.0.0.1:4242");
        let endpoint = provider.start(id).await.unwrap();
        assert_eq!(endpoint.base_url, "http://127.0.0.1:4242");
        assert_eq!(provider.endpoint(id), Some(endpoint));
        provider.kill(id, "gone").unwrap();
        assert_eq!(provider.endpoint(id), None);
        assert_eq!(
            provider.stop(id).await,
            Err(ProviderError::InvalidState(WorkspaceStatus::Error))
        );
    }
}
