//! `POST /keys` (create; the secret is in this answer only), `GET /keys`,
//! `DELETE /keys/{id}`: master key only.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::AppState;
use crate::error::{Error, Result};
use crate::keys::NewKey;

/// Routes of this file.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/keys", web::post().to(create))
        .route("/keys", web::get().to(list))
        .route("/keys/{id}", web::delete().to(revoke));
}

fn enabled(state: &AppState) -> Result<()> {
    match state.config.keys.enabled() {
        true => Ok(()),
        false => Err(Error::Forbidden(
            "keys need a master key: start serve with SHOPRANK_MASTER_KEY set".into(),
        )),
    }
}

async fn create(
    state: web::Data<AppState>,
    http: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse> {
    enabled(&state)?;
    let body = super::read_body(&state, &http, payload, 64 << 10, |reason| {
        Error::param("body", reason)
    })
    .await?;
    let new: NewKey = serde_json::from_slice(&body).map_err(|e| {
        Error::param(
            "body",
            format!("expected {{\"actions\": [...], \"description\"?, \"expires_at\"?, \"filters\"?}}: {e}"),
        )
    })?;
    let (key, secret) = state.config.keys.create(new, crate::util::now())?;
    share_keys(&state);
    let mut out = serde_json::to_value(&key).map_err(|e| Error::Internal(e.to_string()))?;
    out["key"] = json!(secret);
    Ok(HttpResponse::Created().json(out))
}

async fn list(state: web::Data<AppState>) -> Result<HttpResponse> {
    enabled(&state)?;
    Ok(HttpResponse::Ok().json(json!({"keys": state.config.keys.list()})))
}

async fn revoke(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse> {
    enabled(&state)?;
    state.config.keys.revoke(&id)?;
    share_keys(&state);
    Ok(HttpResponse::Ok().json(json!({"revoked": id.into_inner()})))
}

/// Shares `keys.json` with the other replicas (with `--redis`). The key is created or
/// revoked here either way: a failure is logged, not answered, so a new key's secret is
/// never lost.
fn share_keys(state: &AppState) {
    if let Err(e) = state.engine.share_file("keys.json") {
        tracing::error!(error = %e, "could not share keys.json with the other replicas");
    }
}
