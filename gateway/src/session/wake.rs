//! The waiting phase: tell the client where its workspace is, wake it, stream every transition,
//! and hold what the client sends until the workspace runs.

use std::collections::VecDeque;
use std::sync::Arc;

use protocol::control::{ControlServer, ErrorCode};
use protocol::{CloseCode, ServerMessage, WorkspaceStatus};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use super::Settings;
use super::socket::{Client, Event};
use crate::registry::{Handle, Snapshot};

/// Client messages held during a wake, bounded by count and bytes.
pub(super) struct Held {
    messages: VecDeque<Utf8Bytes>,
    bytes: usize,
    max_messages: usize,
    max_bytes: usize,
}

impl Held {
    pub(super) fn new(settings: &Settings) -> Held {
        Held {
            messages: VecDeque::new(),
            bytes: 0,
            max_messages: settings.wake_queue_messages,
            max_bytes: settings.wake_queue_bytes,
        }
    }

    /// Holds a message, or refuses it when the bound is reached.
    fn push(&mut self, message: Utf8Bytes) -> Result<(), ()> {
        if self.messages.len() >= self.max_messages || self.bytes + message.len() > self.max_bytes {
            return Err(());
        }
        self.bytes += message.len();
        self.messages.push_back(message);
        Ok(())
    }

    pub(super) fn drain(&mut self) -> impl Iterator<Item = Utf8Bytes> + '_ {
        self.bytes = 0;
        self.messages.drain(..)
    }
}

/// How the waiting phase ended.
pub(super) enum Waited {
    /// Running, with the subscription the wait was watching: it holds every transition since the
    /// `running` the client was told, so a stop right after it (before the relay is set up) is
    /// still seen by this session, however far a new wake has gone since.
    Running(broadcast::Receiver<Snapshot>),
    Close(CloseCode),
}

/// Waits until the workspace runs, waking it unless `start` is false.
pub(super) async fn until_running(
    client: &mut Client,
    handle: &Arc<Handle>,
    start: bool,
    held: &mut Held,
    connected_at: Instant,
    shutdown: &CancellationToken,
) -> Waited {
    let (mut snapshot, mut events) = handle.subscribe();
    let status = |snap: &Snapshot| {
        ServerMessage::Workspace(ControlServer::Status {
            workspace_id: handle.id().to_string(),
            status: snap.status,
            message: snap.message.clone(),
            elapsed_ms: Some(connected_at.elapsed().as_millis() as u64),
        })
    };
    if let Err(code) = client.send(&status(&snapshot)).await {
        return Waited::Close(code);
    }
    if let Some(code) = settle_initial(client, handle, &snapshot, start).await {
        return Waited::Close(code);
    }
    loop {
        if snapshot.status == WorkspaceStatus::Running {
            return Waited::Running(events);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Waited::Close(CloseCode::Restart),
            event = events.recv() => {
                let next = match event {
                    Ok(next) => next,
                    // Fell behind on transitions: the current state is what matters.
                    Err(broadcast::error::RecvError::Lagged(_)) => handle.snapshot(),
                    Err(broadcast::error::RecvError::Closed) => {
                        return Waited::Close(CloseCode::Internal);
                    }
                };
                if next == snapshot {
                    continue;
                }
                snapshot = next;
                if let Err(code) = client.send(&status(&snapshot)).await {
                    return Waited::Close(code);
                }
                if let Some(code) = failure(client, &snapshot, start).await {
                    return Waited::Close(code);
                }
                // Stopped under a waiting client (a stop that was already under way, or a user's
                // stop): the client still wants it, and a wake of a stopped workspace is
                // idempotent with the owner's own restart after a stop.
                if start && snapshot.status == WorkspaceStatus::Stopped {
                    handle.wake();
                }
            }
            event = client.next_event() => match event {
                Event::Message(text) => {
                    if held.push(text).is_err() {
                        let error = ServerMessage::Workspace(ControlServer::Error {
                            code: ErrorCode::QueueFull,
                            message: "too many messages sent while the workspace starts".into(),
                        });
                        let _ = client.send(&error).await;
                        return Waited::Close(CloseCode::TryAgainLater);
                    }
                }
                Event::Invalid(reply) => {
                    if let Err(code) = client.send(&reply).await {
                        return Waited::Close(code);
                    }
                }
                Event::Closed => return Waited::Close(CloseCode::Normal),
                Event::Fatal(code) => return Waited::Close(code),
                Event::Nothing => {}
            },
        }
    }
}

/// Decides what to do with the state found at connect time: wake it, wait, or refuse.
async fn settle_initial(
    client: &mut Client,
    handle: &Handle,
    snapshot: &Snapshot,
    start: bool,
) -> Option<CloseCode> {
    if snapshot.deleted {
        return Some(CloseCode::NotFound);
    }
    match snapshot.status {
        WorkspaceStatus::Running => None,
        // Someone else's wake is in flight: wait for it either way.
        WorkspaceStatus::Starting => None,
        _ if !start => {
            send_error(
                client,
                ErrorCode::Stopped,
                format!("workspace is {} and start=false", snapshot.status),
            )
            .await;
            Some(CloseCode::Stopped)
        }
        WorkspaceStatus::Stopped
        | WorkspaceStatus::Error
        | WorkspaceStatus::Creating
        | WorkspaceStatus::Stopping => {
            handle.wake();
            None
        }
        WorkspaceStatus::StopFailed => {
            send_error(
                client,
                ErrorCode::StartFailed,
                "workspace failed to stop earlier and cannot be started; stop it again".into(),
            )
            .await;
            Some(CloseCode::WakeFailed)
        }
    }
}

/// A transition that ends the wait: a failure, a deletion, or a stop the client did not ask for.
async fn failure(client: &mut Client, snapshot: &Snapshot, start: bool) -> Option<CloseCode> {
    if snapshot.deleted {
        send_error(client, ErrorCode::NotFound, "workspace was deleted".into()).await;
        return Some(CloseCode::NotFound);
    }
    match snapshot.status {
        WorkspaceStatus::Error => {
            let code = snapshot.error.unwrap_or(ErrorCode::StartFailed);
            let message = snapshot
                .message
                .clone()
                .unwrap_or_else(|| "workspace failed to start".into());
            send_error(client, code, message).await;
            Some(if code == ErrorCode::StartTimeout {
                CloseCode::WakeTimeout
            } else {
                CloseCode::WakeFailed
            })
        }
        WorkspaceStatus::StopFailed => {
            let message = snapshot
                .message
                .clone()
                .unwrap_or_else(|| "workspace failed to stop".into());
            send_error(client, ErrorCode::StartFailed, message).await;
            Some(CloseCode::WakeFailed)
        }
        WorkspaceStatus::Stopped if !start => {
            send_error(client, ErrorCode::Stopped, "workspace stopped".into()).await;
            Some(CloseCode::Stopped)
        }
        _ => None,
    }
}

pub(super) async fn send_error(client: &mut Client, code: ErrorCode, message: String) {
    let _ = client
        .send(&ServerMessage::Workspace(ControlServer::Error {
            code,
            message,
        }))
        .await;
}
