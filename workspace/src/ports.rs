//! The `ports` channel: listening TCP ports found by polling `/proc/net/tcp` and `/proc/net/tcp6`.
//!
//! About once a second the tables are read; sockets in state LISTEN (`0A`) are the open ports,
//! one entry per port number (a port bound on both IPv4 and IPv6 is one port). A newly seen port's
//! socket inode is mapped to its process by scanning `/proc/*/fd` for `socket:[inode]` (only when
//! something new appeared, so the steady state costs two small file reads). Sockets get `open` for
//! every port on connect, then `open`/`close` as they change. Ports 22, 2222 and 3001, and the
//! service's own port, are never reported. `kill {port}` sends SIGTERM to the listening process,
//! then SIGKILL if it still holds the port two seconds later.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use protocol::ServerMessage;
use protocol::ports::{HIDDEN_PORTS, PortsClient, PortsServer};
use tokio_util::sync::CancellationToken;

use crate::outbox::{Fanout, Outbox, SocketId, encode};

/// How long `kill` waits after SIGTERM before SIGKILL.
const KILL_AFTER_TERM: Duration = Duration::from_secs(2);

/// Why a ports request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PortsError {
    #[error("no listening process found on port {0}")]
    NotListening(u16),
    #[error("port {0} belongs to the workspace service itself")]
    OwnPort(u16),
    #[error("could not signal process {pid}: {err}")]
    Signal { pid: u32, err: nix::Error },
}

/// One open port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PortInfo {
    pub(crate) inode: u64,
    pub(crate) pid: Option<u32>,
    pub(crate) process: Option<String>,
}

struct Inner {
    open: BTreeMap<u16, PortInfo>,
    fanout: Fanout,
}

/// The port table and the sockets following it.
pub(crate) struct Ports {
    inner: Mutex<Inner>,
    /// Serializes scans (the timer's and `kill`'s), so that an older scan never undoes a newer.
    scanning: Mutex<()>,
    hidden: Vec<u16>,
}

impl Ports {
    /// `own_port` is hidden along with [`HIDDEN_PORTS`].
    pub(crate) fn new(own_port: u16) -> Arc<Ports> {
        let mut hidden = HIDDEN_PORTS.to_vec();
        hidden.push(own_port);
        Arc::new(Ports {
            inner: Mutex::new(Inner {
                open: BTreeMap::new(),
                fanout: Fanout::default(),
            }),
            scanning: Mutex::new(()),
            hidden,
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("ports state poisoned")
    }

    /// Subscribes a socket: `open` for every known port, then changes.
    pub(crate) fn subscribe(&self, outbox: &Outbox) {
        let mut inner = self.inner();
        for (port, info) in &inner.open {
            outbox.reply_msg(&open_msg(*port, info));
        }
        inner.fanout.insert(outbox.clone());
    }

    pub(crate) fn unsubscribe(&self, socket: SocketId) {
        self.inner().fanout.remove(socket);
    }

    /// Polls until `shutdown`.
    pub(crate) async fn run(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let this = self.clone();
            // /proc reads are blocking file I/O.
            let _ = tokio::task::spawn_blocking(move || this.poll()).await;
        }
    }

    /// One scan: diff against the table, fan out the changes.
    pub(crate) fn poll(&self) {
        // Held for the whole scan, on a blocking-pool thread; never across an `.await`.
        let _scan = self.scanning.lock().expect("ports scan lock poisoned");
        let listening = listening_sockets(&self.hidden);
        let known: HashMap<u16, u64> = self
            .inner()
            .open
            .iter()
            .map(|(p, i)| (*p, i.inode))
            .collect();
        let new_inodes: HashSet<u64> = listening
            .iter()
            .filter(|(port, inode)| known.get(port) != Some(inode))
            .map(|(_, inode)| *inode)
            .collect();
        let owners = if new_inodes.is_empty() {
            HashMap::new()
        } else {
            socket_owners(&new_inodes)
        };
        let mut inner = self.inner();
        let gone: Vec<u16> = inner
            .open
            .iter()
            .filter(|(port, info)| listening.get(port) != Some(&info.inode))
            .map(|(port, _)| *port)
            .collect();
        for port in gone {
            inner.open.remove(&port);
            inner
                .fanout
                .send(&encode(&ServerMessage::Ports(PortsServer::Close { port })));
        }
        for (port, inode) in &listening {
            if inner.open.contains_key(port) {
                continue;
            }
            let pid = owners.get(inode).copied();
            let info = PortInfo {
                inode: *inode,
                pid,
                process: pid.and_then(process_name),
            };
            let frame = encode(&open_msg(*port, &info));
            inner.open.insert(*port, info);
            inner.fanout.send(&frame);
        }
    }

    pub(crate) fn handle(self: &Arc<Self>, msg: PortsClient) -> Result<(), PortsError> {
        match msg {
            PortsClient::Kill { port } => self.kill(port),
        }
    }

    fn kill(self: &Arc<Self>, port: u16) -> Result<(), PortsError> {
        let pid = self.pid_of(port).ok_or(PortsError::NotListening(port))?;
        if pid == std::process::id() {
            return Err(PortsError::OwnPort(port));
        }
        let target = Pid::from_raw(i32::try_from(pid).map_err(|_| PortsError::NotListening(port))?);
        kill(target, Signal::SIGTERM).map_err(|err| PortsError::Signal { pid, err })?;
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(KILL_AFTER_TERM).await;
            let still = tokio::task::spawn_blocking(move || {
                this.poll();
                this.pid_of_known(port)
            })
            .await
            .ok()
            .flatten();
            if still == Some(pid) {
                let _ = kill(target, Signal::SIGKILL);
            }
        });
        Ok(())
    }

    fn pid_of_known(&self, port: u16) -> Option<u32> {
        self.inner().open.get(&port).and_then(|i| i.pid)
    }

    /// The pid listening on `port`, from the table or (for a port not seen yet) a fresh scan.
    fn pid_of(&self, port: u16) -> Option<u32> {
        if let Some(pid) = self.pid_of_known(port) {
            return Some(pid);
        }
        let listening = listening_sockets(&self.hidden);
        let inode = *listening.get(&port)?;
        socket_owners(&HashSet::from([inode])).get(&inode).copied()
    }
}

fn open_msg(port: u16, info: &PortInfo) -> ServerMessage {
    ServerMessage::Ports(PortsServer::Open {
        port,
        pid: info.pid,
        process: info.process.clone(),
    })
}

/// Listening ports (not hidden) and their socket inodes, from both tables.
fn listening_sockets(hidden: &[u16]) -> BTreeMap<u16, u64> {
    let mut out = BTreeMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            for (port, inode) in parse_table(&text) {
                if !hidden.contains(&port) {
                    out.entry(port).or_insert(inode);
                }
            }
        }
    }
    out
}

/// Parses a `/proc/net/tcp{,6}` table: `(local port, inode)` of the sockets in LISTEN.
pub(crate) fn parse_table(text: &str) -> Vec<(u16, u64)> {
    const LISTEN: &str = "0A";
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
            if fields.len() < 10 || fields[3] != LISTEN {
                return None;
            }
            let port_hex = fields[1].rsplit(':').next()?;
            let port = u16::from_str_radix(port_hex, 16).ok()?;
            let inode = fields[9].parse::<u64>().ok()?;
            Some((port, inode))
        })
        .collect()
}

/// Maps socket inodes to the pid of a process holding them, scanning `/proc/*/fd`.
fn socket_owners(inodes: &HashSet<u64>) -> HashMap<u64, u32> {
    let mut found = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            if inodes.contains(&inode) {
                found.entry(inode).or_insert(pid);
            }
        }
        if found.len() == inodes.len() {
            break;
        }
    }
    found
}

fn process_name(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_owned())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_sockets_only() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0BB9 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 22222 1 0000000000000000 100 0 0 10 0
   2: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 33333 1 0000000000000000 100 0 0 10 0
";
        assert_eq!(parse_table(table), vec![(3001, 12345), (8000, 33333)]);
    }

    #[test]
    fn parses_ipv6_table() {
        let table = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
";
        assert_eq!(parse_table(table), vec![(8080, 4242)]);
    }
}
