//! The real `aether` binary against a scripted stand-in for the gateway: a WebSocket server that
//! plays one exact conversation per test. It pins down the CLI's side of the protocol — header
//! auth, the script prelude and marker, `lastSeq` on re-attach after a 1012, trimming replayed
//! output, exit codes, wake errors — independently of the real gateway (whose end-to-end tests
//! are in `tests/tests/cli.rs`).

// tungstenite's handshake callbacks return its (large) `ErrorResponse` by value.
#![allow(clippy::result_large_err)]

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use protocol::control::{ControlServer, ErrorCode};
use protocol::terminal::{TerminalClient, TerminalServer};
use protocol::{ClientMessage, ServerMessage, WorkspaceStatus};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;

const WORKSPACE: &str = "3f2b8c1e-0000-4000-8000-000000000001";
const TOKEN: &str = "good-token";
const GUARD: Duration = Duration::from_secs(30);

type Ws = WebSocketStream<TcpStream>;

/// Accepts one WebSocket, checking the path and the `Authorization` header like the gateway.
async fn accept(listener: &TcpListener) -> Ws {
    let (stream, _) = listener.accept().await.unwrap();
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        assert_eq!(req.uri().path(), format!("/workspaces/{WORKSPACE}/ws"));
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if auth != Some(&format!("Bearer {TOKEN}")) {
            let mut err = ErrorResponse::new(Some(r#"{"error":"Unauthorized"}"#.into()));
            *err.status_mut() = http::StatusCode::UNAUTHORIZED;
            return Err(err);
        }
        Ok(resp)
    };
    tokio_tungstenite::accept_hdr_async(stream, check)
        .await
        .unwrap()
}

async fn send(ws: &mut Ws, msg: ServerMessage) {
    ws.send(Message::text(msg.to_json())).await.unwrap();
}

async fn status(ws: &mut Ws, status: WorkspaceStatus) {
    send(
        ws,
        ServerMessage::Workspace(ControlServer::Status {
            workspace_id: WORKSPACE.into(),
            status,
            message: None,
            elapsed_ms: None,
        }),
    )
    .await;
}

async fn output(ws: &mut Ws, session: &str, data: &str, seq: u64) {
    send(
        ws,
        ServerMessage::Terminal(TerminalServer::Output {
            session_id: session.into(),
            data: data.into(),
            seq: Some(seq),
        }),
    )
    .await;
}

/// The next client message (skipping pings).
async fn recv(ws: &mut Ws) -> ClientMessage {
    loop {
        match ws.next().await.expect("client went away").unwrap() {
            Message::Text(t) => return ClientMessage::parse(&t).unwrap(),
            Message::Close(_) => panic!("client closed"),
            _ => {}
        }
    }
}

/// Reads `input` messages until their concatenation contains `until`.
async fn read_input(ws: &mut Ws, got: &mut String, until: &str) {
    while !got.contains(until) {
        match recv(ws).await {
            ClientMessage::Terminal(TerminalClient::Input { data, .. }) => got.push_str(&data),
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn aether(url: &str, token: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_aether"));
    cmd.env("AETHER_API_URL", url)
        .env("AETHER_TOKEN", token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn script_survives_a_restart_and_returns_the_exit_code() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(String::new()));

    let server = {
        let received = received.clone();
        tokio::spawn(async move {
            // First connection: a wake, the prelude, part of the output, then a restart.
            let mut ws = accept(&listener).await;
            status(&mut ws, WorkspaceStatus::Stopped).await;
            status(&mut ws, WorkspaceStatus::Starting).await;
            status(&mut ws, WorkspaceStatus::Running).await;
            let ClientMessage::Terminal(TerminalClient::Create {
                session_id,
                last_seq,
                ..
            }) = recv(&mut ws).await
            else {
                panic!("expected create first");
            };
            assert_eq!(last_seq, None);
            send(
                &mut ws,
                ServerMessage::Terminal(TerminalServer::Created {
                    session_id: session_id.clone(),
                    resumed: false,
                    seq: 0,
                }),
            )
            .await;
            let mut got = String::new();
            read_input(&mut ws, &mut got, "exec bash").await;
            assert!(got.contains("stty -echo"), "{got:?}");
            // Prompt and echo, then the marker and the first line of script output.
            let first = "$ stty -echo …\r\n\x1eaether-script\x1eline1\n";
            output(&mut ws, &session_id, first, first.len() as u64).await;
            // The script itself and the end of input arrive only after the marker.
            got.clear();
            read_input(&mut ws, &mut got, "\x04").await;
            *received.lock().await = got;
            let seen = first.len() as u64;
            ws.close(Some(CloseFrame {
                code: WsCloseCode::from(1012),
                reason: "service restart".into(),
            }))
            .await
            .unwrap();

            // Second connection: the same session, from where the client left off.
            let mut ws = accept(&listener).await;
            status(&mut ws, WorkspaceStatus::Running).await;
            let ClientMessage::Terminal(TerminalClient::Create {
                session_id: again,
                last_seq,
                ..
            }) = recv(&mut ws).await
            else {
                panic!("expected create first");
            };
            assert_eq!(again, session_id);
            assert_eq!(last_seq, Some(seen));
            send(
                &mut ws,
                ServerMessage::Terminal(TerminalServer::Created {
                    session_id: session_id.clone(),
                    resumed: true,
                    seq: seen,
                }),
            )
            .await;
            // A replay that overlaps what was already printed by 3 bytes ("e1\n").
            output(
                &mut ws,
                &session_id,
                "e1\nline2 ✓\n",
                seen + "line2 ✓\n".len() as u64,
            )
            .await;
            send(
                &mut ws,
                ServerMessage::Terminal(TerminalServer::Close {
                    session_id,
                    exit_code: Some(3),
                }),
            )
            .await;
            // Wait for the client's close.
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_close() {
                    break;
                }
            }
        })
    };

    let mut child = aether(&url, TOKEN)
        .args(["workspace", "connect", WORKSPACE])
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"echo hi; exit 3").await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(GUARD, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(GUARD, server).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert_eq!(stdout, "line1\nline2 ✓\n", "stderr: {stderr}");
    // The script, completed with a newline, then the terminal's EOF key.
    assert_eq!(*received.lock().await, "echo hi; exit 3\n\x04");
}

#[tokio::test]
async fn wake_failure_exits_203_with_the_reason() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let mut ws = accept(&listener).await;
        status(&mut ws, WorkspaceStatus::Stopped).await;
        send(
            &mut ws,
            ServerMessage::Workspace(ControlServer::Error {
                code: ErrorCode::StartFailed,
                message: "provider said no".into(),
            }),
        )
        .await;
        ws.close(Some(CloseFrame {
            code: WsCloseCode::from(4500),
            reason: "workspace failed to start".into(),
        }))
        .await
        .unwrap();
        // As the gateway does: read until the client answers the close. Dropping the socket at
        // once would reset a `create` still in flight, and the client would see a dropped
        // connection instead of the 4500 (a race the loaded CI machine lost).
        while let Some(Ok(_)) = ws.next().await {}
    });
    let out = tokio::time::timeout(
        GUARD,
        aether(&url, TOKEN)
            .args(["workspace", "connect", WORKSPACE])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    server.await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(203), "{stderr}");
    assert!(
        stderr.contains("failed to wake: provider said no"),
        "{stderr}"
    );
}

#[tokio::test]
async fn rejected_token_on_the_socket_exits_201() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        // The handshake fails with 401 on our side; nothing more to do.
        let _ = tokio_tungstenite::accept_hdr_async(stream, |_: &Request, _: Response| {
            let mut err = ErrorResponse::new(Some(r#"{"error":"Unauthorized"}"#.into()));
            *err.status_mut() = http::StatusCode::UNAUTHORIZED;
            Err(err)
        })
        .await;
    });
    let out = tokio::time::timeout(
        GUARD,
        aether(&url, "bad-token")
            .args(["workspace", "connect", WORKSPACE])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    server.await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(201), "{stderr}");
    assert!(stderr.contains("rejected the token"), "{stderr}");
    assert!(stderr.contains(&url), "{stderr}");
}

/// A tmux server of our own, running one command in a window: a real terminal.
struct Tmux {
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
}

impl Tmux {
    async fn start(command: &str, env: &[(&str, &str)]) -> Tmux {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tmux.sock");
        let mut cmd = tokio::process::Command::new("tmux");
        cmd.arg("-S")
            .arg(&socket)
            .args(["-f", "/dev/null", "new-session", "-d", "-s", "main"])
            .args(["-x", "100", "-y", "30", command])
            .env_remove("TMUX");
        for (k, v) in env {
            cmd.env(k, v);
        }
        assert!(cmd.status().await.unwrap().success());
        Tmux { _dir: dir, socket }
    }

    async fn tmux(&self, args: &[&str]) -> String {
        let out = tokio::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls the pane until `text` shows (bounded by [`GUARD`]).
    async fn wait_for(&self, text: &str) -> String {
        let poll = async {
            loop {
                let screen = self.tmux(&["capture-pane", "-p", "-J", "-t", "main"]).await;
                if screen.contains(text) {
                    return screen;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        match tokio::time::timeout(GUARD, poll).await {
            Ok(screen) => screen,
            Err(_) => panic!(
                "no {text:?} on screen:\n{}",
                self.tmux(&["capture-pane", "-p", "-t", "main"]).await
            ),
        }
    }

    async fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "main"];
        args.extend_from_slice(keys);
        self.tmux(&args).await;
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .status();
    }
}

#[tokio::test]
async fn interactive_raw_mode_resize_escapes_and_restore() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let mut ws = accept(&listener).await;
        status(&mut ws, WorkspaceStatus::Stopped).await;
        status(&mut ws, WorkspaceStatus::Starting).await;
        let ClientMessage::Terminal(TerminalClient::Create {
            session_id,
            cols,
            rows,
            ..
        }) = recv(&mut ws).await
        else {
            panic!("expected create first");
        };
        assert_eq!((cols, rows), (Some(100), Some(30)));
        status(&mut ws, WorkspaceStatus::Running).await;
        send(
            &mut ws,
            ServerMessage::Terminal(TerminalServer::Created {
                session_id: session_id.clone(),
                resumed: false,
                seq: 0,
            }),
        )
        .await;
        // An echoing "shell" that reports resizes.
        let mut seq = 0;
        loop {
            let text = match ws.next().await {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            };
            let reply = match ClientMessage::parse(&text).unwrap() {
                ClientMessage::Terminal(TerminalClient::Input { data, .. }) => {
                    // Raw mode sends Enter as `\r`, byte for byte.
                    data.replace('\r', "\r\n")
                }
                ClientMessage::Terminal(TerminalClient::Resize { cols, rows, .. }) => {
                    format!("[size={cols}x{rows}]\r\n")
                }
                other => panic!("unexpected {other:?}"),
            };
            seq += reply.len() as u64;
            output(&mut ws, &session_id, &reply, seq).await;
        }
    });

    let line = format!(
        "{} workspace connect {WORKSPACE}; echo EXITED=$?; \
         stty -a | tr ' ;' '\\n\\n' | grep -x -- '-\\?icanon'; exec sleep 600",
        env!("CARGO_BIN_EXE_aether")
    );
    let tmux = Tmux::start(&line, &[("AETHER_API_URL", &url), ("AETHER_TOKEN", TOKEN)]).await;
    tmux.wait_for("stopped → starting → running").await;
    // Characters arrive one by one and are echoed only by the "shell": raw mode is on.
    tmux.keys(&["-l", "héllo ✓"]).await;
    tmux.keys(&["Enter"]).await;
    tmux.wait_for("héllo ✓").await;
    tmux.tmux(&["resize-window", "-t", "main", "-x", "120", "-y", "40"])
        .await;
    tmux.wait_for("[size=120x40]").await;
    tmux.keys(&["-l", "~?"]).await;
    tmux.wait_for("Supported escape sequences").await;
    tmux.keys(&["-l", "x~."]).await;
    tmux.wait_for("x~.").await;
    tmux.keys(&["Enter"]).await;
    tmux.keys(&["-l", "~."]).await;
    let screen = tmux.wait_for("EXITED=").await;
    assert!(screen.contains("EXITED=0"), "{screen}");
    assert!(screen.contains("detached; session"), "{screen}");
    let screen = tmux.wait_for("icanon").await;
    assert!(
        screen.lines().any(|l| l.trim() == "icanon"),
        "terminal left raw:\n{screen}"
    );
    tokio::time::timeout(GUARD, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn sigterm_restores_the_terminal_and_exits_143() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let mut ws = accept(&listener).await;
        status(&mut ws, WorkspaceStatus::Running).await;
        let ClientMessage::Terminal(TerminalClient::Create { session_id, .. }) =
            recv(&mut ws).await
        else {
            panic!("expected create first");
        };
        send(
            &mut ws,
            ServerMessage::Terminal(TerminalServer::Created {
                session_id: session_id.clone(),
                resumed: false,
                seq: 0,
            }),
        )
        .await;
        output(&mut ws, &session_id, "attached$ ", 10).await;
        // Hold the connection until the client goes.
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
        }
    });
    let line = format!(
        "{} workspace connect {WORKSPACE}; echo EXITED=$?; \
         stty -a | tr ' ;' '\\n\\n' | grep -x -- '-\\?icanon'; exec sleep 600",
        env!("CARGO_BIN_EXE_aether")
    );
    let tmux = Tmux::start(&line, &[("AETHER_API_URL", &url), ("AETHER_TOKEN", TOKEN)]).await;
    tmux.wait_for("attached$").await;
    // The pane runs `sh -c`, whose only child is aether.
    let shell = tmux
        .tmux(&["display-message", "-p", "-t", "main", "#{pane_pid}"])
        .await;
    let children = tokio::process::Command::new("pgrep")
        .args(["-P", shell.trim()])
        .output()
        .await
        .unwrap();
    let pid = String::from_utf8_lossy(&children.stdout).trim().to_owned();
    assert!(
        !pid.is_empty() && !pid.contains('\n'),
        "aether's pid: {pid:?}"
    );
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let screen = tmux.wait_for("EXITED=").await;
    assert!(screen.contains("EXITED=143"), "{screen}");
    assert!(screen.contains("interrupted by SIGTERM"), "{screen}");
    let screen = tmux.wait_for("icanon").await;
    assert!(
        screen.lines().any(|l| l.trim() == "icanon"),
        "terminal left raw:\n{screen}"
    );
    tokio::time::timeout(GUARD, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn ctrl_c_during_a_wake_exits_130() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let mut ws = accept(&listener).await;
        status(&mut ws, WorkspaceStatus::Stopped).await;
        status(&mut ws, WorkspaceStatus::Starting).await;
        // A wake that never ends; the client gives up.
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
        }
    });
    let line = format!(
        "{} workspace connect {WORKSPACE}; echo EXITED=$?; exec sleep 600",
        env!("CARGO_BIN_EXE_aether")
    );
    let tmux = Tmux::start(&line, &[("AETHER_API_URL", &url), ("AETHER_TOKEN", TOKEN)]).await;
    tmux.wait_for("waking workspace 3f2b8c1e: stopped → starting")
        .await;
    tmux.keys(&["C-c"]).await;
    let screen = tmux.wait_for("EXITED=").await;
    assert!(screen.contains("EXITED=130"), "{screen}");
    // The spinner line became a summary with the reason.
    assert!(screen.contains("s): interrupted"), "{screen}");
    assert!(screen.contains("interrupted by SIGINT"), "{screen}");
    tokio::time::timeout(GUARD, server).await.unwrap().unwrap();
}
