//! What the parent asks of a worker process (a [`Plan`]) and what the worker hands back (an
//! [`Outcome`]), both as JSON lines; [`Merged`] is the outcomes of every worker added together.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::hist::Hist;

/// One worker's share of a scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// This worker's index and the number of workers: it runs sessions `worker, worker+workers, …`.
    pub worker: usize,
    pub workers: usize,
    /// One WebSocket URL per workspace; session `i` uses `urls[i % urls.len()]`.
    pub urls: Vec<String>,
    /// Sessions (or clients) over every worker.
    pub sessions: usize,
    /// Source addresses to bind before connecting, used round robin; empty: the kernel's choice.
    pub source_ips: Vec<IpAddr>,
    /// The target is a gateway: the first frame is a `workspace` status.
    pub expect_status: bool,
    pub job: Job,
}

impl Plan {
    /// Global indexes of this worker's sessions.
    pub fn my_sessions(&self) -> impl Iterator<Item = usize> + use<> {
        (self.worker..self.sessions).step_by(self.workers.max(1))
    }

    pub fn url_of(&self, session: usize) -> &str {
        &self.urls[session % self.urls.len()]
    }

    pub fn source_of(&self, session: usize) -> Option<IpAddr> {
        (!self.source_ips.is_empty()).then(|| self.source_ips[session % self.source_ips.len()])
    }
}

/// The client side of a scenario. Durations are in milliseconds so the JSON stays plain.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "job")]
pub enum Job {
    /// Open every session, barrier, hold them with pings, barrier, close.
    Hold {
        open_concurrency: usize,
        ping_interval_ms: u64,
        hold_ms: u64,
    },
    /// Connect, read the first status, one round trip, close; at `rate` per second over every
    /// worker or, when `rate` is 0, as fast as `concurrency` loops per worker can.
    Connect {
        rate: f64,
        concurrency: usize,
        duration_ms: u64,
    },
    /// Open, barrier, pings at a fixed `rate` over every worker, barrier, close.
    RelayLatency {
        open_concurrency: usize,
        rate: f64,
        duration_ms: u64,
        payload: usize,
    },
    /// Open, barrier, `window` pings in flight per session, barrier, close.
    RelayThroughput {
        open_concurrency: usize,
        window: usize,
        duration_ms: u64,
        payload: usize,
    },
    /// Every client connects at once to one stopped workspace and waits for `running`;
    /// barrier; close.
    Wake {
        connect_concurrency: usize,
        timeout_ms: u64,
    },
    /// `concurrency` loops of connect, hold, disconnect, pause.
    Churn {
        concurrency: usize,
        duration_ms: u64,
        hold_ms: (u64, u64),
        gap_ms: (u64, u64),
    },
}

/// What a worker measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// Encoded histograms by name.
    pub hists: BTreeMap<String, String>,
    /// Counts, summed over workers.
    pub counters: BTreeMap<String, u64>,
    /// Figures where the largest value over workers counts (e.g. a last timestamp).
    pub maxima: BTreeMap<String, u64>,
    /// Raw per-client values, concatenated over workers (wake timestamps).
    pub series: BTreeMap<String, Vec<u64>>,
    /// Error count and the first few messages.
    pub errors: u64,
    pub error_examples: Vec<String>,
}

/// Every worker's outcome added together.
#[derive(Debug, Default)]
pub struct Merged {
    pub hists: BTreeMap<String, Hist>,
    pub counters: BTreeMap<String, u64>,
    pub maxima: BTreeMap<String, u64>,
    pub series: BTreeMap<String, Vec<u64>>,
    pub errors: u64,
    pub error_examples: Vec<String>,
}

impl Merged {
    pub fn add(&mut self, o: Outcome) -> Result<()> {
        for (k, v) in o.hists {
            self.hists.entry(k).or_default().merge(&Hist::decode(&v)?);
        }
        for (k, v) in o.counters {
            *self.counters.entry(k).or_default() += v;
        }
        for (k, v) in o.maxima {
            let e = self.maxima.entry(k).or_default();
            *e = (*e).max(v);
        }
        for (k, v) in o.series {
            self.series.entry(k).or_default().extend(v);
        }
        self.errors += o.errors;
        for e in o.error_examples {
            if self.error_examples.len() < 20 {
                self.error_examples.push(e);
            }
        }
        Ok(())
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    pub fn hist(&self, name: &str) -> Hist {
        self.hists.get(name).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_split_between_workers() {
        let plan = |worker| Plan {
            worker,
            workers: 3,
            urls: vec!["a".into(), "b".into()],
            sessions: 10,
            source_ips: vec![],
            expect_status: false,
            job: Job::Wake {
                connect_concurrency: 1,
                timeout_ms: 1,
            },
        };
        let mut all: Vec<usize> = (0..3).flat_map(|w| plan(w).my_sessions()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(plan(0).url_of(3), "b");
    }
}
