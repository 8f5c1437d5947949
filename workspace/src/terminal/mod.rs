//! The `terminal` channel: real PTY sessions that outlive the sockets attached to them.
//!
//! A [`Terminals`] registry maps session ids to live [`Session`]s. A session is created by the
//! first `create` with its id and lives until its process exits (or is closed, or the service
//! shuts down) — not until its socket goes. A later `create` with the same id re-attaches: the
//! reply `created {resumed: true}` is followed by a replay from the session's [`ring::Ring`], and
//! from then on the socket receives live output too. Several sockets may attach to one session.
//!
//! Each session has three tasks: a reader (PTY → ring → fan-out), a writer (input and resizes →
//! PTY, in order) and a waiter (process exit → `close {exitCode}` to every attached socket).
//!
//! Locking: the registry map and each session's state are behind `std::sync::Mutex`es, held only
//! for synchronous bookkeeping (never across `.await`). A session's state lock is what orders a
//! replay before the live output that follows it.

mod ring;
mod session;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::terminal::{DEFAULT_COLS, DEFAULT_ROWS, TerminalServer};
use protocol::{ServerMessage, terminal::TerminalClient};

use crate::outbox::{Outbox, SocketId};
pub(crate) use session::Session;

/// Why a terminal request failed; sent back as an error frame.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TerminalError {
    #[error("no terminal session {0:?}")]
    NoSession(String),
    #[error("could not start a terminal: {0}")]
    Spawn(String),
    #[error("terminal session {0:?} is not accepting input (its input queue is full)")]
    InputFull(String),
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error("cols and rows must be between 1 and 1000")]
    BadSize,
}

/// All live terminal sessions.
pub(crate) struct Terminals {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    volume: PathBuf,
    shell: String,
    ring_bytes: usize,
    closed: std::sync::atomic::AtomicBool,
}

impl Terminals {
    pub(crate) fn new(volume: PathBuf, shell: String, ring_bytes: usize) -> Arc<Terminals> {
        Arc::new(Terminals {
            sessions: Mutex::new(HashMap::new()),
            volume,
            shell,
            ring_bytes,
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Number of live sessions (an ended one counts no more once its `close` was sent, even if
    /// it is still being removed).
    pub(crate) fn len(&self) -> usize {
        let sessions: Vec<Arc<Session>> = self
            .sessions
            .lock()
            .expect("terminal registry poisoned")
            .values()
            .cloned()
            .collect();
        sessions.iter().filter(|s| s.is_alive()).count()
    }

    fn get(&self, id: &str) -> Result<Arc<Session>, TerminalError> {
        self.sessions
            .lock()
            .expect("terminal registry poisoned")
            .get(id)
            .cloned()
            .ok_or_else(|| TerminalError::NoSession(id.to_owned()))
    }

    /// Handles one client message from socket `outbox`. `attached` is the socket's list of
    /// sessions, so that it can detach from them when it goes.
    pub(crate) fn handle(
        self: &Arc<Self>,
        msg: TerminalClient,
        outbox: &Outbox,
        attached: &mut Vec<String>,
    ) -> Result<(), TerminalError> {
        match msg {
            TerminalClient::Create {
                session_id,
                cols,
                rows,
                last_seq,
            } => {
                let size = match (cols, rows) {
                    (None, None) => None,
                    (c, r) => Some(check_size(
                        c.unwrap_or(DEFAULT_COLS),
                        r.unwrap_or(DEFAULT_ROWS),
                    )?),
                };
                self.create(&session_id, size, last_seq, outbox)?;
                if !attached.contains(&session_id) {
                    attached.push(session_id);
                }
                Ok(())
            }
            TerminalClient::Input { session_id, data } => {
                let session = self.get(&session_id)?;
                session.input(data)
            }
            TerminalClient::Resize {
                session_id,
                cols,
                rows,
            } => {
                let size = check_size(cols, rows)?;
                self.get(&session_id)?.resize(size)
            }
            TerminalClient::Close { session_id } => {
                self.get(&session_id)?.kill();
                Ok(())
            }
        }
    }

    fn create(
        self: &Arc<Self>,
        id: &str,
        size: Option<(u16, u16)>,
        last_seq: Option<u64>,
        outbox: &Outbox,
    ) -> Result<(), TerminalError> {
        // The registry lock is held across the spawn so that two concurrent `create`s of one id
        // make one session; a fork+exec is short.
        let mut sessions = self.sessions.lock().expect("terminal registry poisoned");
        if let Some(session) = sessions.get(id).cloned() {
            drop(sessions);
            if let Some(size) = size {
                session.resize(size)?;
            }
            session.attach(outbox, true, last_seq.unwrap_or(0));
            return Ok(());
        }
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(TerminalError::ShuttingDown);
        }
        let session = Session::spawn(
            self,
            id.to_owned(),
            size.unwrap_or((DEFAULT_COLS, DEFAULT_ROWS)),
            outbox,
        )
        .map_err(|e| TerminalError::Spawn(e.to_string()))?;
        sessions.insert(id.to_owned(), session);
        Ok(())
    }

    /// Forgets a session whose process ended (called by its waiter).
    fn remove(&self, session: &Arc<Session>) {
        let mut sessions = self.sessions.lock().expect("terminal registry poisoned");
        if sessions
            .get(session.id())
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            sessions.remove(session.id());
        }
    }

    /// Detaches a socket that went away from the sessions it was attached to.
    pub(crate) fn detach(&self, socket: SocketId, attached: &[String]) {
        for id in attached {
            if let Ok(session) = self.get(id) {
                session.detach(socket);
            }
        }
    }

    /// Shutdown: refuse new sessions, hang up every session, and wait (at most `grace`) for
    /// their processes to end; those still alive then are killed.
    pub(crate) async fn shutdown(&self, grace: Duration) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        let sessions: Vec<Arc<Session>> = self
            .sessions
            .lock()
            .expect("terminal registry poisoned")
            .values()
            .cloned()
            .collect();
        for s in &sessions {
            s.hang_up();
        }
        let all_ended = async {
            for s in &sessions {
                s.ended().await;
            }
        };
        if tokio::time::timeout(grace, all_ended).await.is_err() {
            for s in &sessions {
                s.kill_now();
            }
        }
    }
}

fn check_size(cols: u16, rows: u16) -> Result<(u16, u16), TerminalError> {
    if (1..=1000).contains(&cols) && (1..=1000).contains(&rows) {
        Ok((cols, rows))
    } else {
        Err(TerminalError::BadSize)
    }
}

/// `output {sessionId, data, seq}` as a frame.
fn output_frame(session_id: &str, data: String, seq: u64) -> crate::outbox::Frame {
    crate::outbox::encode(&ServerMessage::Terminal(TerminalServer::Output {
        session_id: session_id.to_owned(),
        data,
        seq: Some(seq),
    }))
}
