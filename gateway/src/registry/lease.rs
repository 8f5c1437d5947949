//! Leases: a connection's claim that its workspace is in use.
//!
//! A [`Lease`] is an RAII guard. Creating one counts a connection on the workspace and wakes its
//! owner task (which cancels any pending idle stop); dropping it uncounts the connection, however
//! the session ended — a clean close, an error, a panic or a cancelled task. Counting is a
//! `watch` channel rather than an atomic so the owner task is *told* about every change instead of
//! having to poll, and so the update is synchronous, which `Drop` requires.

use std::sync::Arc;

use super::Handle;

/// A counted connection on a workspace; see the module docs.
#[must_use = "a lease counts only while it is held"]
pub struct Lease {
    handle: Arc<Handle>,
}

impl Lease {
    pub(super) fn new(handle: Arc<Handle>) -> Lease {
        handle.connections.send_modify(|n| *n += 1);
        Lease { handle }
    }

    /// The workspace this lease is on.
    pub fn handle(&self) -> &Arc<Handle> {
        &self.handle
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.handle
            .connections
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("workspace", &self.handle.id)
            .finish()
    }
}
