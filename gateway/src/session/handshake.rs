//! Before the 101: authenticate, authorize, validate the upgrade, answer, and spawn the session.
//!
//! Refusals are HTTP answers, mapped in [`crate::error`]: 401 for any token problem, 403 for an
//! origin outside the allow-list, 404 for a workspace the user does not own (or that does not
//! exist), 426 for a request that is not a WebSocket upgrade, 503 while draining.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use protocol::CloseCode;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::SessionSlot;
use super::readahead::ReadAhead;
use super::relay;
use super::socket::Client;
use super::upstream::Upstream;
use super::wake::{self, Held, Waited};
use crate::app::App;
use crate::error::Error;
use crate::metrics::{Phase, SessionKind};
use crate::provider::Endpoint;
use crate::registry::{Handle, Lease, Snapshot};

/// The query parameters of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Wake the workspace if it is not running (`start=false` to only attach).
    pub start: bool,
    /// Count this connection toward the workspace's activity (`counts=false`: an observer that
    /// never keeps a workspace awake — the load harness, dashboards).
    pub counts: bool,
    /// `GET /ws?workspace_id=…`.
    pub workspace_id: Option<String>,
}

impl Query {
    /// Parses the raw query string. Unknown parameters (`token`, …) are ignored here.
    pub fn parse(raw: Option<&str>) -> Result<Query, Error> {
        let mut query = Query {
            start: true,
            counts: true,
            workspace_id: None,
        };
        for (key, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            match key.as_ref() {
                "start" => query.start = parse_bool("start", &value)?,
                "counts" => query.counts = parse_bool("counts", &value)?,
                "workspace_id" => query.workspace_id = Some(value.into_owned()),
                _ => {}
            }
        }
        Ok(query)
    }
}

fn parse_bool(name: &str, value: &str) -> Result<bool, Error> {
    match value {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(Error::BadRequest(format!(
            "{name} must be true or false, got {other:?}"
        ))),
    }
}

/// `GET /workspaces/{id}/ws`.
pub async fn ws_route(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    accept(app, Some(id), request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `GET /ws?workspace_id=…`.
pub async fn ws_route_by_query(State(app): State<Arc<App>>, request: Request) -> Response {
    accept(app, None, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn accept(
    app: Arc<App>,
    id: Option<String>,
    mut request: Request,
) -> Result<Response, Error> {
    if app.is_draining() {
        return Err(Error::ShuttingDown);
    }
    let raw_query = request.uri().query().map(str::to_owned);
    let headers = request.headers();
    let (claims, echo) = app.authenticate(headers, raw_query.as_deref()).await?;
    app.check_origin(headers)?;
    let query = Query::parse(raw_query.as_deref())?;
    let id = id
        .or_else(|| query.workspace_id.clone())
        .ok_or_else(|| Error::BadRequest("workspace_id is required".into()))?;
    let record = app.owned(&claims.sub, &id).await?;
    let key = upgrade_key(headers)?;

    let on_upgrade = hyper::upgrade::on(&mut request);
    let handle = app.registry.handle(&record);
    // Take the lease before the 101: from the moment the client can believe it is connected, the
    // workspace counts it, and any pending idle stop is cancelled.
    let lease = query.counts.then(|| handle.lease());
    let connected_at = Instant::now();
    let token_expiry = expiry_instant(claims.exp, app.auth.settings().leeway);
    let session_app = app.clone();
    let session = async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "upgrade failed");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(
            ReadAhead::new(TokioIo::new(upgraded)),
            Role::Server,
            Some(session_app.session.client_ws_config()),
        )
        .await;
        let span = tracing::info_span!("session", workspace = %handle.id(), user = %claims.sub, counts = query.counts);
        tracing::Instrument::instrument(
            run(
                session_app,
                handle,
                lease,
                ws,
                query.start,
                connected_at,
                token_expiry,
            ),
            span,
        )
        .await;
    };
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let out = response.headers_mut();
    out.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    out.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    out.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
            .map_err(|e| Error::Internal(e.to_string()))?,
    );
    if let Some(protocol) = echo {
        out.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(protocol),
        );
    }

    // Last, once nothing can fail: the slot corks the socket, and an error answer held back
    // would never be sent. Tracked either way, so draining waits for the session (once:
    // `TaskTracker::spawn` would track it a second time).
    let session = app.sessions.track_future(session);
    match request.extensions().get::<SessionSlot>() {
        Some(slot) => slot.put(Box::pin(session)),
        None => {
            tokio::spawn(session);
        }
    }
    Ok(response)
}

/// The tokio instant at which a token with `exp` (Unix seconds) stops being accepted.
fn expiry_instant(exp: u64, leeway: std::time::Duration) -> Instant {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Capped at a year so the deadline arithmetic cannot overflow on a far-future `exp`.
    let left = std::time::Duration::from_secs(exp.saturating_sub(now).min(365 * 24 * 3600));
    Instant::now() + left + leeway
}

/// Checks that the request is a WebSocket upgrade and returns its key.
fn upgrade_key(headers: &HeaderMap) -> Result<HeaderValue, Error> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err(Error::NotUpgrade);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v != "13")
    {
        return Err(Error::BadRequest("Sec-WebSocket-Version must be 13".into()));
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .cloned()
        .ok_or_else(|| Error::BadRequest("Sec-WebSocket-Key is missing".into()))
}

/// The session task: wait for the workspace, then relay; close with the code that says why it
/// ended.
///
/// Not an `async fn`: an async fn's future keeps room for its arguments besides the locals they
/// are moved into (rust-lang/rust#62958), and the client socket would then be stored twice for
/// the whole session. The client is built here, before the future, which captures it once.
fn run(
    app: Arc<App>,
    handle: Arc<Handle>,
    lease: Option<Lease>,
    ws: super::socket::ClientStream,
    start: bool,
    connected_at: Instant,
    token_expiry: Instant,
) -> impl Future<Output = ()> {
    let kind = if lease.is_some() {
        SessionKind::Counting
    } else {
        SessionKind::Observer
    };
    let mut gauge = app.metrics.session_opened(kind, Phase::Waking);
    let mut client = Client::new(ws, &app.session, token_expiry);
    let mut held = Held::new(&app.session);
    async move {
        // The session task lives as long as the session, and an async state machine is as large as
        // its largest state: the short-lived phases (waking, connecting, closing) are boxed so only
        // the relay's own state stays with an idle session. What `prepare` returns is taken apart
        // in the `let` itself, so no part of it stays in the relay's state; the connection to
        // hand to the next client is bound only once the relay has ended, for the same reason.
        let (code, recycle) = 'session: {
            let (endpoint, upstream, events) = match Box::pin(prepare(
                &app,
                &mut client,
                &handle,
                start,
                &mut held,
                connected_at,
            ))
            .await
            {
                Ok(ready) => ready,
                Err(code) => break 'session (code, None),
            };
            gauge.set_phase(Phase::Relaying);
            let (code, upstream) = relay::run(
                &mut client,
                upstream,
                &mut held,
                &handle,
                events,
                &app.metrics.relay,
                &app.shutdown,
            )
            .await;
            (code, upstream.map(|upstream| (endpoint, upstream)))
        };
        tracing::debug!(code = code.code(), "session closed");
        // The session is over: it stops counting now, not after the close handshake below, which
        // may wait on a client that does not answer.
        drop(lease);
        // One boxed future for both steps, so `recycle` is moved into it at once and never
        // held across an await here (it would then take room in every state, the relay's too).
        Box::pin(finish(&app, client, &handle, code, recycle)).await;
    }
}

/// Closes the client with `code`, then hands the workspace service's connection, if it is still
/// in good order, to the pool for the next client.
async fn finish(
    app: &App,
    client: Client,
    handle: &Arc<Handle>,
    code: CloseCode,
    recycle: Option<(Endpoint, Upstream)>,
) {
    client.close(code, &app.metrics).await;
    if let Some((endpoint, upstream)) = recycle {
        app.upstreams.recycle(handle, &endpoint, upstream).await;
    }
}

/// The session up to the relay: wait until the workspace runs, then take a connection to its
/// service. Returns what the relay needs, or the code to close the client with (it has been told
/// why).
async fn prepare(
    app: &App,
    client: &mut Client,
    handle: &Arc<Handle>,
    start: bool,
    held: &mut Held,
    connected_at: Instant,
) -> Result<(Endpoint, Upstream, broadcast::Receiver<Snapshot>), CloseCode> {
    let events =
        match wake::until_running(client, handle, start, held, connected_at, &app.shutdown).await {
            Waited::Running(events) => events,
            Waited::Close(code) => return Err(code),
        };
    // Most often it stopped again right after `running`, which the client then hears.
    let Some(endpoint) = app.provider.endpoint(handle.id()) else {
        return Err(relay::no_endpoint(client, handle, events).await);
    };
    match app
        .upstreams
        .open(handle, &endpoint, &app.session, &app.metrics)
        .await
    {
        Ok(upstream) => Ok((endpoint, upstream, events)),
        Err(error) => {
            // Most often the service died between `running` and this connect: let the client
            // hear why, as if it had died under the relay.
            tracing::warn!(%error, "cannot reach the workspace service");
            Err(relay::unreachable(client, handle, events).await)
        }
    }
}
