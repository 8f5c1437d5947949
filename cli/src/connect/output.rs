//! Writing terminal output: exactly the bytes received, never twice.
//!
//! `seq` on an `output` frame is the byte offset of the chunk's end in the session's output. A
//! replay after a reconnect should start after the `lastSeq` we sent; should it overlap anyway,
//! the part already written is skipped here, so the screen never shows anything twice.

use std::io::Write;

/// The part of a chunk ending at `seq` that lies after `last_seq`.
pub fn unseen(data: &[u8], seq: Option<u64>, last_seq: Option<u64>) -> &[u8] {
    match (seq, last_seq) {
        (Some(end), Some(last)) if end <= last => &[],
        (Some(end), Some(last)) => {
            let start = end.saturating_sub(data.len() as u64);
            if start >= last {
                data
            } else {
                // last - start < data.len() because end > last.
                &data[(last - start) as usize..]
            }
        }
        _ => data,
    }
}

/// Writes to stdout and flushes, so interactive output appears at once.
pub fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_data_is_written_whole() {
        assert_eq!(unseen(b"abc", Some(3), None), b"abc");
        assert_eq!(unseen(b"abc", None, Some(10)), b"abc");
        assert_eq!(unseen(b"def", Some(6), Some(3)), b"def");
    }

    #[test]
    fn replayed_data_is_skipped_or_trimmed() {
        assert_eq!(unseen(b"abc", Some(3), Some(3)), b"");
        assert_eq!(unseen(b"abc", Some(3), Some(5)), b"");
        assert_eq!(unseen(b"abcdef", Some(6), Some(4)), b"ef");
    }

    #[test]
    fn multibyte_output_is_passed_through_as_bytes() {
        let text = "日本語 🎉\x1b[0m";
        assert_eq!(unseen(text.as_bytes(), Some(100), Some(0)), text.as_bytes());
    }
}
