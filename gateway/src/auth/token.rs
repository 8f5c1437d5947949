//! Finding the bearer token in an HTTP request (WebSocket upgrade or REST), without I/O.
//!
//! Three carriers are accepted, as protocol.md documents:
//!
//! 1. `Sec-WebSocket-Protocol: Bearer, <token>` or `access_token, <token>` — a browser cannot set
//!    headers on a WebSocket, so it offers the token as a second "subprotocol". The server must
//!    answer with one offered subprotocol or the browser fails the handshake: we answer with the
//!    marker (`Bearer` / `access_token`), never the token. [`TokenSource::echo_protocol`] says which.
//! 2. `Authorization: Bearer <token>` (scheme case-insensitive, RFC 7235).
//! 3. `?token=<token>` in the query string.
//!
//! **Precedence and conflicts.** Every carrier present is read. If they all carry the same token,
//! it is used (a client may well send the header and the subprotocol); if any two disagree, the
//! request is refused as [`AuthError::Malformed`] rather than guessing which one the client meant.
//! The reported [`TokenSource::carrier`] is the first present in the order above, and
//! `echo_protocol` is set whenever the subprotocol carrier was used, since the browser needs the
//! echo whatever else was sent. A carrier that is present but unusable (a marker with no token
//! after it, an empty `?token=`, `Authorization: Bearer` with nothing after it, a header that is
//! not UTF-8) is malformed, not missing. An `Authorization` header with another scheme (`Basic`) is
//! not a carrier: it is ignored.
//!
//! The token is never logged, and [`TokenSource`]'s `Debug` masks it.

use std::fmt;

use http::HeaderMap;
use http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};

use super::AuthError;

/// The subprotocol marker of `Sec-WebSocket-Protocol: Bearer, <token>`.
pub const BEARER_PROTOCOL: &str = "Bearer";
/// The subprotocol marker of `Sec-WebSocket-Protocol: access_token, <token>`.
pub const ACCESS_TOKEN_PROTOCOL: &str = "access_token";
/// A token longer than this is refused as malformed before any parsing (real JWTs are < 2 KiB).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Which part of the request carried the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    Subprotocol,
    AuthorizationHeader,
    Query,
}

/// A token found in a request.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSource {
    /// The token. Never log it.
    pub token: String,
    /// The subprotocol to answer with in the 101 (`Bearer` or `access_token`), when the token came
    /// as a subprotocol pair.
    pub echo_protocol: Option<&'static str>,
    /// Where the token was found (the first carrier present, in precedence order).
    pub carrier: Carrier,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("token", &super::secret::MASKED)
            .field("echo_protocol", &self.echo_protocol)
            .field("carrier", &self.carrier)
            .finish()
    }
}

/// Finds the token in `headers` and `query` (the raw query string, without `?`).
///
/// `Err(Missing)` when no carrier is present; `Err(Malformed)` when one is unusable or two
/// disagree.
pub fn extract(headers: &HeaderMap, query: Option<&str>) -> Result<TokenSource, AuthError> {
    let subprotocol = from_subprotocols(headers)?;
    let header = from_authorization(headers)?;
    let query = query.map(from_query).transpose()?.flatten();

    let mut found: Vec<(Carrier, String)> = Vec::with_capacity(3);
    let mut echo_protocol = None;
    if let Some((marker, token)) = subprotocol {
        echo_protocol = Some(marker);
        found.push((Carrier::Subprotocol, token));
    }
    if let Some(token) = header {
        found.push((Carrier::AuthorizationHeader, token));
    }
    if let Some(token) = query {
        found.push((Carrier::Query, token));
    }

    let mut found = found.into_iter();
    let Some((carrier, token)) = found.next() else {
        return Err(AuthError::Missing);
    };
    if found.any(|(_, other)| other != token) {
        return Err(AuthError::Malformed);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Malformed);
    }
    Ok(TokenSource {
        token,
        echo_protocol,
        carrier,
    })
}

/// `(marker, token)` from the offered subprotocols. Several `Sec-WebSocket-Protocol` headers are
/// one comma-separated list (RFC 6455 §11.3.4). Several marker pairs must agree.
fn from_subprotocols(headers: &HeaderMap) -> Result<Option<(&'static str, String)>, AuthError> {
    let mut offered = Vec::new();
    for value in headers.get_all(SEC_WEBSOCKET_PROTOCOL) {
        let value = value.to_str().map_err(|_| AuthError::Malformed)?;
        offered.extend(value.split(',').map(str::trim).filter(|p| !p.is_empty()));
    }
    let mut result: Option<(&'static str, String)> = None;
    let mut items = offered.into_iter();
    while let Some(item) = items.next() {
        let marker = match item {
            BEARER_PROTOCOL => BEARER_PROTOCOL,
            ACCESS_TOKEN_PROTOCOL => ACCESS_TOKEN_PROTOCOL,
            _ => continue,
        };
        let token = match items.next() {
            Some(t) if t != BEARER_PROTOCOL && t != ACCESS_TOKEN_PROTOCOL => t,
            _ => return Err(AuthError::Malformed),
        };
        match &result {
            Some((_, previous)) if previous != token => return Err(AuthError::Malformed),
            Some(_) => {}
            None => result = Some((marker, token.to_owned())),
        }
    }
    Ok(result)
}

/// The token of `Authorization: Bearer <token>`; other schemes are not ours.
fn from_authorization(headers: &HeaderMap) -> Result<Option<String>, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| AuthError::Malformed)?.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    // Two Authorization headers are ambiguous; refuse rather than pick one.
    if values.next().is_some() {
        return Err(AuthError::Malformed);
    }
    let token = rest.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(AuthError::Malformed);
    }
    Ok(Some(token.to_owned()))
}

/// The `token` query parameter; repeated ones must agree.
fn from_query(query: &str) -> Result<Option<String>, AuthError> {
    let mut result: Option<String> = None;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if name != "token" {
            continue;
        }
        if value.is_empty() {
            return Err(AuthError::Malformed);
        }
        match &result {
            Some(previous) if *previous != value => return Err(AuthError::Malformed),
            Some(_) => {}
            None => result = Some(value.into_owned()),
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const T: &str = "aaa.bbb.ccc";

    fn headers(pairs: &[(http::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn bearer_subprotocol_pair() {
        let h = headers(&[(SEC_WEBSOCKET_PROTOCOL, "Bearer, aaa.bbb.ccc")]);
        let src = extract(&h, None).unwrap();
        assert_eq!(src.token, T);
        assert_eq!(src.echo_protocol, Some("Bearer"));
        assert_eq!(src.carrier, Carrier::Subprotocol);
    }

    #[test]
    fn access_token_subprotocol_pair_even_among_others_and_split_headers() {
        let h = headers(&[
            (SEC_WEBSOCKET_PROTOCOL, "aether.v1, access_token"),
            (SEC_WEBSOCKET_PROTOCOL, "aaa.bbb.ccc"),
        ]);
        let src = extract(&h, None).unwrap();
        assert_eq!(src.token, T);
        assert_eq!(src.echo_protocol, Some("access_token"));
    }

    #[test]
    fn subprotocols_without_a_marker_are_not_a_carrier() {
        let h = headers(&[(SEC_WEBSOCKET_PROTOCOL, "chat, superchat")]);
        assert_eq!(extract(&h, None).unwrap_err(), AuthError::Missing);
    }

    #[test]
    fn marker_without_token_is_malformed() {
        for v in ["Bearer", "Bearer, ", "access_token, Bearer"] {
            let h = headers(&[(SEC_WEBSOCKET_PROTOCOL, v)]);
            assert_eq!(extract(&h, None).unwrap_err(), AuthError::Malformed, "{v}");
        }
    }

    #[test]
    fn authorization_header() {
        for v in [
            "Bearer aaa.bbb.ccc",
            "bearer  aaa.bbb.ccc ",
            "BEARER aaa.bbb.ccc",
        ] {
            let h = headers(&[(AUTHORIZATION, v)]);
            let src = extract(&h, None).unwrap();
            assert_eq!(src.token, T, "{v}");
            assert_eq!(src.echo_protocol, None);
            assert_eq!(src.carrier, Carrier::AuthorizationHeader);
        }
    }

    #[test]
    fn authorization_with_another_scheme_is_ignored() {
        let h = headers(&[(AUTHORIZATION, "Basic dXNlcjpwYXNz")]);
        assert_eq!(extract(&h, None).unwrap_err(), AuthError::Missing);
        let src = extract(&h, Some("token=aaa.bbb.ccc")).unwrap();
        assert_eq!(src.carrier, Carrier::Query);
    }

    #[test]
    fn unusable_authorization_is_malformed() {
        for v in ["Bearer", "Bearer ", "Bearer a b"] {
            let h = headers(&[(AUTHORIZATION, v)]);
            assert_eq!(
                extract(&h, None).unwrap_err(),
                AuthError::Malformed,
                "{v:?}"
            );
        }
        let h = headers(&[(AUTHORIZATION, "Bearer x"), (AUTHORIZATION, "Bearer x")]);
        assert_eq!(extract(&h, None).unwrap_err(), AuthError::Malformed);
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        );
        assert_eq!(extract(&h, None).unwrap_err(), AuthError::Malformed);
    }

    #[test]
    fn query_token() {
        let src = extract(&HeaderMap::new(), Some("workspace_id=w&token=aaa.bbb.ccc")).unwrap();
        assert_eq!(src.token, T);
        assert_eq!(src.carrier, Carrier::Query);
        assert_eq!(src.echo_protocol, None);
        // Percent-encoding is decoded.
        let src = extract(&HeaderMap::new(), Some("token=aaa%2Ebbb.ccc")).unwrap();
        assert_eq!(src.token, T);
    }

    #[test]
    fn empty_or_conflicting_query_tokens_are_malformed() {
        for q in ["token=", "token=a&token=b"] {
            assert_eq!(
                extract(&HeaderMap::new(), Some(q)).unwrap_err(),
                AuthError::Malformed,
                "{q}"
            );
        }
        // Repeating the same token is fine.
        extract(&HeaderMap::new(), Some("token=a&token=a")).unwrap();
    }

    #[test]
    fn nothing_is_missing() {
        assert_eq!(
            extract(&HeaderMap::new(), None).unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            extract(&HeaderMap::new(), Some("start=false")).unwrap_err(),
            AuthError::Missing
        );
    }

    #[test]
    fn agreeing_carriers_are_fine_and_the_subprotocol_is_echoed() {
        let h = headers(&[
            (SEC_WEBSOCKET_PROTOCOL, "Bearer, aaa.bbb.ccc"),
            (AUTHORIZATION, "Bearer aaa.bbb.ccc"),
        ]);
        let src = extract(&h, Some("token=aaa.bbb.ccc")).unwrap();
        assert_eq!(src.token, T);
        assert_eq!(src.echo_protocol, Some("Bearer"));
        assert_eq!(src.carrier, Carrier::Subprotocol);

        let h = headers(&[(AUTHORIZATION, "Bearer aaa.bbb.ccc")]);
        let src = extract(&h, Some("token=aaa.bbb.ccc")).unwrap();
        assert_eq!(src.carrier, Carrier::AuthorizationHeader);
    }

    #[test]
    fn disagreeing_carriers_are_refused() {
        type Case<'a> = (&'a [(http::HeaderName, &'a str)], Option<&'a str>);
        let cases: [Case<'_>; 4] = [
            (
                &[
                    (SEC_WEBSOCKET_PROTOCOL, "Bearer, one"),
                    (AUTHORIZATION, "Bearer two"),
                ],
                None,
            ),
            (
                &[(SEC_WEBSOCKET_PROTOCOL, "Bearer, one")],
                Some("token=two"),
            ),
            (&[(AUTHORIZATION, "Bearer one")], Some("token=two")),
            (
                &[(SEC_WEBSOCKET_PROTOCOL, "Bearer, one, access_token, two")],
                None,
            ),
        ];
        for (pairs, query) in cases {
            assert_eq!(
                extract(&headers(pairs), query).unwrap_err(),
                AuthError::Malformed,
                "{pairs:?} {query:?}"
            );
        }
    }

    #[test]
    fn oversized_tokens_are_malformed() {
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        let h = headers(&[(AUTHORIZATION, &format!("Bearer {long}"))]);
        assert_eq!(extract(&h, None).unwrap_err(), AuthError::Malformed);
    }

    #[test]
    fn debug_masks_the_token() {
        let h = headers(&[(SEC_WEBSOCKET_PROTOCOL, "Bearer, aaa.bbb.ccc")]);
        let src = extract(&h, None).unwrap();
        let shown = format!("{src:?}");
        assert!(!shown.contains("aaa.bbb.ccc"), "{shown}");
        assert!(shown.contains("MASKED"), "{shown}");
    }
}
