//! The `ports` channel: listening ports found inside the workspace.

use serde::{Deserialize, Serialize};

/// Ports never reported: SSH and the workspace service's own.
pub const HIDDEN_PORTS: [u16; 3] = [22, 2222, 3001];

/// Client → server messages on the `ports` channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum PortsClient {
    /// End the process listening on `port`.
    Kill { port: u16 },
}

/// Server → client messages on the `ports` channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum PortsServer {
    Open {
        port: u16,
        pid: Option<u32>,
        process: Option<String>,
    },
    Close {
        port: u16,
    },
}
