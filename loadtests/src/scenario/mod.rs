//! The parent's side of each scenario: prepare the targets, drive the worker processes through
//! their barriers, sample the servers in `/proc` at the right moments, and turn the merged
//! outcome into [`Run`]s and functional failures.

pub mod churn;
pub mod connect;
pub mod hold;
pub mod relay;
pub mod wake;

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;

use crate::cli::Common;
use crate::plan::{Job, Merged, Plan};
use crate::pool::Pool;
use crate::procfs::{self, Sample};
use crate::report::Run;
use crate::setup::Target;

/// Sockets one worker process holds at most (fd limit 20,000, minus headroom).
const SESSIONS_PER_PROC: usize = 18_000;

/// Linux keeps a socket in TIME_WAIT for 60 s: waiting longer for them cannot help.
const SETTLE_MAX: Duration = Duration::from_secs(65);

/// What every scenario needs besides its own flags.
pub struct Ctx<'a> {
    pub common: &'a Common,
    pub sources: Vec<IpAddr>,
}

/// What a scenario hands back.
#[derive(Default)]
pub struct Outcome {
    pub runs: Vec<Run>,
    pub failures: Vec<String>,
    /// Figures to compare between the gateway and the baselines.
    pub compare: Vec<&'static str>,
}

impl Ctx<'_> {
    /// Starts the workers of one phase against `target`.
    pub async fn pool(
        &self,
        target: &Target,
        sessions: usize,
        job: Job,
        phase: &str,
    ) -> Result<Pool> {
        self.pool_n(target, sessions, job, phase, self.common.procs)
            .await
    }

    /// Waits until the TIME_WAIT sockets an earlier phase left are down to
    /// `--settle-time-wait` (at most [`SETTLE_MAX`]); returns how many are left.
    pub async fn settle(&self) -> u64 {
        let limit = self.common.settle_time_wait;
        let count = || procfs::time_wait_sockets().unwrap_or(0);
        let mut left = count();
        if limit == 0 || left < limit {
            return left;
        }
        eprintln!("waiting for {left} TIME_WAIT sockets to expire (--settle-time-wait {limit})");
        let deadline = tokio::time::Instant::now() + SETTLE_MAX;
        while left >= limit && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            left = count();
        }
        left
    }

    /// Like [`Ctx::pool`] with an explicit number of worker processes.
    pub async fn pool_n(
        &self,
        target: &Target,
        sessions: usize,
        job: Job,
        phase: &str,
        procs: usize,
    ) -> Result<Pool> {
        self.settle().await;
        // One process may hold at most 20,000 open files here: never plan more than
        // SESSIONS_PER_PROC sockets in one worker, whatever --procs says.
        let procs = procs
            .max(sessions.div_ceil(SESSIONS_PER_PROC))
            .clamp(1, sessions.max(1));
        let plans = (0..procs)
            .map(|w| Plan {
                worker: w,
                workers: procs,
                urls: target.urls.clone(),
                sessions,
                source_ips: self.sources.clone(),
                expect_status: target.expect_status,
                job: job.clone(),
            })
            .collect();
        Pool::start(plans, format!("{} {phase}", target.name)).await
    }
}

/// A guard for opening `sessions`: generous, for a loaded 2-core machine.
pub fn open_budget(sessions: usize) -> Duration {
    Duration::from_secs(120) + Duration::from_millis(sessions as u64 * 10)
}

/// The run of a phase with every histogram summarised and the errors carried over; a phase
/// with errors is a functional failure.
pub fn run_of(target: &Target, phase: &str, merged: &Merged, failures: &mut Vec<String>) -> Run {
    let mut run = Run::new(target.name, phase);
    for (name, h) in &merged.hists {
        run.latency.insert(name.clone(), h.summary());
    }
    run.errors = merged.errors;
    run.error_examples = merged.error_examples.clone();
    if merged.errors > 0 {
        failures.push(format!(
            "{} {phase}: {} errors (first: {})",
            target.name,
            merged.errors,
            merged.error_examples.first().map_or("", String::as_str)
        ));
    }
    run
}

/// Resource figures of the target's processes: before/after and per unit.
pub fn add_samples(run: &mut Run, prefix: &str, before: Sample, after: Sample) {
    run.set(&format!("{prefix}rss_kib_before"), before.rss_kib as f64);
    run.set(&format!("{prefix}rss_kib_after"), after.rss_kib as f64);
    run.set(&format!("{prefix}fds_before"), before.fds as f64);
    run.set(&format!("{prefix}fds_after"), after.fds as f64);
    run.set(
        &format!("{prefix}cpu_ms"),
        after.cpu_us.saturating_sub(before.cpu_us) as f64 / 1000.0,
    );
}
