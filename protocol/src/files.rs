//! The `files` channel: request/response file operations rooted at the workspace volume, and
//! pushed watch events.
//!
//! Every request carries a `requestId`; the reply has the same `type` and `requestId`, and
//! either `data` or `error`. Watch events (`change`) are pushed without a `requestId`.

use serde::{Deserialize, Serialize};

/// Largest file the channel reads or writes (100 MB).
pub const MAX_FILE_SIZE: u64 = 100 * 1024 * 1024;

/// Directories whose changes are never reported by the watcher.
pub const WATCH_IGNORED: [&str; 6] = [
    "node_modules",
    ".git",
    ".next",
    "dist",
    "build",
    "__pycache__",
];

/// How file content is encoded in `read` replies and `write` requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Encoding {
    #[default]
    #[serde(rename = "utf-8")]
    Utf8,
    #[serde(rename = "base64")]
    Base64,
}

/// Client → server requests on the `files` channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum FilesClient {
    List {
        request_id: String,
        #[serde(default)]
        path: String,
    },
    Read {
        request_id: String,
        path: String,
    },
    /// Creates the file and its parent directories.
    Write {
        request_id: String,
        path: String,
        content: String,
        #[serde(default)]
        encoding: Encoding,
    },
    Delete {
        request_id: String,
        path: String,
    },
    Mkdir {
        request_id: String,
        path: String,
    },
    Rename {
        request_id: String,
        path: String,
        new_path: String,
    },
}

impl FilesClient {
    /// The request's id, for the reply.
    pub fn request_id(&self) -> &str {
        match self {
            FilesClient::List { request_id, .. }
            | FilesClient::Read { request_id, .. }
            | FilesClient::Write { request_id, .. }
            | FilesClient::Delete { request_id, .. }
            | FilesClient::Mkdir { request_id, .. }
            | FilesClient::Rename { request_id, .. } => request_id,
        }
    }
}

/// Kind of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    File,
    Directory,
}

/// One entry of a `list` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: EntryKind,
    pub size: u64,
    /// Modification time, milliseconds since the Unix epoch.
    pub modified: u64,
}

/// The `data` of a `read` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileContent {
    pub content: String,
    pub encoding: Encoding,
}

/// What happened to a watched path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeAction {
    Create,
    Modify,
    Delete,
}

/// Server → client messages on the `files` channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum FilesServer {
    List {
        request_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<Vec<DirEntry>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Read {
        request_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<FileContent>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Write {
        request_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Delete {
        request_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Mkdir {
        request_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Rename {
        request_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A watch event; `path` is relative to the volume.
    Change { path: String, action: ChangeAction },
}
