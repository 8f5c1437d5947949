//! The web terminal page, embedded in the binary and served at `/`.
//!
//! The page is static: `web/index.html`, `web/app.js` and `web/style.css` from this crate, plus
//! xterm.js, its stylesheet and its fit addon, which `build.rs` takes from npm into `OUT_DIR`. Nothing
//! is fetched from elsewhere at run time. Everything the page does happens through the same REST API
//! and WebSocket endpoint as any other client, with a token in a header or subprotocol — never in a
//! URL.
//!
//! # Security headers
//!
//! Every response carries a strict Content-Security-Policy: scripts only from this origin (no
//! inline script, no `eval`), connections only to this origin — CSP Level 3 lets `'self'` match
//! `ws:`/`wss:` on the same host and port, which current Chromium, Firefox and Safari implement and
//! the browser test checks — and no framing. Styles allow `'unsafe-inline'` because xterm.js's DOM
//! renderer writes the terminal's theme and cell metrics into `<style>` elements it creates at run
//! time; CSP has no narrower way to allow those, and style injection cannot run code.
//!
//! # Caching
//!
//! The page references its assets as `/assets/<file>?v=<version>`, where the version is a hash of
//! all embedded bytes, so assets can be cached for a year as immutable while a new build is picked
//! up at once: the page itself is `no-cache` and revalidated by its `ETag`.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const STYLE_CSS: &str = include_str!("../web/style.css");
const XTERM_JS: &str = include_str!(concat!(env!("OUT_DIR"), "/xterm.js"));
const XTERM_CSS: &str = include_str!(concat!(env!("OUT_DIR"), "/xterm.css"));
const ADDON_FIT_JS: &str = include_str!(concat!(env!("OUT_DIR"), "/addon-fit.js"));

/// The placeholder in `index.html` replaced by [`ASSET_VERSION`].
const VERSION_PLACEHOLDER: &str = "{{asset_version}}";

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The page's assets by the name they are served under.
const ASSETS: [(&str, &str, &str); 5] = [
    ("app.js", JS, APP_JS),
    ("style.css", CSS, STYLE_CSS),
    ("xterm.js", JS, XTERM_JS),
    ("xterm.css", CSS, XTERM_CSS),
    ("addon-fit.js", JS, ADDON_FIT_JS),
];

/// The policy for the page; see the module docs for why each directive is what it is.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; \
     font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A year: assets are addressed by content version, so they never change under one URL.
const ASSET_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// A short hash of every embedded byte: changes whenever the page or a dependency does.
static ASSET_VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut hasher = DefaultHasher::new();
    INDEX_HTML.hash(&mut hasher);
    for (name, _, body) in ASSETS {
        name.hash(&mut hasher);
        body.hash(&mut hasher);
    }
    format!("{:016x}", hasher.finish())
});

/// The page with its asset URLs versioned.
static INDEX: LazyLock<String> =
    LazyLock::new(|| INDEX_HTML.replace(VERSION_PLACEHOLDER, &ASSET_VERSION));

/// The page's strong `ETag`.
static INDEX_ETAG: LazyLock<String> = LazyLock::new(|| format!("\"{}\"", *ASSET_VERSION));

/// Routes `GET /` (the page) and `GET /assets/{file}` (its scripts and styles).
///
/// Generic over the state so the gateway can merge it into its own router unchanged.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    let etag = INDEX_ETAG.as_str();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let common = [
        (header::CACHE_CONTROL, "no-cache"),
        (header::ETAG, etag),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX.as_str(),
    )
        .into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    let Some((_, content_type, body)) = ASSETS.iter().find(|(name, _, _)| *name == file) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::X_CONTENT_TYPE_OPTIONS, "nosniff")],
            axum::Json(serde_json::json!({ "error": "Not found" })),
        )
            .into_response();
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(ASSET_CACHE_CONTROL),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
        ],
        *body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(uri: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::get(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = router::<()>()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn page_is_served_with_a_strict_policy() {
        let (status, headers, body) = get("/", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        let script_src = csp
            .split(';')
            .map(str::trim)
            .find(|d| d.starts_with("script-src"))
            .unwrap();
        assert_eq!(script_src, "script-src 'self'", "no inline script, no eval");
        assert!(csp.contains("connect-src 'self'"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(!body.contains(VERSION_PLACEHOLDER));
        // Every script is external: an inline one would be refused by the policy anyway.
        for tag in body.split("<script").skip(1) {
            assert!(tag.contains("src="), "inline script in index.html: {tag}");
        }
    }

    #[tokio::test]
    async fn page_revalidates_by_etag() {
        let (_, headers, _) = get("/", &[]).await;
        let etag = headers[header::ETAG].to_str().unwrap().to_owned();
        let (status, _, body) = get("/", &[("if-none-match", &etag)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
    }

    #[tokio::test]
    async fn every_asset_the_page_references_is_served() {
        let (_, _, page) = get("/", &[]).await;
        let mut referenced = 0;
        for (name, content_type, _) in ASSETS {
            let (status, headers, body) =
                get(&format!("/assets/{name}?v={}", *ASSET_VERSION), &[]).await;
            assert_eq!(status, StatusCode::OK, "{name}");
            assert_eq!(headers[header::CONTENT_TYPE], content_type, "{name}");
            assert_eq!(headers[header::CACHE_CONTROL], ASSET_CACHE_CONTROL);
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert!(!body.is_empty(), "{name}");
            assert!(!body.contains("sourceMappingURL"), "{name}");
            if page.contains(&format!("/assets/{name}?v=")) {
                referenced += 1;
            }
        }
        // The page loads app.js and both stylesheets; app.js imports the rest.
        assert_eq!(referenced, 3);
        assert!(APP_JS.contains("./xterm.js") && APP_JS.contains("./addon-fit.js"));
    }

    #[tokio::test]
    async fn unknown_assets_are_not_found() {
        for uri in [
            "/assets/nope.js",
            "/assets/..%2Fsrc%2Fweb.rs",
            "/assets/index.html",
        ] {
            let (status, headers, _) = get(uri, &[]).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
    }
}
