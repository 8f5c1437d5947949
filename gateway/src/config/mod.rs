//! The gateway's configuration: one [`Config`] value, built from defaults, a TOML file,
//! `AETHER_GATEWAY_*` environment variables and command-line flags, in that order of increasing
//! precedence (flag > env > file > default). See [`load()`] for the loader.
//!
//! Every field documents its default, its flag and its environment variable. Durations are
//! human-readable (`"10m"`, `"45s"`, `"1h 30m"`), in the file as in flags and variables. Unknown
//! keys in the file are errors (a typo must not silently fall back to a default), and
//! [`Config::validate`] names the field of every problem it finds.
//!
//! Secrets are [`Secret`]s: `Debug` and the effective config printed by `check-config` show
//! `MASKED`.
//!
//! A file sets only what it changes (`aether-gateway check-config` prints every field):
//!
//! ```toml
//! listen = "0.0.0.0:8443"
//! data_dir = "/var/lib/aether-gateway"
//! idle_timeout = "15m"
//! allowed_origins = ["https://app.example.com"]
//!
//! [auth]
//! jwks_url = "https://PROJECT.supabase.co/auth/v1/.well-known/jwks.json"
//! issuer = "https://PROJECT.supabase.co/auth/v1"
//!
//! [tls]
//! cert = "/etc/aether-gateway/cert.pem"
//! key = "/etc/aether-gateway/key.pem"
//!
//! [ws]
//! ping_interval = "30s"
//! ```
//!
//! Relative paths are relative to the working directory, not to the file.

mod load;
mod origin;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::{AuthSettings, Secret};

pub use load::{ConfigError, ServeArgs, command_without_env, default_data_dir, load, parse_cli};
pub use origin::is_loopback_host;

/// Name of the default data directory under `$XDG_DATA_HOME` or `~/.local/share`.
pub const DATA_DIR_NAME: &str = "aether-gateway";
/// Name of the workspace-service binary looked up next to the gateway and on `PATH`.
pub const WORKSPACE_BIN_NAME: &str = "aether-workspace";

/// The whole configuration. `Config::default()` is the documented defaults, except `data_dir`,
/// whose default depends on the environment and is filled in by [`load()`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:8080`.
    /// Flag `--listen`, env `AETHER_GATEWAY_LISTEN`.
    pub listen: SocketAddr,
    /// Where state lives (workspace registry, volumes, the generated JWT secret). Default
    /// `$XDG_DATA_HOME/aether-gateway`, else `~/.local/share/aether-gateway`.
    /// Flag `--data-dir`, env `AETHER_GATEWAY_DATA_DIR`.
    pub data_dir: PathBuf,
    /// How long a workspace with no counted connection and no active agent task keeps running
    /// before it is stopped. Default `10m`. Flag `--idle-timeout`, env
    /// `AETHER_GATEWAY_IDLE_TIMEOUT`.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long a wake may take before it fails with close 4504. Default `5m`.
    /// Flag `--boot-timeout`, env `AETHER_GATEWAY_BOOT_TIMEOUT`.
    #[serde(with = "humantime_serde")]
    pub boot_timeout: Duration,
    /// On SIGTERM, how long sessions get to close (with 1012) before the gateway exits.
    /// Default `10s`. Flag `--shutdown-grace`, env `AETHER_GATEWAY_SHUTDOWN_GRACE`.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Threads that serve connections, each with its own event loop and listener on the same
    /// port (see `crate::shards`). Default: one per CPU. Flag `--threads`, env
    /// `AETHER_GATEWAY_THREADS`.
    pub threads: Option<usize>,
    /// How often a running workspace's service is asked for active agent tasks (its `/status`).
    /// Default `5s`. Flag `--task-poll-interval`, env `AETHER_GATEWAY_TASK_POLL_INTERVAL`.
    #[serde(with = "humantime_serde")]
    pub task_poll_interval: Duration,
    /// Browser origins allowed to open sessions, as `scheme://host[:port]`. The gateway's own
    /// origin (same as the `Host` header) and `http(s)://localhost|127.0.0.1|[::1]:<listen port>`
    /// are always allowed; requests without `Origin` (CLIs) are not checked. Default empty.
    /// Flag `--allowed-origins a,b`, env `AETHER_GATEWAY_ALLOWED_ORIGINS` (comma-separated).
    pub allowed_origins: Vec<String>,
    /// Whether `POST /auth/local-token` answers loopback peers. Default: true when `listen` is a
    /// loopback address, false otherwise (see [`Config::local_token_enabled`]).
    /// Flag `--local-token`, env `AETHER_GATEWAY_LOCAL_TOKEN`.
    pub local_token: Option<bool>,
    /// Log line format on stderr: `text` or `json`. Default `text`. Flag `--log-format`, env
    /// `AETHER_GATEWAY_LOG_FORMAT`. The level filter is `RUST_LOG` (default `info`).
    pub log_format: LogFormat,
    /// The embedded `local` workspace provider.
    pub local: LocalConfig,
    /// Token verification.
    pub auth: AuthConfig,
    /// TLS; off unless both `cert` and `key` are set.
    pub tls: TlsConfig,
    /// WebSocket sessions.
    pub ws: WsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            data_dir: PathBuf::new(),
            idle_timeout: Duration::from_secs(10 * 60),
            boot_timeout: Duration::from_secs(5 * 60),
            shutdown_grace: Duration::from_secs(10),
            threads: None,
            task_poll_interval: Duration::from_secs(5),
            allowed_origins: Vec::new(),
            local_token: None,
            log_format: LogFormat::Text,
            local: LocalConfig::default(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            ws: WsConfig::default(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The embedded `local` provider: one workspace-service process per running workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalConfig {
    /// Extra delay before a local workspace starts, to behave like a VM boot. Default `0s`.
    /// Flag `--local-boot-delay`, env `AETHER_GATEWAY_LOCAL_BOOT_DELAY`.
    #[serde(with = "humantime_serde")]
    pub boot_delay: Duration,
    /// The `aether-workspace` binary. Default: next to the gateway's executable, then on `PATH`
    /// (see [`Config::resolve_workspace_bin`]). Flag `--workspace-bin`, env
    /// `AETHER_GATEWAY_WORKSPACE_BIN`.
    pub workspace_bin: Option<PathBuf>,
    /// After SIGTERM, how long a workspace process gets before SIGKILL. Default `10s`.
    /// Flag `--local-stop-grace`, env `AETHER_GATEWAY_LOCAL_STOP_GRACE`.
    #[serde(with = "humantime_serde")]
    pub stop_grace: Duration,
    /// How long a started workspace process may take to announce it is listening. Default
    /// `30s`. Flag `--local-ready-timeout`, env `AETHER_GATEWAY_LOCAL_READY_TIMEOUT`.
    #[serde(with = "humantime_serde")]
    pub ready_timeout: Duration,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            boot_delay: Duration::ZERO,
            workspace_bin: None,
            stop_grace: Duration::from_secs(10),
            ready_timeout: Duration::from_secs(30),
        }
    }
}

/// Token verification. With neither `jwt_secret` nor `jwks_url`, the gateway generates a secret
/// into `<data_dir>/jwt-secret` and uses it (the embedded mode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HS256 secret (Supabase's JWT secret); its bytes are the key. Default none.
    /// Env `AETHER_GATEWAY_JWT_SECRET` (preferred), flag `--jwt-secret` (visible in `ps`).
    pub jwt_secret: Option<Secret>,
    /// URL of a JWKS with ES256/RS256 public keys. Default none.
    /// Flag `--jwks-url`, env `AETHER_GATEWAY_JWKS_URL`.
    pub jwks_url: Option<String>,
    /// Required `iss` claim. Default none (any issuer).
    /// Flag `--jwt-issuer`, env `AETHER_GATEWAY_JWT_ISSUER`.
    pub issuer: Option<String>,
    /// Required `aud` claim; the empty string disables the check. Default `authenticated`.
    /// Flag `--jwt-audience`, env `AETHER_GATEWAY_JWT_AUDIENCE`.
    pub audience: String,
    /// Clock-skew allowance for `exp` and `nbf`. Default `30s`.
    /// Flag `--jwt-leeway`, env `AETHER_GATEWAY_JWT_LEEWAY`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Least time between two JWKS fetches (an unknown `kid` triggers one). Default `30s`.
    /// Flag `--jwks-refetch-interval`, env `AETHER_GATEWAY_JWKS_REFETCH_INTERVAL`.
    #[serde(with = "humantime_serde")]
    pub jwks_refetch_interval: Duration,
    /// How long fetched JWKS keys count as fresh before a refetch. Default `10m`.
    /// Flag `--jwks-cache-ttl`, env `AETHER_GATEWAY_JWKS_CACHE_TTL`.
    #[serde(with = "humantime_serde")]
    pub jwks_cache_ttl: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: None,
            jwks_url: None,
            issuer: None,
            audience: crate::auth::DEFAULT_AUDIENCE.to_owned(),
            leeway: crate::auth::DEFAULT_LEEWAY,
            jwks_refetch_interval: crate::auth::jwks::DEFAULT_MIN_REFETCH_INTERVAL,
            jwks_cache_ttl: crate::auth::jwks::DEFAULT_MAX_AGE,
        }
    }
}

impl AuthConfig {
    /// The claim checks this configuration asks for.
    pub fn settings(&self) -> AuthSettings {
        AuthSettings {
            audience: Some(self.audience.clone()).filter(|a| !a.is_empty()),
            issuer: self.issuer.clone().filter(|i| !i.is_empty()),
            leeway: self.leeway,
        }
    }
}

/// TLS certificate and key (PEM). Both or neither.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Certificate chain, leaf first. Flag `--tls-cert`, env `AETHER_GATEWAY_TLS_CERT`.
    pub cert: Option<PathBuf>,
    /// Private key (PKCS#8, PKCS#1 or SEC1). Flag `--tls-key`, env `AETHER_GATEWAY_TLS_KEY`.
    pub key: Option<PathBuf>,
}

impl TlsConfig {
    /// `(cert, key)` when TLS is on.
    pub fn paths(&self) -> Option<(&Path, &Path)> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => None,
        }
    }
}

/// WebSocket session limits and keepalive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WsConfig {
    /// Ping every this long. Default `45s`. Flag `--ws-ping-interval`, env
    /// `AETHER_GATEWAY_WS_PING_INTERVAL`.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// Close a session this long after the last pong (or any frame). Default `120s`.
    /// Flag `--ws-pong-timeout`, env `AETHER_GATEWAY_WS_PONG_TIMEOUT`.
    #[serde(with = "humantime_serde")]
    pub pong_timeout: Duration,
    /// Close a session whose write does not complete in this long. Default `30s`.
    /// Flag `--ws-write-timeout`, env `AETHER_GATEWAY_WS_WRITE_TIMEOUT`.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Largest message in bytes; larger ones close with 1009. Default 1 MiB (1048576).
    /// Flag `--ws-max-message`, env `AETHER_GATEWAY_WS_MAX_MESSAGE`.
    pub max_message: usize,
    /// Client messages held while a workspace wakes, at most this many. Default 256.
    /// Flag `--ws-wake-queue-messages`, env `AETHER_GATEWAY_WS_WAKE_QUEUE_MESSAGES`.
    pub wake_queue_messages: usize,
    /// ... and at most this many bytes. Default 1 MiB. Flag `--ws-wake-queue-bytes`, env
    /// `AETHER_GATEWAY_WS_WAKE_QUEUE_BYTES`.
    pub wake_queue_bytes: usize,
    /// Messages buffered toward one client; a client that lets more pile up is too slow (4008).
    /// Default 256. Flag `--ws-client-queue`, env `AETHER_GATEWAY_WS_CLIENT_QUEUE`.
    pub client_queue: usize,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            ping_interval: Duration::from_secs(45),
            pong_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(30),
            max_message: protocol::MAX_MESSAGE_SIZE,
            wake_queue_messages: 256,
            wake_queue_bytes: 1 << 20,
            client_queue: 256,
        }
    }
}

/// One problem [`Config::validate`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The TOML path of the field, e.g. `ws.pong_timeout`.
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Everything [`Config::validate`] found wrong, one line each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ValidationErrors(pub Vec<FieldError>);

/// Smallest `ws.max_message` that lets the protocol work at all.
const MIN_MAX_MESSAGE: usize = 4 * 1024;
/// Largest `ws.max_message` (tungstenite's own default ceiling).
const MAX_MAX_MESSAGE: usize = 64 << 20;
/// HS256 keys shorter than this are brute-forceable; RFC 7518 §3.2 asks for the hash size.
const MIN_SECRET_BYTES: usize = 32;
/// A leeway this large would make `exp` meaningless.
const MAX_LEEWAY: Duration = Duration::from_secs(600);

impl Config {
    /// Checks every field and reports all problems, each naming its field.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = Vec::new();
        let mut bad = |field: &'static str, message: String| {
            errors.push(FieldError { field, message });
        };

        if self.data_dir.as_os_str().is_empty() {
            bad(
                "data_dir",
                "not set, and no default: neither XDG_DATA_HOME nor HOME is set".into(),
            );
        }
        if self.threads == Some(0) {
            bad("threads", "must be at least 1".into());
        }
        for (field, value) in [
            ("idle_timeout", self.idle_timeout),
            ("boot_timeout", self.boot_timeout),
            ("task_poll_interval", self.task_poll_interval),
            ("local.ready_timeout", self.local.ready_timeout),
            ("ws.ping_interval", self.ws.ping_interval),
            ("ws.pong_timeout", self.ws.pong_timeout),
            ("ws.write_timeout", self.ws.write_timeout),
            ("auth.jwks_cache_ttl", self.auth.jwks_cache_ttl),
        ] {
            if value.is_zero() {
                bad(field, "must be longer than 0s".into());
            }
        }
        if self.ws.pong_timeout <= self.ws.ping_interval && !self.ws.ping_interval.is_zero() {
            bad(
                "ws.pong_timeout",
                format!(
                    "must be longer than ws.ping_interval ({}), or every session times out \
                     between two pings",
                    humantime::format_duration(self.ws.ping_interval)
                ),
            );
        }
        if !(MIN_MAX_MESSAGE..=MAX_MAX_MESSAGE).contains(&self.ws.max_message) {
            bad(
                "ws.max_message",
                format!("must be between {MIN_MAX_MESSAGE} and {MAX_MAX_MESSAGE} bytes"),
            );
        }
        for (field, value) in [
            ("ws.wake_queue_messages", self.ws.wake_queue_messages),
            ("ws.client_queue", self.ws.client_queue),
        ] {
            if value == 0 {
                bad(field, "must be at least 1".into());
            }
        }
        if self.ws.wake_queue_bytes < self.ws.max_message {
            bad(
                "ws.wake_queue_bytes",
                format!(
                    "must be at least ws.max_message ({}), so one message fits",
                    self.ws.max_message
                ),
            );
        }

        if let Some(secret) = &self.auth.jwt_secret
            && secret.len() < MIN_SECRET_BYTES
        {
            bad(
                "auth.jwt_secret",
                format!(
                    "is {} bytes; an HS256 secret needs at least {MIN_SECRET_BYTES}",
                    secret.len()
                ),
            );
        }
        if let Some(raw) = &self.auth.jwks_url {
            match url::Url::parse(raw) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                Ok(u) => bad(
                    "auth.jwks_url",
                    format!("scheme {:?} is not http or https", u.scheme()),
                ),
                Err(e) => bad("auth.jwks_url", format!("not a URL: {e}")),
            }
        }
        if self.auth.leeway > MAX_LEEWAY {
            bad(
                "auth.leeway",
                format!("must be at most {}", humantime::format_duration(MAX_LEEWAY)),
            );
        }
        if self.auth.jwks_url.is_some() && self.auth.jwks_refetch_interval.is_zero() {
            bad(
                "auth.jwks_refetch_interval",
                "must be longer than 0s, or unknown key ids hammer the key server".into(),
            );
        }

        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => bad("tls.key", "tls.cert is set but tls.key is not".into()),
            (None, Some(_)) => bad("tls.cert", "tls.key is set but tls.cert is not".into()),
            _ => {}
        }
        for (field, path) in [("tls.cert", &self.tls.cert), ("tls.key", &self.tls.key)] {
            if let Some(path) = path
                && !path.is_file()
            {
                bad(field, format!("{} is not a readable file", path.display()));
            }
        }
        if let Some(bin) = &self.local.workspace_bin
            && !bin.is_file()
        {
            bad(
                "local.workspace_bin",
                format!("{} is not a file", bin.display()),
            );
        }

        for origin in &self.allowed_origins {
            if let Err(message) = origin::normalize(origin) {
                bad("allowed_origins", format!("{origin:?}: {message}"));
            }
        }

        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors))
        }
    }

    /// How many threads serve connections: `threads`, else one per CPU.
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(crate::shards::default_threads)
    }

    /// Whether `POST /auth/local-token` is served (to loopback peers only).
    pub fn local_token_enabled(&self) -> bool {
        self.local_token
            .unwrap_or_else(|| self.listen.ip().is_loopback())
    }

    /// The `aether-workspace` binary: `local.workspace_bin` if set; else the one next to the
    /// current executable (or one directory up, for test binaries in `target/*/deps`); else the
    /// first on `PATH`; else the bare name, so spawning fails with a clear "not found".
    pub fn resolve_workspace_bin(&self) -> PathBuf {
        if let Some(bin) = &self.local.workspace_bin {
            return bin.clone();
        }
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
        {
            let mut candidates = vec![dir.join(WORKSPACE_BIN_NAME)];
            if dir.ends_with("deps")
                && let Some(up) = dir.parent()
            {
                candidates.push(up.join(WORKSPACE_BIN_NAME));
            }
            if let Some(found) = candidates.into_iter().find(|c| c.is_file()) {
                return found;
            }
        }
        if let Some(path) = std::env::var_os("PATH")
            && let Some(found) = std::env::split_paths(&path)
                .map(|dir| dir.join(WORKSPACE_BIN_NAME))
                .find(|c| c.is_file())
        {
            return found;
        }
        PathBuf::from(WORKSPACE_BIN_NAME)
    }

    /// Whether a browser page at `origin` may open a session; see [`Config::allowed_origins`].
    /// Uses the configured listen port for the localhost rule; when listening on port 0, pass
    /// the bound port to [`Config::origin_allowed_on`].
    pub fn origin_allowed(&self, origin: &str, host_header: Option<&str>) -> bool {
        self.origin_allowed_on(origin, host_header, self.listen.port())
    }

    /// [`Config::origin_allowed`] with the port actually bound.
    pub fn origin_allowed_on(&self, origin: &str, host_header: Option<&str>, port: u16) -> bool {
        origin::allowed(&self.allowed_origins, origin, host_header, port)
    }

    /// The effective configuration as TOML, secrets masked (for `check-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[cfg(test)]
mod tests;
