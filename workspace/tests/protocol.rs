//! The `workspace` channel, bad input of every kind, the HTTP endpoints and SIGTERM shutdown.

mod common;

use std::time::{Duration, Instant};

use common::Service;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;

/// The socket still answers after an error: a ping gets its pong.
async fn still_open(c: &mut common::Client, seq: u64) {
    c.send(json!({"channel": "workspace", "type": "ping", "seq": seq}))
        .await;
    let pong = c.recv_on("workspace").await;
    assert_eq!(
        pong,
        json!({"channel": "workspace", "type": "pong", "seq": seq})
    );
}

async fn error_for(c: &mut common::Client, frame: &str) -> Value {
    c.send_raw(Message::text(frame.to_owned())).await;
    c.recv_on("error").await
}

#[tokio::test]
async fn ping_gets_pong_with_the_same_fields_and_hello_is_ignored() {
    let svc = Service::start(&[]).await;
    let mut c = svc.connect().await;
    c.send(json!({"channel": "workspace", "type": "hello", "counts": false}))
        .await;
    c.send(json!({"channel": "workspace", "type": "ping", "seq": 42, "data": "x\"y"}))
        .await;
    let pong = c.recv_on("workspace").await;
    assert_eq!(
        pong,
        json!({"channel": "workspace", "type": "pong", "seq": 42, "data": "x\"y"})
    );
    for seq in 0..100 {
        still_open(&mut c, seq).await;
    }
}

#[tokio::test]
async fn bad_input_gets_an_error_frame_and_the_socket_stays_open() {
    let svc = Service::start(&[]).await;
    let mut c = svc.connect().await;

    let e = error_for(&mut c, "{not json").await;
    assert_eq!(e["type"], "error");
    assert!(e["error"].as_str().unwrap().contains("malformed"), "{e}");
    still_open(&mut c, 1).await;

    let e = error_for(&mut c, r#"{"channel":"nope","type":"x"}"#).await;
    assert!(e["error"].as_str().unwrap().contains("nope"), "{e}");
    still_open(&mut c, 2).await;

    let e = error_for(
        &mut c,
        r#"{"channel":"terminal","type":"explode","sessionId":"a"}"#,
    )
    .await;
    assert!(e["error"].as_str().unwrap().contains("explode"), "{e}");
    still_open(&mut c, 3).await;

    let e = error_for(&mut c, r#"{"type":"ping","seq":1}"#).await;
    assert!(e["error"].as_str().unwrap().contains("channel"), "{e}");
    still_open(&mut c, 4).await;

    // A missing field: the requestId is echoed.
    let e = error_for(
        &mut c,
        r#"{"channel":"files","type":"read","requestId":"r-77"}"#,
    )
    .await;
    assert_eq!(e["requestId"], "r-77");
    assert!(e["error"].as_str().unwrap().contains("path"), "{e}");
    still_open(&mut c, 5).await;

    // An ill-typed field.
    let e = error_for(
        &mut c,
        r#"{"channel":"terminal","type":"resize","sessionId":"s","cols":"wide","rows":3}"#,
    )
    .await;
    assert!(e["error"].as_str().unwrap().contains("invalid"), "{e}");
    still_open(&mut c, 6).await;

    let e = error_for(&mut c, r#"{"channel":"workspace","type":"ping","seq":-1}"#).await;
    assert_eq!(e["type"], "error");
    still_open(&mut c, 7).await;

    // Valid messages the service cannot honour.
    let e = error_for(
        &mut c,
        r#"{"channel":"terminal","type":"input","sessionId":"none","data":"x"}"#,
    )
    .await;
    assert!(e["error"].as_str().unwrap().contains("none"), "{e}");
    let e = error_for(
        &mut c,
        r#"{"channel":"agent","type":"abort","taskId":"t0"}"#,
    )
    .await;
    assert!(e["error"].as_str().unwrap().contains("t0"), "{e}");
    let e = error_for(
        &mut c,
        r#"{"channel":"agent","type":"approve","requestId":"q1"}"#,
    )
    .await;
    assert!(e["error"].as_str().unwrap().contains("q1"), "{e}");
    still_open(&mut c, 8).await;

    // JSON that is not an object, and an empty frame.
    error_for(&mut c, "[1,2]").await;
    error_for(&mut c, "").await;
    still_open(&mut c, 9).await;
}

#[tokio::test]
async fn config_channel_answers_with_an_error_frame() {
    let svc = Service::start(&[]).await;
    let mut c = svc.connect().await;
    let e = error_for(
        &mut c,
        r#"{"channel":"config","type":"get","requestId":"c1"}"#,
    )
    .await;
    assert_eq!(e["channel"], "error");
    assert_eq!(e["requestId"], "c1");
    assert!(e["error"].as_str().unwrap().contains("config"), "{e}");
    still_open(&mut c, 1).await;
}

#[tokio::test]
async fn a_message_over_1_mib_closes_with_1009() {
    let svc = Service::start(&[]).await;
    let mut c = svc.connect().await;
    // Exactly the limit is fine.
    let pad = "x".repeat(protocol::MAX_MESSAGE_SIZE - 60);
    let at_limit = format!(r#"{{"channel":"workspace","type":"ping","seq":1,"data":"{pad}"}}"#);
    let at_limit = at_limit.clone() + &" ".repeat(protocol::MAX_MESSAGE_SIZE - at_limit.len());
    assert_eq!(at_limit.len(), protocol::MAX_MESSAGE_SIZE);
    c.send_raw(Message::text(at_limit)).await;
    assert_eq!(c.recv_on("workspace").await["seq"], 1);

    let over = "y".repeat(protocol::MAX_MESSAGE_SIZE + 1);
    c.send_raw(Message::text(over)).await;
    let frame = c.expect_close().await.expect("a close frame");
    assert_eq!(frame.code, WsCloseCode::from(1009));
}

#[tokio::test]
async fn a_binary_frame_closes_with_1003() {
    let svc = Service::start(&[]).await;
    let mut c = svc.connect().await;
    still_open(&mut c, 1).await;
    c.send_raw(Message::binary(vec![1u8, 2, 3])).await;
    let frame = c.expect_close().await.expect("a close frame");
    assert_eq!(frame.code, WsCloseCode::from(1003));
}

#[tokio::test]
async fn healthz_status_and_unknown_paths() {
    let svc = Service::start(&["--workspace-id", "ws-123"]).await;
    assert_eq!(
        svc.get("/healthz").await,
        (200, json!({"status": "ok", "workspaceId": "ws-123"}))
    );
    assert_eq!(
        svc.status().await,
        json!({"activeTasks": 0, "terminalSessions": 0, "sockets": 0})
    );
    let mut c = svc.connect().await;
    c.create("s", json!({})).await;
    assert_eq!(
        svc.status().await,
        json!({"activeTasks": 0, "terminalSessions": 1, "sockets": 1})
    );
    drop(c);
    assert_eq!(svc.get("/nope").await.0, 404);
    // A plain GET of /ws is not an upgrade.
    assert_eq!(svc.get("/ws").await.0, 426);

    let other = Service::start(&[]).await;
    assert_eq!(
        other.get("/healthz").await.1,
        json!({"status": "ok", "workspaceId": null})
    );
}

/// The number after `prefix` in `text`, once a non-digit follows it.
fn number_after(text: &str, prefix: &str) -> Option<u32> {
    text.match_indices(prefix).find_map(|(i, _)| {
        let rest = &text[i + prefix.len()..];
        let end = rest.find(|c: char| !c.is_ascii_digit())?;
        rest[..end].parse().ok()
    })
}

/// Waits (bounded) for a process to be gone.
async fn gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for its new parent to reap it.
        if stat.is_empty() || stat.contains(") Z ") {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn sigterm_closes_sockets_with_1001_hangs_up_terminals_and_exits() {
    let mut svc = Service::start(&[]).await;
    let mut c = svc.connect().await;
    c.create("s", json!({})).await;
    c.input("s", "echo pid=$(( $$ + 0 ))\n").await;
    let mut out = common::Output::default();
    let shell_pid = loop {
        let v = c.recv_on("terminal").await;
        out.absorb(&v);
        if let Some(pid) = number_after(&out.text, "pid=") {
            break pid;
        }
    };
    c.send(json!({"channel": "agent", "type": "prompt", "prompt": "echo apid=$$.; sleep 60", "taskId": "long"}))
        .await;
    let mut text = String::new();
    let agent_pid = loop {
        let v = c.recv_on("agent").await;
        if v["type"] == "text" {
            text.push_str(v["content"].as_str().unwrap());
            if let Some(pid) = number_after(&text, "apid=") {
                break pid;
            }
        }
    };

    let started = Instant::now();
    svc.terminate();
    let frame = c.expect_close().await.expect("a close frame");
    assert_eq!(frame.code, WsCloseCode::from(1001));
    let status = tokio::time::timeout(Duration::from_secs(8), svc.child.wait())
        .await
        .expect("exits within the grace")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(6));
    assert!(gone(shell_pid).await, "the terminal's shell was hung up");
    assert!(gone(agent_pid).await, "the agent task was ended");
}
