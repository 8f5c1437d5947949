//! WebSocket sessions: `GET /workspaces/{id}/ws` (and `GET /ws?workspace_id=…`).
//!
//! A session goes through three phases, each in its own module:
//!
//! 1. [`handshake`] — before the 101: authenticate, check `Origin`, authorize (the user must own
//!    the workspace; anything else is 404), validate the upgrade, answer 101 echoing `Bearer` or
//!    `access_token` (never the token), and leave the session for the connection's task to run
//!    ([`SessionSlot`], which also sends the 101 with the session's first frame).
//! 2. [`wake`] — tell the client the workspace's state at once; if it is not running, ask its
//!    owner to wake it and stream every transition; hold the client's messages (bounded) meanwhile.
//! 3. [`relay`] — once running, connect to the workspace service and relay both ways, in order,
//!    with keepalive, size limits and write timeouts; tell the client if the workspace goes away.
//!
//! [`socket`] holds what every phase needs: the client socket, its keepalive state, and closing
//! with a code; [`upstream`] opens the connections to workspace services and hands one a client
//! left to the next client.

pub mod handshake;
mod readahead;
mod relay;
mod slot;
mod socket;
pub mod upstream;
mod wake;

use std::time::Duration;

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub use handshake::{Query, ws_route, ws_route_by_query};
pub use slot::{Corked, SessionSlot};

/// Limits and timers of a session.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often the gateway pings the client.
    pub ping_interval: Duration,
    /// How long without a pong (or any frame) before the client counts as gone.
    pub pong_timeout: Duration,
    /// How long one write to the client may block before it counts as too slow (4008).
    pub write_timeout: Duration,
    /// Largest message accepted from a client (1009 above it).
    pub max_message: usize,
    /// Largest message accepted from the workspace service. Larger than the client's limit on
    /// purpose: a `files` `read` of a file up to the documented 100 MB is one JSON message of
    /// about 134 MB (base64), which the relay must pass on whole.
    pub max_backend_message: usize,
    /// Messages a client may send while its workspace wakes, held and delivered in order.
    pub wake_queue_messages: usize,
    /// Bytes a client may send while its workspace wakes.
    pub wake_queue_bytes: usize,
    /// tungstenite's read buffer per socket. Its default (128 KiB) would dominate an idle
    /// session's memory; messages larger than this still work, the buffer grows as needed, and
    /// the sockets read ahead in large chunks underneath (see `readahead`), so a small buffer
    /// does not mean small reads.
    pub read_buffer_size: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ping_interval: Duration::from_secs(45),
            pong_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(30),
            max_message: protocol::MAX_MESSAGE_SIZE,
            max_backend_message: 140 << 20,
            wake_queue_messages: 256,
            wake_queue_bytes: 1 << 20,
            read_buffer_size: 512,
        }
    }
}

impl Settings {
    /// tungstenite's configuration for the client's socket.
    pub fn client_ws_config(&self) -> WebSocketConfig {
        self.base_ws_config()
            .max_message_size(Some(self.max_message))
            .max_frame_size(Some(self.max_message))
            // Whatever the service may send must fit on its way out.
            .max_write_buffer_size(self.max_backend_message + WRITE_SLACK)
    }

    /// tungstenite's configuration for the socket to the workspace service.
    pub fn backend_ws_config(&self) -> WebSocketConfig {
        self.base_ws_config()
            .max_message_size(Some(self.max_backend_message))
            .max_frame_size(Some(self.max_backend_message))
            .max_write_buffer_size(self.max_message + WRITE_SLACK)
    }

    fn base_ws_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_size)
            // The relay feeds a burst of frames and flushes once; frames are written out as soon
            // as this much is buffered. Small, because the buffer keeps its capacity.
            .write_buffer_size(WRITE_BUFFER)
    }
}

/// Bytes buffered before tungstenite writes (see `base_ws_config`).
const WRITE_BUFFER: usize = 8 * 1024;
/// Room in the write buffer beyond one largest message: a batch may add one more frame.
const WRITE_SLACK: usize = 2 * WRITE_BUFFER + 64 * 1024;
