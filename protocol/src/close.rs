//! WebSocket close codes: one table, used by everyone.
//!
//! The gateway and the workspace service close with these; the CLI, the web page and the load
//! harness read them to decide whether to reconnect. [`CloseCode::action`] is that decision.

use std::fmt;

/// A close code with a meaning in the Aether protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: the session ended normally.
    Normal,
    /// 1001: the server (or client) is going away, e.g. the workspace service shutting down.
    GoingAway,
    /// 1003: a binary frame; the protocol is JSON text only.
    Unsupported,
    /// 1008: a policy refusal after the upgrade (origin, auth).
    Policy,
    /// 1009: a message over [`crate::MAX_MESSAGE_SIZE`].
    TooBig,
    /// 1011: an internal error on the server side.
    Internal,
    /// 1012: the service is restarting; reconnect with jitter.
    Restart,
    /// 1013: overloaded; try again later.
    TryAgainLater,
    /// 4001: the token expired; reconnect with a fresh token.
    TokenExpired,
    /// 4004: the workspace does not exist or was deleted.
    NotFound,
    /// 4008: the client read too slowly and fell behind.
    TooSlow,
    /// 4009: the workspace is stopped (or stopped under the client).
    Stopped,
    /// 4500: the workspace failed to wake.
    WakeFailed,
    /// 4504: the workspace did not become ready within the boot budget.
    WakeTimeout,
}

/// What a client should do after a close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseAction {
    /// Do not reconnect: the session is over.
    Done,
    /// Reconnect with backoff and jitter; the same session can be resumed.
    Reconnect,
    /// Get a fresh token, then reconnect.
    Reauthenticate,
    /// Do not reconnect automatically; report the reason to the user.
    Report,
}

impl CloseCode {
    /// Every code, in table order.
    pub const ALL: [CloseCode; 14] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::Unsupported,
        CloseCode::Policy,
        CloseCode::TooBig,
        CloseCode::Internal,
        CloseCode::Restart,
        CloseCode::TryAgainLater,
        CloseCode::TokenExpired,
        CloseCode::NotFound,
        CloseCode::TooSlow,
        CloseCode::Stopped,
        CloseCode::WakeFailed,
        CloseCode::WakeTimeout,
    ];

    /// The numeric code on the wire.
    pub const fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::Unsupported => 1003,
            CloseCode::Policy => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::Internal => 1011,
            CloseCode::Restart => 1012,
            CloseCode::TryAgainLater => 1013,
            CloseCode::TokenExpired => 4001,
            CloseCode::NotFound => 4004,
            CloseCode::TooSlow => 4008,
            CloseCode::Stopped => 4009,
            CloseCode::WakeFailed => 4500,
            CloseCode::WakeTimeout => 4504,
        }
    }

    /// The code for a number, if it is one of ours.
    pub fn from_code(code: u16) -> Option<CloseCode> {
        CloseCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// A short reason, sent as the close frame's reason text.
    pub const fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal closure",
            CloseCode::GoingAway => "going away",
            CloseCode::Unsupported => "binary frames are not accepted",
            CloseCode::Policy => "policy violation",
            CloseCode::TooBig => "message too big",
            CloseCode::Internal => "internal error",
            CloseCode::Restart => "service restart",
            CloseCode::TryAgainLater => "try again later",
            CloseCode::TokenExpired => "token expired",
            CloseCode::NotFound => "workspace not found",
            CloseCode::TooSlow => "client too slow",
            CloseCode::Stopped => "workspace stopped",
            CloseCode::WakeFailed => "workspace failed to start",
            CloseCode::WakeTimeout => "workspace start timed out",
        }
    }

    /// What a client should do when it sees this code.
    pub const fn action(self) -> CloseAction {
        match self {
            CloseCode::Normal => CloseAction::Done,
            CloseCode::GoingAway
            | CloseCode::Internal
            | CloseCode::Restart
            | CloseCode::TryAgainLater
            | CloseCode::TooSlow => CloseAction::Reconnect,
            CloseCode::TokenExpired => CloseAction::Reauthenticate,
            CloseCode::Unsupported
            | CloseCode::Policy
            | CloseCode::TooBig
            | CloseCode::NotFound
            | CloseCode::Stopped
            | CloseCode::WakeFailed
            | CloseCode::WakeTimeout => CloseAction::Report,
        }
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        for code in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(code.code()), Some(code));
        }
        let mut numbers: Vec<u16> = CloseCode::ALL.iter().map(|c| c.code()).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), CloseCode::ALL.len());
        assert_eq!(CloseCode::from_code(4999), None);
    }

    #[test]
    fn restart_means_reconnect_and_expiry_means_reauthenticate() {
        assert_eq!(CloseCode::Restart.action(), CloseAction::Reconnect);
        assert_eq!(
            CloseCode::TokenExpired.action(),
            CloseAction::Reauthenticate
        );
        assert_eq!(CloseCode::WakeTimeout.action(), CloseAction::Report);
    }
}
