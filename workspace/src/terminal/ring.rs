//! A terminal session's recent output: a bounded ring of the UTF-8 text sent to clients,
//! addressed by sequence number (the byte offset in the session's whole output).
//!
//! `seq` counts bytes of the UTF-8 text the session has emitted, so for consecutive `output`
//! frames `seq == previous seq + data.len()`. Since the ring holds only text, a replay can always
//! be cut at a character boundary; bytes skipped to reach one count as lost.

use std::collections::VecDeque;

/// The ring.
#[derive(Debug)]
pub(crate) struct Ring {
    buf: VecDeque<u8>,
    cap: usize,
    /// Sequence number of the first byte in `buf`.
    start: u64,
}

/// What a re-attaching client is sent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Replay {
    /// Bytes after the client's position that are no longer in the ring.
    pub(crate) lost: u64,
    /// The text after the client's position (or after the loss).
    pub(crate) text: String,
    /// Sequence number of the end of `text`.
    pub(crate) end: u64,
}

impl Ring {
    pub(crate) fn new(cap: usize) -> Ring {
        Ring {
            buf: VecDeque::new(),
            cap,
            start: 0,
        }
    }

    /// Sequence number after the last byte.
    pub(crate) fn end(&self) -> u64 {
        self.start + self.buf.len() as u64
    }

    /// Appends text, evicting the oldest bytes past the capacity.
    pub(crate) fn push(&mut self, text: &str) {
        let bytes = text.as_bytes();
        if bytes.len() >= self.cap {
            let skip = bytes.len() - self.cap;
            self.start += (self.buf.len() + skip) as u64;
            self.buf.clear();
            self.buf.extend(&bytes[skip..]);
            return;
        }
        let overflow = (self.buf.len() + bytes.len()).saturating_sub(self.cap);
        if overflow > 0 {
            self.buf.drain(..overflow);
            self.start += overflow as u64;
        }
        self.buf.extend(bytes);
    }

    /// Everything after `after` (a sequence number a client saw; 0 for all).
    pub(crate) fn replay(&self, after: u64) -> Replay {
        let end = self.end();
        if after >= end {
            return Replay {
                lost: 0,
                text: String::new(),
                end,
            };
        }
        let (mut lost, mut from) = if after < self.start {
            (self.start - after, 0usize)
        } else {
            (0, (after - self.start) as usize)
        };
        // Eviction (or an odd `after`) may have cut a character: skip its continuation bytes.
        while from < self.buf.len() && (self.buf[from] & 0xC0) == 0x80 {
            from += 1;
            lost += 1;
        }
        let (a, b) = self.buf.as_slices();
        let mut bytes = Vec::with_capacity(self.buf.len() - from);
        if from < a.len() {
            bytes.extend_from_slice(&a[from..]);
            bytes.extend_from_slice(b);
        } else {
            bytes.extend_from_slice(&b[from - a.len()..]);
        }
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
        };
        Replay { lost, text, end }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_everything_or_only_what_was_missed() {
        let mut ring = Ring::new(1024);
        ring.push("hello ");
        ring.push("world");
        assert_eq!(ring.end(), 11);
        assert_eq!(ring.replay(0).text, "hello world");
        assert_eq!(ring.replay(6).text, "world");
        assert_eq!(ring.replay(6).lost, 0);
        assert_eq!(ring.replay(11).text, "");
        assert_eq!(ring.replay(99).text, "");
    }

    #[test]
    fn eviction_is_reported_as_loss() {
        let mut ring = Ring::new(8);
        ring.push("0123456789");
        assert_eq!(ring.end(), 10);
        let r = ring.replay(0);
        assert_eq!((r.lost, r.text.as_str()), (2, "23456789"));
        ring.push("ab");
        let r = ring.replay(3);
        assert_eq!((r.lost, r.text.as_str()), (1, "456789ab"));
        let r = ring.replay(7);
        assert_eq!((r.lost, r.text.as_str()), (0, "789ab"));
    }

    #[test]
    fn replay_starts_at_a_char_boundary() {
        let mut ring = Ring::new(5);
        ring.push("ab€€"); // 2 + 3 + 3 = 8 bytes; ring keeps the last 5: "\xac€"
        let r = ring.replay(0);
        assert_eq!(r.text, "€");
        assert_eq!(r.lost, 5);
        assert_eq!(r.end, 8);
    }
}
