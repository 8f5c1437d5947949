//! The Aether gateway: authenticated WebSocket sessions that wake stopped workspaces, relay them
//! to the workspace service inside, and count them for the idle-stop timer.
//!
//! # Layout
//!
//! - [`config`]: one `Config` from defaults, a TOML file, `AETHER_GATEWAY_*` and flags.
//! - [`auth`]: token carriers, JWT verification (HS256 secret, JWKS), minting local tokens.
//! - [`provider`]: where workspaces live — the [`provider::Provider`] trait and the embedded
//!   default, [`provider::local`] (workspace-service processes and an embedded database).
//! - [`registry`]: one owner task per workspace — single-flight wakes, stops, the idle timer —
//!   and the leases that count connections.
//! - [`session`]: the WebSocket route — handshake, waking, relaying.
//! - [`rest`]: the Aether REST API, health, readiness, metrics, local tokens.
//! - [`web`]: the web terminal page.
//! - [`server`]: the listener — HTTP/1.1 (optionally TLS) with upgrades, and draining;
//!   [`shards`]: its threads, one single-threaded runtime and listener each.
//! - [`error`]: every error classified into an HTTP status and a close code, in one place.
//! - [`metrics`]: Prometheus metrics.
//!
//! [`serve`] puts them together; `main.rs` only parses the command line.

pub mod app;
pub mod auth;
pub mod config;
pub mod error;
pub mod metrics;
pub mod provider;
pub mod registry;
pub mod rest;
pub mod server;
pub mod session;
pub mod shards;
pub mod tls;
pub mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::provider::Provider;
use crate::provider::local::{LocalConfig, LocalProvider};
use crate::registry::{HttpTaskProbe, Registry};

/// Every route of the gateway.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/workspaces", get(rest::list))
        .route(
            "/workspaces/{id}",
            get(rest::get).patch(rest::update).delete(rest::delete),
        )
        .route("/workspaces/{id}/start", post(rest::start))
        .route("/workspaces/{id}/stop", post(rest::stop))
        .route("/workspaces/{id}/ws", get(session::ws_route))
        .route("/ws", get(session::ws_route_by_query))
        .route("/projects/{project_id}/workspaces", post(rest::create))
        .route("/auth/local-token", post(rest::local_token))
        .route("/healthz", get(rest::healthz))
        .route("/readyz", get(rest::readyz))
        .route("/metrics", get(rest::metrics))
        .fallback(rest::not_found)
        .with_state(app)
        .merge(web::router())
}

/// The gateway's parts, built from a configuration and a bound listener.
pub struct Gateway {
    pub app: Arc<App>,
    pub listener: TcpListener,
    /// More listeners on the same port, each served on a thread of its own ([`shards`]).
    pub more_listeners: Vec<std::net::TcpListener>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub grace: std::time::Duration,
}

impl Gateway {
    /// Builds the gateway with the embedded default provider on an already bound listener.
    pub async fn build(config: &Config, listener: TcpListener) -> anyhow::Result<Gateway> {
        let local = LocalConfig {
            data_dir: config.data_dir.clone(),
            workspace_bin: config.resolve_workspace_bin(),
            boot_delay: config.local.boot_delay,
            stop_grace: config.local.stop_grace,
            ready_timeout: config.local.ready_timeout,
        };
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        let provider: Arc<dyn Provider> =
            LocalProvider::open(local).context("opening the local provider")?;
        Self::with_provider(config, listener, provider).await
    }

    /// Builds the gateway around any provider.
    pub async fn with_provider(
        config: &Config,
        listener: TcpListener,
        provider: Arc<dyn Provider>,
    ) -> anyhow::Result<Gateway> {
        let auth = auth::Authenticator::from_config(&config.auth, &config.data_dir)
            .context("setting up authentication")?;
        auth.prefetch().await;
        provider.recover().await.context("recovering workspaces")?;
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let registry = Registry::new(
            provider.clone(),
            metrics.clone(),
            Arc::new(HttpTaskProbe::new()),
            registry::Settings {
                idle_timeout: config.idle_timeout,
                boot_timeout: config.boot_timeout,
                task_poll_interval: config.task_poll_interval,
            },
            shutdown.clone(),
        );
        registry.start().await.context("starting the registry")?;
        let session = session::Settings {
            ping_interval: config.ws.ping_interval,
            pong_timeout: config.ws.pong_timeout,
            write_timeout: config.ws.write_timeout,
            max_message: config.ws.max_message,
            wake_queue_messages: config.ws.wake_queue_messages,
            wake_queue_bytes: config.ws.wake_queue_bytes,
            ..session::Settings::default()
        };
        let port = listener.local_addr()?.port();
        let origin_config = config.clone();
        let origins: app::OriginCheck =
            Arc::new(move |origin, host| origin_config.origin_allowed_on(origin, host, port));
        let tls = match config.tls.paths() {
            Some((cert, key)) => Some(tokio_rustls::TlsAcceptor::from(
                tls::load_server_config(cert, key).context("loading TLS certificate")?,
            )),
            None => None,
        };
        let app = App::new(
            auth,
            provider,
            registry,
            metrics,
            session,
            origins,
            config.local_token_enabled(),
            shutdown,
        );
        Ok(Gateway {
            app,
            listener,
            more_listeners: Vec::new(),
            tls,
            grace: config.shutdown_grace,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then drains.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let router = router(self.app.clone());
        server::run(
            self.listener,
            self.more_listeners,
            self.tls,
            self.app,
            router,
            shutdown,
            self.grace,
        )
        .await;
    }
}

/// `aether-gateway serve`: binds, prints `listening on <addr>` on stdout (the readiness line
/// supervisors and tests wait for), serves until SIGTERM or SIGINT, drains, returns.
///
/// It serves on `config.threads` threads: the caller's (run it on a single-threaded runtime, as
/// `main` does) and one more per further listener (see [`shards`]).
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let mut listeners = shards::bind(config.listen, config.threads())
        .with_context(|| format!("binding {}", config.listen))?;
    let first = TcpListener::from_std(listeners.remove(0))?;
    let mut gateway = Gateway::build(&config, first).await?;
    gateway.more_listeners = listeners;
    let addr = gateway.local_addr()?;
    let scheme = if gateway.tls.is_some() {
        "https"
    } else {
        "http"
    };
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {addr}")?;
        stdout.flush()?;
    }
    tracing::info!(%addr, "serving {scheme}://{addr}");
    eprintln!(
        "\nAether gateway on {scheme}://{addr}\n  \
         web terminal: {scheme}://{addr}/\n  \
         a token:      aether-gateway token --sub <user> --data-dir {}\n  \
         connect:      AETHER_API_URL={scheme}://{addr} AETHER_TOKEN=<token> aether workspace connect <id>\n",
        config.data_dir.display()
    );
    gateway.run(shutdown_signal()).await;
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
