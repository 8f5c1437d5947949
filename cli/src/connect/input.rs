//! Local input: a thread that reads stdin (blocking reads cannot be cancelled, so it is a plain
//! thread that dies with the process rather than a runtime task that shutdown would wait for),
//! and the conversion of its bytes into `input` strings.

use tokio::sync::mpsc;

/// One read from stdin.
#[derive(Debug)]
pub enum InputEvent {
    Data(Vec<u8>),
    /// End of input (or a read error, which ends input just the same).
    Eof,
}

/// Starts the reader thread. Reads are sent as they come; the bounded channel applies
/// backpressure to a fast pipe.
pub fn spawn_stdin() -> mpsc::Receiver<InputEvent> {
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

/// Receives from an optional channel; pends forever when there is none (or it ended), which
/// disables the branch in a `select!`.
pub async fn recv(rx: &mut Option<mpsc::Receiver<InputEvent>>) -> InputEvent {
    match rx {
        Some(r) => match r.recv().await {
            Some(ev) => ev,
            None => {
                *rx = None;
                InputEvent::Eof
            }
        },
        None => std::future::pending().await,
    }
}
