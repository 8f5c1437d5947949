//! Building a [`Config`] from its four layers: defaults < TOML file < `AETHER_GATEWAY_*`
//! environment < flags.
//!
//! The flags are [`ServeArgs`] (clap derive). Each flag names its environment variable with
//! clap's `env` attribute, which is the single table of variable names, but clap never reads the
//! process environment itself: [`parse_cli`] strips the attribute before parsing (after copying
//! the name into the help text), and [`ServeArgs::from_env`] reads the variables through an
//! injected lookup function and parses them with the same value parsers as the flags. So tests
//! inject the environment as a map (like linkerd's `env.rs`), and the precedence is explicit in
//! [`load`] rather than hidden in clap.
//!
//! An empty variable counts as unset (`FOO=` in a compose file means "not configured").

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgMatches, Args, Command, FromArgMatches};

use super::{Config, DATA_DIR_NAME, LogFormat, ValidationErrors};
use crate::auth::Secret;

/// Why a configuration could not be assembled (validation comes after, in
/// [`Config::validate`]).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{var}: {message}")]
    Env { var: String, message: String },
    #[error("{0}")]
    Invalid(#[from] ValidationErrors),
}

/// Flags shared by `serve`, `token` and `check-config`. Every field is optional: unset means
/// "keep the value from the environment, the file, or the default".
#[derive(Debug, Clone, Default, PartialEq, Args)]
pub struct ServeArgs {
    /// TOML configuration file
    #[arg(long, env = "AETHER_GATEWAY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "AETHER_GATEWAY_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// State directory [default: $XDG_DATA_HOME/aether-gateway or ~/.local/share/aether-gateway]
    #[arg(long, env = "AETHER_GATEWAY_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Stop a workspace after this long without connections or agent tasks [default: 10m]
    #[arg(long, env = "AETHER_GATEWAY_IDLE_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Give up on a wake after this long [default: 5m]
    #[arg(long, env = "AETHER_GATEWAY_BOOT_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub boot_timeout: Option<Duration>,
    /// On SIGTERM, time sessions get to close [default: 10s]
    #[arg(long, env = "AETHER_GATEWAY_SHUTDOWN_GRACE", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Option<Duration>,
    /// Threads serving connections, one listener and event loop each [default: one per CPU]
    #[arg(long, env = "AETHER_GATEWAY_THREADS", value_name = "N")]
    pub threads: Option<usize>,
    /// How often running workspaces are asked for active agent tasks [default: 5s]
    #[arg(long, env = "AETHER_GATEWAY_TASK_POLL_INTERVAL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub task_poll_interval: Option<Duration>,
    /// Browser origins allowed besides the gateway's own (comma-separated)
    #[arg(
        long,
        env = "AETHER_GATEWAY_ALLOWED_ORIGINS",
        value_name = "ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Option<Vec<String>>,
    /// Serve POST /auth/local-token to loopback peers [default: true when listening on loopback]
    #[arg(long, env = "AETHER_GATEWAY_LOCAL_TOKEN", value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
    pub local_token: Option<bool>,
    /// Log format on stderr [default: text]
    #[arg(long, env = "AETHER_GATEWAY_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Delay before a local workspace starts, like a VM boot [default: 0s]
    #[arg(long, env = "AETHER_GATEWAY_LOCAL_BOOT_DELAY", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub local_boot_delay: Option<Duration>,
    /// The aether-workspace binary [default: next to this one, then PATH]
    #[arg(long, env = "AETHER_GATEWAY_WORKSPACE_BIN", value_name = "PATH")]
    pub workspace_bin: Option<PathBuf>,
    /// Time between SIGTERM and SIGKILL for a local workspace [default: 10s]
    #[arg(long, env = "AETHER_GATEWAY_LOCAL_STOP_GRACE", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub local_stop_grace: Option<Duration>,
    /// Time a local workspace process gets to become ready [default: 30s]
    #[arg(long, env = "AETHER_GATEWAY_LOCAL_READY_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub local_ready_timeout: Option<Duration>,
    /// HS256 secret; prefer the environment variable (command lines are visible to other users)
    #[arg(
        long,
        env = "AETHER_GATEWAY_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// URL of a JWKS with ES256/RS256 keys
    #[arg(long, env = "AETHER_GATEWAY_JWKS_URL", value_name = "URL")]
    pub jwks_url: Option<String>,
    /// Required token issuer (iss) [default: any]
    #[arg(long, env = "AETHER_GATEWAY_JWT_ISSUER", value_name = "ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required token audience (aud); empty disables the check [default: authenticated]
    #[arg(long, env = "AETHER_GATEWAY_JWT_AUDIENCE", value_name = "AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock-skew allowance for exp and nbf [default: 30s]
    #[arg(long, env = "AETHER_GATEWAY_JWT_LEEWAY", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub jwt_leeway: Option<Duration>,
    /// Least time between two JWKS fetches [default: 30s]
    #[arg(long, env = "AETHER_GATEWAY_JWKS_REFETCH_INTERVAL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub jwks_refetch_interval: Option<Duration>,
    /// How long fetched JWKS keys are fresh [default: 10m]
    #[arg(long, env = "AETHER_GATEWAY_JWKS_CACHE_TTL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub jwks_cache_ttl: Option<Duration>,
    /// TLS certificate chain (PEM); TLS is on when this and --tls-key are set
    #[arg(long, env = "AETHER_GATEWAY_TLS_CERT", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(long, env = "AETHER_GATEWAY_TLS_KEY", value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// WebSocket ping interval [default: 45s]
    #[arg(long, env = "AETHER_GATEWAY_WS_PING_INTERVAL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub ws_ping_interval: Option<Duration>,
    /// Close a session this long without a pong [default: 120s]
    #[arg(long, env = "AETHER_GATEWAY_WS_PONG_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub ws_pong_timeout: Option<Duration>,
    /// Close a session whose write takes longer [default: 30s]
    #[arg(long, env = "AETHER_GATEWAY_WS_WRITE_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub ws_write_timeout: Option<Duration>,
    /// Largest WebSocket message in bytes [default: 1048576]
    #[arg(long, env = "AETHER_GATEWAY_WS_MAX_MESSAGE", value_name = "BYTES")]
    pub ws_max_message: Option<usize>,
    /// Client messages held during a wake [default: 256]
    #[arg(long, env = "AETHER_GATEWAY_WS_WAKE_QUEUE_MESSAGES", value_name = "N")]
    pub ws_wake_queue_messages: Option<usize>,
    /// Bytes of client messages held during a wake [default: 1048576]
    #[arg(long, env = "AETHER_GATEWAY_WS_WAKE_QUEUE_BYTES", value_name = "BYTES")]
    pub ws_wake_queue_bytes: Option<usize>,
    /// Messages buffered toward a client before it is too slow [default: 256]
    #[arg(long, env = "AETHER_GATEWAY_WS_CLIENT_QUEUE", value_name = "N")]
    pub ws_client_queue: Option<usize>,
}

/// Copies `value` into `slot` when set.
fn set<T: Clone>(slot: &mut T, value: &Option<T>) {
    if let Some(v) = value {
        *slot = v.clone();
    }
}

/// Copies `value` into an optional `slot` when set.
fn set_some<T: Clone>(slot: &mut Option<T>, value: &Option<T>) {
    if let Some(v) = value {
        *slot = Some(v.clone());
    }
}

impl ServeArgs {
    /// Overlays the values that are set onto `config`.
    pub fn apply(&self, c: &mut Config) {
        set(&mut c.listen, &self.listen);
        set(&mut c.data_dir, &self.data_dir);
        set(&mut c.idle_timeout, &self.idle_timeout);
        set(&mut c.boot_timeout, &self.boot_timeout);
        set(&mut c.shutdown_grace, &self.shutdown_grace);
        set_some(&mut c.threads, &self.threads);
        set(&mut c.task_poll_interval, &self.task_poll_interval);
        set(&mut c.allowed_origins, &self.allowed_origins);
        set_some(&mut c.local_token, &self.local_token);
        set(&mut c.log_format, &self.log_format);
        set(&mut c.local.boot_delay, &self.local_boot_delay);
        set_some(&mut c.local.workspace_bin, &self.workspace_bin);
        set(&mut c.local.stop_grace, &self.local_stop_grace);
        set(&mut c.local.ready_timeout, &self.local_ready_timeout);
        set_some(
            &mut c.auth.jwt_secret,
            &self.jwt_secret.clone().map(Secret::new),
        );
        set_some(&mut c.auth.jwks_url, &self.jwks_url);
        set_some(&mut c.auth.issuer, &self.jwt_issuer);
        set(&mut c.auth.audience, &self.jwt_audience);
        set(&mut c.auth.leeway, &self.jwt_leeway);
        set(
            &mut c.auth.jwks_refetch_interval,
            &self.jwks_refetch_interval,
        );
        set(&mut c.auth.jwks_cache_ttl, &self.jwks_cache_ttl);
        set_some(&mut c.tls.cert, &self.tls_cert);
        set_some(&mut c.tls.key, &self.tls_key);
        set(&mut c.ws.ping_interval, &self.ws_ping_interval);
        set(&mut c.ws.pong_timeout, &self.ws_pong_timeout);
        set(&mut c.ws.write_timeout, &self.ws_write_timeout);
        set(&mut c.ws.max_message, &self.ws_max_message);
        set(&mut c.ws.wake_queue_messages, &self.ws_wake_queue_messages);
        set(&mut c.ws.wake_queue_bytes, &self.ws_wake_queue_bytes);
        set(&mut c.ws.client_queue, &self.ws_client_queue);
    }

    /// The environment layer: every `AETHER_GATEWAY_*` variable `env` knows, parsed like its
    /// flag. An unparsable variable is an error that names it.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<ServeArgs, ConfigError> {
        let cmd = ServeArgs::augment_args(Command::new("env"));
        let mut argv = vec!["env".to_owned()];
        for arg in cmd.get_arguments() {
            let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else {
                continue;
            };
            let var = var.to_string_lossy();
            let Some(value) = env(&var).filter(|v| !v.is_empty()) else {
                continue;
            };
            let flag = format!("--{long}={value}");
            // Parse each variable alone first, so an error names the variable, not the flag.
            if let Err(e) = command_without_env(cmd.clone()).try_get_matches_from(["env", &flag]) {
                return Err(ConfigError::Env {
                    var: var.into_owned(),
                    message: clap_message(&e),
                });
            }
            argv.push(flag);
        }
        let matches = command_without_env(cmd)
            .try_get_matches_from(argv)
            .map_err(|e| ConfigError::Env {
                var: "AETHER_GATEWAY_*".into(),
                message: clap_message(&e),
            })?;
        ServeArgs::from_arg_matches(&matches).map_err(|e| ConfigError::Env {
            var: "AETHER_GATEWAY_*".into(),
            message: clap_message(&e),
        })
    }
}

/// The first line of a clap error, without its `error: ` prefix or usage text.
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// `cmd` (and its subcommands) with clap's own environment reading turned off: the variable's
/// name moves into the help text, and [`ServeArgs::from_env`] reads it instead.
pub fn command_without_env(cmd: Command) -> Command {
    cmd.mut_args(|arg| match arg.get_env() {
        Some(var) => {
            let var = var.to_string_lossy().into_owned();
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            arg.env(None::<&'static str>)
                .help(format!("{help} [env: {var}]"))
        }
        None => arg,
    })
    .mut_subcommands(command_without_env)
}

/// Parses a command line into `T` with clap's environment reading off (see
/// [`command_without_env`]); `--help` and usage errors come back as the `clap::Error` to
/// `exit()` on.
pub fn parse_cli<T, I, S>(argv: I) -> Result<T, clap::Error>
where
    T: clap::Parser,
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    let matches: ArgMatches = command_without_env(T::command()).try_get_matches_from(argv)?;
    T::from_arg_matches(&matches)
}

/// `$XDG_DATA_HOME/aether-gateway` if that is an absolute path, else
/// `$HOME/.local/share/aether-gateway` (the XDG base-directory rule).
pub fn default_data_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(xdg) = env("XDG_DATA_HOME").filter(|v| Path::new(v).is_absolute()) {
        return Some(PathBuf::from(xdg).join(DATA_DIR_NAME));
    }
    env("HOME")
        .filter(|v| !v.is_empty())
        .map(|home| PathBuf::from(home).join(".local/share").join(DATA_DIR_NAME))
}

/// The configuration from every layer: defaults, then the file (`--config`, else
/// `AETHER_GATEWAY_CONFIG`), then the environment as seen through `env`, then `flags`. Fills in
/// the default data directory. Does not validate: call [`Config::validate`].
pub fn load(
    flags: &ServeArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let from_env = ServeArgs::from_env(env)?;
    let mut config = match flags.config.as_ref().or(from_env.config.as_ref()) {
        Some(path) => read_file(path)?,
        None => Config::default(),
    };
    from_env.apply(&mut config);
    flags.apply(&mut config);
    if config.data_dir.as_os_str().is_empty()
        && let Some(dir) = default_data_dir(env)
    {
        config.data_dir = dir;
    }
    Ok(config)
}

fn read_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
