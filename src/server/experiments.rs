//! A/B experiments: `GET /experiments`, `PUT/GET/DELETE /experiments/{id}`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::AppState;
use crate::error::{Error, Result};

/// Routes of this file.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/experiments", web::get().to(list))
        .route("/experiments/{id}", web::get().to(report))
        .route("/experiments/{id}", web::put().to(put))
        .route("/experiments/{id}", web::delete().to(stop));
}

async fn list(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"experiments": state.engine.experiment_ids()}))
}

async fn report(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse> {
    let r = state.engine.experiment_report(&id)?;
    Ok(HttpResponse::Ok().json(r))
}

/// The body is the definition as TOML or JSON:
/// `{"description"?, "interleave"?, "arms": [{"name", "profile", "traffic"}]}`.
async fn put(
    state: web::Data<AppState>,
    http: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let body =
        super::read_body(&state, &http, payload, 256 << 10, Error::InvalidExperiment).await?;
    let text = std::str::from_utf8(&body).map_err(|e| {
        Error::InvalidExperiment(format!(
            "body is not valid UTF-8 (byte {})",
            e.valid_up_to()
        ))
    })?;
    let r = state.engine.put_experiment(&id, text)?;
    Ok(HttpResponse::Ok().json(r))
}

async fn stop(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse> {
    state.engine.stop_experiment(&id)?;
    Ok(HttpResponse::Ok().json(json!({"id": id.into_inner(), "stopped": true})))
}
