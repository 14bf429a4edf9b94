//! Ranking profiles over HTTP: `GET /profiles`, `GET/PUT/DELETE /profiles/{name}`,
//! `POST /profiles/{name}/restore?version=`, `GET /profiles/{name}/eval`; `GET /users`; and
//! the console page at `GET /` and `GET /console`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::{run_blocking, AppState};
use crate::error::{Error, Result};

/// Routes of this file.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(console))
        .route("/console", web::get().to(console))
        .route("/profiles", web::get().to(list))
        .route("/profiles/{name}", web::get().to(get))
        .route("/profiles/{name}", web::put().to(put))
        .route("/profiles/{name}", web::delete().to(delete))
        .route("/profiles/{name}/restore", web::post().to(restore))
        .route("/profiles/{name}/eval", web::get().to(eval))
        .route("/users", web::get().to(users));
}

const CONSOLE: &str = include_str!("../../console/index.html");

async fn console() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(CONSOLE)
}

async fn list(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.engine.profile_list())
}

async fn get(state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse> {
    let info = state.engine.profile_info(&name)?;
    Ok(HttpResponse::Ok().json(info))
}

/// The body is the profile as TOML (as in `DATA_DIR/profiles/NAME.toml`) or as JSON.
async fn put(
    state: web::Data<AppState>,
    http: HttpRequest,
    name: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let name = name.into_inner();
    let bad = |reason: String| Error::InvalidProfile {
        path: format!("PUT /profiles/{name}").into(),
        reason,
    };
    let text = toml_body(&state, &http, payload, bad, |p: crate::rank::Profile| {
        p.to_toml()
    })
    .await?;
    let engine = state.engine.clone();
    let n = name.clone();
    let version = run_blocking(&state, move || engine.put_profile(&n, &text)).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"name": name, "version": version})))
}

/// A body of TOML text, or JSON turned into TOML through `T` (a profile, a rule); at
/// most 256 KiB of UTF-8.
pub(super) async fn toml_body<T: serde::de::DeserializeOwned>(
    state: &web::Data<AppState>,
    http: &HttpRequest,
    payload: web::Payload,
    bad: impl Fn(String) -> Error + Copy,
    to_toml: impl FnOnce(T) -> String,
) -> Result<String> {
    let body = super::read_body(state, http, payload, 256 << 10, bad).await?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| {
            bad(format!(
                "body is not valid UTF-8 (byte {})",
                e.valid_up_to()
            ))
        })?
        .to_string();
    Ok(match text.trim_start().starts_with('{') {
        true => to_toml(serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?),
        false => text,
    })
}

async fn delete(state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse> {
    let name = name.into_inner();
    let engine = state.engine.clone();
    let n = name.clone();
    let version = run_blocking(&state, move || engine.delete_profile(&n)).await?;
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
    let version = run_blocking(&state, move || engine.restore_profile(&n, v)).await?;
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({"name": name, "restored": v, "version": version})))
}

/// The profile's numbers on the evaluation set named in the settings.
async fn eval(state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse> {
    let (queries, qrels) = state.config.eval_set.clone().ok_or(Error::NoEvalSet)?;
    let engine = state.engine.clone();
    let name = name.into_inner();
    let report = run_blocking(&state, move || {
        crate::offline::eval::profile_numbers(&engine, &name, &queries, &qrels)
    })
    .await?;
    Ok(HttpResponse::Ok().json(report))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersParams {
    limit: Option<usize>,
}

async fn users(
    state: web::Data<AppState>,
    params: web::Query<UsersParams>,
) -> Result<HttpResponse> {
    let limit = params.limit.unwrap_or(50).min(1000);
    let list = state.engine.users(limit)?;
    Ok(HttpResponse::Ok().json(list))
}
