//! `GET /search`: query string -> [`SearchRequest`] -> engine -> JSON.
//! `GET /analyze?q=`: the query's normalized text, tokens and intents.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::{run_blocking, AppState};
use crate::engine::SearchRequest;
use crate::error::{Error, Result};
use crate::retrieve::Filters;

/// Routes of this file.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/search", web::get().to(search))
        .route("/compare", web::get().to(compare))
        .route("/analyze", web::get().to(analyze))
        .route("/suggest", web::get().to(suggest));
}

/// Query parameters, as text so each bad value gets an error naming its parameter.
/// `w.FEATURE=weight` overrides one weight of the profile for this request; any other
/// unknown parameter is an error.
#[derive(Debug, Deserialize)]
pub struct SearchParams {
    q: Option<String>,
    brand: Option<String>,
    category: Option<String>,
    price_min: Option<String>,
    price_max: Option<String>,
    in_stock: Option<String>,
    page: Option<String>,
    size: Option<String>,
    profile: Option<String>,
    explain: Option<String>,
    user: Option<String>,
    #[serde(flatten)]
    rest: std::collections::BTreeMap<String, String>,
}

/// Known `/search` parameters (for the unknown-parameter error).
const SEARCH_PARAMS: &str =
    "q, brand, category, price_min, price_max, in_stock, page, size, profile, explain, user, w.FEATURE";

fn parse<T: std::str::FromStr>(name: &str, v: Option<String>, what: &str) -> Result<Option<T>> {
    match v.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| Error::param(name, format!("`{s}` is not {what}"))),
    }
}

fn flag(name: &str, v: Option<String>) -> Result<bool> {
    match v.as_deref() {
        None | Some("") | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(Error::param(
            name,
            format!("`{other}` is not true or false"),
        )),
    }
}

fn text(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

impl TryFrom<SearchParams> for SearchRequest {
    type Error = Error;

    fn try_from(mut p: SearchParams) -> Result<SearchRequest> {
        let mut overrides = std::collections::BTreeMap::new();
        for (name, value) in std::mem::take(&mut p.rest) {
            match name.strip_prefix("w.") {
                Some(feature) => {
                    let w = parse(&name, Some(value), "a number")?.unwrap_or(0.0);
                    overrides.insert(feature.to_string(), w);
                }
                None if ["a", "b"].contains(&name.as_str()) => {}
                None => {
                    return Err(Error::param(
                        &name,
                        format!("unknown parameter (known: {SEARCH_PARAMS})"),
                    ))
                }
            }
        }
        Ok(SearchRequest {
            overrides,
            bm25: None,
            all_candidates: false,
            query: p
                .q
                .ok_or_else(|| Error::param("q", "missing: pass the query as ?q=..."))?,
            filters: Filters {
                brand: text(p.brand),
                category: text(p.category),
                price_min: parse("price_min", p.price_min, "a number")?,
                price_max: parse("price_max", p.price_max, "a number")?,
                in_stock: flag("in_stock", p.in_stock)?,
            },
            page: parse("page", p.page, "a page number")?.unwrap_or(1),
            size: parse("size", p.size, "a page size")?.unwrap_or(10),
            profile: text(p.profile),
            explain: flag("explain", p.explain)?,
            explain_terms: true,
            user: text(p.user),
        })
    }
}

/// actix decodes percent-escapes lossily (invalid UTF-8 becomes U+FFFD): refuse such
/// values instead of searching for replacement characters.
pub fn check_utf8(query_string: &str) -> Result<()> {
    for pair in query_string.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let raw = value.as_bytes();
        let mut bytes = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            let escaped = (raw[i] == b'%' && i + 2 < raw.len())
                .then(|| hex(raw[i + 1]).zip(hex(raw[i + 2])))
                .flatten();
            match (escaped, raw[i]) {
                (Some((h, l)), _) => {
                    bytes.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                (None, b'+') => bytes.push(b' '),
                (None, b) => bytes.push(b),
            }
            i += 1;
        }
        if std::str::from_utf8(&bytes).is_err() {
            return Err(if name == "q" {
                Error::InvalidQuery("the query is not valid UTF-8 text".into())
            } else {
                Error::param(name, "not valid UTF-8 text")
            });
        }
    }
    Ok(())
}

/// The request's filters narrowed by its key's fixed filters (a storefront key).
fn key_filters(http: &HttpRequest, filters: Filters) -> Result<Filters> {
    match super::caller(http).as_ref().and_then(|c| c.filters()) {
        Some(fixed) => fixed.apply(filters),
        None => Ok(filters),
    }
}

async fn search(
    state: web::Data<AppState>,
    http: HttpRequest,
    params: web::Query<SearchParams>,
) -> Result<HttpResponse> {
    let mut req = check_utf8(http.query_string())
        .and_then(|_| SearchRequest::try_from(params.into_inner()))?;
    req.filters = key_filters(&http, req.filters)?;
    let engine = state.engine.clone();
    let res = run_blocking(&state, move || engine.shopper_search(&req)).await?;
    Ok(HttpResponse::Ok().json(res))
}

/// `GET /compare?q=&a=&b=` (and every `/search` parameter): both rankings side by side.
async fn compare(state: web::Data<AppState>, http: HttpRequest) -> Result<HttpResponse> {
    let pairs =
        web::Query::<std::collections::BTreeMap<String, String>>::from_query(http.query_string())
            .map_err(|e| Error::param("query", e.to_string()));
    let parsed = check_utf8(http.query_string()).and_then(|_| {
        let mut pairs = pairs?.into_inner();
        let a = pairs.remove("a").unwrap_or_else(|| "default".into());
        let b = pairs
            .remove("b")
            .ok_or_else(|| Error::param("b", "missing: name the second profile"))?;
        let params: SearchParams =
            serde_json::from_value(serde_json::to_value(pairs).unwrap_or_default())
                .map_err(|e| Error::param("query", e.to_string()))?;
        Ok((SearchRequest::try_from(params)?, a, b))
    });
    let (mut req, a, b) = parsed?;
    req.filters = key_filters(&http, req.filters)?;
    let engine = state.engine.clone();
    let res = run_blocking(&state, move || engine.compare(&req, &a, &b)).await?;
    Ok(HttpResponse::Ok().json(res))
}

/// `/analyze` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyzeParams {
    q: Option<String>,
}

async fn analyze(
    state: web::Data<AppState>,
    http: HttpRequest,
    params: web::Query<AnalyzeParams>,
) -> Result<HttpResponse> {
    let q = check_utf8(http.query_string()).and_then(|_| {
        params
            .into_inner()
            .q
            .ok_or_else(|| Error::param("q", "missing: pass the query as ?q=..."))
    })?;
    let engine = state.engine.clone();
    let res = run_blocking(&state, move || engine.analyze(&q)).await?;
    Ok(HttpResponse::Ok().json(res))
}

/// `/suggest` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuggestParams {
    q: Option<String>,
    size: Option<String>,
    user: Option<String>,
}

async fn suggest(
    state: web::Data<AppState>,
    http: HttpRequest,
    params: web::Query<SuggestParams>,
) -> Result<HttpResponse> {
    let p = params.into_inner();
    let res = check_utf8(http.query_string()).and_then(|_| {
        let q =
            p.q.ok_or_else(|| Error::param("q", "missing: pass the typed prefix as ?q=..."))?;
        let size = parse("size", p.size, "a number")?.unwrap_or(10);
        Ok((state.engine.suggest(&q, size, p.user.as_deref())?, q))
    })?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"query": res.1, "suggestions": res.0})))
}
