//! `relay`: the latency run at a fixed rate and the throughput runs per payload size, against
//! each target, with the proxy's CPU per relayed message (a round trip relays two messages).

use anyhow::Result;
use tokio::time::Instant;

use super::{Ctx, Outcome, add_samples, open_budget, run_of};
use crate::cli::{RelayArgs, RelayMode};
use crate::plan::Job;
use crate::procfs::Sample;
use crate::setup::Target;

pub async fn run(ctx: &Ctx<'_>, args: &RelayArgs, targets: &[Target]) -> Result<Outcome> {
    let mut out = Outcome {
        compare: vec![
            "round_trips_per_s",
            "payload_mib_per_s",
            "cpu_us_per_message",
            "latency.rtt.p50",
            "latency.rtt.p99",
            "latency.rtt.p999",
        ],
        ..Outcome::default()
    };
    let duration_ms = args.duration.as_millis() as u64;
    let mut phases: Vec<(String, usize, Job)> = Vec::new();
    if matches!(args.mode, RelayMode::Latency | RelayMode::All) {
        phases.push((
            format!("latency 64 B {}/s", args.rate),
            args.clients,
            Job::RelayLatency {
                open_concurrency: args.open_concurrency,
                rate: args.rate,
                duration_ms,
                payload: 64,
            },
        ));
    }
    if matches!(args.mode, RelayMode::Throughput | RelayMode::All) {
        for &p in &args.payloads {
            phases.push((
                format!("throughput {p} B"),
                args.throughput_clients,
                Job::RelayThroughput {
                    open_concurrency: args.open_concurrency,
                    window: args.window,
                    duration_ms,
                    payload: p,
                },
            ));
        }
    }
    for (phase, sessions, job) in phases {
        let payload = match job {
            Job::RelayLatency { payload, .. } | Job::RelayThroughput { payload, .. } => payload,
            _ => 0,
        };
        for target in targets {
            let mut pool = ctx.pool(target, sessions, job.clone(), &phase).await?;
            pool.barrier(open_budget(sessions)).await?;
            let before = Sample::of(&target.proxy_pids());
            let backend_before = Sample::of(&target.backend_pids());
            let t0 = Instant::now();
            pool.release().await?;
            pool.barrier(args.duration + open_budget(sessions)).await?;
            let elapsed = t0.elapsed().as_secs_f64();
            let after = Sample::of(&target.proxy_pids());
            let backend_after = Sample::of(&target.backend_pids());
            pool.release().await?;
            let merged = pool.finish(open_budget(sessions)).await?;

            let mut r = run_of(target, &phase, &merged, &mut out.failures);
            // The open phase's own round trip is not part of the measured phase.
            r.latency.retain(|k, _| k == "rtt");
            let rtts = merged.hist("rtt").len();
            let in_window = if matches!(job, Job::RelayThroughput { .. }) {
                merged.counter("pongs_in_window")
            } else {
                rtts
            };
            let secs = args.duration.as_secs_f64();
            r.set("sessions", sessions as f64);
            r.set("round_trips", rtts as f64);
            r.set("round_trips_per_s", in_window as f64 / secs);
            r.set(
                "payload_mib_per_s",
                in_window as f64 * payload as f64 / secs / (1024.0 * 1024.0),
            );
            r.set("phase_s", elapsed);
            add_samples(&mut r, "", before, after);
            let cpu = after.cpu_us.saturating_sub(before.cpu_us) as f64;
            r.set("cpu_us_per_message", cpu / (2.0 * rtts.max(1) as f64));
            if target.name != "direct" {
                let b = backend_after.cpu_us.saturating_sub(backend_before.cpu_us) as f64;
                r.set("backend_cpu_us_per_round_trip", b / rtts.max(1) as f64);
            }
            out.runs.push(r);
        }
    }
    Ok(out)
}
