//! The parent's side of the worker processes: start `aether-load __worker` once per plan, pass
//! barriers, show a live progress line on stderr, and merge the outcomes.

use std::io::{IsTerminal, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::plan::{Merged, Outcome, Plan};

enum Event {
    Barrier,
    Done(Box<Outcome>),
    Gone(String),
}

/// Running workers.
pub struct Pool {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    events_rx: mpsc::UnboundedReceiver<(usize, Event)>,
    /// Latest progress counters per worker: opened, closed, sent, received, errors.
    live: Arc<Mutex<Vec<[u64; 5]>>>,
    outcomes: Vec<Option<Outcome>>,
    printer: tokio::task::JoinHandle<()>,
}

impl Pool {
    /// Starts one worker per plan; `label` prefixes the progress line.
    pub async fn start(plans: Vec<Plan>, label: String) -> Result<Pool> {
        let exe = std::env::current_exe().context("own executable")?;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let live = Arc::new(Mutex::new(vec![[0u64; 5]; plans.len()]));
        let mut children = Vec::new();
        let mut stdins = Vec::new();
        for (w, plan) in plans.iter().enumerate() {
            let mut child = Command::new(&exe)
                .arg("__worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("spawn worker")?;
            let mut stdin = child.stdin.take().context("worker stdin")?;
            let line = serde_json::to_string(plan)? + "\n";
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let (tx, live) = (events_tx.clone(), live.clone());
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(p) = line.strip_prefix("P ") {
                        let nums: Vec<u64> = p.split(' ').filter_map(|n| n.parse().ok()).collect();
                        if nums.len() == 5 {
                            live.lock().unwrap()[w].copy_from_slice(&nums);
                        }
                    } else if line == "B" {
                        let _ = tx.send((w, Event::Barrier));
                    } else if let Some(json) = line.strip_prefix("D ") {
                        let ev = match serde_json::from_str(json) {
                            Ok(o) => Event::Done(Box::new(o)),
                            Err(e) => Event::Gone(format!("bad outcome: {e}")),
                        };
                        let _ = tx.send((w, ev));
                        return;
                    }
                }
                let _ = tx.send((w, Event::Gone("exited without an outcome".into())));
            });
            children.push(child);
            stdins.push(stdin);
        }
        let printer = tokio::spawn(print_progress(label, live.clone()));
        Ok(Pool {
            children,
            outcomes: plans.iter().map(|_| None).collect(),
            stdins,
            events_rx,
            live,
            printer,
        })
    }

    /// Waits until every worker is at its next barrier (or finished).
    pub async fn barrier(&mut self, within: Duration) -> Result<()> {
        let mut waiting = self.outcomes.iter().filter(|o| o.is_none()).count();
        let deadline = Instant::now() + within;
        while waiting > 0 {
            let ev = tokio::time::timeout_at(deadline, self.events_rx.recv())
                .await
                .context("workers did not reach the barrier in time")?;
            match ev {
                Some((_, Event::Barrier)) => waiting -= 1,
                Some((w, Event::Done(o))) => {
                    self.outcomes[w] = Some(*o);
                    waiting -= 1;
                }
                Some((w, Event::Gone(why))) => bail!("worker {w}: {why}"),
                None => bail!("workers gone"),
            }
        }
        Ok(())
    }

    /// Lets every worker go on past its barrier.
    pub async fn release(&mut self) -> Result<()> {
        for (w, stdin) in self.stdins.iter_mut().enumerate() {
            if self.outcomes[w].is_none() {
                stdin.write_all(b"G\n").await?;
                stdin.flush().await?;
            }
        }
        Ok(())
    }

    /// Waits for every outcome and merges them.
    pub async fn finish(mut self, within: Duration) -> Result<Merged> {
        let deadline = Instant::now() + within;
        while self.outcomes.iter().any(Option::is_none) {
            let ev = tokio::time::timeout_at(deadline, self.events_rx.recv())
                .await
                .context("workers did not finish in time")?;
            match ev {
                Some((w, Event::Done(o))) => self.outcomes[w] = Some(*o),
                Some((_, Event::Barrier)) => bail!("a worker waits at an unexpected barrier"),
                Some((w, Event::Gone(why))) => bail!("worker {w}: {why}"),
                None => bail!("workers gone"),
            }
        }
        // Closing stdin tells a worker that is still around to go.
        self.stdins.clear();
        for c in &mut self.children {
            let _ = tokio::time::timeout(Duration::from_secs(10), c.wait()).await;
        }
        self.printer.abort();
        end_progress_line();
        let mut merged = Merged::default();
        for o in self.outcomes.drain(..).flatten() {
            merged.add(o)?;
        }
        Ok(merged)
    }

    /// Sum of the live counters: opened, closed, sent, received, errors.
    pub fn live(&self) -> [u64; 5] {
        sum(&self.live.lock().unwrap())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.printer.abort();
    }
}

fn sum(rows: &[[u64; 5]]) -> [u64; 5] {
    let mut t = [0u64; 5];
    for r in rows {
        for (a, b) in t.iter_mut().zip(r) {
            *a += b;
        }
    }
    t
}

/// One line, rewritten in place on a terminal; a line every 2 s otherwise (CI logs).
async fn print_progress(label: String, live: Arc<Mutex<Vec<[u64; 5]>>>) {
    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(if tty { 250 } else { 2000 }));
    let mut last = ([0u64; 5], Instant::now());
    loop {
        tick.tick().await;
        let now = sum(&live.lock().unwrap());
        let dt = last.1.elapsed().as_secs_f64().max(1e-3);
        let rate = (now[3] - last.0[3].min(now[3])) as f64 / dt;
        last = (now, Instant::now());
        let line = format!(
            "[{label}] {:>6.1}s open {} closed {} sent {} recv {} ({:.0}/s) errors {}",
            start.elapsed().as_secs_f64(),
            now[0],
            now[1],
            now[2],
            now[3],
            rate,
            now[4]
        );
        let mut err = std::io::stderr().lock();
        if tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }
}

fn end_progress_line() {
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
}
