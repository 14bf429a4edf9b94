//! HTTP API (actix-web): requests -> engine calls -> JSON. Handlers stay thin; blocking
//! work (search, inference) runs on actix's blocking pool, bounded by an in-flight limit
//! that answers 429 with `Retry-After` when exceeded.

mod auth;
mod catalog;
mod error;
mod events;
mod experiments;
mod keys;
mod profiles;
mod rerank;
mod rules;
mod search;
mod status;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::{web, App, HttpMessage, HttpRequest, HttpResponse, HttpServer};

pub use error::ErrorBody;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::keys::{Caller, Keys};
use crate::settings::Settings;

/// How long a request waits for an in-flight slot before it is answered 429.
const SLOT_WAIT: Duration = Duration::from_millis(100);

/// What the HTTP layer enforces, from the settings.
pub struct ServerConfig {
    /// Blocking calls (searches, writes) in flight before new ones wait, then get 429.
    pub max_in_flight: usize,
    /// Judged queries and their qrels for `GET /profiles/{name}/eval`.
    pub eval_set: Option<(PathBuf, PathBuf)>,
    /// The master key and stored keys (disabled: open, loopback only).
    pub keys: Keys,
    /// `Host` names answered (empty: this machine's names without keys, any with keys).
    pub allowed_hosts: Vec<String>,
    /// Origins allowed cross-origin (CORS); none by default.
    pub cors_origins: Vec<String>,
    /// The only folder `POST /admin/reindex` reads catalogs from.
    pub import_dir: PathBuf,
    /// Longest wait for a request body.
    pub body_timeout: Duration,
    /// Bytes of request bodies buffered at once, across requests (a request reserves its
    /// `Content-Length`, or its route's limit, before reading; past the budget, 429).
    pub body_budget: usize,
}

impl ServerConfig {
    /// Open (no keys), for tests and embedding: this machine's host names, no CORS,
    /// imports from `DATA_DIR/import`.
    pub fn open(max_in_flight: usize, data_dir: &Path) -> Self {
        ServerConfig {
            max_in_flight,
            eval_set: None,
            keys: Keys::disabled(),
            allowed_hosts: Vec::new(),
            cors_origins: Vec::new(),
            import_dir: data_dir.join("import"),
            body_timeout: Duration::from_secs(10),
            body_budget: 256 << 20,
        }
    }

    /// From the settings; opens the data directory's key file when a master key is set.
    pub fn from_settings(s: &Settings) -> Result<Self> {
        let keys = match &s.master_key {
            Some(m) if !m.expose().is_empty() => Keys::open(&s.data_dir, Some(m.expose()))?,
            _ => Keys::disabled(),
        };
        Ok(ServerConfig {
            max_in_flight: s.max_in_flight,
            eval_set: s.eval_queries.clone().zip(s.eval_qrels.clone()),
            keys,
            allowed_hosts: s.allowed_hosts.clone(),
            cors_origins: s.cors_origins.clone(),
            import_dir: s
                .import_dir
                .clone()
                .unwrap_or_else(|| s.data_dir.join("import")),
            body_timeout: Duration::from_secs(s.body_timeout_secs.max(1)),
            body_budget: s.body_buffer_mb.max(1) << 20,
        })
    }
}

/// Shared state of the HTTP workers.
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
    slots: Arc<tokio::sync::Semaphore>,
    /// The body budget, one permit per KiB.
    body_kib: Arc<tokio::sync::Semaphore>,
    config: ServerConfig,
}

impl AppState {
    /// Open state (no keys) for an engine with an in-flight limit.
    pub fn new(engine: Arc<Engine>, max_in_flight: usize) -> web::Data<AppState> {
        let config = ServerConfig::open(max_in_flight, engine.data_dir());
        Self::with_config(engine, config)
    }

    /// State with a full configuration.
    pub fn with_config(engine: Arc<Engine>, config: ServerConfig) -> web::Data<AppState> {
        web::Data::new(AppState {
            engine,
            slots: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight)),
            body_kib: Arc::new(tokio::sync::Semaphore::new(config.body_budget >> 10)),
            config,
        })
    }

    /// Blocking calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.config
            .max_in_flight
            .saturating_sub(self.slots.available_permits())
    }

    /// A slot for one blocking call: at once if one is free, else in arrival order within
    /// [`SLOT_WAIT`]; `Overloaded` (429) past that. The slot is given back when dropped:
    /// when the blocking call ends, whether it returned, panicked or its request was
    /// dropped (a client that reset the connection).
    async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        wait_for(&self.slots, 1).await
    }
}

/// `n` permits of `semaphore`, waiting in arrival order up to [`SLOT_WAIT`]; `Overloaded`
/// (429) past that.
async fn wait_for(
    semaphore: &Arc<tokio::sync::Semaphore>,
    n: u32,
) -> Result<tokio::sync::OwnedSemaphorePermit> {
    match tokio::time::timeout(SLOT_WAIT, semaphore.clone().acquire_many_owned(n)).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(Error::Overloaded),
    }
}

/// Runs `f` on the blocking pool under an in-flight slot (see [`AppState::slot`]). The
/// slot travels with `f`, so it is held exactly as long as the work runs.
pub async fn run_blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let slot = state.slot().await?;
    let out = web::block(move || {
        let _slot = slot;
        f()
    })
    .await;
    out.map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
}

/// The whole request body, at most `max` bytes, within the body timeout; `invalid(reason)`
/// is the error to answer with when it is larger or cannot be read. While it is read, the
/// body holds its share of the body budget (its `Content-Length`, else `max`), so
/// unfinished uploads cannot pile up in memory: past the budget a request waits like for
/// an in-flight slot, then gets 429.
async fn read_body(
    state: &AppState,
    http: &HttpRequest,
    payload: web::Payload,
    max: usize,
    invalid: impl Fn(String) -> Error,
) -> Result<web::Bytes> {
    let declared = http
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let kib = declared
        .map_or(max, |n| n.min(max))
        .div_ceil(1024)
        .clamp(1, (state.config.body_budget >> 10).max(1));
    let _budget = wait_for(&state.body_kib, u32::try_from(kib).unwrap_or(u32::MAX)).await?;
    let timeout = state.config.body_timeout;
    match actix_web::rt::time::timeout(timeout, payload.to_bytes_limited(max)).await {
        Err(_) => Err(Error::RequestTimeout(timeout.as_secs())),
        Ok(Ok(Ok(body))) => Ok(body),
        Ok(Ok(Err(_))) => Err(invalid(format!(
            "body larger than {} KiB: split it",
            max >> 10
        ))),
        Ok(Err(e)) => Err(invalid(format!("cannot read the body: {e}"))),
    }
}

/// The caller a key check recorded for this request (`None`: open mode, or master key).
fn caller(req: &HttpRequest) -> Option<Caller> {
    req.extensions().get::<Caller>().cloned()
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
    .configure(rules::configure)
    .configure(status::configure)
    .configure(keys::configure)
    .configure(rerank::configure)
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
    let checked = state.clone();
    App::new()
        .app_data(state)
        .configure(configure)
        .wrap_fn(move |req, srv| {
            // A refusal is answered here (with the error kept for the metrics layer), not
            // passed up as an `Err`, so every caller sees the same JSON response.
            let (next, origin) = match auth::check(&checked, &req) {
                Ok(pass) if pass.preflight => {
                    let origin = pass.cors_origin.unwrap_or_default();
                    (Err(req.into_response(cors_preflight(&origin))), None)
                }
                Ok(pass) => (Ok(srv.call(req)), pass.cors_origin),
                Err(e) => (Err(req.into_response(HttpResponse::from_error(e))), None),
            };
            async move {
                let mut res = match next {
                    Ok(call) => call.await?.map_into_boxed_body(),
                    Err(answer) => answer,
                };
                if let Some(o) = origin {
                    allow_origin(res.headers_mut(), &o);
                }
                Ok::<ServiceResponse<BoxBody>, actix_web::Error>(res)
            }
        })
        .wrap_fn(move |req, srv| {
            let started = Instant::now();
            let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
            let engine = engine.clone();
            let fut = srv.call(req);
            async move {
                let res = fut.await;
                let (status, error) = match &res {
                    Ok(r) => (
                        r.status(),
                        r.response()
                            .error()
                            .and_then(|e| e.as_error::<Error>())
                            .map(Error::code),
                    ),
                    Err(e) => (
                        e.as_response_error().status_code(),
                        e.as_error::<Error>().map(Error::code),
                    ),
                };
                engine
                    .metrics
                    .observe_request(&route, status.as_u16(), started.elapsed());
                // Every handler error is counted here, by its code, once.
                if let Some(code) = error {
                    engine.metrics.count_error(code);
                }
                res
            }
        })
}

fn allow_origin(headers: &mut header::HeaderMap, origin: &str) {
    if let Ok(v) = header::HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        headers.insert(header::VARY, header::HeaderValue::from_static("Origin"));
    }
}

/// The answer to a CORS preflight from an allowed origin.
fn cors_preflight(origin: &str) -> HttpResponse {
    let mut res = HttpResponse::NoContent()
        .insert_header((
            header::ACCESS_CONTROL_ALLOW_METHODS,
            "GET, POST, PUT, PATCH, DELETE",
        ))
        .insert_header((
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "authorization, content-type",
        ))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
        .finish();
    allow_origin(res.headers_mut(), origin);
    res
}

/// Serves until interrupted. Refuses a non-loopback address without a master key.
pub async fn serve(engine: Arc<Engine>, settings: &Settings) -> std::io::Result<()> {
    let config = ServerConfig::from_settings(settings).map_err(std::io::Error::other)?;
    let addr = &settings.addr;
    let loopback = addr
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback());
    if !config.keys.enabled() {
        if !loopback {
            return Err(std::io::Error::other(format!(
                "refusing to serve on {addr} without a master key: set SHOPRANK_MASTER_KEY \
                 (or --master-key), or bind a loopback address"
            )));
        }
        tracing::warn!(%addr, "no master key: every route is open, to this machine only");
    }
    let state = AppState::with_config(engine, config);
    tracing::info!(%addr, "listening");
    HttpServer::new(move || app(state.clone()))
        .workers(settings.workers)
        .client_request_timeout(Duration::from_secs(settings.body_timeout_secs.max(1)))
        .bind(addr)?
        .run()
        .await
}
