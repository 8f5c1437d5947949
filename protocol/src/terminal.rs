//! The `terminal` channel: PTY sessions, several per socket.
//!
//! Output is sequence-numbered by byte offset: `seq` on an `output` is the number of bytes the
//! session had produced once that chunk ended. A client that re-attaches with `create {sessionId,
//! lastSeq}` is sent only the bytes after `lastSeq`; if some of them already left the session's
//! ring buffer, a `lost` marker comes first and says how many.

use serde::{Deserialize, Serialize};

/// Default terminal width when `create` gives none.
pub const DEFAULT_COLS: u16 = 80;
/// Default terminal height when `create` gives none.
pub const DEFAULT_ROWS: u16 = 24;

/// Client → server messages on the `terminal` channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum TerminalClient {
    /// Start a session, or re-attach to a live one with the same id.
    Create {
        session_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cols: Option<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rows: Option<u16>,
        /// Our extension: the last `seq` this client saw; replay only what came after.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_seq: Option<u64>,
    },
    Input {
        session_id: String,
        data: String,
    },
    Resize {
        session_id: String,
        cols: u16,
        rows: u16,
    },
    /// End the session and its process.
    Close {
        session_id: String,
    },
}

/// Server → client messages on the `terminal` channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum TerminalServer {
    /// Our extension: the reply to `create`, saying whether it re-attached to a live session.
    Created {
        session_id: String,
        resumed: bool,
        /// The session's output offset at the time of the reply (after any replay).
        seq: u64,
    },
    Output {
        session_id: String,
        data: String,
        /// Byte offset of the end of this chunk in the session's output.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    /// Our extension: `bytes` of output were lost to the ring buffer's size before a replay.
    Lost { session_id: String, bytes: u64 },
    /// The session ended; `exitCode` is null when its process was killed by a signal.
    Close {
        session_id: String,
        exit_code: Option<i32>,
    },
}
