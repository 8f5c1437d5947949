//! Public keys from a JWKS URL (Supabase's asymmetric signing keys), cached.
//!
//! The cache answers from memory while its keys are fresh. It fetches again when:
//! - a token names a `kid` it does not know (keys rotate), or
//! - its keys are older than `max_age`,
//!
//! but never more than once per `min_refetch_interval` (default 30 s), so a flood of tokens with
//! made-up `kid`s cannot turn the gateway into a load generator against the key server. When a
//! fetch fails, the keys it already has keep being served (stale beats an outage of every login).
//! Fetches are single-flight: concurrent callers wait for the one fetch in progress.
//!
//! Only `ES256` (EC P-256) and `RS256` (RSA) keys are kept; each key allows exactly one
//! algorithm, taken from its `alg` or, when absent, from its `kty`/`crv`. Keys meant for
//! encryption (`use: enc`) and keys of other types are skipped.
//!
//! Time comes from `tokio::time`, so the rate limit is tested with paused time; the source of the
//! key set is a trait so those tests need no network.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::time::Instant;

use super::AuthError;

/// Default for `auth.jwks_refetch_interval`: the least time between two fetches.
pub const DEFAULT_MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Default for `auth.jwks_cache_ttl`: how long fetched keys count as fresh.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);
/// A JWKS document larger than this is refused (real ones are a few KiB).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Bound on one HTTP fetch, so a hanging key server cannot hold logins forever.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a key set could not be fetched. The message never contains a token.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request failed: {0}")]
    Http(String),
    #[error("key server answered {0}")]
    Status(u16),
    #[error("key set larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("key set is not a JWKS document: {0}")]
    Parse(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// Where a key set comes from. The gateway uses [`HttpJwks`]; tests use an in-memory source.
#[async_trait]
pub trait JwksSource: Send + Sync + 'static {
    /// The raw JWKS document (`{"keys": [...]}`).
    async fn fetch(&self) -> Result<Vec<u8>, FetchError>;
}

/// A JWKS fetched over HTTP(S).
#[derive(Debug, Clone)]
pub struct HttpJwks {
    client: reqwest::Client,
    url: url::Url,
}

impl HttpJwks {
    /// A source for `url`. Fails only if the HTTP client cannot be set up (TLS roots, resolver).
    pub fn new(url: url::Url) -> Result<HttpJwks, FetchError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("aether-gateway/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| FetchError::Http(e.to_string()))?;
        Ok(HttpJwks { client, url })
    }
}

#[async_trait]
impl JwksSource for HttpJwks {
    async fn fetch(&self) -> Result<Vec<u8>, FetchError> {
        let fetch = async {
            let mut response = self
                .client
                .get(self.url.clone())
                .header(http::header::ACCEPT, "application/json")
                .send()
                .await
                .map_err(|e| FetchError::Http(e.without_url().to_string()))?;
            if !response.status().is_success() {
                return Err(FetchError::Status(response.status().as_u16()));
            }
            if response
                .content_length()
                .is_some_and(|len| len > MAX_JWKS_BYTES as u64)
            {
                return Err(FetchError::TooLarge);
            }
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| FetchError::Http(e.without_url().to_string()))?
            {
                if body.len() + chunk.len() > MAX_JWKS_BYTES {
                    return Err(FetchError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        };
        tokio::time::timeout(FETCH_TIMEOUT, fetch)
            .await
            .map_err(|_| FetchError::Timeout(FETCH_TIMEOUT))?
    }
}

/// One usable public key and the single algorithm it verifies.
#[derive(Clone)]
pub struct VerifyKey {
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The usable keys of one JWKS document.
#[derive(Debug, Default)]
struct KeySet {
    by_kid: HashMap<String, VerifyKey>,
    /// Keys without a `kid`, for tokens without one.
    anonymous: Vec<VerifyKey>,
}

impl KeySet {
    /// Parses a JWKS document, keeping the keys this gateway can use and skipping the rest (one
    /// odd key must not take the whole set down).
    fn parse(body: &[u8]) -> Result<KeySet, FetchError> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let doc: Document =
            serde_json::from_slice(body).map_err(|e| FetchError::Parse(e.to_string()))?;
        let mut set = KeySet::default();
        for value in doc.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
                tracing::debug!("skipping a JWKS key this gateway cannot parse");
                continue;
            };
            let Some(key) = usable_key(&jwk) else {
                tracing::debug!(kid = ?jwk.common.key_id, "skipping a JWKS key that is not ES256 or RS256");
                continue;
            };
            match jwk.common.key_id {
                Some(kid) => {
                    set.by_kid.insert(kid, key);
                }
                None => set.anonymous.push(key),
            }
        }
        Ok(set)
    }

    /// The key for `kid`; without a `kid`, the only anonymous key of `algorithm`, if exactly one.
    fn find(&self, kid: Option<&str>, algorithm: Algorithm) -> Option<VerifyKey> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned(),
            None => {
                let mut matching = self.anonymous.iter().filter(|k| k.algorithm == algorithm);
                match (matching.next(), matching.next()) {
                    (Some(key), None) => Some(key.clone()),
                    _ => None,
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.by_kid.len() + self.anonymous.len()
    }
}

/// The algorithm a JWK may verify, and its decoding key; `None` for keys we do not accept.
fn usable_key(jwk: &Jwk) -> Option<VerifyKey> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::EllipticCurve(ec), Some(KeyAlgorithm::ES256) | None)
            if ec.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::RS256) | None) => Algorithm::RS256,
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyKey { algorithm, key })
}

/// What the cache knows; behind a `std::sync::Mutex` because every access is a short copy in or
/// out, never held across an `.await`.
#[derive(Default)]
struct CacheState {
    keys: Option<Arc<KeySet>>,
    /// When the current keys were fetched.
    fetched_at: Option<Instant>,
    /// When the last fetch (successful or not) started: the rate limit counts attempts.
    attempted_at: Option<Instant>,
    /// Counts attempts, so a waiter can tell that a fetch happened while it waited.
    attempts: u64,
    /// Whether the last attempt failed.
    last_failed: bool,
}

/// A cached JWKS with a bounded refetch rate. Cheap to share behind an `Arc`.
pub struct JwksCache {
    source: Box<dyn JwksSource>,
    state: Mutex<CacheState>,
    /// Single-flight gate: held (across the fetch's `.await`, which is why it is tokio's mutex)
    /// by the one caller that fetches.
    fetch_gate: tokio::sync::Mutex<()>,
    min_refetch_interval: Duration,
    max_age: Duration,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("min_refetch_interval", &self.min_refetch_interval)
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

impl JwksCache {
    pub fn new(
        source: impl JwksSource,
        min_refetch_interval: Duration,
        max_age: Duration,
    ) -> JwksCache {
        JwksCache {
            source: Box::new(source),
            state: Mutex::new(CacheState::default()),
            fetch_gate: tokio::sync::Mutex::new(()),
            min_refetch_interval,
            max_age,
        }
    }

    /// How many fetches were attempted so far (for tests and diagnostics).
    pub fn fetch_attempts(&self) -> u64 {
        self.lock().attempts
    }

    /// Fetches now unless rate-limited; for warming the cache at start-up. Returns whether usable
    /// keys are present afterwards.
    pub async fn prefetch(&self) -> bool {
        self.refresh(None).await;
        self.lock().keys.is_some()
    }

    /// The key for a token's `kid` (or the single anonymous key of `algorithm` when the token has
    /// no `kid`), fetching first when that is allowed and needed.
    pub async fn key(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<VerifyKey, AuthError> {
        let (keys, fresh) = self.snapshot();
        if let Some(keys) = &keys
            && let Some(key) = keys.find(kid, algorithm)
        {
            if !fresh {
                // Known key but old set: refresh if allowed, and serve the old key if that fails.
                self.refresh(Some(keys)).await;
                let (newer, _) = self.snapshot();
                if let Some(newer) = newer
                    && let Some(key) = newer.find(kid, algorithm)
                {
                    return Ok(key);
                }
                // The key server no longer lists this key: it was revoked.
                if !self.lock().last_failed {
                    return Err(AuthError::UnknownKey);
                }
            }
            return Ok(key);
        }

        // Unknown key: maybe it rotated in since the last fetch.
        self.refresh(keys.as_ref()).await;
        let (keys, _) = self.snapshot();
        match keys.and_then(|k| k.find(kid, algorithm)) {
            Some(key) => Ok(key),
            None => {
                let state = self.lock();
                if state.keys.is_none() && state.attempts > 0 && state.last_failed {
                    Err(AuthError::JwksUnavailable)
                } else {
                    Err(AuthError::UnknownKey)
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        // A panic while holding this lock cannot leave the plain-data state inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current keys, and whether they are younger than `max_age`.
    fn snapshot(&self) -> (Option<Arc<KeySet>>, bool) {
        let state = self.lock();
        let fresh = state
            .fetched_at
            .is_some_and(|at| at.elapsed() < self.max_age);
        (state.keys.clone(), fresh)
    }

    /// Fetches the key set unless one was attempted within `min_refetch_interval`. `seen` is the
    /// set the caller looked at: if another caller replaced it while this one waited for the gate,
    /// there is nothing left to do.
    async fn refresh(&self, seen: Option<&Arc<KeySet>>) {
        let attempts_before = self.lock().attempts;
        let _gate = self.fetch_gate.lock().await;
        {
            let state = self.lock();
            if state.attempts != attempts_before {
                // A fetch finished while we waited; its result (or failure) is ours too.
                return;
            }
            if let (Some(current), Some(seen)) = (&state.keys, seen)
                && !Arc::ptr_eq(current, seen)
            {
                return;
            }
            if state
                .attempted_at
                .is_some_and(|at| at.elapsed() < self.min_refetch_interval)
            {
                return;
            }
        }
        let started = Instant::now();
        let result = self.source.fetch().await;
        let parsed = result.and_then(|body| KeySet::parse(&body));
        let mut state = self.lock();
        state.attempts += 1;
        state.attempted_at = Some(started);
        match parsed {
            Ok(set) => {
                tracing::debug!(keys = set.len(), "fetched JWKS");
                state.keys = Some(Arc::new(set));
                state.fetched_at = Some(started);
                state.last_failed = false;
            }
            Err(e) => {
                tracing::warn!(error = %e, stale = state.keys.is_some(), "JWKS fetch failed");
                state.last_failed = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::EncodingKey;
    use std::sync::atomic::{AtomicU64, Ordering};

    const EC_KEY: &[u8] = include_bytes!("../../tests/fixtures/es256.pem");

    fn ec_jwk(kid: Option<&str>) -> serde_json::Value {
        let key = EncodingKey::from_ec_pem(EC_KEY).unwrap();
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        jwk.common.key_id = kid.map(str::to_owned);
        serde_json::to_value(jwk).unwrap()
    }

    /// An in-memory key server whose answer and reachability the test controls.
    #[derive(Clone, Default)]
    struct FakeSource {
        inner: Arc<FakeInner>,
    }

    #[derive(Default)]
    struct FakeInner {
        body: Mutex<Option<Vec<u8>>>,
        calls: AtomicU64,
    }

    impl FakeSource {
        fn serve(&self, keys: Vec<serde_json::Value>) {
            let doc = serde_json::json!({ "keys": keys });
            *self.inner.body.lock().unwrap() = Some(serde_json::to_vec(&doc).unwrap());
        }
        fn fail(&self) {
            *self.inner.body.lock().unwrap() = None;
        }
        fn calls(&self) -> u64 {
            self.inner.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl JwksSource for FakeSource {
        async fn fetch(&self) -> Result<Vec<u8>, FetchError> {
            self.inner.calls.fetch_add(1, Ordering::SeqCst);
            let body = self.inner.body.lock().unwrap().clone();
            body.ok_or(FetchError::Status(503))
        }
    }

    fn cache(source: &FakeSource) -> JwksCache {
        JwksCache::new(
            source.clone(),
            DEFAULT_MIN_REFETCH_INTERVAL,
            DEFAULT_MAX_AGE,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_kid_refetches_at_most_once_per_interval() {
        let source = FakeSource::default();
        source.serve(vec![ec_jwk(Some("a"))]);
        let cache = cache(&source);

        cache.key(Some("a"), Algorithm::ES256).await.unwrap();
        assert_eq!(source.calls(), 1);
        // Cached: no fetch.
        cache.key(Some("a"), Algorithm::ES256).await.unwrap();
        assert_eq!(source.calls(), 1);

        // A rotated-in key inside the window is not fetched for: the window counts attempts.
        source.serve(vec![ec_jwk(Some("a")), ec_jwk(Some("b"))]);
        for _ in 0..20 {
            let err = cache.key(Some("b"), Algorithm::ES256).await.unwrap_err();
            assert_eq!(err, AuthError::UnknownKey);
        }
        assert_eq!(source.calls(), 1);

        tokio::time::advance(DEFAULT_MIN_REFETCH_INTERVAL).await;
        cache.key(Some("b"), Algorithm::ES256).await.unwrap();
        assert_eq!(source.calls(), 2);

        // Made-up kids: one fetch per window, however many tokens ask.
        for _ in 0..20 {
            assert_eq!(
                cache.key(Some("zzz"), Algorithm::ES256).await.unwrap_err(),
                AuthError::UnknownKey
            );
        }
        assert_eq!(source.calls(), 2);
        tokio::time::advance(DEFAULT_MIN_REFETCH_INTERVAL + Duration::from_secs(1)).await;
        for _ in 0..20 {
            let _ = cache.key(Some("zzz"), Algorithm::ES256).await;
        }
        assert_eq!(source.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_keys_are_served_when_the_source_fails() {
        let source = FakeSource::default();
        source.serve(vec![ec_jwk(Some("a"))]);
        let cache = cache(&source);
        cache.key(Some("a"), Algorithm::ES256).await.unwrap();

        source.fail();
        tokio::time::advance(DEFAULT_MAX_AGE + Duration::from_secs(1)).await;
        // Old set: a refetch is tried, fails, and the cached key is still served.
        cache.key(Some("a"), Algorithm::ES256).await.unwrap();
        assert_eq!(source.calls(), 2);
        // Within the window no new attempt is made.
        cache.key(Some("a"), Algorithm::ES256).await.unwrap();
        assert_eq!(source.calls(), 2);
        // Unknown kids are unknown, not "unavailable": we do have keys.
        assert_eq!(
            cache.key(Some("b"), Algorithm::ES256).await.unwrap_err(),
            AuthError::UnknownKey
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_that_never_answered_is_unavailable() {
        let source = FakeSource::default();
        let cache = cache(&source);
        assert_eq!(
            cache.key(Some("a"), Algorithm::ES256).await.unwrap_err(),
            AuthError::JwksUnavailable
        );
        // Recovers after the window once the source is back.
        source.serve(vec![ec_jwk(Some("a"))]);
        assert_eq!(
            cache.key(Some("a"), Algorithm::ES256).await.unwrap_err(),
            AuthError::JwksUnavailable
        );
        tokio::time::advance(DEFAULT_MIN_REFETCH_INTERVAL).await;
        cache.key(Some("a"), Algorithm::ES256).await.unwrap();
        assert_eq!(source.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_dropped_from_the_set_is_refused_after_refresh() {
        let source = FakeSource::default();
        source.serve(vec![ec_jwk(Some("a"))]);
        let cache = cache(&source);
        cache.key(Some("a"), Algorithm::ES256).await.unwrap();
        source.serve(vec![ec_jwk(Some("b"))]);
        tokio::time::advance(DEFAULT_MAX_AGE).await;
        assert_eq!(
            cache.key(Some("a"), Algorithm::ES256).await.unwrap_err(),
            AuthError::UnknownKey
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_fetch() {
        let source = FakeSource::default();
        source.serve(vec![ec_jwk(Some("a"))]);
        let cache = Arc::new(cache(&source));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.key(Some("a"), Algorithm::ES256).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(source.calls(), 1);
    }

    #[test]
    fn parse_keeps_usable_keys_and_skips_the_rest() {
        let mut enc = ec_jwk(Some("enc"));
        enc["use"] = "enc".into();
        let mut es384 = ec_jwk(Some("wrong-alg"));
        es384["alg"] = "ES384".into();
        let doc = serde_json::json!({ "keys": [
            ec_jwk(Some("ok")),
            ec_jwk(None),
            enc,
            es384,
            { "kty": "oct", "k": "c2VjcmV0", "kid": "hmac" },
            { "kty": "weird", "kid": "x" },
        ]});
        let set = KeySet::parse(&serde_json::to_vec(&doc).unwrap()).unwrap();
        assert_eq!(set.by_kid.keys().collect::<Vec<_>>(), vec!["ok"]);
        assert_eq!(set.anonymous.len(), 1);
        assert!(set.find(None, Algorithm::ES256).is_some());
        assert!(set.find(None, Algorithm::RS256).is_none());
        assert!(KeySet::parse(b"not json").is_err());
        assert!(KeySet::parse(b"{\"nokeys\":[]}").is_err());
    }
}
