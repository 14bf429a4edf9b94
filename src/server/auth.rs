//! Who may call what: each request -> its route's [`Need`] -> checks of the `Host`
//! header (DNS rebinding), the `Origin` of state-changing requests (cross-site forms and
//! `fetch` without a preflight) and the `Authorization: Bearer` key against the route's
//! action. Runs before any handler; a refusal is a JSON 401 or 403.
//!
//! Without a master key the server is open, but only on loopback (`serve` refuses another
//! bind) and only for `Host` names of this machine. With one, every route except
//! `/health` and the console page needs a key.

use actix_web::dev::ServiceRequest;
use actix_web::http::{header, Method};
use actix_web::HttpMessage;

use super::AppState;
use crate::error::{Error, Result};
use crate::keys::{Action, Caller};

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: `/health`, the console page, unknown routes (a JSON 404).
    Open,
    /// A key with this action (or the master key).
    Key(Action),
    /// The master key: `/keys`.
    Master,
}

/// The need of route `pattern` (as actix matched it) for `method`: the one table of
/// which action each route takes.
pub fn need(method: &Method, pattern: &str) -> Need {
    let write = !matches!(*method, Method::GET | Method::HEAD);
    match pattern {
        "/health" | "/ready" | "/" | "/console" | "unmatched" => Need::Open,
        "/search" | "/compare" | "/analyze" | "/suggest" => Need::Key(Action::Search),
        "/v1/rerank" | "/v2/rerank" | "/v1/embeddings" => Need::Key(Action::Search),
        "/products/{id}" if !write => Need::Key(Action::Search),
        "/products" | "/products/{id}" => Need::Key(Action::ProductsWrite),
        "/events" => Need::Key(Action::EventsWrite),
        "/users" | "/users/{id}" | "/users/{id}/profile" | "/users/{id}/export" => {
            Need::Key(Action::Users)
        }
        "/metrics" => Need::Key(Action::Admin),
        "/keys" | "/keys/{id}" => Need::Master,
        p if p.starts_with("/profiles") => Need::Key(Action::Profiles),
        p if p.starts_with("/experiments") => Need::Key(Action::Experiments),
        p if p.starts_with("/rules") => Need::Key(Action::Rules),
        p if p.starts_with("/admin") => Need::Key(Action::Admin),
        // A route added without a row here needs the master key until it gets one.
        _ => Need::Master,
    }
}

/// Whether a query string has a `user` parameter (percent-decoded, as the handler reads it;
/// an undecodable string names one too, to be safe).
fn names_a_user(query: &str) -> bool {
    actix_web::web::Query::<Vec<(String, String)>>::from_query(query)
        .map_or(true, |q| q.iter().any(|(k, _)| k == "user"))
}

/// The host part of a `Host` header or an origin (`http://a:1` -> `a`, `[::1]:8` -> `[::1]`).
fn host_of(authority: &str) -> &str {
    let a = authority
        .split_once("://")
        .map_or(authority, |(_, rest)| rest);
    let a = a.split('/').next().unwrap_or(a);
    match a.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or(a, |(h, _)| &a[..h.len() + 2]),
        None => a.split(':').next().unwrap_or(a),
    }
}

/// What the checks let through.
pub struct Pass {
    /// A CORS preflight, which the caller answers itself.
    pub preflight: bool,
    /// The request's origin when `cors_origins` allows it (named in the answer's
    /// `Access-Control-Allow-Origin`).
    pub cors_origin: Option<String>,
}

/// Checks `req` and records its [`Caller`] in the request's extensions.
pub fn check(state: &AppState, req: &ServiceRequest) -> Result<Pass> {
    let cfg = &state.config;
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    // A request without a Host header (HTTP/1.0, in-process tests) names no foreign host;
    // a browser that was led here by DNS rebinding always sends the foreign name.
    let allowed_host = if host.is_empty() {
        true
    } else if cfg.allowed_hosts.is_empty() {
        // Open mode answers only to this machine's names; with keys, any host name.
        cfg.keys.enabled() || ["localhost", "127.0.0.1", "[::1]"].contains(&host_of(host))
    } else {
        cfg.allowed_hosts.iter().any(|h| h == host_of(host))
    };
    if !allowed_host {
        return Err(Error::Forbidden(format!(
            "host `{}` is not allowed (setting `allowed_hosts`)",
            host_of(host).chars().take(100).collect::<String>()
        )));
    }
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let cors = origin.filter(|o| cfg.cors_origins.iter().any(|c| c == o));
    let pass = |preflight| Pass {
        preflight,
        cors_origin: cors.map(str::to_string),
    };
    if *req.method() == Method::OPTIONS {
        return match cors {
            Some(_) => Ok(pass(true)),
            None => Err(Error::Forbidden(
                "cross-origin requests are not allowed from this origin (setting `cors_origins`)"
                    .into(),
            )),
        };
    }
    let state_changing = !matches!(*req.method(), Method::GET | Method::HEAD);
    if let Some(o) = origin {
        // Same origin: the page's scheme-less authority (host and port) is this server's.
        let authority = o.split_once("://").map_or(o, |(_, rest)| rest);
        let same_site = !host.is_empty() && authority.eq_ignore_ascii_case(host);
        if state_changing && !same_site && cors.is_none() {
            return Err(Error::Forbidden(format!(
                "origin `{}` may not change state here (setting `cors_origins`)",
                o.chars().take(100).collect::<String>()
            )));
        }
    }
    let pattern = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let mut need = need(req.method(), &pattern);
    // Personal suggestions list the shopper's own searches: their data, `users` only.
    if pattern == "/suggest" && names_a_user(req.query_string()) {
        need = Need::Key(Action::Users);
    }
    if !cfg.keys.enabled() || need == Need::Open {
        return Ok(pass(false));
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
        .ok_or(Error::MissingKey)?;
    let caller = cfg.keys.verify(token, crate::util::now())?;
    let allowed = match need {
        Need::Open => true,
        Need::Key(action) => caller.may(action),
        Need::Master => matches!(caller, Caller::Master),
    };
    if !allowed {
        let what = match need {
            Need::Key(a) => format!(
                "`{}`",
                serde_json::to_value(a)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            ),
            _ => "the master key".into(),
        };
        return Err(Error::Forbidden(format!(
            "this key may not use {} {pattern} (needs {what})",
            req.method()
        )));
    }
    req.extensions_mut().insert(caller);
    Ok(pass(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_routes() {
        assert_eq!(host_of("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(host_of("http://localhost:3000"), "localhost");
        assert_eq!(host_of("[::1]:8080"), "[::1]");
        assert_eq!(host_of("evil.example"), "evil.example");
        assert_eq!(need(&Method::GET, "/search"), Need::Key(Action::Search));
        assert_eq!(
            need(&Method::GET, "/products/{id}"),
            Need::Key(Action::Search)
        );
        assert_eq!(
            need(&Method::PATCH, "/products/{id}"),
            Need::Key(Action::ProductsWrite)
        );
        assert_eq!(
            need(&Method::POST, "/admin/reindex"),
            Need::Key(Action::Admin)
        );
        assert_eq!(
            need(&Method::GET, "/users/{id}/profile"),
            Need::Key(Action::Users)
        );
        assert_eq!(need(&Method::POST, "/keys"), Need::Master);
        assert_eq!(need(&Method::GET, "/something/new"), Need::Master);
        assert_eq!(need(&Method::GET, "/health"), Need::Open);
    }
}
