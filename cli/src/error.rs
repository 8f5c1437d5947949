//! The CLI's errors and the exit codes they map to — one table, documented in `--help` and
//! `cli/README.md`, so scripts can branch on the kind of failure.
//!
//! `aether workspace connect` exits with the remote shell's exit code when the session ends, so
//! our own codes sit high (201–205, like ssh's 255) where shells rarely go.

use std::fmt;

/// Exit codes of `aether`.
pub mod code {
    /// Success (for `connect`: the remote shell exited 0, or you detached with `~.`).
    pub const OK: u8 = 0;
    /// The gateway refused the request (e.g. 400: the workspace is not in a state that allows
    /// it), or another unexpected failure.
    pub const FAILURE: u8 = 1;
    /// Bad arguments, an ambiguous id prefix, or a refused confirmation.
    pub const USAGE: u8 = 2;
    /// The remote shell was killed by a signal (it has no exit code).
    pub const REMOTE_SIGNALED: u8 = 200;
    /// Not authenticated: no token, or the gateway rejected it (invalid or expired).
    pub const NOT_AUTHENTICATED: u8 = 201;
    /// The workspace (or project) does not exist or is not yours.
    pub const NOT_FOUND: u8 = 202;
    /// The workspace failed to wake, timed out waking, or was stopped under the session.
    pub const WAKE_FAILED: u8 = 203;
    /// The gateway could not be reached at all.
    pub const UNREACHABLE: u8 = 204;
    /// The connection dropped and reconnecting failed, or the remote session was lost.
    pub const CONNECTION_LOST: u8 = 205;
    /// Interrupted by a signal: 128 + the signal number (130 for Ctrl-C), as shells do.
    pub const SIGNAL_BASE: u8 = 128;
}

/// The exit-code table as it appears at the end of `aether --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    success; for `connect`, the remote shell's exit code is passed through
  1    the gateway refused the request (e.g. not startable), or another failure
  2    usage error, ambiguous id prefix, or delete not confirmed
  130  interrupted (128 + signal number)
  200  the remote shell was killed by a signal
  201  not authenticated: set AETHER_TOKEN (or pass --token) to a valid token
  202  workspace or project not found
  203  the workspace failed to wake (start failed, timed out, or stopped)
  204  the gateway is unreachable at AETHER_API_URL
  205  the connection was lost and could not be re-established";

/// Everything that can make `aether` fail, each with a message a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("not authenticated: set AETHER_TOKEN to your access token (or pass --token)")]
    NoToken,
    #[error(
        "the gateway at {url} rejected the token (401 Unauthorized): it is invalid or expired; \
         set AETHER_TOKEN to a fresh token"
    )]
    Unauthorized { url: String },
    #[error(
        "the token expired during the session; set AETHER_TOKEN to a fresh token and reconnect"
    )]
    TokenExpired,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Ambiguous(String),
    #[error("the workspace failed to wake: {0}")]
    WakeFailed(String),
    /// Stopped, and not to be woken (`--no-start`), or stopped under the session.
    #[error("{0}")]
    Stopped(String),
    #[error(
        "cannot reach the gateway at {url}: {cause}; is it running? Set AETHER_API_URL to its \
         address"
    )]
    Unreachable { url: String, cause: String },
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    #[error("the gateway refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("interrupted by {name}")]
    Interrupted { name: &'static str, signal: u8 },
    #[error("{0}")]
    Other(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::NoToken | CliError::Unauthorized { .. } | CliError::TokenExpired => {
                code::NOT_AUTHENTICATED
            }
            CliError::NotFound(_) => code::NOT_FOUND,
            CliError::Ambiguous(_) | CliError::Usage(_) => code::USAGE,
            CliError::WakeFailed(_) | CliError::Stopped(_) => code::WAKE_FAILED,
            CliError::Unreachable { .. } => code::UNREACHABLE,
            CliError::ConnectionLost(_) => code::CONNECTION_LOST,
            CliError::Rejected { .. } | CliError::Other(_) => code::FAILURE,
            CliError::Interrupted { signal, .. } => code::SIGNAL_BASE + signal,
        }
    }

    /// An unexpected failure, with its context.
    pub fn other(err: impl fmt::Display) -> CliError {
        CliError::Other(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_code_is_in_the_help_table() {
        let errors = [
            CliError::NoToken,
            CliError::NotFound("x".into()),
            CliError::Ambiguous("x".into()),
            CliError::WakeFailed("x".into()),
            CliError::Unreachable {
                url: "u".into(),
                cause: "c".into(),
            },
            CliError::ConnectionLost("x".into()),
            CliError::Rejected {
                status: 400,
                message: "m".into(),
            },
            CliError::Interrupted {
                name: "SIGINT",
                signal: 2,
            },
        ];
        for err in errors {
            let code = err.exit_code().to_string();
            assert!(
                EXIT_CODES_HELP
                    .lines()
                    .any(|l| l.trim_start().starts_with(&format!("{code} "))),
                "exit code {code} of {err:?} is not documented"
            );
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        assert!(CliError::NoToken.to_string().contains("AETHER_TOKEN"));
        let unreachable = CliError::Unreachable {
            url: "http://127.0.0.1:9".into(),
            cause: "connection refused".into(),
        };
        assert!(unreachable.to_string().contains("http://127.0.0.1:9"));
    }
}
