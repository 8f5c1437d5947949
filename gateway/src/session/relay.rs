//! The relay phase: client ⇄ workspace service, once the workspace runs.
//!
//! One task per session moves frames both ways in a single `select!`. A write waits for the other
//! side to take it (bounded by the write timeout toward the client), so a slow reader slows its
//! writer instead of growing a buffer: that is the backpressure, end to end. Frames are relayed as
//! they are (tungstenite's `Utf8Bytes` is reference-counted: no copy); only the two tags of a
//! client frame are read, to answer malformed ones with an error frame instead of forwarding them.
//!
//! When the workspace service goes away, the session waits briefly for the provider to say why,
//! then tells the client with a `workspace` status and a close code: 4009 when it was stopped,
//! 1011 when the service died.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use protocol::control::{ControlServer, ErrorCode};
use protocol::{CloseCode, ServerMessage, WorkspaceStatus};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

use super::socket::{Client, Event};
use super::upstream::Upstream;
use super::wake::{Held, send_error};
use crate::metrics::RelayCounters;
use crate::registry::{Handle, Snapshot};

/// How long to wait for the provider to explain a lost workspace service.
const EXPLAIN_WAIT: Duration = Duration::from_secs(3);

/// Most frames moved in one direction before a flush: enough to turn a burst of small messages
/// into a few large writes, small enough that the other direction is never starved.
const BATCH_FRAMES: usize = 64;

/// Relays until one side ends; returns the code to close the client with, and the workspace
/// service's connection when it is still in good order (the client ended the session), so it can
/// serve the next client. `events` is the subscription taken before the client was told
/// `running`, so a stop in between ends this relay with 4009 even if a wake has begun since.
///
/// Each direction drains what is already readable (up to [`BATCH_FRAMES`]) into the other
/// socket's write buffer and flushes once, so a burst of small messages costs a few syscalls
/// instead of one per message, while a lone message is still written at once.
///
/// Not an `async fn`, so the service socket is stored once in the future, not also as an
/// argument (see `handshake::run`).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would store `upstream` twice (rust-lang/rust#62958)"
)]
pub(super) fn run<'a>(
    client: &'a mut Client,
    mut upstream: Upstream,
    held: &'a mut Held,
    handle: &'a Arc<Handle>,
    events: broadcast::Receiver<Snapshot>,
    counters: &'a RelayCounters,
    shutdown: &'a CancellationToken,
) -> impl Future<Output = (CloseCode, Option<Upstream>)> + 'a {
    async move {
        for message in held.drain() {
            counters.up_messages.inc();
            counters.up_bytes.inc_by(message.len() as u64);
            if upstream.feed(Message::Text(message)).await.is_err() {
                return (Box::pin(lost(client, handle)).await, None);
            }
        }
        if upstream.flush().await.is_err() {
            return (Box::pin(lost(client, handle)).await, None);
        }
        // Both are built once and polled across iterations, so they stay registered instead of
        // re-registering with the token and the broadcast on every relayed frame.
        let cancelled = shutdown.cancelled();
        let stopped = watch_for_stop(events, handle);
        tokio::pin!(cancelled, stopped);
        loop {
            let step = tokio::select! {
                () = &mut cancelled => Step::End(CloseCode::Restart),
                event = client.next_event() => up(client, &mut upstream, event, counters).await,
                frame = upstream.next() => down(client, &mut upstream, frame, counters).await,
                snapshot = &mut stopped => match Box::pin(gone(client, handle, &snapshot)).await {
                    Some(code) => Step::End(code),
                    // Not reachable: the watcher only returns a state that is gone.
                    None => Step::End(CloseCode::Internal),
                },
            };
            match step {
                Step::Continue => {}
                Step::ClientGone(code) => return (code, Some(upstream)),
                Step::End(code) => {
                    let _ = Box::pin(upstream.close(None)).await;
                    return (code, None);
                }
                Step::UpstreamLost => {
                    // A stop is announced before the service is told to go: if one was, the socket
                    // closing is that stop, whatever state a quick wake has reached since.
                    let stop = (&mut stopped).now_or_never();
                    return (Box::pin(explain_loss(client, handle, stop)).await, None);
                }
            }
        }
    }
}

/// Resolves with the first state in which the session cannot go on (stopped, failed, deleted).
async fn watch_for_stop(mut events: broadcast::Receiver<Snapshot>, handle: &Handle) -> Snapshot {
    loop {
        let snapshot = match events.recv().await {
            Ok(snapshot) => snapshot,
            Err(broadcast::error::RecvError::Lagged(_)) => handle.snapshot(),
            // The owner is gone; the relay ends by its sockets.
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        };
        if snapshot.deleted
            || !matches!(
                snapshot.status,
                WorkspaceStatus::Running | WorkspaceStatus::Starting
            )
        {
            return snapshot;
        }
    }
}

/// What the relay loop does after a step.
enum Step {
    Continue,
    /// The client's side ended (it closed, broke a rule, or could not be written to): close it
    /// with this code; the workspace socket is in good order.
    ClientGone(CloseCode),
    /// Close the client with this code (and the workspace socket politely).
    End(CloseCode),
    /// The workspace socket failed: find out why before closing the client.
    UpstreamLost,
}

/// Client → workspace: the event, then whatever else the client already sent, one flush.
async fn up(
    client: &mut Client,
    upstream: &mut Upstream,
    first: Event,
    counters: &RelayCounters,
) -> Step {
    let mut event = Some(first);
    let mut fed = 0;
    while let Some(current) = event.take() {
        match current {
            Event::Message(text) => {
                counters.up_messages.inc();
                counters.up_bytes.inc_by(text.len() as u64);
                if upstream.feed(Message::Text(text)).await.is_err() {
                    return Step::UpstreamLost;
                }
                fed += 1;
            }
            // Rare: boxed, so its state does not make every idle session larger.
            Event::Invalid(reply) => {
                if let Err(code) = Box::pin(client.send(&reply)).await {
                    return Step::ClientGone(code);
                }
            }
            Event::Closed => {
                return ended_by_client(upstream, CloseCode::Normal).await;
            }
            Event::Fatal(code) => {
                return ended_by_client(upstream, code).await;
            }
            Event::Nothing => {}
        }
        if fed < BATCH_FRAMES {
            event = client.ready_event();
        }
    }
    if upstream.flush().await.is_err() {
        return Step::UpstreamLost;
    }
    Step::Continue
}

/// Workspace → client: the frame, then whatever else the service already sent, one flush.
async fn down(
    client: &mut Client,
    upstream: &mut Upstream,
    first: Option<Result<Message, WsError>>,
    counters: &RelayCounters,
) -> Step {
    let mut frame = Some(first);
    let mut fed = 0;
    while let Some(current) = frame.take() {
        match current {
            Some(Ok(Message::Text(text))) => {
                counters.down_messages.inc();
                counters.down_bytes.inc_by(text.len() as u64);
                if let Err(code) = client.feed(Message::Text(text)).await {
                    return Step::ClientGone(code);
                }
                fed += 1;
            }
            // The workspace service speaks JSON text only; anything else is dropped.
            Some(Ok(
                Message::Binary(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_),
            )) => {}
            Some(Ok(Message::Close(close))) => {
                let _ = client.flush().await;
                // The service closing with one of our codes (too slow) is passed on; otherwise
                // find out why it went away.
                return match close.and_then(|f| CloseCode::from_code(u16::from(f.code))) {
                    Some(CloseCode::TooSlow) => Step::End(CloseCode::TooSlow),
                    _ => Step::UpstreamLost,
                };
            }
            Some(Err(WsError::Capacity(_))) => {
                tracing::warn!("workspace service sent an oversized message");
                let _ = client.flush().await;
                return Step::End(CloseCode::TooBig);
            }
            Some(Err(_)) | None => {
                let _ = client.flush().await;
                return Step::UpstreamLost;
            }
        }
        if fed < BATCH_FRAMES {
            frame = upstream.next().now_or_never();
        }
    }
    match client.flush().await {
        Ok(()) => Step::Continue,
        Err(code) => Step::ClientGone(code),
    }
}

/// The client ended the session: what it sent before goes out to the service first.
async fn ended_by_client(upstream: &mut Upstream, code: CloseCode) -> Step {
    match upstream.flush().await {
        Ok(()) => Step::ClientGone(code),
        Err(_) => Step::End(code),
    }
}

/// The workspace service could not be reached at all: if the workspace stopped since the client
/// was told it runs (`events` holds every transition since), say that; otherwise explain it like
/// a lost connection.
pub(super) async fn unreachable(
    client: &mut Client,
    handle: &Arc<Handle>,
    events: broadcast::Receiver<Snapshot>,
) -> CloseCode {
    let stop = watch_for_stop(events, handle).now_or_never();
    explain_loss(client, handle, stop).await
}

/// Tells the client why the workspace service is gone: the stop the session already saw, if
/// there was one (`stop`), else what [`lost`] finds out.
async fn explain_loss(
    client: &mut Client,
    handle: &Arc<Handle>,
    stop: Option<Snapshot>,
) -> CloseCode {
    if let Some(snapshot) = stop
        && let Some(code) = gone(client, handle, &snapshot).await
    {
        return code;
    }
    lost(client, handle).await
}

/// The provider has no address for a workspace the client was told runs: if it stopped since,
/// say that; otherwise it is the gateway's fault (1011).
pub(super) async fn no_endpoint(
    client: &mut Client,
    handle: &Arc<Handle>,
    events: broadcast::Receiver<Snapshot>,
) -> CloseCode {
    if let Some(code) = stopped_since(client, handle, events).await {
        return code;
    }
    send_error(
        client,
        ErrorCode::BackendLost,
        "workspace is running but has no endpoint".into(),
    )
    .await;
    CloseCode::Internal
}

/// If `events` (subscribed before the client was told `running`) already holds a stop, tells the
/// client and returns the close code.
async fn stopped_since(
    client: &mut Client,
    handle: &Arc<Handle>,
    events: broadcast::Receiver<Snapshot>,
) -> Option<CloseCode> {
    let snapshot = watch_for_stop(events, handle).now_or_never()?;
    gone(client, handle, &snapshot).await
}

/// The workspace service's socket ended: wait briefly for the provider to say why, then tell the
/// client.
async fn lost(client: &mut Client, handle: &Arc<Handle>) -> CloseCode {
    // Subscribing before reading the state means no transition can fall in between.
    let (_, mut events) = handle.subscribe();
    let current = handle.snapshot();
    if let Some(code) = gone(client, handle, &current).await {
        return code;
    }
    let explained = tokio::time::timeout(EXPLAIN_WAIT, async {
        loop {
            match events.recv().await {
                Ok(snapshot) if snapshot.status != WorkspaceStatus::Running || snapshot.deleted => {
                    return Some(snapshot);
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let snapshot = handle.snapshot();
                    if snapshot.status != WorkspaceStatus::Running {
                        return Some(snapshot);
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .await;
    if let Ok(Some(snapshot)) = explained
        && let Some(code) = gone(client, handle, &snapshot).await
    {
        return code;
    }
    send_error(
        client,
        ErrorCode::BackendLost,
        "lost the connection to the workspace service".into(),
    )
    .await;
    CloseCode::Internal
}

/// If the workspace is no longer running, tells the client and returns the close code.
async fn gone(client: &mut Client, handle: &Arc<Handle>, snapshot: &Snapshot) -> Option<CloseCode> {
    if snapshot.deleted {
        send_error(client, ErrorCode::NotFound, "workspace was deleted".into()).await;
        return Some(CloseCode::NotFound);
    }
    if snapshot.status == WorkspaceStatus::Running || snapshot.status == WorkspaceStatus::Starting {
        return None;
    }
    let status = ServerMessage::Workspace(ControlServer::Status {
        workspace_id: handle.id().to_string(),
        status: snapshot.status,
        message: snapshot.message.clone(),
        elapsed_ms: None,
    });
    let _ = client.send(&status).await;
    match snapshot.status {
        WorkspaceStatus::Error => {
            let message = snapshot
                .message
                .clone()
                .unwrap_or_else(|| "workspace service exited".into());
            send_error(client, ErrorCode::BackendLost, message).await;
            Some(CloseCode::Internal)
        }
        _ => {
            send_error(client, ErrorCode::Stopped, "workspace stopped".into()).await;
            Some(CloseCode::Stopped)
        }
    }
}
