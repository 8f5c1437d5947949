//! A read adapter that lets idle sockets keep tiny read buffers without paying for it in
//! syscalls when data flows.
//!
//! tungstenite keeps a read buffer per socket and reads at most that buffer's size per call. A
//! 4 KiB buffer on both sockets of a session was half of an idle session's memory; a 1 KiB buffer
//! alone would cost sixteen `recv` calls for every 16 KiB message. [`ReadAhead`] sits under
//! tungstenite: when asked for a small read, it reads up to [`SCRATCH`] bytes in one syscall into
//! a scratch buffer shared by every socket of the worker thread, hands over what was asked, and
//! keeps the rest in a buffer of its own that exists only until it is drained. An idle socket
//! holds nothing; a busy one holds what one syscall brought in.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most one read takes from the socket.
pub(crate) const SCRATCH: usize = 64 * 1024;

thread_local! {
    /// One scratch buffer per thread: a read fills it and empties it before returning, so no
    /// two sockets ever use it at once.
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct ReadAhead<S> {
    inner: S,
    /// Bytes read from the socket but not yet handed over; empty (and unallocated) when idle.
    pending: Vec<u8>,
    pos: usize,
}

impl<S> ReadAhead<S> {
    pub(crate) fn new(inner: S) -> ReadAhead<S> {
        Self::with_pending(inner, Vec::new())
    }

    /// Starts with bytes already read from `inner` (what followed a handshake's headers).
    pub(crate) fn with_pending(inner: S, pending: Vec<u8>) -> ReadAhead<S> {
        ReadAhead {
            inner,
            pending,
            pos: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.pending.len() {
            let n = buf.remaining().min(this.pending.len() - this.pos);
            buf.put_slice(&this.pending[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.pending.len() {
                // Give the memory back: an idle socket should hold none.
                this.pending = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= SCRATCH {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        SCRATCH_BUF.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut read = ReadBuf::new(&mut scratch[..]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let data = read.filled();
            let n = buf.remaining().min(data.len());
            buf.put_slice(&data[..n]);
            if n < data.len() {
                this.pending = data[n..].to_vec();
                this.pos = 0;
            }
            Poll::Ready(Ok(()))
        })
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn small_reads_are_served_from_one_large_read_and_nothing_is_kept_after() {
        let (mut writer, reader) = tokio::io::duplex(256 * 1024);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        writer.write_all(&data).await.unwrap();
        drop(writer);
        let mut reader = ReadAhead::new(reader);
        let mut out = Vec::new();
        let mut chunk = [0u8; 1000];
        loop {
            let n = reader.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
            if out.len() == 1000 {
                assert!(
                    !reader.pending.is_empty(),
                    "the rest of the first read is kept"
                );
            }
        }
        assert_eq!(out, data);
        assert_eq!(
            reader.pending.capacity(),
            0,
            "a drained socket holds no buffer"
        );
    }
}
