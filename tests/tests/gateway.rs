//! The gateway end to end: real `aether-gateway` and `aether-workspace` processes, spoken to only
//! over sockets. Timers (idle stop, boot budget) are covered under paused time in the gateway's
//! unit tests; here they are checked for their wiring with short real settings, by polling state,
//! never by sleeping for it.

use aether_tests::client::{Api, Ended, Session};
use aether_tests::{Gateway, GatewayOptions, TEST_SECRET, token, token_with};
use anyhow::Result;
use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use protocol::WorkspaceStatus;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn opts(args: &[&str]) -> GatewayOptions {
    GatewayOptions {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
    }
}

async fn gateway(args: &[&str]) -> Result<(Gateway, Api)> {
    let gw = Gateway::start(opts(args)).await?;
    let api = Api::new(gw.http_url(), token("alice"));
    Ok((gw, api))
}

/// A `Sec-WebSocket-Protocol` offer of a token.
fn subprotocol(marker: &str, token: &str) -> String {
    format!("{marker}, {token}")
}

#[tokio::test]
async fn every_token_carrier_is_accepted_and_the_token_is_never_echoed() -> Result<()> {
    let (gw, api) = gateway(&[]).await?;
    let id = api.create(json!({})).await?;
    let url = format!("{}?start=false", gw.ws_url(&id));
    let t = token("alice");

    for marker in ["Bearer", "access_token"] {
        let mut s = Session::connect(
            &url,
            &[("sec-websocket-protocol", &subprotocol(marker, &t))],
        )
        .await?;
        let echoed = s.response.headers()["sec-websocket-protocol"].to_str()?;
        assert_eq!(echoed, marker);
        let status = s.recv().await?;
        assert_eq!(status["status"], "stopped");
    }
    let mut s = Session::connect(&format!("{url}&token={t}"), &[]).await?;
    assert_eq!(s.recv().await?["type"], "status");
    let mut s = Session::bearer(&url, &t).await?;
    assert_eq!(s.recv().await?["type"], "status");
    assert!(s.response.headers().get("sec-websocket-protocol").is_none());
    // `start=false` on a stopped workspace: reported, then closed with 4009.
    let (ended, seen) = s.closed().await?;
    assert_eq!(ended, Ended::Closed(4009));
    assert_eq!(seen[0]["code"], "stopped");
    Ok(())
}

#[tokio::test]
async fn bad_tokens_origins_and_strangers_are_refused_before_the_upgrade() -> Result<()> {
    let (gw, api) = gateway(&[]).await?;
    let id = api.create(json!({})).await?;
    let url = gw.ws_url(&id);
    let auth = |t: &str| format!("Bearer {t}");

    // 401 for every kind of bad token, with the documented body.
    let expired = token_with("alice", -3600, TEST_SECRET);
    let wrong_key = token_with("alice", 3600, "another-secret-another-secret-0000");
    let none_alg = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let claims = b64.encode(
            json!({"sub":"alice","aud":"authenticated","exp": 4_000_000_000u64}).to_string(),
        );
        format!("{header}.{claims}.")
    };
    let hs384 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
        &json!({"sub":"alice","aud":"authenticated","exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(TEST_SECRET.as_bytes())?,
    )?;
    for bad in [
        None,
        Some("not-a-jwt".to_owned()),
        Some(expired),
        Some(wrong_key),
        Some(none_alg),
        Some(hs384),
    ] {
        let headers = bad.as_ref().map(|t| auth(t));
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|h| ("authorization", h.as_str()))
            .collect();
        let (status, body) = Session::refused(&url, &headers).await?;
        assert_eq!(status, 401, "{bad:?}");
        assert_eq!(
            serde_json::from_str::<Value>(&body)?,
            json!({"error":"Unauthorized"})
        );
        assert!(bad.is_none_or(|t| !body.contains(&t)));
    }

    // 403 for a browser page of another origin; the gateway's own origin is fine.
    let alice = auth(&token("alice"));
    let (status, _) = Session::refused(
        &url,
        &[
            ("authorization", &alice),
            ("origin", "https://evil.example.com"),
        ],
    )
    .await?;
    assert_eq!(status, 403);
    let own = format!("http://{}", gw.proc.addr);
    let mut s = Session::connect(
        &format!("{url}?start=false"),
        &[("authorization", &alice), ("origin", &own)],
    )
    .await?;
    assert_eq!(s.recv().await?["type"], "status");

    // 404 for someone else's workspace and for one that does not exist.
    let bob = auth(&token("bob"));
    let (status, _) = Session::refused(&url, &[("authorization", &bob)]).await?;
    assert_eq!(status, 404);
    let missing = gw.ws_url(&uuid::Uuid::new_v4().to_string());
    let (status, _) = Session::refused(&missing, &[("authorization", &alice)]).await?;
    assert_eq!(status, 404);

    // Metrics count refusals by reason, with no ids or tokens in them.
    let text = reqwest::get(format!("{}/metrics", gw.http_url()))
        .await?
        .text()
        .await?;
    assert!(
        text.contains(r#"aether_gateway_auth_failures_total{reason="expired"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"reason="missing""#));
    assert!(!text.contains(&id));
    Ok(())
}

#[tokio::test]
async fn rest_api_is_aether_compatible() -> Result<()> {
    let (gw, api) = gateway(&[]).await?;
    let bob = Api::new(gw.http_url(), token("bob"));
    let anonymous = Api::new(gw.http_url(), "");

    let id = api
        .create(json!({"hardware": {"cpus": 4, "memory_mb": 4096}, "keep_active": true}))
        .await?;
    let ws = api.get(&id).await?;
    assert_eq!(ws["hardware"]["cpus"], 4);
    assert_eq!(ws["hardware"]["cpu_kind"], "shared");
    assert_eq!(ws["keep_active"], true);

    let (status, body) = anonymous.call(Method::GET, "/workspaces", None).await?;
    assert_eq!((status, body), (401, json!({"error":"Unauthorized"})));
    let (status, _) = bob
        .call(Method::GET, &format!("/workspaces/{id}"), None)
        .await?;
    assert_eq!(status, 404);
    let (_, list) = bob.call(Method::GET, "/workspaces", None).await?;
    assert_eq!(list, json!({"workspaces": []}));

    let project = uuid::Uuid::new_v4();
    let (status, body) = api
        .call(
            Method::POST,
            &format!("/projects/{project}/workspaces"),
            Some(json!({"hardware": {"cpus": 99}})),
        )
        .await?;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("cpus"), "{body}");

    let (status, body) = api
        .call(
            Method::PATCH,
            &format!("/workspaces/{id}"),
            Some(json!({"keep_active": false, "memory_mb": 8192})),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["keep_active"], false);
    assert_eq!(body["hardware"]["memory_mb"], 8192);

    let (status, body) = api
        .call(Method::POST, &format!("/workspaces/{id}/stop"), None)
        .await?;
    assert_eq!((status, body["error"].as_str().is_some()), (400, true));
    let (status, body) = api
        .call(Method::POST, &format!("/workspaces/{id}/start"), None)
        .await?;
    assert_eq!((status, body), (200, json!({"status":"starting"})));
    api.wait_status(&id, WorkspaceStatus::Running).await?;
    let (status, _) = api
        .call(Method::POST, &format!("/workspaces/{id}/start"), None)
        .await?;
    assert_eq!(status, 400);
    let (_, running) = api
        .call(Method::GET, "/workspaces?status=running", None)
        .await?;
    assert_eq!(running["workspaces"].as_array().unwrap().len(), 1);
    let (_, stopped) = api
        .call(Method::GET, "/workspaces?status=stopped", None)
        .await?;
    assert_eq!(stopped["workspaces"], json!([]));
    let (status, _) = api
        .call(Method::GET, "/workspaces?status=sleeping", None)
        .await?;
    assert_eq!(status, 400);

    let (status, body) = api
        .call(Method::POST, &format!("/workspaces/{id}/stop"), None)
        .await?;
    assert_eq!((status, body), (200, json!({"status":"stopping"})));
    api.wait_status(&id, WorkspaceStatus::Stopped).await?;

    let (status, _) = bob
        .call(Method::DELETE, &format!("/workspaces/{id}"), None)
        .await?;
    assert_eq!(status, 404);
    let (status, _) = api
        .call(Method::DELETE, &format!("/workspaces/{id}"), None)
        .await?;
    assert_eq!(status, 204);
    let (status, _) = api
        .call(Method::GET, &format!("/workspaces/{id}"), None)
        .await?;
    assert_eq!(status, 404);
    let (status, body) = api.call(Method::GET, "/no/such/route", None).await?;
    assert_eq!((status, body), (404, json!({"error":"not found"})));
    Ok(())
}

#[tokio::test]
async fn connect_wakes_a_stopped_workspace_and_streams_each_state() -> Result<()> {
    let (gw, api) = gateway(&["--local-boot-delay", "500ms"]).await?;
    let id = api.create(json!({})).await?;
    let mut s = Session::bearer(&gw.ws_url(&id), &token("alice")).await?;
    // Sent while the workspace wakes: held, then delivered in order.
    s.send(json!({"channel":"terminal","type":"create","sessionId":"t1"}))
        .await?;
    s.send(
        json!({"channel":"terminal","type":"input","sessionId":"t1","data":"echo he$((1+1))llo\n"}),
    )
    .await?;
    let statuses = s.until_running().await?;
    assert_eq!(statuses, ["stopped", "starting", "running"]);
    let output = s.read_terminal("t1", "he2llo").await?;
    assert!(output.contains("he2llo"));
    assert_eq!(api.get(&id).await?["active_connections"], 1);
    assert_eq!(
        api.metric("aether_gateway_workspace_starts_total").await?,
        1.0
    );
    Ok(())
}

#[tokio::test]
async fn fifty_concurrent_connects_start_the_workspace_once() -> Result<()> {
    let (gw, api) = gateway(&["--local-boot-delay", "1s"]).await?;
    let id = api.create(json!({})).await?;
    let url = gw.ws_url(&id);
    let t = token("alice");
    let sessions = join_all((0..50).map(|_| {
        let url = url.clone();
        let t = t.clone();
        async move {
            let mut s = Session::bearer(&url, &t).await?;
            let statuses = s.until_running().await?;
            anyhow::Ok((s, statuses))
        }
    }))
    .await;
    let mut sessions: Vec<Session> = sessions
        .into_iter()
        .map(|r| {
            let (s, statuses) = r.expect("session");
            assert_eq!(statuses.last().map(String::as_str), Some("running"));
            s
        })
        .collect();
    assert_eq!(
        api.metric("aether_gateway_workspace_starts_total").await?,
        1.0
    );
    assert_eq!(api.get(&id).await?["active_connections"], 50);
    // Every one of them relays.
    for (i, s) in sessions.iter_mut().enumerate() {
        assert_eq!(s.ping(i as u64).await?["seq"], i);
    }
    Ok(())
}

#[tokio::test]
async fn a_workspace_that_cannot_start_ends_the_wait_with_4500() -> Result<()> {
    let gw = Gateway::start(GatewayOptions {
        args: Vec::new(),
        env: vec![("AETHER_GATEWAY_WORKSPACE_BIN".into(), "/bin/false".into())],
    })
    .await?;
    let api = Api::new(gw.http_url(), token("alice"));
    let id = api.create(json!({})).await?;
    let mut s = Session::bearer(&gw.ws_url(&id), &token("alice")).await?;
    let (ended, seen) = s.closed().await?;
    assert_eq!(ended, Ended::Closed(4500));
    let error = seen
        .iter()
        .find(|v| v["type"] == "error")
        .expect("an error message");
    assert_eq!(error["code"], "start_failed");
    assert!(!error["message"].as_str().unwrap().is_empty());
    let ws = api.wait_status(&id, WorkspaceStatus::Error).await?;
    assert!(ws["error_message"].is_string());
    Ok(())
}

#[tokio::test]
async fn a_boot_over_budget_ends_the_wait_with_4504() -> Result<()> {
    let (gw, api) = gateway(&["--local-boot-delay", "60s", "--boot-timeout", "1s"]).await?;
    let id = api.create(json!({})).await?;
    let mut s = Session::bearer(&gw.ws_url(&id), &token("alice")).await?;
    let (ended, seen) = s.closed().await?;
    assert_eq!(ended, Ended::Closed(4504));
    let statuses: Vec<&str> = seen
        .iter()
        .filter(|v| v["type"] == "status")
        .filter_map(|v| v["status"].as_str())
        .collect();
    assert_eq!(statuses, ["stopped", "starting", "error"]);
    assert_eq!(seen.last().unwrap()["code"], "start_timeout");
    Ok(())
}

#[tokio::test]
async fn a_connect_during_stopping_waits_and_wakes_it_again() -> Result<()> {
    let (gw, api) = gateway(&[]).await?;
    let id = api.create(json!({})).await?;
    let mut first = Session::bearer(&gw.ws_url(&id), &token("alice")).await?;
    first.until_running().await?;
    let (status, _) = api
        .call(Method::POST, &format!("/workspaces/{id}/stop"), None)
        .await?;
    assert_eq!(status, 200);
    let mut second = Session::bearer(&gw.ws_url(&id), &token("alice")).await?;
    let statuses = second.until_running().await?;
    assert_eq!(statuses.last().unwrap(), "running");
    assert_eq!(second.ping(7).await?["seq"], 7);
    // The first session was told its workspace stopped.
    let (ended, _) = first.closed().await?;
    assert_eq!(ended, Ended::Closed(4009));
    assert_eq!(
        api.metric("aether_gateway_workspace_starts_total").await?,
        2.0
    );
    Ok(())
}

#[tokio::test]
async fn the_relay_keeps_order_limits_size_and_answers_bad_input() -> Result<()> {
    let (gw, api) = gateway(&[]).await?;
    let id = api.create(json!({})).await?;
    let url = gw.ws_url(&id);
    let mut s = Session::bearer(&url, &token("alice")).await?;
    s.until_running().await?;

    for seq in 0..200u64 {
        s.send(json!({"channel":"workspace","type":"ping","seq":seq,"data":"x".repeat(100)}))
            .await?;
    }
    for seq in 0..200u64 {
        let pong = s.until(|v| v["type"] == "pong").await?;
        assert_eq!(pong["seq"], seq, "pongs come back in order");
    }

    s.send_raw(Message::text("{not json")).await?;
    let error = s.recv().await?;
    assert_eq!(error["channel"], "error");
    assert!(error["error"].as_str().unwrap().contains("malformed JSON"));
    s.send(json!({"channel":"nope","type":"x","requestId":"r1"}))
        .await?;
    let error = s.recv().await?;
    assert_eq!(
        (error["channel"].as_str(), error["requestId"].as_str()),
        (Some("error"), Some("r1"))
    );
    s.send(json!({"channel":"terminal","type":"frobnicate"}))
        .await?;
    let error = s.until(|v| v["channel"] == "error").await?;
    assert!(error["error"].is_string());
    assert_eq!(s.ping(1000).await?["seq"], 1000, "the socket stays usable");

    s.send_raw(Message::binary(vec![1, 2, 3])).await?;
    assert_eq!(s.closed().await?.0, Ended::Closed(1003));

    let mut s = Session::bearer(&url, &token("alice")).await?;
    s.until_running().await?;
    let big = "x".repeat(protocol::MAX_MESSAGE_SIZE + 1);
    s.send(json!({"channel":"workspace","type":"ping","seq":1,"data":big}))
        .await?;
    assert_eq!(s.closed().await?.0, Ended::Closed(1009));
    Ok(())
}

/// Polls a metric until `check` accepts it (10 s at most).
async fn metric_until(
    api: &Api,
    name: &str,
    labels: &str,
    check: impl Fn(f64) -> bool,
) -> Result<f64> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let value = api.metric_where(name, labels).await?;
        if check(value) {
            return Ok(value);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{name}{{{labels}}} stayed at {value}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

const PARKED: &str = "aether_gateway_upstream_parked";
const UPSTREAMS: &str = "aether_gateway_upstream_connections_total";

#[tokio::test]
async fn a_service_connection_a_client_left_serves_the_next_client() -> Result<()> {
    // One serving thread: a parked connection serves only clients of the thread that parked it,
    // and which thread takes a new connection is the kernel's pick.
    let (gw, api) = gateway(&["--threads", "1"]).await?;
    let id = api.create(json!({})).await?;
    let url = gw.ws_url(&id);
    let mut s = Session::bearer(&url, &token("alice")).await?;
    s.until_running().await?;
    s.shell("t", "echo left-$((40+2))", "left-42").await?;
    s.close().await;
    metric_until(&api, PARKED, "", |n| n == 1.0).await?;

    // The next client gets the parked connection, clean: it works like a new one, the shell
    // the first client left is still there to resume, and the gateway's own messages are
    // refused.
    let mut s = Session::bearer(&url, &token("alice")).await?;
    s.until_running().await?;
    assert_eq!(s.ping(1).await?["seq"], 1);
    assert_eq!(api.metric_where(UPSTREAMS, r#"how="reused""#).await?, 1.0);
    assert_eq!(api.metric_where(UPSTREAMS, r#"how="opened""#).await?, 1.0);
    s.send(json!({"channel":"workspace","type":"release"}))
        .await?;
    let error = s.until(|v| v["channel"] == "error").await?;
    assert!(
        error["error"].as_str().unwrap().contains("release"),
        "{error}"
    );
    s.send(json!({"channel":"terminal","type":"create","sessionId":"t"}))
        .await?;
    s.read_terminal("t", "left-42").await?;
    s.close().await;
    metric_until(&api, PARKED, "", |n| n == 1.0).await?;

    // A parked connection to a service that has since stopped is never handed out.
    api.call(Method::POST, &format!("/workspaces/{id}/stop"), None)
        .await?;
    api.wait_status(&id, WorkspaceStatus::Stopped).await?;
    let mut s = Session::bearer(&url, &token("alice")).await?;
    s.until_running().await?;
    assert_eq!(s.ping(2).await?["seq"], 2);
    assert_eq!(api.metric_where(UPSTREAMS, r#"how="reused""#).await?, 1.0);
    assert_eq!(api.metric_where(UPSTREAMS, r#"how="opened""#).await?, 2.0);
    Ok(())
}

/// Finds the pid of the workspace service of `id` (its command line names the workspace).
fn workspace_pid(id: &str) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            (cmdline.contains("aether-workspace") && cmdline.contains(id)).then_some(pid)
        })
}

#[tokio::test]
async fn a_client_is_told_when_its_workspace_dies_or_stops() -> Result<()> {
    let (gw, api) = gateway(&[]).await?;
    let id = api.create(json!({})).await?;
    let mut s = Session::bearer(&gw.ws_url(&id), &token("alice")).await?;
    s.until_running().await?;
    let pid = workspace_pid(&id).expect("workspace service process");
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()?;
    let (ended, seen) = s.closed().await?;
    assert_eq!(ended, Ended::Closed(1011), "{seen:?}");
    assert!(
        seen.iter()
            .any(|v| v["type"] == "status" && v["status"] == "error"),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|v| v["type"] == "error" && v["code"] == "backend_lost")
    );

    // Reconnecting wakes it again; a user stop then closes the session with 4009.
    let mut s = Session::bearer(&gw.ws_url(&id), &token("alice")).await?;
    s.until_running().await?;
    api.call(Method::POST, &format!("/workspaces/{id}/stop"), None)
        .await?;
    let (ended, seen) = s.closed().await?;
    assert_eq!(ended, Ended::Closed(4009));
    assert!(
        seen.iter()
            .any(|v| v["type"] == "status"
                && (v["status"] == "stopping" || v["status"] == "stopped"))
    );
    Ok(())
}

#[tokio::test]
async fn idle_stop_counts_connections_but_not_observers() -> Result<()> {
    let (gw, api) = gateway(&["--idle-timeout", "1s"]).await?;
    let id = api.create(json!({})).await?;
    let mut s = Session::bearer(&gw.ws_url(&id), &token("alice")).await?;
    s.until_running().await?;
    let ws = api.get(&id).await?;
    assert_eq!(
        (
            ws["active_connections"].as_u64(),
            ws["idle_stop_at"].is_null()
        ),
        (Some(1), true)
    );

    // An observer sees the workspace but does not keep it awake.
    let observer_url = format!("{}?counts=false", gw.ws_url(&id));
    let mut observer = Session::bearer(&observer_url, &token("alice")).await?;
    observer.until_running().await?;
    assert_eq!(api.get(&id).await?["active_connections"], 1);
    s.close().await;
    let ws = api
        .wait_for(&id, |w| {
            w["status"] == "stopped" || w["idle_stop_at"].is_string()
        })
        .await?;
    assert_eq!(ws["active_connections"], 0);
    api.wait_status(&id, WorkspaceStatus::Stopped).await?;
    let (ended, _) = observer.closed().await?;
    assert_eq!(ended, Ended::Closed(4009));
    assert_eq!(
        api.metric("aether_gateway_workspace_stops_total").await?,
        1.0
    );

    // keep_active: never idle-stopped.
    api.call(
        Method::PATCH,
        &format!("/workspaces/{id}"),
        Some(json!({"keep_active": true})),
    )
    .await?;
    let mut s = Session::bearer(&gw.ws_url(&id), &token("alice")).await?;
    s.until_running().await?;
    s.close().await;
    let ws = api.wait_for(&id, |w| w["active_connections"] == 0).await?;
    assert!(ws["idle_stop_at"].is_null(), "{ws}");
    assert_eq!(ws["status"], "running");
    Ok(())
}

#[tokio::test]
async fn sigterm_drains_sessions_with_1012_and_a_restart_recovers_the_workspace() -> Result<()> {
    let (mut gw, api) = gateway(&[]).await?;
    let id = api.create(json!({})).await?;
    let mut s = Session::bearer(&gw.ws_url(&id), &token("alice")).await?;
    s.until_running().await?;
    s.send(json!({"channel":"terminal","type":"create","sessionId":"keep"}))
        .await?;
    s.send(json!({"channel":"terminal","type":"input","sessionId":"keep","data":"export MARK=survived\n"}))
        .await?;
    s.until(|v| v["type"] == "output").await?;

    let code = gw.proc.terminate().await?;
    assert_eq!(code, Some(0), "the gateway exits cleanly");
    let (ended, _) = s.closed().await?;
    assert_eq!(ended, Ended::Closed(1012));

    // A new gateway on the same data dir finds the workspace still running, without a start.
    let restarted = Gateway::start_in(gw.data_dir.path(), &GatewayOptions::default()).await?;
    let api = Api::new(format!("http://{}", restarted.addr), token("alice"));
    api.wait_status(&id, WorkspaceStatus::Running).await?;
    let url = format!("ws://{}/workspaces/{id}/ws", restarted.addr);
    let mut s = Session::bearer(&url, &token("alice")).await?;
    assert_eq!(s.until_running().await?, ["running"]);
    let output = s.shell("keep", "echo mark=$MARK", "mark=survived").await?;
    assert!(output.contains("mark=survived"));
    assert_eq!(
        api.metric("aether_gateway_workspace_starts_total").await?,
        0.0
    );
    Ok(())
}

#[tokio::test]
async fn the_query_route_and_health_endpoints_work() -> Result<()> {
    let (gw, api) = gateway(&[]).await?;
    let id = api.create(json!({})).await?;
    let url = format!("ws://{}/ws?workspace_id={id}", gw.proc.addr);
    let mut s = Session::bearer(&url, &token("alice")).await?;
    s.until_running().await?;
    assert_eq!(s.ping(3).await?["seq"], 3);
    let health = reqwest::get(format!("{}/healthz", gw.http_url())).await?;
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("{}/readyz", gw.http_url())).await?;
    assert_eq!(ready.status(), 200);
    let plain = reqwest::Client::new()
        .get(format!("{}/workspaces/{id}/ws", gw.http_url()))
        .bearer_auth(token("alice"))
        .send()
        .await?;
    assert_eq!(plain.status(), 426, "a plain GET on a WebSocket route");
    Ok(())
}

#[tokio::test]
async fn a_session_ends_with_4001_when_its_token_expires() -> Result<()> {
    let (gw, api) = gateway(&["--jwt-leeway", "0s"]).await?;
    let id = api.create(json!({})).await?;
    let short = token_with("alice", 2, TEST_SECRET);
    let mut s = Session::bearer(&gw.ws_url(&id), &short).await?;
    s.until_running().await?;
    let (ended, _) = s.closed().await?;
    assert_eq!(ended, Ended::Closed(4001));
    Ok(())
}

#[tokio::test]
async fn local_tokens_are_only_for_loopback_hosts_with_the_header() -> Result<()> {
    let (gw, _) = gateway(&[]).await?;
    let url = format!("{}/auth/local-token", gw.http_url());
    let client = reqwest::Client::new();
    let denied = client.post(&url).send().await?;
    assert_eq!(denied.status(), 403, "no header");
    let rebound = client
        .post(&url)
        .header("x-aether-local-token", "1")
        .header("host", "evil.example.com")
        .send()
        .await?;
    assert_eq!(rebound.status(), 403, "a rebound DNS name");
    let ok = client
        .post(&url)
        .header("x-aether-local-token", "1")
        .send()
        .await?;
    assert_eq!(ok.status(), 200);
    let body: Value = ok.json().await?;
    let api = Api::new(gw.http_url(), body["token"].as_str().unwrap());
    let (status, _) = api.call(Method::GET, "/workspaces", None).await?;
    assert_eq!(status, 200);
    assert_eq!(body["user"], "local");
    Ok(())
}

#[tokio::test]
async fn a_file_read_larger_than_the_client_limit_is_relayed_whole() -> Result<()> {
    let (gw, api) = gateway(&[]).await?;
    let id = api.create(json!({})).await?;
    let mut s = Session::bearer(&gw.ws_url(&id), &token("alice")).await?;
    s.until_running().await?;
    // 3 MiB of text, three times what a client may send in one message, put in the volume.
    let content = "0123456789abcdef".repeat(3 << 16);
    let volume = gw.data_dir.path().join("volumes").join(&id);
    std::fs::write(volume.join("big.txt"), &content)?;
    s.send(json!({"channel":"files","type":"read","requestId":"r","path":"big.txt"}))
        .await?;
    let read = s.until(|v| v["requestId"] == "r").await?;
    assert_eq!(
        read["data"]["content"].as_str().map(str::len),
        Some(content.len())
    );
    Ok(())
}

#[tokio::test]
async fn with_a_certificate_the_gateway_serves_https() -> Result<()> {
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/tests/fixtures");
    let cert = fixtures.join("tls-cert.pem");
    let key = fixtures.join("tls-key.pem");
    let gw = Gateway::start(opts(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]))
    .await?;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&cert)?)?)
        .build()?;
    let https = format!("https://localhost:{}", gw.proc.addr.port());
    let response = client
        .get(format!("{https}/workspaces"))
        .bearer_auth(token("alice"))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await?, json!({"workspaces": []}));
    // Plain HTTP on the TLS port is not served.
    assert!(
        reqwest::get(format!("{}/healthz", gw.http_url()))
            .await
            .is_err()
    );

    // A session over TLS: the 101 and the first status leave in one write there too.
    let created = client
        .post(format!(
            "{https}/projects/{}/workspaces",
            uuid::Uuid::new_v4()
        ))
        .bearer_auth(token("alice"))
        .json(&json!({}))
        .send()
        .await?;
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await?["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ws = wss_session(&cert, gw.proc.addr.port(), &id).await?;
    let mut statuses = Vec::new();
    while statuses.last().map(String::as_str) != Some("running") {
        let frame = next_text(&mut ws).await?;
        if frame["type"] == "status" {
            statuses.push(frame["status"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(statuses.first().map(String::as_str), Some("stopped"));
    ws.send(Message::text(
        json!({"channel":"workspace","type":"ping","seq":7}).to_string(),
    ))
    .await?;
    loop {
        let frame = next_text(&mut ws).await?;
        if frame["type"] == "pong" {
            assert_eq!(frame["seq"], 7);
            break;
        }
    }
    Ok(())
}

type TlsSession =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A WebSocket session to `wss://localhost:{port}`, trusting the fixture certificate.
async fn wss_session(cert: &std::path::Path, port: u16, id: &str) -> Result<TlsSession> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(cert)?)) {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let tls = connector.connect(name, tcp).await?;
    let mut request = format!("wss://localhost:{port}/workspaces/{id}/ws").into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token("alice")).parse()?,
    );
    let (ws, _) = tokio_tungstenite::client_async(request, tls).await?;
    Ok(ws)
}

/// The next text frame, as JSON, within the tests' usual wait.
async fn next_text(ws: &mut TlsSession) -> Result<Value> {
    loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(30), ws.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the session ended"))??;
        if let Message::Text(text) = frame {
            return Ok(serde_json::from_str(&text)?);
        }
    }
}
