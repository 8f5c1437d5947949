//! Test harness: starts the real `aether-workspace` binary on port 0 in a temporary volume, waits
//! for its `listening on` line (never a sleep), and talks to it over real WebSockets and HTTP.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single expectation may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// A running service in its own volume; killed on drop.
pub struct Service {
    pub child: Child,
    pub addr: SocketAddr,
    pub volume: tempfile::TempDir,
}

impl Service {
    /// Starts the service with extra flags.
    pub async fn start(args: &[&str]) -> Service {
        let volume = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aether-workspace"));
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--volume")
            .arg(volume.path())
            .args(args)
            .env(
                "AETHER_WORKSPACE_LOG",
                std::env::var("AETHER_WORKSPACE_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let (child, addr) = spawn_ready(cmd).await;
        Service {
            child,
            addr,
            volume,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn connect(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// `GET path`: (status code, JSON body).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        http_get(self.addr, path).await
    }

    pub async fn status(&self) -> Value {
        self.get("/status").await.1
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("kill");
    }
}

/// Spawns `cmd` (stdout piped) and waits for its readiness line.
pub async fn spawn_ready(mut cmd: Command) -> (Child, SocketAddr) {
    let mut child = cmd.spawn().expect("spawn aether-workspace");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("readiness line in time")
        .expect("read stdout")
        .expect("a readiness line before exit");
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("address");
    // Keep draining stdout so the child never blocks on it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// A raw HTTP/1.1 GET.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut buf))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8(buf).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("http response");
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let body = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, body)
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client with JSON helpers.
pub struct Client {
    pub ws: Ws,
    /// Frames read ahead (while syncing), handed out first by `recv`.
    pending: std::collections::VecDeque<Value>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .expect("websocket connect");
        Client {
            ws,
            pending: Default::default(),
        }
        .synced()
        .await
    }

    /// A ping round trip: once the pong is back, the server has subscribed this socket to
    /// every broadcast (its subscriptions come before it reads its first frame).
    async fn synced(mut self) -> Client {
        self.send(json!({"channel": "workspace", "type": "ping", "seq": u64::MAX}))
            .await;
        let mut early = std::collections::VecDeque::new();
        loop {
            let v = self.recv().await;
            if v["type"] == "pong" && v["seq"] == u64::MAX {
                break;
            }
            early.push_back(v);
        }
        self.pending = early;
        self
    }

    /// Connects with a tiny TCP receive buffer, so that a client that stops reading is felt
    /// by the server at once.
    pub async fn connect_small_buffer(addr: SocketAddr) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("rcvbuf");
        let stream = socket.connect(addr).await.expect("connect");
        let (ws, _) = tokio_tungstenite::client_async(
            format!("ws://{addr}/ws"),
            MaybeTlsStream::Plain(stream),
        )
        .await
        .expect("websocket handshake");
        Client {
            ws,
            pending: Default::default(),
        }
        .synced()
        .await
    }

    pub async fn send(&mut self, value: Value) {
        self.ws
            .send(Message::text(value.to_string()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send");
    }

    /// The next message of any kind.
    pub async fn next(&mut self) -> Option<Message> {
        tokio::time::timeout(WAIT, self.ws.next())
            .await
            .expect("a message in time")
            .map(|r| r.expect("websocket read"))
    }

    /// The next JSON text frame.
    pub async fn recv(&mut self) -> Value {
        if let Some(v) = self.pending.pop_front() {
            return v;
        }
        loop {
            match self.next().await {
                Some(Message::Text(t)) => return serde_json::from_str(t.as_str()).expect("JSON"),
                Some(Message::Close(f)) => panic!("closed: {f:?}"),
                Some(_) => continue,
                None => panic!("stream ended"),
            }
        }
    }

    /// The next JSON frame on `channel` (others — ports, file changes — are skipped).
    pub async fn recv_on(&mut self, channel: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["channel"] == channel {
                return v;
            }
        }
    }

    /// The first frame for which `pred` holds.
    pub async fn recv_until(&mut self, mut pred: impl FnMut(&Value) -> bool) -> Value {
        loop {
            let v = self.recv().await;
            if pred(&v) {
                return v;
            }
        }
    }

    /// Reads until the connection closes; returns the close frame, if one came.
    pub async fn expect_close(&mut self) -> Option<CloseFrame> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("close in time")
            {
                Some(Ok(Message::Close(f))) => return f,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    // ---- terminal helpers ----

    pub async fn create(&mut self, session: &str, extra: Value) -> Value {
        let mut msg = json!({"channel": "terminal", "type": "create", "sessionId": session});
        if let (Some(m), Some(e)) = (msg.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                m.insert(k.clone(), v.clone());
            }
        }
        self.send(msg).await;
        self.recv_until(|v| v["channel"] == "terminal" && v["type"] == "created")
            .await
    }

    pub async fn input(&mut self, session: &str, data: &str) {
        self.send(
            json!({"channel": "terminal", "type": "input", "sessionId": session, "data": data}),
        )
        .await;
    }

    /// Terminal output of `session` until the text contains `marker` (or the session closes).
    pub async fn output_until(&mut self, session: &str, marker: &str) -> Output {
        let mut out = Output::default();
        while !out.text.contains(marker) {
            let v = self.recv_on("terminal").await;
            if v["sessionId"] != session {
                continue;
            }
            if !out.absorb(&v) {
                panic!("session closed before {marker:?}; got {:?}", out.text);
            }
        }
        out
    }

    /// Terminal output of `session` until it closes; `Output::exit` is set.
    pub async fn output_until_close(&mut self, session: &str) -> Output {
        let mut out = Output::default();
        loop {
            let v = self.recv_on("terminal").await;
            if v["sessionId"] != session {
                continue;
            }
            if !out.absorb(&v) {
                return out;
            }
        }
    }
}

/// What a client saw of a session.
#[derive(Debug, Default)]
pub struct Output {
    pub text: String,
    /// `seq` of the last output frame.
    pub seq: Option<u64>,
    /// `seq - data.len()` of the first output frame.
    pub first_start: Option<u64>,
    pub lost: Option<u64>,
    /// `Some(exitCode)` once `close` came.
    pub exit: Option<Value>,
}

impl Output {
    /// Takes one terminal frame; false once the session closed. Checks seq continuity.
    pub fn absorb(&mut self, v: &Value) -> bool {
        match v["type"].as_str() {
            Some("output") => {
                let data = v["data"].as_str().expect("data");
                let seq = v["seq"].as_u64().expect("seq");
                let start = seq - data.len() as u64;
                if let Some(prev) = self.seq {
                    assert_eq!(start, prev, "output seq must be contiguous");
                } else {
                    self.first_start = Some(start);
                }
                self.seq = Some(seq);
                self.text.push_str(data);
                true
            }
            Some("lost") => {
                self.lost = Some(v["bytes"].as_u64().expect("bytes"));
                true
            }
            Some("close") => {
                self.exit = Some(v["exitCode"].clone());
                false
            }
            _ => true,
        }
    }
}
