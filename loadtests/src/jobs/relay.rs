//! `relay`: round trips of the `workspace` ping through the target.
//!
//! - latency: every session pings on its own fixed schedule (the worker's rate split evenly,
//!   phases random), so the offered load is the same whatever the target's speed; the round trip
//!   is timed from the actual send.
//! - throughput: every session keeps `window` pings in flight and sends the next on each pong.
//!
//! Pongs must come back in order and all of them: anything else is a lost message.

use std::collections::VecDeque;
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

pub(super) async fn latency(plan: &Arc<Plan>, shared: &Arc<Shared>, ctl: &mut Ctl) -> Result<()> {
    let Job::RelayLatency {
        open_concurrency,
        rate,
        duration_ms,
        payload,
    } = plan.job
    else {
        unreachable!()
    };
    let sessions = open_all(plan, shared, open_concurrency).await;
    ctl.barrier().await?;
    let rate = rate / plan.workers.max(1) as f64;
    let n = sessions.len().max(1) as f64;
    let period = Duration::from_secs_f64(n / rate.max(0.001));
    let deadline = Instant::now() + Duration::from_millis(duration_ms);
    let data: Arc<str> = ws::payload(payload).into();
    run_each(sessions, shared, ctl, move |ws, shared| {
        let data = data.clone();
        async move { paced(ws, period, deadline, &data, &shared).await }
    })
    .await
}

async fn paced(
    mut ws: Ws,
    period: Duration,
    deadline: Instant,
    data: &str,
    shared: &Shared,
) -> Result<Ws> {
    let offset = rand::rng().random_range(0..period.as_micros().max(1) as u64);
    let mut next = Instant::now() + Duration::from_micros(offset);
    let mut seq = 0u64;
    let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next), if next < deadline => {
                seq += 1;
                in_flight.push_back((seq, Instant::now()));
                ws.send(ws::ping_frame(seq, data)).await?;
                shared.sent.fetch_add(1, Ordering::Relaxed);
                next += period;
            }
            _ = tokio::time::sleep_until(deadline), if next >= deadline => break,
            msg = ws.next() => on_pong(msg, &mut in_flight, shared)?,
        }
    }
    drain(&mut ws, &mut in_flight, shared).await?;
    Ok(ws)
}

pub(super) async fn throughput(
    plan: &Arc<Plan>,
    shared: &Arc<Shared>,
    ctl: &mut Ctl,
) -> Result<()> {
    let Job::RelayThroughput {
        open_concurrency,
        window,
        duration_ms,
        payload,
    } = plan.job
    else {
        unreachable!()
    };
    let sessions = open_all(plan, shared, open_concurrency).await;
    ctl.barrier().await?;
    let deadline = Instant::now() + Duration::from_millis(duration_ms);
    let data: Arc<str> = ws::payload(payload).into();
    let window = window.max(1);
    run_each(sessions, shared, ctl, move |ws, shared| {
        let data = data.clone();
        async move { windowed(ws, window, deadline, &data, &shared).await }
    })
    .await
}

/// Runs `each` on every open session in a task of its own, then meets the other workers at the
/// barrier and closes the sessions that survived (a session's error is recorded, not fatal).
async fn run_each<F, Fut>(
    sessions: Vec<(usize, Ws)>,
    shared: &Arc<Shared>,
    ctl: &mut Ctl,
    each: F,
) -> Result<()>
where
    F: Fn(Ws, Arc<Shared>) -> Fut,
    Fut: std::future::Future<Output = Result<Ws>> + Send + 'static,
{
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|(i, ws)| {
            let shared = shared.clone();
            let run = each(ws, shared.clone());
            tokio::spawn(async move {
                match run.await {
                    Ok(ws) => Some((i, ws)),
                    Err(e) => {
                        shared.error(format!("session {i}: {e:#}"));
                        None
                    }
                }
            })
        })
        .collect();
    let done = join(tasks).await;
    ctl.barrier().await?;
    close_all(done, shared).await;
    Ok(())
}

async fn windowed(
    mut ws: Ws,
    window: usize,
    deadline: Instant,
    data: &str,
    shared: &Shared,
) -> Result<Ws> {
    let mut seq = 0u64;
    let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::with_capacity(window);
    let mut in_window = 0u64;
    for _ in 0..window {
        seq += 1;
        in_flight.push_back((seq, Instant::now()));
        ws.feed(ws::ping_frame(seq, data)).await?;
    }
    ws.flush().await?;
    shared.sent.fetch_add(window as u64, Ordering::Relaxed);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            msg = ws.next() => {
                on_pong(msg, &mut in_flight, shared)?;
                in_window += 1;
                while in_flight.len() < window {
                    seq += 1;
                    in_flight.push_back((seq, Instant::now()));
                    ws.send(ws::ping_frame(seq, data)).await?;
                    shared.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    shared.count("pongs_in_window", in_window);
    drain(&mut ws, &mut in_flight, shared).await?;
    Ok(ws)
}

/// Handles one frame: a pong must answer the oldest ping in flight.
fn on_pong(
    msg: Option<
        Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>,
    >,
    in_flight: &mut VecDeque<(u64, Instant)>,
    shared: &Shared,
) -> Result<()> {
    let Some(msg) = msg else {
        bail!("server closed the session")
    };
    match ws::classify(&msg?) {
        Incoming::Pong(s) => match in_flight.pop_front() {
            Some((want, sent)) if want == s => {
                shared.record("rtt", sent.elapsed());
                shared.received.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Some((want, _)) => bail!("lost message: pong {s} while {want} was due"),
            None => bail!("pong {s} with nothing in flight"),
        },
        Incoming::Status(WorkspaceStatus::Running) | Incoming::Other => Ok(()),
        Incoming::Status(st) => bail!("status {st} during relay"),
        Incoming::Error(e) => bail!("error frame: {e}"),
        Incoming::Closed(code) => bail!("closed by the server ({code:?})"),
    }
}

/// Waits for every ping still in flight; one missing is a lost message.
async fn drain(
    ws: &mut Ws,
    in_flight: &mut VecDeque<(u64, Instant)>,
    shared: &Shared,
) -> Result<()> {
    while let Some(&(seq, _)) = in_flight.front() {
        let msg = tokio::time::timeout(STEP_TIMEOUT, ws.next())
            .await
            .map_err(|_| anyhow::anyhow!("lost message: pong {seq} not back"))?;
        on_pong(msg, in_flight, shared)?;
    }
    Ok(())
}

async fn join(tasks: Vec<tokio::task::JoinHandle<Option<(usize, Ws)>>>) -> Vec<(usize, Ws)> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(Some(s)) = t.await {
            out.push(s);
        }
    }
    out
}
