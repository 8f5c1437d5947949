//! `aether workspace connect`: a terminal in a workspace, interactive or scripted, that survives
//! dropped connections.
//!
//! - [`session`]: the relay and reconnect loops.
//! - [`close`]: what each close code means for the session.
//! - [`backoff`]: reconnect delays with jitter.
//! - [`input`], [`output`]: local stdin and stdout.
//! - [`script`]: running piped stdin as a script with clean output and its exit code.

pub mod backoff;
pub mod close;
pub mod input;
pub mod output;
pub mod script;
pub mod session;

use crate::args::ConnectArgs;
use crate::config::Config;
use crate::error::CliError;
use crate::resolve::IdArg;
use crate::tty;

use session::{Mode, Session};

/// Runs `connect`; returns the exit code (the remote shell's, or 0 after `~.`).
pub async fn run(config: &Config, args: &ConnectArgs) -> Result<u8, CliError> {
    config.token()?;
    let workspace = resolve(config, &args.id).await?;
    let mode = if tty::stdin_is_tty() {
        Mode::Interactive
    } else {
        Mode::Script
    };
    let session_id = args
        .session
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    Session::new(
        workspace,
        session_id,
        mode,
        !args.no_start,
        args.reconnect_timeout,
    )
    .run(config)
    .await
}

/// A full id goes straight to the socket (whose handshake reports 401/404 itself); a prefix is
/// looked up over REST.
pub async fn resolve(config: &Config, arg: &str) -> Result<String, CliError> {
    match IdArg::parse(arg)? {
        IdArg::Full(id) => Ok(id.to_string()),
        IdArg::Prefix(_) => Ok(crate::api::Api::new(config)?
            .resolve(arg)
            .await?
            .to_string()),
    }
}
