//! Thread per core: the gateway's own server runs one single-threaded tokio runtime per thread,
//! each accepting on a listener of its own on the same port (`SO_REUSEPORT`: the kernel spreads
//! new connections over the listeners), the way nginx runs one event loop per worker.
//!
//! Why: relaying a message is one read and one write. On tokio's work-stealing runtime a
//! readiness event may also wake a second, idle worker to look for work, and the two workers
//! share one timer wheel and one task queue; on a thread of its own, a connection's client socket,
//! its workspace-service socket and its timers all belong to the runtime that polls it, and
//! relaying never involves another thread (docs/performance.md has the measurements).
//!
//! Nothing else changes: shared state (registry, owner tasks, metrics, the upstream pool) is
//! `Send + Sync` as before, and a task spawned from a connection runs on that connection's thread.
//! The only thing kept per thread is the pool of parked workspace-service connections (see
//! `session::upstream`): a socket is registered with the runtime that opened it, and one used
//! from another thread would cost a cross-thread wake-up per event.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::thread::JoinHandle;

use tokio::net::TcpListener;

thread_local! {
    /// The index of this thread's shard: 0 on the thread that started the gateway (and on any
    /// thread of a runtime the gateway did not start), 1.. on the threads [`spawn`] starts.
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// The shard of the calling thread.
pub fn current() -> usize {
    SHARD.with(Cell::get)
}

/// How many threads to serve on when the configuration does not say: one per CPU.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Binds `n` (at least one) listeners to `addr`, all on the same port. With port 0 the first
/// picks the port and the others join it.
pub fn bind(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n.max(1) {
        let listener = bind_one(addr)?;
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

fn bind_one(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // A restarted gateway must be able to bind its port while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Starts shard `index` on a thread of its own: a single-threaded runtime that runs
/// `serve(listener)` until it completes, and with it every task that `serve` spawned.
pub fn spawn<F, Fut>(
    index: usize,
    listener: std::net::TcpListener,
    serve: F,
) -> io::Result<JoinHandle<()>>
where
    F: FnOnce(TcpListener) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("aether-shard-{index}"))
        .spawn(move || {
            SHARD.with(|s| s.set(index));
            runtime.block_on(async move {
                // Registered here, so its readiness events come to this thread's runtime.
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener).await,
                    Err(error) => tracing::error!(index, %error, "shard cannot listen"),
                }
            });
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use tokio::sync::mpsc;

    #[test]
    fn listeners_share_one_port() {
        let listeners = bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let ports: HashSet<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        assert_eq!(listeners.len(), 3);
        assert_eq!(ports.len(), 1, "{ports:?}");
        assert!(!ports.contains(&0));
    }

    #[tokio::test]
    async fn each_shard_accepts_on_its_own_thread() {
        let mut listeners = bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = listeners[0].local_addr().unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut threads = Vec::new();
        for (index, listener) in listeners.drain(..).enumerate() {
            let tx = tx.clone();
            threads.push(
                spawn(index + 1, listener, move |listener| async move {
                    // Report which shard took each connection, until the test hangs up.
                    while let Ok((stream, _)) = listener.accept().await {
                        if tx.send((current(), stream)).is_err() {
                            break;
                        }
                    }
                })
                .unwrap(),
            );
        }
        drop(tx);
        // The kernel picks a listener by a hash of the client's port: with 64 connections both
        // are all but certain to get some (all on one: a chance of 2^-63).
        let mut clients = Vec::new();
        for _ in 0..64 {
            clients.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let mut seen = HashSet::new();
        for _ in 0..64 {
            let (shard, _stream) = rx.recv().await.unwrap();
            seen.insert(shard);
        }
        assert_eq!(seen, HashSet::from([1, 2]));
        assert_eq!(current(), 0, "the test's own thread is no shard");
        drop(rx);
        drop(clients);
        // Each shard ends when its loop does: one more connection each finds the channel closed.
        for _ in 0..64 {
            let _ = tokio::net::TcpStream::connect(addr).await;
        }
        for t in threads {
            t.join().unwrap();
        }
    }
}
