//! `release` and `attach`: how the gateway hands one service connection from a client that left
//! to the next one. After `released`, nothing meant for the old client may arrive; after
//! `attach`, the socket gets what a new connection gets.

mod common;

use common::{Client, Service};
use serde_json::{Value, json};

/// Sends `release` and returns every frame that came before `released`.
async fn release(c: &mut Client) -> Vec<Value> {
    c.send(json!({"channel": "workspace", "type": "release"}))
        .await;
    let mut before = Vec::new();
    loop {
        let v = c.recv().await;
        if v == json!({"channel": "workspace", "type": "released"}) {
            return before;
        }
        before.push(v);
    }
}

/// Writes a file and waits until `watcher` has seen the watch event for it.
async fn write_seen_by(writer: &mut Client, watcher: &mut Client, path: &str) {
    writer
        .send(json!({"channel": "files", "type": "write", "requestId": path, "path": path, "content": "x"}))
        .await;
    watcher
        .recv_until(|v| v["channel"] == "files" && v["type"] == "change" && v["path"] == path)
        .await;
}

#[tokio::test]
async fn release_forgets_the_client_and_attach_starts_over() {
    let svc = Service::start(&[]).await;
    let mut a = svc.connect().await;
    let mut b = svc.connect().await;

    // A's client runs a shell, then leaves: its output stops reaching A.
    a.create("t", json!({})).await;
    a.input("t", "echo ready-$((20+1))\n").await;
    a.output_until("t", "ready-21").await;
    release(&mut a).await;

    // The shell lives on; B attaches to it and to the watch events, and sees them.
    b.create("t", json!({})).await;
    b.input("t", "echo one-$((1+1))\n").await;
    b.output_until("t", "one-2").await;
    b.input("t", "echo two-$((1+1))\n").await;
    b.output_until("t", "two-2").await;
    let mut watcher = svc.connect().await;
    write_seen_by(&mut b, &mut watcher, "before.txt").await;

    // Everything B saw happened after A's release: none of it may have reached A.
    let leaked = release(&mut a).await;
    assert!(
        leaked.is_empty(),
        "frames for the old client after release: {leaked:?}"
    );

    // A new client on A: `attach` subscribes it again, as a new connection is.
    a.send(json!({"channel": "workspace", "type": "attach"}))
        .await;
    write_seen_by(&mut b, &mut a, "after.txt").await;
    // The socket still works as a plain one: a ping is answered.
    a.send(json!({"channel": "workspace", "type": "ping", "seq": 9}))
        .await;
    a.recv_until(|v| v["type"] == "pong" && v["seq"] == 9).await;
}
