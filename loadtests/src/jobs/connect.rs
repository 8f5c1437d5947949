//! `connect`: a connect storm. Each attempt is TCP connect → upgrade → first `workspace` status
//! (gateway only) → one ping/pong → close, timed from the TCP connect.
//!
//! Open loop (`rate` > 0): attempts start on a fixed schedule whatever the target's speed; when
//! too many are still in flight the attempt is skipped and counted, so an overloaded target shows
//! as skips instead of as a harness that slows down with it. Closed loop (`rate` = 0):
//! `concurrency` loops connect back to back, which measures the highest connect rate.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::{STEP_TIMEOUT, wait_running};
use crate::plan::{Job, Plan};
use crate::worker::Shared;
use crate::ws;

/// Attempts in flight per worker before the open loop starts skipping.
const MAX_IN_FLIGHT: usize = 2000;

pub(super) async fn run(plan: &Arc<Plan>, shared: &Arc<Shared>) -> Result<()> {
    let Job::Connect {
        rate,
        concurrency,
        duration_ms,
    } = plan.job
    else {
        unreachable!()
    };
    let rate = rate / plan.workers.max(1) as f64;
    let start = Instant::now();
    let deadline = start + Duration::from_millis(duration_ms);
    // Session indexes of this worker, cycled: they pick the workspace and the source address.
    let mine: Vec<usize> = plan.my_sessions().collect();
    let mine = if mine.is_empty() {
        vec![plan.worker]
    } else {
        mine
    };
    if rate > 0.0 {
        let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let period = Duration::from_secs_f64(1.0 / rate);
        let mut tasks = Vec::new();
        let mut k = 0usize;
        loop {
            let at = start + period.mul_f64(k as f64);
            if at >= deadline {
                break;
            }
            tokio::time::sleep_until(at).await;
            let i = mine[k % mine.len()];
            k += 1;
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                shared.count("skipped", 1);
                continue;
            };
            let (plan, shared) = (plan.clone(), shared.clone());
            tasks.push(tokio::spawn(async move {
                attempt(&plan, i, &shared).await;
                drop(permit);
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    } else {
        let mut loops = Vec::new();
        for c in 0..concurrency.max(1) {
            let (plan, shared, mine) = (plan.clone(), shared.clone(), mine.clone());
            loops.push(tokio::spawn(async move {
                let mut k = c;
                while Instant::now() < deadline {
                    attempt(&plan, mine[k % mine.len()], &shared).await;
                    k += concurrency;
                }
            }));
        }
        for l in loops {
            let _ = l.await;
        }
    }
    shared.max("elapsed_ms".into(), start.elapsed().as_millis() as u64);
    Ok(())
}

async fn attempt(plan: &Plan, i: usize, shared: &Shared) {
    let t0 = Instant::now();
    let r = async {
        let mut ws = ws::connect(plan.url_of(i), plan.source_of(i)).await?;
        shared.record("upgrade", t0.elapsed());
        if plan.expect_status {
            // The gateway sends the current status at once; for a running workspace that is
            // the first frame.
            wait_running(&mut ws, STEP_TIMEOUT).await?;
            shared.record("status", t0.elapsed());
        }
        ws::round_trip(&mut ws, 0, "", STEP_TIMEOUT).await?;
        shared.record("pong", t0.elapsed());
        anyhow::Ok(ws)
    }
    .await;
    match r {
        Ok(ws) => {
            shared
                .opened
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            shared.count("connects", 1);
            ws::close(ws).await;
            shared
                .closed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Err(e) => shared.error(format!("connect {i}: {e:#}")),
    }
}
