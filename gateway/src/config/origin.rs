//! The `Origin` allow-list: which browser pages may open sessions.
//!
//! Browsers send `Origin` on WebSocket upgrades; a page from another site must not be able to
//! ride on a user's token (cross-site WebSocket hijacking). Allowed are: the gateway's own origin
//! (the `Origin` names the same scheme-relative authority as the `Host` header, i.e. the web page
//! the gateway serves), the configured origins, and `http(s)://localhost|127.0.0.1|[::1]` on the
//! gateway's port. Origins compare after normalization (lower-case host, default port dropped),
//! as browsers serialize them. `Origin: null` (sandboxed frames, `file://`) is never allowed.

use url::Url;

/// `scheme://host[:port]` in the browser's serialization, or why `origin` is not one.
pub(super) fn normalize(origin: &str) -> Result<String, String> {
    let url = Url::parse(origin).map_err(|e| format!("not an origin: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {:?} is not http or https", url.scheme()));
    }
    if url.host().is_none() {
        return Err("has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials".into());
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err("must be scheme://host[:port] with no path, query or fragment".into());
    }
    Ok(url.origin().ascii_serialization())
}

/// Whether a page at `origin` may connect; see the module doc.
pub(super) fn allowed(
    configured: &[String],
    origin: &str,
    host_header: Option<&str>,
    port: u16,
) -> bool {
    let Ok(url) = Url::parse(origin.trim()) else {
        return false;
    };
    let Ok(normalized) = normalize(origin.trim()) else {
        return false;
    };

    if let Some(host) = host_header.map(str::trim).filter(|h| !h.is_empty())
        && !host.contains(['/', '@', '?', '#'])
        && let Ok(own) = Url::parse(&format!("{}://{host}", url.scheme()))
        && own.origin().ascii_serialization() == normalized
    {
        return true;
    }

    let local_host = match url.host_str() {
        Some(h) => matches!(h, "localhost" | "127.0.0.1" | "[::1]"),
        None => false,
    };
    if local_host && url.port_or_known_default() == Some(port) {
        return true;
    }

    configured
        .iter()
        .filter_map(|c| normalize(c.trim()).ok())
        .any(|c| c == normalized)
}

/// Whether a `Host` header names this machine's loopback interface (`localhost`, `127.0.0.1`,
/// `[::1]`, any port).
///
/// Endpoints that trust loopback peers (`POST /auth/local-token`) should also require this:
/// under DNS rebinding a hostile page's own name resolves to 127.0.0.1, so its requests come
/// from a loopback peer and look same-origin, but they still carry the hostile `Host`.
pub fn is_loopback_host(host_header: Option<&str>) -> bool {
    let Some(host) = host_header.map(str::trim).filter(|h| !h.is_empty()) else {
        return false;
    };
    if host.contains(['/', '@', '?', '#']) {
        return false;
    }
    let Ok(url) = Url::parse(&format!("http://{host}")) else {
        return false;
    };
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn same_origin_as_host_is_allowed() {
        assert!(allowed(
            &[],
            "http://gw.example:8080",
            Some("gw.example:8080"),
            1
        ));
        assert!(allowed(&[], "https://GW.example", Some("gw.example"), 1));
        assert!(allowed(
            &[],
            "https://gw.example",
            Some("gw.example:443"),
            1
        ));
        assert!(!allowed(
            &[],
            "https://gw.example",
            Some("gw.example:8443"),
            1
        ));
        assert!(!allowed(&[], "http://evil.example", Some("gw.example"), 1));
        assert!(!allowed(&[], "http://evil.example", None, 1));
        // A Host header that tries to smuggle URL parts does not match.
        assert!(!allowed(&[], "http://a.example", Some("a.example/x"), 1));
    }

    #[test]
    fn localhost_on_the_listen_port_is_allowed() {
        for o in [
            "http://localhost:8080",
            "http://127.0.0.1:8080",
            "http://[::1]:8080",
            "https://localhost:8080",
        ] {
            assert!(allowed(&[], o, None, 8080), "{o}");
        }
        assert!(!allowed(&[], "http://localhost:9999", None, 8080));
        assert!(!allowed(&[], "http://localhost", None, 8080));
    }

    #[test]
    fn configured_origins_are_allowed_after_normalization() {
        let configured = list(&["https://App.Example.com/", "http://dev.example:3000"]);
        assert!(allowed(&configured, "https://app.example.com", None, 1));
        assert!(allowed(&configured, "https://app.example.com:443", None, 1));
        assert!(allowed(&configured, "http://dev.example:3000", None, 1));
        assert!(!allowed(&configured, "http://app.example.com", None, 1));
        assert!(!allowed(&configured, "http://dev.example:3001", None, 1));
    }

    #[test]
    fn null_and_garbage_origins_are_refused() {
        let configured = list(&["https://app.example.com"]);
        for o in [
            "null",
            "",
            "app.example.com",
            "file:///etc",
            "https://app.example.com/path",
        ] {
            assert!(!allowed(&configured, o, Some("app.example.com"), 1), "{o}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:8080",
            "LOCALHOST",
            "127.0.0.1:1",
            "127.0.0.2",
            "[::1]:8080",
        ] {
            assert!(is_loopback_host(Some(h)), "{h}");
        }
        for h in [
            "",
            "evil.example",
            "evil.example:8080",
            "0.0.0.0",
            "10.0.0.1",
            "localhost.evil.example",
            "localhost/x",
        ] {
            assert!(!is_loopback_host(Some(h)), "{h}");
        }
        assert!(!is_loopback_host(None));
    }

    #[test]
    fn normalize_explains_what_is_wrong() {
        assert_eq!(
            normalize("https://a.example:443/").unwrap(),
            "https://a.example"
        );
        assert!(normalize("ftp://a.example").unwrap_err().contains("scheme"));
        assert!(
            normalize("https://a.example/x")
                .unwrap_err()
                .contains("path")
        );
        assert!(
            normalize("https://u:p@a.example")
                .unwrap_err()
                .contains("credentials")
        );
        assert!(normalize("nonsense").is_err());
    }
}
