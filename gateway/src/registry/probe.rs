//! Asking a workspace service how many agent tasks it is running.
//!
//! A running agent task keeps its workspace awake even when no client is connected, so the owner
//! task asks the service periodically (`GET /status`). It is a trait so the owner's timer logic
//! can be tested under paused time, where real sockets cannot be used.

use std::time::Duration;

use async_trait::async_trait;
use protocol::rest::ServiceStatus;

use crate::provider::Endpoint;

/// Reports a workspace's active agent tasks.
#[async_trait]
pub trait TaskProbe: Send + Sync + 'static {
    async fn active_tasks(&self, endpoint: &Endpoint) -> Result<u32, String>;
}

/// The real probe: `GET <endpoint>/status`.
pub struct HttpTaskProbe {
    client: reqwest::Client,
}

impl HttpTaskProbe {
    pub fn new() -> HttpTaskProbe {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .expect("a plain HTTP client always builds");
        HttpTaskProbe { client }
    }
}

impl Default for HttpTaskProbe {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl TaskProbe for HttpTaskProbe {
    async fn active_tasks(&self, endpoint: &Endpoint) -> Result<u32, String> {
        let response = self
            .client
            .get(endpoint.status_url())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status: ServiceStatus = response
            .error_for_status()
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        Ok(status.active_tasks)
    }
}
