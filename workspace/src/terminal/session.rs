//! One PTY session: its process, its output ring, the sockets attached to it, and its tasks.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use protocol::ServerMessage;
use protocol::terminal::TerminalServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ring::Ring;
use super::{TerminalError, Terminals, output_frame};
use crate::outbox::{Fanout, Outbox, SocketId, encode};
use crate::utf8::{Utf8Stream, floor_boundary};

/// Largest `output` frame of a replay.
const REPLAY_CHUNK: usize = 64 * 1024;
/// Size of one PTY read.
const READ_CHUNK: usize = 16 * 1024;
/// Input messages (and resizes) queued for the PTY before `input` is refused.
const INPUT_QUEUE: usize = 256;
/// After the process exits, how long its remaining output may take to drain.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);
/// After `close` (SIGHUP), how long before SIGKILL.
const KILL_AFTER_HANGUP: Duration = Duration::from_secs(2);

enum PtyCommand {
    Input(String),
    Resize { cols: u16, rows: u16 },
}

struct State {
    ring: Ring,
    fanout: Fanout,
    /// `Some(exit code)` once the process ended (the inner `None`: killed by a signal).
    exited: Option<Option<i32>>,
}

/// A live terminal session.
pub(crate) struct Session {
    id: String,
    pid: Option<u32>,
    state: Mutex<State>,
    input_tx: mpsc::Sender<PtyCommand>,
    /// Cancelled once the process ended and every socket was told.
    ended: CancellationToken,
}

impl Session {
    /// Opens a PTY, starts the shell on it in `volume`, and starts the session's tasks.
    pub(super) fn spawn(
        registry: &Arc<Terminals>,
        id: String,
        (cols, rows): (u16, u16),
        creator: &Outbox,
    ) -> Result<Arc<Session>, pty_process::Error> {
        let (pty, pts) = pty_process::open()?;
        pty.resize(pty_process::Size::new(rows, cols))?;
        let child = pty_process::Command::new(&registry.shell)
            .current_dir(&registry.volume)
            .env("TERM", "xterm-256color")
            .env_remove("AETHER_WORKSPACE_LISTEN")
            .spawn(pts)?;
        let pid = child.id();
        let (read_half, write_half) = pty.into_split();
        let (input_tx, input_rx) = mpsc::channel(INPUT_QUEUE);
        let session = Arc::new(Session {
            id,
            pid,
            state: Mutex::new(State {
                ring: Ring::new(registry.ring_bytes),
                fanout: Fanout::default(),
                exited: None,
            }),
            input_tx,
            ended: CancellationToken::new(),
        });
        tracing::info!(session = %session.id, pid, "terminal session started");
        // Attached before the reader starts: a new session's `created` always says `seq: 0`.
        session.attach(creator, false, 0);
        let reader = tokio::spawn(read_loop(session.clone(), read_half));
        tokio::spawn(write_loop(input_rx, write_half, session.ended.clone()));
        tokio::spawn(wait(
            session.clone(),
            child,
            reader,
            Arc::downgrade(registry),
        ));
        Ok(session)
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("terminal session state poisoned")
    }

    /// Attaches a socket: `created`, then whatever it missed after `after`, then live output.
    pub(super) fn attach(&self, outbox: &Outbox, resumed: bool, after: u64) {
        let mut st = self.state();
        let replay = st.ring.replay(after);
        outbox.reply_msg(&ServerMessage::Terminal(TerminalServer::Created {
            session_id: self.id.clone(),
            resumed,
            seq: replay.end,
        }));
        if replay.lost > 0 {
            outbox.reply_msg(&ServerMessage::Terminal(TerminalServer::Lost {
                session_id: self.id.clone(),
                bytes: replay.lost,
            }));
        }
        let text = replay.text.as_str();
        let mut seq = replay.end - text.len() as u64;
        let mut rest = text;
        while !rest.is_empty() {
            let mut cut = floor_boundary(rest, REPLAY_CHUNK);
            if cut == 0 {
                cut = rest.len();
            }
            let (chunk, tail) = rest.split_at(cut);
            seq += chunk.len() as u64;
            outbox.reply(output_frame(&self.id, chunk.to_owned(), seq));
            rest = tail;
        }
        match st.exited {
            Some(exit_code) => outbox.reply_msg(&close_msg(&self.id, exit_code)),
            None => st.fanout.insert(outbox.clone()),
        }
    }

    /// False once the process ended (set before `close` is sent).
    pub(super) fn is_alive(&self) -> bool {
        self.state().exited.is_none()
    }

    pub(super) fn detach(&self, socket: SocketId) {
        self.state().fanout.remove(socket);
    }

    pub(super) fn input(&self, data: String) -> Result<(), TerminalError> {
        self.input_tx
            .try_send(PtyCommand::Input(data))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => TerminalError::InputFull(self.id.clone()),
                mpsc::error::TrySendError::Closed(_) => TerminalError::NoSession(self.id.clone()),
            })
    }

    pub(super) fn resize(&self, (cols, rows): (u16, u16)) -> Result<(), TerminalError> {
        self.input_tx
            .try_send(PtyCommand::Resize { cols, rows })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => TerminalError::InputFull(self.id.clone()),
                mpsc::error::TrySendError::Closed(_) => TerminalError::NoSession(self.id.clone()),
            })
    }

    fn signal(&self, signal: Signal) {
        if self.ended.is_cancelled() {
            return;
        }
        if let Some(pid) = self.pid.and_then(|p| i32::try_from(p).ok()) {
            // The shell is a session leader, so its pid is its process group's id.
            if let Err(e) = killpg(Pid::from_raw(pid), signal) {
                tracing::debug!(session = %self.id, %e, ?signal, "killpg failed");
            }
        }
    }

    /// Ends the session at a client's request: SIGHUP, then SIGKILL if it lingers.
    pub(super) fn kill(self: &Arc<Self>) {
        self.signal(Signal::SIGHUP);
        let session = self.clone();
        tokio::spawn(async move {
            if tokio::time::timeout(KILL_AFTER_HANGUP, session.ended.cancelled())
                .await
                .is_err()
            {
                session.signal(Signal::SIGKILL);
            }
        });
    }

    pub(super) fn hang_up(&self) {
        self.signal(Signal::SIGHUP);
    }

    pub(super) fn kill_now(&self) {
        self.signal(Signal::SIGKILL);
    }

    pub(super) async fn ended(&self) {
        self.ended.cancelled().await;
    }

    /// Appends output that ends at `end` to the ring and sends it to every attached socket.
    fn publish(&self, text: String, end: u64) {
        if text.is_empty() {
            return;
        }
        let mut st = self.state();
        st.ring.push(&text);
        debug_assert_eq!(st.ring.end(), end);
        if st.fanout.is_empty() {
            return;
        }
        let frame = output_frame(&self.id, text, end);
        st.fanout.send(&frame);
    }

    fn finish(&self, exit_code: Option<i32>) {
        let mut st = self.state();
        st.exited = Some(exit_code);
        st.fanout.finish(&encode(&close_msg(&self.id, exit_code)));
        drop(st);
        self.ended.cancel();
    }
}

fn close_msg(id: &str, exit_code: Option<i32>) -> ServerMessage {
    ServerMessage::Terminal(TerminalServer::Close {
        session_id: id.to_owned(),
        exit_code,
    })
}

/// PTY → ring → sockets, until the PTY reports end of file (or EIO: no process has it open).
async fn read_loop(session: Arc<Session>, mut pty: pty_process::OwnedReadPty) {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut decoder = Utf8Stream::default();
    let mut end = 0u64;
    loop {
        match pty.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                let text = decoder.decode(&buf[..n]);
                end += text.len() as u64;
                session.publish(text, end);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let text = decoder.finish();
    end += text.len() as u64;
    session.publish(text, end);
}

/// Client input and resizes → PTY, in order.
async fn write_loop(
    mut rx: mpsc::Receiver<PtyCommand>,
    mut pty: pty_process::OwnedWritePty,
    ended: CancellationToken,
) {
    loop {
        let cmd = tokio::select! {
            _ = ended.cancelled() => break,
            cmd = rx.recv() => match cmd {
                Some(cmd) => cmd,
                None => break,
            },
        };
        match cmd {
            PtyCommand::Input(data) => {
                let write = async {
                    pty.write_all(data.as_bytes()).await?;
                    pty.flush().await
                };
                tokio::select! {
                    _ = ended.cancelled() => break,
                    res = write => if res.is_err() { break },
                }
            }
            PtyCommand::Resize { cols, rows } => {
                if let Err(e) = pty.resize(pty_process::Size::new(rows, cols)) {
                    tracing::debug!(%e, "resize failed");
                }
            }
        }
    }
}

/// Waits for the process to exit, lets its last output drain, then tells every socket.
async fn wait(
    session: Arc<Session>,
    mut child: tokio::process::Child,
    reader: tokio::task::JoinHandle<()>,
    registry: Weak<Terminals>,
) {
    let status = child.wait().await;
    let mut reader = reader;
    if tokio::time::timeout(DRAIN_AFTER_EXIT, &mut reader)
        .await
        .is_err()
    {
        // A background process still holds the terminal open: stop reading it.
        reader.abort();
    }
    let exit_code = status.ok().and_then(|s| s.code());
    tracing::info!(session = %session.id, ?exit_code, "terminal session ended");
    // Tell the sockets first, then forget the session: a `create` in between re-attaches to the
    // ended session and is told it ended, rather than seeing a new session's id closed.
    session.finish(exit_code);
    if let Some(registry) = registry.upgrade() {
        registry.remove(&session);
    }
}
