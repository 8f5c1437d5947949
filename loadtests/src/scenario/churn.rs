//! `churn`: random visits to a few workspaces for T seconds with a short idle timeout. The
//! clients report any stop while connected; afterwards the parent polls each visited workspace
//! and checks that it stopped within the idle timeout + 1 s of its last disconnect (reported as
//! lateness; never stopping within timeout + 10 s is a functional failure).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use protocol::WorkspaceStatus;

use super::{Ctx, Outcome, run_of};
use crate::cli::{ChurnArgs, range_ms};
use crate::hist::Hist;
use crate::plan::Job;
use crate::setup::GatewayHandle;

/// The idle timeout the harness gives a spawned gateway for churn.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(2);
const STARTS: &str = "aether_gateway_workspace_starts_total";
const STOPS: &str = "aether_gateway_workspace_stops_total";

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

pub async fn run(ctx: &Ctx<'_>, args: &ChurnArgs, gw: &GatewayHandle) -> Result<Outcome> {
    let mut out = Outcome::default();
    let idle = ctx.common.idle_timeout.unwrap_or(DEFAULT_IDLE);
    let workspaces = gw.workspaces(ctx.common.workspaces, false).await?;
    let target = gw.target(&workspaces);
    let starts_before = gw.api.metric_sum(STARTS, None).await?;
    let idle_before = gw.api.metric_sum(STOPS, Some("reason=\"idle\"")).await?;
    let job = Job::Churn {
        concurrency: args.clients,
        duration_ms: args.duration.as_millis() as u64,
        hold_ms: range_ms(&args.hold)?,
        gap_ms: range_ms(&args.gap)?,
    };
    // One process: churn is about correctness, not volume.
    let pool = ctx.pool_n(&target, args.clients, job, "churn", 1).await?;
    let merged = pool
        .finish(args.duration + Duration::from_secs(120))
        .await?;
    let mut r = run_of(&target, "churn", &merged, &mut out.failures);

    // Each visited workspace must stop on its own once idle.
    let mut lateness = Hist::default();
    let mut late = 0u64;
    let mut checks = Vec::new();
    for (w, (id, token)) in workspaces.iter().enumerate() {
        let Some(&last) = merged.maxima.get(&format!("last_disconnect_ns_{w}")) else {
            continue;
        };
        let (api, id, token) = (gw.api.clone(), id.clone(), token.clone());
        checks.push(tokio::spawn(async move {
            let limit = Duration::from_nanos(last) + idle + Duration::from_secs(10);
            let now = Duration::from_nanos(unix_ns());
            let within = limit.saturating_sub(now);
            let r = watch_stop(&api, &token, &id, within).await;
            (w, last, r)
        }));
    }
    let mut visited = 0u64;
    // The gateway's planned stop (`idle_stop_at`) next to the observed one: tells a timer armed
    // late from a stop carried out late.
    let mut planned_after_disconnect = Hist::default();
    for c in checks {
        let (w, last, res) = c.await?;
        visited += 1;
        match res {
            Ok((stopped_at, planned)) => {
                if let Some(p) = planned {
                    planned_after_disconnect.record_micros(p.saturating_sub(last) / 1000);
                }
                let after = stopped_at.saturating_sub(last) as i128 - idle.as_nanos() as i128;
                lateness.record_micros((after.max(0) / 1000) as u64);
                if after > 1_000_000_000 {
                    late += 1;
                }
            }
            Err(e) => out.failures.push(format!(
                "churn: workspace {w} did not stop when idle: {e:#}"
            )),
        }
    }
    let starts = gw.api.metric_sum(STARTS, None).await? - starts_before;
    let idle_stops = gw.api.metric_sum(STOPS, Some("reason=\"idle\"")).await? - idle_before;
    r.latency
        .insert("idle_stop_after_timeout".into(), lateness.summary());
    r.latency.insert(
        "planned_stop_after_last_disconnect".into(),
        planned_after_disconnect.summary(),
    );
    r.set("visits", merged.counter("connects") as f64);
    r.set("workspaces_visited", visited as f64);
    r.set("starts", starts);
    r.set("idle_stops", idle_stops);
    r.set("stopped_later_than_timeout_plus_1s", late as f64);
    r.set("idle_timeout_s", idle.as_secs_f64());
    out.runs.push(r);
    Ok(out)
}

/// Polls a workspace until it is `stopping` or `stopped`; returns when that was seen and the
/// last `idle_stop_at` the gateway announced before it (both Unix nanoseconds).
async fn watch_stop(
    api: &crate::api::Api,
    token: &str,
    id: &str,
    within: Duration,
) -> Result<(u64, Option<u64>)> {
    let deadline = tokio::time::Instant::now() + within;
    let mut planned = None;
    loop {
        let ws = api.get(token, id).await?;
        if matches!(
            ws.status,
            WorkspaceStatus::Stopping | WorkspaceStatus::Stopped
        ) {
            return Ok((unix_ns(), planned));
        }
        if let Some(at) = ws.idle_stop_at {
            planned = Some(at.unix_timestamp_nanos().max(0) as u64);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("workspace {id} still {} after {within:?}", ws.status);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
