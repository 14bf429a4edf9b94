//! `GET /products/{id}`, `GET /health`, `GET /ready`, `GET /metrics`, `POST /admin/reload`.

use actix_web::{web, HttpRequest, HttpResponse};

use super::AppState;
use crate::error::{Error, Result};

/// Routes of this file.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/products/{id}", web::get().to(product))
        .route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics))
        .route("/admin/reload", web::post().to(reload));
}

/// A product; a storefront key sees only products its fixed filters admit (any other
/// answers 404, as if it did not exist).
async fn product(
    state: web::Data<AppState>,
    http: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let p = state.engine.product(&id)?;
    if let Some(fixed) = super::caller(&http).as_ref().and_then(|c| c.filters()) {
        if !fixed.apply(Default::default())?.matches(&p) {
            return Err(Error::ProductNotFound(id.chars().take(256).collect()));
        }
    }
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
