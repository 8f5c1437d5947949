//! The gateway's errors, classified in one place.
//!
//! Every failure a request or session can meet ends up as an [`Error`]. Before the upgrade it
//! becomes an HTTP status and an `{"error":"…"}` body ([`IntoResponse`]); after it, a close code
//! ([`Error::close_code`]) and, for wake failures, a `workspace` error message. [`Error::source`]
//! records who caused it — the client, the workspace backend, or us — so logs and metrics can
//! tell a bad token from a broken provider.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use protocol::CloseCode;
use protocol::WorkspaceStatus;
use protocol::control::ErrorCode;
use protocol::rest::ErrorBody;

use crate::provider::ProviderError;

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The client sent something we refuse.
    Client,
    /// The workspace provider or the workspace service failed.
    Backend,
    /// A bug or resource problem of the gateway itself.
    Gateway,
}

/// A classified gateway error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Missing or invalid credentials. The reason is for logs and metrics only: clients always see
    /// `{"error":"Unauthorized"}`.
    #[error("unauthorized ({0})")]
    Unauthorized(&'static str),
    /// The `Origin` of a browser request is not allowed.
    #[error("origin not allowed")]
    ForbiddenOrigin,
    /// Refused for a reason other than origin (e.g. local tokens from a non-loopback peer).
    #[error("{0}")]
    Forbidden(&'static str),
    /// The workspace does not exist, or belongs to someone else (the same answer, on purpose).
    #[error("workspace not found")]
    NotFound,
    /// No route matches the request.
    #[error("not found")]
    NoRoute,
    /// A malformed or invalid request; the message says what is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// The request does not fit the workspace's state (start while running, …).
    #[error("workspace is {0}")]
    WrongState(WorkspaceStatus),
    /// A WebSocket route was requested without a valid upgrade.
    #[error("expected a WebSocket upgrade")]
    NotUpgrade,
    /// The gateway is draining.
    #[error("gateway is shutting down")]
    ShuttingDown,
    /// The workspace failed to start.
    #[error("workspace failed to start: {0}")]
    WakeFailed(String),
    /// The workspace did not become ready within the boot budget.
    #[error("workspace did not start within {0:?}")]
    WakeTimeout(std::time::Duration),
    /// The workspace provider or service failed.
    #[error("backend: {0}")]
    Backend(String),
    /// Anything else.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Who caused it.
    pub fn source(&self) -> Source {
        match self {
            Error::Unauthorized(_)
            | Error::ForbiddenOrigin
            | Error::Forbidden(_)
            | Error::NotFound
            | Error::NoRoute
            | Error::BadRequest(_)
            | Error::WrongState(_)
            | Error::NotUpgrade => Source::Client,
            Error::WakeFailed(_) | Error::WakeTimeout(_) | Error::Backend(_) => Source::Backend,
            Error::ShuttingDown | Error::Internal(_) => Source::Gateway,
        }
    }

    /// The HTTP status before an upgrade.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::ForbiddenOrigin | Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound | Error::NoRoute => StatusCode::NOT_FOUND,
            Error::BadRequest(_) | Error::WrongState(_) => StatusCode::BAD_REQUEST,
            Error::NotUpgrade => StatusCode::UPGRADE_REQUIRED,
            Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Error::WakeFailed(_) | Error::Backend(_) => StatusCode::BAD_GATEWAY,
            Error::WakeTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The close code after an upgrade.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Error::Unauthorized(_) | Error::ForbiddenOrigin | Error::Forbidden(_) => {
                CloseCode::Policy
            }
            Error::NotFound => CloseCode::NotFound,
            Error::NoRoute | Error::BadRequest(_) | Error::NotUpgrade => CloseCode::Policy,
            Error::WrongState(_) => CloseCode::Stopped,
            Error::ShuttingDown => CloseCode::Restart,
            Error::WakeFailed(_) => CloseCode::WakeFailed,
            Error::WakeTimeout(_) => CloseCode::WakeTimeout,
            Error::Backend(_) | Error::Internal(_) => CloseCode::Internal,
        }
    }

    /// The `workspace` channel error code sent before the close, if any.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Error::NotFound => ErrorCode::NotFound,
            Error::WrongState(_) => ErrorCode::Stopped,
            Error::WakeFailed(_) => ErrorCode::StartFailed,
            Error::WakeTimeout(_) => ErrorCode::StartTimeout,
            Error::ShuttingDown => ErrorCode::ShuttingDown,
            Error::Backend(_) => ErrorCode::BackendLost,
            _ => ErrorCode::Internal,
        }
    }

    /// The message a client may see. Internal details stay in the logs.
    pub fn public_message(&self) -> String {
        match self {
            Error::Unauthorized(_) => "Unauthorized".to_owned(),
            Error::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        }
    }
}

impl From<ProviderError> for Error {
    fn from(err: ProviderError) -> Self {
        match err {
            ProviderError::NotFound => Error::NotFound,
            ProviderError::InvalidState(status) => Error::WrongState(status),
            ProviderError::Invalid(msg) => Error::BadRequest(msg),
            ProviderError::StartFailed(msg) => Error::WakeFailed(msg),
            ProviderError::StopFailed(msg) | ProviderError::Backend(msg) => Error::Backend(msg),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        match self.source() {
            Source::Client => tracing::debug!(error = %self, %status, "request refused"),
            Source::Backend => tracing::warn!(error = %self, %status, "backend error"),
            Source::Gateway => tracing::error!(error = %self, %status, "gateway error"),
        }
        let body = Json(ErrorBody {
            error: self.public_message(),
        });
        let mut response = (status, body).into_response();
        if matches!(self, Error::NotUpgrade) {
            response.headers_mut().insert(
                http::header::UPGRADE,
                http::HeaderValue::from_static("websocket"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthorized_never_leaks_its_reason() {
        let err = Error::Unauthorized("expired");
        assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(err.public_message(), "Unauthorized");
    }

    #[test]
    fn wake_errors_map_to_their_close_codes() {
        assert_eq!(
            Error::WakeTimeout(std::time::Duration::from_secs(1)).close_code(),
            CloseCode::WakeTimeout
        );
        assert_eq!(
            Error::WakeFailed("x".into()).close_code(),
            CloseCode::WakeFailed
        );
        assert_eq!(Error::ShuttingDown.close_code(), CloseCode::Restart);
        assert_eq!(Error::NotFound.close_code(), CloseCode::NotFound);
    }

    #[test]
    fn provider_errors_are_classified() {
        assert!(matches!(
            Error::from(ProviderError::NotFound),
            Error::NotFound
        ));
        let err = Error::from(ProviderError::InvalidState(WorkspaceStatus::Running));
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert_eq!(err.public_message(), "workspace is running");
    }
}
