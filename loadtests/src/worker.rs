//! The worker process: `aether-load __worker` reads a [`Plan`] as the first line of stdin, runs
//! it, and talks to the parent in lines on stdout:
//!
//! - `P opened closed sent received errors`: progress, every 200 ms;
//! - `B`: this worker reached a barrier; it continues when the parent writes `G` on stdin;
//! - `D {json}`: done, with the [`Outcome`].
//!
//! Several processes are needed because one process may hold at most 20,000 open files here.
//! Everything else goes to stderr.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::hist::Hist;
use crate::jobs;
use crate::plan::{Outcome, Plan};

/// Counters and samples shared by every session task of a worker.
#[derive(Default)]
pub struct Shared {
    pub opened: AtomicU64,
    pub closed: AtomicU64,
    pub sent: AtomicU64,
    pub received: AtomicU64,
    errors: AtomicU64,
    // One lock per worker for histograms: recording is a few nanoseconds and the workers run
    // on two cores, so contention is negligible next to a socket write.
    hists: Mutex<BTreeMap<&'static str, Hist>>,
    counters: Mutex<BTreeMap<String, u64>>,
    maxima: Mutex<BTreeMap<String, u64>>,
    series: Mutex<BTreeMap<&'static str, Vec<u64>>>,
    error_examples: Mutex<Vec<String>>,
}

impl Shared {
    pub fn record(&self, name: &'static str, d: Duration) {
        self.hists
            .lock()
            .unwrap()
            .entry(name)
            .or_default()
            .record(d);
    }

    pub fn count(&self, name: &str, n: u64) {
        *self
            .counters
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_default() += n;
    }

    pub fn max(&self, name: String, v: u64) {
        let mut m = self.maxima.lock().unwrap();
        let e = m.entry(name).or_default();
        *e = (*e).max(v);
    }

    pub fn push(&self, name: &'static str, v: u64) {
        self.series.lock().unwrap().entry(name).or_default().push(v);
    }

    /// A functional error: counted, and the first few kept verbatim.
    pub fn error(&self, what: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut ex = self.error_examples.lock().unwrap();
        if ex.len() < 20 {
            ex.push(what.to_string());
        }
    }

    fn progress_line(&self) -> String {
        format!(
            "P {} {} {} {} {}",
            self.opened.load(Ordering::Relaxed),
            self.closed.load(Ordering::Relaxed),
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed)
        )
    }

    fn outcome(&self) -> Outcome {
        Outcome {
            hists: self
                .hists
                .lock()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.to_string(), v.encode()))
                .collect(),
            counters: self.counters.lock().unwrap().clone(),
            maxima: self.maxima.lock().unwrap().clone(),
            series: self
                .series
                .lock()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            errors: self.errors.load(Ordering::Relaxed),
            error_examples: self.error_examples.lock().unwrap().clone(),
        }
    }
}

/// The worker's side of a barrier with the parent.
pub struct Ctl {
    go_rx: mpsc::Receiver<()>,
    shared: std::sync::Arc<Shared>,
}

impl Ctl {
    /// Tells the parent this worker is here and waits until it says go.
    pub async fn barrier(&mut self) -> Result<()> {
        // Fresh counters first, so the parent's figures at the barrier are exact.
        say(&self.shared.progress_line());
        say("B");
        self.go_rx.recv().await.context("parent went away")
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // A parent that stopped reading is gone; the worker ends with it.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Entry point of `aether-load __worker`.
pub async fn main() -> Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let first = lines.next_line().await?.context("no plan on stdin")?;
    let plan: Plan = serde_json::from_str(&first).context("plan")?;
    let (go_tx, go_rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.trim() == "G" && go_tx.send(()).await.is_err() {
                break;
            }
        }
        // stdin closed: the parent is gone; nothing left to do but stop.
        std::process::exit(3);
    });
    let shared = std::sync::Arc::new(Shared::default());
    let progress = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                say(&shared.progress_line());
            }
        })
    };
    let mut ctl = Ctl {
        go_rx,
        shared: shared.clone(),
    };
    let plan = std::sync::Arc::new(plan);
    let result = jobs::run(&plan, &shared, &mut ctl).await;
    progress.abort();
    if let Err(e) = result {
        shared.error(format!("worker {}: {e:#}", plan.worker));
    }
    say(&shared.progress_line());
    say(&format!("D {}", serde_json::to_string(&shared.outcome())?));
    Ok(())
}
