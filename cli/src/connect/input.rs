//! Local input: a thread that reads stdin, and the conversion of its bytes into the `input`
//! strings the session sends.
//!
//! Reads happen on a plain thread, not a runtime task: a blocking read cannot be cancelled, and
//! runtime shutdown would wait for it; the thread simply dies with the process. [`LocalInput`]
//! then applies the escapes (interactive mode), decodes UTF-8 across reads, completes a script's
//! end (script mode), and queues the result until the session can send it.

use std::collections::VecDeque;
use std::io::Write;

use tokio::sync::mpsc;

use super::script;
use crate::escape::{self, Action, EscapeParser};
use crate::utf8::Utf8Decoder;

/// One read from stdin.
#[derive(Debug)]
pub enum InputEvent {
    Data(Vec<u8>),
    /// End of input (or a read error, which ends input just the same).
    Eof,
}

/// What local input asks of the session, beyond sending bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `~.`: leave the remote session running and exit.
    Detach,
}

/// Starts the reader thread. Reads are sent as they come; the bounded channel applies
/// backpressure to a fast pipe.
fn spawn_stdin() -> mpsc::Receiver<InputEvent> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            use std::io::Read;
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; 8192];
            loop {
                let event = match stdin.read(&mut buf) {
                    Ok(0) => InputEvent::Eof,
                    Ok(n) => InputEvent::Data(buf[..n].to_vec()),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => InputEvent::Eof,
                };
                let eof = matches!(event, InputEvent::Eof);
                if tx.blocking_send(event).is_err() || eof {
                    return;
                }
            }
        })
        .expect("spawn the stdin thread");
    rx
}

/// Local input of one session, across its connections.
#[derive(Debug)]
pub struct LocalInput {
    /// Interactive (escapes on) or script (escapes off, `^D` at the end).
    interactive: bool,
    rx: Option<mpsc::Receiver<InputEvent>>,
    started: bool,
    escapes: EscapeParser,
    decoder: Utf8Decoder,
    last_byte: Option<u8>,
    /// Strings not yet sent (while waking, reconnecting, or before a script starts).
    pending: VecDeque<String>,
}

impl LocalInput {
    pub fn new(interactive: bool) -> LocalInput {
        LocalInput {
            interactive,
            rx: None,
            started: false,
            escapes: EscapeParser::new(),
            decoder: Utf8Decoder::new(),
            last_byte: None,
            pending: VecDeque::new(),
        }
    }

    /// Starts reading stdin (once). Interactive sessions start only when attached, so that
    /// typeahead during a wake stays in the terminal until raw mode is on.
    pub fn start(&mut self) {
        if !self.started {
            self.started = true;
            self.rx = Some(spawn_stdin());
        }
    }

    /// The next read; pends forever before [`start`](Self::start) and after the end of input,
    /// which disables the branch in a `select!`. Cancel-safe.
    pub async fn recv(&mut self) -> InputEvent {
        match &mut self.rx {
            Some(rx) => match rx.recv().await {
                Some(ev) => ev,
                None => InputEvent::Eof,
            },
            None => std::future::pending().await,
        }
    }

    /// Handles one read: queues what is to be sent, and says if the user asked to detach.
    pub fn handle(&mut self, ev: InputEvent) -> Option<Request> {
        match ev {
            InputEvent::Data(bytes) if self.interactive => {
                for action in self.escapes.feed(&bytes) {
                    match action {
                        Action::Send(b) => {
                            let text = self.decoder.push(&b);
                            self.queue(text);
                        }
                        Action::Detach => return Some(Request::Detach),
                        Action::Help => {
                            let mut err = std::io::stderr().lock();
                            let _ = err.write_all(b"\r\n");
                            let _ = err.write_all(escape::HELP.as_bytes());
                            let _ = err.flush();
                        }
                    }
                }
            }
            InputEvent::Data(bytes) => {
                self.last_byte = bytes.last().copied().or(self.last_byte);
                let text = self.decoder.push(&bytes);
                self.queue(text);
            }
            InputEvent::Eof => {
                self.rx = None;
                let tail = self.decoder.finish();
                self.queue(tail);
                if !self.interactive {
                    // The script is complete: end the remote `cat`, so `bash -s` finishes.
                    self.queue(script::end_of_input(self.last_byte));
                }
            }
        }
        None
    }

    fn queue(&mut self, text: String) {
        if !text.is_empty() {
            self.pending.push_back(text);
        }
    }

    /// The next string to send, if any.
    pub fn next_pending(&mut self) -> Option<String> {
        self.pending.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(input: &mut LocalInput) -> String {
        std::iter::from_fn(|| input.next_pending()).collect()
    }

    #[test]
    fn script_input_is_completed_with_a_newline_and_eof() {
        let mut input = LocalInput::new(false);
        assert_eq!(
            input.handle(InputEvent::Data(b"echo hi; ~.".to_vec())),
            None
        );
        assert_eq!(input.handle(InputEvent::Data(b" exit 3".to_vec())), None);
        input.handle(InputEvent::Eof);
        // No escapes in script mode: `~.` is plain text.
        assert_eq!(drain(&mut input), "echo hi; ~. exit 3\n\x04");
    }

    #[test]
    fn interactive_input_applies_escapes_and_joins_split_characters() {
        let mut input = LocalInput::new(true);
        let e = "é".as_bytes();
        assert_eq!(input.handle(InputEvent::Data(vec![b'a', e[0]])), None);
        assert_eq!(input.handle(InputEvent::Data(vec![e[1], b'\r'])), None);
        assert_eq!(drain(&mut input), "aé\r");
        assert_eq!(
            input.handle(InputEvent::Data(b"~.".to_vec())),
            Some(Request::Detach)
        );
        assert_eq!(drain(&mut input), "");
        // No `^D` at the end of an interactive session's input.
        input.handle(InputEvent::Eof);
        assert_eq!(drain(&mut input), "");
    }
}
