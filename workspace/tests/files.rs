//! The files channel: operations with requestId replies, base64, refusal of traversal and of
//! symlinks that escape the volume, and watch events.

mod common;

use common::{Client, Service};
use serde_json::{Value, json};

/// Sends a files request and waits for the reply with the same requestId.
async fn request(c: &mut Client, id: &str, body: Value) -> Value {
    let mut msg = body;
    msg["channel"] = json!("files");
    msg["requestId"] = json!(id);
    let kind = msg["type"].clone();
    c.send(msg).await;
    let reply = c
        .recv_until(|v| v["channel"] == "files" && v["requestId"] == id)
        .await;
    assert_eq!(reply["type"], kind);
    reply
}

fn ok(reply: &Value) {
    assert!(reply.get("error").is_none(), "unexpected error: {reply}");
}

fn refused(reply: &Value) -> String {
    reply["error"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error: {reply}"))
        .to_owned()
}

#[tokio::test]
async fn write_read_list_mkdir_rename_delete() {
    let svc = Service::start(&[]).await;
    let mut c = svc.connect().await;
    let r = request(
        &mut c,
        "w1",
        json!({"type": "write", "path": "a/b/c.txt", "content": "héllo\n"}),
    )
    .await;
    ok(&r);
    assert_eq!(
        std::fs::read_to_string(svc.volume.path().join("a/b/c.txt")).unwrap(),
        "héllo\n"
    );
    let r = request(&mut c, "r1", json!({"type": "read", "path": "/a/b/c.txt"})).await;
    assert_eq!(
        r["data"],
        json!({"content": "héllo\n", "encoding": "utf-8"})
    );

    let r = request(&mut c, "l1", json!({"type": "list", "path": "a/b"})).await;
    let entries = r["data"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["name"], "c.txt");
    assert_eq!(entries[0]["type"], "file");
    assert_eq!(entries[0]["size"], 7);
    assert!(entries[0]["modified"].as_u64().unwrap() > 1_600_000_000_000);

    ok(&request(&mut c, "m1", json!({"type": "mkdir", "path": "d/e"})).await);
    let r = request(&mut c, "l2", json!({"type": "list"})).await;
    let names: Vec<(&str, &str)> = r["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["type"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("a", "directory"), ("d", "directory")]);

    ok(&request(
        &mut c,
        "mv",
        json!({"type": "rename", "path": "a/b/c.txt", "newPath": "d/e/moved.txt"}),
    )
    .await);
    let r = request(
        &mut c,
        "r2",
        json!({"type": "read", "path": "d/e/moved.txt"}),
    )
    .await;
    assert_eq!(r["data"]["content"], "héllo\n");
    refused(&request(&mut c, "r3", json!({"type": "read", "path": "a/b/c.txt"})).await);

    ok(&request(&mut c, "rm", json!({"type": "delete", "path": "d"})).await);
    assert!(!svc.volume.path().join("d").exists());
    let e = refused(&request(&mut c, "rm2", json!({"type": "delete", "path": "d"})).await);
    assert!(e.contains("no such file"), "{e}");
    refused(&request(&mut c, "rm3", json!({"type": "delete", "path": "/"})).await);
    refused(&request(&mut c, "l3", json!({"type": "list", "path": "a/nothing"})).await);
    refused(&request(&mut c, "r4", json!({"type": "read", "path": "a"})).await);
}

#[tokio::test]
async fn binary_content_is_base64() {
    let svc = Service::start(&[]).await;
    let mut c = svc.connect().await;
    // 00 ff 01 fe: not UTF-8.
    ok(&request(
        &mut c,
        "w",
        json!({"type": "write", "path": "bin", "content": "AP8B/g==", "encoding": "base64"}),
    )
    .await);
    assert_eq!(
        std::fs::read(svc.volume.path().join("bin")).unwrap(),
        [0u8, 0xff, 1, 0xfe]
    );
    let r = request(&mut c, "r", json!({"type": "read", "path": "bin"})).await;
    assert_eq!(
        r["data"],
        json!({"content": "AP8B/g==", "encoding": "base64"})
    );
    let e = refused(
        &request(
            &mut c,
            "bad",
            json!({"type": "write", "path": "x", "content": "!!!", "encoding": "base64"}),
        )
        .await,
    );
    assert!(e.contains("base64"), "{e}");
}

#[tokio::test]
async fn traversal_and_escaping_symlinks_are_refused() {
    let svc = Service::start(&[]).await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "top secret").unwrap();
    std::os::unix::fs::symlink(outside.path(), svc.volume.path().join("out")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), svc.volume.path().join("s")).unwrap();
    let mut c = svc.connect().await;

    for (id, body) in [
        ("t1", json!({"type": "read", "path": "../etc/passwd"})),
        (
            "t2",
            json!({"type": "write", "path": "../escape.txt", "content": "x"}),
        ),
        ("t3", json!({"type": "list", "path": "a/../../"})),
        ("t4", json!({"type": "mkdir", "path": "../newdir"})),
        ("t5", json!({"type": "delete", "path": "../"})),
        (
            "t6",
            json!({"type": "rename", "path": "x", "newPath": "../../x"}),
        ),
        ("s1", json!({"type": "read", "path": "out/secret"})),
        ("s2", json!({"type": "read", "path": "s"})),
        (
            "s3",
            json!({"type": "write", "path": "out/new.txt", "content": "x"}),
        ),
        (
            "s4",
            json!({"type": "write", "path": "s", "content": "overwrite"}),
        ),
        ("s5", json!({"type": "list", "path": "out"})),
        ("s6", json!({"type": "mkdir", "path": "out/sub"})),
        ("s7", json!({"type": "delete", "path": "out/secret"})),
        (
            "s8",
            json!({"type": "rename", "path": "out/secret", "newPath": "mine"}),
        ),
    ] {
        let e = refused(&request(&mut c, id, body).await);
        assert!(e.contains("escapes"), "{id}: {e}");
    }
    assert_eq!(
        std::fs::read_to_string(outside.path().join("secret")).unwrap(),
        "top secret"
    );
    assert!(!outside.path().join("new.txt").exists());
    // Deleting the link itself is fine, and leaves its target alone.
    ok(&request(&mut c, "d", json!({"type": "delete", "path": "out"})).await);
    assert!(outside.path().join("secret").exists());
}

/// The next file change (skipping other channels).
async fn change(c: &mut Client) -> (String, String) {
    let v = c
        .recv_until(|v| v["channel"] == "files" && v["type"] == "change")
        .await;
    (
        v["path"].as_str().unwrap().to_owned(),
        v["action"].as_str().unwrap().to_owned(),
    )
}

/// Waits for a change of `path` with `action`, skipping others of other paths; panics on an
/// ignored path.
async fn expect_change(c: &mut Client, path: &str, action: &str) {
    loop {
        let (p, a) = change(c).await;
        assert!(
            !p.contains("node_modules") && !p.contains(".git"),
            "ignored path reported: {p}"
        );
        if p == path && a == action {
            return;
        }
    }
}

#[tokio::test]
async fn watch_events_for_changes_but_not_ignored_directories() {
    let svc = Service::start(&[]).await;
    std::fs::create_dir_all(svc.volume.path().join("node_modules/pkg")).unwrap();
    let mut c = svc.connect().await;
    let root = svc.volume.path();

    std::fs::write(root.join("w.txt"), "1").unwrap();
    expect_change(&mut c, "w.txt", "create").await;
    std::fs::write(root.join("w.txt"), "22").unwrap();
    expect_change(&mut c, "w.txt", "modify").await;

    // Inside ignored trees: nothing (checked when the next real event comes).
    std::fs::write(root.join("node_modules/pkg/index.js"), "x").unwrap();
    std::fs::create_dir_all(root.join(".git")).unwrap();
    std::fs::write(root.join(".git/HEAD"), "x").unwrap();

    // A directory made after start is watched too.
    std::fs::create_dir(root.join("sub")).unwrap();
    expect_change(&mut c, "sub", "create").await;
    // Also through the channel itself (the event may come before or after the reply).
    c.send(json!({"channel": "files", "type": "write", "requestId": "w", "path": "sub/f.txt", "content": "x"}))
        .await;
    let (mut replied, mut changed) = (false, false);
    while !(replied && changed) {
        let v = c.recv_on("files").await;
        if v["requestId"] == "w" {
            ok(&v);
            replied = true;
        } else if !changed && v["type"] == "change" && v["path"] == "sub/f.txt" {
            assert_eq!(v["action"], "create");
            changed = true;
        }
    }

    std::fs::rename(root.join("w.txt"), root.join("sub/renamed.txt")).unwrap();
    expect_change(&mut c, "w.txt", "delete").await;
    expect_change(&mut c, "sub/renamed.txt", "create").await;
    std::fs::remove_file(root.join("sub/renamed.txt")).unwrap();
    expect_change(&mut c, "sub/renamed.txt", "delete").await;
}
