//! Opening the workspace WebSocket (`/workspaces/{id}/ws`, token in the `Authorization` header)
//! and classifying handshake failures: which ones a reconnect loop may retry and which end it.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::HeaderValue;
use protocol::{ClientMessage, MAX_MESSAGE_SIZE, ServerMessage};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::config::Config;
use crate::error::CliError;

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a TCP connect plus handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// A failed connection attempt.
#[derive(Debug)]
pub struct OpenError {
    pub error: CliError,
    /// Whether trying again later can help (refused, timeout, 5xx), as opposed to 401/404.
    pub transient: bool,
}

/// What the socket is for: `connect` counts as activity and may wake; `ping` is an observer.
#[derive(Debug, Clone, Copy)]
pub struct Intent {
    pub start: bool,
    pub counts: bool,
}

/// Connects to the workspace's socket.
pub async fn open(config: &Config, workspace: &str, intent: Intent) -> Result<Socket, OpenError> {
    let token = config.token().map_err(|error| OpenError {
        error,
        transient: false,
    })?;
    let mut query = Vec::new();
    if !intent.start {
        query.push(("start", "false"));
    }
    if !intent.counts {
        query.push(("counts", "false"));
    }
    let url = config.ws_url(workspace, &query);
    let mut request = url.as_str().into_client_request().map_err(|e| OpenError {
        error: CliError::Usage(format!("bad gateway URL {url}: {e}")),
        transient: false,
    })?;
    let auth = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| OpenError {
        error: CliError::Usage("the token contains characters not allowed in a header".into()),
        transient: false,
    })?;
    request
        .headers_mut()
        .insert(http::header::AUTHORIZATION, auth);

    let mut ws_config = WebSocketConfig::default();
    ws_config.max_message_size = Some(MAX_MESSAGE_SIZE);
    ws_config.max_frame_size = Some(MAX_MESSAGE_SIZE);

    let attempt = tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt).await {
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(e)) => Err(classify(config, workspace, e)),
        Err(_) => Err(OpenError {
            error: CliError::Unreachable {
                url: config.api_url.clone(),
                cause: format!("no answer within {}s", HANDSHAKE_TIMEOUT.as_secs()),
            },
            transient: true,
        }),
    }
}

fn classify(config: &Config, workspace: &str, err: tungstenite::Error) -> OpenError {
    let url = config.api_url.clone();
    match err {
        tungstenite::Error::Http(resp) => {
            let status = resp.status();
            let body = resp
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .into_owned();
            let message = serde_json::from_str::<protocol::rest::ErrorBody>(&body)
                .map(|b| b.error)
                .unwrap_or_else(|_| status.canonical_reason().unwrap_or("error").to_owned());
            match status.as_u16() {
                401 => OpenError {
                    error: CliError::Unauthorized { url },
                    transient: false,
                },
                404 => OpenError {
                    error: CliError::NotFound(format!(
                        "workspace {workspace} not found (or it is not yours)"
                    )),
                    transient: false,
                },
                code => OpenError {
                    error: CliError::Rejected {
                        status: code,
                        message,
                    },
                    // A gateway that is shutting down or overloaded answers 5xx/429 for a while.
                    transient: code >= 500 || code == 429,
                },
            }
        }
        tungstenite::Error::Io(e) => OpenError {
            error: CliError::Unreachable {
                url,
                cause: e.to_string(),
            },
            transient: true,
        },
        other => OpenError {
            error: CliError::ConnectionLost(format!("handshake with {url} failed: {other}")),
            transient: true,
        },
    }
}

/// Sends one protocol message.
pub async fn send(socket: &mut Socket, msg: &ClientMessage) -> Result<(), tungstenite::Error> {
    socket.send(Message::text(msg.to_json())).await
}

/// One thing read from the socket, already decoded.
#[derive(Debug)]
pub enum Incoming {
    Message(ServerMessage),
    /// A text frame we do not understand (a newer server); ignored.
    Unknown(String),
    /// A control frame; only proves the connection is alive.
    Alive,
    /// The peer closed, with its code and reason if it sent them.
    Closed(Option<(u16, String)>),
}

/// Reads the next frame. Cancel-safe (it only polls the stream).
pub async fn recv(socket: &mut Socket) -> Incoming {
    match socket.next().await {
        Some(Ok(Message::Text(text))) => match ServerMessage::parse(&text) {
            Ok(msg) => Incoming::Message(msg),
            Err(_) => Incoming::Unknown(text.to_string()),
        },
        Some(Ok(Message::Close(frame))) => {
            Incoming::Closed(frame.map(|f| (u16::from(f.code), f.reason.to_string())))
        }
        Some(Ok(_)) => Incoming::Alive,
        Some(Err(_)) | None => Incoming::Closed(None),
    }
}
