//! Who is asking: bearer-token extraction, JWT verification, and local token minting.
//!
//! # Layout
//! - [`token`]: find the token in a request (subprotocol pair, `Authorization`, `?token=`).
//! - [`Authenticator`] (here): verify a token and return its [`Claims`]; failures are a typed
//!   [`AuthError`] whose [`AuthError::reason`] labels `aether_gateway_auth_failures_total`.
//! - [`jwks`]: the cached JWKS of asymmetric (ES256/RS256) keys.
//! - [`mint`](mod@mint): HS256 tokens for `aether-gateway token` and `POST /auth/local-token`.
//! - [`secret`]: the [`Secret`] type that never prints itself, and the secret generated into the
//!   data directory when no key is configured.
//!
//! # Verification policy
//! Each key allows exactly one algorithm, so a token cannot choose how it is checked: `HS256`
//! only ever against the configured secret, `ES256`/`RS256` only against a JWKS key whose own
//! `alg`/`kty` is that algorithm (an HS256 token "signed" with an RSA public key is refused as
//! `algorithm`, never tried). `alg: none` and every other algorithm are refused. `exp` is required;
//! `exp` and `nbf` are checked with a leeway (default 30 s); `aud` must contain the configured
//! audience (default `authenticated`; an empty audience disables the check); `iss` must match when
//! an issuer is configured; `sub` must be a non-empty string. The signature is checked before any
//! claim, so an expired token with a bad signature is `bad_signature`.
//!
//! No token ever appears in an error, a log line or a `Debug` output.

pub mod jwks;
pub mod mint;
pub mod secret;
pub mod token;

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

pub use jwks::{HttpJwks, JwksCache, JwksSource};
pub use mint::{MintError, Minted, mint};
pub use secret::Secret;
pub use token::{TokenSource, extract};

use crate::config::AuthConfig;

/// Default audience, Supabase's.
pub const DEFAULT_AUDIENCE: &str = "authenticated";
/// Default clock-skew allowance for `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// Why a request is not authenticated. Every variant answers 401 before an upgrade; the lead may
/// close an established session whose token expired with 4001 instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("bad token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token algorithm not accepted")]
    Algorithm,
    #[error("token audience not accepted")]
    Audience,
    #[error("token issuer not accepted")]
    Issuer,
    #[error("token has no subject")]
    Subject,
    #[error("token signed by an unknown key")]
    UnknownKey,
    #[error("signing keys unavailable")]
    JwksUnavailable,
}

impl AuthError {
    /// Every variant, for registering metric label values up front.
    pub const ALL: [AuthError; 11] = [
        AuthError::Missing,
        AuthError::Malformed,
        AuthError::BadSignature,
        AuthError::Expired,
        AuthError::NotYetValid,
        AuthError::Algorithm,
        AuthError::Audience,
        AuthError::Issuer,
        AuthError::Subject,
        AuthError::UnknownKey,
        AuthError::JwksUnavailable,
    ];

    /// A stable, low-cardinality label for `aether_gateway_auth_failures_total{reason}`.
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::Algorithm => "algorithm",
            AuthError::Audience => "audience",
            AuthError::Issuer => "issuer",
            AuthError::Subject => "subject",
            AuthError::UnknownKey => "unknown_key",
            AuthError::JwksUnavailable => "jwks_unavailable",
        }
    }

    fn from_jwt(err: &jsonwebtoken::errors::Error) -> AuthError {
        match err.kind() {
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat => AuthError::BadSignature,
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidAudience => AuthError::Audience,
            ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => AuthError::Audience,
            ErrorKind::InvalidIssuer => AuthError::Issuer,
            ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => AuthError::Issuer,
            ErrorKind::InvalidSubject => AuthError::Subject,
            ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidAlgorithmName
            | ErrorKind::UnsupportedAlgorithm
            | ErrorKind::MissingAlgorithm => AuthError::Algorithm,
            _ => AuthError::Malformed,
        }
    }
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user id (`sub`), never empty.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Why an [`Authenticator`] could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("auth.jwt_secret is empty")]
    EmptySecret,
    #[error("auth.jwks_url {0:?} is not an http(s) URL")]
    BadJwksUrl(String),
    #[error("generated secret: {0}")]
    SecretFile(#[from] secret::SecretFileError),
    #[error("JWKS client: {0}")]
    JwksClient(#[from] jwks::FetchError),
}

/// Claim checks shared by every key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// Required `aud`; `None` disables the audience check.
    pub audience: Option<String>,
    /// Required `iss`; `None` accepts any issuer.
    pub issuer: Option<String>,
    /// Clock-skew allowance for `exp` and `nbf`.
    pub leeway: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            audience: Some(DEFAULT_AUDIENCE.to_owned()),
            issuer: None,
            leeway: DEFAULT_LEEWAY,
        }
    }
}

/// The HS256 secret and its decoding key, built once.
struct HmacKey {
    secret: Secret,
    key: DecodingKey,
}

/// Verifies tokens. Share it behind an `Arc`; all methods take `&self`.
pub struct Authenticator {
    hmac: Option<HmacKey>,
    jwks: Option<JwksCache>,
    settings: AuthSettings,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("hs256", &self.hmac.as_ref().map(|_| secret::MASKED))
            .field("jwks", &self.jwks)
            .field("settings", &self.settings)
            .finish()
    }
}

impl Authenticator {
    /// An authenticator with the given keys. With neither key every token is refused
    /// (`algorithm`).
    pub fn new(
        secret: Option<Secret>,
        jwks: Option<JwksCache>,
        settings: AuthSettings,
    ) -> Result<Authenticator, AuthSetupError> {
        let hmac = match secret {
            Some(secret) if secret.is_empty() => return Err(AuthSetupError::EmptySecret),
            Some(secret) => {
                let key = DecodingKey::from_secret(secret.expose().as_bytes())
                    .map_err(|_| AuthSetupError::EmptySecret)?;
                Some(HmacKey { secret, key })
            }
            None => None,
        };
        Ok(Authenticator {
            hmac,
            jwks,
            settings,
        })
    }

    /// An HS256-only authenticator with default claim checks (tests, local tools).
    pub fn hs256(secret: Secret) -> Result<Authenticator, AuthSetupError> {
        Authenticator::new(Some(secret), None, AuthSettings::default())
    }

    /// Builds the gateway's authenticator: the configured secret and/or JWKS URL; with neither,
    /// the embedded mode's secret in `<data_dir>/jwt-secret` (generated on first use).
    pub fn from_config(
        config: &AuthConfig,
        data_dir: &Path,
    ) -> Result<Authenticator, AuthSetupError> {
        let jwks = match config.jwks_url.as_deref() {
            Some(raw) => {
                let url = url::Url::parse(raw)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| AuthSetupError::BadJwksUrl(raw.to_owned()))?;
                Some(JwksCache::new(
                    HttpJwks::new(url)?,
                    config.jwks_refetch_interval,
                    config.jwks_cache_ttl,
                ))
            }
            None => None,
        };
        let secret = match (&config.jwt_secret, &jwks) {
            (Some(secret), _) => Some(secret.clone()),
            (None, Some(_)) => None,
            (None, None) => Some(secret::load_or_generate(data_dir)?),
        };
        Authenticator::new(secret, jwks, config.settings())
    }

    /// The HS256 secret, if any (for minting local tokens).
    pub fn secret(&self) -> Option<&Secret> {
        self.hmac.as_ref().map(|h| &h.secret)
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// Warms the JWKS cache; returns false when a JWKS is configured but could not be fetched.
    pub async fn prefetch(&self) -> bool {
        match &self.jwks {
            Some(jwks) => jwks.prefetch().await,
            None => true,
        }
    }

    /// Mints an HS256 token for `sub` that this authenticator accepts (its audience and issuer).
    pub fn mint(&self, sub: &str, ttl: Duration) -> Result<Minted, MintError> {
        let secret = self.secret().ok_or(MintError::NoSecret)?;
        mint::mint_with(
            secret,
            sub,
            ttl,
            self.settings.audience.as_deref(),
            self.settings.issuer.as_deref(),
        )
    }

    /// Verifies `token` and returns its claims.
    pub async fn authenticate(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > token::MAX_TOKEN_LEN {
            return Err(AuthError::Malformed);
        }
        let header = peek_header(token)?;
        let (algorithm, key) = match header.alg.as_str() {
            "HS256" => {
                let hmac = self.hmac.as_ref().ok_or(AuthError::Algorithm)?;
                (Algorithm::HS256, hmac.key.clone())
            }
            "ES256" | "RS256" => {
                let algorithm = if header.alg == "ES256" {
                    Algorithm::ES256
                } else {
                    Algorithm::RS256
                };
                let jwks = self.jwks.as_ref().ok_or(AuthError::Algorithm)?;
                let found = jwks.key(header.kid.as_deref(), algorithm).await?;
                if found.algorithm != algorithm {
                    return Err(AuthError::Algorithm);
                }
                (algorithm, found.key)
            }
            // `none`, HS384, PS256, EdDSA, ...: not on the allow-list.
            _ => return Err(AuthError::Algorithm),
        };
        self.verify(token, algorithm, &key)
    }

    fn verify(
        &self,
        token: &str,
        algorithm: Algorithm,
        key: &DecodingKey,
    ) -> Result<Claims, AuthError> {
        #[derive(serde::Deserialize)]
        struct Raw {
            #[serde(default)]
            sub: Option<String>,
            exp: serde_json::Value,
        }

        let mut validation = Validation::new(algorithm);
        validation.leeway = self.settings.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        match &self.settings.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.settings.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);

        let data = jsonwebtoken::decode::<Raw>(token, key, &validation)
            .map_err(|e| AuthError::from_jwt(&e))?;
        let sub = data
            .claims
            .sub
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::Subject)?;
        // jsonwebtoken accepted `exp` as a number (possibly fractional).
        let exp = data
            .claims
            .exp
            .as_u64()
            .or_else(|| data.claims.exp.as_f64().map(|f| f.max(0.0).round() as u64))
            .ok_or(AuthError::Malformed)?;
        Ok(Claims { sub, exp })
    }
}

/// The two header fields we route on, read before choosing a key. Parsing the header ourselves
/// lets `alg: none` and unknown algorithms be refused as `algorithm` rather than `malformed`.
#[derive(serde::Deserialize)]
struct PeekedHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

fn peek_header(token: &str) -> Result<PeekedHeader, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_distinct_and_stable() {
        let reasons: std::collections::HashSet<_> =
            AuthError::ALL.iter().map(|e| e.reason()).collect();
        assert_eq!(reasons.len(), AuthError::ALL.len());
        assert_eq!(AuthError::BadSignature.reason(), "bad_signature");
        assert_eq!(AuthError::JwksUnavailable.reason(), "jwks_unavailable");
    }

    #[test]
    fn peek_header_routes_on_alg_and_kid() {
        let enc = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        let h = peek_header(&format!("{}.e30.", enc(r#"{"alg":"none"}"#))).unwrap();
        assert_eq!(h.alg, "none");
        let h = peek_header(&format!("{}.e30.sig", enc(r#"{"alg":"ES256","kid":"k1"}"#))).unwrap();
        assert_eq!(h.kid.as_deref(), Some("k1"));
        for bad in ["", "a.b", "a.b.c.d", "!!!.e30.sig"] {
            assert_eq!(peek_header(bad).err(), Some(AuthError::Malformed), "{bad}");
        }
    }

    #[tokio::test]
    async fn authenticator_debug_masks_the_secret() {
        let auth =
            Authenticator::hs256(Secret::new("super-secret-value-0123456789abcdef")).unwrap();
        let shown = format!("{auth:?}");
        assert!(!shown.contains("super-secret"), "{shown}");
        assert!(Authenticator::hs256(Secret::new("")).is_err());
    }
}
