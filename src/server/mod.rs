//! HTTP API (actix-web): requests -> engine calls -> JSON. Handlers stay thin; blocking
//! work (search, inference) runs on actix's blocking pool, bounded by an in-flight limit
//! that answers 429 with `Retry-After` when exceeded.

mod catalog;
mod error;
mod events;
mod experiments;
mod profiles;
mod search;
mod status;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{web, App, HttpServer};

pub use error::ErrorBody;

use crate::engine::Engine;
use crate::error::{Error, Result};

/// Shared state of the HTTP workers.
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
    in_flight: AtomicUsize,
    max_in_flight: usize,
    /// Judged queries and their qrels for `GET /profiles/{name}/eval`.
    eval_set: Option<(PathBuf, PathBuf)>,
}

impl AppState {
    /// State for an engine with an in-flight limit.
    pub fn new(engine: Arc<Engine>, max_in_flight: usize) -> web::Data<AppState> {
        Self::with_eval_set(engine, max_in_flight, None)
    }

    /// State that also answers the console's eval route from `eval_set` (queries, qrels).
    pub fn with_eval_set(
        engine: Arc<Engine>,
        max_in_flight: usize,
        eval_set: Option<(PathBuf, PathBuf)>,
    ) -> web::Data<AppState> {
        web::Data::new(AppState {
            engine,
            in_flight: AtomicUsize::new(0),
            max_in_flight,
            eval_set,
        })
    }
}

/// Runs `f` on the blocking pool unless too many calls are in flight.
pub async fn run_blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    if state.in_flight.fetch_add(1, Ordering::AcqRel) >= state.max_in_flight {
        state.in_flight.fetch_sub(1, Ordering::AcqRel);
        return Err(Error::Overloaded);
    }
    let out = web::block(f).await;
    state.in_flight.fetch_sub(1, Ordering::AcqRel);
    out.map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
}

/// The whole request body, at most `max` bytes; `invalid(reason)` is the error to answer
/// with when it is larger or cannot be read.
async fn read_body(
    payload: web::Payload,
    max: usize,
    invalid: impl Fn(String) -> Error,
) -> Result<web::Bytes> {
    match payload.to_bytes_limited(max).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(_)) => Err(invalid(format!(
            "body larger than {} MiB: split it",
            max >> 20
        ))),
        Err(e) => Err(invalid(format!("cannot read the body: {e}"))),
    }
}

/// Every route, with JSON errors for malformed requests.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::QueryConfig::default().error_handler(|err, _| {
        error::bad_request("invalid_parameter", format!("bad query string: {err}"))
    }))
    .app_data(web::PathConfig::default().error_handler(|err, _| {
        error::bad_request("invalid_parameter", format!("bad path: {err}"))
    }))
    .configure(search::configure)
    .configure(events::configure)
    .configure(catalog::configure)
    .configure(profiles::configure)
    .configure(experiments::configure)
    .configure(status::configure)
    .default_service(web::to(error::not_found));
}

/// The application: state, routes, per-route request metrics and error counts.
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let engine = state.engine.clone();
    App::new()
        .app_data(state)
        .configure(configure)
        .wrap_fn(move |req, srv| {
            let started = Instant::now();
            let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
            let engine = engine.clone();
            let fut = srv.call(req);
            async move {
                let res = fut.await?;
                engine
                    .metrics
                    .observe_request(&route, res.status().as_u16(), started.elapsed());
                // Every handler error is counted here, by its code, once.
                if let Some(e) = res.response().error().and_then(|e| e.as_error::<Error>()) {
                    engine.metrics.count_error(e.code());
                }
                Ok(res)
            }
        })
}

/// Serves until interrupted.
pub async fn serve(
    engine: Arc<Engine>,
    addr: &str,
    workers: usize,
    max_in_flight: usize,
    eval_set: Option<(PathBuf, PathBuf)>,
) -> std::io::Result<()> {
    let state = AppState::with_eval_set(engine, max_in_flight, eval_set);
    tracing::info!(%addr, "listening");
    HttpServer::new(move || app(state.clone()))
        .workers(workers)
        .bind(addr)?
        .run()
        .await
}
