//! `wake`: every client connects at once to one stopped workspace and records, as wall-clock
//! nanoseconds (comparable across worker processes), when its upgrade completed, when it saw
//! `starting` and when it saw `running`. Once every client has seen `running`, one round trip
//! each proves the relay works, and the sessions stay open until the parent has read the start
//! count.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use protocol::WorkspaceStatus;
use tokio::sync::Semaphore;

use super::close_all;
use crate::plan::{Job, Plan};
use crate::worker::{Ctl, Shared};
use crate::ws::{self, Incoming, Ws};

/// Nanoseconds since the Unix epoch: the one clock all worker processes share.
pub(crate) fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub(super) async fn run(plan: &Arc<Plan>, shared: &Arc<Shared>, ctl: &mut Ctl) -> Result<()> {
    let Job::Wake {
        connect_concurrency,
        timeout_ms,
    } = plan.job
    else {
        unreachable!()
    };
    let within = Duration::from_millis(timeout_ms);
    let permits = Arc::new(Semaphore::new(connect_concurrency.max(1)));
    let mut tasks = Vec::new();
    for i in plan.my_sessions() {
        let permit = permits.clone().acquire_owned().await?;
        let (plan, shared) = (plan.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            let r = client(&plan, i, &shared, permit, within).await;
            match r {
                Ok(ws) => Some((i, ws)),
                Err(e) => {
                    shared.error(format!("wake client {i}: {e:#}"));
                    None
                }
            }
        }));
    }
    let mut running = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(Some(s)) = t.await {
            running.push(s);
        }
    }
    // Only now prove every relay works: pinging as soon as each client saw `running` would
    // put the harness's own traffic in the way of the `running` frames still being delivered.
    let checks: Vec<_> = running
        .into_iter()
        .map(|(i, mut ws)| {
            let shared = shared.clone();
            tokio::spawn(async move {
                match ws::round_trip(&mut ws, 1, "", within).await {
                    Ok(()) => {
                        shared.received.fetch_add(1, Ordering::Relaxed);
                        Some((i, ws))
                    }
                    Err(e) => {
                        shared.error(format!("wake client {i}: relay after running: {e:#}"));
                        None
                    }
                }
            })
        })
        .collect();
    let mut open = Vec::with_capacity(checks.len());
    for c in checks {
        if let Ok(Some(s)) = c.await {
            open.push(s);
        }
    }
    ctl.barrier().await?;
    close_all(open, shared).await;
    Ok(())
}

async fn client(
    plan: &Plan,
    i: usize,
    shared: &Shared,
    permit: tokio::sync::OwnedSemaphorePermit,
    within: Duration,
) -> Result<Ws> {
    let mut ws = ws::connect(plan.url_of(i), plan.source_of(i)).await?;
    // The permit bounds connects in flight, not sessions held: release it once upgraded.
    drop(permit);
    let upgraded = unix_ns();
    shared.opened.fetch_add(1, Ordering::Relaxed);
    let mut first: Option<WorkspaceStatus> = None;
    let mut starting = 0u64;
    loop {
        match ws::next(&mut ws, within).await? {
            Incoming::Status(st) => {
                first.get_or_insert(st);
                match st {
                    WorkspaceStatus::Starting if starting == 0 => starting = unix_ns(),
                    WorkspaceStatus::Running => break,
                    WorkspaceStatus::Error | WorkspaceStatus::StopFailed => {
                        bail!("status {st} during the wake")
                    }
                    _ => {}
                }
            }
            Incoming::Other => {}
            other => bail!("{other:?} during the wake"),
        }
    }
    let running = unix_ns();
    let first = first.expect("a status arrived");
    shared.push("upgrade_ns", upgraded);
    shared.push("starting_ns", starting);
    shared.push("running_ns", running);
    shared.count(&format!("first_status_{first}"), 1);
    Ok(ws)
}
