//! `aether`: the command-line client for Aether workspaces.
//!
//! # Layout
//!
//! - [`args`]: the command line (clap).
//! - [`config`]: `AETHER_API_URL` / `AETHER_TOKEN`.
//! - [`error`]: every failure, its message and its exit code (one table).
//! - [`api`]: the REST client; [`resolve`]: id prefixes; [`render`]: tables and details.
//! - [`commands`]: `auth token` and the REST-backed workspace commands.
//! - [`connect`]: `workspace connect` — wake, relay, reconnect, script mode.
//! - [`ping`]: `workspace ping`.
//! - [`ws`]: opening the workspace WebSocket; [`tty`]: raw mode and terminal size;
//!   [`spinner`]: the wake indicator; [`escape`]: `~.` and `~?`; [`utf8`]: input decoding.

pub mod api;
pub mod args;
pub mod commands;
pub mod config;
pub mod connect;
pub mod error;
pub mod escape;
pub mod ping;
pub mod render;
pub mod resolve;
pub mod spinner;
pub mod tty;
pub mod utf8;
pub mod ws;

use std::process::ExitCode;

use clap::Parser;

use args::{AuthCommand, Cli, Command, WorkspaceCommand};
use config::Config;
use error::{CliError, code};

/// Parses the command line, runs the command, prints any error, and returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("aether: error: cannot start the runtime: {e}");
            return ExitCode::from(code::FAILURE);
        }
    };
    let result = runtime.block_on(run(cli));
    // The stdin reader may be blocked in a read; do not wait for it.
    runtime.shutdown_background();
    // Whatever happened, the terminal is ours again before we print.
    tty::restore();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("aether: error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<u8, CliError> {
    let config = Config::new(cli.api_url, cli.token)?;
    let json = cli.json;
    match cli.command {
        Command::Auth(AuthCommand::Token) => commands::auth_token(&config, json)?,
        Command::Workspace(cmd) => match cmd {
            WorkspaceCommand::List { status } => commands::list(&config, status, json).await?,
            WorkspaceCommand::Get { id } => commands::get(&config, &id, json).await?,
            WorkspaceCommand::Create(args) => commands::create(&config, &args, json).await?,
            WorkspaceCommand::Update(args) => commands::update(&config, &args, json).await?,
            WorkspaceCommand::Start { id, wait } => {
                commands::start_stop(&config, &id, true, wait, json).await?
            }
            WorkspaceCommand::Stop { id, wait } => {
                commands::start_stop(&config, &id, false, wait, json).await?
            }
            WorkspaceCommand::Delete { id, yes } => {
                commands::delete(&config, &id, yes, json).await?
            }
            WorkspaceCommand::Connect(args) => return connect::run(&config, &args).await,
            WorkspaceCommand::Ping(args) => ping::run(&config, &args, json).await?,
        },
    }
    Ok(code::OK)
}
