//! Merchandising rules over HTTP: `GET /rules`, `GET/PUT/DELETE /rules/{name}`,
//! `POST /rules/{name}/restore?version=` (the `rules` action).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::profiles::toml_body;
use super::{run_blocking, AppState};
use crate::error::{Error, Result};
use crate::rank::rules::Rule;

/// Routes of this file.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/rules", web::get().to(list))
        .route("/rules/{name}", web::get().to(get))
        .route("/rules/{name}", web::put().to(put))
        .route("/rules/{name}", web::delete().to(delete))
        .route("/rules/{name}/restore", web::post().to(restore));
}

async fn list(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.engine.rule_list())
}

async fn get(state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(state.engine.rule_info(&name)?))
}

/// The body is the rule as TOML (as in `DATA_DIR/rules/NAME.toml`) or as JSON.
async fn put(
    state: web::Data<AppState>,
    http: HttpRequest,
    name: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let name = name.into_inner();
    let bad = |reason: String| Error::InvalidRule {
        name: name.chars().take(64).collect(),
        reason,
    };
    let text = toml_body(&state, &http, payload, bad, |r: Rule| r.to_toml()).await?;
    let engine = state.engine.clone();
    let n = name.clone();
    let version = run_blocking(&state, move || engine.put_rule(&n, &text)).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"name": name, "version": version})))
}

async fn delete(state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse> {
    let name = name.into_inner();
    let engine = state.engine.clone();
    let n = name.clone();
    let version = run_blocking(&state, move || engine.delete_rule(&n)).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"name": name, "deleted": version})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreParams {
    version: u64,
}

async fn restore(
    state: web::Data<AppState>,
    name: web::Path<String>,
    params: web::Query<RestoreParams>,
) -> Result<HttpResponse> {
    let name = name.into_inner();
    let engine = state.engine.clone();
    let n = name.clone();
    let v = params.version;
    let version = run_blocking(&state, move || engine.restore_rule(&n, v)).await?;
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({"name": name, "restored": v, "version": version})))
}
