//! One WebSocket connection: read client frames, dispatch them to the channels, write the
//! socket's queue.
//!
//! A single task owns the socket. It waits on, in order of priority: shutdown (close 1001), the
//! slow-consumer signal (close 4008), the outgoing queue (written in batches, then flushed) and
//! the next client frame. Client frames are read only while the queue is under its bound, which is
//! the backpressure for replies. The `ping` → `pong` path is parsed without building a
//! [`ClientMessage`] and its reply is written straight to the socket, past the queue; the frames
//! already readable are handled as one burst, whose pongs go out with one flush.
//!
//! Bad input never ends the socket silently: a frame that does not parse gets an error frame (with
//! its `requestId` when it had one); a binary frame closes with 1003; a message over
//! [`protocol::MAX_MESSAGE_SIZE`] closes with 1009 (sent by us: tungstenite would just drop the
//! connection).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{FutureExt, SinkExt, StreamExt};
use protocol::control::{ControlClient, ControlServer};
use protocol::{ClientMessage, CloseCode, ServerMessage};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tracing::Instrument;

use crate::outbox::{Frame, Outbox, OutboxRx, encode, outbox};
use crate::state::State;

/// Frames written per batch before a flush.
const WRITE_BATCH: usize = 64;
/// Frames read per burst before the pongs they produced are flushed.
const READ_BATCH: usize = 64;
/// File operations one socket may have in flight.
const FILE_OPS_IN_FLIGHT: usize = 8;
/// How long a close handshake may take (the client must read what was queued before it).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// … and during shutdown, which is bounded as a whole.
const CLOSE_TIMEOUT_SHUTDOWN: Duration = Duration::from_secs(1);

/// How the loop ended.
enum End {
    /// Close with this code.
    Close(CloseCode),
    /// The client closed or the connection failed: nothing more to send.
    Gone,
}

/// Serves one upgraded connection until it ends.
pub(crate) async fn serve<S>(state: Arc<State>, ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let lease = state.socket_lease();
    let id = lease.id();
    let span = tracing::info_span!("socket", id);
    async move {
        tracing::debug!("connected");
        let (outbox, rx) = outbox(id, state.config.socket_queue_bytes);
        let mut conn = Connection {
            state: state.clone(),
            ws,
            outbox,
            rx,
            subscribed: false,
            attached: Vec::new(),
            file_ops: Arc::new(Semaphore::new(FILE_OPS_IN_FLIGHT)),
            scratch: BytesMut::new(),
            pongs_unflushed: false,
        };
        conn.attach();
        let end = conn.run().await;
        conn.detach();
        if let End::Close(code) = end {
            tracing::debug!(%code, "closing");
            conn.close(code).await;
        }
        tracing::debug!("disconnected");
        drop(lease);
    }
    .instrument(span)
    .await;
}

struct Connection<S> {
    state: Arc<State>,
    ws: WebSocketStream<S>,
    outbox: Outbox,
    rx: OutboxRx,
    /// Whether the socket receives the agent, ports and files events (from connect until a
    /// `release`, and again after an `attach`).
    subscribed: bool,
    /// Terminal sessions this socket attached to, to detach from when it goes.
    attached: Vec<String>,
    file_ops: Arc<Semaphore>,
    /// Where pongs are encoded.
    scratch: BytesMut,
    /// Pongs fed to the socket since its last flush.
    pongs_unflushed: bool,
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Subscribes the socket to the shared channels: snapshots first (ports, agent history),
    /// then live events, in order.
    fn attach(&mut self) {
        if std::mem::replace(&mut self.subscribed, true) {
            return;
        }
        self.state.agent.subscribe(&self.outbox);
        self.state.ports.subscribe(&self.outbox);
        self.state.files.subscribe(&self.outbox);
    }

    /// Forgets the socket's client: its subscriptions and its terminal attachments.
    fn detach(&mut self) {
        let id = self.outbox.id();
        if std::mem::take(&mut self.subscribed) {
            self.state.agent.unsubscribe(id);
            self.state.ports.unsubscribe(id);
            self.state.files.unsubscribe(id);
        }
        self.state.terminals.detach(id, &self.attached);
        self.attached.clear();
    }

    /// `release`: after this, nothing meant for the old client reaches the socket. File
    /// operations still running finish first (their replies are queued ahead of `released`).
    async fn release(&mut self) {
        self.detach();
        let all = FILE_OPS_IN_FLIGHT as u32;
        let _idle = self.file_ops.acquire_many(all).await;
        self.outbox
            .reply(encode(&ServerMessage::Workspace(ControlServer::Released)));
    }

    async fn run(&mut self) -> End {
        let shutdown = self.state.shutdown.clone();
        let slow = self.rx.slow().clone();
        loop {
            let can_read = self.outbox.has_room() && self.file_ops.available_permits() > 0;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return End::Close(CloseCode::GoingAway),
                _ = slow.cancelled() => return End::Close(CloseCode::TooSlow),
                frame = self.rx.recv() => {
                    let Some(frame) = frame else { return End::Gone };
                    if let Err(end) = self.write_batch(frame).await {
                        return end;
                    }
                }
                msg = self.ws.next(), if can_read => {
                    if let Err(end) = self.on_burst(msg).await {
                        return end;
                    }
                }
            }
        }
    }

    /// Writes `first` and whatever else is queued (up to a batch), then flushes; gives up if
    /// the service shuts down or the socket is found slow meanwhile.
    async fn write_batch(&mut self, first: Frame) -> Result<(), End> {
        let shutdown = self.state.shutdown.clone();
        let slow = self.rx.slow().clone();
        let write = async {
            let mut next = Some(first);
            let mut n = 0;
            while let Some(frame) = next {
                let len = frame.len();
                self.ws.feed(Message::Text(frame)).await?;
                self.rx.written(len);
                n += 1;
                next = if n < WRITE_BATCH {
                    self.rx.try_recv()
                } else {
                    None
                };
            }
            self.ws.flush().await
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => Err(End::Close(CloseCode::GoingAway)),
            _ = slow.cancelled() => Err(End::Close(CloseCode::TooSlow)),
            res = write => res.map_err(|e| {
                tracing::debug!(%e, "write failed");
                End::Gone
            }),
        }
    }

    /// Handles `first` and the frames already readable after it (up to a batch), then writes
    /// the pongs they produced with one flush: a burst of pings costs one write, not one each,
    /// and frames the burst queued go in the same write.
    async fn on_burst(&mut self, first: Option<Result<Message, WsError>>) -> Result<(), End> {
        self.on_message(first).await?;
        let mut n = 1;
        while n < READ_BATCH && self.outbox.has_room() && self.file_ops.available_permits() > 0 {
            // `next()` is cancel-safe: dropping it unfinished loses nothing.
            let Some(msg) = self.ws.next().now_or_never() else {
                break;
            };
            self.on_message(msg).await?;
            n += 1;
        }
        if !std::mem::take(&mut self.pongs_unflushed) {
            return Ok(());
        }
        // What the burst queued for the client (an `attach`'s snapshots, replies) goes out with
        // its pongs: one write, not two.
        if let Some(frame) = self.rx.try_recv() {
            return self.write_batch(frame).await;
        }
        let shutdown = self.state.shutdown.clone();
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => Err(End::Close(CloseCode::GoingAway)),
            res = self.ws.flush() => res.map_err(|_| End::Gone),
        }
    }

    /// Queues a pong straight on the socket, past the outbox; [`Self::on_burst`] flushes it.
    async fn feed_pong(&mut self, frame: Frame) -> Result<(), End> {
        self.pongs_unflushed = true;
        self.ws
            .feed(Message::Text(frame))
            .await
            .map_err(|_| End::Gone)
    }

    async fn on_message(&mut self, msg: Option<Result<Message, WsError>>) -> Result<(), End> {
        match msg {
            None => Err(End::Gone),
            Some(Ok(Message::Text(text))) => self.on_text(text).await,
            Some(Ok(Message::Binary(_))) => Err(End::Close(CloseCode::Unsupported)),
            // Pings are answered by tungstenite; a close is echoed by it and then the stream ends.
            Some(Ok(
                Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_),
            )) => Ok(()),
            Some(Err(WsError::Capacity(e))) => {
                tracing::debug!(%e, "message too big");
                Err(End::Close(CloseCode::TooBig))
            }
            Some(Err(e)) => {
                tracing::debug!(%e, "read failed");
                Err(End::Gone)
            }
        }
    }

    async fn on_text(&mut self, text: Utf8Bytes) -> Result<(), End> {
        if let Some(pong) = fast_pong(text.as_str(), &mut self.scratch) {
            return self.feed_pong(pong).await;
        }
        let msg = match ClientMessage::parse(text.as_str()) {
            Ok(msg) => msg,
            Err(err) => {
                self.outbox.reply(encode(&err.to_frame()));
                return Ok(());
            }
        };
        self.dispatch(msg).await;
        Ok(())
    }

    async fn dispatch(&mut self, msg: ClientMessage) {
        let state = &self.state;
        let error = match msg {
            ClientMessage::Workspace(ControlClient::Hello { .. }) => None,
            ClientMessage::Workspace(ControlClient::Release) => {
                self.release().await;
                None
            }
            ClientMessage::Workspace(ControlClient::Attach) => {
                self.attach();
                None
            }
            ClientMessage::Workspace(ControlClient::Ping { seq, data }) => {
                // Only reached when the fast path declined (it handles every well-formed ping).
                self.outbox
                    .reply(pong_frame(&mut BytesMut::new(), seq, data.as_deref()));
                None
            }
            ClientMessage::Terminal(msg) => state
                .terminals
                .handle(msg, &self.outbox, &mut self.attached)
                .err()
                .map(|e| e.to_string()),
            ClientMessage::Agent(msg) => state
                .agent
                .handle(msg, &self.outbox)
                .err()
                .map(|e| e.to_string()),
            ClientMessage::Ports(msg) => state.ports.handle(msg).err().map(|e| e.to_string()),
            ClientMessage::Files(msg) => {
                let Ok(permit) = self.file_ops.clone().try_acquire_owned() else {
                    // `run` reads only while a permit is free, and only this task takes them.
                    unreachable!("a file-op permit is always free when a frame is read");
                };
                let files = state.files.clone();
                let outbox = self.outbox.clone();
                state.tracker.spawn(async move {
                    let reply = files.handle(msg).await;
                    outbox.reply(encode(&reply));
                    drop(permit);
                });
                None
            }
            ClientMessage::Config(fields) => {
                let request_id = fields
                    .get("requestId")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned);
                self.outbox.reply(encode(&ServerMessage::error(
                    "the config channel is not supported by this workspace",
                    request_id,
                )));
                None
            }
        };
        if let Some(error) = error {
            self.outbox
                .reply(encode(&ServerMessage::error(error, None)));
        }
    }

    /// Sends a close frame after whatever is queued, and waits (bounded) for the client's.
    async fn close(&mut self, code: CloseCode) {
        let timeout = if code == CloseCode::GoingAway {
            CLOSE_TIMEOUT_SHUTDOWN
        } else {
            CLOSE_TIMEOUT
        };
        let shutdown = self.state.shutdown.clone();
        let frame = CloseFrame {
            code: code.code().into(),
            reason: code.reason().into(),
        };
        let handshake = async {
            if code != CloseCode::TooSlow {
                // Deliver what is queued (error replies, `close` of terminals) before closing.
                while let Some(frame) = self.rx.try_recv() {
                    if self.ws.feed(Message::Text(frame)).await.is_err() {
                        return;
                    }
                }
            }
            if self.ws.close(Some(frame)).await.is_err() {
                return;
            }
            // Read until the client's close (or anything ends the stream).
            while let Some(Ok(_)) = self.ws.next().await {}
        };
        tokio::select! {
            _ = tokio::time::timeout(timeout, handshake) => {}
            _ = shutdown.cancelled(), if code != CloseCode::GoingAway => {}
        }
    }
}

/// A `workspace`/`ping` frame, read without building a [`ClientMessage`].
#[derive(Deserialize)]
struct PingPeek<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    seq: Option<u64>,
    #[serde(default, borrow)]
    data: Option<Cow<'a, str>>,
}

/// The reply to `ping`, serialized exactly as `ServerMessage::Workspace(ControlServer::Pong)`.
#[derive(Serialize)]
struct PongOut<'a> {
    channel: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a str>,
}

/// Encodes a pong into `scratch` and splits it off. Once the frame has been written and dropped,
/// the next `reserve` reclaims the same allocation: the steady-state ping path allocates nothing.
fn pong_frame(scratch: &mut BytesMut, seq: u64, data: Option<&str>) -> Frame {
    use bytes::BufMut;
    let out = PongOut {
        channel: "workspace",
        kind: "pong",
        seq,
        data,
    };
    scratch.clear();
    scratch.reserve(64 + data.map_or(0, str::len));
    serde_json::to_writer(scratch.writer(), &out).expect("pong always serializes");
    Utf8Bytes::try_from(scratch.split().freeze()).expect("serde_json writes UTF-8")
}

/// The pong for a well-formed ping, or `None` for anything else (which then takes the full path).
pub(crate) fn fast_pong(text: &str, scratch: &mut BytesMut) -> Option<Frame> {
    // Cheap pre-check so that other channels' frames skip this parse entirely.
    if !text.contains("\"ping\"") {
        return None;
    }
    let peek: PingPeek<'_> = serde_json::from_str(text).ok()?;
    if peek.channel != "workspace" || peek.kind != "ping" {
        return None;
    }
    Some(pong_frame(scratch, peek.seq?, peek.data.as_deref()))
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};

    use serde_json::{Value, json};
    use tokio::io::ReadBuf;
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;
    use crate::agent::{Agent, AgentConfig};
    use crate::config::Config;
    use crate::files::Files;
    use crate::ports::Ports;
    use crate::terminal::Terminals;

    /// The service's end of a socket, counting the writes it makes.
    struct Counted {
        io: tokio::io::DuplexStream,
        writes: Arc<AtomicUsize>,
    }

    impl AsyncRead for Counted {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counted {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let this = self.get_mut();
            this.writes.fetch_add(1, Ordering::Relaxed);
            Pin::new(&mut this.io).poll_write(cx, buf)
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().io).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
        }
    }

    type TestClient = WebSocketStream<tokio::io::DuplexStream>;

    async fn recv(client: &mut TestClient) -> Value {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), client.next())
                .await
                .expect("a frame in time")
                .expect("the socket is open")
                .expect("a frame");
            if let Message::Text(text) = frame {
                return serde_json::from_str(&text).unwrap();
            }
        }
    }

    #[tokio::test]
    async fn an_attach_and_a_ping_read_together_are_answered_in_one_write() {
        let volume = tempfile::tempdir().unwrap();
        let config = Config::new(volume.path());
        let files = Files::new(volume.path()).unwrap();
        // A listening port for the ports channel to report: an `attach` then has a snapshot.
        let _listening = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ports = Ports::new(0);
        let scan = ports.clone();
        tokio::task::spawn_blocking(move || scan.poll())
            .await
            .unwrap();
        let state = State::new(
            config.clone(),
            Terminals::new(
                volume.path().into(),
                config.shell.clone(),
                config.ring_bytes,
            ),
            Agent::new(AgentConfig {
                volume: volume.path().into(),
                command: None,
                history_bytes: config.agent_history_bytes,
                tasks_kept: config.agent_tasks_kept,
            }),
            ports.clone(),
            files,
        );
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let service = Counted {
            io: theirs,
            writes: writes.clone(),
        };
        tokio::spawn(async move {
            let ws = WebSocketStream::from_raw_socket(
                service,
                Role::Server,
                Some(crate::server::ws_config()),
            )
            .await;
            serve(state, ws).await;
        });
        let mut client = WebSocketStream::from_raw_socket(ours, Role::Client, None).await;

        client
            .send(Message::text(r#"{"channel":"workspace","type":"release"}"#))
            .await
            .unwrap();
        while recv(&mut client).await != json!({"channel":"workspace","type":"released"}) {}
        let before = writes.load(Ordering::Relaxed);

        // Both frames in one write from here, so the service reads them as one burst.
        client
            .feed(Message::text(r#"{"channel":"workspace","type":"attach"}"#))
            .await
            .unwrap();
        client
            .feed(Message::text(
                r#"{"channel":"workspace","type":"ping","seq":1}"#,
            ))
            .await
            .unwrap();
        client.flush().await.unwrap();
        let mut seen = Vec::new();
        while !seen.iter().any(|v: &Value| v["type"] == "pong") {
            seen.push(recv(&mut client).await);
        }
        // A second ping, alone, once the first is answered: the service writes whatever the
        // burst queued before it reads this, so its pong comes after all of it.
        client
            .send(Message::text(
                r#"{"channel":"workspace","type":"ping","seq":2}"#,
            ))
            .await
            .unwrap();
        loop {
            let v = recv(&mut client).await;
            if v["type"] == "pong" && v["seq"] == 2 {
                break;
            }
            seen.push(v);
        }
        assert!(
            seen.iter().any(|v| v["channel"] == "ports"),
            "the attach's snapshots: {seen:?}"
        );
        assert_eq!(
            writes.load(Ordering::Relaxed) - before,
            2,
            "one write for the burst (its pong and the snapshots), one for the second pong"
        );
    }

    #[test]
    fn fast_pong_matches_the_protocol_encoding() {
        for (ping, seq, data) in [
            (r#"{"channel":"workspace","type":"ping","seq":7}"#, 7, None),
            (
                r#"{"type":"ping","seq":1,"data":"a\"b\u00e9","channel":"workspace","x":[1]}"#,
                1,
                Some("a\"bé".to_owned()),
            ),
        ] {
            let fast = fast_pong(ping, &mut BytesMut::new()).expect("fast path taken");
            let expected = ServerMessage::Workspace(ControlServer::Pong { seq, data }).to_json();
            assert_eq!(fast.as_str(), expected);
        }
    }

    #[test]
    fn the_scratch_buffer_is_reused() {
        let mut scratch = BytesMut::new();
        let ping = r#"{"channel":"workspace","type":"ping","seq":1}"#;
        let first = fast_pong(ping, &mut scratch).unwrap();
        let addr = first.as_str().as_ptr();
        drop(first);
        let second = fast_pong(ping, &mut scratch).unwrap();
        assert_eq!(second.as_str().as_ptr(), addr, "no new allocation");
    }

    #[test]
    fn fast_pong_declines_anything_else() {
        assert!(
            fast_pong(
                r#"{"channel":"workspace","type":"hello"}"#,
                &mut BytesMut::new()
            )
            .is_none()
        );
        assert!(
            fast_pong(
                r#"{"channel":"terminal","type":"ping","seq":1}"#,
                &mut BytesMut::new()
            )
            .is_none()
        );
        assert!(
            fast_pong(
                r#"{"channel":"workspace","type":"ping"}"#,
                &mut BytesMut::new()
            )
            .is_none()
        );
        assert!(
            fast_pong(
                r#"{"channel":"workspace","type":"ping","seq":"x"}"#,
                &mut BytesMut::new()
            )
            .is_none()
        );
        assert!(fast_pong("not json \"ping\"", &mut BytesMut::new()).is_none());
    }
}
