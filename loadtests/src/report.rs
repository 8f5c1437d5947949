//! The result of a scenario: figures per target and phase, latency summaries, the comparisons of
//! the gateway with each baseline, and the functional failures. Printed as a table and written
//! as JSON with the exact configuration.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::hist::Summary;

/// One phase (e.g. `throughput 16384 B`) against one target.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub target: String,
    pub phase: String,
    pub figures: BTreeMap<String, f64>,
    pub latency: BTreeMap<String, Summary>,
    pub errors: u64,
    pub error_examples: Vec<String>,
}

impl Run {
    pub fn new(target: &str, phase: &str) -> Run {
        Run {
            target: target.to_owned(),
            phase: phase.to_owned(),
            figures: BTreeMap::new(),
            latency: BTreeMap::new(),
            errors: 0,
            error_examples: Vec::new(),
        }
    }

    pub fn set(&mut self, name: &str, v: f64) {
        self.figures.insert(name.to_owned(), v);
    }
}

/// The gateway's figure next to a baseline's.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub phase: String,
    pub figure: String,
    pub baseline: String,
    pub gateway: f64,
    pub baseline_value: f64,
    /// gateway / baseline.
    pub ratio: f64,
    /// gateway − baseline.
    pub delta: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub command: Vec<String>,
    pub config: serde_json::Value,
    pub conditions: Conditions,
    pub runs: Vec<Run>,
    pub comparisons: Vec<Comparison>,
    pub failures: Vec<String>,
    pub pass: bool,
}

/// The machine while the run started: results on a shared 2-core box depend on it.
#[derive(Debug, Serialize)]
pub struct Conditions {
    pub cpus: usize,
    pub loadavg: String,
    pub started_unix: u64,
}

impl Conditions {
    pub fn now() -> Conditions {
        Conditions {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            loadavg: std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

impl Report {
    /// Adds gateway-vs-baseline comparisons of `figures` (and `latency.<hist>.<pct>` keys).
    pub fn compare(&mut self, figures: &[&str]) {
        let phases: Vec<String> = self.runs.iter().map(|r| r.phase.clone()).collect();
        for phase in dedup(phases) {
            let Some(gw) = self
                .runs
                .iter()
                .find(|r| r.phase == phase && r.target == "gateway")
            else {
                continue;
            };
            for base in self
                .runs
                .iter()
                .filter(|r| r.phase == phase && r.target != "gateway")
            {
                for &f in figures {
                    if let (Some(g), Some(b)) = (value(gw, f), value(base, f)) {
                        self.comparisons.push(Comparison {
                            phase: phase.clone(),
                            figure: f.to_owned(),
                            baseline: base.target.clone(),
                            gateway: g,
                            baseline_value: b,
                            ratio: if b != 0.0 { g / b } else { f64::NAN },
                            delta: g - b,
                        });
                    }
                }
            }
        }
    }

    /// The readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\n== aether-load {} ==", self.scenario);
        let phases = dedup(self.runs.iter().map(|r| r.phase.clone()).collect());
        for phase in phases {
            let runs: Vec<&Run> = self.runs.iter().filter(|r| r.phase == phase).collect();
            let _ = writeln!(out, "\n-- {phase} --");
            let _ = write!(out, "{:<34}", "figure");
            for r in &runs {
                let _ = write!(out, "{:>16}", r.target);
            }
            out.push('\n');
            let names = dedup(
                runs.iter()
                    .flat_map(|r| r.figures.keys().cloned())
                    .collect(),
            );
            for name in names {
                let _ = write!(out, "{name:<34}");
                for r in &runs {
                    let cell = r.figures.get(&name).map_or("-".into(), |v| fmt_num(*v));
                    let _ = write!(out, "{cell:>16}");
                }
                out.push('\n');
            }
            let hists = dedup(
                runs.iter()
                    .flat_map(|r| r.latency.keys().cloned())
                    .collect(),
            );
            for h in hists {
                let _ = writeln!(out, "{h:<34}(µs: p50 / p90 / p99 / p99.9 / max, n)");
                for r in &runs {
                    if let Some(s) = r.latency.get(&h) {
                        let _ = writeln!(
                            out,
                            "  {:<14}{:>8} {:>8} {:>8} {:>8} {:>9}  n={}",
                            r.target, s.p50_us, s.p90_us, s.p99_us, s.p999_us, s.max_us, s.count
                        );
                    }
                }
            }
            for r in &runs {
                if r.errors > 0 {
                    let _ = writeln!(out, "  {} errors: {}", r.target, r.errors);
                    for e in r.error_examples.iter().take(5) {
                        let _ = writeln!(out, "    {e}");
                    }
                }
            }
        }
        if !self.comparisons.is_empty() {
            let _ = writeln!(out, "\n-- gateway vs baselines --");
            for c in &self.comparisons {
                let _ = writeln!(
                    out,
                    "{:<22} {:<28} vs {:<7} {:>12} / {:>12} = {:>6.2}x  (Δ {})",
                    c.phase,
                    c.figure,
                    c.baseline,
                    fmt_num(c.gateway),
                    fmt_num(c.baseline_value),
                    c.ratio,
                    fmt_num(c.delta)
                );
            }
        }
        let _ = writeln!(
            out,
            "\n{}",
            if self.pass {
                "PASS: no functional errors".to_owned()
            } else {
                format!("FAIL: {}", self.failures.join("; "))
            }
        );
        out
    }
}

/// A figure by name; `latency.<hist>.p50` style names read the summaries.
fn value(r: &Run, name: &str) -> Option<f64> {
    if let Some(rest) = name.strip_prefix("latency.") {
        let (h, pct) = rest.rsplit_once('.')?;
        let s = r.latency.get(h)?;
        return Some(match pct {
            "p50" => s.p50_us as f64,
            "p90" => s.p90_us as f64,
            "p99" => s.p99_us as f64,
            "p999" => s.p999_us as f64,
            "max" => s.max_us as f64,
            _ => return None,
        });
    }
    r.figures.get(name).copied()
}

fn dedup(v: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in v {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(target: &str, rate: f64, p50: u64) -> Run {
        let mut r = Run::new(target, "relay");
        r.set("round_trips_per_s", rate);
        r.latency.insert(
            "rtt".into(),
            Summary {
                p50_us: p50,
                ..Summary::default()
            },
        );
        r
    }

    #[test]
    fn compares_the_gateway_with_each_baseline() {
        let mut report = Report {
            scenario: "relay".into(),
            command: vec![],
            config: serde_json::Value::Null,
            conditions: Conditions::now(),
            runs: vec![
                run("gateway", 50.0, 300),
                run("direct", 100.0, 200),
                run("nginx", 40.0, 300),
            ],
            comparisons: vec![],
            failures: vec![],
            pass: true,
        };
        report.compare(&["round_trips_per_s", "latency.rtt.p50"]);
        assert_eq!(report.comparisons.len(), 4);
        let direct = &report.comparisons[0];
        assert_eq!((direct.baseline.as_str(), direct.ratio), ("direct", 0.5));
        let p50 = &report.comparisons[1];
        assert_eq!(p50.delta, 100.0);
        assert!(report.table().contains("PASS"));
    }
}
