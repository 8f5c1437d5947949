//! The listener: one port for `GET /ws` (the WebSocket upgrade), `GET /status` and
//! `GET /healthz`, served by hyper's HTTP/1; the upgrade is answered here and the upgraded
//! connection handed to [`crate::socket`] with a tuned tungstenite configuration.
//!
//! Shutdown (the future given to [`Server::run`]): stop accepting, cancel the shared token (every
//! socket closes with 1001), hang up every terminal and end every agent task, then wait for the
//! remaining tasks — all within [`crate::Config::shutdown_grace`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    CONNECTION, CONTENT_TYPE, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::agent::{Agent, AgentConfig};
use crate::config::Config;
use crate::files::Files;
use crate::ports::Ports;
use crate::state::State;
use crate::terminal::Terminals;

/// tungstenite's read buffer: small, since most frames are small (the default is 128 KiB).
const READ_BUFFER: usize = 4 * 1024;
/// Bytes buffered before tungstenite writes to the socket.
const WRITE_BUFFER: usize = 16 * 1024;
/// Largest frame this service sends: a 100 MB file read, base64, in its JSON envelope.
const MAX_OUTGOING_FRAME: usize = (protocol::files::MAX_FILE_SIZE as usize) / 3 * 4 + (1 << 20);
/// How long an HTTP connection may take to finish after shutdown began.
const HTTP_DRAIN: Duration = Duration::from_secs(1);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot create the volume {path}: {err}")]
    Volume { path: String, err: std::io::Error },
    #[error("cannot listen on {addr}: {err}")]
    Bind {
        addr: SocketAddr,
        err: std::io::Error,
    },
    #[error("cannot watch the volume: {0}")]
    Watch(#[from] notify::Error),
}

/// The tungstenite configuration of every socket.
pub(crate) fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(WRITE_BUFFER + MAX_OUTGOING_FRAME)
        .max_message_size(Some(protocol::MAX_MESSAGE_SIZE))
        .max_frame_size(Some(protocol::MAX_MESSAGE_SIZE))
}

/// A bound, ready service.
pub struct Server {
    listener: TcpListener,
    state: Arc<State>,
}

impl Server {
    /// Validates `config`, creates the volume, binds, and starts the background work (port
    /// scanning, file watching). The service is ready when this returns.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        config.validate().map_err(ServerError::Config)?;
        std::fs::create_dir_all(&config.volume).map_err(|err| ServerError::Volume {
            path: config.volume.display().to_string(),
            err,
        })?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|err| ServerError::Bind {
                addr: config.listen,
                err,
            })?;
        let local = listener.local_addr().map_err(|err| ServerError::Bind {
            addr: config.listen,
            err,
        })?;
        let files = Files::new(&config.volume).map_err(|err| ServerError::Volume {
            path: config.volume.display().to_string(),
            err,
        })?;
        let volume = files.root().to_path_buf();
        let terminals = Terminals::new(volume.clone(), config.shell.clone(), config.ring_bytes);
        let agent = Agent::new(AgentConfig {
            volume,
            command: config.agent_command.clone(),
            history_bytes: config.agent_history_bytes,
            tasks_kept: config.agent_tasks_kept,
        });
        let ports = Ports::new(local.port());
        let state = State::new(config, terminals, agent, ports.clone(), files.clone());
        files.watch(state.shutdown.clone())?;
        {
            let ports = ports.clone();
            tokio::task::spawn_blocking(move || ports.poll()).await.ok();
        }
        tokio::spawn(ports.run(state.config.ports_interval, state.shutdown.clone()));
        Ok(Server { listener, state })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then shuts down within the configured grace.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server { listener, state } = self;
        // The accept loop is a task of its own, not part of this future (which `main` runs on
        // its own thread with `block_on`): a connection task spawned from a worker goes to that
        // worker's queue, where one spawned from outside goes through the shared queue and
        // wakes a worker thread for every connection. Aborted if this future is dropped.
        let stop_accepting = CancellationToken::new();
        let accepting = AbortOnDropHandle::new(tokio::spawn(accept(
            listener,
            state.clone(),
            stop_accepting.clone(),
        )));
        shutdown.await;
        stop_accepting.cancel();
        // The listener is dropped when the loop ends: no connection is accepted after this.
        let _ = accepting.await;
        let grace = state.config.shutdown_grace;
        tracing::info!(?grace, "shutting down");
        let deadline = tokio::time::Instant::now() + grace;
        state.shutdown.cancel();
        // Processes get most of the grace; the rest is for sockets to finish closing.
        let processes = grace.mul_f32(0.6);
        tokio::join!(
            state.terminals.shutdown(processes),
            state.agent.shutdown(processes),
        );
        state.tracker.close();
        if tokio::time::timeout_at(deadline, state.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not finish within the shutdown grace");
        }
        tracing::info!("stopped");
    }
}

/// Accepts connections until `stop` is cancelled, each served by its own tracked task.
async fn accept(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
    // Linux copies the listener's TCP_NODELAY into every accepted socket: one `setsockopt`
    // per connection saved (the gateway's listener does the same).
    let inherited = cfg!(target_os = "linux")
        && socket2::SockRef::from(&listener)
            .set_tcp_nodelay(true)
            .is_ok();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            res = listener.accept() => match res {
                Ok((stream, _peer)) => {
                    if !inherited {
                        let _ = stream.set_nodelay(true);
                    }
                    state.tracker.spawn(serve_http(state.clone(), stream));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

async fn serve_http(state: Arc<State>, stream: TcpStream) {
    let svc_state = state.clone();
    let service = service_fn(move |req| {
        let state = svc_state.clone();
        async move { Ok::<_, Infallible>(route(&state, req)) }
    });
    let conn = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(%e, "http connection error");
            }
        }
        _ = state.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(HTTP_DRAIN, conn).await;
        }
    }
}

fn route(state: &Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let known = matches!(path, "/ws" | "/status" | "/healthz");
    if known && req.method() != Method::GET {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "method not allowed"}),
        );
    }
    match path {
        "/healthz" => json(
            StatusCode::OK,
            &serde_json::json!({"status": "ok", "workspaceId": state.config.workspace_id}),
        ),
        "/status" => json(StatusCode::OK, &state.status()),
        "/ws" => upgrade(state, req),
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not found"}),
        ),
    }
}

fn json(status: StatusCode, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(body).expect("response bodies serialize");
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn header_has_token(headers: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Answers the upgrade with 101 and hands the connection to a socket task.
fn upgrade(state: &Arc<State>, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let headers = req.headers();
    if !header_has_token(headers, CONNECTION, "upgrade")
        || !header_has_token(headers, UPGRADE, "websocket")
    {
        return json(
            StatusCode::UPGRADE_REQUIRED,
            &serde_json::json!({"error": "expected a WebSocket upgrade"}),
        );
    }
    if headers.get(SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        let mut resp = json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "unsupported WebSocket version"}),
        );
        resp.headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return resp;
    }
    let Some(key) = headers.get(SEC_WEBSOCKET_KEY) else {
        return json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "missing Sec-WebSocket-Key"}),
        );
    };
    if state.shutdown.is_cancelled() {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"error": "shutting down"}),
        );
    }
    let accept = derive_accept_key(key.as_bytes());
    // A client that offers the auth subprotocols (when a gateway passes them through) must get
    // one of their names back, never the token.
    let protocol = headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|p| p.eq_ignore_ascii_case("bearer") || p.eq_ignore_ascii_case("access_token"))
        .and_then(|p| HeaderValue::from_str(p).ok());

    let on_upgrade = hyper::upgrade::on(&mut req);
    let socket_state = state.clone();
    state.tracker.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(ws_config()),
                )
                .await;
                crate::socket::serve(socket_state, ws).await;
            }
            Err(e) => tracing::debug!(%e, "upgrade failed"),
        }
    });

    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("accept keys are header-safe"),
    );
    if let Some(p) = protocol {
        h.insert(SEC_WEBSOCKET_PROTOCOL, p);
    }
    resp
}
