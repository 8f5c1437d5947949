//! Turning a byte stream (a PTY, a pipe) into text frames without ever emitting broken UTF-8.
//!
//! A read can end in the middle of a multi-byte character; the incomplete tail is carried over
//! to the next read. Bytes that are genuinely invalid become U+FFFD, as lossy decoding would.

/// A streaming UTF-8 decoder.
#[derive(Debug, Default)]
pub(crate) struct Utf8Stream {
    carry: Vec<u8>,
}

impl Utf8Stream {
    /// Decodes `input` after whatever was carried over; returns the complete text, keeping an
    /// incomplete trailing sequence for next time.
    pub(crate) fn decode(&mut self, input: &[u8]) -> String {
        let owned;
        let bytes: &[u8] = if self.carry.is_empty() {
            input
        } else {
            self.carry.extend_from_slice(input);
            owned = std::mem::take(&mut self.carry);
            &owned
        };
        let mut out = String::with_capacity(bytes.len());
        let mut rest = bytes;
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    out.push_str(valid);
                    break;
                }
                Err(err) => {
                    let (valid, after) = rest.split_at(err.valid_up_to());
                    // Safe by construction: `valid_up_to` bytes are valid UTF-8.
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match err.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        None => {
                            // An incomplete sequence at the very end: keep it for the next read.
                            self.carry.extend_from_slice(after);
                            break;
                        }
                    }
                }
            }
        }
        out
    }

    /// Ends the stream: a still-incomplete sequence becomes U+FFFD.
    pub(crate) fn finish(&mut self) -> String {
        if self.carry.is_empty() {
            return String::new();
        }
        let text = String::from_utf8_lossy(&self.carry).into_owned();
        self.carry.clear();
        text
    }
}

/// The largest index `<= at` that is a char boundary of `s`.
pub(crate) fn floor_boundary(s: &str, mut at: usize) -> usize {
    if at >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_multibyte_is_carried() {
        let euro = "€".as_bytes(); // 3 bytes
        let mut d = Utf8Stream::default();
        assert_eq!(d.decode(&[b'a', euro[0]]), "a");
        assert_eq!(d.decode(&euro[1..2]), "");
        assert_eq!(d.decode(&[euro[2], b'b']), "€b");
        assert_eq!(d.finish(), "");
    }

    #[test]
    fn invalid_bytes_are_replaced_and_stream_continues() {
        let mut d = Utf8Stream::default();
        assert_eq!(d.decode(b"a\xffb\xc3"), "a\u{fffd}b");
        assert_eq!(d.decode(b"("), "\u{fffd}(");
        assert_eq!(d.decode(b"\xe2\x82"), "");
        assert_eq!(d.finish(), "\u{fffd}");
    }

    #[test]
    fn every_split_of_a_mixed_string_round_trips() {
        let text = "héllo → wörld 🎉 ok";
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let mut d = Utf8Stream::default();
            let mut out = d.decode(&bytes[..cut]);
            out.push_str(&d.decode(&bytes[cut..]));
            out.push_str(&d.finish());
            assert_eq!(out, text, "cut at {cut}");
        }
    }

    #[test]
    fn floor_boundary_backs_off_inside_a_char() {
        let s = "a€b";
        assert_eq!(floor_boundary(s, 2), 1);
        assert_eq!(floor_boundary(s, 4), 4);
        assert_eq!(floor_boundary(s, 99), 5);
    }
}
