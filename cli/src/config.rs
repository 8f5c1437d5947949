//! Where the gateway is and who we are: `AETHER_API_URL` and `AETHER_TOKEN` (or their flags),
//! resolved once so every command reports the same URL in its errors.

use crate::error::CliError;

/// The gateway's default address (its own default listen address).
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8080";

/// The resolved configuration.
#[derive(Clone)]
pub struct Config {
    /// The gateway's HTTP base URL, without a trailing slash.
    pub api_url: String,
    token: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential: never print it by accident.
        f.debug_struct("Config")
            .field("api_url", &self.api_url)
            .field("token", &self.token.as_ref().map(|_| "MASKED"))
            .finish()
    }
}

impl Config {
    pub fn new(api_url: Option<String>, token: Option<String>) -> Result<Config, CliError> {
        let api_url = api_url
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_API_URL.to_owned());
        let api_url = api_url.trim().trim_end_matches('/').to_owned();
        if !(api_url.starts_with("http://") || api_url.starts_with("https://")) {
            return Err(CliError::Usage(format!(
                "AETHER_API_URL must start with http:// or https://, got {api_url:?}"
            )));
        }
        let token = token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
        Ok(Config { api_url, token })
    }

    /// The token, or the error that says how to provide one.
    pub fn token(&self) -> Result<&str, CliError> {
        self.token.as_deref().ok_or(CliError::NoToken)
    }

    /// The WebSocket URL of a workspace: the API URL with `ws`/`wss` and the documented path.
    pub fn ws_url(&self, workspace: &str, query: &[(&str, &str)]) -> String {
        let base = if let Some(rest) = self.api_url.strip_prefix("https://") {
            format!("wss://{rest}")
        } else {
            let rest = self.api_url.trim_start_matches("http://");
            format!("ws://{rest}")
        };
        let mut url = format!("{base}/workspaces/{workspace}/ws");
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(k);
            url.push('=');
            url.push_str(v);
        }
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_trailing_slash() {
        let c = Config::new(None, None).unwrap();
        assert_eq!(c.api_url, DEFAULT_API_URL);
        assert!(matches!(c.token(), Err(CliError::NoToken)));
        let c = Config::new(Some("http://h:1/".into()), Some(" t ".into())).unwrap();
        assert_eq!(c.api_url, "http://h:1");
        assert_eq!(c.token().unwrap(), "t");
        assert!(Config::new(Some("h:1".into()), None).is_err());
    }

    #[test]
    fn ws_urls() {
        let c = Config::new(Some("https://gw.example/api".into()), None).unwrap();
        assert_eq!(c.ws_url("w", &[]), "wss://gw.example/api/workspaces/w/ws");
        let c = Config::new(Some("http://127.0.0.1:8080".into()), None).unwrap();
        assert_eq!(
            c.ws_url("w", &[("start", "false"), ("counts", "false")]),
            "ws://127.0.0.1:8080/workspaces/w/ws?start=false&counts=false"
        );
    }

    #[test]
    fn debug_masks_the_token() {
        let c = Config::new(None, Some("secret-token".into())).unwrap();
        assert!(!format!("{c:?}").contains("secret-token"));
    }
}
