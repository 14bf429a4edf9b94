//! `POST /events`, `GET /users/{id}/profile`, `GET /users/{id}/export`, `DELETE /users/{id}`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::{run_blocking, AppState};
use crate::behavior;
use crate::error::{Error, Result};

/// Routes of this file.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/events", web::post().to(post_events))
        .route("/users/{id}/profile", web::get().to(profile))
        .route("/users/{id}/export", web::get().to(export))
        .route("/users/{id}", web::delete().to(delete));
}

/// Largest request body, bytes (10,000 events with long ids fit).
const MAX_BODY: usize = 16 << 20;

/// One event, a JSON array or NDJSON. Answers once the events are durable.
async fn post_events(
    state: web::Data<AppState>,
    http: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let body = super::read_body(&state, &http, payload, MAX_BODY, |reason| {
        Error::InvalidEvent {
            index: None,
            reason,
        }
    })
    .await?;
    let engine = state.engine.clone();
    let (stored, expired) = run_blocking(&state, move || {
        let events = behavior::parse_batch(&body, crate::util::now())?;
        engine.record_events(events)
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({"stored": stored, "dropped_past_retention": expired})))
}

async fn profile(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse> {
    let p = state.engine.user_profile(&id)?;
    Ok(HttpResponse::Ok().json(p))
}

/// Everything stored about a user: events and profile.
async fn export(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse> {
    let engine = state.engine.clone();
    let user = id.into_inner();
    let out = run_blocking(&state, move || engine.export_user(&user)).await?;
    Ok(HttpResponse::Ok().json(out))
}

/// Erases a user durably; idempotent (an unknown user answers `deleted_events: 0`).
async fn delete(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse> {
    let engine = state.engine.clone();
    let user = id.into_inner();
    let u = user.clone();
    let removed = run_blocking(&state, move || engine.delete_user(&u)).await?;
    Ok(HttpResponse::Ok().json(json!({"user_id": user, "deleted_events": removed})))
}
