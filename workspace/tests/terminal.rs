//! The terminal channel against real PTYs: output and exit codes, resize, re-attach with replay
//! and sequence numbers, the loss marker, several sockets, and a slow socket.

mod common;

use common::{Client, Service};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;

#[tokio::test]
async fn shell_command_output_and_exit_code() {
    let svc = Service::start(&[]).await;
    let mut c = svc.connect().await;
    let created = c.create("s1", json!({})).await;
    assert_eq!(created["resumed"], false);
    assert_eq!(created["seq"], 0);
    c.input("s1", "echo hello-$((6*7)) && pwd; exit 3\n").await;
    let out = c.output_until_close("s1").await;
    assert!(out.text.contains("hello-42"), "{:?}", out.text);
    // The working directory is the volume.
    let volume = svc.volume.path().canonicalize().unwrap();
    assert!(
        out.text.contains(volume.to_str().unwrap()),
        "{:?}",
        out.text
    );
    assert_eq!(out.exit, Some(json!(3)));
    assert_eq!(out.first_start, Some(0));
    // A closed session is gone.
    assert_eq!(svc.status().await["terminalSessions"], 0);
}

#[tokio::test]
async fn term_and_default_size() {
    let svc = Service::start(&[]).await;
    let mut c = svc.connect().await;
    c.create("t", json!({})).await;
    c.input("t", "echo \"[$TERM]\"; stty size\n").await;
    let out = c.output_until("t", "24 80").await;
    assert!(out.text.contains("[xterm-256color]"), "{:?}", out.text);
}

#[tokio::test]
async fn stty_size_after_resize() {
    let svc = Service::start(&[]).await;
    let mut c = svc.connect().await;
    c.create("r", json!({"cols": 100, "rows": 30})).await;
    c.input("r", "stty size\n").await;
    c.output_until("r", "30 100").await;
    c.send(
        json!({"channel": "terminal", "type": "resize", "sessionId": "r", "cols": 120, "rows": 40}),
    )
    .await;
    c.input("r", "stty size\n").await;
    c.output_until("r", "40 120").await;
}

#[tokio::test]
async fn close_kills_the_session_with_null_exit_code() {
    let svc = Service::start(&[]).await;
    let mut c = svc.connect().await;
    c.create("k", json!({})).await;
    c.input("k", "echo ready-$((1+1))\n").await;
    c.output_until("k", "ready-2").await;
    c.send(json!({"channel": "terminal", "type": "close", "sessionId": "k"}))
        .await;
    let out = c.output_until_close("k").await;
    assert_eq!(out.exit, Some(serde_json::Value::Null));
}

#[tokio::test]
async fn several_sessions_on_one_socket() {
    let svc = Service::start(&[]).await;
    let mut c = svc.connect().await;
    c.create("a", json!({})).await;
    c.create("b", json!({})).await;
    c.input("a", "exit 11\n").await;
    c.input("b", "exit 12\n").await;
    let mut codes = std::collections::HashMap::new();
    while codes.len() < 2 {
        let v = c
            .recv_until(|v| v["channel"] == "terminal" && v["type"] == "close")
            .await;
        codes.insert(
            v["sessionId"].as_str().unwrap().to_owned(),
            v["exitCode"].clone(),
        );
    }
    assert_eq!(codes["a"], 11);
    assert_eq!(codes["b"], 12);
}

#[tokio::test]
async fn reattach_replays_everything() {
    let svc = Service::start(&[]).await;
    let mut a = svc.connect().await;
    a.create("s", json!({})).await;
    a.input("s", "echo marker-$((500+1))\n").await;
    let seen = a.output_until("s", "marker-501").await;
    drop(a);

    // The session outlives the socket.
    let mut b = svc.connect().await;
    let created = b.create("s", json!({})).await;
    assert_eq!(created["resumed"], true);
    let end = created["seq"].as_u64().unwrap();
    assert!(end >= seen.seq.unwrap());
    let mut replay = common::Output::default();
    while replay.seq != Some(end) {
        let v = b.recv_on("terminal").await;
        assert!(replay.absorb(&v));
    }
    assert_eq!(replay.first_start, Some(0));
    assert!(
        replay.text.starts_with(&seen.text),
        "replay must repeat what A saw"
    );
    assert!(replay.lost.is_none());

    // And it is live.
    b.input("s", "echo after-$((600+2))\n").await;
    let live = b.output_until("s", "after-602").await;
    assert_eq!(live.first_start, Some(end));
}

#[tokio::test]
async fn reattach_with_last_seq_gets_only_what_was_missed() {
    let svc = Service::start(&[]).await;
    let mut a = svc.connect().await;
    a.create("s", json!({})).await;
    a.input("s", "echo first-$((1000+1))\n").await;
    let first = a.output_until("s", "first-1001").await;
    let last_seq = first.seq.unwrap();
    // Output produced while no socket is attached.
    a.input("s", "sleep 0.2; echo second-$((2000+2))\n").await;
    drop(a);

    let mut b = svc.connect().await;
    let created = b.create("s", json!({"lastSeq": last_seq})).await;
    assert_eq!(created["resumed"], true);
    let out = b.output_until("s", "second-2002").await;
    assert_eq!(
        out.first_start,
        Some(last_seq),
        "replay starts right after lastSeq"
    );
    assert!(!out.text.contains("first-1001"), "{:?}", out.text);
    assert!(out.lost.is_none());
}

#[tokio::test]
async fn loss_marker_when_the_ring_overflowed() {
    let svc = Service::start(&["--ring-bytes", "1024"]).await;
    let mut a = svc.connect().await;
    a.create("s", json!({})).await;
    a.input("s", "seq 1 3000 | tr -d '\\n'; echo; echo done-$((40+2))\n")
        .await;
    a.output_until("s", "done-42").await;
    drop(a);

    let mut b = svc.connect().await;
    let created = b.create("s", json!({"lastSeq": 0})).await;
    let end = created["seq"].as_u64().unwrap();
    let lost = b
        .recv_until(|v| v["channel"] == "terminal" && v["type"] == "lost")
        .await;
    let lost_bytes = lost["bytes"].as_u64().unwrap();
    assert!(lost_bytes > 0);
    let mut replay = common::Output::default();
    while replay.seq != Some(end) {
        let v = b.recv_on("terminal").await;
        assert!(replay.absorb(&v));
    }
    assert!(replay.text.len() <= 1024);
    assert_eq!(lost_bytes + replay.text.len() as u64, end);
    assert_eq!(replay.first_start, Some(lost_bytes));
    assert!(replay.text.contains("done-42"));
}

#[tokio::test]
async fn two_sockets_share_a_session() {
    let svc = Service::start(&[]).await;
    let mut a = svc.connect().await;
    let mut b = svc.connect().await;
    a.create("shared", json!({})).await;
    let created = b.create("shared", json!({})).await;
    assert_eq!(created["resumed"], true);
    a.input("shared", "echo both-$((2000+2))\n").await;
    a.output_until("shared", "both-2002").await;
    b.output_until("shared", "both-2002").await;
    b.input("shared", "exit 7\n").await;
    assert_eq!(a.output_until_close("shared").await.exit, Some(json!(7)));
    assert_eq!(b.output_until_close("shared").await.exit, Some(json!(7)));
}

#[tokio::test]
async fn utf8_split_across_reads_is_never_broken() {
    let svc = Service::start(&[]).await;
    let mut c = svc.connect().await;
    c.create("u", json!({})).await;
    // 30000 euro signs (3 bytes each) in one burst: reads will cut characters.
    c.input(
        "u",
        "printf '€%.0s' $(seq 1 30000); echo; echo end-$((7*7))\n",
    )
    .await;
    let out = c.output_until("u", "end-49").await;
    assert!(!out.text.contains('\u{fffd}'), "no replacement characters");
    assert!(out.text.matches('€').count() >= 30000);
}

#[tokio::test]
async fn a_slow_socket_does_not_stall_the_pty_or_the_others() {
    let svc = Service::start(&["--socket-queue-bytes", "262144"]).await;
    let mut slow = Client::connect_small_buffer(svc.addr).await;
    slow.create("s", json!({})).await;
    let mut fast = svc.connect().await;
    fast.create("s", json!({})).await;
    // `slow` stops reading now. 8 MB of output (paced, so that `fast`, a debug build parsing
    // every frame, keeps up) must reach `fast` regardless.
    fast.input(
        "s",
        "for i in $(seq 1 128); do head -c 65536 /dev/zero | tr '\\0' x; sleep 0.01; done; \
         echo; echo finished-$((9*9))\n",
    )
    .await;
    let mut total = 0usize;
    loop {
        let v = fast.recv_on("terminal").await;
        if v["type"] == "output" {
            let data = v["data"].as_str().unwrap();
            total += data.len();
            if data.contains("finished-81") {
                break;
            }
        }
    }
    assert!(total >= 128 * 65536, "fast socket got {total} bytes");
    // The slow socket was dropped from the fan-out and closed with 4008 after what it had queued.
    let frame = slow.expect_close().await.expect("a close frame");
    assert_eq!(frame.code, WsCloseCode::from(4008));
    // The session and the fast socket are unaffected.
    fast.input("s", "echo still-$((3*3))\n").await;
    fast.output_until("s", "still-9").await;
}
