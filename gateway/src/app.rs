//! The gateway's shared state: what every request handler and session task needs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::HeaderMap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::auth::{Authenticator, Claims};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::provider::{Provider, Record};
use crate::registry::Registry;
use crate::session;

/// Decides whether a browser page at `origin` may call a gateway reached as `host`: the
/// configured allow-list plus the gateway's own origin (see `Config::origin_allowed_on`).
pub type OriginCheck = Arc<dyn Fn(&str, Option<&str>) -> bool + Send + Sync>;

/// Everything shared by handlers and sessions.
pub struct App {
    pub auth: Authenticator,
    pub provider: Arc<dyn Provider>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub session: session::Settings,
    pub origins: OriginCheck,
    /// Whether `POST /auth/local-token` may issue tokens to loopback peers.
    pub local_token: bool,
    /// Cancelled when the gateway starts draining; sessions close with 1012.
    pub shutdown: CancellationToken,
    /// Every upgraded session, so shutdown can wait for them (hyper does not see them).
    pub sessions: TaskTracker,
    /// Workspace-service connections that clients left, for the next client.
    pub upstreams: session::upstream::Pool,
    draining: AtomicBool,
}

impl App {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        auth: Authenticator,
        provider: Arc<dyn Provider>,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        session: session::Settings,
        origins: OriginCheck,
        local_token: bool,
        shutdown: CancellationToken,
    ) -> Arc<App> {
        let upstreams = session::upstream::Pool::new(metrics.upstream_parked.clone());
        Arc::new(App {
            auth,
            provider,
            registry,
            metrics,
            session,
            origins,
            local_token,
            shutdown,
            sessions: TaskTracker::new(),
            upstreams,
            draining: AtomicBool::new(false),
        })
    }

    /// Marks the gateway as draining: `/readyz` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Authenticates a request from any token carrier. Returns the claims and the subprotocol to
    /// echo in a 101. Failures are counted by reason; the token itself is never logged.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<(Claims, Option<&'static str>), Error> {
        let result = async {
            let source = crate::auth::extract(headers, query)?;
            let claims = self.auth.authenticate(&source.token).await?;
            Ok((claims, source.echo_protocol))
        }
        .await;
        result.map_err(|err: crate::auth::AuthError| {
            self.metrics.auth_failure(err.reason());
            Error::Unauthorized(err.reason())
        })
    }

    /// Refuses browser requests from origins outside the allow-list. Requests without `Origin`
    /// are not from a browser page (the CLI, the load harness) and pass.
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), Error> {
        let Some(origin) = headers.get(http::header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin.to_str().map_err(|_| Error::ForbiddenOrigin)?;
        let host = headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok());
        if (self.origins)(origin, host) {
            Ok(())
        } else {
            self.metrics.auth_failure("origin");
            Err(Error::ForbiddenOrigin)
        }
    }

    /// The workspace `id` if `user` owns it; 404 otherwise, whether it exists or not.
    pub async fn owned(&self, user: &str, id: &str) -> Result<Record, Error> {
        let id: Uuid = id.parse().map_err(|_| Error::NotFound)?;
        let record = self.provider.get(id).await?;
        if record.owner != user {
            return Err(Error::NotFound);
        }
        Ok(record)
    }
}
