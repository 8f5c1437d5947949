//! Resource figures of local server processes, read from `/proc`: resident memory (`VmRSS`),
//! open file descriptors and CPU time (`utime + stime`). The harness samples before and after a
//! phase and reports the difference, so only what the load added is counted.

use std::sync::OnceLock;

use serde::Serialize;

/// One sample of a set of processes (summed).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Sample {
    pub rss_kib: u64,
    pub fds: u64,
    /// User + system CPU time in microseconds.
    pub cpu_us: u64,
}

impl Sample {
    /// Sums the figures of `pids`; processes that are gone count as zero.
    pub fn of(pids: &[u32]) -> Sample {
        let mut s = Sample::default();
        for &pid in pids {
            s.rss_kib += rss_kib(pid).unwrap_or(0);
            s.fds += fds(pid).unwrap_or(0);
            s.cpu_us += cpu_us(pid).unwrap_or(0);
        }
        s
    }
}

/// `VmRSS` of a process in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Number of open file descriptors.
pub fn fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// `utime + stime` in microseconds.
pub fn cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces: fields are counted after its closing ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at indexes 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1_000_000 / clock_ticks())
}

/// TCP sockets in `TIME_WAIT` on this machine (the `tw` figure of `/proc/net/sockstat`).
pub fn time_wait_sockets() -> Option<u64> {
    parse_time_wait(&std::fs::read_to_string("/proc/net/sockstat").ok()?)
}

fn parse_time_wait(sockstat: &str) -> Option<u64> {
    let tcp = sockstat.lines().find_map(|l| l.strip_prefix("TCP:"))?;
    let mut fields = tcp.split_whitespace();
    while let Some(name) = fields.next() {
        let value = fields.next()?;
        if name == "tw" {
            return value.parse().ok();
        }
    }
    None
}

/// Children of a process (one level), e.g. nginx's workers under its master.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path().join("children");
        if let Ok(text) = std::fs::read_to_string(path) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// `CLK_TCK`, asked of `getconf` once (no libc: the workspace forbids unsafe code); 100 otherwise.
fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(fds(pid).unwrap() > 0);
        assert!(cpu_us(pid).is_some());
    }

    #[test]
    fn reads_time_wait_of_sockstat() {
        let text =
            "sockets: used 12\nTCP: inuse 1 orphan 0 tw 726 alloc 1 mem 95\nUDP: inuse 0 mem 0\n";
        assert_eq!(parse_time_wait(text), Some(726));
        assert_eq!(parse_time_wait("UDP: inuse 0 mem 0\n"), None);
        assert!(time_wait_sockets().is_some());
    }
}
