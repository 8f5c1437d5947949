//! Connections to workspace services: opening them, and handing one whose client left to the
//! next client of the same workspace.
//!
//! Opening a connection costs a TCP connect and a WebSocket handshake at both ends, and closing
//! it a close handshake: for a short visit (`aether workspace ping`, a page reload, an agent
//! client that connects per task) more than the visit itself. So when a client leaves and its
//! service connection is healthy, the session asks the service to `release` it — detach the
//! client's terminals, drop its subscriptions, finish its file operations; everything queued for
//! the client comes before `released` and is discarded — and parks it in the [`Pool`]. The next
//! session to that workspace takes it, sends `attach` (the service subscribes it as it would a
//! new connection: snapshots first), and relays as usual.
//!
//! A parked connection is only handed out for the same endpoint, only if nothing arrived on it
//! meanwhile (a close, an error or an unexpected frame discard it), and for at most
//! [`MAX_PARKED_FOR`]; at most [`MAX_PARKED`] wait per workspace and serving thread, and a sweep
//! drops the stale ones of workspaces nobody visits any more. A connection is only handed to a
//! session on the thread that parked it (see [`crate::shards`]): its socket belongs to that
//! thread's event loop.

use std::time::Duration;

use dashmap::DashMap;
use futures_util::{FutureExt, SinkExt, StreamExt};
use prometheus_client::metrics::gauge::Gauge;
use protocol::WorkspaceStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use uuid::Uuid;

use super::Settings;
use super::readahead::ReadAhead;
use crate::metrics::Metrics;
use crate::provider::Endpoint;
use crate::registry::Handle;
use crate::shards;

pub(super) type Upstream = WebSocketStream<ReadAhead<TcpStream>>;

/// Parked connections per workspace: about the number of clients that reconnect at once.
const MAX_PARKED: usize = 16;
/// How long a connection may stay parked.
const MAX_PARKED_FOR: Duration = Duration::from_secs(30);
/// How long the service may take to answer `release` before the connection is closed instead.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often stale parked connections are dropped.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

const RELEASE: &str = r#"{"channel":"workspace","type":"release"}"#;
const ATTACH: &str = r#"{"channel":"workspace","type":"attach"}"#;

/// A released connection waiting for the next client.
struct Parked {
    url: String,
    since: Instant,
    ws: Upstream,
}

impl Parked {
    fn fresh(&self, now: Instant) -> bool {
        now.duration_since(self.since) < MAX_PARKED_FOR
    }
}

/// Released connections, by workspace and serving thread. No map guard is held across an
/// `.await`.
pub struct Pool {
    parked: DashMap<(Uuid, usize), Vec<Parked>>,
    /// `aether_gateway_upstream_parked`: kept equal to the number of parked connections.
    gauge: Gauge,
}

impl Pool {
    pub fn new(gauge: Gauge) -> Pool {
        Pool {
            parked: DashMap::new(),
            gauge,
        }
    }

    /// A connection to the workspace's service: a parked one if a good one waits, else a new one.
    pub(super) async fn open(
        &self,
        handle: &Handle,
        endpoint: &Endpoint,
        settings: &Settings,
        metrics: &Metrics,
    ) -> Result<Upstream, String> {
        let url = endpoint.ws_url();
        while let Some(mut ws) = self.take(handle.id(), shards::current(), &url) {
            // Fed, not flushed: the relay flushes it with the client's first frames.
            if ws.feed(Message::text(ATTACH)).await.is_ok() {
                metrics.upstream_used(true);
                return Ok(ws);
            }
        }
        let ws = {
            let _turn = handle.connect_permit().await;
            connect(&url, settings).await?
        };
        metrics.upstream_used(false);
        Ok(ws)
    }

    /// The newest parked connection for `url` that shard `shard` parked and that is still quiet;
    /// stale ones are dropped.
    fn take(&self, id: Uuid, shard: usize, url: &str) -> Option<Upstream> {
        let mut parked = self.parked.get_mut(&(id, shard))?;
        let now = Instant::now();
        while let Some(mut p) = parked.pop() {
            self.gauge.dec();
            if p.url == url && p.fresh(now) && quiet(&mut p.ws) {
                return Some(p.ws);
            }
        }
        None
    }

    /// Releases a connection whose client left and parks it, if the service answers `release`
    /// in time and the workspace still runs; otherwise the connection is dropped.
    pub(super) async fn recycle(&self, handle: &Handle, endpoint: &Endpoint, mut ws: Upstream) {
        let released = tokio::time::timeout(RELEASE_TIMEOUT, release(&mut ws)).await;
        if released != Ok(true) || handle.snapshot().status != WorkspaceStatus::Running {
            return;
        }
        self.park(handle.id(), shards::current(), endpoint.ws_url(), ws);
    }

    /// Parks a released connection, unless the workspace already has its fill.
    fn park(&self, id: Uuid, shard: usize, url: String, ws: Upstream) {
        let now = Instant::now();
        let mut parked = self.parked.entry((id, shard)).or_default();
        self.drop_stale(&mut parked, now);
        if parked.len() < MAX_PARKED {
            parked.push(Parked {
                url,
                since: now,
                ws,
            });
            self.gauge.inc();
        }
    }

    /// Drops the connections parked for too long.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.parked.retain(|_, parked| {
            self.drop_stale(parked, now);
            !parked.is_empty()
        });
    }

    /// Drops every parked connection (the gateway is shutting down).
    pub fn clear(&self) {
        self.parked.clear();
        self.gauge.set(0);
    }

    fn drop_stale(&self, parked: &mut Vec<Parked>, now: Instant) {
        let before = parked.len();
        parked.retain(|p| p.fresh(now));
        self.gauge.dec_by((before - parked.len()) as i64);
    }
}

/// Whether nothing but keepalive arrived on a parked connection: a close, an error, the end of
/// the stream or a frame nobody asked for all mean it cannot be handed out.
fn quiet(ws: &mut Upstream) -> bool {
    loop {
        match ws.next().now_or_never() {
            None => return true,
            // tungstenite answers pings itself.
            Some(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Some(_) => return false,
        }
    }
}

/// Sends `release` and reads (discarding what was meant for the old client) up to `released`.
async fn release(ws: &mut Upstream) -> bool {
    if ws.send(Message::text(RELEASE)).await.is_err() {
        return false;
    }
    while let Some(Ok(message)) = ws.next().await {
        if let Message::Text(text) = message
            && text.contains("\"released\"")
            && protocol::Peek::parse(&text)
                .is_ok_and(|p| p.channel == "workspace" && p.kind == "released")
        {
            return true;
        }
    }
    false
}

/// Attempts to reach a workspace service that was just reported running.
const CONNECT_ATTEMPTS: u32 = 4;

/// Connects to the workspace service, retrying briefly: a service reported running may still be
/// settling, and a recovered one may be reachable only after a moment.
async fn connect(url: &str, settings: &Settings) -> Result<Upstream, String> {
    let mut delay = Duration::from_millis(50);
    let mut last_error = String::new();
    for _ in 0..CONNECT_ATTEMPTS {
        match tokio::time::timeout(Duration::from_secs(10), connect_once(url, settings)).await {
            Ok(Ok(ws)) => return Ok(ws),
            Ok(Err(err)) => last_error = err,
            Err(_) => last_error = "connect timed out".into(),
        }
        tokio::time::sleep(delay).await;
        delay *= 4;
    }
    Err(last_error)
}

/// One connect and WebSocket handshake to a `ws://` URL, reading ahead underneath.
async fn connect_once(url: &str, settings: &Settings) -> Result<Upstream, String> {
    let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
    if parsed.scheme() != "ws" {
        // Workspace services are reached on the provider's private network; TLS to them is not
        // supported yet.
        return Err(format!("unsupported workspace endpoint scheme in {url}"));
    }
    let host = parsed.host_str().ok_or("endpoint has no host")?;
    let port = parsed
        .port_or_known_default()
        .ok_or("endpoint has no port")?;
    // `host_str` keeps an IPv6 address in brackets, which is what `host:port` parsing wants.
    let authority = format!("{host}:{port}");
    let mut tcp = TcpStream::connect(&authority)
        .await
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let leftover = upgrade(&mut tcp, &authority, parsed.path()).await?;
    Ok(WebSocketStream::from_raw_socket(
        ReadAhead::with_pending(tcp, leftover),
        Role::Client,
        Some(settings.backend_ws_config()),
    )
    .await)
}

/// The largest handshake response accepted from a workspace service.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// The client side of the WebSocket upgrade, by hand: tungstenite's own client handshake keeps
/// its 4 KiB handshake buffer as the socket's read buffer for the whole session, which would be
/// a third of an idle session's memory. Returns the bytes that followed the response headers
/// (the service may send its first frames right after the 101).
async fn upgrade(tcp: &mut TcpStream, authority: &str, path: &str) -> Result<Vec<u8>, String> {
    let key = generate_key();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = Vec::with_capacity(512);
    let end = loop {
        let mut chunk = [0u8; 512];
        let n = tcp.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("workspace service closed the connection during the handshake".into());
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if head.len() > MAX_RESPONSE_HEAD {
            return Err("handshake response headers too large".into());
        }
    };
    let text = String::from_utf8_lossy(&head[..end]);
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("101") {
        return Err(format!("workspace service refused the upgrade: {status}"));
    }
    let expected = derive_accept_key(key.as_bytes());
    let accepted = lines
        .filter_map(|l| l.split_once(':'))
        .any(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == expected
        });
    if !accepted {
        return Err("workspace service answered with a wrong Sec-WebSocket-Accept".into());
    }
    Ok(head[end + 4..].to_vec())
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    /// A connected pair: the gateway's end, and the service's end (kept so the socket stays
    /// open).
    async fn pair() -> (Upstream, WebSocketStream<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let ours =
            WebSocketStream::from_raw_socket(ReadAhead::new(client), Role::Client, None).await;
        let theirs = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
        (ours, theirs)
    }

    const URL: &str = "ws://127.0.0.1:1/ws";

    #[tokio::test(start_paused = true)]
    async fn a_workspace_parks_at_most_its_fill_and_each_is_handed_out_once() {
        let gauge = Gauge::default();
        let pool = Pool::new(gauge.clone());
        let id = Uuid::new_v4();
        let mut services = Vec::new();
        for _ in 0..MAX_PARKED + 2 {
            let (ours, theirs) = pair().await;
            services.push(theirs);
            pool.park(id, 0, URL.into(), ours);
        }
        assert_eq!(gauge.get(), MAX_PARKED as i64);
        for _ in 0..MAX_PARKED {
            assert!(pool.take(id, 0, URL).is_some());
        }
        assert!(pool.take(id, 0, URL).is_none());
        assert!(
            pool.take(Uuid::new_v4(), 0, URL).is_none(),
            "other workspaces have none"
        );
        assert_eq!(gauge.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_parked_connection_serves_only_its_endpoint_and_only_for_a_while() {
        let gauge = Gauge::default();
        let pool = Pool::new(gauge.clone());
        let id = Uuid::new_v4();
        let (ours, _theirs) = pair().await;
        pool.park(id, 0, URL.into(), ours);
        // The workspace moved (restarted elsewhere): the old connection is dropped, not used.
        assert!(pool.take(id, 0, "ws://127.0.0.1:2/ws").is_none());
        assert_eq!(gauge.get(), 0);

        let (a, _a) = pair().await;
        let (b, _b) = pair().await;
        pool.park(id, 0, URL.into(), a);
        tokio::time::advance(MAX_PARKED_FOR / 2).await;
        pool.park(id, 0, URL.into(), b);
        tokio::time::advance(MAX_PARKED_FOR / 2 + Duration::from_secs(1)).await;
        pool.sweep();
        assert_eq!(gauge.get(), 1, "the older one expired");
        tokio::time::advance(MAX_PARKED_FOR).await;
        assert!(pool.take(id, 0, URL).is_none(), "the newer one expired too");
        assert_eq!(gauge.get(), 0);
    }

    #[tokio::test]
    async fn a_connection_serves_only_the_thread_that_parked_it() {
        let pool = Pool::new(Gauge::default());
        let id = Uuid::new_v4();
        let (ours, _theirs) = pair().await;
        pool.park(id, 1, URL.into(), ours);
        assert!(
            pool.take(id, 0, URL).is_none(),
            "another thread's event loop"
        );
        assert!(pool.take(id, 2, URL).is_none());
        assert!(pool.take(id, 1, URL).is_some());
    }

    #[tokio::test]
    async fn a_connection_the_service_closed_is_not_handed_out() {
        let pool = Pool::new(Gauge::default());
        let id = Uuid::new_v4();
        let (ours, mut theirs) = pair().await;
        pool.park(id, 0, URL.into(), ours);
        theirs.close(None).await.unwrap();
        // When the close is noticed depends on the reactor polling the socket, which a yield
        // lets it do; once noticed, the connection must be dropped instead of handed out.
        let mut discarded = false;
        for _ in 0..100 {
            let Some(ws) = pool.take(id, 0, URL) else {
                discarded = true;
                break;
            };
            pool.park(id, 0, URL.into(), ws);
            tokio::task::yield_now().await;
        }
        assert!(discarded, "the closed connection kept being handed out");
    }
}
