//! Bearer tokens for an HTTP API: a request is let in when it carries
//! `Authorization: Bearer <token>` with one of the accepted tokens. Two
//! tokens may be accepted at once (the current one and the previous one)
//! so a token can be rotated without downtime: add the new one, move the
//! clients over, drop the old one. Tokens are compared in constant time.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

/// The tokens an API accepts (one or two; empty ones are ignored).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiTokens {
    accepted: Vec<String>,
}

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiTokens")
            .field("accepted", &self.accepted.len())
            .finish_non_exhaustive()
    }
}

impl ApiTokens {
    /// Accepts `current` and, while a rotation is under way, `previous`.
    /// `None` when neither is set (blank values count as unset).
    pub fn new(current: Option<&str>, previous: Option<&str>) -> Option<Self> {
        let accepted: Vec<String> = [current, previous]
            .into_iter()
            .flatten()
            .filter(|t| !t.trim().is_empty())
            .map(str::to_string)
            .collect();
        (!accepted.is_empty()).then_some(Self { accepted })
    }

    /// Whether `headers` carry an accepted bearer token. Every accepted
    /// token is compared (in constant time), whichever matches.
    pub fn accepts(&self, headers: &HeaderMap) -> bool {
        let given = bearer(headers).unwrap_or("");
        let mut ok = subtle::Choice::from(0);
        for t in &self.accepted {
            ok |= given.as_bytes().ct_eq(t.as_bytes());
        }
        bool::from(ok) && !given.is_empty()
    }

    /// `None` when [`ApiTokens::accepts`], else the 401 answer (with a
    /// `WWW-Authenticate: Bearer` challenge) to send instead.
    pub fn refusal(&self, headers: &HeaderMap) -> Option<Response> {
        (!self.accepts(headers)).then(unauthorized)
    }
}

/// The token of an `Authorization: Bearer <token>` header, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// 401 with a JSON `{error}` saying what to send.
pub fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(serde_json::json!({
            "error": "missing or wrong token: send Authorization: Bearer <token>"
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn blank_tokens_are_unset() {
        assert_eq!(ApiTokens::new(None, None), None);
        assert_eq!(ApiTokens::new(Some(" "), Some("")), None);
    }

    #[test]
    fn both_rotation_tokens_pass_others_do_not() {
        let t = ApiTokens::new(Some("new-token"), Some("old-token")).unwrap();
        assert!(t.accepts(&with("Bearer new-token")));
        assert!(t.accepts(&with("Bearer old-token")));
        assert!(!t.accepts(&with("Bearer new-toke")));
        assert!(!t.accepts(&with("new-token")));
        assert!(!t.accepts(&with("Bearer ")));
        assert!(!t.accepts(&HeaderMap::new()));
        let one = ApiTokens::new(Some("only"), None).unwrap();
        assert!(one.accepts(&with("Bearer only")));
        assert!(!one.accepts(&with("Bearer old-token")));
        assert_eq!(t.refusal(&HeaderMap::new()).unwrap().status(), 401);
        assert!(t.refusal(&with("Bearer old-token")).is_none());
    }
}
