//! The client's side of a session: its socket, keepalive, and how it ends.
//!
//! Reading goes through [`Client::next_event`], which turns tungstenite's frames and errors into
//! the few things a phase acts on; writing goes through [`Client::send`], which bounds every write
//! by the write timeout. Ending a session is always [`Client::close`] with a close code, so each
//! session is counted by its code in `/metrics`.

use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use protocol::control::ControlClient;
use protocol::{CloseCode, ServerMessage};
use std::pin::Pin;

use tokio::time::{Instant, Sleep, sleep_until};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use super::Settings;
use super::readahead::ReadAhead;
use crate::metrics::Metrics;

pub(super) type ClientStream = WebSocketStream<ReadAhead<TokioIo<Upgraded>>>;

/// What a read from the client produced.
pub(super) enum Event {
    /// A text frame that parsed as an Aether message (its tags were checked).
    Message(Utf8Bytes),
    /// A text frame that did not; the error frame to answer it with.
    Invalid(ServerMessage),
    /// The client closed, or its connection ended.
    Closed,
    /// The session must end with this code.
    Fatal(CloseCode),
    /// A control frame or keepalive tick: nothing to do.
    Nothing,
}

/// A client socket with its keepalive.
pub(super) struct Client {
    ws: ClientStream,
    /// One timer for both the next keepalive ping and the token's expiry, whichever is first.
    /// It is kept (not rebuilt per read) so waiting for a frame does not register a timer each
    /// time — the relay waits for a frame once per message.
    timer: Pin<Box<Sleep>>,
    ping_interval: Duration,
    next_ping: Instant,
    last_heard: Instant,
    pong_timeout: Duration,
    write_timeout: Duration,
    /// When the client's token expires: the session ends with 4001 then, so a revoked or
    /// expired credential does not keep a socket open forever.
    token_expiry: Instant,
}

impl Client {
    pub(super) fn new(ws: ClientStream, settings: &Settings, token_expiry: Instant) -> Client {
        let next_ping = Instant::now() + settings.ping_interval;
        Client {
            ws,
            timer: Box::pin(sleep_until(next_ping.min(token_expiry))),
            ping_interval: settings.ping_interval,
            next_ping,
            last_heard: Instant::now(),
            pong_timeout: settings.pong_timeout,
            write_timeout: settings.write_timeout,
            token_expiry,
        }
    }

    /// Waits for the next thing the client did, or for a keepalive tick. Cancel-safe.
    pub(super) async fn next_event(&mut self) -> Event {
        tokio::select! {
            frame = self.ws.next() => self.frame(frame),
            // Every 45 s at most: boxed, so the keepalive's write state is not part of every
            // idle session.
            () = self.timer.as_mut() => Box::pin(self.timer_fired()).await,
        }
    }

    async fn timer_fired(&mut self) -> Event {
        let now = Instant::now();
        if now >= self.token_expiry {
            tracing::debug!("token expired");
            return Event::Fatal(CloseCode::TokenExpired);
        }
        let event = if now >= self.next_ping {
            self.next_ping = now + self.ping_interval;
            self.keepalive().await
        } else {
            Event::Nothing
        };
        self.timer
            .as_mut()
            .reset(self.next_ping.min(self.token_expiry));
        event
    }

    /// The next client event if one can be had without waiting (already buffered or readable):
    /// what the relay uses to batch a burst. Keepalive is left to [`Client::next_event`].
    pub(super) fn ready_event(&mut self) -> Option<Event> {
        // `next()` on the stream is cancel-safe: dropping it unfinished loses nothing.
        let frame = self.ws.next().now_or_never()?;
        Some(self.frame(frame))
    }

    fn frame(&mut self, frame: Option<Result<Message, WsError>>) -> Event {
        self.last_heard = Instant::now();
        match frame {
            Some(Ok(Message::Text(text))) => match protocol::Peek::parse(&text) {
                // The messages that hand a service connection from one client to the next are
                // the gateway's own: a client sending one would detach itself behind our back.
                Ok(peek) if ControlClient::is_backend_only(&peek.channel, &peek.kind) => {
                    Event::Invalid(ServerMessage::error(
                        format!("unknown type {:?} on channel \"workspace\"", peek.kind),
                        None,
                    ))
                }
                Ok(_) => Event::Message(text),
                Err(err) => Event::Invalid(err.to_frame()),
            },
            Some(Ok(Message::Binary(_))) => Event::Fatal(CloseCode::Unsupported),
            // tungstenite answers pings by itself; pongs only prove the client is alive.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Event::Nothing,
            Some(Ok(Message::Close(_))) | None => Event::Closed,
            Some(Err(WsError::Capacity(_))) => Event::Fatal(CloseCode::TooBig),
            Some(Err(WsError::Utf8(_))) => Event::Fatal(CloseCode::Policy),
            Some(Err(err)) => {
                tracing::debug!(error = %err, "client connection ended");
                Event::Closed
            }
        }
    }

    async fn keepalive(&mut self) -> Event {
        if self.last_heard.elapsed() >= self.pong_timeout {
            tracing::debug!("client missed its pongs");
            return Event::Fatal(CloseCode::GoingAway);
        }
        match self.send_raw(Message::Ping(Default::default())).await {
            Ok(()) => Event::Nothing,
            Err(code) => Event::Fatal(code),
        }
    }

    /// Sends one protocol message.
    pub(super) async fn send(&mut self, message: &ServerMessage) -> Result<(), CloseCode> {
        self.send_raw(Message::text(message.to_json())).await
    }

    /// Sends one frame within the write timeout: a client that cannot take it in time is too
    /// slow (4008); a broken connection ends the session.
    pub(super) async fn send_raw(&mut self, message: Message) -> Result<(), CloseCode> {
        self.bounded(|ws| ws.send(message)).await
    }

    /// Queues one frame in the write buffer (written once the buffer fills or on
    /// [`Client::flush`]), within the write timeout.
    pub(super) async fn feed(&mut self, message: Message) -> Result<(), CloseCode> {
        self.bounded(|ws| ws.feed(message)).await
    }

    /// Writes out whatever is buffered, within the write timeout.
    pub(super) async fn flush(&mut self) -> Result<(), CloseCode> {
        self.bounded(|ws| ws.flush()).await
    }

    async fn bounded<'a, F>(
        &'a mut self,
        op: impl FnOnce(&'a mut ClientStream) -> F,
    ) -> Result<(), CloseCode>
    where
        F: std::future::Future<Output = Result<(), WsError>> + 'a,
    {
        match tokio::time::timeout(self.write_timeout, op(&mut self.ws)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "write to client failed");
                Err(CloseCode::GoingAway)
            }
            Err(_) => Err(CloseCode::TooSlow),
        }
    }

    /// Closes the session with `code` and counts it. Best effort: the client may be gone.
    pub(super) async fn close(mut self, code: CloseCode, metrics: &Metrics) {
        metrics.session_closed(code.code());
        let frame = CloseFrame {
            code: WsCloseCode::from(code.code()),
            reason: code.reason().into(),
        };
        let closing = async {
            let _ = self.ws.send(Message::Close(Some(frame))).await;
            // Give the client a moment to answer the close, so it sees a clean close rather
            // than a reset; never wait long for a client that does not.
            while let Some(Ok(msg)) = self.ws.next().await {
                if msg.is_close() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
    }
}
