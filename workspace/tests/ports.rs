//! The ports channel: a listener in the test process appears and disappears; `kill` ends another
//! process's listener; hidden ports are never reported.

mod common;

use std::process::Stdio;

use common::{Client, Service};
use serde_json::{Value, json};

const FAST: [&str; 2] = ["--ports-interval", "100ms"];

async fn port_event(c: &mut Client, kind: &str, port: u16) -> Value {
    c.recv_until(|v| v["channel"] == "ports" && v["type"] == kind && v["port"] == port)
        .await
}

#[tokio::test]
async fn a_listener_opens_and_closes() {
    let svc = Service::start(&FAST).await;
    let mut c = svc.connect().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let open = port_event(&mut c, "open", port).await;
    assert_eq!(open["pid"], std::process::id());
    assert!(open["process"].is_string(), "{open}");

    // A socket that connects later gets it in its snapshot.
    let mut late = svc.connect().await;
    port_event(&mut late, "open", port).await;

    drop(listener);
    port_event(&mut c, "close", port).await;
    port_event(&mut late, "close", port).await;
}

#[tokio::test]
async fn the_services_own_port_is_hidden() {
    let svc = Service::start(&FAST).await;
    let mut c = svc.connect().await;
    // Open a port, so that a full scan has certainly been reported once it shows.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let own = svc.addr.port();
    let hidden = [22u16, 2222, 3001, own];
    loop {
        let v = c.recv_on("ports").await;
        let p = v["port"].as_u64().unwrap() as u16;
        assert!(!hidden.contains(&p), "reported a hidden port: {v}");
        if p == port {
            break;
        }
    }
}

#[tokio::test]
async fn kill_ends_the_listening_process() {
    let svc = Service::start(&FAST).await;
    let mut c = svc.connect().await;
    // The victim: another aether-workspace, a process that listens and says where.
    let victim_volume = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_aether-workspace"));
    cmd.args(["--listen", "127.0.0.1:0", "--volume"])
        .arg(victim_volume.path())
        .env("AETHER_WORKSPACE_LOG", "error")
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let (mut victim, addr) = common::spawn_ready(cmd).await;
    let open = port_event(&mut c, "open", addr.port()).await;
    assert_eq!(open["pid"], victim.id().unwrap());
    assert_eq!(open["process"], "aether-workspac"); // comm is cut at 15 characters

    c.send(json!({"channel": "ports", "type": "kill", "port": addr.port()}))
        .await;
    port_event(&mut c, "close", addr.port()).await;
    let status = tokio::time::timeout(common::WAIT, victim.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "SIGTERM: a clean exit ({status:?})");
}

#[tokio::test]
async fn killing_a_port_nobody_listens_on_is_an_error() {
    let svc = Service::start(&FAST).await;
    let mut c = svc.connect().await;
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    c.send(json!({"channel": "ports", "type": "kill", "port": port}))
        .await;
    let e = c.recv_on("error").await;
    assert!(
        e["error"].as_str().unwrap().contains(&port.to_string()),
        "{e}"
    );
    // Nor may it kill itself.
    c.send(json!({"channel": "ports", "type": "kill", "port": svc.addr.port()}))
        .await;
    let e = c.recv_on("error").await;
    assert_eq!(e["type"], "error");
}
