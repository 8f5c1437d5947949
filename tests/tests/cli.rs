//! End to end: the real `aether` binary against a real gateway (which runs real workspace-service
//! processes), over real sockets and, for the interactive tests, a real terminal (tmux).
//!
//! Needs the `aether`, `aether-gateway` and `aether-workspace` binaries of the same build
//! (`cargo build -p cli -p gateway -p workspace`, or a whole-workspace test run) and tmux.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use aether_tests::{Gateway, GatewayOptions, Running, TEST_SECRET, bin_path, token};
use anyhow::{Context, Result, bail};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Generous bound for anything that involves waking a workspace on a loaded machine.
const GUARD: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// An `aether` command aimed at `url` with `token` (or none).
fn aether(url: &str, token: Option<&str>) -> Command {
    let mut cmd = Command::new(bin_path("aether"));
    cmd.env("AETHER_API_URL", url)
        .env_remove("AETHER_TOKEN")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(t) = token {
        cmd.env("AETHER_TOKEN", t);
    }
    cmd
}

/// Runs `aether args…` to completion (stdin from `input`), bounded by [`GUARD`].
async fn run(url: &str, token: Option<&str>, args: &[&str], input: Option<&str>) -> Result<Out> {
    let mut cmd = aether(url, token);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().context("spawn aether (cargo build -p cli)")?;
    if let Some(input) = input {
        let mut stdin = child.stdin.take().context("stdin")?;
        stdin.write_all(input.as_bytes()).await?;
        // Dropping stdin is the end of the script.
        drop(stdin);
    }
    let output = tokio::time::timeout(GUARD, child.wait_with_output())
        .await
        .with_context(|| format!("aether {args:?} did not finish within {GUARD:?}"))??;
    Ok(Out::from(output))
}

/// What a finished `aether` printed.
#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl From<Output> for Out {
    fn from(o: Output) -> Out {
        Out {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// A workspace created for a test, deleted when the test ends (pass or fail): the gateway leaves
/// workspace processes running when it exits — by design, so that a restart recovers them — and
/// the harness kills it, so without this they would outlive the test.
struct TestWorkspace {
    id: String,
    url: String,
    token: String,
}

impl Drop for TestWorkspace {
    fn drop(&mut self) {
        let _ = std::process::Command::new(bin_path("aether"))
            .args(["workspace", "delete", "--yes", &self.id])
            .env("AETHER_API_URL", &self.url)
            .env("AETHER_TOKEN", &self.token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Creates a workspace with the CLI itself (it starts out stopped). Declare the result after
/// the gateway, so that it is dropped (deleted) while the gateway still runs.
async fn create_workspace(url: &str, token: &str) -> Result<TestWorkspace> {
    let project = uuid::Uuid::new_v4().to_string();
    let out = run(
        url,
        Some(token),
        &["workspace", "create", "--project", &project, "--json"],
        None,
    )
    .await?;
    if out.code != Some(0) {
        bail!("create failed: {out:?}");
    }
    let ws: serde_json::Value = serde_json::from_str(&out.stdout).context("create --json")?;
    Ok(TestWorkspace {
        id: ws["id"].as_str().context("id")?.to_owned(),
        url: url.to_owned(),
        token: token.to_owned(),
    })
}

/// A tmux server of our own (its socket in a temp dir), running one command in one window: a
/// real terminal for the interactive tests. Killed on drop.
struct Tmux {
    _dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Tmux {
    /// Starts `command` (a `sh -c` line) in a `cols`×`rows` window, with `env` set.
    async fn start(command: &str, cols: u16, rows: u16, env: &[(&str, &str)]) -> Result<Tmux> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("tmux.sock");
        let mut cmd = Command::new("tmux");
        cmd.arg("-S")
            .arg(&socket)
            .args(["-f", "/dev/null", "new-session", "-d", "-s", "main"])
            .args(["-x", &cols.to_string(), "-y", &rows.to_string()])
            .arg(command)
            .env_remove("TMUX")
            .env_remove("AETHER_TOKEN");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let status = cmd.status().await.context("run tmux")?;
        if !status.success() {
            bail!("tmux new-session failed: {status}");
        }
        let tmux = Tmux { _dir: dir, socket };
        // Keep the pane (and its text) after the command exits.
        tmux.tmux(&["set-option", "-t", "main", "remain-on-exit", "on"])
            .await?;
        tmux.tmux(&["set-option", "-t", "main", "history-limit", "5000"])
            .await?;
        Ok(tmux)
    }

    async fn tmux(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "tmux {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The whole pane, scrollback included, wrapped lines joined.
    async fn screen(&self) -> Result<String> {
        self.tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", "main"])
            .await
    }

    /// Polls the screen until `pred` holds; returns the screen. Bounded by [`GUARD`].
    async fn wait_until(&self, what: &str, pred: impl Fn(&str) -> bool) -> Result<String> {
        let poll = async {
            loop {
                let screen = self.screen().await?;
                if pred(&screen) {
                    return Ok::<_, anyhow::Error>(screen);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        match tokio::time::timeout(GUARD, poll).await {
            Ok(r) => r,
            Err(_) => bail!(
                "timed out waiting for {what}; screen:\n{}",
                self.screen().await.unwrap_or_default()
            ),
        }
    }

    /// Waits until `text` is on the screen.
    async fn wait_for(&self, text: &str) -> Result<String> {
        self.wait_until(&format!("{text:?}"), |s| s.contains(text))
            .await
    }

    /// Types `text` literally.
    async fn type_text(&self, text: &str) -> Result<()> {
        self.tmux(&["send-keys", "-t", "main", "-l", text])
            .await
            .map(drop)
    }

    async fn enter(&self) -> Result<()> {
        self.tmux(&["send-keys", "-t", "main", "Enter"])
            .await
            .map(drop)
    }

    /// Types a command line and presses Enter.
    async fn line(&self, text: &str) -> Result<()> {
        self.type_text(text).await?;
        self.enter().await
    }

    async fn resize(&self, cols: u16, rows: u16) -> Result<()> {
        self.tmux(&[
            "resize-window",
            "-t",
            "main",
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
        ])
        .await
        .map(drop)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .stderr(Stdio::null())
            .status();
    }
}

/// The `sh -c` line that runs `aether workspace connect` in tmux, then reports its exit code and
/// whether the terminal was left in canonical (cooked) mode, and keeps the pane open.
fn connect_line(workspace: &str) -> String {
    format!(
        "{} workspace connect {workspace}; echo EXITED=$?; \
         stty -a | tr ' ;' '\\n\\n' | grep -x -- '-\\?icanon'; exec sleep 600",
        bin_path("aether").display()
    )
}

/// Starts a gateway on `data_dir` at exactly `addr` (the address an earlier gateway had), so a
/// client reconnecting to the old URL finds the new one; retries while the port is released.
async fn start_gateway_at(data_dir: &Path, addr: SocketAddr) -> Result<Running> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut cmd = Command::new(bin_path("aether-gateway"));
        cmd.arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .env("AETHER_GATEWAY_JWT_SECRET", TEST_SECRET)
            .env("AETHER_GATEWAY_WORKSPACE_BIN", bin_path("aether-workspace"))
            .env_remove("AETHER_GATEWAY_LISTEN")
            .env_remove("AETHER_GATEWAY_DATA_DIR");
        match Running::start(cmd).await {
            Ok(running) => return Ok(running),
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("gateway restart on {addr} failed, retrying: {e:#}");
                // A retry pause for the port to be released, not a readiness wait.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.context(format!("restart the gateway on {addr}"))),
        }
    }
}

/// A local address nothing listens on.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Script mode
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn piped_script_prints_its_output_and_exits_with_its_code() -> Result<()> {
    let gw = Gateway::start(GatewayOptions::default()).await?;
    let url = gw.http_url();
    let alice = token("alice");
    let ws = create_workspace(&url, &alice).await?;
    let id = ws.id.clone();

    let out = run(
        &url,
        Some(&alice),
        &["workspace", "connect", &id],
        Some("echo hi; exit 3\n"),
    )
    .await?;
    assert_eq!(out.code, Some(3), "{out:?}");
    assert_eq!(out.stdout, "hi\n", "{out:?}");
    // stderr is not a terminal: no spinner, no notices, nothing.
    assert_eq!(out.stderr, "", "{out:?}");

    // A second script in the (now running) workspace: several lines, UTF-8 output, a last line
    // without a newline, and the exit code of the last command.
    let script = "x=$((6*7))\nprintf 'héllo 日本語 %s\\n' \"$x\"\nfalse";
    let prefix = &id[..8];
    let out = run(
        &url,
        Some(&alice),
        &["workspace", "connect", prefix],
        Some(script),
    )
    .await?;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(out.stdout, "héllo 日本語 42\n", "{out:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// REST commands
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn list_get_start_stop_output() -> Result<()> {
    let gw = Gateway::start(GatewayOptions::default()).await?;
    let url = gw.http_url();
    let alice = token("alice");
    let ws = create_workspace(&url, &alice).await?;
    let id = ws.id.clone();

    let out = run(&url, Some(&alice), &["workspace", "list"], None).await?;
    assert_eq!(out.code, Some(0), "{out:?}");
    let mut lines = out.stdout.lines();
    let header: Vec<&str> = lines.next().context("header")?.split_whitespace().collect();
    assert_eq!(header, ["ID", "PROJECT", "STATUS", "HARDWARE", "CREATED"]);
    let row = lines.next().context("row")?;
    assert!(row.starts_with(&format!("{id}  ")), "{row}");
    assert!(row.contains("  2cpu/2048mb  "), "{row}");
    assert!(
        row.contains("  stopped  ") || row.contains("  creating  "),
        "{row}"
    );

    // `get` by a unique prefix.
    let out = run(&url, Some(&alice), &["workspace", "get", &id[..6]], None).await?;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains(&format!("ID:           {id}\n")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("HARDWARE:     2cpu/2048mb"),
        "{}",
        out.stdout
    );

    // Another user sees nothing.
    let out = run(
        &url,
        Some(&token("bob")),
        &["workspace", "list", "--json"],
        None,
    )
    .await?;
    let list: serde_json::Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(
        list["workspaces"].as_array().map(Vec::len),
        Some(0),
        "{out:?}"
    );

    // start --wait, then it is in the running filter.
    let out = run(
        &url,
        Some(&alice),
        &["workspace", "start", &id, "--wait"],
        None,
    )
    .await?;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, format!("Workspace {id}: running\n"));
    let out = run(
        &url,
        Some(&alice),
        &["workspace", "list", "--status", "running", "--json"],
        None,
    )
    .await?;
    let list: serde_json::Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(list["workspaces"][0]["id"], id.as_str(), "{out:?}");
    assert_eq!(list["workspaces"][0]["status"], "running");

    // stop prints the transition; stop --wait of a stopping/stopped workspace is refused or done.
    let out = run(&url, Some(&alice), &["workspace", "stop", &id], None).await?;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, format!("Workspace {id}: stopping\n"));
    let stopped = async {
        loop {
            let out = run(
                &url,
                Some(&alice),
                &["workspace", "get", &id, "--json"],
                None,
            )
            .await?;
            let ws: serde_json::Value = serde_json::from_str(&out.stdout)?;
            if ws["status"] == "stopped" {
                return Ok::<_, anyhow::Error>(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(GUARD, stopped).await??;

    // Stopping a stopped workspace is a 400 from the gateway: exit 1 with its message.
    let out = run(&url, Some(&alice), &["workspace", "stop", &id], None).await?;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("refused the request (400)"), "{out:?}");

    // delete needs --yes without a terminal, then the workspace is gone.
    let out = run(&url, Some(&alice), &["workspace", "delete", &id], None).await?;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("--yes"), "{out:?}");
    let out = run(
        &url,
        Some(&alice),
        &["workspace", "delete", &id, "--yes"],
        None,
    )
    .await?;
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = run(&url, Some(&alice), &["workspace", "get", &id], None).await?;
    assert_eq!(out.code, Some(202), "{out:?}");
    Ok(())
}

#[tokio::test]
async fn ping_reports_each_round_trip_and_a_summary() -> Result<()> {
    let gw = Gateway::start(GatewayOptions::default()).await?;
    let url = gw.http_url();
    let alice = token("alice");
    let ws = create_workspace(&url, &alice).await?;
    let id = ws.id.clone();
    let out = run(
        &url,
        Some(&alice),
        &["workspace", "ping", &id, "-c", "3", "-i", "50ms"],
        None,
    )
    .await?;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.matches("pong from ").count(), 3, "{out:?}");
    assert!(
        out.stdout.contains("3 sent, 3 received, 0% loss"),
        "{out:?}"
    );
    assert!(out.stdout.contains("rtt min/avg/max = "), "{out:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Error paths
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn each_error_says_what_to_do_with_its_exit_code() -> Result<()> {
    let gw = Gateway::start(GatewayOptions::default()).await?;
    let url = gw.http_url();
    let alice = token("alice");
    let ws = create_workspace(&url, &alice).await?;
    let id = ws.id.clone();
    let missing = uuid::Uuid::new_v4().to_string();

    // No token.
    for args in [
        &["workspace", "list"][..],
        &["workspace", "connect", &id][..],
        &["auth", "token"][..],
    ] {
        let out = run(&url, None, args, None).await?;
        assert_eq!(out.code, Some(201), "{args:?}: {out:?}");
        assert!(out.stderr.contains("set AETHER_TOKEN"), "{out:?}");
    }

    // A token the gateway rejects (wrong secret), over REST and over the socket.
    let forged = aether_tests::token_with("alice", 3600, "not-the-secret-0123456789abcdef");
    for args in [
        &["workspace", "list"][..],
        &["workspace", "connect", &id][..],
    ] {
        let out = run(&url, Some(&forged), args, Some("true\n")).await?;
        assert_eq!(out.code, Some(201), "{args:?}: {out:?}");
        assert!(out.stderr.contains("rejected the token"), "{out:?}");
        assert!(out.stderr.contains("AETHER_TOKEN"), "{out:?}");
    }

    // Unknown workspace: a full id, a prefix, and over the socket.
    for args in [
        &["workspace", "get", &missing][..],
        &["workspace", "get", "ffffffff-f"][..],
        &["workspace", "connect", &missing][..],
        &["workspace", "stop", &missing][..],
    ] {
        let out = run(&url, Some(&alice), args, Some("true\n")).await?;
        assert_eq!(out.code, Some(202), "{args:?}: {out:?}");
        assert!(
            out.stderr.contains("not found") || out.stderr.contains("no workspace"),
            "{out:?}"
        );
    }

    // `auth token` prints the token in use.
    let out = run(&url, Some(&alice), &["auth", "token"], None).await?;
    assert_eq!((out.code, out.stdout.trim()), (Some(0), alice.as_str()));

    // Unreachable gateway: the URL tried is in the message.
    let dead = format!("http://{}", closed_port());
    for args in [
        &["workspace", "list"][..],
        &["workspace", "connect", &id][..],
    ] {
        let out = run(&dead, Some(&alice), args, Some("true\n")).await?;
        assert_eq!(out.code, Some(204), "{args:?}: {out:?}");
        assert!(out.stderr.contains(&dead), "{out:?}");
        assert!(out.stderr.contains("AETHER_API_URL"), "{out:?}");
    }
    Ok(())
}

#[tokio::test]
async fn wake_failure_reports_the_reason() -> Result<()> {
    // A "workspace service" that exits at once: the wake fails, and the CLI says why.
    let gw = Gateway::start(GatewayOptions {
        env: vec![("AETHER_GATEWAY_WORKSPACE_BIN".into(), "/bin/false".into())],
        ..GatewayOptions::default()
    })
    .await?;
    let url = gw.http_url();
    let alice = token("alice");
    let ws = create_workspace(&url, &alice).await?;
    let id = ws.id.clone();
    let out = run(
        &url,
        Some(&alice),
        &["workspace", "connect", &id],
        Some("true\n"),
    )
    .await?;
    assert_eq!(out.code, Some(203), "{out:?}");
    assert!(out.stderr.contains("failed to wake"), "{out:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Interactive, in a real terminal
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn interactive_session_shows_wake_runs_resizes_and_detaches() -> Result<()> {
    let gw = Gateway::start(GatewayOptions {
        args: vec!["--local-boot-delay".into(), "2s".into()],
        ..GatewayOptions::default()
    })
    .await?;
    let url = gw.http_url();
    let alice = token("alice");
    let ws = create_workspace(&url, &alice).await?;
    let id = ws.id.clone();

    let tmux = Tmux::start(
        &connect_line(&id),
        100,
        30,
        &[("AETHER_API_URL", &url), ("AETHER_TOKEN", &alice)],
    )
    .await?;

    // The wake, live: the spinner shows `starting` while the boot delay lasts, then the summary.
    tmux.wait_for("waking workspace").await?;
    let screen = tmux.wait_for("starting → running").await?;
    assert!(
        screen.contains(&format!("workspace {}", &id[..8])),
        "{screen}"
    );

    // A command runs in the remote shell.
    tmux.line("echo $((6*7))").await?;
    tmux.wait_until("42 on its own line", |s| {
        s.lines().any(|l| l.trim() == "42")
    })
    .await?;

    // The remote terminal has our size, and follows a resize.
    tmux.line("stty size").await?;
    tmux.wait_until("30 100", |s| s.lines().any(|l| l.trim() == "30 100"))
        .await?;
    // The resize travels as a signal and the next command as input, so the command can win the
    // race: ask again until the new size shows.
    tmux.resize(120, 40).await?;
    let resized = async {
        loop {
            tmux.line("stty size").await?;
            let seen = tmux.wait_until("40 120", |s| s.lines().any(|l| l.trim() == "40 120"));
            if let Ok(screen) = tokio::time::timeout(Duration::from_secs(3), seen).await {
                return screen;
            }
        }
    };
    tokio::time::timeout(GUARD, resized)
        .await
        .context("the remote terminal never saw the resize")??;

    // UTF-8 both ways.
    tmux.line("echo 'ünïcødé ✓'").await?;
    tmux.wait_until("utf-8 echo", |s| s.lines().any(|l| l.trim() == "ünïcødé ✓"))
        .await?;

    // `~?` after Enter lists the escapes; a `~` inside a line is plain input.
    tmux.enter().await?;
    tmux.type_text("~?").await?;
    tmux.wait_for("Supported escape sequences").await?;
    tmux.line("echo a~.b").await?;
    tmux.wait_until("a~.b echoed", |s| s.lines().any(|l| l.trim() == "a~.b"))
        .await?;

    // `~.` after Enter detaches: exit 0, the session id to reattach to, a cooked terminal again.
    tmux.enter().await?;
    tmux.type_text("~.").await?;
    let screen = tmux.wait_for("EXITED=").await?;
    assert!(screen.contains("EXITED=0"), "{screen}");
    assert!(screen.contains("detached; session "), "{screen}");
    let screen = tmux
        .wait_until("the stty report", |s| {
            s.lines()
                .any(|l| l.trim() == "icanon" || l.trim() == "-icanon")
        })
        .await?;
    assert!(
        screen.lines().any(|l| l.trim() == "icanon"),
        "terminal left in raw mode:\n{screen}"
    );
    Ok(())
}

#[tokio::test]
async fn interactive_session_exits_with_the_remote_exit_code() -> Result<()> {
    let gw = Gateway::start(GatewayOptions::default()).await?;
    let url = gw.http_url();
    let alice = token("alice");
    let ws = create_workspace(&url, &alice).await?;
    let id = ws.id.clone();
    let tmux = Tmux::start(
        &connect_line(&id),
        80,
        24,
        &[("AETHER_API_URL", &url), ("AETHER_TOKEN", &alice)],
    )
    .await?;
    tmux.wait_for("→ running").await?;
    tmux.line("exit 7").await?;
    let screen = tmux.wait_for("EXITED=").await?;
    assert!(screen.contains("EXITED=7"), "{screen}");
    tmux.wait_until("the stty report", |s| {
        s.lines().any(|l| l.trim() == "icanon")
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn reconnect_after_gateway_restart_lands_in_the_same_shell() -> Result<()> {
    let mut gw = Gateway::start(GatewayOptions::default()).await?;
    // Declared before the workspace, so it still runs when the workspace is deleted.
    let mut _second: Option<Running> = None;
    let addr = gw.proc.addr;
    let url = gw.http_url();
    let alice = token("alice");
    let ws = create_workspace(&url, &alice).await?;
    let id = ws.id.clone();
    let tmux = Tmux::start(
        &connect_line(&id),
        100,
        30,
        &[("AETHER_API_URL", &url), ("AETHER_TOKEN", &alice)],
    )
    .await?;
    tmux.wait_for("→ running").await?;
    tmux.line("export AETHER_MARK=kept; echo pid=$$").await?;
    let screen = tmux
        .wait_until("the shell's pid", |s| {
            s.lines().any(|l| l.starts_with("pid="))
        })
        .await?;
    let pid_line = screen
        .lines()
        .find(|l| l.starts_with("pid="))
        .context("pid line")?
        .trim()
        .to_owned();

    // Restart the gateway on the same address and data directory.
    gw.proc.terminate().await?;
    tmux.wait_for("reconnecting").await?;
    _second = Some(start_gateway_at(gw.data_dir.path(), addr).await?);
    tmux.wait_for("reattached to session").await?;

    // Same shell: the variable is still set and the pid is the same.
    tmux.line("echo mark=$AETHER_MARK; echo pid=$$").await?;
    // The pid line twice (before and after) and never three times: nothing replayed twice.
    let screen = tmux
        .wait_until("mark=kept and the same pid", |s| {
            s.lines().any(|l| l.trim() == "mark=kept")
                && s.lines().filter(|l| l.trim() == pid_line).count() >= 2
        })
        .await?;
    assert_eq!(
        screen.lines().filter(|l| l.trim() == pid_line).count(),
        2,
        "{screen}"
    );
    assert!(!screen.contains("this is a new one"), "{screen}");

    tmux.line("exit 0").await?;
    let screen = tmux.wait_for("EXITED=").await?;
    assert!(screen.contains("EXITED=0"), "{screen}");
    Ok(())
}
