//! Who may read the dashboard: a web page the operator visits must not be
//! able to read the API (dead letters carry payloads) through DNS
//! rebinding or a cross-origin request. Every page and API request must
//!
//! * name an allowed host in its `Host` header: a loopback name
//!   (`localhost`, `*.localhost`, `127.0.0.0/8`, `[::1]`), the address the
//!   dashboard is bound to (unless it is `0.0.0.0` / `[::]`), or one of
//!   `--dashboard-allowed-host` (any port: the name is what a rebinding
//!   attacker cannot choose);
//! * if it has an `Origin` header (browsers send one on cross-origin and
//!   on POST requests), come from the page's own origin (`http://<Host>`);
//!
//! unless it carries the dashboard's bearer token (a script or a proxy
//! that knows the token is not a browser tricked into asking). Refusals are
//! `403` with the reason. `/healthz`, `/readyz` and `/metrics` are not
//! guarded (they are served before the dashboard's routes).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ops::ApiTokens;

/// The hosts and the token the guard accepts.
#[derive(Debug, Clone)]
pub struct OriginGuard {
    bound: IpAddr,
    extra_hosts: Vec<String>,
    token: Option<ApiTokens>,
}

impl OriginGuard {
    /// Accepts loopback names, `bound` (unless unspecified), `extra_hosts`
    /// (names or addresses, any case, without port), and any request
    /// bearing `token`.
    pub fn new(bound: SocketAddr, extra_hosts: &[String], token: Option<&str>) -> Self {
        Self {
            bound: bound.ip(),
            extra_hosts: extra_hosts
                .iter()
                .map(|h| h.trim().trim_matches(['[', ']']).to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            token: ApiTokens::new(token, None),
        }
    }

    /// Whether the host name `name` (no port, no brackets, lowercase) is allowed.
    fn allows_name(&self, name: &str) -> bool {
        if name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        if let Ok(ip) = name.parse::<IpAddr>() {
            if ip.is_loopback() || (ip == self.bound && !ip.is_unspecified()) {
                return true;
            }
        }
        self.extra_hosts.iter().any(|h| h == name)
    }

    /// `Ok`, or why the request is refused.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), String> {
        if self.token.as_ref().is_some_and(|t| t.accepts(headers)) {
            return Ok(());
        }
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .ok_or("no Host header")?;
        if !host_name(host).is_some_and(|n| self.allows_name(&n)) {
            return Err(format!(
                "Host {host:?} is not allowed: open the dashboard as localhost or its address, \
                 add the name with --dashboard-allowed-host, or send the token"
            ));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            let same = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .is_some_and(|o| o.eq_ignore_ascii_case(host));
            if !same {
                return Err(format!(
                    "cross-origin request from {origin:?} refused: the dashboard's API answers \
                     its own page only (or a request with the token)"
                ));
            }
        }
        Ok(())
    }
}

/// The name part of a `Host` value (`name`, `name:port`, `[v6]:port`),
/// lowercased; `None` when malformed.
fn host_name(host: &str) -> Option<String> {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']')?.0
    } else {
        match host.rsplit_once(':') {
            Some((n, port)) if port.chars().all(|c| c.is_ascii_digit()) => n,
            Some(_) => return None,
            None => host,
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

/// The middleware: answers 403 with the reason when [`OriginGuard::check`] refuses.
pub(crate) async fn guard(State(g): State<Arc<OriginGuard>>, req: Request, next: Next) -> Response {
    match g.check(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(why) => {
            tracing::warn!(reason = %why, path = %req.uri().path(), "dashboard request refused");
            (StatusCode::FORBIDDEN, why).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn guard_on(addr: &str) -> OriginGuard {
        OriginGuard::new(
            addr.parse().unwrap(),
            &["Board.Example".into()],
            Some("tok-12345"),
        )
    }

    #[test]
    fn loopback_bound_and_listed_hosts_pass_others_do_not() {
        let g = guard_on("10.0.0.5:8700");
        for ok in [
            "localhost:8700",
            "LOCALHOST",
            "app.localhost:1",
            "127.0.0.1:8700",
            "127.1.2.3",
            "[::1]:8700",
            "10.0.0.5:8700",
            "board.example:80",
        ] {
            assert_eq!(g.check(&headers(&[(header::HOST, ok)])), Ok(()), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8700",
            "10.0.0.6:8700",
            "localhost.evil.example",
            "[::2]:1",
            "a:b:c",
        ] {
            assert!(g.check(&headers(&[(header::HOST, bad)])).is_err(), "{bad}");
        }
        assert!(g.check(&HeaderMap::new()).is_err());
        // 0.0.0.0 is not a name a page can use.
        let any = guard_on("0.0.0.0:8700");
        assert!(any
            .check(&headers(&[(header::HOST, "0.0.0.0:8700")]))
            .is_err());
    }

    #[test]
    fn foreign_origins_are_refused_without_the_token() {
        let g = guard_on("127.0.0.1:8700");
        let host = (header::HOST, "127.0.0.1:8700");
        assert_eq!(
            g.check(&headers(&[
                host.clone(),
                (header::ORIGIN, "http://127.0.0.1:8700")
            ])),
            Ok(())
        );
        for origin in ["http://evil.example", "null", "http://127.0.0.1:9999"] {
            let h = headers(&[host.clone(), (header::ORIGIN, origin)]);
            assert!(g.check(&h).is_err(), "{origin}");
        }
        let with_token = headers(&[
            (header::HOST, "evil.example"),
            (header::ORIGIN, "http://evil.example"),
            (header::AUTHORIZATION, "Bearer tok-12345"),
        ]);
        assert_eq!(g.check(&with_token), Ok(()));
    }
}
