//! The REST-backed commands: `auth token` and `workspace list|get|create|update|start|stop|
//! delete`. Each prints a human form, or the JSON the API returned with `--json`.

use std::io::Write;
use std::time::Duration;

use base64::Engine;
use protocol::rest::{CreateWorkspace, UpdateWorkspace};
use protocol::{Hardware, Workspace, WorkspaceStatus};
use serde::Serialize;
use uuid::Uuid;

use crate::api::Api;
use crate::args::{CreateArgs, UpdateArgs};
use crate::config::Config;
use crate::error::CliError;
use crate::render;
use crate::tty;

/// How long `start --wait` / `stop --wait` wait, and how often they look.
const WAIT_TIMEOUT: Duration = Duration::from_secs(300);
const WAIT_POLL: Duration = Duration::from_millis(500);

fn print_json<T: Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(CliError::other)?;
    println!("{text}");
    Ok(())
}

/// `aether auth token`.
pub fn auth_token(config: &Config, json: bool) -> Result<(), CliError> {
    let token = config.token()?;
    if json {
        let claims = claims(token);
        let field = |k: &str| claims.as_ref().and_then(|c| c.get(k)).cloned();
        print_json(&serde_json::json!({
            "token": token,
            "user": field("sub"),
            "expires_at": field("exp"),
        }))
    } else {
        println!("{token}");
        Ok(())
    }
}

/// The unverified claims of a JWT, for display only.
fn claims(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub async fn list(
    config: &Config,
    status: Option<WorkspaceStatus>,
    json: bool,
) -> Result<(), CliError> {
    let list = Api::new(config)?.list(status).await?;
    if json {
        return print_json(&protocol::rest::WorkspaceList { workspaces: list });
    }
    if list.is_empty() {
        eprintln!("No workspaces.");
        return Ok(());
    }
    print!("{}", render::workspace_table(&list));
    Ok(())
}

fn show(ws: &Workspace, json: bool) -> Result<(), CliError> {
    if json {
        print_json(ws)
    } else {
        print!("{}", render::workspace_details(ws));
        Ok(())
    }
}

pub async fn get(config: &Config, id: &str, json: bool) -> Result<(), CliError> {
    let api = Api::new(config)?;
    let id = api.resolve(id).await?;
    show(&api.get(id).await?, json)
}

pub async fn create(config: &Config, args: &CreateArgs, json: bool) -> Result<(), CliError> {
    let api = Api::new(config)?;
    let custom_hardware = args.cpu_kind.is_some()
        || args.cpus.is_some()
        || args.memory_mb.is_some()
        || args.volume_size_gb.is_some()
        || args.gpu_kind.is_some();
    let hardware = custom_hardware.then(|| {
        let d = Hardware::default();
        Hardware {
            cpu_kind: args.cpu_kind.map(Into::into).unwrap_or(d.cpu_kind),
            cpus: args.cpus.unwrap_or(d.cpus),
            memory_mb: args.memory_mb.unwrap_or(d.memory_mb),
            volume_size_gb: args.volume_size_gb.unwrap_or(d.volume_size_gb),
            gpu_kind: args.gpu_kind.clone(),
        }
    });
    if let Some(hw) = &hardware {
        hw.validate().map_err(CliError::Usage)?;
    }
    let body = CreateWorkspace {
        hardware,
        keep_active: args.keep_active.then_some(true),
        idle_timeout_secs: args.idle_timeout.map(|d| d.as_secs()),
    };
    let ws = api.create(args.project, &body).await?;
    if json {
        return print_json(&ws);
    }
    println!(
        "Created workspace {} ({}, {}). Connect with: aether workspace connect {}",
        ws.id,
        ws.status,
        ws.hardware.short(),
        short(ws.id)
    );
    Ok(())
}

pub async fn update(config: &Config, args: &UpdateArgs, json: bool) -> Result<(), CliError> {
    let api = Api::new(config)?;
    let id = api.resolve(&args.id).await?;
    let body = UpdateWorkspace {
        keep_active: args.keep_active,
        cpu_kind: args.cpu_kind.map(Into::into),
        cpus: args.cpus,
        memory_mb: args.memory_mb,
        volume_size_gb: args.volume_size_gb,
        ..UpdateWorkspace::default()
    };
    if body == UpdateWorkspace::default() {
        return Err(CliError::Usage(
            "nothing to change: pass at least one of --keep-active, --cpu-kind, --cpus, \
             --memory-mb, --volume-size-gb"
                .into(),
        ));
    }
    show(&api.update(id, &body).await?, json)
}

/// `start` and `stop`: the transition, then optionally waiting for its end state.
pub async fn start_stop(
    config: &Config,
    id: &str,
    start: bool,
    wait: bool,
    json: bool,
) -> Result<(), CliError> {
    let api = Api::new(config)?;
    let id = api.resolve(id).await?;
    let body = if start {
        api.start(id).await?
    } else {
        api.stop(id).await?
    };
    if !wait {
        if json {
            return print_json(&body);
        }
        println!("Workspace {id}: {}", body.status);
        return Ok(());
    }
    let target = if start {
        WorkspaceStatus::Running
    } else {
        WorkspaceStatus::Stopped
    };
    let ws = wait_for(&api, id, target).await?;
    if json {
        return print_json(&ws);
    }
    println!("Workspace {id}: {}", ws.status);
    Ok(())
}

/// Polls until the workspace reaches `target`, or a state it cannot leave on its own.
async fn wait_for(api: &Api, id: Uuid, target: WorkspaceStatus) -> Result<Workspace, CliError> {
    let deadline = tokio::time::Instant::now() + WAIT_TIMEOUT;
    loop {
        let ws = api.get(id).await?;
        if ws.status == target {
            return Ok(ws);
        }
        if matches!(
            ws.status,
            WorkspaceStatus::Error | WorkspaceStatus::StopFailed
        ) {
            let why = ws.error_message.clone().unwrap_or_default();
            return Err(CliError::WakeFailed(format!(
                "workspace is {}: {why}",
                ws.status
            )));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(CliError::Other(format!(
                "workspace {id} is still {} after {}s",
                ws.status,
                WAIT_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

pub async fn delete(config: &Config, id: &str, yes: bool, json: bool) -> Result<(), CliError> {
    let api = Api::new(config)?;
    let id = api.resolve(id).await?;
    if !yes
        && !confirm(&format!(
            "Delete workspace {id}, its VM and its volume? [y/N] "
        ))?
    {
        return Err(CliError::Usage(
            "not deleted (pass --yes to skip the question)".into(),
        ));
    }
    api.delete(id).await?;
    if json {
        return print_json(&serde_json::json!({ "deleted": id }));
    }
    println!("Deleted workspace {id}.");
    Ok(())
}

/// Asks on the terminal; without one, there is nobody to ask.
fn confirm(question: &str) -> Result<bool, CliError> {
    if !tty::stdin_is_tty() {
        return Err(CliError::Usage(
            "refusing to delete without confirmation: stdin is not a terminal; pass --yes".into(),
        ));
    }
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(CliError::other)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// The first block of an id: enough to be a unique prefix in practice.
fn short(id: Uuid) -> String {
    id.to_string().chars().take(8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_of_a_jwt() {
        // {"alg":"HS256"} . {"sub":"alice","exp":5} . sig
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6NX0.c2ln";
        let c = claims(token).unwrap();
        assert_eq!(c["sub"], "alice");
        assert_eq!(c["exp"], 5);
        assert!(claims("not-a-jwt").is_none());
    }
}
