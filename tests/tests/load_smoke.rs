//! CI smoke of every `aether-load` scenario: small N, a few seconds each, through the harness
//! binary exactly as a user runs it. A test fails only on a functional error the harness reports
//! (a lost message, a second start, a stop while connected, a session that did not open) — never
//! on a timing figure: this machine is shared and slow, and the figures belong in
//! `docs/performance.md`, not in CI.

use std::path::PathBuf;
use std::time::Duration;

use aether_tests::bin_path;
use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tokio::process::Command;

/// Guard for one harness run (each is meant to take 5–15 s).
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `aether-load ARGS --json FILE`; returns the JSON report once the harness says it passed.
async fn load(args: &[&str]) -> Result<Value> {
    let dir = tempfile::tempdir()?;
    let json = dir.path().join("report.json");
    let bin_dir: PathBuf = bin_path("aether-gateway")
        .parent()
        .context("bin dir")?
        .to_path_buf();
    let mut cmd = Command::new(bin_path("aether-load"));
    cmd.args(args)
        .arg("--json")
        .arg(&json)
        .arg("--bin-dir")
        .arg(&bin_dir)
        // A smoke checks function, not figures: never wait on other tests' TIME_WAIT sockets.
        .args(["--settle-time-wait", "0"])
        .kill_on_drop(true);
    let out = tokio::time::timeout(RUN_TIMEOUT, cmd.output())
        .await
        .context("aether-load did not finish in time")??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "aether-load {args:?} exited with {}:\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    ensure!(report["pass"] == true, "report says it failed:\n{stdout}");
    Ok(report)
}

/// Every baseline when nginx and HAProxy are installed (CI installs them), the direct one
/// otherwise: the `--baseline` value and the targets it gives.
fn baselines() -> (&'static str, &'static [&'static str]) {
    let installed = |bin: &str| std::path::Path::new(bin).exists();
    if installed("/usr/sbin/nginx") && installed("/usr/sbin/haproxy") {
        ("all", &["direct", "nginx", "haproxy", "l4"])
    } else {
        ("direct", &["direct"])
    }
}

/// A figure of the first run of `target`.
fn figure(report: &Value, target: &str, name: &str) -> Option<f64> {
    report["runs"]
        .as_array()?
        .iter()
        .find(|r| r["target"] == target)?["figures"][name]
        .as_f64()
}

#[tokio::test]
async fn relay_through_the_baselines_loses_nothing() -> Result<()> {
    let (baseline, targets) = baselines();
    let report = load(&[
        "relay",
        "--baseline",
        baseline,
        "--workspaces",
        "2",
        "--clients",
        "20",
        "--rate",
        "200",
        "--duration",
        "1s",
        "--throughput-clients",
        "2",
        "--window",
        "4",
    ])
    .await?;
    for target in targets {
        let round_trips = figure(&report, target, "round_trips").unwrap_or(0.0);
        assert!(round_trips > 0.0, "{target}: {round_trips} round trips");
    }
    Ok(())
}

#[tokio::test]
async fn hold_on_the_gateway_from_two_processes_and_addresses() -> Result<()> {
    let report = load(&[
        "hold",
        "--spawn",
        "--baseline",
        "direct",
        "--workspaces",
        "2",
        "--clients",
        "40",
        "--procs",
        "2",
        "--source-ips",
        "127.0.0.2-127.0.0.3",
        "--duration",
        "2s",
        "--ping-interval",
        "300ms",
    ])
    .await?;
    assert_eq!(figure(&report, "gateway", "sessions"), Some(40.0));
    Ok(())
}

#[tokio::test]
async fn connect_storm_on_the_gateway() -> Result<()> {
    let report = load(&[
        "connect",
        "--spawn",
        // Non-counting observers (`counts=false`): the way the harness is meant to watch a
        // production gateway without keeping workspaces awake.
        "--observer",
        "--baseline",
        "direct",
        "--workspaces",
        "2",
        "--clients",
        "10",
        "--rate",
        "50",
        "--duration",
        "2s",
    ])
    .await?;
    assert!(figure(&report, "gateway", "connects").unwrap_or(0.0) > 0.0);
    Ok(())
}

#[tokio::test]
async fn wake_storm_starts_the_workspace_once() -> Result<()> {
    let report = load(&[
        "wake",
        "--spawn",
        "--clients",
        "100",
        "--boot-delay",
        "300ms",
    ])
    .await?;
    assert_eq!(figure(&report, "gateway", "starts"), Some(1.0));
    assert_eq!(figure(&report, "gateway", "clients_running"), Some(100.0));
    Ok(())
}

#[tokio::test]
async fn relay_through_the_gateway_loses_nothing() -> Result<()> {
    load(&[
        "relay",
        "--spawn",
        "--baseline",
        "direct",
        "--workspaces",
        "2",
        "--clients",
        "20",
        "--rate",
        "200",
        "--duration",
        "1s",
        "--throughput-clients",
        "2",
        "--window",
        "4",
    ])
    .await?;
    Ok(())
}

#[tokio::test]
async fn churn_never_stops_a_connected_workspace() -> Result<()> {
    let report = load(&[
        "churn",
        "--spawn",
        "--idle-timeout",
        "1s",
        "--workspaces",
        "2",
        "--clients",
        "4",
        "--duration",
        "5s",
        "--hold",
        "100ms..800ms",
        "--gap",
        "0ms..1500ms",
    ])
    .await?;
    assert!(figure(&report, "gateway", "visits").unwrap_or(0.0) > 0.0);
    Ok(())
}
