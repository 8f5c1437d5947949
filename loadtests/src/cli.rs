//! Command-line arguments: `aether-load <scenario> [target] [common] [scenario flags]`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(
    name = "aether-load",
    version,
    about = "Load tests for an Aether gateway, side by side with direct, nginx and HAProxy baselines.",
    after_help = "Example: aether-load wake --spawn --clients 5000 --json wake.json"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Open N sessions to running workspaces and hold them with pings; server RSS and fds per session.
    Hold(HoldArgs),
    /// A connect storm: M connects/s for T seconds (or as fast as possible with --rate 0).
    Connect(ConnectArgs),
    /// K clients on one stopped workspace at once: time to starting/running, number of starts.
    Wake(WakeArgs),
    /// Ping/pong round trips: latency at a fixed rate, throughput with 64 B and 16 KiB payloads.
    Relay(RelayArgs),
    /// Random connects and disconnects with a short idle timeout: no stop while connected,
    /// every idle workspace stopped.
    Churn(ChurnArgs),
    /// Internal: a client process started by the harness itself.
    #[command(name = "__worker", hide = true)]
    Worker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Baseline {
    None,
    /// Straight to the workspace service.
    Direct,
    /// nginx as a WebSocket reverse proxy.
    Nginx,
    /// HAProxy as a WebSocket reverse proxy (`mode http`).
    Haproxy,
    /// HAProxy as a byte relay (`mode tcp`): the least a proxy can add.
    L4,
    /// Every one of the above.
    All,
}

impl Baseline {
    /// Whether `wanted` (the `--baseline` list) asks for this one.
    pub fn wanted(self, wanted: &[Baseline]) -> bool {
        wanted.iter().any(|&b| b == self || b == Baseline::All)
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// Target and run options shared by every scenario.
#[derive(Debug, Clone, Args, Serialize)]
pub struct Common {
    /// Spawn a gateway (embedded default provider) in a temporary data dir.
    #[arg(long, conflicts_with = "url")]
    pub spawn: bool,
    /// A running gateway, e.g. http://127.0.0.1:8080 (loopback only).
    #[arg(long)]
    pub url: Option<String>,
    /// Bearer token for --url (every session uses it).
    #[arg(long, env = "AETHER_LOAD_TOKEN", hide_env_values = true)]
    #[serde(skip)]
    pub token: Option<String>,
    /// HS256 secret of the --url gateway, to mint one token per user.
    #[arg(long, env = "AETHER_LOAD_JWT_SECRET", hide_env_values = true)]
    #[serde(skip)]
    pub jwt_secret: Option<String>,
    /// PID of the --url gateway, to read its RSS, fds and CPU from /proc.
    #[arg(long)]
    pub gateway_pid: Option<u32>,
    /// Run the same scenario against these baselines too, e.g. `direct,l4` or `all`.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "none")]
    pub baseline: Vec<Baseline>,
    /// Workspaces the sessions are spread over (each its own workspace-service process).
    #[arg(long, default_value_t = 4)]
    pub workspaces: usize,
    /// Client processes (each may hold at most ~19,000 sockets here).
    #[arg(long, default_value_t = 1)]
    pub procs: usize,
    /// Source addresses to connect from, e.g. 127.0.0.2-127.0.0.9 or 127.0.0.2,127.0.0.3.
    #[arg(long)]
    pub source_ips: Option<String>,
    /// Connect as non-counting observers (`counts=false`).
    #[arg(long)]
    pub observer: bool,
    /// Write every figure and the configuration as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Where aether-gateway and aether-workspace are (default: next to aether-load).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// The nginx binary for the nginx baseline.
    #[arg(long, default_value = "/usr/sbin/nginx")]
    pub nginx_bin: PathBuf,
    /// The HAProxy binary for the haproxy and l4 baselines.
    #[arg(long, default_value = "/usr/sbin/haproxy")]
    pub haproxy_bin: PathBuf,
    /// nginx `worker_processes` (a number or `auto`).
    #[arg(long, default_value = "auto")]
    pub nginx_workers: String,
    /// Boot delay of the spawned gateway's local provider (like a VM).
    #[arg(long, value_parser = duration, default_value = "500ms")]
    #[serde(with = "humantime_serde_compat")]
    pub boot_delay: Duration,
    /// Port-scan interval of every workspace service the harness or its gateway starts
    /// (`AETHER_WORKSPACE_PORTS_INTERVAL`). Each scan reads /proc/net/tcp, whose cost grows
    /// with every socket on the machine, the load's included: the default keeps that
    /// background work out of the proxy's figures. `1s` is the service's own default.
    #[arg(long, value_parser = duration, default_value = "1h")]
    #[serde(with = "humantime_serde_compat")]
    pub backend_ports_interval: Duration,
    /// Before each phase, wait (at most 65 s) until fewer than this many TCP sockets are in
    /// TIME_WAIT on the machine; 0 never waits. A connect run leaves one or two per connect,
    /// and until they expire every loopback connect is slower, so without the wait a target
    /// measured after another would pay for the one before it.
    #[arg(long, default_value_t = 2_000)]
    pub settle_time_wait: u64,
    /// Idle timeout of the spawned gateway (churn defaults to 2s).
    #[arg(long, value_parser = duration)]
    #[serde(with = "humantime_serde_opt")]
    pub idle_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct HoldArgs {
    #[command(flatten)]
    pub common: Common,
    /// Sessions to open and hold.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// How long to hold them once open.
    #[arg(long, value_parser = duration, default_value = "10s")]
    #[serde(with = "humantime_serde_compat")]
    pub duration: Duration,
    /// Ping period of each held session.
    #[arg(long, value_parser = duration, default_value = "5s")]
    #[serde(with = "humantime_serde_compat")]
    pub ping_interval: Duration,
    /// Sessions being opened at once, per client process.
    #[arg(long, default_value_t = 100)]
    pub open_concurrency: usize,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub common: Common,
    /// Connects per second over all processes; 0: as fast as --concurrency loops can.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Concurrent connect loops per process when --rate is 0.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Distinct clients (they pick the workspace and source address).
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    #[arg(long, value_parser = duration, default_value = "10s")]
    #[serde(with = "humantime_serde_compat")]
    pub duration: Duration,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct WakeArgs {
    #[command(flatten)]
    pub common: Common,
    /// Clients connecting at once to the one stopped workspace.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Connects in flight at once, per client process.
    #[arg(long, default_value_t = 1000)]
    pub connect_concurrency: usize,
    /// Guard for the whole wake.
    #[arg(long, value_parser = duration, default_value = "60s")]
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayMode {
    Latency,
    Throughput,
    All,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct RelayArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, value_enum, default_value = "all")]
    pub mode: RelayMode,
    /// Sessions of the latency run.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Pings per second over every session of the latency run.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Duration of each run (latency, and each throughput payload).
    #[arg(long, value_parser = duration, default_value = "10s")]
    #[serde(with = "humantime_serde_compat")]
    pub duration: Duration,
    /// Payload sizes of the throughput runs, in bytes.
    #[arg(long, value_delimiter = ',', default_value = "64,16384")]
    pub payloads: Vec<usize>,
    /// Sessions of each throughput run.
    #[arg(long, default_value_t = 32)]
    pub throughput_clients: usize,
    /// Pings in flight per session in the throughput runs.
    #[arg(long, default_value_t = 8)]
    pub window: usize,
    /// Sessions being opened at once, per client process.
    #[arg(long, default_value_t = 100)]
    pub open_concurrency: usize,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct ChurnArgs {
    #[command(flatten)]
    pub common: Common,
    /// Concurrent connect/hold/disconnect loops.
    #[arg(long, default_value_t = 12)]
    pub clients: usize,
    #[arg(long, value_parser = duration, default_value = "10s")]
    #[serde(with = "humantime_serde_compat")]
    pub duration: Duration,
    /// Hold time range of a visit, e.g. 100ms..1500ms.
    #[arg(long, default_value = "100ms..1500ms")]
    pub hold: String,
    /// Pause range between two visits of a loop; above the idle timeout lets workspaces stop.
    #[arg(long, default_value = "0ms..3s")]
    pub gap: String,
}

/// Parses `a..b` of durations into milliseconds.
pub fn range_ms(s: &str) -> anyhow::Result<(u64, u64)> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| anyhow::anyhow!("{s:?}: expected MIN..MAX, e.g. 100ms..1500ms"))?;
    let a = humantime::parse_duration(a.trim())?.as_millis() as u64;
    let b = humantime::parse_duration(b.trim())?.as_millis() as u64;
    anyhow::ensure!(a <= b, "{s:?}: MIN is above MAX");
    Ok((a, b))
}

/// Parses `--source-ips`: a dash range within one /24 or a comma list.
pub fn source_ips(s: Option<&str>) -> anyhow::Result<Vec<std::net::IpAddr>> {
    let Some(s) = s else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: std::net::Ipv4Addr = a.trim().parse()?;
            let b: std::net::Ipv4Addr = b.trim().parse()?;
            let (a, b) = (u32::from(a), u32::from(b));
            anyhow::ensure!(a <= b && b - a < 256, "{part}: bad range");
            out.extend((a..=b).map(|ip| std::net::IpAddr::V4(ip.into())));
        } else {
            out.push(part.parse()?);
        }
    }
    anyhow::ensure!(
        out.iter().all(|ip| ip.is_loopback()),
        "source addresses must be loopback (127.0.0.0/8)"
    );
    Ok(out)
}

/// Serializes durations as humantime strings (`"10s"`) in the JSON report.
mod humantime_serde_compat {
    pub(crate) fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

mod humantime_serde_opt {
    pub(crate) fn serialize<S: serde::Serializer>(
        d: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_and_sources() {
        assert_eq!(range_ms("100ms..1500ms").unwrap(), (100, 1500));
        assert!(range_ms("2s..1s").is_err());
        let ips = source_ips(Some("127.0.0.2-127.0.0.4,127.0.0.9")).unwrap();
        assert_eq!(ips.len(), 4);
        assert!(source_ips(Some("10.0.0.1")).is_err());
        assert!(source_ips(None).unwrap().is_empty());
    }

    #[test]
    fn baselines_are_a_list_and_all_means_every_one() {
        use clap::Parser;
        let common = |args: &[&str]| match Cli::parse_from(args).cmd {
            Cmd::Relay(a) => a.common.baseline,
            other => panic!("{other:?}"),
        };
        let some = common(&["aether-load", "relay", "--baseline", "direct,l4"]);
        assert!(Baseline::Direct.wanted(&some) && Baseline::L4.wanted(&some));
        assert!(!Baseline::Nginx.wanted(&some) && !Baseline::Haproxy.wanted(&some));
        let all = common(&["aether-load", "relay", "--baseline", "all"]);
        assert!(Baseline::Haproxy.wanted(&all) && Baseline::Nginx.wanted(&all));
        assert!(!Baseline::Direct.wanted(&common(&["aether-load", "relay"])));
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
