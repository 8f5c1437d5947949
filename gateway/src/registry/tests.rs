//! The owner task's rules, under paused tokio time with the in-memory provider: single-flight
//! wakes, boot budget, connect during `stopping`, and the idle timer — once, after the timeout,
//! never while connected — including a randomized churn.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use protocol::WorkspaceStatus;
use protocol::control::ErrorCode;
use rand::{Rng, SeedableRng};
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::*;
use crate::provider::memory::MemoryProvider;
use crate::provider::{Endpoint, NewWorkspace};

/// A task probe the test sets by hand.
#[derive(Default)]
struct FakeProbe(AtomicU32);

#[async_trait]
impl TaskProbe for FakeProbe {
    async fn active_tasks(&self, _: &Endpoint) -> Result<u32, String> {
        Ok(self.0.load(Ordering::SeqCst))
    }
}

struct Fixture {
    provider: Arc<MemoryProvider>,
    registry: Arc<Registry>,
    probe: Arc<FakeProbe>,
    metrics: Arc<Metrics>,
}

const IDLE: Duration = Duration::from_secs(600);

fn settings() -> Settings {
    Settings {
        idle_timeout: IDLE,
        boot_timeout: Duration::from_secs(300),
        task_poll_interval: Duration::from_secs(5),
    }
}

async fn fixture(settings: Settings) -> Fixture {
    let provider = Arc::new(MemoryProvider::new());
    let probe = Arc::new(FakeProbe::default());
    let metrics = Arc::new(Metrics::new());
    let registry = Registry::new(
        provider.clone(),
        metrics.clone(),
        probe.clone(),
        settings,
        CancellationToken::new(),
    );
    registry.start().await.unwrap();
    Fixture {
        provider,
        registry,
        probe,
        metrics,
    }
}

impl Fixture {
    async fn workspace(&self, spec: NewWorkspace) -> Arc<Handle> {
        let record = self
            .provider
            .create("alice", Uuid::new_v4(), spec)
            .await
            .unwrap();
        self.registry.handle(&record)
    }

    async fn running(&self, spec: NewWorkspace) -> Arc<Handle> {
        let handle = self.workspace(spec).await;
        handle.wake();
        wait_for(&handle, WorkspaceStatus::Running).await;
        handle
    }
}

/// Waits (in paused time) until the workspace reaches `status`.
async fn wait_for(handle: &Handle, status: WorkspaceStatus) -> Snapshot {
    let (mut snapshot, mut events) = handle.subscribe();
    timeout(Duration::from_secs(24 * 3600), async {
        while snapshot.status != status {
            snapshot = match events.recv().await {
                Ok(s) => s,
                Err(_) => handle.snapshot(),
            };
        }
        snapshot
    })
    .await
    .unwrap_or_else(|_| panic!("never reached {status}; last {:?}", handle.snapshot()))
}

#[tokio::test(start_paused = true)]
async fn fifty_concurrent_wakes_start_once() {
    let f = fixture(settings()).await;
    f.provider.set_start_delay(Duration::from_secs(20));
    let handle = f.workspace(NewWorkspace::default()).await;
    let leases: Vec<Lease> = (0..50)
        .map(|_| {
            let lease = handle.lease();
            handle.wake();
            lease
        })
        .collect();
    wait_for(&handle, WorkspaceStatus::Running).await;
    for _ in 0..50 {
        handle.wake();
    }
    sleep(Duration::from_secs(60)).await;
    assert_eq!(f.provider.start_calls(), 1);
    assert_eq!(handle.connections(), 50);
    drop(leases);
    assert_eq!(handle.connections(), 0);
    assert!(
        f.metrics
            .encode()
            .contains("aether_gateway_workspace_starts_total 1")
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_start_is_reported_with_its_reason() {
    let f = fixture(settings()).await;
    f.provider.fail_next_start("image pull failed");
    let handle = f.workspace(NewWorkspace::default()).await;
    handle.wake();
    let snapshot = wait_for(&handle, WorkspaceStatus::Error).await;
    assert_eq!(snapshot.error, Some(ErrorCode::StartFailed));
    assert!(snapshot.message.unwrap().contains("image pull failed"));
    // The next connect tries again.
    handle.wake();
    wait_for(&handle, WorkspaceStatus::Running).await;
    assert_eq!(f.provider.start_calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_start_over_the_boot_budget_times_out_and_is_cleaned_up() {
    let f = fixture(settings()).await;
    f.provider.hang_next_start();
    let handle = f.workspace(NewWorkspace::default()).await;
    let began = Instant::now();
    handle.wake();
    let snapshot = wait_for(&handle, WorkspaceStatus::Error).await;
    assert_eq!(snapshot.error, Some(ErrorCode::StartTimeout));
    assert!(began.elapsed() >= Duration::from_secs(300));
    assert!(began.elapsed() < Duration::from_secs(301));
    sleep(Duration::from_secs(1)).await;
    assert_eq!(
        f.provider.stop_calls(),
        1,
        "the half-started workspace is stopped"
    );
}

#[tokio::test(start_paused = true)]
async fn a_connect_during_stopping_waits_for_stopped_then_starts() {
    let f = fixture(settings()).await;
    f.provider.set_stop_delay(Duration::from_secs(30));
    let handle = f.running(NewWorkspace::default()).await;
    let stop = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.stop(StopReason::User).await })
    };
    wait_for(&handle, WorkspaceStatus::Stopping).await;
    let _lease = handle.lease();
    handle.wake();
    let (_, mut events) = handle.subscribe();
    let mut seen = Vec::new();
    while seen.last() != Some(&WorkspaceStatus::Running) {
        seen.push(events.recv().await.unwrap().status);
    }
    assert_eq!(
        seen,
        [
            WorkspaceStatus::Stopped,
            WorkspaceStatus::Starting,
            WorkspaceStatus::Running
        ]
    );
    stop.await.unwrap().unwrap();
    assert_eq!(f.provider.start_calls(), 2);
    assert_eq!(f.provider.stop_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_a_start_is_announced_at_once_and_a_connect_then_wakes_it_again() {
    let f = fixture(settings()).await;
    f.provider.set_start_delay(Duration::from_secs(20));
    let handle = f.workspace(NewWorkspace::default()).await;
    handle.wake();
    sleep(Duration::from_secs(1)).await;
    let (_, mut events) = handle.subscribe();
    handle.stop(StopReason::User).await.unwrap();
    assert_eq!(
        handle.snapshot().status,
        WorkspaceStatus::Stopping,
        "the stop is visible before the start it waits for finishes"
    );
    // A client arrives while the stop waits: it must not find the workspace running before
    // the stop, and must find it running after.
    let _lease = handle.lease();
    handle.wake();
    let mut seen = Vec::new();
    while seen.last() != Some(&WorkspaceStatus::Running) {
        seen.push(events.recv().await.unwrap().status);
    }
    assert_eq!(
        seen,
        [
            WorkspaceStatus::Stopping,
            WorkspaceStatus::Stopped,
            WorkspaceStatus::Starting,
            WorkspaceStatus::Running
        ]
    );
    assert_eq!((f.provider.start_calls(), f.provider.stop_calls()), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn idle_stop_fires_once_after_the_timeout_and_never_while_connected() {
    let f = fixture(settings()).await;
    let handle = f.running(NewWorkspace::default()).await;
    let lease = handle.lease();
    sleep(IDLE * 5).await;
    assert_eq!(handle.snapshot().status, WorkspaceStatus::Running);
    assert_eq!(handle.idle_stop_at(), None);

    drop(lease);
    let idle_from = Instant::now();
    sleep(Duration::from_millis(1)).await;
    assert!(handle.idle_stop_at().is_some(), "the deadline is visible");
    wait_for(&handle, WorkspaceStatus::Stopped).await;
    let waited = idle_from.elapsed();
    assert!(
        waited >= IDLE && waited < IDLE + Duration::from_secs(1),
        "{waited:?}"
    );
    sleep(IDLE * 3).await;
    assert_eq!(f.provider.stop_calls(), 1);
    assert!(
        f.metrics
            .encode()
            .contains(r#"aether_gateway_workspace_stops_total{reason="idle"} 1"#)
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_connection_cancels_a_pending_idle_stop() {
    let f = fixture(settings()).await;
    let handle = f.running(NewWorkspace::default()).await;
    sleep(IDLE - Duration::from_secs(1)).await;
    let lease = handle.lease();
    sleep(IDLE * 2).await;
    assert_eq!(handle.snapshot().status, WorkspaceStatus::Running);
    drop(lease);
    // The timer starts again from the disconnect, in full.
    sleep(IDLE - Duration::from_secs(1)).await;
    assert_eq!(handle.snapshot().status, WorkspaceStatus::Running);
    wait_for(&handle, WorkspaceStatus::Stopped).await;
    assert_eq!(f.provider.stop_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_owner_is_told_only_when_the_count_leaves_or_reaches_zero() {
    let f = fixture(settings()).await;
    let handle = f.running(NewWorkspace::default()).await;
    let mut told = handle.connections.subscribe();
    told.borrow_and_update();
    let first = handle.lease();
    assert!(told.has_changed().unwrap(), "0 -> 1 cancels the idle timer");
    told.borrow_and_update();
    let second = handle.lease();
    drop(first);
    assert!(
        !told.has_changed().unwrap(),
        "2 -> 1 -> 2 changes nothing the owner decides"
    );
    assert_eq!(handle.connections(), 1);
    drop(second);
    assert!(told.has_changed().unwrap(), "1 -> 0 arms the idle timer");
    assert_eq!(handle.connections(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_idle_timer_counts_from_the_last_of_overlapping_visits() {
    let f = fixture(settings()).await;
    let handle = f.running(NewWorkspace::default()).await;
    let first = handle.lease();
    let second = handle.lease();
    sleep(IDLE / 2).await;
    drop(first);
    sleep(IDLE).await;
    assert_eq!(
        handle.snapshot().status,
        WorkspaceStatus::Running,
        "one still connected"
    );
    drop(second);
    let idle_from = Instant::now();
    wait_for(&handle, WorkspaceStatus::Stopped).await;
    let waited = idle_from.elapsed();
    assert!(
        waited >= IDLE && waited < IDLE + Duration::from_secs(1),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_visit_the_owner_never_saw_open_still_restarts_the_timer() {
    let f = fixture(settings()).await;
    let handle = f.running(NewWorkspace::default()).await;
    sleep(IDLE / 2).await;
    assert!(handle.idle_stop_at().is_some(), "armed while idle");
    // Open and close without yielding: the owner only ever sees the count back at zero.
    drop(handle.lease());
    let visited = Instant::now();
    // Past the deadline the timer had before the visit. (Not compared through `idle_stop_at`:
    // that is wall-clock time, which paused tokio time does not move.)
    sleep(IDLE / 2 + Duration::from_secs(1)).await;
    assert_eq!(
        handle.snapshot().status,
        WorkspaceStatus::Running,
        "the visit restarted the timer"
    );
    wait_for(&handle, WorkspaceStatus::Stopped).await;
    assert!(
        visited.elapsed() >= IDLE,
        "stopped {:?} after the visit",
        visited.elapsed()
    );
    assert_eq!(f.provider.stop_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn keep_active_and_the_per_workspace_timeout_are_honoured() {
    let f = fixture(settings()).await;
    let kept = f
        .running(NewWorkspace {
            keep_active: true,
            ..NewWorkspace::default()
        })
        .await;
    let quick = f
        .running(NewWorkspace {
            idle_timeout_secs: Some(60),
            ..NewWorkspace::default()
        })
        .await;
    let began = Instant::now();
    wait_for(&quick, WorkspaceStatus::Stopped).await;
    assert!(began.elapsed() < Duration::from_secs(62));
    sleep(IDLE * 10).await;
    assert_eq!(kept.snapshot().status, WorkspaceStatus::Running);
    // Turning keep_active off starts its timer.
    kept.update_settings(false, None);
    wait_for(&kept, WorkspaceStatus::Stopped).await;
}

#[tokio::test(start_paused = true)]
async fn an_active_agent_task_keeps_the_workspace_up() {
    let f = fixture(settings()).await;
    f.probe.0.store(1, Ordering::SeqCst);
    let handle = f.running(NewWorkspace::default()).await;
    sleep(IDLE * 3).await;
    assert_eq!(handle.snapshot().status, WorkspaceStatus::Running);
    assert_eq!(handle.active_tasks(), 1);
    f.probe.0.store(0, Ordering::SeqCst);
    let task_ended = Instant::now();
    wait_for(&handle, WorkspaceStatus::Stopped).await;
    let waited = task_ended.elapsed();
    // Learned within one poll interval, then a full idle timeout.
    assert!(
        waited >= IDLE && waited <= IDLE + Duration::from_secs(6),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_workspace_that_dies_is_reported_and_woken_again() {
    let f = fixture(settings()).await;
    let handle = f.running(NewWorkspace::default()).await;
    let _lease = handle.lease();
    f.provider
        .kill(handle.id(), "workspace service exited (signal 9)")
        .unwrap();
    let snapshot = wait_for(&handle, WorkspaceStatus::Error).await;
    assert_eq!(snapshot.error, Some(ErrorCode::BackendLost));
    handle.wake();
    wait_for(&handle, WorkspaceStatus::Running).await;
}

/// Random connects and disconnects: the workspace is stopped only after `IDLE` without any
/// connection, never while one is open, and every idle period of `IDLE` stops it.
#[tokio::test(start_paused = true)]
async fn randomized_churn_never_stops_a_connected_workspace() {
    let f = fixture(settings()).await;
    let handle = f.running(NewWorkspace::default()).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut leases: Vec<Lease> = Vec::new();
    let mut idle_since: Option<Instant> = None;
    let mut stops = 0;
    for _ in 0..2000 {
        match rng.random_range(0..10) {
            0..=2 => {
                // What a session does: take a lease, then ask for the workspace to run.
                leases.push(handle.lease());
                handle.wake();
            }
            3..=6 if !leases.is_empty() => {
                let i = rng.random_range(0..leases.len());
                drop(leases.swap_remove(i));
            }
            7 => leases.clear(),
            _ => {}
        }
        if !leases.is_empty() {
            idle_since = None;
        } else if idle_since.is_none() {
            idle_since = Some(Instant::now());
        }
        sleep(Duration::from_secs(rng.random_range(1..400))).await;
        let calls = f.provider.stop_calls();
        if calls > stops {
            stops = calls;
            assert!(
                leases.is_empty(),
                "stopped while {} connected",
                leases.len()
            );
            let idle_for = idle_since.expect("idle").elapsed();
            assert!(idle_for >= IDLE, "stopped after only {idle_for:?} idle");
        }
        if let Some(since) = idle_since {
            let status = handle.snapshot().status;
            assert!(
                since.elapsed() < IDLE + Duration::from_secs(1)
                    || status == WorkspaceStatus::Stopped,
                "idle for {:?} and still {status}",
                since.elapsed()
            );
        } else {
            assert_eq!(handle.snapshot().status, WorkspaceStatus::Running);
        }
    }
    assert!(stops > 0, "the churn never let the workspace idle");
}

#[tokio::test(start_paused = true)]
async fn the_idle_timeout_counts_from_the_last_disconnect_even_during_a_boot() {
    let f = fixture(settings()).await;
    f.provider.set_start_delay(Duration::from_secs(120));
    let handle = f.workspace(NewWorkspace::default()).await;
    let lease = handle.lease();
    handle.wake();
    wait_for(&handle, WorkspaceStatus::Starting).await;
    sleep(Duration::from_secs(30)).await;
    // The client gives up while the workspace still boots.
    drop(lease);
    let disconnected = Instant::now();
    wait_for(&handle, WorkspaceStatus::Running).await;
    wait_for(&handle, WorkspaceStatus::Stopped).await;
    let idle = disconnected.elapsed();
    assert!(
        idle >= IDLE && idle < IDLE + Duration::from_secs(1),
        "{idle:?}"
    );
}
