//! What a close frame means for the session: reconnect, or stop with which error.

use protocol::CloseCode;
use protocol::close::CloseAction;

use crate::error::CliError;

/// The session's next step after the socket closed.
#[derive(Debug)]
pub enum AfterClose {
    /// Reconnect and re-attach; the string says why the connection went away.
    Reconnect(String),
    /// Stop with this error.
    Fail(CliError),
}

/// Classifies a close. `code` is `None` when the connection ended without a close frame;
/// `last_error` is the message of a `workspace` `error` frame that came just before.
pub fn after_close(code: Option<u16>, reason: &str, last_error: Option<&str>) -> AfterClose {
    let Some(code) = code else {
        return AfterClose::Reconnect("the connection closed unexpectedly".into());
    };
    let Some(known) = CloseCode::from_code(code) else {
        return AfterClose::Reconnect(format!("closed with code {code} {reason}"));
    };
    let detail = last_error
        .map(str::to_owned)
        .or_else(|| (!reason.is_empty()).then(|| reason.to_owned()))
        .unwrap_or_else(|| known.reason().to_owned());
    match known.action() {
        CloseAction::Reconnect => AfterClose::Reconnect(known.to_string()),
        CloseAction::Reauthenticate => AfterClose::Fail(CliError::TokenExpired),
        CloseAction::Done => AfterClose::Fail(CliError::ConnectionLost(
            "the gateway ended the session before the shell exited".into(),
        )),
        CloseAction::Report => AfterClose::Fail(match known {
            CloseCode::NotFound => {
                CliError::NotFound(format!("the workspace was not found or deleted ({detail})"))
            }
            CloseCode::Stopped => CliError::Stopped(format!(
                "the workspace is stopped ({detail}); connect without --no-start to wake it"
            )),
            CloseCode::WakeFailed | CloseCode::WakeTimeout => CliError::WakeFailed(detail),
            _ => CliError::Other(format!(
                "the gateway closed the connection: {known}: {detail}"
            )),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_and_drops_reconnect() {
        assert!(matches!(
            after_close(Some(1012), "", None),
            AfterClose::Reconnect(r) if r.contains("1012")
        ));
        assert!(matches!(
            after_close(Some(1001), "", None),
            AfterClose::Reconnect(_)
        ));
        assert!(matches!(
            after_close(None, "", None),
            AfterClose::Reconnect(_)
        ));
        assert!(matches!(
            after_close(Some(1006), "", None),
            AfterClose::Reconnect(_)
        ));
    }

    #[test]
    fn wake_failures_carry_the_reason() {
        match after_close(
            Some(4500),
            "workspace failed to start",
            Some("exec: no such file"),
        ) {
            AfterClose::Fail(e @ CliError::WakeFailed(_)) => {
                assert!(e.to_string().contains("no such file"));
                assert_eq!(e.exit_code(), crate::error::code::WAKE_FAILED);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            after_close(Some(4504), "", None),
            AfterClose::Fail(CliError::WakeFailed(m)) if m.contains("timed out")
        ));
        match after_close(Some(4009), "", Some("workspace is stopped and start=false")) {
            AfterClose::Fail(e @ CliError::Stopped(_)) => {
                assert!(e.to_string().contains("--no-start"), "{e}");
                assert_eq!(e.exit_code(), crate::error::code::WAKE_FAILED);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            after_close(Some(4004), "", None),
            AfterClose::Fail(CliError::NotFound(_))
        ));
        assert!(matches!(
            after_close(Some(4001), "", None),
            AfterClose::Fail(CliError::TokenExpired)
        ));
    }
}
