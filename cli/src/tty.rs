//! The local terminal: raw mode that is always undone, and its size.
//!
//! Raw mode is undone by [`RawMode`]'s `Drop` on every normal and error path (signals are turned
//! into errors by the session, so they take the same path), and by a panic hook for panics —
//! whichever runs first wins, the other is a no-op.

use std::io::IsTerminal;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether raw mode is on now; shared with the panic hook.
static RAW: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

/// Raw mode on the local terminal for as long as this value lives.
#[derive(Debug)]
pub struct RawMode {
    _private: (),
}

impl RawMode {
    pub fn enable() -> std::io::Result<RawMode> {
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                // Restore first, so the panic message is readable.
                restore();
                previous(info);
            }));
        });
        crossterm::terminal::enable_raw_mode()?;
        RAW.store(true, Ordering::SeqCst);
        Ok(RawMode { _private: () })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves raw mode if it is on. Idempotent.
pub fn restore() {
    if RAW.swap(false, Ordering::SeqCst) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// Whether raw mode is on (line endings on stderr need `\r\n` then).
pub fn is_raw() -> bool {
    RAW.load(Ordering::SeqCst)
}

/// The local terminal's size as (cols, rows), when there is a terminal.
pub fn size() -> Option<(u16, u16)> {
    match crossterm::terminal::size() {
        Ok((cols, rows)) if cols > 0 && rows > 0 => Some((cols, rows)),
        _ => None,
    }
}

pub fn stdin_is_tty() -> bool {
    std::io::stdin().is_terminal()
}

pub fn stdout_is_tty() -> bool {
    std::io::stdout().is_terminal()
}

pub fn stderr_is_tty() -> bool {
    std::io::stderr().is_terminal()
}

/// Writes a notice line to stderr, with the line ending raw mode needs.
pub fn notice(text: &str) {
    use std::io::Write;
    let text = if is_raw() {
        format!("\r\n[aether] {text}\r\n")
    } else {
        format!("[aether] {text}\n")
    };
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}
