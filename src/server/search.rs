//! `GET /search`: query string -> [`SearchRequest`] -> engine -> JSON.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::{run_blocking, AppState};
use crate::engine::SearchRequest;
use crate::error::{Error, Result};
use crate::retrieve::Filters;

/// Routes of this file.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/search", web::get().to(search));
}

/// Query parameters, as text so each bad value gets an error naming its parameter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
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
}

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

    fn try_from(p: SearchParams) -> Result<SearchRequest> {
        Ok(SearchRequest {
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
        })
    }
}

async fn search(
    state: web::Data<AppState>,
    params: web::Query<SearchParams>,
) -> Result<HttpResponse> {
    let req = SearchRequest::try_from(params.into_inner())
        .inspect_err(|e| state.engine.metrics.count_error(e.code()))?;
    let engine = state.engine.clone();
    let res = run_blocking(&state, move || engine.search(&req)).await?;
    Ok(HttpResponse::Ok().json(res))
}
