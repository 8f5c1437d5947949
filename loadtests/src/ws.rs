//! The client side of one WebSocket session: connect from a chosen source address, and the
//! `workspace` channel frames the scenarios send and read.
//!
//! The hot path (`ping`/`pong`) is formatted and parsed by hand: the harness must not be the
//! bottleneck when it measures a relay, and a pong is recognised by two substrings and one number.
//! Status and error frames, which are rare, go through the `protocol` types.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use protocol::control::ControlServer;
use protocol::{ServerMessage, WorkspaceStatus};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

pub type Ws = WebSocketStream<TcpStream>;

/// Small buffers: thousands of client sockets live in one harness process, and tungstenite's
/// defaults (128 KiB read buffer) would cost more memory than the server under test.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(4 << 20)
        .max_message_size(Some(protocol::MAX_MESSAGE_SIZE))
}

/// Where a session goes: the host:port to dial and the full URL for the upgrade request.
pub fn dial_addr(url: &str) -> Result<SocketAddr> {
    let rest = url
        .strip_prefix("ws://")
        .context("only ws:// URLs (loopback)")?;
    let host = rest.split('/').next().unwrap_or(rest);
    let addr: SocketAddr = host.parse().with_context(|| format!("address in {url}"))?;
    if !addr.ip().is_loopback() {
        bail!("{url}: the harness targets loopback only");
    }
    Ok(addr)
}

/// TCP connect (bound to `source` when given) and the WebSocket upgrade.
pub async fn connect(url: &str, source: Option<IpAddr>) -> Result<Ws> {
    let addr = dial_addr(url)?;
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        // Binding before connect spreads sessions over several 127.0.0.x addresses, each with
        // its own ephemeral port range towards the server.
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await.context("tcp connect")?;
    stream.set_nodelay(true)?;
    let request = url.into_client_request()?;
    let (ws, _resp) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(client_config()))
            .await
            .context("websocket upgrade")?;
    Ok(ws)
}

/// The payload string of a probe, `len` bytes of ASCII.
pub fn payload(len: usize) -> String {
    "x".repeat(len)
}

/// `{"channel":"workspace","type":"ping","seq":N,"data":"…"}`.
pub fn ping_frame(seq: u64, data: &str) -> Message {
    Message::text(format!(
        r#"{{"channel":"workspace","type":"ping","seq":{seq},"data":"{data}"}}"#
    ))
}

/// What a frame from the server was, as far as the scenarios care.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Pong(u64),
    Status(WorkspaceStatus),
    Error(String),
    Other,
    Closed(Option<u16>),
}

/// Classifies one frame: pongs by substring (the hot path), the rest through `protocol`.
pub fn classify(msg: &Message) -> Incoming {
    match msg {
        Message::Text(text) => classify_text(text.as_str()),
        Message::Close(frame) => Incoming::Closed(frame.as_ref().map(|f| u16::from(f.code))),
        _ => Incoming::Other,
    }
}

fn classify_text(text: &str) -> Incoming {
    if text.contains(r#""type":"pong""#)
        && let Some(seq) = number_after(text, r#""seq":"#)
    {
        return Incoming::Pong(seq);
    }
    match ServerMessage::parse(text) {
        Ok(ServerMessage::Workspace(ControlServer::Status { status, .. })) => {
            Incoming::Status(status)
        }
        Ok(ServerMessage::Workspace(ControlServer::Error { code, message })) => {
            Incoming::Error(format!("{code:?}: {message}"))
        }
        Ok(ServerMessage::Workspace(ControlServer::Pong { seq, .. })) => Incoming::Pong(seq),
        Ok(ServerMessage::Error(e)) => Incoming::Error(format!("{e:?}")),
        _ => Incoming::Other,
    }
}

fn number_after(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits: &str = &text[start..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// Reads the next meaningful frame, with a guard timeout.
pub async fn next(ws: &mut Ws, within: Duration) -> Result<Incoming> {
    loop {
        match tokio::time::timeout(within, ws.next()).await {
            Err(_) => bail!("no frame within {within:?}"),
            Ok(None) => return Ok(Incoming::Closed(None)),
            Ok(Some(Err(e))) => return Err(e).context("read"),
            Ok(Some(Ok(msg))) => match classify(&msg) {
                Incoming::Other => continue,
                other => return Ok(other),
            },
        }
    }
}

/// Sends one ping and waits for its pong, skipping status frames.
pub async fn round_trip(ws: &mut Ws, seq: u64, data: &str, within: Duration) -> Result<()> {
    ws.send(ping_frame(seq, data)).await.context("send ping")?;
    loop {
        match next(ws, within).await? {
            Incoming::Pong(s) if s == seq => return Ok(()),
            Incoming::Pong(s) => bail!("pong {s} while waiting for {seq}"),
            Incoming::Status(_) => continue,
            Incoming::Error(e) => bail!("error frame: {e}"),
            Incoming::Closed(code) => bail!("closed ({code:?}) while waiting for pong {seq}"),
            Incoming::Other => continue,
        }
    }
}

/// A polite close: send the close frame and wait (briefly) for the server's.
pub async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_pong_status_and_error() {
        assert_eq!(
            classify_text(r#"{"channel":"workspace","type":"pong","seq":42,"data":"xx"}"#),
            Incoming::Pong(42)
        );
        assert_eq!(
            classify_text(
                r#"{"channel":"workspace","type":"status","workspaceId":"w","status":"starting"}"#
            ),
            Incoming::Status(WorkspaceStatus::Starting)
        );
        assert!(matches!(
            classify_text(
                r#"{"channel":"workspace","type":"error","code":"start_failed","message":"m"}"#
            ),
            Incoming::Error(_)
        ));
        assert_eq!(classify_text(r#"{"channel":"ports"}"#), Incoming::Other);
    }

    #[test]
    fn ping_is_a_protocol_message() {
        let Message::Text(t) = ping_frame(7, "ab") else {
            panic!()
        };
        let parsed = protocol::ClientMessage::parse(t.as_str()).unwrap();
        assert_eq!(
            parsed,
            protocol::ClientMessage::Workspace(protocol::control::ControlClient::Ping {
                seq: 7,
                data: Some("ab".into())
            })
        );
    }

    #[test]
    fn only_loopback() {
        assert!(dial_addr("ws://127.0.0.1:80/ws").is_ok());
        assert!(dial_addr("ws://10.0.0.1:80/ws").is_err());
    }
}
