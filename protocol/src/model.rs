//! The workspace object as the Aether REST API documents it, with our counting extensions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// The lifecycle state of a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceStatus {
    Creating,
    Stopped,
    Starting,
    Running,
    Stopping,
    Error,
    StopFailed,
}

impl WorkspaceStatus {
    /// Every state, in lifecycle order.
    pub const ALL: [WorkspaceStatus; 7] = [
        WorkspaceStatus::Creating,
        WorkspaceStatus::Stopped,
        WorkspaceStatus::Starting,
        WorkspaceStatus::Running,
        WorkspaceStatus::Stopping,
        WorkspaceStatus::Error,
        WorkspaceStatus::StopFailed,
    ];

    /// The name used on the wire (`stop_failed`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            WorkspaceStatus::Creating => "creating",
            WorkspaceStatus::Stopped => "stopped",
            WorkspaceStatus::Starting => "starting",
            WorkspaceStatus::Running => "running",
            WorkspaceStatus::Stopping => "stopping",
            WorkspaceStatus::Error => "error",
            WorkspaceStatus::StopFailed => "stop_failed",
        }
    }

    /// Whether `POST /start` (or a connect) may start it from here.
    pub const fn is_startable(self) -> bool {
        matches!(
            self,
            WorkspaceStatus::Stopped | WorkspaceStatus::Error | WorkspaceStatus::Creating
        )
    }

    /// Whether `POST /stop` may stop it from here.
    pub const fn is_stoppable(self) -> bool {
        matches!(
            self,
            WorkspaceStatus::Running | WorkspaceStatus::Starting | WorkspaceStatus::StopFailed
        )
    }
}

impl fmt::Display for WorkspaceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Returned by [`WorkspaceStatus::from_str`] for a name that is not a state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStatus(pub String);

impl fmt::Display for UnknownStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown workspace status {:?}", self.0)
    }
}

impl std::error::Error for UnknownStatus {}

impl FromStr for WorkspaceStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WorkspaceStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// CPU class of a workspace VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CpuKind {
    #[default]
    Shared,
    Performance,
}

/// The hardware of a workspace. Create defaults: shared, 2 CPUs, 2048 MB, 10 GB, no GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hardware {
    #[serde(default)]
    pub cpu_kind: CpuKind,
    #[serde(default = "Hardware::default_cpus")]
    pub cpus: u32,
    #[serde(default = "Hardware::default_memory_mb")]
    pub memory_mb: u32,
    #[serde(default = "Hardware::default_volume_size_gb")]
    pub volume_size_gb: u32,
    #[serde(default)]
    pub gpu_kind: Option<String>,
}

impl Hardware {
    pub const CPUS: std::ops::RangeInclusive<u32> = 1..=8;
    pub const MEMORY_MB: std::ops::RangeInclusive<u32> = 256..=16384;
    pub const VOLUME_SIZE_GB: std::ops::RangeInclusive<u32> = 1..=500;

    fn default_cpus() -> u32 {
        2
    }
    fn default_memory_mb() -> u32 {
        2048
    }
    fn default_volume_size_gb() -> u32 {
        10
    }

    /// Checks the documented ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !Self::CPUS.contains(&self.cpus) {
            return Err(format!("cpus must be between 1 and 8, got {}", self.cpus));
        }
        if !Self::MEMORY_MB.contains(&self.memory_mb) {
            return Err(format!(
                "memory_mb must be between 256 and 16384, got {}",
                self.memory_mb
            ));
        }
        if !Self::VOLUME_SIZE_GB.contains(&self.volume_size_gb) {
            return Err(format!(
                "volume_size_gb must be between 1 and 500, got {}",
                self.volume_size_gb
            ));
        }
        Ok(())
    }

    /// The CLI's short form, `2cpu/2048mb`.
    pub fn short(&self) -> String {
        format!("{}cpu/{}mb", self.cpus, self.memory_mb)
    }
}

impl Default for Hardware {
    fn default() -> Self {
        Hardware {
            cpu_kind: CpuKind::Shared,
            cpus: Self::default_cpus(),
            memory_mb: Self::default_memory_mb(),
            volume_size_gb: Self::default_volume_size_gb(),
            gpu_kind: None,
        }
    }
}

/// A workspace as the REST API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workspace {
    pub id: Uuid,
    pub project_id: Uuid,
    pub status: WorkspaceStatus,
    pub hardware: Hardware,
    #[serde(default)]
    pub keep_active: bool,
    #[serde(default)]
    pub machine_id: Option<String>,
    #[serde(default)]
    pub private_ip: Option<String>,
    #[serde(default)]
    pub git_ref: Option<String>,
    #[serde(default)]
    pub preview_token: Option<String>,
    #[serde(default)]
    pub error_message: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Our extension: counted connections open now, across every gateway replica.
    #[serde(default)]
    pub active_connections: u32,
    /// Our extension: agent tasks running in the workspace now.
    #[serde(default)]
    pub active_tasks: u32,
    /// Our extension: per-workspace idle timeout override, in seconds (`null`: the gateway default).
    #[serde(default)]
    pub idle_timeout_secs: Option<u64>,
    /// Our extension: when the idle timer will stop the workspace, if it is running.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub idle_stop_at: Option<OffsetDateTime>,
}
