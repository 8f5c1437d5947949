//! The envelope: one JSON text frame per message, tagged by `channel` and `type`, flat fields.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::agent::{AgentClient, AgentServer};
use crate::control::{ControlClient, ControlServer};
use crate::files::{FilesClient, FilesServer};
use crate::ports::{PortsClient, PortsServer};
use crate::terminal::{TerminalClient, TerminalServer};

/// Every message a client may send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "channel", rename_all = "snake_case")]
pub enum ClientMessage {
    Terminal(TerminalClient),
    Files(FilesClient),
    Agent(AgentClient),
    Ports(PortsClient),
    /// `config` is listed by Aether but not specified: its messages parse, and services answer
    /// them with an error frame.
    Config(serde_json::Map<String, serde_json::Value>),
    Workspace(ControlClient),
}

/// Every message a server (gateway or workspace service) may send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "channel", rename_all = "snake_case")]
pub enum ServerMessage {
    Terminal(TerminalServer),
    Files(FilesServer),
    Agent(AgentServer),
    Ports(PortsServer),
    Workspace(ControlServer),
    Error(ErrorFrame),
}

/// `{"channel":"error","type":"error","error":"…"}`: the reply to a message that could not be
/// understood. The socket stays open after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum ErrorFrame {
    Error {
        error: String,
        /// The `requestId` of the offending message, when it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
}

impl ServerMessage {
    /// An error frame.
    pub fn error(error: impl Into<String>, request_id: Option<String>) -> ServerMessage {
        ServerMessage::Error(ErrorFrame::Error {
            error: error.into(),
            request_id,
        })
    }

    /// Encodes the message as the JSON text of one frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialize")
    }

    /// Decodes one frame.
    pub fn parse(text: &str) -> Result<ServerMessage, ParseError> {
        serde_json::from_str(text).map_err(|e| ParseError::new(text, &e))
    }
}

impl ClientMessage {
    /// Encodes the message as the JSON text of one frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("client messages always serialize")
    }

    /// Decodes one frame. The error says what was wrong and carries the `requestId` if the
    /// frame had one, so the error reply can name it.
    pub fn parse(text: &str) -> Result<ClientMessage, ParseError> {
        serde_json::from_str(text).map_err(|e| ParseError::new(text, &e))
    }
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// A message for the error frame.
    pub message: String,
    /// The frame's `requestId`, if it was readable.
    pub request_id: Option<String>,
}

impl ParseError {
    fn new(text: &str, err: &serde_json::Error) -> ParseError {
        let message = if err.is_syntax() || err.is_eof() {
            format!("malformed JSON: {err}")
        } else {
            format!("invalid message: {err}")
        };
        ParseError {
            message,
            request_id: request_id_of(text),
        }
    }

    /// The error frame that answers this error.
    pub fn to_frame(&self) -> ServerMessage {
        ServerMessage::error(self.message.clone(), self.request_id.clone())
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseError {}

fn request_id_of(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct WithRequestId {
        #[serde(rename = "requestId")]
        request_id: Option<String>,
    }
    serde_json::from_str::<WithRequestId>(text)
        .ok()
        .and_then(|r| r.request_id)
}

/// The two tags of a frame and nothing else: what a relay reads to route and validate a message
/// without decoding its body. Borrows from the frame when it can.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Peek<'a> {
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
}

/// The channels a client may address.
pub const CLIENT_CHANNELS: [&str; 6] =
    ["terminal", "files", "agent", "ports", "config", "workspace"];

impl<'a> Peek<'a> {
    /// Reads the tags of a frame, checking that it is a JSON object with string `channel` and
    /// `type` fields and a channel clients may use.
    pub fn parse(text: &'a str) -> Result<Peek<'a>, ParseError> {
        let peek: Peek<'a> = serde_json::from_str(text).map_err(|e| ParseError::new(text, &e))?;
        if !CLIENT_CHANNELS.contains(&peek.channel.as_ref()) {
            return Err(ParseError {
                message: format!("unknown channel {:?}", peek.channel),
                request_id: request_id_of(text),
            });
        }
        Ok(peek)
    }
}
