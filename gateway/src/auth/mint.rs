//! HS256 tokens signed with the gateway's own secret: `aether-gateway token` and the local-token
//! endpoint (`POST /auth/local-token`, loopback only) hand them to local users and tests.
//!
//! The claims are Supabase's shape (`sub`, `aud: authenticated`, `role: authenticated`, `iat`,
//! `exp`), so a minted token works wherever a Supabase access token would.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::{DEFAULT_AUDIENCE, Secret};

/// A minted token. `Debug` masks the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Minted {
    pub token: String,
    /// Seconds since the Unix epoch (`exp`).
    pub expires_at: u64,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted")
            .field("token", &super::secret::MASKED)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("the subject is empty")]
    EmptySubject,
    #[error("no HS256 secret is configured (a JWKS alone cannot sign tokens)")]
    NoSecret,
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

/// An HS256 token for `sub` valid for `ttl`, with audience `authenticated`.
pub fn mint(secret: &Secret, sub: &str, ttl: Duration) -> Result<Minted, MintError> {
    mint_with(secret, sub, ttl, Some(DEFAULT_AUDIENCE), None)
}

/// [`mint`] with an explicit audience (`None`: no `aud` claim) and optional issuer, so the token
/// passes an authenticator configured with them.
pub fn mint_with(
    secret: &Secret,
    sub: &str,
    ttl: Duration,
    audience: Option<&str>,
    issuer: Option<&str>,
) -> Result<Minted, MintError> {
    if sub.is_empty() {
        return Err(MintError::EmptySubject);
    }
    if secret.is_empty() {
        return Err(MintError::NoSecret);
    }
    // JWT times are wall-clock seconds; tokio's clock has no epoch.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let expires_at = now.saturating_add(ttl.as_secs());
    let mut claims = serde_json::json!({
        "sub": sub,
        "role": "authenticated",
        "iat": now,
        "exp": expires_at,
    });
    if let Some(aud) = audience {
        claims["aud"] = aud.into();
    }
    if let Some(iss) = issuer {
        claims["iss"] = iss.into();
    }
    let key = EncodingKey::from_secret(secret.expose().as_bytes())
        .map_err(|e| MintError::Sign(e.to_string()))?;
    let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
        .map_err(|e| MintError::Sign(e.to_string()))?;
    Ok(Minted { token, expires_at })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthError, AuthSettings, Authenticator};

    fn secret() -> Secret {
        Secret::new("mint-test-secret-0123456789abcdef0123")
    }

    #[tokio::test]
    async fn minted_tokens_verify_with_the_same_secret() {
        let minted = mint(&secret(), "user-1", Duration::from_secs(3600)).unwrap();
        let auth = Authenticator::hs256(secret()).unwrap();
        let claims = auth.authenticate(&minted.token).await.unwrap();
        assert_eq!(claims.sub, "user-1");
        assert_eq!(claims.exp, minted.expires_at);
        assert!(!format!("{minted:?}").contains(&minted.token));
    }

    #[tokio::test]
    async fn authenticator_mints_for_its_own_audience_and_issuer() {
        let settings = AuthSettings {
            audience: Some("aether".into()),
            issuer: Some("https://issuer.example".into()),
            ..AuthSettings::default()
        };
        let auth = Authenticator::new(Some(secret()), None, settings).unwrap();
        let minted = auth.mint("u", Duration::from_secs(60)).unwrap();
        assert_eq!(auth.authenticate(&minted.token).await.unwrap().sub, "u");
        // The plain mint (audience `authenticated`, no issuer) is refused by it.
        let plain = mint(&secret(), "u", Duration::from_secs(60)).unwrap();
        assert!(auth.authenticate(&plain.token).await.is_err());
        let aud_only = AuthSettings {
            audience: Some("aether".into()),
            ..AuthSettings::default()
        };
        let auth = Authenticator::new(Some(secret()), None, aud_only).unwrap();
        assert_eq!(
            auth.authenticate(&plain.token).await.unwrap_err(),
            AuthError::Audience
        );
    }

    #[test]
    fn empty_subject_is_refused() {
        assert!(matches!(
            mint(&secret(), "", Duration::from_secs(60)),
            Err(MintError::EmptySubject)
        ));
    }
}
