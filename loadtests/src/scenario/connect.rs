//! `connect`: the connect storm against each target; achieved rate, latency to the upgrade, to
//! the first status (gateway) and to the first pong, and the server's CPU per connect.

use std::time::Duration;

use anyhow::Result;

use super::{Ctx, Outcome, add_samples, run_of};
use crate::cli::ConnectArgs;
use crate::plan::Job;
use crate::procfs::Sample;
use crate::setup::Target;

pub async fn run(ctx: &Ctx<'_>, args: &ConnectArgs, targets: &[Target]) -> Result<Outcome> {
    let mut out = Outcome {
        compare: vec![
            "connects_per_s",
            "cpu_us_per_connect",
            "latency.pong.p50",
            "latency.pong.p99",
            "latency.upgrade.p99",
            "backend_cpu_us_per_connect",
        ],
        ..Outcome::default()
    };
    let procs = ctx.common.procs.max(1);
    let phase = if args.rate > 0.0 {
        format!("connect {}/s", args.rate)
    } else {
        format!("connect max ({} loops x {procs})", args.concurrency)
    };
    for target in targets {
        let job = Job::Connect {
            rate: args.rate,
            concurrency: args.concurrency,
            duration_ms: args.duration.as_millis() as u64,
        };
        // Settled before the samples, so the wait is not in the CPU figures.
        let time_wait = ctx.settle().await;
        let before = Sample::of(&target.proxy_pids());
        let backend_before = Sample::of(&target.backend_pids());
        let reused_before = reused_upstreams(target).await?;
        let pool = ctx.pool(target, args.clients, job, &phase).await?;
        let merged = pool
            .finish(args.duration + Duration::from_secs(120))
            .await?;
        let after = Sample::of(&target.proxy_pids());
        let backend_after = Sample::of(&target.backend_pids());
        let mut r = run_of(target, &phase, &merged, &mut out.failures);
        let connects = merged.counter("connects");
        let elapsed = merged.maxima.get("elapsed_ms").copied().unwrap_or(1).max(1) as f64 / 1e3;
        r.set("time_wait_at_start", time_wait as f64);
        r.set("connects", connects as f64);
        r.set("skipped_overload", merged.counter("skipped") as f64);
        r.set("elapsed_s", elapsed);
        r.set("connects_per_s", connects as f64 / elapsed);
        add_samples(&mut r, "", before, after);
        r.set(
            "cpu_us_per_connect",
            after.cpu_us.saturating_sub(before.cpu_us) as f64 / connects.max(1) as f64,
        );
        r.set(
            "backend_cpu_us_per_connect",
            backend_after.cpu_us.saturating_sub(backend_before.cpu_us) as f64
                / connects.max(1) as f64,
        );
        if let (Some(before), Some(after)) = (reused_before, reused_upstreams(target).await?) {
            // Sessions that got a workspace-service connection a previous client left.
            r.set(
                "reused_upstream_share",
                (after - before) / connects.max(1) as f64,
            );
        }
        out.runs.push(r);
    }
    Ok(out)
}

/// The gateway's count of reused workspace-service connections (`None` for the baselines).
async fn reused_upstreams(target: &Target) -> Result<Option<f64>> {
    let Some(base) = &target.gateway_base else {
        return Ok(None);
    };
    let api = crate::api::Api::new(base)?;
    let reused = api
        .metric_sum(
            "aether_gateway_upstream_connections_total",
            Some(r#"how="reused""#),
        )
        .await?;
    Ok(Some(reused))
}
