//! `POST /events`, `GET /users/{id}/profile`, `DELETE /users/{id}`.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{run_blocking, AppState};
use crate::behavior;
use crate::error::Result;

/// Routes of this file.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/events")
            .app_data(web::PayloadConfig::new(4 << 20))
            .route(web::post().to(post_events)),
    )
    .route("/users/{id}/profile", web::get().to(profile))
    .route("/users/{id}", web::delete().to(delete));
}

/// One event, a JSON array or NDJSON. Answers once the events are durable.
async fn post_events(state: web::Data<AppState>, body: web::Bytes) -> Result<HttpResponse> {
    let engine = state.engine.clone();
    let (stored, expired) = run_blocking(&state, move || {
        let events = behavior::parse_batch(&body, behavior::now())?;
        engine.record_events(events)
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({"stored": stored, "dropped_past_retention": expired})))
}

async fn profile(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse> {
    let p = state
        .engine
        .user_profile(&id)
        .inspect_err(|e| state.engine.metrics.count_error(e.code()))?;
    Ok(HttpResponse::Ok().json(p))
}

/// Erases a user durably; idempotent (an unknown user answers `deleted_events: 0`).
async fn delete(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse> {
    let engine = state.engine.clone();
    let user = id.into_inner();
    let u = user.clone();
    let removed = run_blocking(&state, move || engine.delete_user(&u)).await?;
    Ok(HttpResponse::Ok().json(json!({"user_id": user, "deleted_events": removed})))
}
