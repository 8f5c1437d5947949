//! Token verification end to end: every refusal reason, HS256 and JWKS (ES256/RS256) keys served
//! by a real HTTP server on port 0, algorithm confusion, caching and stale serving, and the
//! secret generated for the embedded mode.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use base64::Engine;
use gateway::auth::{self, AuthError, AuthSettings, Authenticator, Secret};
use gateway::config::AuthConfig;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const SECRET: &str = "integration-test-secret-0123456789abcdef";
const ES_KEY: &[u8] = include_bytes!("fixtures/es256.pem");
const ES_OTHER_KEY: &[u8] = include_bytes!("fixtures/es256-other.pem");
const RS_KEY: &[u8] = include_bytes!("fixtures/rs256.pem");
/// Bound on anything that touches the network, generous for a loaded machine.
const GUARD: Duration = Duration::from_secs(30);

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims a valid Supabase token has.
fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "aud": "authenticated", "role": "authenticated", "iat": now(), "exp": now() + 3600 })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

fn hs256(claims: &Value) -> String {
    hs256_with(claims, SECRET)
}

fn hs256_with(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn signed(alg: Algorithm, kid: Option<&str>, pem: &[u8], claims: &Value) -> String {
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem).unwrap(),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem).unwrap(),
        other => panic!("no test key for {other:?}"),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with an arbitrary header and no valid signature.
fn unsigned(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// The public JWK of a test key.
fn jwk(alg: Algorithm, kid: &str, pem: &[u8]) -> Value {
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem).unwrap(),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem).unwrap(),
        other => panic!("no test key for {other:?}"),
    };
    let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    serde_json::to_value(jwk).unwrap()
}

fn hs_auth() -> Authenticator {
    Authenticator::hs256(Secret::new(SECRET)).unwrap()
}

async fn refused(auth: &Authenticator, token: &str) -> AuthError {
    tokio::time::timeout(GUARD, auth.authenticate(token))
        .await
        .expect("authenticate in time")
        .expect_err("token should be refused")
}

async fn accepted(auth: &Authenticator, token: &str) -> auth::Claims {
    tokio::time::timeout(GUARD, auth.authenticate(token))
        .await
        .expect("authenticate in time")
        .expect("token should be accepted")
}

/// A JWKS endpoint on port 0 whose document and health the test controls, counting requests.
struct KeyServer {
    url: String,
    state: Arc<KeyServerState>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct KeyServerState {
    /// `None`: answer 503.
    body: Mutex<Option<String>>,
    hits: AtomicUsize,
}

impl KeyServer {
    async fn start(keys: Vec<Value>) -> KeyServer {
        async fn jwks(State(state): State<Arc<KeyServerState>>) -> (StatusCode, String) {
            state.hits.fetch_add(1, Ordering::SeqCst);
            match state.body.lock().unwrap().clone() {
                Some(body) => (StatusCode::OK, body),
                None => (StatusCode::SERVICE_UNAVAILABLE, String::new()),
            }
        }
        let state = Arc::new(KeyServerState::default());
        let app = Router::new()
            .route("/.well-known/jwks.json", get(jwks))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let server = KeyServer {
            url: format!("http://{addr}/.well-known/jwks.json"),
            state,
            task,
        };
        server.serve(keys);
        server
    }

    fn serve(&self, keys: Vec<Value>) {
        *self.state.body.lock().unwrap() = Some(json!({ "keys": keys }).to_string());
    }

    fn fail(&self) {
        *self.state.body.lock().unwrap() = None;
    }

    fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    fn config(&self) -> AuthConfig {
        AuthConfig {
            jwks_url: Some(self.url.clone()),
            ..AuthConfig::default()
        }
    }

    /// An authenticator for this server (and optionally the HS256 secret).
    fn authenticator(&self, config: AuthConfig) -> Authenticator {
        let dir = tempfile::tempdir().unwrap();
        Authenticator::from_config(&config, dir.path()).unwrap()
    }
}

impl Drop for KeyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---- HS256 and claim checks -------------------------------------------------------------------

#[tokio::test]
async fn a_valid_hs256_token_yields_its_subject_and_expiry() {
    let c = claims("user-1");
    let got = accepted(&hs_auth(), &hs256(&c)).await;
    assert_eq!(got.sub, "user-1");
    assert_eq!(got.exp, c["exp"].as_u64().unwrap());
}

#[tokio::test]
async fn missing_and_malformed_tokens() {
    let auth = hs_auth();
    assert_eq!(refused(&auth, "").await, AuthError::Missing);
    for token in ["garbage", "a.b", "a.b.c.d", "!!!.e30.sig", "e30.e30.sig"] {
        assert_eq!(refused(&auth, token).await, AuthError::Malformed, "{token}");
    }
    // A payload that is not claims: the signature is checked first, so with a made-up
    // signature it is a bad signature, and signed correctly it is malformed.
    let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    for payload in [b64(b"not json"), "!!!".to_owned()] {
        let token = format!("{header}.{payload}.sig");
        assert_eq!(refused(&auth, &token).await, AuthError::BadSignature);
    }
    let not_claims = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!(["not", "an", "object"]),
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(refused(&auth, &not_claims).await, AuthError::Malformed);
}

#[tokio::test]
async fn bad_signature() {
    let auth = hs_auth();
    let token = hs256_with(&claims("u"), "another-secret-0123456789abcdef0123456");
    assert_eq!(refused(&auth, &token).await, AuthError::BadSignature);
    // A tampered payload with the original signature.
    let good = hs256(&claims("u"));
    let parts: Vec<_> = good.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims("admin").to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(refused(&auth, &forged).await, AuthError::BadSignature);
    // An expired token with a bad signature is a bad signature: signatures are checked first.
    let token = hs256_with(
        &with(claims("u"), "exp", json!(now() - 3600)),
        "another-secret-0123456789abcdef0123456",
    );
    assert_eq!(refused(&auth, &token).await, AuthError::BadSignature);
}

#[tokio::test]
async fn expiry_is_checked_with_the_leeway() {
    let auth = hs_auth(); // default leeway 30 s
    let expired = hs256(&with(claims("u"), "exp", json!(now() - 120)));
    assert_eq!(refused(&auth, &expired).await, AuthError::Expired);
    let within_leeway = hs256(&with(claims("u"), "exp", json!(now() - 10)));
    accepted(&auth, &within_leeway).await;

    let strict = Authenticator::new(
        Some(Secret::new(SECRET)),
        None,
        AuthSettings {
            leeway: Duration::ZERO,
            ..AuthSettings::default()
        },
    )
    .unwrap();
    assert_eq!(refused(&strict, &within_leeway).await, AuthError::Expired);
}

#[tokio::test]
async fn exp_is_required() {
    let token = hs256(&without(claims("u"), "exp"));
    assert_eq!(refused(&hs_auth(), &token).await, AuthError::Malformed);
    let token = hs256(&with(claims("u"), "exp", json!("tomorrow")));
    assert_eq!(refused(&hs_auth(), &token).await, AuthError::Malformed);
}

#[tokio::test]
async fn not_before_in_the_future_is_refused() {
    let auth = hs_auth();
    let early = hs256(&with(claims("u"), "nbf", json!(now() + 300)));
    assert_eq!(refused(&auth, &early).await, AuthError::NotYetValid);
    let skewed = hs256(&with(claims("u"), "nbf", json!(now() + 10)));
    accepted(&auth, &skewed).await;
}

#[tokio::test]
async fn alg_none_and_other_algorithms_are_refused() {
    let auth = hs_auth();
    for alg in [
        "none", "None", "NONE", "HS384", "HS512", "PS256", "EdDSA", "ES384",
    ] {
        let header = json!({ "alg": alg, "typ": "JWT" });
        for signature in ["", "c2ln"] {
            let token = unsigned(&header, &claims("u"), signature);
            assert_eq!(refused(&auth, &token).await, AuthError::Algorithm, "{alg}");
        }
    }
    // A real HS512 token with the right secret is still not on the allow-list.
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &claims("u"),
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(refused(&auth, &token).await, AuthError::Algorithm);
}

#[tokio::test]
async fn asymmetric_tokens_without_a_jwks_are_refused_as_algorithm() {
    let token = signed(Algorithm::ES256, Some("k"), ES_KEY, &claims("u"));
    assert_eq!(refused(&hs_auth(), &token).await, AuthError::Algorithm);
    let token = signed(Algorithm::RS256, Some("k"), RS_KEY, &claims("u"));
    assert_eq!(refused(&hs_auth(), &token).await, AuthError::Algorithm);
}

#[tokio::test]
async fn audience() {
    let auth = hs_auth();
    let wrong = hs256(&with(claims("u"), "aud", json!("someone-else")));
    assert_eq!(refused(&auth, &wrong).await, AuthError::Audience);
    let missing = hs256(&without(claims("u"), "aud"));
    assert_eq!(refused(&auth, &missing).await, AuthError::Audience);
    let list = hs256(&with(claims("u"), "aud", json!(["x", "authenticated"])));
    accepted(&auth, &list).await;

    let custom = Authenticator::new(
        Some(Secret::new(SECRET)),
        None,
        AuthSettings {
            audience: Some("aether".into()),
            ..AuthSettings::default()
        },
    )
    .unwrap();
    assert_eq!(
        refused(&custom, &hs256(&claims("u"))).await,
        AuthError::Audience
    );
    accepted(&custom, &hs256(&with(claims("u"), "aud", json!("aether")))).await;

    let disabled = Authenticator::new(
        Some(Secret::new(SECRET)),
        None,
        AuthSettings {
            audience: None,
            ..AuthSettings::default()
        },
    )
    .unwrap();
    accepted(&disabled, &wrong).await;
    accepted(&disabled, &missing).await;
}

#[tokio::test]
async fn issuer() {
    let auth = Authenticator::new(
        Some(Secret::new(SECRET)),
        None,
        AuthSettings {
            issuer: Some("https://proj.supabase.co/auth/v1".into()),
            ..AuthSettings::default()
        },
    )
    .unwrap();
    let good = hs256(&with(
        claims("u"),
        "iss",
        json!("https://proj.supabase.co/auth/v1"),
    ));
    accepted(&auth, &good).await;
    let wrong = hs256(&with(claims("u"), "iss", json!("https://evil.example")));
    assert_eq!(refused(&auth, &wrong).await, AuthError::Issuer);
    let missing = hs256(&claims("u"));
    assert_eq!(refused(&auth, &missing).await, AuthError::Issuer);
    // Without a configured issuer any issuer is fine.
    accepted(&hs_auth(), &wrong).await;
}

#[tokio::test]
async fn subject_must_be_a_non_empty_string() {
    let auth = hs_auth();
    assert_eq!(
        refused(&auth, &hs256(&claims(""))).await,
        AuthError::Subject
    );
    assert_eq!(
        refused(&auth, &hs256(&without(claims("u"), "sub"))).await,
        AuthError::Subject
    );
    assert_eq!(
        refused(&auth, &hs256(&with(claims("u"), "sub", json!(42)))).await,
        AuthError::Malformed
    );
}

#[tokio::test]
async fn errors_never_contain_the_token() {
    let auth = hs_auth();
    let token = hs256(&with(claims("u"), "exp", json!(now() - 3600)));
    let err = refused(&auth, &token).await;
    for shown in [err.to_string(), format!("{err:?}"), err.reason().to_owned()] {
        assert!(!shown.contains(&token), "{shown}");
        assert!(!shown.contains(SECRET), "{shown}");
    }
}

// ---- Carriers into verification ---------------------------------------------------------------

#[tokio::test]
async fn every_carrier_reaches_the_authenticator() {
    use http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
    let auth = hs_auth();
    let token = hs256(&claims("carrier-user"));

    let mut h = http::HeaderMap::new();
    h.insert(
        SEC_WEBSOCKET_PROTOCOL,
        format!("Bearer, {token}").parse().unwrap(),
    );
    let src = auth::extract(&h, None).unwrap();
    assert_eq!(src.echo_protocol, Some("Bearer"));
    assert_eq!(accepted(&auth, &src.token).await.sub, "carrier-user");

    let mut h = http::HeaderMap::new();
    h.insert(
        SEC_WEBSOCKET_PROTOCOL,
        format!("access_token, {token}").parse().unwrap(),
    );
    let src = auth::extract(&h, None).unwrap();
    assert_eq!(src.echo_protocol, Some("access_token"));
    assert_eq!(accepted(&auth, &src.token).await.sub, "carrier-user");

    let mut h = http::HeaderMap::new();
    h.insert(AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    let src = auth::extract(&h, None).unwrap();
    assert_eq!(src.echo_protocol, None);
    assert_eq!(accepted(&auth, &src.token).await.sub, "carrier-user");

    let query = format!("start=false&token={token}");
    let src = auth::extract(&http::HeaderMap::new(), Some(&query)).unwrap();
    assert_eq!(accepted(&auth, &src.token).await.sub, "carrier-user");

    // Two different valid tokens: refused, whichever would have passed.
    let other = hs256(&claims("someone-else"));
    let mut h = http::HeaderMap::new();
    h.insert(AUTHORIZATION, format!("Bearer {other}").parse().unwrap());
    assert_eq!(
        auth::extract(&h, Some(&query)).unwrap_err(),
        AuthError::Malformed
    );
}

// ---- JWKS -------------------------------------------------------------------------------------

#[tokio::test]
async fn es256_and_rs256_tokens_verify_against_a_served_jwks_and_are_cached() {
    let server = KeyServer::start(vec![
        jwk(Algorithm::ES256, "ec-1", ES_KEY),
        jwk(Algorithm::RS256, "rsa-1", RS_KEY),
    ])
    .await;
    let auth = server.authenticator(server.config());

    let es = signed(Algorithm::ES256, Some("ec-1"), ES_KEY, &claims("es-user"));
    assert_eq!(accepted(&auth, &es).await.sub, "es-user");
    let rs = signed(Algorithm::RS256, Some("rsa-1"), RS_KEY, &claims("rs-user"));
    assert_eq!(accepted(&auth, &rs).await.sub, "rs-user");
    for _ in 0..5 {
        accepted(&auth, &es).await;
    }
    assert_eq!(server.hits(), 1, "keys are cached");

    // Claim checks apply to JWKS tokens too.
    let expired = signed(
        Algorithm::ES256,
        Some("ec-1"),
        ES_KEY,
        &with(claims("u"), "exp", json!(now() - 3600)),
    );
    assert_eq!(refused(&auth, &expired).await, AuthError::Expired);
    // Signed by another key under a known kid.
    let forged = signed(Algorithm::ES256, Some("ec-1"), ES_OTHER_KEY, &claims("u"));
    assert_eq!(refused(&auth, &forged).await, AuthError::BadSignature);
    // HS256 is not accepted when only a JWKS is configured.
    assert_eq!(
        refused(&auth, &hs256(&claims("u"))).await,
        AuthError::Algorithm
    );
}

#[tokio::test]
async fn algorithm_confusion_is_refused() {
    let server = KeyServer::start(vec![
        jwk(Algorithm::ES256, "ec-1", ES_KEY),
        jwk(Algorithm::RS256, "rsa-1", RS_KEY),
    ])
    .await;
    let jwks_only = server.authenticator(server.config());

    // An HS256 token naming the RSA key: the classic "public key as HMAC secret" attack. The RSA
    // key is never used for HS256; with no secret configured the algorithm is simply refused.
    let rsa_jwk: Jwk = serde_json::from_value(jwk(Algorithm::RS256, "rsa-1", RS_KEY)).unwrap();
    let public_material = serde_json::to_string(&rsa_jwk).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let confused = jsonwebtoken::encode(
        &header,
        &claims("attacker"),
        &EncodingKey::from_secret(public_material.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(refused(&jwks_only, &confused).await, AuthError::Algorithm);
    // With a secret too, HS256 is checked against the secret only: a bad signature.
    let both = server.authenticator(AuthConfig {
        jwt_secret: Some(Secret::new(SECRET)),
        ..server.config()
    });
    assert_eq!(refused(&both, &confused).await, AuthError::BadSignature);
    accepted(&both, &hs256(&claims("u"))).await;

    // ES256 token naming the RSA key, RS256 token naming the EC key.
    let es_on_rsa = signed(Algorithm::ES256, Some("rsa-1"), ES_KEY, &claims("u"));
    assert_eq!(refused(&jwks_only, &es_on_rsa).await, AuthError::Algorithm);
    let rs_on_ec = signed(Algorithm::RS256, Some("ec-1"), RS_KEY, &claims("u"));
    assert_eq!(refused(&jwks_only, &rs_on_ec).await, AuthError::Algorithm);
}

#[tokio::test]
async fn a_key_published_with_an_alg_only_verifies_that_alg() {
    // The EC key published as RS256 is unusable (wrong kty for the alg) and skipped.
    let mut odd = jwk(Algorithm::ES256, "odd", ES_KEY);
    odd["alg"] = json!("RS256");
    let server = KeyServer::start(vec![odd, jwk(Algorithm::ES256, "ec-1", ES_KEY)]).await;
    let auth = server.authenticator(server.config());
    let token = signed(Algorithm::ES256, Some("odd"), ES_KEY, &claims("u"));
    assert_eq!(refused(&auth, &token).await, AuthError::UnknownKey);
    let token = signed(Algorithm::ES256, Some("ec-1"), ES_KEY, &claims("u"));
    accepted(&auth, &token).await;
}

#[tokio::test]
async fn an_unknown_kid_refetches_once_then_is_rate_limited() {
    let server = KeyServer::start(vec![jwk(Algorithm::ES256, "ec-1", ES_KEY)]).await;
    let auth = server.authenticator(server.config());
    accepted(
        &auth,
        &signed(Algorithm::ES256, Some("ec-1"), ES_KEY, &claims("u")),
    )
    .await;
    assert_eq!(server.hits(), 1);

    // Keys rotate: a fresh kid forces one refetch, even though the cache is fresh.
    server.serve(vec![
        jwk(Algorithm::ES256, "ec-1", ES_KEY),
        jwk(Algorithm::ES256, "ec-2", ES_OTHER_KEY),
    ]);
    let rotated = signed(Algorithm::ES256, Some("ec-2"), ES_OTHER_KEY, &claims("u"));
    // The first fetch happened just now, inside the 30 s window: no refetch yet.
    assert_eq!(refused(&auth, &rotated).await, AuthError::UnknownKey);
    assert_eq!(server.hits(), 1);

    // With a short window (configurable), the unknown kid is fetched for exactly once.
    let fast = server.authenticator(AuthConfig {
        jwks_refetch_interval: Duration::from_millis(1),
        ..server.config()
    });
    let hits = server.hits();
    accepted(&fast, &rotated).await;
    assert_eq!(server.hits(), hits + 1);
    // Made-up kids against the default window: at most one fetch however many arrive.
    let hits = server.hits();
    let fresh = server.authenticator(server.config());
    for i in 0..20 {
        let bogus = signed(
            Algorithm::ES256,
            Some(&format!("bogus-{i}")),
            ES_KEY,
            &claims("u"),
        );
        assert_eq!(refused(&fresh, &bogus).await, AuthError::UnknownKey);
    }
    assert_eq!(server.hits(), hits + 1);
}

#[tokio::test]
async fn stale_keys_are_served_while_the_url_fails() {
    let server = KeyServer::start(vec![jwk(Algorithm::ES256, "ec-1", ES_KEY)]).await;
    // Keys go stale at once and may be refetched at once: every call tries the URL.
    let auth = server.authenticator(AuthConfig {
        jwks_cache_ttl: Duration::ZERO,
        jwks_refetch_interval: Duration::ZERO,
        ..server.config()
    });
    let token = signed(Algorithm::ES256, Some("ec-1"), ES_KEY, &claims("u"));
    accepted(&auth, &token).await;

    server.fail();
    let hits = server.hits();
    accepted(&auth, &token).await;
    accepted(&auth, &token).await;
    assert!(server.hits() >= hits + 2, "the URL was tried again");

    // A key the failing server never published stays unknown.
    let other = signed(Algorithm::ES256, Some("ec-9"), ES_KEY, &claims("u"));
    assert_eq!(refused(&auth, &other).await, AuthError::UnknownKey);
}

#[tokio::test]
async fn an_unreachable_jwks_is_unavailable() {
    let server = KeyServer::start(vec![]).await;
    server.fail();
    let auth = server.authenticator(server.config());
    let token = signed(Algorithm::ES256, Some("ec-1"), ES_KEY, &claims("u"));
    assert_eq!(refused(&auth, &token).await, AuthError::JwksUnavailable);
    assert!(!auth.prefetch().await);

    // Nothing listening at all.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let auth = Authenticator::from_config(
        &AuthConfig {
            jwks_url: Some(format!("http://{dead}/jwks.json")),
            ..AuthConfig::default()
        },
        dir.path(),
    )
    .unwrap();
    assert_eq!(refused(&auth, &token).await, AuthError::JwksUnavailable);
}

#[tokio::test]
async fn prefetch_warms_the_cache() {
    let server = KeyServer::start(vec![jwk(Algorithm::RS256, "rsa-1", RS_KEY)]).await;
    let auth = server.authenticator(server.config());
    assert!(auth.prefetch().await);
    assert_eq!(server.hits(), 1);
    let token = signed(Algorithm::RS256, Some("rsa-1"), RS_KEY, &claims("u"));
    accepted(&auth, &token).await;
    assert_eq!(server.hits(), 1);
}

// ---- Embedded mode ----------------------------------------------------------------------------

#[tokio::test]
async fn without_keys_a_secret_is_generated_reused_and_used_for_minting() {
    let dir = tempfile::tempdir().unwrap();
    let first = Authenticator::from_config(&AuthConfig::default(), dir.path()).unwrap();
    let minted = first.mint("local", Duration::from_secs(60)).unwrap();
    assert_eq!(accepted(&first, &minted.token).await.sub, "local");

    // A second gateway (or `aether-gateway token`) on the same data dir accepts it.
    let second = Authenticator::from_config(&AuthConfig::default(), dir.path()).unwrap();
    assert_eq!(accepted(&second, &minted.token).await.sub, "local");
    assert_eq!(first.secret(), second.secret());

    // Another data dir means another secret.
    let other_dir = tempfile::tempdir().unwrap();
    let third = Authenticator::from_config(&AuthConfig::default(), other_dir.path()).unwrap();
    assert_eq!(
        refused(&third, &minted.token).await,
        AuthError::BadSignature
    );

    // A configured secret is used instead of generating one.
    let empty_dir = tempfile::tempdir().unwrap();
    let configured = Authenticator::from_config(
        &AuthConfig {
            jwt_secret: Some(Secret::new(SECRET)),
            ..AuthConfig::default()
        },
        empty_dir.path(),
    )
    .unwrap();
    accepted(&configured, &hs256(&claims("u"))).await;
    assert!(
        std::fs::read_dir(empty_dir.path())
            .unwrap()
            .next()
            .is_none(),
        "nothing generated"
    );
}

#[tokio::test]
async fn mint_makes_supabase_shaped_tokens() {
    let minted = auth::mint(&Secret::new(SECRET), "user-9", Duration::from_secs(3600)).unwrap();
    let payload = minted.token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "user-9");
    assert_eq!(claims["aud"], "authenticated");
    assert_eq!(claims["role"], "authenticated");
    let iat = claims["iat"].as_i64().unwrap();
    assert!((iat - now()).abs() < 60);
    assert_eq!(claims["exp"].as_u64().unwrap(), minted.expires_at);
    assert_eq!(minted.expires_at as i64 - iat, 3600);
    assert_eq!(accepted(&hs_auth(), &minted.token).await.sub, "user-9");
}

// ---- The binary's token and check-config commands ---------------------------------------------

/// `aether-gateway` with a clean environment (no stray `AETHER_GATEWAY_*` from the caller).
fn gateway_cmd(home: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_aether-gateway"));
    cmd.env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    cmd
}

#[tokio::test]
async fn the_token_command_signs_with_the_data_dirs_secret() {
    let home = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let out = gateway_cmd(home.path())
        .args(["token", "--sub", "cli-user", "--ttl", "2h", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(&token),
        "the token is printed on stdout only"
    );

    // The gateway on that data dir (which generated the secret) accepts it.
    let auth = Authenticator::from_config(&AuthConfig::default(), data.path()).unwrap();
    let claims = accepted(&auth, &token).await;
    assert_eq!(claims.sub, "cli-user");
    let ttl = claims.exp as i64 - now();
    assert!((7000..=7200).contains(&ttl), "ttl {ttl}");

    // With a configured secret, that secret signs.
    let out = gateway_cmd(home.path())
        .args(["token", "--sub", "u2", "--data-dir"])
        .arg(data.path())
        .env("AETHER_GATEWAY_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(accepted(&hs_auth(), &token).await.sub, "u2");
}

#[test]
fn check_config_masks_secrets_and_exits_2_with_field_errors() {
    let home = tempfile::tempdir().unwrap();
    let out = gateway_cmd(home.path())
        .args(["check-config", "--listen", "127.0.0.1:0"])
        .env("AETHER_GATEWAY_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout.contains("jwt_secret = \"MASKED\""), "{stdout}");
    assert!(!stdout.contains(SECRET), "{stdout}");
    assert!(stdout.contains("listen = \"127.0.0.1:0\""), "{stdout}");

    let out = gateway_cmd(home.path())
        .args(["check-config", "--idle-timeout", "0s"])
        .env("AETHER_GATEWAY_JWT_SECRET", "short")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr.contains("idle_timeout: must be longer than 0s"),
        "{stderr}"
    );
    assert!(stderr.contains("auth.jwt_secret: is 5 bytes"), "{stderr}");
    assert!(!stderr.contains("short\""), "{stderr}");

    let out = gateway_cmd(home.path())
        .args(["check-config"])
        .env("AETHER_GATEWAY_WS_MAX_MESSAGE", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("AETHER_GATEWAY_WS_MAX_MESSAGE"),
        "{out:?}"
    );
}
