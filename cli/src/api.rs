//! The gateway's REST API, with every failure classified into a [`CliError`] in one place
//! ([`Api::check`]): 401 → not authenticated, 404 → not found, connect failures → unreachable
//! with the URL tried.

use std::time::Duration;

use protocol::rest::{CreateWorkspace, ErrorBody, StatusBody, UpdateWorkspace, WorkspaceList};
use protocol::{Workspace, WorkspaceStatus};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::config::Config;
use crate::error::CliError;
use crate::resolve::{IdArg, resolve_prefix};

/// A REST client for one gateway and one token.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// Turns a transport failure into the error a user can act on.
pub fn transport_error(url: &str, err: &reqwest::Error) -> CliError {
    if err.is_connect() || err.is_timeout() {
        let mut cause = err.to_string();
        // reqwest's top-level message is generic; the root cause says "connection refused".
        let mut source = std::error::Error::source(err);
        while let Some(s) = source {
            cause = s.to_string();
            source = s.source();
        }
        CliError::Unreachable {
            url: url.to_owned(),
            cause,
        }
    } else {
        CliError::Other(format!("request to {url} failed: {err}"))
    }
}

impl Api {
    pub fn new(config: &Config) -> Result<Api, CliError> {
        let token = config.token()?.to_owned();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("aether-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(CliError::other)?;
        Ok(Api {
            http,
            base: config.api_url.clone(),
            token,
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends a request and classifies a failed one; `not_found` words a 404.
    async fn check(&self, req: RequestBuilder, not_found: &str) -> Result<Response, CliError> {
        let resp = req
            .send()
            .await
            .map_err(|e| transport_error(&self.base, &e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error)
            .unwrap_or_else(|_| {
                if text.trim().is_empty() {
                    status.canonical_reason().unwrap_or("error").to_owned()
                } else {
                    text.trim().to_owned()
                }
            });
        Err(match status {
            StatusCode::UNAUTHORIZED => CliError::Unauthorized {
                url: self.base.clone(),
            },
            StatusCode::NOT_FOUND => CliError::NotFound(not_found.to_owned()),
            _ => CliError::Rejected {
                status: status.as_u16(),
                message,
            },
        })
    }

    async fn json<T: DeserializeOwned>(&self, resp: Response) -> Result<T, CliError> {
        resp.json::<T>()
            .await
            .map_err(|e| CliError::Other(format!("unexpected response from {}: {e}", self.base)))
    }

    pub async fn list(&self, status: Option<WorkspaceStatus>) -> Result<Vec<Workspace>, CliError> {
        let mut req = self.request(Method::GET, "/workspaces");
        if let Some(status) = status {
            req = req.query(&[("status", status.as_str())]);
        }
        let resp = self.check(req, "not found").await?;
        Ok(self.json::<WorkspaceList>(resp).await?.workspaces)
    }

    pub async fn get(&self, id: Uuid) -> Result<Workspace, CliError> {
        let req = self.request(Method::GET, &format!("/workspaces/{id}"));
        let resp = self.check(req, &not_found(id)).await?;
        self.json(resp).await
    }

    pub async fn create(
        &self,
        project: Uuid,
        body: &CreateWorkspace,
    ) -> Result<Workspace, CliError> {
        let req = self
            .request(Method::POST, &format!("/projects/{project}/workspaces"))
            .json(body);
        let resp = self
            .check(req, &format!("project {project} not found"))
            .await?;
        self.json(resp).await
    }

    pub async fn update(&self, id: Uuid, body: &UpdateWorkspace) -> Result<Workspace, CliError> {
        let req = self
            .request(Method::PATCH, &format!("/workspaces/{id}"))
            .json(body);
        let resp = self.check(req, &not_found(id)).await?;
        self.json(resp).await
    }

    pub async fn start(&self, id: Uuid) -> Result<StatusBody, CliError> {
        let req = self.request(Method::POST, &format!("/workspaces/{id}/start"));
        let resp = self.check(req, &not_found(id)).await?;
        self.json(resp).await
    }

    pub async fn stop(&self, id: Uuid) -> Result<StatusBody, CliError> {
        let req = self.request(Method::POST, &format!("/workspaces/{id}/stop"));
        let resp = self.check(req, &not_found(id)).await?;
        self.json(resp).await
    }

    pub async fn delete(&self, id: Uuid) -> Result<(), CliError> {
        let req = self.request(Method::DELETE, &format!("/workspaces/{id}"));
        self.check(req, &not_found(id)).await?;
        Ok(())
    }

    /// A workspace id from a full id or a unique prefix.
    pub async fn resolve(&self, arg: &str) -> Result<Uuid, CliError> {
        match IdArg::parse(arg)? {
            IdArg::Full(id) => Ok(id),
            IdArg::Prefix(prefix) => {
                let all = self.list(None).await?;
                resolve_prefix(&prefix, all.iter().map(|w| w.id))
            }
        }
    }
}

fn not_found(id: Uuid) -> String {
    format!("workspace {id} not found (or it is not yours)")
}
