//! The REST API, Aether-compatible (protocol.md): workspaces of the authenticated user.
//!
//! Every route authenticates with `Authorization: Bearer`; a workspace of another user answers 404
//! like one that does not exist. Start and stop go through the workspace's owner task, so they
//! are serialized with wakes and idle stops. Workspace objects carry our live extensions:
//! `active_connections`, `active_tasks` and `idle_stop_at`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use protocol::rest::{CreateWorkspace, StatusBody, TokenBody, UpdateWorkspace, WorkspaceList};
use protocol::{Workspace, WorkspaceStatus};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::app::App;
use crate::error::Error;
use crate::provider::{NewWorkspace, Record};
use crate::registry::StopReason;

/// The peer address of a request, inserted by the server for every connection.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Who local tokens are issued to.
pub const LOCAL_USER: &str = "local";
/// How long a local token lives.
const LOCAL_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);
/// The header a local-token request must carry: a browser cannot add it cross-origin without a
/// CORS preflight, which the gateway never grants.
pub const LOCAL_TOKEN_HEADER: &str = "x-aether-local-token";

async fn user(app: &App, headers: &HeaderMap) -> Result<String, Error> {
    let (claims, _) = app.authenticate(headers, None).await?;
    app.check_origin(headers)?;
    Ok(claims.sub)
}

fn body<T: DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| Error::BadRequest(format!("invalid body: {e}")))
}

/// The REST object of a record, with the live counting fields.
fn view(app: &App, record: Record) -> Workspace {
    let mut workspace = record.workspace;
    if let Some(handle) = app.registry.get(workspace.id) {
        let snapshot = handle.snapshot();
        if !snapshot.deleted {
            workspace.status = snapshot.status;
            if snapshot.status == WorkspaceStatus::Error {
                workspace.error_message = snapshot.message.or(workspace.error_message);
            }
        }
        workspace.active_connections = handle.connections();
        workspace.active_tasks = handle.active_tasks();
        workspace.idle_stop_at = handle.idle_stop_at();
    }
    workspace
}

/// `GET /workspaces[?status=]`.
pub async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<WorkspaceList>, Error> {
    let user = user(&app, &headers).await?;
    let mut filter = None;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if key == "status" {
            let status: WorkspaceStatus = value
                .parse()
                .map_err(|e: protocol::model::UnknownStatus| Error::BadRequest(e.to_string()))?;
            filter = Some(status);
        }
    }
    let mut workspaces: Vec<Workspace> = app
        .provider
        .list(Some(&user))
        .await?
        .into_iter()
        .map(|record| view(&app, record))
        .filter(|w| filter.is_none_or(|s| w.status == s))
        .collect();
    workspaces.sort_by_key(|w| w.created_at);
    Ok(Json(WorkspaceList { workspaces }))
}

/// `GET /workspaces/{id}`.
pub async fn get(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Workspace>, Error> {
    let user = user(&app, &headers).await?;
    let record = app.owned(&user, &id).await?;
    Ok(Json(view(&app, record)))
}

/// `POST /projects/{project_id}/workspaces`.
pub async fn create(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(project_id): Path<String>,
    bytes: Bytes,
) -> Result<Response, Error> {
    let user = user(&app, &headers).await?;
    let project_id: Uuid = project_id
        .parse()
        .map_err(|_| Error::BadRequest("project_id must be a UUID".into()))?;
    let request: CreateWorkspace = body(&bytes)?;
    let hardware = request.hardware.unwrap_or_default();
    hardware.validate().map_err(Error::BadRequest)?;
    let spec = NewWorkspace {
        hardware,
        keep_active: request.keep_active.unwrap_or(false),
        idle_timeout_secs: request.idle_timeout_secs,
    };
    let record = app.provider.create(&user, project_id, spec).await?;
    tracing::info!(workspace = %record.id(), %user, "workspace created");
    Ok((StatusCode::CREATED, Json(record.workspace)).into_response())
}

/// `PATCH /workspaces/{id}`.
pub async fn update(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Workspace>, Error> {
    let user = user(&app, &headers).await?;
    let record = app.owned(&user, &id).await?;
    let update: UpdateWorkspace = body(&bytes)?;
    let record = app.provider.update(record.id(), update).await?;
    if let Some(handle) = app.registry.get(record.id()) {
        handle.update_settings(
            record.workspace.keep_active,
            record.workspace.idle_timeout_secs.map(Duration::from_secs),
        );
    }
    Ok(Json(view(&app, record)))
}

/// `POST /workspaces/{id}/start`.
pub async fn start(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<StatusBody>, Error> {
    let user = user(&app, &headers).await?;
    let record = app.owned(&user, &id).await?;
    app.registry.handle(&record).start().await?;
    Ok(Json(StatusBody {
        status: WorkspaceStatus::Starting,
    }))
}

/// `POST /workspaces/{id}/stop`.
pub async fn stop(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<StatusBody>, Error> {
    let user = user(&app, &headers).await?;
    let record = app.owned(&user, &id).await?;
    app.registry.handle(&record).stop(StopReason::User).await?;
    Ok(Json(StatusBody {
        status: WorkspaceStatus::Stopping,
    }))
}

/// `DELETE /workspaces/{id}`: sessions on it close with 4004.
pub async fn delete(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let user = user(&app, &headers).await?;
    let record = app.owned(&user, &id).await?;
    app.registry.remove(record.id());
    app.provider.delete(record.id()).await?;
    app.metrics.stop_called(StopReason::Delete.label());
    tracing::info!(workspace = %record.id(), %user, "workspace deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /auth/local-token`: a token for the local user, for the embedded default's web page.
///
/// Only when enabled, only to loopback peers that name a loopback host, and only with the `X-Aether-Local-Token` header
/// (which a cross-origin page cannot send without a preflight the gateway never grants).
pub async fn local_token(
    State(app): State<Arc<App>>,
    peer: Option<axum::Extension<PeerAddr>>,
    headers: HeaderMap,
) -> Result<Json<TokenBody>, Error> {
    if !app.local_token {
        return Err(Error::Forbidden("local tokens are disabled"));
    }
    let loopback = peer.is_some_and(|p| p.0.0.ip().is_loopback());
    if !loopback {
        return Err(Error::Forbidden(
            "local tokens are issued to loopback peers only",
        ));
    }
    if headers.get(LOCAL_TOKEN_HEADER).is_none() {
        return Err(Error::Forbidden("missing X-Aether-Local-Token header"));
    }
    // DNS rebinding: a hostile page whose name resolves to 127.0.0.1 reaches us from a loopback
    // peer and looks same-origin, but its requests still name its own host.
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok());
    if !crate::config::is_loopback_host(host) {
        return Err(Error::Forbidden(
            "local tokens are issued to loopback hosts only",
        ));
    }
    app.check_origin(&headers)?;
    let minted = app.auth.mint(LOCAL_USER, LOCAL_TOKEN_TTL).map_err(|e| {
        Error::Forbidden(if matches!(e, crate::auth::MintError::NoSecret) {
            "local tokens need an HS256 secret"
        } else {
            "cannot mint a local token"
        })
    })?;
    Ok(Json(TokenBody {
        token: minted.token,
        expires_at: minted.expires_at,
        user: LOCAL_USER.to_owned(),
    }))
}

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 503 while draining.
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        "ready\n".into_response()
    }
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response()
}

/// Any other path.
pub async fn not_found() -> Error {
    Error::NoRoute
}
