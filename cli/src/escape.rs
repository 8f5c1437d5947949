//! ssh-style escape sequences on the local keyboard: `~.` detaches and `~?` lists the escapes,
//! each recognized only right after a newline (or at the very start), so a `~` typed inside a
//! line reaches the remote shell untouched.
//!
//! This is a pure state machine over input bytes; the session decides what the actions do.

/// What the input bytes amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Bytes for the remote terminal.
    Send(Vec<u8>),
    /// `~.`: leave the session running and exit.
    Detach,
    /// `~?`: show the list of escapes.
    Help,
}

/// The escape list shown for `~?`.
pub const HELP: &str = "Supported escape sequences (type them right after Enter):\r\n \
     ~.  detach (the remote session keeps running; reattach with --session)\r\n \
     ~?  this help\r\n \
     ~~  send a single ~\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line: a `~` may begin an escape.
    LineStart,
    /// Inside a line: everything is plain input.
    InLine,
    /// A `~` at the start of a line, held back until the next byte says what it is.
    Tilde,
}

/// The escape recognizer. Starts at a line start, like ssh.
#[derive(Debug, Clone)]
pub struct EscapeParser {
    state: State,
}

impl Default for EscapeParser {
    fn default() -> Self {
        EscapeParser {
            state: State::LineStart,
        }
    }
}

fn is_newline(b: u8) -> bool {
    // Enter in raw mode is `\r`; piped or cooked input uses `\n`.
    b == b'\r' || b == b'\n'
}

impl EscapeParser {
    pub fn new() -> EscapeParser {
        EscapeParser::default()
    }

    /// Feeds input bytes; returns the actions in order. Plain bytes are coalesced into as few
    /// `Send`s as possible.
    pub fn feed(&mut self, input: &[u8]) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            match self.state {
                State::LineStart if b == b'~' => self.state = State::Tilde,
                State::LineStart | State::InLine => {
                    out.push(b);
                    self.state = self.after(b);
                }
                State::Tilde => match b {
                    b'.' => {
                        flush(&mut out, &mut actions);
                        actions.push(Action::Detach);
                        self.state = State::LineStart;
                    }
                    b'?' => {
                        flush(&mut out, &mut actions);
                        actions.push(Action::Help);
                        self.state = State::LineStart;
                    }
                    b'~' => {
                        out.push(b'~');
                        self.state = State::InLine;
                    }
                    other => {
                        out.push(b'~');
                        out.push(other);
                        self.state = self.after(other);
                    }
                },
            }
        }
        flush(&mut out, &mut actions);
        actions
    }

    fn after(&self, b: u8) -> State {
        if is_newline(b) {
            State::LineStart
        } else {
            State::InLine
        }
    }
}

fn flush(out: &mut Vec<u8>, actions: &mut Vec<Action>) {
    if !out.is_empty() {
        actions.push(Action::Send(std::mem::take(out)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(s: &str) -> Action {
        Action::Send(s.as_bytes().to_vec())
    }

    #[test]
    fn detach_at_start_and_after_enter() {
        assert_eq!(EscapeParser::new().feed(b"~."), vec![Action::Detach]);
        assert_eq!(
            EscapeParser::new().feed(b"ls\r~."),
            vec![send("ls\r"), Action::Detach]
        );
        assert_eq!(
            EscapeParser::new().feed(b"ls\n~."),
            vec![send("ls\n"), Action::Detach]
        );
    }

    #[test]
    fn tilde_inside_a_line_is_plain_input() {
        assert_eq!(EscapeParser::new().feed(b"cd ~."), vec![send("cd ~.")]);
        assert_eq!(EscapeParser::new().feed(b"a~?"), vec![send("a~?")]);
    }

    #[test]
    fn sequence_split_across_reads() {
        let mut p = EscapeParser::new();
        assert_eq!(p.feed(b"x\r"), vec![send("x\r")]);
        assert_eq!(p.feed(b"~"), vec![]);
        assert_eq!(p.feed(b"."), vec![Action::Detach]);
    }

    #[test]
    fn help_then_detach() {
        let mut p = EscapeParser::new();
        assert_eq!(p.feed(b"~?~."), vec![Action::Help, Action::Detach]);
    }

    #[test]
    fn double_tilde_sends_one_and_other_bytes_pass_through() {
        assert_eq!(EscapeParser::new().feed(b"~~."), vec![send("~.")]);
        assert_eq!(EscapeParser::new().feed(b"~x"), vec![send("~x")]);
        // A tilde followed by Enter keeps the line-start state.
        let mut p = EscapeParser::new();
        assert_eq!(p.feed(b"~\r"), vec![send("~\r")]);
        assert_eq!(p.feed(b"~."), vec![Action::Detach]);
    }
}
