//! The client side of every scenario, as run inside a worker process: one task per session,
//! counters and histograms in [`Shared`], barriers with the parent through [`Ctl`].

mod churn;
mod connect;
mod hold;
mod relay;
mod wake;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Result, bail};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::plan::{Job, Plan};
use crate::worker::{Ctl, Shared};
use crate::ws::{self, Incoming, Ws};
use protocol::WorkspaceStatus;

/// Guard for any single step (a connect, a frame, a pong): generous, for a loaded 2-core machine.
pub(crate) const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `plan.job`.
pub async fn run(plan: &Arc<Plan>, shared: &Arc<Shared>, ctl: &mut Ctl) -> Result<()> {
    match &plan.job {
        Job::Hold { .. } => hold::run(plan, shared, ctl).await,
        Job::Connect { .. } => connect::run(plan, shared).await,
        Job::RelayLatency { .. } => relay::latency(plan, shared, ctl).await,
        Job::RelayThroughput { .. } => relay::throughput(plan, shared, ctl).await,
        Job::Wake { .. } => wake::run(plan, shared, ctl).await,
        Job::Churn { .. } => churn::run(plan, shared).await,
    }
}

/// Reads status frames until `running`. Errors and closes are failures.
pub(crate) async fn wait_running(ws: &mut Ws, within: Duration) -> Result<()> {
    loop {
        match ws::next(ws, within).await? {
            Incoming::Status(WorkspaceStatus::Running) => return Ok(()),
            Incoming::Status(_) | Incoming::Other => continue,
            Incoming::Pong(seq) => bail!("pong {seq} before running"),
            Incoming::Error(e) => bail!("error while waiting for running: {e}"),
            Incoming::Closed(code) => bail!("closed ({code:?}) while waiting for running"),
        }
    }
}

/// Opens session `i` up to its first pong: the whole path works once this returns.
pub(crate) async fn open_one(plan: &Plan, i: usize, shared: &Shared) -> Result<Ws> {
    let t0 = Instant::now();
    let mut ws = ws::connect(plan.url_of(i), plan.source_of(i)).await?;
    shared.record("upgrade", t0.elapsed());
    if plan.expect_status {
        wait_running(&mut ws, STEP_TIMEOUT).await?;
        shared.record("status", t0.elapsed());
    }
    ws::round_trip(&mut ws, 0, "", STEP_TIMEOUT).await?;
    shared.record("open", t0.elapsed());
    shared.opened.fetch_add(1, Ordering::Relaxed);
    Ok(ws)
}

/// Opens every session of this worker, `concurrency` at a time, one task each. A session that
/// fails to open is an error and is left out.
pub(crate) async fn open_all(
    plan: &Arc<Plan>,
    shared: &Arc<Shared>,
    concurrency: usize,
) -> Vec<(usize, Ws)> {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::new();
    for i in plan.my_sessions() {
        let permit = permits.clone().acquire_owned().await.expect("open");
        let (plan, shared) = (plan.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            let r = open_one(&plan, i, &shared).await;
            drop(permit);
            match r {
                Ok(ws) => Some((i, ws)),
                Err(e) => {
                    shared.error(format!("open session {i}: {e:#}"));
                    None
                }
            }
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(Some(s)) = t.await {
            out.push(s);
        }
    }
    out
}

/// Closes sessions concurrently, politely.
pub(crate) async fn close_all(sessions: Vec<(usize, Ws)>, shared: &Arc<Shared>) {
    let mut tasks = Vec::with_capacity(sessions.len());
    for (_, ws) in sessions {
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            ws::close(ws).await;
            shared.closed.fetch_add(1, Ordering::Relaxed);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}
