//! Leases: a connection's claim that its workspace is in use.
//!
//! A [`Lease`] is an RAII guard. Creating one counts a connection on the workspace; dropping it
//! uncounts the connection, however the session ended — a clean close, an error, a panic or a
//! cancelled task. Counting is a `watch` channel rather than an atomic so the owner task is
//! *told* instead of having to poll, and so the update is synchronous, which `Drop` requires.
//!
//! The owner is woken only when the count leaves or reaches zero: the first lease cancels any
//! pending idle stop and the last one arms the timer, and nothing the owner decides depends on a
//! change between two non-zero counts. A busy workspace's visits then cost its owner nothing
//! (two task wake-ups per connect before).
//!
//! The count carries the instant of the last release with it: a visit that opens and closes
//! before the owner task runs leaves the count where it was, but still moves the idle timer.

use std::sync::Arc;

use tokio::time::Instant;

use super::Handle;

/// A workspace's counted connections, as its owner task sees them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Connections {
    /// Leases held now.
    pub open: u32,
    /// When the last lease was released, if one ever was.
    pub last_closed: Option<Instant>,
}

/// A counted connection on a workspace; see the module docs.
#[must_use = "a lease counts only while it is held"]
pub struct Lease {
    handle: Arc<Handle>,
}

impl Lease {
    pub(super) fn new(handle: Arc<Handle>) -> Lease {
        handle.connections.send_if_modified(|c| {
            c.open += 1;
            c.open == 1
        });
        Lease { handle }
    }

    /// The workspace this lease is on.
    pub fn handle(&self) -> &Arc<Handle> {
        &self.handle
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.handle.connections.send_if_modified(|c| {
            c.open = c.open.saturating_sub(1);
            c.last_closed = Some(Instant::now());
            c.open == 0
        });
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("workspace", &self.handle.id)
            .finish()
    }
}
