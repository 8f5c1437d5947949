//! `aether-load`: the load-testing harness for Aether gateways (the binary is a thin `main`).
//!
//! `aether-load <hold|connect|wake|relay|churn> [--spawn | --url URL --token T] [--baseline
//! direct,nginx,haproxy,l4|all] --clients N --duration T --json FILE`. The parent process prepares the
//! targets, re-executes itself as `--procs` worker processes that hold the client sockets, and
//! merges their figures into one table and one JSON report. Exit status: 0 when no functional
//! error happened, 1 when one did (lost message, second start, stop while connected), 2 when the
//! harness itself could not run.
//!
//! # Layout
//!
//! - [`cli`]: flags; [`run`]: one scenario from flags to report. [`setup`]: the targets (gateway, `direct`, `nginx`,
//!   `haproxy`, `l4`) and their processes, started through [`servers`] and [`proxy`]; [`api`]: REST, `/metrics`, tokens.
//! - [`scenario`]: the parent's side of each scenario; [`pool`]: worker processes, barriers and
//!   the progress line; [`report`]: table and JSON.
//! - [`worker`] and [`jobs`]: the worker's side — one task per session over [`ws`].
//! - [`plan`]: the messages between the two; [`hist`]: HDR histograms; [`procfs`]: `/proc`.

pub mod api;
pub mod cli;
pub mod hist;
pub mod jobs;
pub mod plan;
pub mod pool;
pub mod procfs;
pub mod proxy;
pub mod report;
pub mod run;
pub mod scenario;
pub mod servers;
pub mod setup;
pub mod worker;
pub mod ws;
