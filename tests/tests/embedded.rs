//! The gateway embedded in another program: its router served by `axum::serve` instead of the
//! gateway's own server, as a program mounting it beside routes of its own would. The gateway's
//! server runs each session in the task of the connection it upgraded (a `SessionSlot`); a
//! router driven some other way has no slot, and its sessions must still run and be relayed.

use aether_tests::client::{Api, Session};
use aether_tests::{TEST_SECRET, bin_path, token};
use anyhow::Result;
use gateway::Gateway;
use gateway::auth::Secret;
use gateway::config::Config;
use serde_json::json;
use tokio::net::TcpListener;

/// Kills the workspace services the provider started, passed or not (they outlive it on purpose).
struct DataDir(tempfile::TempDir);

impl Drop for DataDir {
    fn drop(&mut self) {
        gateway::provider::local::kill_services_in(self.0.path());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_served_by_axum_wakes_and_relays() -> Result<()> {
    let dir = DataDir(tempfile::tempdir()?);
    let mut config = Config {
        data_dir: dir.0.path().to_path_buf(),
        ..Config::default()
    };
    config.local.workspace_bin = Some(bin_path("aether-workspace"));
    config.auth.jwt_secret = Some(Secret::new(TEST_SECRET));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let gateway = Gateway::build(&config, listener).await?;
    let router = gateway::router(gateway.app.clone());
    let server = tokio::spawn(async move { axum::serve(gateway.listener, router).await });

    let api = Api::new(format!("http://{addr}"), token("embedder"));
    let id = api.create(json!({})).await?;
    let mut s = Session::bearer(
        &format!("ws://{addr}/workspaces/{id}/ws"),
        &token("embedder"),
    )
    .await?;
    assert_eq!(
        s.until_running().await?.last().map(String::as_str),
        Some("running")
    );
    for seq in 0..3u64 {
        s.send(json!({"channel":"workspace","type":"ping","seq":seq}))
            .await?;
        let pong = s.until(|v| v["type"] == "pong").await?;
        assert_eq!(pong["seq"], seq);
    }
    server.abort();
    Ok(())
}
