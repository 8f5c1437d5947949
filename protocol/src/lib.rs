//! The Aether wire protocol as Rust types.
//!
//! Every component — the gateway, the workspace service, the `aether` CLI, the web page (through
//! the JSON it is tested against) and the load harness — speaks these types, so the wire format
//! lives in exactly one place. The crate is pure data: serde types, parsing and encoding, no tokio
//! and no sockets.
//!
//! # Layout
//!
//! - [`message`]: the envelope. [`ClientMessage`] and [`ServerMessage`] are tagged by `channel`,
//!   then by `type`, with every other field flat, as Aether documents it. [`Peek`] reads only the
//!   two tags, which is all a relay needs.
//! - [`terminal`], [`files`], [`agent`], [`ports`]: the documented channels.
//! - [`control`]: our sixth channel, `workspace`: wake status, errors, `hello`, `ping`/`pong`.
//! - [`close`]: the close-code table and what each code tells a client to do.
//! - [`model`]: the workspace object, its states and hardware.
//! - [`rest`]: REST request and response bodies.
//!
//! Unknown extra fields are tolerated everywhere (old clients keep working when we add fields);
//! missing required fields are errors.

pub mod agent;
pub mod close;
pub mod control;
pub mod files;
pub mod message;
pub mod model;
pub mod ports;
pub mod rest;
pub mod terminal;

pub use close::CloseCode;
pub use message::{ClientMessage, ErrorFrame, Peek, ServerMessage};
pub use model::{Hardware, Workspace, WorkspaceStatus};

/// Largest WebSocket message any Aether component accepts (1 MiB). Bigger ones close with 1009.
pub const MAX_MESSAGE_SIZE: usize = 1 << 20;
