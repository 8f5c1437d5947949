//! `hold`: open every session, let the parent measure the server, then keep them alive with a
//! ping every interval (each checked for its pong, in order), let the parent measure again, close.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Result, bail};
use futures_util::{SinkExt, StreamExt};
use protocol::WorkspaceStatus;
use rand::Rng;
use tokio::time::Instant;

use super::{STEP_TIMEOUT, close_all, open_all};
use crate::plan::{Job, Plan};
use crate::worker::{Ctl, Shared};
use crate::ws::{self, Incoming, Ws};

pub(super) async fn run(plan: &Arc<Plan>, shared: &Arc<Shared>, ctl: &mut Ctl) -> Result<()> {
    let Job::Hold {
        open_concurrency,
        ping_interval_ms,
        hold_ms,
    } = plan.job
    else {
        unreachable!()
    };
    let sessions = open_all(plan, shared, open_concurrency).await;
    ctl.barrier().await?; // all open: the parent samples the server

    let interval = Duration::from_millis(ping_interval_ms.max(1));
    let deadline = Instant::now() + Duration::from_millis(hold_ms);
    let mut tasks = Vec::with_capacity(sessions.len());
    for (i, ws) in sessions {
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            match keep(ws, interval, deadline, &shared).await {
                Ok(ws) => Some((i, ws)),
                Err(e) => {
                    shared.error(format!("session {i} while held: {e:#}"));
                    None
                }
            }
        }));
    }
    let mut held = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(Some(s)) = t.await {
            held.push(s);
        }
    }
    ctl.barrier().await?; // still all open: the parent samples again
    close_all(held, shared).await;
    Ok(())
}

/// Pings every `interval` (first one at a random offset, so pings spread evenly) until
/// `deadline`; each pong must answer the last ping.
async fn keep(mut ws: Ws, interval: Duration, deadline: Instant, shared: &Shared) -> Result<Ws> {
    let offset = rand::rng().random_range(0..interval.as_micros() as u64);
    let mut tick =
        tokio::time::interval_at(Instant::now() + Duration::from_micros(offset), interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    let mut outstanding: Option<(u64, Instant)> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tick.tick() => {
                if let Some((s, _)) = outstanding {
                    bail!("pong {s} not back after {interval:?}");
                }
                seq += 1;
                ws.send(ws::ping_frame(seq, "")).await?;
                shared.sent.fetch_add(1, Ordering::Relaxed);
                outstanding = Some((seq, Instant::now()));
            }
            msg = ws.next() => {
                let Some(msg) = msg else { bail!("server closed the session") };
                match ws::classify(&msg?) {
                    Incoming::Pong(s) => match outstanding.take() {
                        Some((want, sent)) if want == s => {
                            shared.record("rtt", sent.elapsed());
                            shared.received.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => bail!("unexpected pong {s}"),
                    },
                    Incoming::Status(WorkspaceStatus::Running) | Incoming::Other => {}
                    Incoming::Status(st) => bail!("status {st} while held"),
                    Incoming::Error(e) => bail!("error frame: {e}"),
                    Incoming::Closed(code) => bail!("closed by the server ({code:?})"),
                }
            }
        }
    }
    if let Some((s, _)) = outstanding {
        loop {
            match ws::next(&mut ws, STEP_TIMEOUT).await? {
                Incoming::Pong(got) if got == s => {
                    shared.received.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Incoming::Status(WorkspaceStatus::Running) | Incoming::Other => {}
                other => bail!("lost pong {s}: got {other:?}"),
            }
        }
    }
    Ok(ws)
}
