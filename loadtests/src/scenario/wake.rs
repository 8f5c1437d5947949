//! `wake`: K clients on one freshly created, stopped workspace at once. Per client: `starting`
//! after its upgrade, and `running` after the workspace was ready (taken as the first `running`
//! any client saw, or the client's own upgrade if it came later). Starts are read from
//! `/metrics` before and after: exactly one is the functional requirement.

use anyhow::Result;

use super::{Ctx, Outcome, open_budget, run_of};
use crate::cli::WakeArgs;
use crate::hist::Hist;
use crate::plan::Job;
use crate::setup::GatewayHandle;

const STARTS: &str = "aether_gateway_workspace_starts_total";

/// A user of its own, so the wake workspace is not one of another scenario's.
const WAKE_USER: usize = 1_000_000;

pub async fn run(ctx: &Ctx<'_>, args: &WakeArgs, gw: &GatewayHandle) -> Result<Outcome> {
    let mut out = Outcome::default();
    let (id, token) = gw.create(WAKE_USER).await?;
    let target = gw.target(&[(id, token)]);
    let starts_before = gw.api.metric_sum(STARTS, None).await?;
    let k = args.clients;
    let job = Job::Wake {
        connect_concurrency: args.connect_concurrency,
        timeout_ms: args.timeout.as_millis() as u64,
    };
    let mut pool = ctx.pool(&target, k, job, "wake").await?;
    pool.barrier(args.timeout + open_budget(k)).await?;
    let starts = gw.api.metric_sum(STARTS, None).await? - starts_before;
    pool.release().await?;
    let merged = pool.finish(open_budget(k)).await?;

    let mut r = run_of(&target, "wake", &merged, &mut out.failures);
    let up = merged.series.get("upgrade_ns").cloned().unwrap_or_default();
    let st = merged
        .series
        .get("starting_ns")
        .cloned()
        .unwrap_or_default();
    let ru = merged.series.get("running_ns").cloned().unwrap_or_default();
    let ready = ru.iter().copied().min().unwrap_or(0);
    let first_upgrade = up.iter().copied().min().unwrap_or(0);
    let (mut to_starting, mut after_ready, mut to_running) =
        (Hist::default(), Hist::default(), Hist::default());
    let mut saw_starting = 0u64;
    for ((&u, &s), &run) in up.iter().zip(&st).zip(&ru) {
        if s > 0 {
            saw_starting += 1;
            to_starting.record_micros(s.saturating_sub(u) / 1000);
        }
        after_ready.record_micros(run.saturating_sub(u.max(ready)) / 1000);
        to_running.record_micros(run.saturating_sub(u) / 1000);
    }
    r.latency
        .insert("starting_after_upgrade".into(), to_starting.summary());
    r.latency
        .insert("running_after_ready".into(), after_ready.summary());
    r.latency
        .insert("running_after_upgrade".into(), to_running.summary());
    r.set("clients", k as f64);
    r.set("clients_running", ru.len() as f64);
    r.set("clients_saw_starting", saw_starting as f64);
    r.set("starts", starts);
    r.set(
        "ready_after_first_upgrade_ms",
        ready.saturating_sub(first_upgrade) as f64 / 1e6,
    );
    for (name, v) in &merged.counters {
        if let Some(s) = name.strip_prefix("first_status_") {
            r.set(&format!("first_status_{s}"), *v as f64);
        }
    }
    if starts != 1.0 {
        out.failures.push(format!(
            "wake: {starts} workspace starts, expected exactly 1"
        ));
    }
    if (ru.len() as u64) < k as u64 {
        out.failures
            .push(format!("wake: {} of {k} clients saw running", ru.len()));
    }
    out.runs.push(r);
    Ok(out)
}
