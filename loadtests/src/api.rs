//! The gateway's REST API and `/metrics`, as far as the harness needs them, and per-user token
//! minting (HS256, `sub`, `aud: authenticated`, `exp`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use protocol::{Workspace, WorkspaceStatus};
use tokio::time::Instant;

/// A token for `sub` signed with `secret`, valid for a day (longer than any run).
pub fn mint(sub: &str, secret: &str) -> Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = serde_json::json!({
        "sub": sub,
        "aud": "authenticated",
        "role": "authenticated",
        "iat": now,
        "exp": now + 86_400,
    });
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())?,
    )?)
}

/// A REST client for one gateway.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// `base` is `http://host:port`.
    pub fn new(base: &str) -> Result<Api> {
        Ok(Api {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `POST /projects/{project}/workspaces` with `{}`.
    pub async fn create(&self, token: &str, project: uuid::Uuid) -> Result<Workspace> {
        let resp = self
            .http
            .post(format!("{}/projects/{project}/workspaces", self.base))
            .bearer_auth(token)
            .json(&serde_json::json!({}))
            .send()
            .await?;
        json(resp).await.context("create workspace")
    }

    pub async fn get(&self, token: &str, id: &str) -> Result<Workspace> {
        let resp = self
            .http
            .get(format!("{}/workspaces/{id}", self.base))
            .bearer_auth(token)
            .send()
            .await?;
        json(resp).await.context("get workspace")
    }

    pub async fn start(&self, token: &str, id: &str) -> Result<()> {
        let resp = self
            .http
            .post(format!("{}/workspaces/{id}/start", self.base))
            .bearer_auth(token)
            .send()
            .await?;
        let status = resp.status();
        if !status.is_success() {
            bail!(
                "start {id}: {status} {}",
                resp.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Polls until the workspace is in one of `want`; the REST API has no push.
    pub async fn wait_status(
        &self,
        token: &str,
        id: &str,
        want: &[WorkspaceStatus],
        within: Duration,
    ) -> Result<Workspace> {
        let deadline = Instant::now() + within;
        loop {
            let ws = self.get(token, id).await?;
            if want.contains(&ws.status) {
                return Ok(ws);
            }
            if Instant::now() > deadline {
                bail!("workspace {id} still {} after {within:?}", ws.status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> Result<String> {
        let resp = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?;
        Ok(resp.error_for_status()?.text().await?)
    }

    /// Sum of every sample of `name` whose labels contain `label` (e.g. `reason="idle"`).
    pub async fn metric_sum(&self, name: &str, label: Option<&str>) -> Result<f64> {
        Ok(metric_sum(&self.metrics().await?, name, label))
    }
}

async fn json<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> Result<T> {
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        bail!("{status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("body {text}"))
}

/// Sums the samples of one metric in Prometheus text format (labels summed over).
pub fn metric_sum(text: &str, name: &str, label: Option<&str>) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = if let Some(r) = rest.strip_prefix('{') {
                let end = r.find('}')?;
                (&r[..end], &r[end + 1..])
            } else if rest.starts_with(' ') {
                ("", rest)
            } else {
                return None; // a longer metric name with this prefix
            };
            if label.is_some_and(|want| !labels.contains(want)) {
                return None;
            }
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_labelled_samples() {
        let text = "# TYPE a counter\n\
                    aether_gateway_workspace_starts_total{provider=\"local\"} 2\n\
                    aether_gateway_workspace_starts_total{provider=\"fly\"} 1\n\
                    aether_gateway_workspace_starts_total_created 17\n\
                    aether_gateway_workspace_stops_total{reason=\"idle\"} 3\n\
                    aether_gateway_workspace_stops_total{reason=\"api\"} 4\n\
                    aether_gateway_sessions_active 5\n";
        assert_eq!(
            metric_sum(text, "aether_gateway_workspace_starts_total", None),
            3.0
        );
        assert_eq!(
            metric_sum(
                text,
                "aether_gateway_workspace_stops_total",
                Some("reason=\"idle\"")
            ),
            3.0
        );
        assert_eq!(
            metric_sum(text, "aether_gateway_sessions_active", None),
            5.0
        );
    }

    #[test]
    fn minted_tokens_verify() {
        let t = mint("u1", "s3cret").unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.set_audience(&["authenticated"]);
        let d = jsonwebtoken::decode::<serde_json::Value>(
            &t,
            &jsonwebtoken::DecodingKey::from_secret(b"s3cret").unwrap(),
            &v,
        )
        .unwrap();
        assert_eq!(d.claims["sub"], "u1");
    }
}
