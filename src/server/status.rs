//! `GET /products/{id}`, `GET /health`, `GET /ready`, `GET /metrics`, `POST /admin/reload`.

use actix_web::{web, HttpResponse};

use super::AppState;
use crate::error::Result;

/// Routes of this file.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/products/{id}", web::get().to(product))
        .route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics))
        .route("/admin/reload", web::post().to(reload));
}

async fn product(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse> {
    let p = state.engine.product(&id)?;
    Ok(HttpResponse::Ok().json(p))
}

/// Re-reads synonyms, the user dictionary (query side) and brand aliases.
async fn reload(state: web::Data<AppState>) -> Result<HttpResponse> {
    let engine = state.engine.clone();
    let report = super::run_blocking(&state, move || engine.reload_text()).await?;
    Ok(HttpResponse::Ok().json(report))
}

/// The engine's health plus the server's own: in-flight slots all taken.
fn health_of(state: &AppState) -> crate::engine::Health {
    let mut h = state.engine.health();
    if state.in_flight() >= state.config.max_in_flight {
        h.problems
            .push("every in-flight slot is taken: new requests wait, then get 429".into());
        h.status = "degraded";
    }
    h
}

/// Always 200 while the process answers; `status` says `ok` or `degraded`.
async fn health(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(health_of(&state))
}

/// For load balancers: 200 when healthy, 503 when degraded.
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let h = health_of(&state);
    match h.status {
        "ok" => HttpResponse::Ok().json(h),
        _ => HttpResponse::ServiceUnavailable().json(h),
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.engine.metrics.render())
}
