//! Script mode: stdin is a pipe or a file, not a terminal.
//!
//! The workspace only offers PTY sessions, and a PTY echoes input and mixes prompts into the
//! output. So, like `ssh host bash -s < script`, a new session is first given a one-line prelude
//! that turns off echo, CR-LF translation and the terminal's special characters (every byte of
//! the script then arrives as is; only `^D` at the start of a line stays special), prints a
//! marker, and replaces the interactive shell by a non-interactive `bash -s` reading the rest of
//! the input (through `cat`, because bash with a terminal on stdin and stderr would be
//! interactive again). Everything before the marker — prompt, echo of the prelude — is dropped;
//! everything after is the script's own output, byte for byte, and the session's exit code is the
//! script's. At the end of stdin, `^D` ends `cat`, so `bash -s` sees the end of the script.

/// The marker the prelude prints; the RS bytes are written by `printf`, so the echoed prelude
/// line (which contains the text `\036`) cannot match.
pub const MARKER: &[u8] = b"\x1eaether-script\x1e";

/// The prelude line. The leading space keeps it out of the shell's history.
pub const PRELUDE: &str = " stty -echo -onlcr -isig -ixon -iexten erase undef kill undef 2>/dev/null; \
     printf '\\036aether-script\\036'; exec bash -c 'cat | bash -s'\n";

/// End of input for the remote `cat` (the terminal's EOF character, at the start of a line).
pub const EOF_KEY: &str = "\x04";

/// Output held back until the marker shows; past this the remote shell is not cooperating.
pub const MAX_PRELUDE_OUTPUT: usize = 1 << 20;

/// Finds the marker in the output seen so far.
#[derive(Debug, Default)]
pub struct MarkerScan {
    seen: Vec<u8>,
}

/// What a chunk of output means before the script has started.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// Still waiting for the marker.
    Waiting,
    /// The marker showed; these bytes after it are script output.
    Found(Vec<u8>),
    /// Too much output without the marker.
    Overflow,
}

impl MarkerScan {
    pub fn push(&mut self, chunk: &[u8]) -> Scan {
        self.seen.extend_from_slice(chunk);
        if let Some(at) = find(&self.seen, MARKER) {
            let rest = self.seen.split_off(at + MARKER.len());
            self.seen.clear();
            return Scan::Found(rest);
        }
        if self.seen.len() > MAX_PRELUDE_OUTPUT {
            return Scan::Overflow;
        }
        Scan::Waiting
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What to send at the end of stdin: a newline if the script's last line had none (so the
/// terminal's line buffer is flushed), then the EOF key.
pub fn end_of_input(last_byte: Option<u8>) -> String {
    match last_byte {
        None | Some(b'\n') => EOF_KEY.to_owned(),
        Some(_) => format!("\n{EOF_KEY}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_prelude_does_not_match_the_marker() {
        let mut scan = MarkerScan::default();
        let echo = PRELUDE.replace('\n', "\r\n");
        assert_eq!(scan.push(echo.as_bytes()), Scan::Waiting);
    }

    #[test]
    fn marker_split_across_chunks() {
        let mut scan = MarkerScan::default();
        assert_eq!(scan.push(b"$ prompt\x1eaether-"), Scan::Waiting);
        assert_eq!(scan.push(b"script\x1ehi\n"), Scan::Found(b"hi\n".to_vec()));
    }

    #[test]
    fn end_of_input_completes_the_last_line() {
        assert_eq!(end_of_input(None), "\x04");
        assert_eq!(end_of_input(Some(b'\n')), "\x04");
        assert_eq!(end_of_input(Some(b'3')), "\n\x04");
    }
}
