//! `aether-gateway`: the thin binary. It parses the command line, assembles the configuration
//! (flags > `AETHER_GATEWAY_*` > TOML file > defaults, see `gateway::config`), sets up logging, and
//! hands over to the library.
//!
//! - `serve`: run the gateway (`gateway::serve`).
//! - `token --sub USER [--ttl 1h]`: print an HS256 token signed with the configured secret, or
//!   the one generated into the data directory, for local use.
//! - `check-config`: validate, print the effective configuration with secrets masked, and exit
//!   0 (valid) or 2 (invalid, one line per problem naming its field).
//!
//! Exit codes: 0 success, 1 runtime failure, 2 configuration or usage error.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use gateway::auth::Authenticator;
use gateway::config::{self, Config, LogFormat, ServeArgs};

#[derive(Debug, Parser)]
#[command(
    name = "aether-gateway",
    version,
    about = "Authenticated WebSocket sessions that wake, relay and count workspaces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (embedded local provider)
    Serve(ServeArgs),
    /// Print a token signed with the configured (or generated) HS256 secret
    Token(TokenArgs),
    /// Validate the configuration and print it with secrets masked (exit 0 valid, 2 invalid)
    CheckConfig(ServeArgs),
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// The user id (the token's `sub`)
    #[arg(long, value_name = "USER")]
    sub: String,
    /// How long the token is valid
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = humantime::parse_duration)]
    ttl: Duration,
    #[command(flatten)]
    config: ServeArgs,
}

/// Exit code for configuration and usage errors (clap uses 2 too).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli: Cli = match config::parse_cli(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Serve(args) => run_serve(&args),
        Command::Token(args) => run_token(&args),
        Command::CheckConfig(args) => run_check_config(&args),
    }
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Loads the configuration, or prints why not.
fn load(args: &ServeArgs) -> Result<Config, ExitCode> {
    config::load(args, &process_env).map_err(|e| {
        eprintln!("aether-gateway: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn run_serve(args: &ServeArgs) -> ExitCode {
    let config = match load(args) {
        Ok(config) => config,
        Err(code) => return code,
    };
    init_tracing(config.log_format);
    if let Err(errors) = config.validate() {
        for e in &errors.0 {
            eprintln!("aether-gateway: invalid configuration: {e}");
        }
        return ExitCode::from(EXIT_CONFIG);
    }
    // Single-threaded: `serve` starts one more thread with a runtime of its own per further
    // listener (thread per core, see `gateway::shards`).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("aether-gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(gateway::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("aether-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_token(args: &TokenArgs) -> ExitCode {
    let config = match load(&args.config) {
        Ok(config) => config,
        Err(code) => return code,
    };
    init_tracing(config.log_format);
    // Only what minting needs has to be valid: a token must not depend on, say, a TLS file.
    if let Err(errors) = config.validate() {
        let relevant: Vec<_> = errors
            .0
            .iter()
            .filter(|e| e.field.starts_with("auth.") || e.field == "data_dir")
            .collect();
        if !relevant.is_empty() {
            for e in relevant {
                eprintln!("aether-gateway: invalid configuration: {e}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    match mint(&config, &args.sub, args.ttl) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("aether-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn mint(config: &Config, sub: &str, ttl: Duration) -> anyhow::Result<String> {
    let auth = Authenticator::from_config(&config.auth, &config.data_dir)
        .context("setting up authentication")?;
    let minted = auth.mint(sub, ttl).context("minting the token")?;
    Ok(minted.token)
}

fn run_check_config(args: &ServeArgs) -> ExitCode {
    let config = match load(args) {
        Ok(config) => config,
        Err(code) => return code,
    };
    print!("{}", config.to_toml());
    match config.validate() {
        Ok(()) => {
            eprintln!("aether-gateway: configuration is valid");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("aether-gateway: invalid configuration: {e}");
            }
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Logs to stderr (stdout carries the `listening on` readiness line and `token` output), filtered
/// by `RUST_LOG` (default `info`).
fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a human at a terminal, never in files or journald.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Err(e) = result {
        eprintln!("aether-gateway: cannot set up logging: {e}");
    }
}
