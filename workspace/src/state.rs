//! What every connection shares: the channels' state, the socket count, shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use protocol::rest::ServiceStatus;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::Agent;
use crate::config::Config;
use crate::files::Files;
use crate::outbox::SocketId;
use crate::ports::Ports;
use crate::terminal::Terminals;

/// Shared by the accept loop, every connection and the background tasks.
pub(crate) struct State {
    pub(crate) config: Config,
    pub(crate) terminals: Arc<Terminals>,
    pub(crate) agent: Arc<Agent>,
    pub(crate) ports: Arc<Ports>,
    pub(crate) files: Arc<Files>,
    /// Cancelled on SIGTERM: sockets close with 1001, loops end.
    pub(crate) shutdown: CancellationToken,
    /// Connections, sockets and per-request tasks, waited for (bounded) at shutdown.
    pub(crate) tracker: TaskTracker,
    sockets: AtomicUsize,
    next_socket: AtomicU64,
}

impl State {
    pub(crate) fn new(
        config: Config,
        terminals: Arc<Terminals>,
        agent: Arc<Agent>,
        ports: Arc<Ports>,
        files: Arc<Files>,
    ) -> Arc<State> {
        Arc::new(State {
            config,
            terminals,
            agent,
            ports,
            files,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            sockets: AtomicUsize::new(0),
            next_socket: AtomicU64::new(1),
        })
    }

    /// Counts an open socket until the lease drops.
    pub(crate) fn socket_lease(self: &Arc<Self>) -> SocketLease {
        self.sockets.fetch_add(1, Ordering::AcqRel);
        SocketLease {
            state: self.clone(),
            id: self.next_socket.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The body of `GET /status`.
    pub(crate) fn status(&self) -> ServiceStatus {
        ServiceStatus {
            active_tasks: u32::try_from(self.agent.active_tasks()).unwrap_or(u32::MAX),
            terminal_sessions: u32::try_from(self.terminals.len()).unwrap_or(u32::MAX),
            sockets: u32::try_from(self.sockets.load(Ordering::Acquire)).unwrap_or(u32::MAX),
        }
    }
}

/// One open socket, counted for `/status` while it lives.
pub(crate) struct SocketLease {
    state: Arc<State>,
    id: SocketId,
}

impl SocketLease {
    pub(crate) fn id(&self) -> SocketId {
        self.id
    }
}

impl Drop for SocketLease {
    fn drop(&mut self) {
        self.state.sockets.fetch_sub(1, Ordering::AcqRel);
    }
}
