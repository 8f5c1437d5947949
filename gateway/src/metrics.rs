//! Prometheus metrics, served at `/metrics`.
//!
//! One [`Metrics`] value owns every metric; the rest of the gateway calls its typed methods, so
//! each event is counted in one place. Labels are small closed sets (reasons, kinds, directions):
//! never user or workspace ids, which would grow the series without bound.
//!
//! Hot-path counters (relay messages and bytes) are resolved once into plain [`Counter`] handles,
//! so counting a relayed message is one atomic add, not a label lookup.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabels {
    /// `counting` or `observer`.
    kind: &'static str,
    /// `waking` (waiting for the workspace) or `relaying`.
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    /// `client_to_workspace` or `workspace_to_client`.
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HowLabel {
    /// `opened` (a new connection) or `reused` (one a previous client left).
    how: &'static str,
}

/// Whether a session counts toward its workspace's activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    Counting,
    Observer,
}

impl SessionKind {
    fn label(self) -> &'static str {
        match self {
            SessionKind::Counting => "counting",
            SessionKind::Observer => "observer",
        }
    }
}

/// Where a session is in its life, for the active-sessions gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Waking,
    Relaying,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Phase::Waking => "waking",
            Phase::Relaying => "relaying",
        }
    }
}

/// Every metric of the gateway.
pub struct Metrics {
    registry: Registry,
    sessions_active: Family<SessionLabels, Gauge>,
    sessions_opened: Family<SessionLabels, Counter>,
    session_closes: Family<CodeLabel, Counter>,
    auth_failures: Family<ReasonLabel, Counter>,
    starts: Counter,
    start_failures: Family<ReasonLabel, Counter>,
    stops: Family<ReasonLabel, Counter>,
    wake_duration: Histogram,
    upstreams: Family<HowLabel, Counter>,
    /// Workspace-service connections parked for the next client (see `session::upstream`).
    pub upstream_parked: Gauge,
    /// Relay counters, resolved once (see the module docs).
    pub relay: RelayCounters,
}

/// Counters of the relay's hot path.
#[derive(Clone)]
pub struct RelayCounters {
    pub up_messages: Counter,
    pub up_bytes: Counter,
    pub down_messages: Counter,
    pub down_bytes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("aether_gateway");
        let sessions_active = Family::<SessionLabels, Gauge>::default();
        registry.register(
            "sessions_active",
            "WebSocket sessions open now, by kind and phase",
            sessions_active.clone(),
        );
        let sessions_opened = Family::<SessionLabels, Counter>::default();
        registry.register(
            "sessions",
            "WebSocket sessions accepted (after authentication)",
            sessions_opened.clone(),
        );
        let session_closes = Family::<CodeLabel, Counter>::default();
        registry.register(
            "session_closes",
            "WebSocket sessions closed, by close code",
            session_closes.clone(),
        );
        let auth_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "auth_failures",
            "Refused authentications, by reason",
            auth_failures.clone(),
        );
        let starts = Counter::default();
        registry.register(
            "workspace_starts",
            "Workspace start calls made to the provider",
            starts.clone(),
        );
        let start_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "workspace_start_failures",
            "Workspace starts that failed, by reason",
            start_failures.clone(),
        );
        let stops = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "workspace_stops",
            "Workspace stop calls made to the provider, by reason",
            stops.clone(),
        );
        // 10 ms … ~5 min: a local process starts in milliseconds, a VM in tens of seconds.
        let wake_duration = Histogram::new(exponential_buckets(0.01, 2.0, 16));
        registry.register(
            "wake_duration_seconds",
            "Time from a start call to a running workspace",
            wake_duration.clone(),
        );
        let upstreams = Family::<HowLabel, Counter>::default();
        registry.register(
            "upstream_connections",
            "Connections to workspace services that sessions used: opened, or reused from a previous client",
            upstreams.clone(),
        );
        let upstream_parked = Gauge::default();
        registry.register(
            "upstream_parked",
            "Workspace-service connections released by their client and parked for the next one",
            upstream_parked.clone(),
        );
        let relay_messages = Family::<DirectionLabel, Counter>::default();
        registry.register(
            "relay_messages",
            "Messages relayed, by direction",
            relay_messages.clone(),
        );
        let relay_bytes = Family::<DirectionLabel, Counter>::default();
        registry.register(
            "relay_bytes",
            "Payload bytes relayed, by direction",
            relay_bytes.clone(),
        );
        let up = DirectionLabel {
            direction: "client_to_workspace",
        };
        let down = DirectionLabel {
            direction: "workspace_to_client",
        };
        // One statement each: `get_or_create` returns a guard on the family's lock, and two
        // guards alive in one expression would deadlock on the second insert.
        let up_messages = relay_messages.get_or_create(&up).clone();
        let up_bytes = relay_bytes.get_or_create(&up).clone();
        let down_messages = relay_messages.get_or_create(&down).clone();
        let down_bytes = relay_bytes.get_or_create(&down).clone();
        let relay = RelayCounters {
            up_messages,
            up_bytes,
            down_messages,
            down_bytes,
        };
        Metrics {
            registry,
            sessions_active,
            sessions_opened,
            session_closes,
            auth_failures,
            starts,
            start_failures,
            stops,
            wake_duration,
            upstreams,
            upstream_parked,
            relay,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// A session got its workspace-service connection: a new one, or one a client left.
    pub fn upstream_used(&self, reused: bool) {
        let how = if reused { "reused" } else { "opened" };
        self.upstreams.get_or_create(&HowLabel { how }).inc();
    }

    pub fn start_called(&self) {
        self.starts.inc();
    }

    pub fn start_failed(&self, reason: &'static str) {
        self.start_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn stop_called(&self, reason: &'static str) {
        self.stops.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn wake_took(&self, seconds: f64) {
        self.wake_duration.observe(seconds);
    }

    pub fn session_closed(&self, code: u16) {
        self.session_closes.get_or_create(&CodeLabel { code }).inc();
    }

    /// Counts a session as open in `phase` until the returned guard drops (or moves phase).
    pub fn session_opened(&self, kind: SessionKind, phase: Phase) -> SessionGauge {
        let labels = SessionLabels {
            kind: kind.label(),
            phase: phase.label(),
        };
        self.sessions_opened.get_or_create(&labels).inc();
        let gauge = self.sessions_active.get_or_create(&labels).clone();
        gauge.inc();
        SessionGauge {
            family: self.sessions_active.clone(),
            kind,
            gauge,
        }
    }
}

/// An RAII entry in `aether_gateway_sessions_active`: counted while alive.
pub struct SessionGauge {
    family: Family<SessionLabels, Gauge>,
    kind: SessionKind,
    gauge: Gauge,
}

impl SessionGauge {
    /// Moves the session to another phase.
    pub fn set_phase(&mut self, phase: Phase) {
        self.gauge.dec();
        let labels = SessionLabels {
            kind: self.kind.label(),
            phase: phase.label(),
        };
        self.gauge = self.family.get_or_create(&labels).clone();
        self.gauge.inc();
    }
}

impl Drop for SessionGauge {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_gauge_follows_the_guard() {
        let metrics = Metrics::new();
        let mut guard = metrics.session_opened(SessionKind::Counting, Phase::Waking);
        assert!(
            metrics
                .encode()
                .contains(r#"aether_gateway_sessions_active{kind="counting",phase="waking"} 1"#)
        );
        guard.set_phase(Phase::Relaying);
        let text = metrics.encode();
        assert!(text.contains(r#"sessions_active{kind="counting",phase="waking"} 0"#));
        assert!(text.contains(r#"sessions_active{kind="counting",phase="relaying"} 1"#));
        drop(guard);
        assert!(
            metrics
                .encode()
                .contains(r#"sessions_active{kind="counting",phase="relaying"} 0"#)
        );
    }

    #[test]
    fn starts_are_named_as_the_operators_expect() {
        let metrics = Metrics::new();
        metrics.start_called();
        metrics.stop_called("idle");
        let text = metrics.encode();
        assert!(
            text.contains("aether_gateway_workspace_starts_total 1"),
            "{text}"
        );
        assert!(text.contains(r#"aether_gateway_workspace_stops_total{reason="idle"} 1"#));
    }
}
