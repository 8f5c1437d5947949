//! The local provider against real `aether-workspace` processes: create, start, stop, failures,
//! a service killed from outside, and a gateway restart that finds its workspaces still running.
//!
//! Failure cases use tiny shell scripts as the workspace binary. Every wait is for an event or a
//! state, bounded by a generous guard timeout so that a broken build fails instead of hanging.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use gateway::provider::local::{LocalConfig, LocalProvider};
use gateway::provider::{NewWorkspace, Provider, ProviderError, StateChange};
use protocol::WorkspaceStatus;
use protocol::rest::UpdateWorkspace;
use tokio::sync::broadcast;
use tokio::time::timeout;
use uuid::Uuid;

/// Guard for anything that should take well under a second on an idle machine.
const GUARD: Duration = Duration::from_secs(30);

/// A data directory whose leftover workspace processes are killed when the test ends, passed or
/// not: the provider deliberately lets services outlive it, so a failed assertion would leak them.
struct DataDir(tempfile::TempDir);

impl DataDir {
    fn new() -> DataDir {
        DataDir(tempfile::tempdir().expect("tempdir"))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        gateway::provider::local::kill_services_in(self.path());
    }
}

fn config(data_dir: &Path) -> LocalConfig {
    LocalConfig {
        data_dir: data_dir.to_path_buf(),
        workspace_bin: aether_tests::bin_path("aether-workspace"),
        boot_delay: Duration::ZERO,
        stop_grace: Duration::from_secs(10),
        ready_timeout: Duration::from_secs(20),
    }
}

/// A shell script standing in for the workspace binary.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

async fn create(provider: &LocalProvider, owner: &str) -> Result<Uuid> {
    let mut events = provider.subscribe();
    let record = provider
        .create(owner, Uuid::new_v4(), NewWorkspace::default())
        .await?;
    assert_eq!(record.status(), WorkspaceStatus::Creating);
    wait_status(&mut events, record.id(), WorkspaceStatus::Stopped).await?;
    Ok(record.id())
}

/// Opens the provider of `dir` again after the previous one was dropped. A transition is
/// published before it is written (the file follows memory, see `provider::local`), so a write
/// that began just before the drop may hold the registry for a moment more: wait for it, bounded.
async fn reopen(dir: &Path) -> Result<Arc<LocalProvider>> {
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        match LocalProvider::open(config(dir)) {
            Err(ProviderError::Backend(m))
                if m.contains("in use") && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            opened => return Ok(opened?),
        }
    }
}

/// Waits for `id` to be published in `status`; fails on any other terminal state first.
async fn wait_status(
    events: &mut broadcast::Receiver<StateChange>,
    id: Uuid,
    status: WorkspaceStatus,
) -> Result<StateChange> {
    timeout(GUARD, async {
        loop {
            let change = events.recv().await?;
            if change.id == id && change.status == status {
                return Ok(change);
            }
        }
    })
    .await
    .with_context(|| format!("no {status} for {id} within {GUARD:?}"))?
}

/// Whether `pid` is a live process (a zombie is not).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Waits until `pid` is gone; the process is ended by someone else, this only observes it.
async fn wait_gone(pid: i32) -> Result<()> {
    timeout(GUARD, async {
        while alive(pid) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .with_context(|| format!("process {pid} still alive"))
}

/// Pids of live processes whose command line names workspace `id`.
fn processes_of(id: Uuid) -> Vec<i32> {
    let needle = id.to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .filter(|pid| alive(*pid))
        .collect()
}

fn kill(signal: &str, pid: i32) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// The workspace id a service's `/healthz` reports.
async fn healthz(base_url: &str) -> Result<String> {
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("{base_url}/healthz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    match body["workspaceId"].as_str() {
        Some(id) => Ok(id.to_owned()),
        None => bail!("no workspaceId in {body}"),
    }
}

#[tokio::test]
async fn create_provisions_a_stopped_workspace_with_a_volume() -> Result<()> {
    let dir = DataDir::new();
    let provider = LocalProvider::open(config(dir.path()))?;
    let id = create(&provider, "alice").await?;
    let record = provider.get(id).await?;
    assert_eq!(record.status(), WorkspaceStatus::Stopped);
    assert_eq!(record.owner, "alice");
    assert!(record.workspace.machine_id.is_some());
    assert!(provider.volume_dir(id).is_dir());
    assert_eq!(provider.endpoint(id), None);
    assert_eq!(
        provider.stop(id).await,
        Err(ProviderError::InvalidState(WorkspaceStatus::Stopped))
    );
    Ok(())
}

#[tokio::test]
async fn start_runs_the_service_and_stop_ends_it() -> Result<()> {
    let dir = DataDir::new();
    let provider = LocalProvider::open(config(dir.path()))?;
    let id = create(&provider, "alice").await?;
    let mut events = provider.subscribe();

    let endpoint = timeout(GUARD, provider.start(id)).await??;
    assert!(endpoint.base_url.starts_with("http://127.0.0.1:"));
    assert_eq!(events.recv().await?.status, WorkspaceStatus::Starting);
    assert_eq!(events.recv().await?.status, WorkspaceStatus::Running);
    assert_eq!(provider.get(id).await?.status(), WorkspaceStatus::Running);
    assert_eq!(provider.endpoint(id), Some(endpoint.clone()));
    assert_eq!(healthz(&endpoint.base_url).await?, id.to_string());
    assert_eq!(
        timeout(GUARD, provider.start(id)).await?,
        Err(ProviderError::InvalidState(WorkspaceStatus::Running))
    );
    let pid = provider.pid(id).context("pid of a running workspace")?;
    assert!(alive(pid));

    timeout(GUARD, provider.stop(id)).await??;
    assert_eq!(events.recv().await?.status, WorkspaceStatus::Stopping);
    assert_eq!(events.recv().await?.status, WorkspaceStatus::Stopped);
    assert_eq!(provider.get(id).await?.status(), WorkspaceStatus::Stopped);
    assert_eq!(provider.endpoint(id), None);
    assert!(!alive(pid), "the service outlived its stop");
    assert!(healthz(&endpoint.base_url).await.is_err());

    // And it starts again.
    let endpoint = timeout(GUARD, provider.start(id)).await??;
    assert_eq!(healthz(&endpoint.base_url).await?, id.to_string());
    timeout(GUARD, provider.stop(id)).await??;
    Ok(())
}

#[tokio::test]
async fn a_binary_that_cannot_run_is_a_start_error() -> Result<()> {
    let dir = DataDir::new();
    let mut config = config(dir.path());
    config.workspace_bin = dir.path().join("no-such-binary");
    let provider = LocalProvider::open(config)?;
    let id = create(&provider, "alice").await?;
    let mut events = provider.subscribe();

    let err = timeout(GUARD, provider.start(id)).await?.unwrap_err();
    assert!(matches!(err, ProviderError::StartFailed(_)), "{err:?}");
    let change = wait_status(&mut events, id, WorkspaceStatus::Error).await?;
    let message = change.message.context("error without a message")?;
    assert!(message.contains("cannot launch"), "{message}");
    let record = provider.get(id).await?;
    assert_eq!(record.status(), WorkspaceStatus::Error);
    assert_eq!(record.workspace.error_message, Some(message));
    Ok(())
}

#[tokio::test]
async fn a_service_that_exits_before_ready_is_a_start_error_with_its_output() -> Result<()> {
    let dir = DataDir::new();
    let mut config = config(dir.path());
    config.workspace_bin = script(dir.path(), "fails", "echo 'no volume here' >&2; exit 1");
    let provider = LocalProvider::open(config)?;
    let id = create(&provider, "alice").await?;

    let err = timeout(GUARD, provider.start(id)).await?.unwrap_err();
    let ProviderError::StartFailed(message) = err else {
        bail!("expected StartFailed, got {err:?}");
    };
    assert!(message.contains("exit code 1"), "{message}");
    assert!(message.contains("no volume here"), "{message}");
    let record = provider.get(id).await?;
    assert_eq!(record.status(), WorkspaceStatus::Error);
    assert_eq!(record.workspace.error_message, Some(message));
    // `error` is startable again.
    assert!(timeout(GUARD, provider.start(id)).await?.is_err());
    Ok(())
}

#[tokio::test]
async fn a_service_that_never_gets_ready_times_out_and_is_killed() -> Result<()> {
    let dir = DataDir::new();
    let pid_file = dir.path().join("pid");
    let mut config = config(dir.path());
    config.workspace_bin = script(
        dir.path(),
        "silent",
        &format!("echo $$ > {}; exec sleep 600", pid_file.display()),
    );
    config.ready_timeout = Duration::from_secs(1);
    let provider = LocalProvider::open(config)?;
    let id = create(&provider, "alice").await?;

    let err = timeout(GUARD, provider.start(id)).await?.unwrap_err();
    let ProviderError::StartFailed(message) = err else {
        bail!("expected StartFailed, got {err:?}");
    };
    assert!(message.contains("not ready within 1s"), "{message}");
    assert_eq!(provider.get(id).await?.status(), WorkspaceStatus::Error);
    let pid: i32 = std::fs::read_to_string(&pid_file)?.trim().parse()?;
    wait_gone(pid).await?;
    Ok(())
}

#[tokio::test]
async fn stop_escalates_to_sigkill_after_the_grace_period() -> Result<()> {
    let dir = DataDir::new();
    let mut config = config(dir.path());
    // Ignores SIGTERM (an ignored signal stays ignored across exec).
    config.workspace_bin = script(
        dir.path(),
        "stubborn",
        "trap '' TERM; echo 'listening on 127.0.0.1:9'; exec sleep 600",
    );
    config.stop_grace = Duration::from_millis(300);
    let provider = LocalProvider::open(config)?;
    let id = create(&provider, "alice").await?;
    timeout(GUARD, provider.start(id)).await??;
    let pid = provider.pid(id).context("pid")?;

    timeout(GUARD, provider.stop(id)).await??;
    assert_eq!(provider.get(id).await?.status(), WorkspaceStatus::Stopped);
    assert!(!alive(pid));
    Ok(())
}

#[tokio::test]
async fn a_service_killed_from_outside_is_published_as_error() -> Result<()> {
    let dir = DataDir::new();
    let provider = LocalProvider::open(config(dir.path()))?;
    let id = create(&provider, "alice").await?;
    timeout(GUARD, provider.start(id)).await??;
    let pid = provider.pid(id).context("pid")?;
    let mut events = provider.subscribe();

    kill("-KILL", pid);
    let change = wait_status(&mut events, id, WorkspaceStatus::Error).await?;
    let message = change.message.context("message")?;
    assert!(message.contains("workspace service exited"), "{message}");
    assert!(message.contains("SIGKILL"), "{message}");
    assert_eq!(provider.endpoint(id), None);
    assert_eq!(
        provider.get(id).await?.workspace.error_message,
        Some(message)
    );

    // A workspace in `error` starts again.
    let endpoint = timeout(GUARD, provider.start(id)).await??;
    assert_eq!(healthz(&endpoint.base_url).await?, id.to_string());
    timeout(GUARD, provider.stop(id)).await??;
    Ok(())
}

#[tokio::test]
async fn a_start_dropped_during_the_boot_delay_is_joined_or_stopped() -> Result<()> {
    let dir = DataDir::new();
    let mut config = config(dir.path());
    // Long enough that a 50 ms budget surely runs out first, even on a loaded machine.
    config.boot_delay = Duration::from_secs(2);
    let provider = LocalProvider::open(config)?;
    let id = create(&provider, "alice").await?;

    // The caller's boot budget runs out mid-start; stop cleans up.
    let dropped = timeout(Duration::from_millis(50), provider.start(id)).await;
    assert!(dropped.is_err(), "start finished within its tiny budget");
    assert_eq!(provider.get(id).await?.status(), WorkspaceStatus::Starting);
    timeout(GUARD, provider.stop(id)).await??;
    assert_eq!(provider.get(id).await?.status(), WorkspaceStatus::Stopped);
    assert_eq!(processes_of(id), Vec::<i32>::new());

    // Dropped again; this time a second start joins the boot in flight.
    let dropped = timeout(Duration::from_millis(50), provider.start(id)).await;
    assert!(dropped.is_err(), "start finished within its tiny budget");
    let endpoint = timeout(GUARD, provider.start(id)).await??;
    assert_eq!(healthz(&endpoint.base_url).await?, id.to_string());
    assert_eq!(processes_of(id).len(), 1);
    timeout(GUARD, provider.stop(id)).await??;
    assert_eq!(processes_of(id), Vec::<i32>::new());
    Ok(())
}

#[tokio::test]
async fn a_start_dropped_after_the_launch_leaves_nothing_behind_a_stop() -> Result<()> {
    let dir = DataDir::new();
    let pid_file = dir.path().join("pid");
    let mut config = config(dir.path());
    // Launched but never ready: the start is still waiting when its caller gives up.
    config.workspace_bin = script(
        dir.path(),
        "slow",
        &format!("echo $$ > {}; exec sleep 600", pid_file.display()),
    );
    let provider = LocalProvider::open(config)?;
    let id = create(&provider, "alice").await?;

    let launched = async {
        while !std::fs::read_to_string(&pid_file).is_ok_and(|p| p.ends_with('\n')) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        r = provider.start(id) => bail!("start finished: {r:?}"),
        r = timeout(GUARD, launched) => r.context("the service was never launched")?,
    }
    let pid: i32 = std::fs::read_to_string(&pid_file)?.trim().parse()?;
    assert_eq!(provider.get(id).await?.status(), WorkspaceStatus::Starting);
    assert!(alive(pid));

    timeout(GUARD, provider.stop(id)).await??;
    assert_eq!(provider.get(id).await?.status(), WorkspaceStatus::Stopped);
    assert!(!alive(pid), "the half-started service outlived the stop");
    Ok(())
}

#[tokio::test]
async fn a_restarted_gateway_adopts_a_running_workspace() -> Result<()> {
    let dir = DataDir::new();
    let first = LocalProvider::open(config(dir.path()))?;
    let id = create(&first, "alice").await?;
    let endpoint = timeout(GUARD, first.start(id)).await??;
    let pid = first.pid(id).context("pid")?;
    drop(first);

    // The service outlives the provider that started it.
    assert_eq!(healthz(&endpoint.base_url).await?, id.to_string());

    let second = reopen(dir.path()).await?;
    timeout(GUARD, second.recover()).await??;
    assert_eq!(second.get(id).await?.status(), WorkspaceStatus::Running);
    assert_eq!(second.endpoint(id), Some(endpoint.clone()));
    assert_eq!(second.pid(id), Some(pid));

    timeout(GUARD, second.stop(id)).await??;
    assert_eq!(second.get(id).await?.status(), WorkspaceStatus::Stopped);
    wait_gone(pid).await?;
    assert!(healthz(&endpoint.base_url).await.is_err());
    Ok(())
}

#[tokio::test]
async fn an_adopted_workspace_that_dies_is_published_as_error() -> Result<()> {
    let dir = DataDir::new();
    let first = LocalProvider::open(config(dir.path()))?;
    let id = create(&first, "alice").await?;
    timeout(GUARD, first.start(id)).await??;
    let pid = first.pid(id).context("pid")?;
    drop(first);

    let second = reopen(dir.path()).await?;
    timeout(GUARD, second.recover()).await??;
    let mut events = second.subscribe();
    kill("-KILL", pid);
    let change = wait_status(&mut events, id, WorkspaceStatus::Error).await?;
    assert!(
        change
            .message
            .is_some_and(|m| m.contains("workspace service exited")),
    );
    assert_eq!(second.endpoint(id), None);
    Ok(())
}

#[tokio::test]
async fn recovery_of_a_dead_service_marks_it_stopped() -> Result<()> {
    let dir = DataDir::new();
    let first = LocalProvider::open(config(dir.path()))?;
    let id = create(&first, "alice").await?;
    timeout(GUARD, first.start(id)).await??;
    let pid = first.pid(id).context("pid")?;
    drop(first);
    kill("-KILL", pid);
    wait_gone(pid).await?;

    let second = reopen(dir.path()).await?;
    let mut events = second.subscribe();
    timeout(GUARD, second.recover()).await??;
    wait_status(&mut events, id, WorkspaceStatus::Stopped).await?;
    assert_eq!(second.get(id).await?.status(), WorkspaceStatus::Stopped);
    assert_eq!(second.endpoint(id), None);
    // And it starts normally.
    let endpoint = timeout(GUARD, second.start(id)).await??;
    assert_eq!(healthz(&endpoint.base_url).await?, id.to_string());
    timeout(GUARD, second.stop(id)).await??;
    Ok(())
}

#[tokio::test]
async fn two_providers_cannot_share_a_data_dir() -> Result<()> {
    let dir = DataDir::new();
    let first = LocalProvider::open(config(dir.path()))?;
    let second = LocalProvider::open(config(dir.path()));
    assert!(
        matches!(&second, Err(ProviderError::Backend(m)) if m.contains("in use")),
        "{second:?}"
    );
    drop(first);
    LocalProvider::open(config(dir.path()))?;
    Ok(())
}

#[tokio::test]
async fn delete_removes_the_volume_and_the_record() -> Result<()> {
    let dir = DataDir::new();
    let provider = LocalProvider::open(config(dir.path()))?;
    let id = create(&provider, "alice").await?;
    let volume = provider.volume_dir(id);
    std::fs::write(volume.join("notes.txt"), "keep me?")?;
    timeout(GUARD, provider.start(id)).await??;
    let pid = provider.pid(id).context("pid")?;

    timeout(GUARD, provider.delete(id)).await??;
    assert!(!volume.exists());
    assert!(!alive(pid));
    assert_eq!(provider.get(id).await, Err(ProviderError::NotFound));
    assert!(provider.list(None).await?.is_empty());
    assert_eq!(provider.delete(id).await, Err(ProviderError::NotFound));

    drop(provider);
    let reopened = reopen(dir.path()).await?;
    assert!(reopened.list(None).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn records_and_updates_persist_across_reopen() -> Result<()> {
    let dir = DataDir::new();
    let provider = LocalProvider::open(config(dir.path()))?;
    let alice = create(&provider, "alice").await?;
    let bob = create(&provider, "bob").await?;

    let bad = provider
        .update(
            alice,
            UpdateWorkspace {
                cpus: Some(0),
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(&bad, Err(ProviderError::Invalid(m)) if m.contains("cpus")),
        "{bad:?}"
    );
    let updated = provider
        .update(
            alice,
            UpdateWorkspace {
                keep_active: Some(true),
                cpus: Some(4),
                memory_mb: Some(4096),
                idle_timeout_secs: Some(Some(60)),
                ..Default::default()
            },
        )
        .await?;
    assert!(updated.workspace.keep_active);
    assert!(updated.workspace.updated_at >= updated.workspace.created_at);
    let before = provider.list(None).await?;
    drop(provider);

    let reopened = reopen(dir.path()).await?;
    timeout(GUARD, reopened.recover()).await??;
    assert_eq!(reopened.list(None).await?, before);
    let alices = reopened.list(Some("alice")).await?;
    assert_eq!(alices.len(), 1);
    assert_eq!(alices[0].id(), alice);
    assert_eq!(alices[0].workspace.hardware.cpus, 4);
    assert_eq!(alices[0].workspace.hardware.memory_mb, 4096);
    assert_eq!(alices[0].workspace.idle_timeout_secs, Some(60));
    assert_eq!(reopened.get(bob).await?.owner, "bob");
    Ok(())
}

#[tokio::test]
async fn services_left_by_a_dropped_provider_can_be_killed_by_a_harness() -> Result<()> {
    let dir = DataDir::new();
    let provider = LocalProvider::open(config(dir.path()))?;
    let id = create(&provider, "alice").await?;
    timeout(GUARD, provider.start(id)).await??;
    let pid = provider.pid(id).context("pid")?;
    drop(provider);
    assert!(alive(pid), "the service should outlive its provider");

    assert_eq!(gateway::provider::local::kill_services_in(dir.path()), 1);
    wait_gone(pid).await?;
    Ok(())
}
