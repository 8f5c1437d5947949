//! The `workspace` channel: our addition to the protocol.
//!
//! The gateway uses it to tell a client where its workspace is in its lifecycle while it waits
//! (`status`, `error`), and clients use it to probe the whole path (`ping` is relayed to the
//! workspace service, which answers `pong` with the same fields). Existing Aether clients can
//! ignore the channel.
//!
//! Two messages are between the gateway and the workspace service only, for reusing one service
//! connection for successive clients: `release` (the client is gone: detach its terminals, drop
//! its subscriptions, finish its file operations, then answer `released`, after everything that
//! was queued for it) and `attach` (a new client: subscribe as a new connection would, with the
//! same snapshots). The gateway refuses both from clients ([`ControlClient::is_backend_only`]).

use serde::{Deserialize, Serialize};

use crate::model::WorkspaceStatus;

/// Client → server messages on the `workspace` channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum ControlClient {
    /// Optional first message. The gateway decides counting at connect time from the `counts`
    /// query parameter; `hello` is accepted (and ignored by the relay) so that clients can send the
    /// same intent in-band.
    Hello {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        counts: Option<bool>,
    },
    /// A latency probe, answered by the workspace service with a `pong` of the same fields.
    Ping {
        seq: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<String>,
    },
    /// Gateway → service: the client on this connection is gone; answered with `released`.
    Release,
    /// Gateway → service: a new client takes over this released connection.
    Attach,
}

impl ControlClient {
    /// The `type`s on the `workspace` channel that only the gateway may send.
    pub const BACKEND_ONLY: [&'static str; 2] = ["release", "attach"];

    /// Whether a frame with these tags is one only the gateway may send.
    pub fn is_backend_only(channel: &str, kind: &str) -> bool {
        channel == "workspace" && Self::BACKEND_ONLY.contains(&kind)
    }
}

/// Why a wake or a session failed, as a stable code a client can branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The provider could not start the workspace.
    StartFailed,
    /// The workspace did not become ready within the boot budget.
    StartTimeout,
    /// The workspace does not exist (any more).
    NotFound,
    /// The workspace is stopped and the client asked not to wake it, or it stopped under the client.
    Stopped,
    /// The workspace service went away while the client was connected.
    BackendLost,
    /// The client's messages queued during a wake exceeded the bound.
    QueueFull,
    /// The gateway is shutting down.
    ShuttingDown,
    /// Anything else on the gateway's side.
    Internal,
}

/// Server → client messages on the `workspace` channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum ControlServer {
    /// The workspace's state: sent at once on connect, then on every transition.
    Status {
        workspace_id: String,
        status: WorkspaceStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// Time since this client connected, for a waiting indicator.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        elapsed_ms: Option<u64>,
    },
    /// A failure, with a stable code; a close frame usually follows.
    Error { code: ErrorCode, message: String },
    /// The answer to `ping`.
    Pong {
        seq: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<String>,
    },
    /// Service → gateway: the answer to `release`; nothing for the old client follows it.
    Released,
}
