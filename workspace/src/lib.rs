//! `aether-workspace`: the service that runs inside each workspace and serves the Aether
//! channels — `terminal`, `files`, `agent`, `ports`, `config` and our `workspace` — over
//! WebSocket, for the gateway to relay clients to.
//!
//! The binary is thin: it reads flags into a [`Config`], calls [`Server::bind`], prints
//! `listening on <addr>` once ready, and runs [`Server::run`] until SIGTERM.
//!
//! # Layout
//!
//! - [`config`]: the configuration and its defaults.
//! - `server`: the listener; `GET /ws` (upgrade), `GET /status`, `GET /healthz`; shutdown.
//! - `socket`: one WebSocket connection: frame reading, dispatch, the write loop, close codes.
//! - `outbox`: each socket's bounded outgoing queue and the fan-out lists that feed it
//!   (slow sockets are dropped and closed with 4008, never waited for).
//! - `state`: what connections share; the socket lease behind `/status`'s count.
//! - `terminal`: PTY sessions that outlive sockets; the sequence-numbered output ring.
//! - `agent`: agent tasks, their process groups, history and replay.
//! - `ports`: listening ports from `/proc/net/tcp{,6}`.
//! - `files`: file operations confined to the volume, and the watcher.
//! - `utf8`: streaming UTF-8 decoding that never splits a character.

pub mod config;

mod agent;
mod files;
mod outbox;
mod ports;
mod server;
mod socket;
mod state;
mod terminal;
mod utf8;

pub use config::Config;
pub use server::{Server, ServerError};
