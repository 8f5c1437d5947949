//! The listener: accept connections, serve HTTP/1.1 (optionally over TLS) with upgrades, and
//! drain on shutdown.
//!
//! The accept loop only accepts; each connection is its own task, and its errors end there. One
//! loop runs on the caller's runtime; each further listener (on the same port) gets a thread and a
//! single-threaded runtime of its own ([`crate::shards`]), whose connections stay on it.
//! Shutdown follows the design: report not-ready, stop accepting, close every WebSocket session
//! with 1012 (they are tracked in [`App::sessions`], because hyper's graceful shutdown does not
//! see upgraded connections), let in-flight HTTP requests finish, all within a grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tower::ServiceExt;

use crate::app::App;
use crate::rest::PeerAddr;
use crate::session::{Corked, SessionSlot};

/// How long a client may take to send its request headers (and finish a TLS handshake).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener`, and on each of `more` on a thread of its own, until `shutdown`
/// completes, then drains within `grace`.
pub async fn run(
    listener: TcpListener,
    more: Vec<std::net::TcpListener>,
    tls: Option<TlsAcceptor>,
    app: Arc<App>,
    router: Router,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    // HTTP connections, tracked so draining can wait for in-flight requests; upgraded sessions
    // are tracked separately, in `App::sessions`.
    let connections = TaskTracker::new();
    let stop_http = CancellationToken::new();
    let stop_accepting = CancellationToken::new();
    tokio::spawn(sweep_upstreams(app.clone()));
    // The accept loop is a task of its own, not part of this future (which `main` runs on its
    // own thread with `block_on`): a task spawned from a worker goes to that worker's queue and
    // runs when the loop next waits, where one spawned from outside goes through the shared
    // queue and wakes a worker thread for every connection.
    // Aborted if this future is dropped, so the listener never outlives it.
    let accepting = AbortOnDropHandle::new(tokio::spawn(accept(
        listener,
        tls.clone(),
        router.clone(),
        connections.clone(),
        stop_http.clone(),
        stop_accepting.clone(),
    )));
    // The other shards accept until told to stop, then keep running their connections' tasks
    // (sessions, and owner tasks spawned from them) until everything has drained. Should this
    // future be dropped instead of finishing, the guards stop their threads all the same.
    let drained = CancellationToken::new();
    let _stop_shards = (
        stop_accepting.clone().drop_guard(),
        drained.clone().drop_guard(),
    );
    let mut shards = Vec::new();
    for (i, listener) in more.into_iter().enumerate() {
        let (tls, router, connections) = (tls.clone(), router.clone(), connections.clone());
        let (stop_http, stop, drained) =
            (stop_http.clone(), stop_accepting.clone(), drained.clone());
        let serve = move |listener| async move {
            accept(listener, tls, router, connections, stop_http, stop).await;
            drained.cancelled().await;
        };
        match crate::shards::spawn(i + 1, listener, serve) {
            Ok(thread) => shards.push(thread),
            // Its listener is closed with it, so the kernel sends its share to the others.
            Err(error) => tracing::error!(shard = i + 1, %error, "cannot start a serving thread"),
        }
    }
    shutdown.await;
    stop_accepting.cancel();
    // Each listener is dropped when its loop ends; the other shards' loops end on their threads
    // at the same time.
    let _ = accepting.await;

    tracing::info!("draining: closing sessions with 1012");
    app.start_draining();
    app.shutdown.cancel();
    app.sessions.close();
    stop_http.cancel();
    connections.close();
    let finished = tokio::time::timeout(grace, async {
        tokio::join!(connections.wait(), app.sessions.wait());
    })
    .await;
    match finished {
        Ok(_) => tracing::info!("drained"),
        Err(_) => tracing::warn!(?grace, "grace period over; dropping what is left"),
    }
    app.registry.closed().await;
    drained.cancel();
    for thread in shards {
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// Accepts connections until `stop` is cancelled, each served by its own task in `connections`.
async fn accept(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    connections: TaskTracker,
    stop_http: CancellationToken,
    stop: CancellationToken,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    let inherited = nodelay_inherited(&listener);
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors or a transient network error: back off instead
                    // of spinning, and keep serving what is already open.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if !inherited {
            let _ = stream.set_nodelay(true);
        }
        connections.spawn(serve_connection(
            stream,
            peer,
            tls.clone(),
            router.clone(),
            http.clone(),
            stop_http.clone(),
        ));
    }
}

/// Sets `TCP_NODELAY` on the listener itself, and says whether the sockets it accepts inherit
/// it. Linux copies the listener's options into each accepted socket, which saves a
/// `setsockopt` per connection; elsewhere each accepted socket is set on its own.
fn nodelay_inherited(listener: &TcpListener) -> bool {
    cfg!(target_os = "linux")
        && socket2::SockRef::from(listener)
            .set_tcp_nodelay(true)
            .is_ok()
}

/// Serves one accepted connection: its TLS handshake and HTTP requests, then, if one of them
/// upgraded to a WebSocket session, that session, in this same task (see [`SessionSlot`]).
///
/// Everything before the session is boxed: a session lives for hours, and the task's own future
/// is allocated at its largest state for its whole life. Kept inline, a TLS handshake's and an
/// HTTP connection's state would add ~2.8 KiB to every idle session; boxed, they are freed when
/// done, and the task keeps a few pointers.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    router: Router,
    http: http1::Builder,
    stop: CancellationToken,
) {
    let slot = SessionSlot::default();
    let http_slot = slot.clone();
    let before_session: Pin<Box<dyn Future<Output = ()> + Send>> = match tls {
        None => Box::pin(serve_http(stream, peer, router, http, stop, http_slot)),
        Some(acceptor) => Box::pin(async move {
            match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => serve_http(stream, peer, router, http, stop, http_slot).await,
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }),
    };
    before_session.await;
    if let Some(session) = slot.take() {
        session.await;
    }
}

async fn serve_http<IO>(
    io: IO,
    peer: SocketAddr,
    router: Router,
    http: http1::Builder,
    stop: CancellationToken,
    slot: SessionSlot,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let request_slot = slot.clone();
    let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        request.extensions_mut().insert(PeerAddr(peer));
        request.extensions_mut().insert(request_slot.clone());
        router.clone().oneshot(request)
    });
    let connection = http
        .serve_connection(TokioIo::new(Corked::new(io, slot)), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop.cancelled() => {
            // Finish the request in flight, then close; an upgrade already handed its socket
            // to a session and is not affected.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// Drops parked workspace-service connections that waited too long, until the gateway drains;
/// then drops them all, so the services see their clients go.
async fn sweep_upstreams(app: Arc<App>) {
    let mut every = tokio::time::interval(crate::session::upstream::SWEEP_EVERY);
    loop {
        tokio::select! {
            () = app.shutdown.cancelled() => break,
            _ = every.tick() => app.upstreams.sweep(),
        }
    }
    app.upstreams.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let inherited = nodelay_inherited(&listener);
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (accepted, _) = accepted.unwrap();
        assert_eq!(inherited, cfg!(target_os = "linux"));
        if inherited {
            assert!(
                accepted.nodelay().unwrap(),
                "Linux copies TCP_NODELAY on accept"
            );
        }
        assert!(
            !client.unwrap().nodelay().unwrap(),
            "only accepted sockets inherit it"
        );
    }
}
