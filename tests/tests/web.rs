//! The web terminal page in a real browser.
//!
//! Starts a gateway (embedded default, 1 s boot delay so the wake is visible) and runs
//! `tests/web/e2e.mjs`, which drives Debian's Chromium through playwright-core: sign in with the
//! local token, create and wake a workspace, type, resize, survive a gateway restart. The restart
//! is done here, on the script's request, over a line protocol on its stdio (`STOP_GATEWAY` →
//! `stopped`, `START_GATEWAY` → `started`), because only this side owns the gateway process.
//!
//! Needs `node`, `npm` (once, to install playwright-core into `tests/web/node_modules`) and
//! `/usr/bin/chromium`. Screenshots of every step go to `test-artifacts/web/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use aether_tests::{Gateway, GatewayOptions};
use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

const CHROMIUM: &str = "/usr/bin/chromium";
/// The whole browser session; each step inside has its own 60 s budget.
const OVERALL: Duration = Duration::from_secs(420);

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

fn artifacts_dir() -> PathBuf {
    let tests_crate = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests_crate
        .parent()
        .unwrap_or(tests_crate)
        .join("test-artifacts/web")
}

/// Installs playwright-core from the lock file unless it is there already.
async fn npm_ci_if_missing(dir: &Path) -> Result<()> {
    if dir
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        return Ok(());
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .await
        .context("run `npm ci` in tests/web (is npm installed?)")?;
    ensure!(status.success(), "`npm ci` in tests/web failed: {status}");
    Ok(())
}

#[tokio::test]
async fn web_page_wakes_types_resizes_and_reattaches_in_chromium() -> Result<()> {
    ensure!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`)"
    );
    let web = web_dir();
    npm_ci_if_missing(&web).await?;
    let artifacts = artifacts_dir();
    // Stale screenshots from an earlier run would pass for this run's.
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts)?;

    let opts = GatewayOptions {
        args: vec!["--local-boot-delay".into(), "1s".into()],
        ..Default::default()
    };
    let mut gateway = Gateway::start(opts.clone()).await?;
    let addr = gateway.proc.addr;

    let mut node = Command::new("node")
        .arg(web.join("e2e.mjs"))
        .env("AETHER_WEB_URL", gateway.http_url())
        .env("AETHER_WEB_ARTIFACTS", &artifacts)
        .env("CHROMIUM", CHROMIUM)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("spawn node (is Node.js installed?)")?;
    let mut stdin = node.stdin.take().context("node stdin")?;
    let mut lines = BufReader::new(node.stdout.take().context("node stdout")?).lines();

    let mut passed = false;
    let session = async {
        while let Some(line) = lines.next_line().await? {
            println!("e2e: {line}");
            match line.trim() {
                "STOP_GATEWAY" => {
                    // SIGTERM: the gateway closes every session with 1012 (service restart).
                    gateway.proc.terminate().await?;
                    stdin.write_all(b"stopped\n").await?;
                }
                "START_GATEWAY" => {
                    gateway.proc = Gateway::start_at(gateway.data_dir.path(), addr, &opts).await?;
                    stdin.write_all(b"started\n").await?;
                }
                "E2E OK" => passed = true,
                _ => {}
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(OVERALL, session)
        .await
        .context("the browser test did not finish in time")??;
    let status = node.wait().await?;
    println!("screenshots: {}", artifacts.display());
    if !status.success() || !passed {
        bail!(
            "the browser test failed ({status}); see its output above and the screenshots in {}",
            artifacts.display()
        );
    }
    gateway.proc.terminate().await?;
    Ok(())
}
