//! `hold`: N sessions opened and held; the server's RSS, fds and CPU before, once all are open,
//! and at the end of the hold. RSS per session is (RSS with N open − RSS before) / N.

use std::time::Duration;

use anyhow::Result;
use tokio::time::Instant;

use super::{Ctx, Outcome, add_samples, open_budget, run_of};
use crate::cli::HoldArgs;
use crate::plan::Job;
use crate::procfs::Sample;
use crate::setup::Target;

/// Time for the server to settle (freed handshake buffers, allocator) before the sample.
const SETTLE: Duration = Duration::from_secs(1);

/// Pings of the hold phase answered (each checked in order by its session).
fn pool_sent(merged: &crate::plan::Merged) -> u64 {
    merged.hist("rtt").len()
}

pub async fn run(ctx: &Ctx<'_>, args: &HoldArgs, targets: &[Target]) -> Result<Outcome> {
    let mut out = Outcome {
        compare: vec![
            "rss_kib_per_session",
            "setup_sessions_per_s",
            "fds_per_session",
            "latency.open.p50",
            "latency.open.p99",
        ],
        ..Outcome::default()
    };
    for target in targets {
        let n = args.clients;
        let job = Job::Hold {
            open_concurrency: args.open_concurrency,
            ping_interval_ms: args.ping_interval.as_millis() as u64,
            hold_ms: args.duration.as_millis() as u64,
        };
        // Settled first, so the wait is not in the setup rate.
        ctx.settle().await;
        let before = Sample::of(&target.proxy_pids());
        let backend_before = Sample::of(&target.backend_pids());
        let t0 = Instant::now();
        let mut pool = ctx.pool(target, n, job, "hold").await?;
        pool.barrier(open_budget(n)).await?;
        let setup = t0.elapsed();
        let opened_at_barrier = pool.live()[0];
        tokio::time::sleep(SETTLE).await;
        let held = Sample::of(&target.proxy_pids());
        let backend_held = Sample::of(&target.backend_pids());
        pool.release().await?;
        pool.barrier(args.duration + open_budget(n)).await?;
        let end = Sample::of(&target.proxy_pids());
        pool.release().await?;
        let merged = pool.finish(open_budget(n)).await?;

        let mut r = run_of(target, "hold", &merged, &mut out.failures);
        let opened = merged.hist("open").len().max(opened_at_barrier);
        let per = |a: u64, b: u64| (b as f64 - a as f64) / opened.max(1) as f64;
        r.set("sessions", opened as f64);
        r.set("setup_s", setup.as_secs_f64());
        r.set("setup_sessions_per_s", opened as f64 / setup.as_secs_f64());
        add_samples(&mut r, "", before, held);
        r.set("rss_kib_per_session", per(before.rss_kib, held.rss_kib));
        r.set("rss_kib_per_session_end", per(before.rss_kib, end.rss_kib));
        r.set("fds_per_session", per(before.fds, held.fds));
        r.set("rss_kib_end", end.rss_kib as f64);
        if target.name != "direct" {
            r.set(
                "backend_rss_kib_per_session",
                per(backend_before.rss_kib, backend_held.rss_kib),
            );
        }
        r.set("pings_sent", pool_sent(&merged) as f64);
        if opened < n as u64 {
            out.failures
                .push(format!("{}: {opened} of {n} sessions opened", target.name));
        }
        out.runs.push(r);
    }
    Ok(out)
}
