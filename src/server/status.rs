//! `GET /products/{id}`, `GET /health`, `GET /metrics`, `POST /admin/reload`.

use actix_web::{web, HttpResponse};

use super::AppState;
use crate::error::Result;

/// Routes of this file.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/products/{id}", web::get().to(product))
        .route("/health", web::get().to(health))
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

async fn health(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.engine.health())
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.engine.metrics.render())
}
