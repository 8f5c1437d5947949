//! The command line, as clap definitions. Behaviour lives in [`crate::commands`] and
//! [`crate::connect`]; this module only says what can be typed.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use protocol::WorkspaceStatus;

use crate::error::EXIT_CODES_HELP;

/// aether: work with Aether workspaces from the command line.
#[derive(Debug, Parser)]
#[command(name = "aether", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Access token; the environment variable is the usual way to set it.
    #[arg(long, global = true, env = "AETHER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// The gateway's URL [default: http://127.0.0.1:8080].
    #[arg(long, global = true, env = "AETHER_API_URL", hide_env_values = true)]
    pub api_url: Option<String>,

    /// Print machine-readable JSON instead of tables and text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Authentication.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Manage and connect to workspaces.
    #[command(subcommand, visible_alias = "ws")]
    Workspace(WorkspaceCommand),
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Print the access token in use (from --token or AETHER_TOKEN).
    Token,
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// List your workspaces: ID  PROJECT  STATUS  HARDWARE  CREATED.
    #[command(visible_alias = "ls")]
    List {
        /// Only workspaces in this state.
        #[arg(long, value_parser = parse_status)]
        status: Option<WorkspaceStatus>,
    },
    /// Show one workspace.
    Get {
        /// Workspace id, or a unique prefix of it.
        id: String,
    },
    /// Create a workspace in a project (it starts out stopped; `connect` wakes it).
    Create(CreateArgs),
    /// Change a workspace's settings.
    Update(UpdateArgs),
    /// Start a workspace.
    Start {
        /// Workspace id, or a unique prefix of it.
        id: String,
        /// Wait until it is running.
        #[arg(long)]
        wait: bool,
    },
    /// Stop a workspace.
    Stop {
        /// Workspace id, or a unique prefix of it.
        id: String,
        /// Wait until it is stopped.
        #[arg(long)]
        wait: bool,
    },
    /// Delete a workspace, its VM and its volume.
    #[command(visible_alias = "rm")]
    Delete {
        /// Workspace id, or a unique prefix of it.
        id: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Open a terminal in a workspace, waking it if needed.
    ///
    /// With a terminal on stdin, the session is interactive (raw mode; `~.` after Enter detaches,
    /// `~?` lists the escapes). With stdin from a pipe or file, the input is run as a script by
    /// the remote shell, its output is printed, and aether exits with the script's exit code.
    /// A dropped connection is re-established and the same shell re-attached.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Connect(ConnectArgs),
    /// Measure round trips through the gateway to the workspace service.
    Ping(PingArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The project to create the workspace in.
    #[arg(long)]
    pub project: uuid::Uuid,
    /// CPU class.
    #[arg(long, value_enum)]
    pub cpu_kind: Option<CpuKindArg>,
    /// Number of CPUs (1–8) [default: 2].
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Memory in MB (256–16384) [default: 2048].
    #[arg(long)]
    pub memory_mb: Option<u32>,
    /// Volume size in GB (1–500) [default: 10].
    #[arg(long)]
    pub volume_size_gb: Option<u32>,
    /// GPU kind, if any.
    #[arg(long)]
    pub gpu_kind: Option<String>,
    /// Keep the workspace running when idle.
    #[arg(long)]
    pub keep_active: bool,
    /// Stop the workspace after this long idle (e.g. `15m`), instead of the gateway default.
    #[arg(long, value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Workspace id, or a unique prefix of it.
    pub id: String,
    /// Keep the workspace running when idle (true/false).
    #[arg(long)]
    pub keep_active: Option<bool>,
    #[arg(long, value_enum)]
    pub cpu_kind: Option<CpuKindArg>,
    #[arg(long)]
    pub cpus: Option<u32>,
    #[arg(long)]
    pub memory_mb: Option<u32>,
    #[arg(long)]
    pub volume_size_gb: Option<u32>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CpuKindArg {
    Shared,
    Performance,
}

impl From<CpuKindArg> for protocol::model::CpuKind {
    fn from(k: CpuKindArg) -> Self {
        match k {
            CpuKindArg::Shared => protocol::model::CpuKind::Shared,
            CpuKindArg::Performance => protocol::model::CpuKind::Performance,
        }
    }
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Workspace id, or a unique prefix of it.
    pub id: String,
    /// Attach to this terminal session (re-attaching if it is still alive) instead of a new one.
    #[arg(long)]
    pub session: Option<String>,
    /// Do not wake a stopped workspace; fail instead.
    #[arg(long)]
    pub no_start: bool,
    /// Give up reconnecting after this long without a connection.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub reconnect_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct PingArgs {
    /// Workspace id, or a unique prefix of it.
    pub id: String,
    /// Number of pings.
    #[arg(short = 'c', long, default_value_t = 10)]
    pub count: u32,
    /// Time between pings.
    #[arg(short = 'i', long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// How long to wait for each pong.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
}

fn parse_status(s: &str) -> Result<WorkspaceStatus, String> {
    s.parse().map_err(|e: protocol::model::UnknownStatus| {
        let names: Vec<&str> = WorkspaceStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!("{e}; expected one of {}", names.join(", "))
    })
}

/// `500ms`, `2s`, `15m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?}: expected e.g. 500ms, 2s, 15m, 1h"))?;
    let secs = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "bad duration unit {other:?} in {s:?}: use ms, s, m or h"
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_documents_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Exit codes:"));
        assert!(help.contains("201"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("1d").is_err());
    }

    #[test]
    fn status_filter() {
        assert_eq!(parse_status("stop_failed"), Ok(WorkspaceStatus::StopFailed));
        assert!(parse_status("asleep").unwrap_err().contains("running"));
    }
}
