//! `churn`: `concurrency` loops that each pick a random workspace, connect (waking it if need
//! be), hold it for a random time while pinging, disconnect, and pause for a random time — long
//! enough, sometimes, for the idle timer to fire. A workspace that stops under a connected client
//! (a non-`running` status or a close while held) is the failure this scenario looks for.
//! The last disconnect per workspace goes back to the parent, which checks the idle stops.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Result, bail};
use futures_util::{SinkExt, StreamExt};
use protocol::WorkspaceStatus;
use rand::Rng;
use tokio::time::Instant;

use super::wake::unix_ns;
use super::{STEP_TIMEOUT, wait_running};
use crate::plan::{Job, Plan};
use crate::worker::Shared;
use crate::ws::{self, Incoming, Ws};

/// Ping period while a churn client holds its session.
const PING_EVERY: Duration = Duration::from_millis(250);

pub(super) async fn run(plan: &Arc<Plan>, shared: &Arc<Shared>) -> Result<()> {
    let Job::Churn {
        concurrency,
        duration_ms,
        hold_ms,
        gap_ms,
    } = plan.job
    else {
        unreachable!()
    };
    let deadline = Instant::now() + Duration::from_millis(duration_ms);
    let mut loops = Vec::new();
    for c in 0..concurrency.max(1) {
        let (plan, shared) = (plan.clone(), shared.clone());
        loops.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let (w, hold, gap) = {
                    let mut rng = rand::rng();
                    (
                        rng.random_range(0..plan.urls.len()),
                        rng.random_range(hold_ms.0..=hold_ms.1),
                        rng.random_range(gap_ms.0..=gap_ms.1),
                    )
                };
                // Session index `w` selects workspace `w` (urls are per workspace).
                let source = plan.source_of(c);
                if let Err(e) = visit(&plan, w, source, Duration::from_millis(hold), &shared).await
                {
                    shared.error(format!("workspace {w}: {e:#}"));
                }
                shared.max(format!("last_disconnect_ns_{w}"), unix_ns());
                let pause = Duration::from_millis(gap);
                tokio::time::sleep_until((Instant::now() + pause).min(deadline)).await;
            }
        }));
    }
    for l in loops {
        let _ = l.await;
    }
    Ok(())
}

/// One visit: connect, wait for `running`, hold while pinging, close.
async fn visit(
    plan: &Plan,
    w: usize,
    source: Option<std::net::IpAddr>,
    hold: Duration,
    shared: &Shared,
) -> Result<()> {
    let t0 = Instant::now();
    let mut ws = ws::connect(&plan.urls[w], source).await?;
    shared.opened.fetch_add(1, Ordering::Relaxed);
    shared.count("connects", 1);
    wait_running(&mut ws, STEP_TIMEOUT).await?;
    shared.record("to_running", t0.elapsed());
    let held = hold_session(&mut ws, hold, shared).await;
    ws::close(ws).await;
    shared.closed.fetch_add(1, Ordering::Relaxed);
    held
}

async fn hold_session(ws: &mut Ws, hold: Duration, shared: &Shared) -> Result<()> {
    let end = Instant::now() + hold;
    let mut tick = tokio::time::interval(PING_EVERY);
    let mut seq = 0u64;
    let mut outstanding = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            _ = tick.tick() => {
                seq += 1;
                ws.send(ws::ping_frame(seq, "")).await?;
                shared.sent.fetch_add(1, Ordering::Relaxed);
                outstanding += 1;
            }
            msg = ws.next() => {
                let Some(msg) = msg else { bail!("stop while connected: socket ended") };
                match ws::classify(&msg?) {
                    Incoming::Pong(_) => {
                        outstanding = outstanding.saturating_sub(1);
                        shared.received.fetch_add(1, Ordering::Relaxed);
                    }
                    Incoming::Status(WorkspaceStatus::Running) | Incoming::Other => {}
                    Incoming::Status(st) => bail!("stop while connected: status {st}"),
                    Incoming::Error(e) => bail!("stop while connected: error {e}"),
                    Incoming::Closed(code) => bail!("stop while connected: closed ({code:?})"),
                }
            }
        }
    }
    // Pongs still in flight must arrive: a lost one is an error too.
    while outstanding > 0 {
        match ws::next(ws, STEP_TIMEOUT).await? {
            Incoming::Pong(_) => {
                outstanding -= 1;
                shared.received.fetch_add(1, Ordering::Relaxed);
            }
            Incoming::Status(WorkspaceStatus::Running) | Incoming::Other => {}
            other => bail!("lost pong: {other:?}"),
        }
    }
    Ok(())
}
