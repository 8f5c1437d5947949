//! `churn`: random visits to a few workspaces for T seconds with a short idle timeout. The
//! clients report any stop while connected. The parent watches every workspace's status over REST
//! while the run goes on (every 20 ms), so a stop is timed when it happens, not when somebody
//! looks; afterwards it checks that each visited workspace stopped within the idle timeout + 1 s
//! of its last disconnect (reported as lateness), not before the timeout (a failure), and at all
//! within timeout + 10 s (a failure).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use futures_util::FutureExt;
use protocol::WorkspaceStatus;
use tokio::sync::oneshot;

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
    // Before the watchers start, so the wait is not part of what they watch.
    ctx.settle().await;
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
    let watchers: Vec<_> = workspaces
        .iter()
        .map(|(id, token)| {
            let (tx, rx) = oneshot::channel();
            let watcher = tokio::spawn(watch_stops(
                gw.api.clone(),
                token.clone(),
                id.clone(),
                idle,
                rx,
            ));
            (tx, watcher)
        })
        .collect();
    // One process: churn is about correctness, not volume.
    let pool = ctx.pool_n(&target, args.clients, job, "churn", 1).await?;
    let merged = pool
        .finish(args.duration + Duration::from_secs(120))
        .await?;
    let mut r = run_of(&target, "churn", &merged, &mut out.failures);

    // Each visited workspace must stop on its own once idle: tell each watcher when its
    // workspace was last left, and collect what it saw.
    let mut lateness = Hist::default();
    let mut late = 0u64;
    let mut visited = 0u64;
    // The gateway's planned stop (`idle_stop_at`) next to the observed one: tells a timer armed
    // late from a stop carried out late.
    let mut planned_after_disconnect = Hist::default();
    for (w, (last_left, watcher)) in watchers.into_iter().enumerate() {
        let last = merged
            .maxima
            .get(&format!("last_disconnect_ns_{w}"))
            .copied();
        let _ = last_left.send(last);
        let seen = watcher.await?;
        let Some(last) = last else { continue };
        visited += 1;
        let earliest = last + idle.as_nanos() as u64;
        match seen {
            Some(StopSeen { at, planned }) => {
                if let Some(p) = planned {
                    planned_after_disconnect.record_micros(p.saturating_sub(last) / 1000);
                }
                // The gateway counts from its own end of the close, a little before the
                // harness's: allow for that, and for one poll.
                if at + (EARLY_TOLERANCE.as_nanos() as u64) < earliest {
                    out.failures.push(format!(
                        "churn: workspace {w} stopped {:?} after its last disconnect, before the idle timeout",
                        Duration::from_nanos(at.saturating_sub(last))
                    ));
                }
                let after = at.saturating_sub(earliest);
                lateness.record_micros(after / 1000);
                if after > 1_000_000_000 {
                    late += 1;
                }
            }
            None => out.failures.push(format!(
                "churn: workspace {w} did not stop within the idle timeout + 10 s of its last disconnect"
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

/// How often the watchers poll each workspace.
const POLL: Duration = Duration::from_millis(20);
/// How much earlier than the harness's last disconnect the gateway may start counting.
const EARLY_TOLERANCE: Duration = Duration::from_millis(100);

/// The first stop a watcher saw after the workspace's last disconnect.
struct StopSeen {
    /// When the watcher first saw `stopping` or `stopped` (Unix nanoseconds).
    at: u64,
    /// The last `idle_stop_at` the gateway announced after the disconnect and before the stop.
    planned: Option<u64>,
}

/// Polls a workspace's status for the whole run, logging when it leaves `running` and the idle
/// deadlines the gateway announces. Once told when the workspace was last left (`None`: never
/// visited), it returns the first stop after that — polling on until it comes, or until the idle
/// timeout + 10 s have passed.
async fn watch_stops(
    api: crate::api::Api,
    token: String,
    id: String,
    idle: Duration,
    last_left: oneshot::Receiver<Option<u64>>,
) -> Option<StopSeen> {
    tokio::pin!(last_left);
    let mut last: Option<u64> = None;
    let mut told = false;
    let mut was_running = false;
    // (seen at, what): stops, and each newly announced `idle_stop_at`.
    let mut stops: Vec<u64> = Vec::new();
    let mut plans: Vec<(u64, u64)> = Vec::new();
    loop {
        if !told && let Some(Ok(left)) = (&mut last_left).now_or_never() {
            told = true;
            last = Some(left?);
        }
        if let Some(last) = last {
            if let Some(&at) = stops.iter().find(|&&at| at > last) {
                let planned = plans
                    .iter()
                    .filter(|&&(seen, _)| seen > last && seen < at)
                    .map(|&(_, plan)| plan)
                    .next_back();
                return Some(StopSeen { at, planned });
            }
            if unix_ns() > last + (idle + Duration::from_secs(10)).as_nanos() as u64 {
                return None;
            }
        }
        let now = unix_ns();
        if let Ok(ws) = api.get(&token, &id).await {
            let stopped = matches!(
                ws.status,
                WorkspaceStatus::Stopping | WorkspaceStatus::Stopped
            );
            if stopped && was_running {
                stops.push(now);
            }
            if let Some(at) = ws.idle_stop_at {
                let at = at.unix_timestamp_nanos().max(0) as u64;
                if plans.last().is_none_or(|&(_, plan)| plan != at) {
                    plans.push((now, at));
                }
            }
            was_running = ws.status == WorkspaceStatus::Running;
        }
        tokio::time::sleep(POLL).await;
    }
}
