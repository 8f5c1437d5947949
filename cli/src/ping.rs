//! `aether workspace ping`: round trips through the gateway to the workspace service
//! (`workspace` `ping` → `pong`), each latency and a summary, like `coder ping`.
//!
//! It connects as a non-counting observer, so pinging does not keep a workspace awake; it does
//! wake a stopped one first (with the same spinner as `connect`), and times only the round trips
//! made once it is running.

use std::time::Duration;

use protocol::control::{ControlClient, ControlServer};
use protocol::{ClientMessage, ServerMessage, WorkspaceStatus};
use serde::Serialize;
use tokio::time::Instant;

use crate::args::PingArgs;
use crate::config::Config;
use crate::connect::close::{AfterClose, after_close};
use crate::error::CliError;
use crate::spinner::{self, WakeDisplay};
use crate::tty;
use crate::ws::{self, Incoming, Intent, Socket};

/// The summary, also the `--json` output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub workspace_id: String,
    pub sent: u32,
    pub received: u32,
    pub rtts_ms: Vec<f64>,
    pub min_ms: Option<f64>,
    pub avg_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Summary {
    pub fn new(workspace_id: String, sent: u32, rtts: &[Duration]) -> Summary {
        let rtts_ms: Vec<f64> = rtts.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        let min_ms = rtts_ms.iter().copied().reduce(f64::min);
        let max_ms = rtts_ms.iter().copied().reduce(f64::max);
        let avg_ms =
            (!rtts_ms.is_empty()).then(|| rtts_ms.iter().sum::<f64>() / rtts_ms.len() as f64);
        Summary {
            workspace_id,
            sent,
            received: rtts.len() as u32,
            rtts_ms,
            min_ms,
            avg_ms,
            max_ms,
        }
    }

    /// The closing lines of the human output.
    pub fn text(&self) -> String {
        let loss = if self.sent == 0 {
            0.0
        } else {
            100.0 * f64::from(self.sent - self.received) / f64::from(self.sent)
        };
        let mut out = format!(
            "--- {} ping statistics ---\n{} sent, {} received, {loss:.0}% loss\n",
            self.workspace_id, self.sent, self.received
        );
        if let (Some(min), Some(avg), Some(max)) = (self.min_ms, self.avg_ms, self.max_ms) {
            out.push_str(&format!(
                "rtt min/avg/max = {min:.2}/{avg:.2}/{max:.2} ms\n"
            ));
        }
        out
    }
}

pub async fn run(config: &Config, args: &PingArgs, json: bool) -> Result<(), CliError> {
    config.token()?;
    let workspace = crate::connect::resolve(config, &args.id).await?;
    let intent = Intent {
        start: true,
        counts: false,
    };
    let mut socket = ws::open(config, &workspace, intent)
        .await
        .map_err(|e| e.error)?;
    wait_running(&mut socket, &workspace).await?;

    let mut rtts = Vec::new();
    let mut sent = 0;
    for seq in 1..=u64::from(args.count) {
        if seq > 1 {
            tokio::time::sleep(args.interval).await;
        }
        sent += 1;
        let started = Instant::now();
        let ping = ClientMessage::Workspace(ControlClient::Ping { seq, data: None });
        ws::send(&mut socket, &ping)
            .await
            .map_err(|e| CliError::ConnectionLost(e.to_string()))?;
        match tokio::time::timeout(args.timeout, await_pong(&mut socket, seq)).await {
            Ok(Ok(())) => {
                let rtt = started.elapsed();
                rtts.push(rtt);
                if !json {
                    println!(
                        "pong from {workspace}: seq={seq} time={:.2}ms",
                        rtt.as_secs_f64() * 1000.0
                    );
                }
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                if !json {
                    println!(
                        "no pong for seq={seq} within {}s",
                        args.timeout.as_secs_f64()
                    );
                }
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
    let summary = Summary::new(workspace, sent, &rtts);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).map_err(CliError::other)?
        );
    } else {
        print!("{}", summary.text());
    }
    if summary.received == 0 {
        return Err(CliError::ConnectionLost("no pong received".into()));
    }
    Ok(())
}

/// Waits for the workspace to be running, with the wake spinner.
async fn wait_running(socket: &mut Socket, workspace: &str) -> Result<(), CliError> {
    let mut display = WakeDisplay::new(tty::stderr_is_tty(), workspace);
    let mut spin = tokio::time::interval(spinner::TICK);
    let mut last_error = None;
    loop {
        tokio::select! {
            incoming = ws::recv(socket) => match incoming {
                Incoming::Message(ServerMessage::Workspace(ControlServer::Status { status, .. })) => {
                    display.status(status);
                    if status == WorkspaceStatus::Running {
                        return Ok(());
                    }
                }
                Incoming::Message(ServerMessage::Workspace(ControlServer::Error { message, .. })) => {
                    last_error = Some(message);
                }
                Incoming::Closed(frame) => {
                    display.finish(Some("failed"));
                    let (code, reason) = frame.map_or((None, String::new()), |(c, r)| (Some(c), r));
                    return Err(match after_close(code, &reason, last_error.as_deref()) {
                        AfterClose::Fail(e) => e,
                        AfterClose::Reconnect(why) => CliError::ConnectionLost(why),
                    });
                }
                _ => {}
            },
            _ = spin.tick(), if display.is_drawing() => display.tick(),
        }
    }
}

/// Reads until the pong for `seq`; other frames are ignored.
async fn await_pong(socket: &mut Socket, seq: u64) -> Result<(), CliError> {
    loop {
        match ws::recv(socket).await {
            Incoming::Message(ServerMessage::Workspace(ControlServer::Pong { seq: s, .. }))
                if s == seq =>
            {
                return Ok(());
            }
            Incoming::Closed(frame) => {
                let (code, reason) = frame.map_or((None, String::new()), |(c, r)| (Some(c), r));
                return Err(match after_close(code, &reason, None) {
                    AfterClose::Fail(e) => e,
                    AfterClose::Reconnect(why) => CliError::ConnectionLost(why),
                });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_statistics() {
        let s = Summary::new(
            "w".into(),
            4,
            &[Duration::from_millis(1), Duration::from_millis(3)],
        );
        assert_eq!(s.received, 2);
        assert_eq!(s.min_ms, Some(1.0));
        assert_eq!(s.max_ms, Some(3.0));
        assert_eq!(s.avg_ms, Some(2.0));
        let text = s.text();
        assert!(text.contains("4 sent, 2 received, 50% loss"), "{text}");
        assert!(
            text.contains("rtt min/avg/max = 1.00/2.00/3.00 ms"),
            "{text}"
        );
    }

    #[test]
    fn summary_without_replies() {
        let s = Summary::new("w".into(), 2, &[]);
        assert!(s.text().contains("100% loss"));
        assert!(!s.text().contains("rtt"));
    }
}
