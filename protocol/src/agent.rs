//! The `agent` channel: AI-agent tasks running inside the workspace.
//!
//! Task lifecycle: queued → provisioning → running ↔ awaiting_input → completed | failed | aborted.
//! Every server message names its `taskId`, so one socket can follow several tasks.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Client → server messages on the `agent` channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum AgentClient {
    Prompt {
        prompt: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task_id: Option<String>,
    },
    Settings {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
    },
    Abort {
        task_id: String,
    },
    ToolResponse {
        tool_call_id: String,
        result: Value,
    },
    Approve {
        request_id: String,
    },
    Reject {
        request_id: String,
    },
}

/// Where a task is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Queued,
    Provisioning,
    Running,
    AwaitingInput,
    Completed,
    Failed,
    Aborted,
}

impl TaskStatus {
    /// Whether the task still counts as activity for the idle timer.
    pub const fn is_active(self) -> bool {
        !matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Aborted
        )
    }
}

/// Server → client messages on the `agent` channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum AgentServer {
    /// Incremental output of a task, in order.
    Text {
        task_id: String,
        content: String,
    },
    Thinking {
        task_id: String,
        content: String,
    },
    ToolInvocation {
        task_id: String,
        tool_call_id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    ToolResult {
        task_id: String,
        tool_call_id: String,
        result: Value,
    },
    PermissionRequest {
        task_id: String,
        request_id: String,
        description: String,
    },
    /// A lifecycle transition. `exitCode` is set when the task's process ended.
    Status {
        task_id: String,
        status: TaskStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Our extension: the settings now in force (reply to `settings`).
    Settings {
        #[serde(default)]
        provider: Option<String>,
        #[serde(default)]
        model: Option<String>,
    },
}
