//! What a connection's task shares with the handshake of a WebSocket upgrade on it: the slot
//! where the accepted session waits for the task to run it, and the cork that sends the 101 in
//! one write with the session's first frame.
//!
//! Running the session in the task that served its HTTP request, instead of spawning a task of
//! its own, saves a task and a hand-off between worker threads on every connect: the session's
//! first steps (sending the status, taking a service connection) then run right where the 101
//! was written, on the same thread, without waking another.
//!
//! The cork: hyper writes and flushes the 101 before it hands the socket over, and the session
//! then writes the workspace's status, so a connect would cost two sends, and on loopback or a
//! LAN each send is a wake-up of the reader as well. [`Corked`] sits under hyper and, once the
//! handshake has accepted an upgrade, keeps what hyper writes instead of sending it; the session's
//! first write (or flush, or shutdown) sends both at once.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A session future, boxed so the task that runs it holds only a pointer.
pub(super) type SessionFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where the handshake leaves the session it accepted, for the connection's own task to run once
/// hyper has written the 101 and handed over the socket.
///
/// The server makes one per connection, wraps the socket in [`Corked`] with it, and inserts it
/// into every request's extensions; without it (a router driven some other way), the handshake
/// spawns the session instead and nothing is corked.
#[derive(Clone, Default)]
pub struct SessionSlot(Arc<Shared>);

#[derive(Default)]
struct Shared {
    session: Mutex<Option<SessionFuture>>,
    /// Set from the accepted upgrade until its session is taken: hyper's 101 is held back.
    corked: AtomicBool,
}

impl SessionSlot {
    /// Leaves the session of an accepted upgrade, and corks the socket: the next thing hyper
    /// writes on this connection is that upgrade's 101, and it waits for the session. A
    /// connection upgrades at most once, so there is never a session already waiting.
    pub(super) fn put(&self, session: SessionFuture) {
        // A std mutex: held for a pointer swap, never across an `.await`.
        *self.0.session.lock().unwrap_or_else(|e| e.into_inner()) = Some(session);
        self.0.corked.store(true, Ordering::Release);
    }

    /// The session an upgrade on this connection left, if any. Called once hyper is done with
    /// the connection; from then on the socket sends what it holds with the next write.
    pub fn take(&self) -> Option<SessionFuture> {
        self.0.corked.store(false, Ordering::Release);
        self.0
            .session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    fn corked(&self) -> bool {
        self.0.corked.load(Ordering::Acquire)
    }
}

/// A socket that holds back writes while its [`SessionSlot`] is corked, and sends them in one
/// write with the next bytes written after (see the module docs).
pub struct Corked<IO> {
    io: IO,
    /// `None` once the 101 is out: a connection upgrades at most once, so from then on every
    /// write goes straight through without looking at the slot.
    slot: Option<SessionSlot>,
    /// Written but not yet sent: the 101, then the first frame appended to it. Empty (and
    /// unallocated) once sent.
    held: Vec<u8>,
}

impl<IO> Corked<IO> {
    pub fn new(io: IO, slot: SessionSlot) -> Corked<IO> {
        Corked {
            io,
            slot: Some(slot),
            held: Vec::new(),
        }
    }
}

impl<IO: AsyncWrite + Unpin> Corked<IO> {
    fn corked(&self) -> bool {
        self.slot.as_ref().is_some_and(SessionSlot::corked)
    }

    /// Sends what is held, if anything.
    fn poll_send_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.held.is_empty() {
            return Poll::Ready(Ok(()));
        }
        while !self.held.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.held))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.held.drain(..n);
        }
        self.held = Vec::new();
        if !self.corked() {
            // The 101 is out.
            self.slot = None;
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `bufs` into the held bytes; sends them unless corked. Either way they are taken:
    /// what a send leaves goes with the next write or flush.
    fn hold(&mut self, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let mut taken = 0;
        for buf in bufs {
            self.held.extend_from_slice(buf);
            taken += buf.len();
        }
        if !self.corked()
            && let Poll::Ready(Err(error)) = self.poll_send_held(cx)
        {
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(taken))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Corked<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Corked<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.held.is_empty() && !this.corked() {
            return Pin::new(&mut this.io).poll_write(cx, buf);
        }
        this.hold(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.held.is_empty() && !this.corked() {
            return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        }
        this.hold(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.corked() {
            // hyper flushing the 101: it waits for the session's first frame.
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_send_held(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_held(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::io::AsyncWriteExt;

    use super::*;

    /// A socket that records every write it is asked to do, as one entry each.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        flushes: Arc<AtomicUsize>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes.fetch_add(1, Ordering::Relaxed);
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn session() -> SessionFuture {
        Box::pin(async {})
    }

    #[tokio::test]
    async fn the_101_goes_out_with_the_sessions_first_frame_in_one_write() {
        let slot = SessionSlot::default();
        let mut socket = Corked::new(Recorder::default(), slot.clone());
        socket.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        socket.flush().await.unwrap();
        assert_eq!(socket.io.writes.len(), 1, "uncorked writes go straight out");

        slot.put(session());
        socket.write_all(b"HTTP/1.1 101 \r\n\r\n").await.unwrap();
        socket.flush().await.unwrap();
        assert_eq!(socket.io.writes.len(), 1, "hyper's 101 and flush are held");

        assert!(slot.take().is_some());
        socket.write_all(b"status").await.unwrap();
        assert_eq!(
            socket.io.writes.last().unwrap(),
            b"HTTP/1.1 101 \r\n\r\nstatus",
            "one write for both"
        );
        assert_eq!(socket.io.writes.len(), 2);
        assert_eq!(socket.held.capacity(), 0, "nothing kept once sent");
        assert!(socket.slot.is_none(), "the slot is not consulted any more");
        socket.write_all(b"next").await.unwrap();
        assert_eq!(socket.io.writes.last().unwrap(), b"next");
    }

    #[tokio::test]
    async fn a_flush_or_shutdown_after_the_hand_over_sends_what_is_held() {
        for shutdown in [false, true] {
            let slot = SessionSlot::default();
            let mut socket = Corked::new(Recorder::default(), slot.clone());
            slot.put(session());
            socket.write_all(b"HTTP/1.1 101 \r\n\r\n").await.unwrap();
            slot.take();
            if shutdown {
                socket.shutdown().await.unwrap();
            } else {
                socket.flush().await.unwrap();
                assert_eq!(socket.io.flushes.load(Ordering::Relaxed), 1);
            }
            assert_eq!(socket.io.writes, vec![b"HTTP/1.1 101 \r\n\r\n".to_vec()]);
        }
    }
}
