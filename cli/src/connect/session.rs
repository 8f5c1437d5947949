//! One terminal session across as many connections as it takes: the relay loop of a connection
//! and the reconnect loop around it.
//!
//! The session id is ours (a UUID unless `--session` names one), so after a drop we send `create`
//! with the same id and the last `seq` we printed, and the service re-attaches us to the same
//! shell and replays only what we missed.

use std::time::Duration;

use futures_util::SinkExt;
use protocol::control::{ControlServer, ErrorCode};
use protocol::terminal::{DEFAULT_COLS, DEFAULT_ROWS, TerminalClient, TerminalServer};
use protocol::{ClientMessage, ErrorFrame, ServerMessage, WorkspaceStatus};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use super::backoff;
use super::close::{AfterClose, after_close};
use super::input::{LocalInput, Request};
use super::output::{unseen, write_stdout};
use super::script::{self, MarkerScan, Scan};
use crate::config::Config;
use crate::error::CliError;
use crate::spinner::{self, WakeDisplay};
use crate::tty::{self, RawMode};
use crate::ws::{self, Incoming, Intent, Socket};

/// How often we ping the gateway, and how long silence may last before we call the link dead.
const KEEPALIVE: Duration = Duration::from_secs(15);
const DEAD_AFTER: Duration = Duration::from_secs(50);

/// Interactive (a terminal on stdin) or script (a pipe or file on stdin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Interactive,
    Script,
}

/// Where script mode is.
#[derive(Debug)]
enum ScriptState {
    /// Not started (interactive mode, or before the first `created`).
    Idle,
    /// The prelude is sent; waiting for the marker before input may go.
    Prelude(MarkerScan),
    /// The script is running; input flows.
    Running,
}

/// How one connection ended.
#[derive(Debug)]
enum Outcome {
    /// The remote shell exited with this code.
    Exit(u8),
    /// `~.`.
    Detached,
    /// The connection dropped; reconnect.
    Dropped(String),
    /// Give up with this error.
    Failed(CliError),
}

/// The signals the session handles itself.
struct Signals {
    stop: Terminating,
    winch: Signal,
}

/// The signals that end the session (they would kill us, leaving the terminal raw).
struct Terminating {
    term: Signal,
    hup: Signal,
    int: Signal,
}

impl Signals {
    fn new() -> Result<Signals, CliError> {
        let make = |kind| signal(kind).map_err(CliError::other);
        Ok(Signals {
            stop: Terminating {
                term: make(SignalKind::terminate())?,
                hup: make(SignalKind::hangup())?,
                int: make(SignalKind::interrupt())?,
            },
            winch: make(SignalKind::window_change())?,
        })
    }
}

impl Terminating {
    /// The next terminating signal, as the error it becomes.
    async fn terminating(&mut self) -> CliError {
        let (name, signal) = tokio::select! {
            _ = self.term.recv() => ("SIGTERM", 15),
            _ = self.hup.recv() => ("SIGHUP", 1),
            _ = self.int.recv() => ("SIGINT", 2),
        };
        CliError::Interrupted { name, signal }
    }
}

/// The state of one terminal session.
pub struct Session {
    workspace: String,
    session_id: String,
    mode: Mode,
    intent: Intent,
    reconnect_timeout: Duration,
    /// The last output offset written to stdout.
    last_seq: Option<u64>,
    /// Whether any connection has had its `created` yet.
    attached_once: bool,
    /// Whether the current connection has had its `created`.
    attached_now: bool,
    script: ScriptState,
    input: LocalInput,
    raw: Option<RawMode>,
    stderr_tty: bool,
}

impl Session {
    pub fn new(
        workspace: String,
        session_id: String,
        mode: Mode,
        start: bool,
        reconnect_timeout: Duration,
    ) -> Session {
        Session {
            workspace,
            session_id,
            mode,
            intent: Intent {
                start,
                counts: true,
            },
            reconnect_timeout,
            last_seq: None,
            attached_once: false,
            attached_now: false,
            script: ScriptState::Idle,
            input: LocalInput::new(mode == Mode::Interactive),
            raw: None,
            stderr_tty: tty::stderr_is_tty(),
        }
    }

    /// Runs the session to its end; returns the exit code.
    pub async fn run(mut self, config: &Config) -> Result<u8, CliError> {
        let mut signals = Signals::new()?;
        // The first connection's failures are final: there is nothing to resume yet.
        let mut socket = ws::open(config, &self.workspace, self.intent)
            .await
            .map_err(|e| e.error)?;
        loop {
            let outcome = self.relay(&mut socket, &mut signals).await;
            let outcome = match outcome {
                Outcome::Dropped(reason) => {
                    self.notice(&format!("connection lost: {reason}; reconnecting…"));
                    match self.reconnect(config, &mut signals).await {
                        Ok(s) => {
                            socket = s;
                            continue;
                        }
                        Err(outcome) => outcome,
                    }
                }
                other => {
                    // A polite close, so the gateway drops our lease at once.
                    let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
                    other
                }
            };
            // Leave raw mode before anything is printed for the user.
            self.raw = None;
            return match outcome {
                Outcome::Exit(code) => Ok(code),
                Outcome::Detached => {
                    eprintln!(
                        "[aether] detached; session {sid} keeps running. Reattach with: aether \
                         workspace connect {ws} --session {sid}",
                        sid = self.session_id,
                        ws = self.workspace
                    );
                    Ok(crate::error::code::OK)
                }
                Outcome::Failed(err) => Err(err),
                Outcome::Dropped(reason) => Err(CliError::ConnectionLost(reason)),
            };
        }
    }

    /// Opens a new connection after a drop, with backoff, still serving local input (so `~.`
    /// works while disconnected) and signals.
    async fn reconnect(
        &mut self,
        config: &Config,
        signals: &mut Signals,
    ) -> Result<Socket, Outcome> {
        let started = Instant::now();
        let mut last_error = String::from("not attempted");
        for attempt in 0.. {
            if started.elapsed() > self.reconnect_timeout {
                break;
            }
            let sleep = tokio::time::sleep(backoff::next(attempt));
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    ev = self.input.recv() => {
                        if let Some(Request::Detach) = self.input.handle(ev) {
                            return Err(Outcome::Detached);
                        }
                    }
                    err = signals.stop.terminating() => return Err(Outcome::Failed(err)),
                    _ = signals.winch.recv() => {}
                }
            }
            match ws::open(config, &self.workspace, self.intent).await {
                Ok(socket) => return Ok(socket),
                Err(e) if e.transient => last_error = e.error.to_string(),
                Err(e) => return Err(Outcome::Failed(e.error)),
            }
        }
        Err(Outcome::Failed(CliError::ConnectionLost(format!(
            "could not reconnect within {}s: {last_error}",
            self.reconnect_timeout.as_secs()
        ))))
    }

    /// Relays one connection until it ends.
    async fn relay(&mut self, socket: &mut Socket, signals: &mut Signals) -> Outcome {
        self.attached_now = false;
        let mut display = WakeDisplay::new(self.stderr_tty, &self.workspace);
        let mut last_error: Option<String> = None;
        let (cols, rows) = self.size();
        let create = TerminalClient::Create {
            session_id: self.session_id.clone(),
            cols: Some(cols),
            rows: Some(rows),
            last_seq: self.last_seq,
        };
        if let Err(e) = ws::send(socket, &ClientMessage::Terminal(create)).await {
            return Outcome::Dropped(e.to_string());
        }
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut spin = tokio::time::interval(spinner::TICK);
        let mut last_rx = Instant::now();
        loop {
            let step = tokio::select! {
                incoming = ws::recv(socket) => {
                    last_rx = Instant::now();
                    match incoming {
                        Incoming::Message(msg) => {
                            self.on_message(msg, socket, &mut display, &mut last_error).await
                        }
                        Incoming::Unknown(_) | Incoming::Alive => None,
                        Incoming::Closed(frame) => {
                            let (code, reason) = match frame {
                                Some((c, r)) => (Some(c), r),
                                None => (None, String::new()),
                            };
                            match after_close(code, &reason, last_error.as_deref()) {
                                AfterClose::Reconnect(why) => {
                                    display.finish(Some("connection lost"));
                                    Some(Outcome::Dropped(why))
                                }
                                AfterClose::Fail(err) => {
                                    display.finish(Some("failed"));
                                    Some(Outcome::Failed(err))
                                }
                            }
                        }
                    }
                }
                ev = self.input.recv() => {
                    self.input.handle(ev).map(|Request::Detach| Outcome::Detached)
                }
                _ = signals.winch.recv() => {
                    let (cols, rows) = self.size();
                    let resize = TerminalClient::Resize {
                        session_id: self.session_id.clone(),
                        cols,
                        rows,
                    };
                    self.send_or_drop(socket, ClientMessage::Terminal(resize)).await
                }
                err = signals.stop.terminating() => {
                    display.finish(Some("interrupted"));
                    if self.mode == Mode::Script && self.attached_now {
                        // Stop the remote script too: nobody will read its output any more.
                        let close = TerminalClient::Close { session_id: self.session_id.clone() };
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            ws::send(socket, &ClientMessage::Terminal(close)),
                        )
                        .await;
                    }
                    Some(Outcome::Failed(err))
                }
                _ = keepalive.tick() => {
                    if last_rx.elapsed() > DEAD_AFTER {
                        Some(Outcome::Dropped(format!(
                            "no answer from the gateway for {}s",
                            DEAD_AFTER.as_secs()
                        )))
                    } else if let Err(e) = socket.send(Message::Ping(Default::default())).await {
                        Some(Outcome::Dropped(e.to_string()))
                    } else {
                        None
                    }
                }
                _ = spin.tick(), if display.is_drawing() => {
                    display.tick();
                    None
                }
            };
            if let Some(outcome) = step {
                return outcome;
            }
            if let Some(outcome) = self.flush_pending(socket).await {
                return outcome;
            }
        }
    }

    async fn on_message(
        &mut self,
        msg: ServerMessage,
        socket: &mut Socket,
        display: &mut WakeDisplay,
        last_error: &mut Option<String>,
    ) -> Option<Outcome> {
        match msg {
            ServerMessage::Workspace(ControlServer::Status {
                status, message, ..
            }) => {
                display.status(status);
                if status == WorkspaceStatus::Error {
                    *last_error = message;
                }
                None
            }
            ServerMessage::Workspace(ControlServer::Error { code, message }) => {
                let text = describe(code, &message);
                display.finish(Some(&text));
                *last_error = Some(message);
                None
            }
            ServerMessage::Workspace(ControlServer::Pong { .. }) => None,
            ServerMessage::Terminal(t) => self.on_terminal(t, socket, display).await,
            ServerMessage::Error(ErrorFrame::Error { error, .. }) => {
                self.notice(&format!("the gateway reported an error: {error}"));
                None
            }
            _ => None,
        }
    }

    async fn on_terminal(
        &mut self,
        msg: TerminalServer,
        socket: &mut Socket,
        display: &mut WakeDisplay,
    ) -> Option<Outcome> {
        match msg {
            TerminalServer::Created {
                session_id,
                resumed,
                seq,
            } if session_id == self.session_id => {
                display.finish(None);
                self.on_created(resumed, seq, socket).await
            }
            TerminalServer::Output {
                session_id,
                data,
                seq,
            } if session_id == self.session_id => self.on_output(data.as_bytes(), seq),
            TerminalServer::Lost { session_id, bytes } if session_id == self.session_id => {
                self.notice(&format!(
                    "{bytes} bytes of output were lost while disconnected"
                ));
                None
            }
            TerminalServer::Close {
                session_id,
                exit_code,
            } if session_id == self.session_id => Some(Outcome::Exit(match exit_code {
                Some(code) => u8::try_from(code).unwrap_or(crate::error::code::FAILURE),
                None => crate::error::code::REMOTE_SIGNALED,
            })),
            _ => None,
        }
    }

    async fn on_created(
        &mut self,
        resumed: bool,
        seq: u64,
        socket: &mut Socket,
    ) -> Option<Outcome> {
        self.attached_now = true;
        let first = !self.attached_once;
        self.attached_once = true;
        if !resumed {
            // A fresh shell: its output starts at `seq`, whatever we saw of an older one.
            self.last_seq = Some(seq);
        }
        if first {
            match self.mode {
                Mode::Interactive => match RawMode::enable() {
                    Ok(raw) => self.raw = Some(raw),
                    Err(e) => {
                        return Some(Outcome::Failed(CliError::Other(format!(
                            "cannot put the terminal in raw mode: {e}"
                        ))));
                    }
                },
                Mode::Script if resumed => self.script = ScriptState::Running,
                Mode::Script => {
                    self.script = ScriptState::Prelude(MarkerScan::default());
                    let prelude = TerminalClient::Input {
                        session_id: self.session_id.clone(),
                        data: script::PRELUDE.to_owned(),
                    };
                    if let Some(o) = self
                        .send_or_drop(socket, ClientMessage::Terminal(prelude))
                        .await
                    {
                        return Some(o);
                    }
                }
            }
            self.input.start();
        } else if resumed {
            self.notice(&format!("reattached to session {}", self.session_id));
        } else if self.mode == Mode::Script {
            return Some(Outcome::Failed(CliError::ConnectionLost(
                "the remote session ended while disconnected; its output and exit code are lost"
                    .into(),
            )));
        } else {
            self.notice("the previous shell is gone; this is a new one");
        }
        None
    }

    fn on_output(&mut self, data: &[u8], seq: Option<u64>) -> Option<Outcome> {
        let fresh = unseen(data, seq, self.last_seq);
        if let Some(seq) = seq {
            self.last_seq = Some(self.last_seq.map_or(seq, |l| l.max(seq)));
        }
        let to_write = match &mut self.script {
            ScriptState::Prelude(scan) => match scan.push(fresh) {
                Scan::Waiting => return None,
                Scan::Found(rest) => {
                    self.script = ScriptState::Running;
                    rest
                }
                Scan::Overflow => {
                    return Some(Outcome::Failed(CliError::Other(
                        "the remote shell did not start the script (is bash installed?)".into(),
                    )));
                }
            },
            _ => fresh.to_vec(),
        };
        match write_stdout(&to_write) {
            Ok(()) => None,
            Err(e) => Some(Outcome::Failed(CliError::Other(format!(
                "cannot write to stdout: {e}"
            )))),
        }
    }

    /// Sends queued input if the session can take it now.
    async fn flush_pending(&mut self, socket: &mut Socket) -> Option<Outcome> {
        let ready = self.attached_now
            && match self.mode {
                Mode::Interactive => true,
                Mode::Script => matches!(self.script, ScriptState::Running),
            };
        if !ready {
            return None;
        }
        while let Some(data) = self.input.next_pending() {
            let msg = ClientMessage::Terminal(TerminalClient::Input {
                session_id: self.session_id.clone(),
                data,
            });
            if let Some(o) = self.send_or_drop(socket, msg).await {
                return Some(o);
            }
        }
        None
    }

    async fn send_or_drop(&mut self, socket: &mut Socket, msg: ClientMessage) -> Option<Outcome> {
        match ws::send(socket, &msg).await {
            Ok(()) => None,
            Err(e) => Some(Outcome::Dropped(e.to_string())),
        }
    }

    /// The size to give the remote terminal: ours, or the protocol's default without one.
    fn size(&self) -> (u16, u16) {
        let local = match self.mode {
            Mode::Interactive => tty::size(),
            Mode::Script if tty::stdout_is_tty() => tty::size(),
            Mode::Script => None,
        };
        local.unwrap_or((DEFAULT_COLS, DEFAULT_ROWS))
    }

    /// Status lines for the user: always in interactive mode, only on a terminal otherwise, so
    /// a script's stderr stays its own.
    fn notice(&self, text: &str) {
        if self.mode == Mode::Interactive || self.stderr_tty {
            tty::notice(text);
        }
    }
}

fn describe(code: ErrorCode, message: &str) -> String {
    let code = serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    format!("{message} ({code})")
}
