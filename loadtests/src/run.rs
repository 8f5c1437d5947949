//! One scenario from parsed flags to the printed table and the JSON report: prepare the
//! targets, run the scenario, stop everything the run started, compare, report.

use anyhow::{Context, Result};

use crate::cli::{self, Cmd, Common};
use crate::report::{Conditions, Report};
use crate::scenario::{self, Ctx};
use crate::setup::{Setup, Target};

/// Runs one scenario; `Ok(false)` when a functional error happened.
pub async fn run(cmd: Cmd) -> Result<bool> {
    let (name, common, config) = match &cmd {
        Cmd::Hold(a) => ("hold", &a.common, serde_json::to_value(a)?),
        Cmd::Connect(a) => ("connect", &a.common, serde_json::to_value(a)?),
        Cmd::Wake(a) => ("wake", &a.common, serde_json::to_value(a)?),
        Cmd::Relay(a) => ("relay", &a.common, serde_json::to_value(a)?),
        Cmd::Churn(a) => ("churn", &a.common, serde_json::to_value(a)?),
        Cmd::Worker => unreachable!("handled in main"),
    };
    let conditions = Conditions::now();
    let idle = matches!(cmd, Cmd::Churn(_)).then_some(scenario::churn::DEFAULT_IDLE);
    let mut setup = Setup::new(common, idle).await?;
    let ctx = Ctx {
        common,
        sources: cli::source_ips(common.source_ips.as_deref())?,
    };
    let outcome = drive(&cmd, &ctx, &mut setup).await;
    if outcome.is_err()
        && let Some(tail) = setup.gateway_log_tail()
    {
        eprintln!("--- gateway log (last lines) ---\n{tail}");
    }
    setup.teardown().await;
    let outcome = outcome?;

    let mut report = Report {
        scenario: name.to_owned(),
        command: masked_args(),
        config,
        conditions,
        runs: outcome.runs,
        comparisons: Vec::new(),
        pass: outcome.failures.is_empty(),
        failures: outcome.failures,
    };
    report.compare(&outcome.compare);
    println!("{}", report.table());
    if let Some(path) = &common.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(report.pass)
}

async fn drive(cmd: &Cmd, ctx: &Ctx<'_>, setup: &mut Setup) -> Result<scenario::Outcome> {
    match cmd {
        Cmd::Hold(a) => {
            let targets = targets(setup, &a.common).await?;
            scenario::hold::run(ctx, a, &targets).await
        }
        Cmd::Connect(a) => {
            let targets = targets(setup, &a.common).await?;
            scenario::connect::run(ctx, a, &targets).await
        }
        Cmd::Relay(a) => {
            let targets = targets(setup, &a.common).await?;
            scenario::relay::run(ctx, a, &targets).await
        }
        Cmd::Wake(a) => scenario::wake::run(ctx, a, setup.gateway()?).await,
        Cmd::Churn(a) => scenario::churn::run(ctx, a, setup.gateway()?).await,
        Cmd::Worker => unreachable!("handled in main"),
    }
}

/// The gateway over running workspaces (if there is one) and the baselines asked for.
async fn targets(setup: &mut Setup, common: &Common) -> Result<Vec<Target>> {
    let mut out = Vec::new();
    if let Some(gw) = &setup.gateway {
        let ws = gw.workspaces(common.workspaces, true).await?;
        out.push(gw.target(&ws));
    }
    out.extend(setup.baselines(common, common.workspaces).await?);
    anyhow::ensure!(
        !out.is_empty(),
        "nothing to measure: give --spawn, --url or --baseline"
    );
    Ok(out)
}

/// The command line with token and secret values replaced.
fn masked_args() -> Vec<String> {
    let mut out = Vec::new();
    let mut mask_next = false;
    for a in std::env::args() {
        if mask_next {
            out.push("MASKED".into());
            mask_next = false;
        } else if a == "--token" || a == "--jwt-secret" {
            out.push(a);
            mask_next = true;
        } else if a.starts_with("--token=") || a.starts_with("--jwt-secret=") {
            let (k, _) = a.split_once('=').expect("has =");
            out.push(format!("{k}=MASKED"));
        } else {
            out.push(a);
        }
    }
    out
}
