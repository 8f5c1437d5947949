//! `aether-workspace`: flags → [`workspace::Config`] → [`workspace::Server`].

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use workspace::Server;
use workspace::config::{self, Config};

/// The Aether workspace service: terminal, files, agent, ports and config channels over
/// WebSocket (`GET /ws`), with `GET /status` and `GET /healthz`.
#[derive(Debug, Parser)]
#[command(name = "aether-workspace", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "AETHER_WORKSPACE_LISTEN", default_value = config::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// The workspace's persistent directory (created if missing); default: the current directory.
    #[arg(long, env = "AETHER_WORKSPACE_VOLUME")]
    volume: Option<PathBuf>,
    /// Workspace id, echoed by /healthz.
    #[arg(long, env = "AETHER_WORKSPACE_ID")]
    workspace_id: Option<String>,
    /// Size of each terminal session's output ring buffer, in bytes.
    #[arg(long, env = "AETHER_WORKSPACE_RING_BYTES", default_value_t = config::DEFAULT_RING_BYTES)]
    ring_bytes: usize,
    /// Agent command, run with `sh -c` in the volume, the prompt on stdin (and in the file named
    /// by $AETHER_PROMPT_FILE); default: run the prompt as a bash script.
    #[arg(long, env = "AETHER_WORKSPACE_AGENT_COMMAND")]
    agent_command: Option<String>,
    /// Shell of terminal sessions.
    #[arg(long, env = "AETHER_WORKSPACE_SHELL", default_value = "bash")]
    shell: String,
    /// Bound of each socket's outgoing queue, in bytes; a socket past it is closed with 4008.
    #[arg(long, env = "AETHER_WORKSPACE_SOCKET_QUEUE_BYTES", default_value_t = config::DEFAULT_SOCKET_QUEUE_BYTES)]
    socket_queue_bytes: usize,
    /// Bytes of text kept per agent task for replay.
    #[arg(long, env = "AETHER_WORKSPACE_AGENT_HISTORY_BYTES", default_value_t = config::DEFAULT_AGENT_HISTORY_BYTES)]
    agent_history_bytes: usize,
    /// Number of agent tasks whose history is kept.
    #[arg(long, env = "AETHER_WORKSPACE_AGENT_TASKS_KEPT", default_value_t = config::DEFAULT_AGENT_TASKS_KEPT)]
    agent_tasks_kept: usize,
    /// Interval of the listening-port scan (e.g. `1s`, `250ms`).
    #[arg(long, env = "AETHER_WORKSPACE_PORTS_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    ports_interval: Duration,
    /// Bound on shutdown after SIGTERM (e.g. `5s`).
    #[arg(long, env = "AETHER_WORKSPACE_SHUTDOWN_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,
}

impl Args {
    fn into_config(self) -> std::io::Result<Config> {
        let volume = match self.volume {
            Some(v) => v,
            None => std::env::current_dir()?,
        };
        let mut config = Config::new(volume);
        config.listen = self.listen;
        config.workspace_id = self.workspace_id;
        config.ring_bytes = self.ring_bytes;
        config.agent_command = self.agent_command.filter(|c| !c.trim().is_empty());
        config.shell = self.shell;
        config.socket_queue_bytes = self.socket_queue_bytes;
        config.agent_history_bytes = self.agent_history_bytes;
        config.agent_tasks_kept = self.agent_tasks_kept;
        config.ports_interval = self.ports_interval;
        config.shutdown_grace = self.shutdown_grace;
        Ok(config)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AETHER_WORKSPACE_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,notify=error")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("aether-workspace: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(serve(args));
    // Do not wait for blocking-pool threads (a file read in progress): shutdown is bounded.
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

async fn serve(args: Args) -> ExitCode {
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(%e, "cannot determine the volume");
            return ExitCode::FAILURE;
        }
    };
    let grace = config.shutdown_grace;
    let server = match Server::bind(config).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let addr = server.local_addr();
    {
        let mut out = std::io::stdout().lock();
        if writeln!(out, "listening on {addr}")
            .and_then(|()| out.flush())
            .is_err()
        {
            tracing::warn!("cannot write the readiness line to stdout");
        }
    }
    tracing::info!(%addr, "ready");

    let stop = CancellationToken::new();
    tokio::spawn(wait_for_signal(stop.clone()));
    let stopped = stop.clone();
    tokio::select! {
        () = server.run(stopped.cancelled_owned()) => ExitCode::SUCCESS,
        () = async {
            stop.cancelled().await;
            tokio::time::sleep(grace + Duration::from_secs(1)).await;
        } => {
            tracing::error!("shutdown overran its grace; exiting");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal(stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
    stop.cancel();
}
