//! Each socket's outgoing queue, and the fan-out lists that feed it.
//!
//! A frame is encoded once ([`Frame`], a cheaply clonable UTF-8 buffer) and pushed to every
//! interested socket's [`Outbox`]. The queue is bounded in *bytes*: a fan-out push that would
//! take a socket past its bound fails at once, marks the socket slow (its task then closes it with
//! 4008) and drops it from the fan-out list — the PTY reader and the other sockets never wait.
//!
//! Replies to the socket's own requests ([`Outbox::reply`]) are counted but never refused: their
//! size is the client's own doing, and the socket task stops reading requests while the queue is
//! over its bound ([`Outbox::has_room`]), which is the backpressure for them.
//!
//! The hot path is lock-free: an unbounded mpsc send and two atomic adds.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use protocol::ServerMessage;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

/// One encoded text frame, shared between the sockets it goes to.
pub(crate) type Frame = Utf8Bytes;

/// Encodes a server message as a frame.
pub(crate) fn encode(msg: &ServerMessage) -> Frame {
    Utf8Bytes::from(msg.to_json())
}

/// Identifies a socket for the lifetime of the process.
pub(crate) type SocketId = u64;

struct Shared {
    id: SocketId,
    pending: AtomicUsize,
    limit: usize,
    /// Cancelled when the socket fell behind; its task closes it with 4008.
    slow: CancellationToken,
}

/// The sending side of a socket's queue. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Outbox {
    tx: mpsc::UnboundedSender<Frame>,
    shared: Arc<Shared>,
}

/// The receiving side, owned by the socket's task.
pub(crate) struct OutboxRx {
    rx: mpsc::UnboundedReceiver<Frame>,
    shared: Arc<Shared>,
}

/// A fan-out push was refused: the socket is too slow (or gone) and has been marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dropped;

/// A new queue for socket `id`, bounded at `limit` bytes.
pub(crate) fn outbox(id: SocketId, limit: usize) -> (Outbox, OutboxRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        id,
        pending: AtomicUsize::new(0),
        limit,
        slow: CancellationToken::new(),
    });
    (
        Outbox {
            tx,
            shared: shared.clone(),
        },
        OutboxRx { rx, shared },
    )
}

impl Outbox {
    pub(crate) fn id(&self) -> SocketId {
        self.shared.id
    }

    /// Queues a fan-out frame, or marks the socket slow when it would exceed its bound.
    pub(crate) fn push(&self, frame: Frame) -> Result<(), Dropped> {
        let len = frame.len();
        let before = self.shared.pending.fetch_add(len, Ordering::AcqRel);
        if before + len > self.shared.limit && before > 0 {
            self.shared.pending.fetch_sub(len, Ordering::AcqRel);
            self.shared.slow.cancel();
            return Err(Dropped);
        }
        self.send(frame, len)
    }

    /// Queues a reply to this socket's own request: counted, never refused for size.
    pub(crate) fn reply(&self, frame: Frame) {
        let len = frame.len();
        self.shared.pending.fetch_add(len, Ordering::AcqRel);
        let _ = self.send(frame, len);
    }

    /// Encodes and queues a reply.
    pub(crate) fn reply_msg(&self, msg: &ServerMessage) {
        self.reply(encode(msg));
    }

    fn send(&self, frame: Frame, len: usize) -> Result<(), Dropped> {
        self.tx.send(frame).map_err(|_| {
            self.shared.pending.fetch_sub(len, Ordering::AcqRel);
            Dropped
        })
    }

    /// Whether the queue is under its bound (the socket task reads requests only then).
    pub(crate) fn has_room(&self) -> bool {
        self.shared.pending.load(Ordering::Acquire) < self.shared.limit
    }
}

impl OutboxRx {
    /// The next frame; cancel-safe.
    pub(crate) async fn recv(&mut self) -> Option<Frame> {
        self.rx.recv().await
    }

    /// The next frame if one is queued.
    pub(crate) fn try_recv(&mut self) -> Option<Frame> {
        self.rx.try_recv().ok()
    }

    /// Records that `len` bytes left the queue (handed to the WebSocket writer).
    pub(crate) fn written(&self, len: usize) {
        self.shared.pending.fetch_sub(len, Ordering::AcqRel);
    }

    /// Resolves when a fan-out push found this socket too slow.
    pub(crate) fn slow(&self) -> &CancellationToken {
        &self.shared.slow
    }
}

/// The sockets subscribed to one stream of events (a terminal session, the agent, ports, file
/// changes). Lives inside the owner's lock, so that a snapshot sent on subscribe and later events
/// come in order.
#[derive(Default)]
pub(crate) struct Fanout {
    sockets: HashMap<SocketId, Outbox>,
}

impl Fanout {
    pub(crate) fn insert(&mut self, outbox: Outbox) {
        self.sockets.insert(outbox.id(), outbox);
    }

    pub(crate) fn remove(&mut self, id: SocketId) {
        self.sockets.remove(&id);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// Sends `frame` to every socket; a socket that cannot take it is dropped from the list.
    pub(crate) fn send(&mut self, frame: &Frame) {
        self.sockets
            .retain(|_, outbox| outbox.push(frame.clone()).is_ok());
    }

    /// Sends to every socket whatever the queue size (terminal ends, which must arrive), then
    /// forgets them all.
    pub(crate) fn finish(&mut self, frame: &Frame) {
        for outbox in self.sockets.values() {
            outbox.reply(frame.clone());
        }
        self.sockets.clear();
    }
}
