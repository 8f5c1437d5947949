//! Small clients for end-to-end tests: the REST API and WebSocket sessions of a gateway.
//!
//! Every wait is bounded by [`WAIT`], so a broken gateway fails a test instead of hanging it.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use protocol::WorkspaceStatus;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The longest any single wait of a test may take.
pub const WAIT: Duration = Duration::from_secs(60);

/// The REST API of a gateway, as one user.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: String,
    client: reqwest::Client,
}

impl Api {
    pub fn new(base: impl Into<String>, token: impl Into<String>) -> Api {
        Api {
            base: base.into(),
            token: token.into(),
            client: reqwest::Client::new(),
        }
    }

    /// Any call; returns the status and the JSON body (`Value::Null` when empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = tokio::time::timeout(WAIT, request.send()).await??;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| format!("body {text:?}"))?
        };
        Ok((status, value))
    }

    /// Creates a workspace and waits until it is `stopped`; returns its id.
    pub async fn create(&self, body: Value) -> Result<String> {
        let project = uuid::Uuid::new_v4();
        let (status, ws) = self
            .call(
                reqwest::Method::POST,
                &format!("/projects/{project}/workspaces"),
                Some(body),
            )
            .await?;
        if status != 201 {
            bail!("create answered {status}: {ws}");
        }
        let id = ws["id"].as_str().context("id")?.to_owned();
        self.wait_status(&id, WorkspaceStatus::Stopped).await?;
        Ok(id)
    }

    pub async fn get(&self, id: &str) -> Result<Value> {
        let (status, body) = self
            .call(reqwest::Method::GET, &format!("/workspaces/{id}"), None)
            .await?;
        if status != 200 {
            bail!("get answered {status}: {body}");
        }
        Ok(body)
    }

    /// Polls the workspace until it reports `status` (bounded by [`WAIT`]).
    pub async fn wait_status(&self, id: &str, status: WorkspaceStatus) -> Result<Value> {
        self.wait_for(id, |w| w["status"] == status.as_str())
            .await
            .with_context(|| format!("waiting for {status}"))
    }

    /// Polls the workspace until `check` holds (bounded by [`WAIT`]).
    pub async fn wait_for(&self, id: &str, check: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let workspace = self.get(id).await?;
            if check(&workspace) {
                return Ok(workspace);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("timed out; last {workspace}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The value of a metric line (summing every label set of it).
    pub async fn metric(&self, name: &str) -> Result<f64> {
        self.metric_where(name, "").await
    }

    /// The value of a metric, summed over its label sets that contain `labels` (e.g.
    /// `how="reused"`; empty for all).
    pub async fn metric_where(&self, name: &str, labels: &str) -> Result<f64> {
        let text = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter(|l| l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }
}

/// A WebSocket session with a gateway (or a workspace service).
pub struct Session {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The handshake response (headers such as the echoed subprotocol).
    pub response: Response<Option<Vec<u8>>>,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Closed(u16),
    /// The connection ended without a close frame.
    Dropped,
}

impl Session {
    /// Connects with extra headers.
    pub async fn connect(url: &str, headers: &[(&str, &str)]) -> Result<Session> {
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            request.headers_mut().insert(
                HeaderName::from_bytes(name.as_bytes())?,
                HeaderValue::from_str(value)?,
            );
        }
        let (ws, response) =
            tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await??;
        Ok(Session { ws, response })
    }

    /// Connects with `Authorization: Bearer <token>`.
    pub async fn bearer(url: &str, token: &str) -> Result<Session> {
        Session::connect(url, &[("authorization", &format!("Bearer {token}"))]).await
    }

    /// Tries to connect and returns the HTTP status of a refused handshake.
    pub async fn refused(url: &str, headers: &[(&str, &str)]) -> Result<(u16, String)> {
        match Session::connect(url, headers).await {
            Ok(_) => bail!("handshake to {url} was accepted"),
            Err(err) => match err.downcast::<WsError>() {
                Ok(WsError::Http(response)) => {
                    let body = response
                        .body()
                        .as_ref()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_default();
                    Ok((response.status().as_u16(), body))
                }
                Ok(other) => Err(anyhow!("handshake failed: {other}")),
                Err(other) => Err(other),
            },
        }
    }

    pub async fn send(&mut self, value: Value) -> Result<()> {
        self.ws.send(Message::text(value.to_string())).await?;
        Ok(())
    }

    pub async fn send_raw(&mut self, message: Message) -> Result<()> {
        self.ws.send(message).await?;
        Ok(())
    }

    /// The next JSON message; errors if the session ends first.
    pub async fn recv(&mut self) -> Result<Value> {
        match self.next().await? {
            Ok(value) => Ok(value),
            Err(ended) => bail!("session ended: {ended:?}"),
        }
    }

    /// The next JSON message, or how the session ended.
    pub async fn next(&mut self) -> Result<std::result::Result<Value, Ended>> {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .context("no message in time")?;
            match frame {
                Some(Ok(Message::Text(text))) => return Ok(Ok(serde_json::from_str(&text)?)),
                Some(Ok(Message::Close(frame))) => {
                    return Ok(Err(Ended::Closed(
                        frame.map(|f: CloseFrame| u16::from(f.code)).unwrap_or(1005),
                    )));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Ok(Err(Ended::Dropped)),
            }
        }
    }

    /// Skips messages until one matches; errors if the session ends first.
    pub async fn until(&mut self, check: impl Fn(&Value) -> bool) -> Result<Value> {
        loop {
            let value = self.recv().await?;
            if check(&value) {
                return Ok(value);
            }
        }
    }

    /// Reads until the session closes; returns the close code and the messages before it.
    pub async fn closed(&mut self) -> Result<(Ended, Vec<Value>)> {
        let mut seen = Vec::new();
        loop {
            match self.next().await? {
                Ok(value) => seen.push(value),
                Err(ended) => return Ok((ended, seen)),
            }
        }
    }

    /// Reads `workspace` status messages until `running`; returns the statuses seen in order.
    pub async fn until_running(&mut self) -> Result<Vec<String>> {
        let mut statuses = Vec::new();
        loop {
            let value = self.recv().await?;
            if value["channel"] == "workspace" && value["type"] == "status" {
                let status = value["status"].as_str().unwrap_or_default().to_owned();
                statuses.push(status.clone());
                if status == "running" {
                    return Ok(statuses);
                }
            } else if value["channel"] == "workspace" && value["type"] == "error" {
                bail!("wake failed: {value}; statuses {statuses:?}");
            }
        }
    }

    /// A `workspace` ping through the gateway to the workspace service; returns the pong.
    pub async fn ping(&mut self, seq: u64) -> Result<Value> {
        self.send(json!({"channel":"workspace","type":"ping","seq":seq}))
            .await?;
        self.until(|v| v["type"] == "pong" && v["seq"] == seq).await
    }

    /// Runs `command` in a new terminal session and returns its output up to `marker`.
    pub async fn shell(&mut self, session: &str, command: &str, marker: &str) -> Result<String> {
        self.send(json!({"channel":"terminal","type":"create","sessionId":session}))
            .await?;
        self.send(json!({"channel":"terminal","type":"input","sessionId":session,"data":format!("{command}\n")}))
            .await?;
        self.read_terminal(session, marker).await
    }

    /// Collects terminal output of `session` until it contains `marker`.
    pub async fn read_terminal(&mut self, session: &str, marker: &str) -> Result<String> {
        let mut output = String::new();
        while !output.contains(marker) {
            let value = self.recv().await?;
            if value["channel"] == "terminal"
                && value["type"] == "output"
                && value["sessionId"] == session
            {
                output.push_str(value["data"].as_str().unwrap_or_default());
            }
        }
        Ok(output)
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}
