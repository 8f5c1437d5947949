//! Workspace providers: where workspaces live and how they start and stop.
//!
//! The session code (wake, relay, idle stop) only ever talks to a [`Provider`]. The embedded
//! default is [`local`]: workspace-service processes on this machine, with the registry in an
//! embedded database. Remote providers (an Aether-compatible control plane, Fly Machines) slot in
//! behind the same trait.
//!
//! # Contract
//!
//! - Records belong to an `owner` (the JWT `sub` that created them); the provider stores it but
//!   never checks it — authorization is the gateway's job.
//! - `start` and `stop` resolve when the transition is over, and publish every state they pass
//!   through on [`Provider::subscribe`]. The gateway serializes them per workspace (one owner task
//!   each), so a provider never sees two concurrent transitions of one workspace from one gateway.
//! - A workspace that changes state by itself (its service process dies, a VM is stopped from
//!   outside) is published too, so sessions attached to it learn of it.
//! - Time comes from `tokio::time` only, so tests can pause it.

pub mod local;
#[doc(hidden)]
pub mod memory;

use async_trait::async_trait;
use protocol::WorkspaceStatus;
use protocol::model::Hardware;
use protocol::rest::UpdateWorkspace;
use tokio::sync::broadcast;
use uuid::Uuid;

/// A workspace as a provider stores it: the REST object (without the gateway's live counting
/// fields) and its owner.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub workspace: protocol::Workspace,
    /// The `sub` of the user who created it.
    pub owner: String,
}

impl Record {
    /// A new workspace of `owner`, `creating`, with a fresh id: what `create` stores first.
    /// Validates nothing; providers check `spec.hardware` before.
    pub fn creating(owner: &str, project_id: Uuid, spec: NewWorkspace) -> Record {
        let now = time::OffsetDateTime::now_utc();
        Record {
            workspace: protocol::Workspace {
                id: Uuid::new_v4(),
                project_id,
                status: WorkspaceStatus::Creating,
                hardware: spec.hardware,
                keep_active: spec.keep_active,
                machine_id: None,
                private_ip: None,
                git_ref: None,
                preview_token: None,
                error_message: None,
                created_at: now,
                updated_at: now,
                active_connections: 0,
                active_tasks: 0,
                idle_timeout_secs: spec.idle_timeout_secs,
                idle_stop_at: None,
            },
            owner: owner.to_owned(),
        }
    }

    pub fn id(&self) -> Uuid {
        self.workspace.id
    }

    pub fn status(&self) -> WorkspaceStatus {
        self.workspace.status
    }
}

/// What `create` needs beyond the owner and project.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewWorkspace {
    pub hardware: Hardware,
    pub keep_active: bool,
    pub idle_timeout_secs: Option<u64>,
}

/// Where a running workspace's service listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Base URL of the workspace service, e.g. `http://127.0.0.1:43121`. Its WebSocket is at
    /// `/ws` and its status at `/status` (see the `workspace` crate).
    pub base_url: String,
}

impl Endpoint {
    /// The WebSocket URL of the service (`ws://…/ws`).
    pub fn ws_url(&self) -> String {
        let rest = self
            .base_url
            .strip_prefix("http://")
            .map(|r| format!("ws://{r}"))
            .or_else(|| {
                self.base_url
                    .strip_prefix("https://")
                    .map(|r| format!("wss://{r}"))
            })
            .unwrap_or_else(|| self.base_url.clone());
        format!("{}/ws", rest.trim_end_matches('/'))
    }

    /// The status URL of the service (`http://…/status`).
    pub fn status_url(&self) -> String {
        format!("{}/status", self.base_url.trim_end_matches('/'))
    }
}

/// A state a workspace passed through, published on [`Provider::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    pub id: Uuid,
    pub status: WorkspaceStatus,
    /// Why, for `error` and `stop_failed`.
    pub message: Option<String>,
}

/// Why a provider call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("workspace not found")]
    NotFound,
    /// The call does not fit the workspace's state (start while running, …).
    #[error("workspace is {0}")]
    InvalidState(WorkspaceStatus),
    /// A request the provider refuses (bad hardware, …); the message names the field.
    #[error("{0}")]
    Invalid(String),
    #[error("start failed: {0}")]
    StartFailed(String),
    #[error("stop failed: {0}")]
    StopFailed(String),
    /// The provider's own storage or backend failed.
    #[error("provider backend: {0}")]
    Backend(String),
}

/// Where workspaces live. See the module docs for the contract.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// A short name for logs and `/metrics` (`local`, `aether`, `fly`).
    fn name(&self) -> &'static str;

    /// Every workspace, or those of one owner.
    async fn list(&self, owner: Option<&str>) -> Result<Vec<Record>, ProviderError>;

    async fn get(&self, id: Uuid) -> Result<Record, ProviderError>;

    /// Creates a workspace; it is returned as `creating` and moves to `stopped` once provisioned.
    async fn create(
        &self,
        owner: &str,
        project_id: Uuid,
        spec: NewWorkspace,
    ) -> Result<Record, ProviderError>;

    async fn update(&self, id: Uuid, update: UpdateWorkspace) -> Result<Record, ProviderError>;

    /// Destroys the workspace and its volume (stopping it first if it runs).
    async fn delete(&self, id: Uuid) -> Result<(), ProviderError>;

    /// Starts the workspace and resolves once it is `running`, with its endpoint; publishes
    /// `starting`, then `running` or `error`. Callers bound it with their boot budget: dropping
    /// the future must leave the workspace in a state that `stop` can clean up.
    async fn start(&self, id: Uuid) -> Result<Endpoint, ProviderError>;

    /// Stops the workspace and resolves once it is `stopped`; publishes `stopping`, then
    /// `stopped` or `stop_failed`.
    async fn stop(&self, id: Uuid) -> Result<(), ProviderError>;

    /// Where the workspace's service listens, if it is running.
    fn endpoint(&self, id: Uuid) -> Option<Endpoint>;

    /// Every state change of every workspace, from now on.
    fn subscribe(&self) -> broadcast::Receiver<StateChange>;

    /// Called once at start-up: reconcile stored states with what is really running (a gateway
    /// that died leaves `running` or `starting` records behind).
    async fn recover(&self) -> Result<(), ProviderError>;
}
