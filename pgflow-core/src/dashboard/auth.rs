//! The dashboard's write access: a request may retry or purge dead letters
//! only when the dashboard has a token and the request carries it as
//! `Authorization: Bearer <token>` (compared in constant time).

use axum::http::{HeaderMap, StatusCode};

use crate::ops::ApiTokens;

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The dashboard runs without a token: read-only.
    ReadOnly,
    /// No token, or a wrong one, on the request.
    BadToken,
}

impl Denied {
    /// The HTTP status and the message for the client.
    pub fn response(&self) -> (StatusCode, &'static str) {
        match self {
            Denied::ReadOnly => (
                StatusCode::FORBIDDEN,
                "the dashboard is read-only: start it with --token or PGFLOW_DASHBOARD_TOKEN to retry or purge",
            ),
            Denied::BadToken => (
                StatusCode::UNAUTHORIZED,
                "missing or wrong token: send Authorization: Bearer <token> (enter the token on the page)",
            ),
        }
    }
}

/// Checks the request's bearer token against `expected`.
pub fn check(expected: Option<&str>, headers: &HeaderMap) -> Result<(), Denied> {
    match ApiTokens::new(expected, None) {
        None => Err(Denied::ReadOnly),
        Some(tokens) if tokens.accepts(headers) => Ok(()),
        Some(_) => Err(Denied::BadToken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{header, HeaderValue};

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn no_token_configured_is_read_only() {
        assert_eq!(check(None, &with("Bearer x")), Err(Denied::ReadOnly));
    }

    #[test]
    fn right_token_passes_others_do_not() {
        assert_eq!(check(Some("s3cret"), &with("Bearer s3cret")), Ok(()));
        assert_eq!(
            check(Some("s3cret"), &with("Bearer s3cre")),
            Err(Denied::BadToken)
        );
        assert_eq!(
            check(Some("s3cret"), &with("s3cret")),
            Err(Denied::BadToken)
        );
        assert_eq!(
            check(Some("s3cret"), &HeaderMap::new()),
            Err(Denied::BadToken)
        );
    }
}
