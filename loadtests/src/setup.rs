//! What a run is pointed at: the gateway (spawned or given) and the baselines, each turned into a
//! [`Target`] — the WebSocket URL of every workspace and the server processes to sample.
//! [`Setup`] owns every process it started and stops them all in [`Setup::teardown`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use protocol::WorkspaceStatus;

use crate::api::{self, Api};
use crate::cli::{Baseline, Common};
use crate::procfs;
use crate::proxy::Foreground;
use crate::proxy::haproxy::{self, HaproxyConfig, Mode};
use crate::proxy::nginx::{self, NginxConfig};
use crate::servers::{self, GatewaySpawn, Proc};

/// Idle timeout of a spawned gateway when none is given: longer than any run, so nothing stops.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Where the workspace services behind a target are.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Processes the harness started.
    Pids(Vec<u32>),
    /// The children of the gateway (its local provider's services), found at sampling time.
    ChildrenOf(Vec<u32>),
}

/// One thing to measure.
#[derive(Debug, Clone)]
pub struct Target {
    /// `gateway`, `direct`, `nginx`, `haproxy` or `l4`.
    pub name: &'static str,
    /// One WebSocket URL per workspace.
    pub urls: Vec<String>,
    /// The proxy processes whose RSS, fds and CPU are reported (the workspace services
    /// themselves for `direct`).
    pub pids: Vec<u32>,
    /// Add the children of `pids` when sampling (nginx's workers, which it forks after start).
    pub pids_with_children: bool,
    /// The workspace-service processes behind it (sampled separately).
    pub backend: Backend,
    /// Gateways send a `workspace` status first.
    pub expect_status: bool,
    /// A gateway's base URL, to read its `/metrics`.
    pub gateway_base: Option<String>,
}

enum Tokens {
    Fixed(String),
    Secret(String),
}

/// A gateway the run talks to.
pub struct GatewayHandle {
    pub proc: Option<Proc>,
    pub api: Api,
    pub pid: Option<u32>,
    pub ws_base: String,
    tokens: Tokens,
    pub observer: bool,
}

impl Target {
    /// The proxy processes as they are now.
    pub fn proxy_pids(&self) -> Vec<u32> {
        let mut out = self.pids.clone();
        if self.pids_with_children {
            out.extend(self.pids.iter().flat_map(|&p| procfs::children(p)));
        }
        out
    }

    /// The workspace-service processes as they are now.
    pub fn backend_pids(&self) -> Vec<u32> {
        match &self.backend {
            Backend::Pids(p) => p.clone(),
            Backend::ChildrenOf(p) => p.iter().flat_map(|&p| procfs::children(p)).collect(),
        }
    }
}

impl GatewayHandle {
    /// The token of user `u` (every user owns their own workspaces).
    pub fn token(&self, u: usize) -> Result<String> {
        match &self.tokens {
            Tokens::Fixed(t) => Ok(t.clone()),
            Tokens::Secret(s) => api::mint(&format!("aether-load-user-{u}"), s),
        }
    }

    /// Creates a workspace for user `u` and waits for it to leave `creating`.
    pub async fn create(&self, u: usize) -> Result<(String, String)> {
        let token = self.token(u)?;
        let ws = self.api.create(&token, uuid::Uuid::new_v4()).await?;
        let id = ws.id.to_string();
        self.api
            .wait_status(
                &token,
                &id,
                &[WorkspaceStatus::Stopped, WorkspaceStatus::Running],
                Duration::from_secs(60),
            )
            .await?;
        Ok((id, token))
    }

    /// Starts a workspace and waits for `running`.
    pub async fn start(&self, id: &str, token: &str) -> Result<()> {
        self.api.start(token, id).await?;
        self.api
            .wait_status(
                token,
                id,
                &[WorkspaceStatus::Running],
                Duration::from_secs(120),
            )
            .await?;
        Ok(())
    }

    pub fn ws_url(&self, id: &str, token: &str) -> String {
        let observer = if self.observer { "&counts=false" } else { "" };
        format!(
            "{}/workspaces/{id}/ws?token={token}{observer}",
            self.ws_base
        )
    }

    /// `workspaces` workspaces, one user each, started unless `stopped`.
    pub async fn workspaces(&self, n: usize, running: bool) -> Result<Vec<(String, String)>> {
        let mut tasks = Vec::new();
        for u in 0..n {
            let me = (self.api.clone(), self.token(u)?);
            tasks.push(tokio::spawn(async move {
                let (api, token) = me;
                let ws = api.create(&token, uuid::Uuid::new_v4()).await?;
                let id = ws.id.to_string();
                api.wait_status(
                    &token,
                    &id,
                    &[WorkspaceStatus::Stopped, WorkspaceStatus::Running],
                    Duration::from_secs(60),
                )
                .await?;
                if running {
                    api.start(&token, &id).await?;
                    api.wait_status(
                        &token,
                        &id,
                        &[WorkspaceStatus::Running],
                        Duration::from_secs(120),
                    )
                    .await?;
                }
                anyhow::Ok((id, token))
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await??);
        }
        Ok(out)
    }

    /// The gateway as a target over `workspaces` (id, token) pairs.
    pub fn target(&self, workspaces: &[(String, String)]) -> Target {
        let pids: Vec<u32> = self.pid.into_iter().collect();
        Target {
            name: "gateway",
            urls: workspaces
                .iter()
                .map(|(id, t)| self.ws_url(id, t))
                .collect(),
            backend: Backend::ChildrenOf(pids.clone()),
            pids,
            pids_with_children: false,
            expect_status: true,
            gateway_base: Some(self.api.base().to_owned()),
        }
    }
}

/// Everything a run started.
pub struct Setup {
    pub tmp: tempfile::TempDir,
    pub bin_dir: PathBuf,
    pub gateway: Option<GatewayHandle>,
    services: Vec<Proc>,
    proxies: Vec<Foreground>,
}

impl Setup {
    /// Starts or finds the gateway; `idle_timeout` applies to a spawned one.
    pub async fn new(common: &Common, idle_timeout: Option<Duration>) -> Result<Setup> {
        let tmp = tempfile::Builder::new().prefix("aether-load-").tempdir()?;
        let bin_dir = servers::bin_dir(common.bin_dir.as_deref())?;
        let gateway = if common.spawn {
            let secret = format!("aether-load-{}", uuid::Uuid::new_v4().simple());
            let data_dir = tmp.path().join("gateway");
            std::fs::create_dir_all(&data_dir)?;
            let proc = servers::spawn_gateway(GatewaySpawn {
                bin_dir: &bin_dir,
                data_dir: &data_dir,
                secret: &secret,
                idle_timeout: common
                    .idle_timeout
                    .or(idle_timeout)
                    .unwrap_or(DEFAULT_IDLE_TIMEOUT),
                boot_delay: common.boot_delay,
                ports_interval: common.backend_ports_interval,
            })
            .await?;
            Some(GatewayHandle {
                api: Api::new(&format!("http://{}", proc.addr))?,
                pid: Some(proc.pid),
                ws_base: format!("ws://{}", proc.addr),
                proc: Some(proc),
                tokens: Tokens::Secret(secret),
                observer: common.observer,
            })
        } else if let Some(url) = &common.url {
            let tokens = match (&common.token, &common.jwt_secret) {
                (_, Some(s)) => Tokens::Secret(s.clone()),
                (Some(t), None) => Tokens::Fixed(t.clone()),
                (None, None) => bail!("--url needs --token or --jwt-secret"),
            };
            let host = url
                .strip_prefix("http://")
                .context("--url must be http://HOST:PORT (loopback)")?
                .trim_end_matches('/');
            crate::ws::dial_addr(&format!("ws://{host}/"))?;
            Some(GatewayHandle {
                api: Api::new(url)?,
                pid: common.gateway_pid,
                ws_base: format!("ws://{host}"),
                proc: None,
                tokens,
                observer: common.observer,
            })
        } else {
            None
        };
        Ok(Setup {
            tmp,
            bin_dir,
            gateway,
            services: Vec::new(),
            proxies: Vec::new(),
        })
    }

    /// The baselines asked for, over `n` workspace-service processes shared by all of them.
    pub async fn baselines(&mut self, common: &Common, n: usize) -> Result<Vec<Target>> {
        if common.baseline.iter().all(|&b| b == Baseline::None) {
            return Ok(Vec::new());
        }
        let wanted = |b: Baseline| b.wanted(&common.baseline);
        for i in 0..n {
            let dir = self.tmp.path().join(format!("service-{i}"));
            let log = self.tmp.path().join(format!("service-{i}.log"));
            self.services.push(
                servers::spawn_workspace(&self.bin_dir, &dir, log, common.backend_ports_interval)
                    .await?,
            );
        }
        let upstreams: Vec<_> = self.services.iter().map(|s| s.addr).collect();
        let backend: Vec<u32> = self.services.iter().map(|s| s.pid).collect();
        let target = |name, urls, pids, pids_with_children| Target {
            name,
            urls,
            pids,
            pids_with_children,
            backend: Backend::Pids(backend.clone()),
            expect_status: false,
            gateway_base: None,
        };
        let by_path = |addr| (0..n).map(|i| format!("ws://{addr}/w{i}/ws")).collect();
        let mut out = Vec::new();
        if wanted(Baseline::Direct) {
            let urls = upstreams.iter().map(|a| format!("ws://{a}/ws")).collect();
            out.push(target("direct", urls, backend.clone(), false));
        }
        if wanted(Baseline::Nginx) {
            let proxy = nginx::start(NginxConfig {
                bin: &common.nginx_bin,
                prefix: &self.tmp.path().join("nginx"),
                workers: &common.nginx_workers,
                upstreams: &upstreams,
            })
            .await
            .context("nginx baseline")?;
            // nginx's workers are forked after it starts: sample its children too.
            out.push(target(
                "nginx",
                by_path(proxy.addrs[0]),
                vec![proxy.pid],
                true,
            ));
            self.proxies.push(proxy);
        }
        for (name, mode, baseline) in [
            ("haproxy", Mode::Http, Baseline::Haproxy),
            ("l4", Mode::Tcp, Baseline::L4),
        ] {
            if !wanted(baseline) {
                continue;
            }
            let proxy = haproxy::start(HaproxyConfig {
                bin: &common.haproxy_bin,
                dir: &self.tmp.path().join(name),
                mode,
                upstreams: &upstreams,
            })
            .await
            .with_context(|| format!("{name} baseline"))?;
            let urls = match mode {
                Mode::Http => by_path(proxy.addrs[0]),
                Mode::Tcp => proxy.addrs.iter().map(|a| format!("ws://{a}/ws")).collect(),
            };
            out.push(target(name, urls, vec![proxy.pid], false));
            self.proxies.push(proxy);
        }
        Ok(out)
    }

    pub fn gateway(&self) -> Result<&GatewayHandle> {
        self.gateway
            .as_ref()
            .context("this scenario needs a gateway: --spawn or --url")
    }

    /// Stops the proxies, the workspace services and a spawned gateway.
    pub async fn teardown(mut self) {
        for p in &mut self.proxies {
            p.stop().await;
        }
        for s in &mut self.services {
            s.stop().await;
        }
        if let Some(p) = self.gateway.as_mut().and_then(|g| g.proc.as_mut()) {
            // The local provider leaves its workspace services running across a gateway
            // restart (by design, so a restart recovers them); a spawned gateway's services
            // are this run's, so they go with it.
            let services = procfs::children(p.pid);
            p.stop().await;
            servers::terminate(&services, "aether-workspace").await;
        }
    }

    /// The last lines of the spawned gateway's log, for error reports.
    pub fn gateway_log_tail(&self) -> Option<String> {
        self.gateway
            .as_ref()
            .and_then(|g| g.proc.as_ref())
            .map(Proc::log_tail)
    }
}
