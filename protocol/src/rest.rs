//! REST request and response bodies.

use serde::{Deserialize, Serialize};

use crate::model::{CpuKind, Hardware, Workspace, WorkspaceStatus};

/// `GET /workspaces`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceList {
    pub workspaces: Vec<Workspace>,
}

/// `POST /projects/{project_id}/workspaces`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CreateWorkspace {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<Hardware>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_active: Option<bool>,
    /// Our extension: a per-workspace idle timeout, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
}

/// `PATCH /workspaces/{id}`: flat fields, each optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UpdateWorkspace {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_active: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_kind: Option<CpuKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_size_gb: Option<u32>,
    /// `null` clears the GPU; absent leaves it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub gpu_kind: Option<Option<String>>,
    /// Our extension: `null` returns to the gateway default; absent leaves it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub idle_timeout_secs: Option<Option<u64>>,
}

impl UpdateWorkspace {
    /// Applies the fields that are present to `workspace`, checking the resulting hardware
    /// against the documented ranges; on an error `workspace` is left as it was. Does not touch
    /// `updated_at`: that is the store's business.
    pub fn apply_to(&self, workspace: &mut Workspace) -> Result<(), String> {
        let mut hardware = workspace.hardware.clone();
        if let Some(cpu_kind) = self.cpu_kind {
            hardware.cpu_kind = cpu_kind;
        }
        if let Some(cpus) = self.cpus {
            hardware.cpus = cpus;
        }
        if let Some(memory_mb) = self.memory_mb {
            hardware.memory_mb = memory_mb;
        }
        if let Some(volume_size_gb) = self.volume_size_gb {
            hardware.volume_size_gb = volume_size_gb;
        }
        if let Some(gpu_kind) = &self.gpu_kind {
            hardware.gpu_kind = gpu_kind.clone();
        }
        hardware.validate()?;
        workspace.hardware = hardware;
        if let Some(keep_active) = self.keep_active {
            workspace.keep_active = keep_active;
        }
        if let Some(idle_timeout_secs) = self.idle_timeout_secs {
            workspace.idle_timeout_secs = idle_timeout_secs;
        }
        Ok(())
    }
}

/// `POST /workspaces/{id}/start` and `/stop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusBody {
    pub status: WorkspaceStatus,
}

/// Every error: `{"error":"<message>"}`; 401 is always `{"error":"Unauthorized"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// Our extension: `POST /auth/local-token` on a gateway that allows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBody {
    pub token: String,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
    pub user: String,
}

/// The workspace service's `GET /status`: what the gateway's idle timer needs to know even when
/// no client is connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// Agent tasks not yet completed, failed or aborted.
    pub active_tasks: u32,
    /// Terminal sessions alive.
    pub terminal_sessions: u32,
    /// WebSocket connections open.
    pub sockets: u32,
}

mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<T: Serialize, S: Serializer>(
        value: &Option<Option<T>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(inner) => inner.serialize(serializer),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(deserializer).map(Some)
    }
}
