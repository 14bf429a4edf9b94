//! Catalog writes and jobs: `PUT /products`, `PATCH /products/{id}`,
//! `DELETE /products/{id}`, `POST /admin/reindex`, `GET`/`DELETE /admin/jobs/{id}`,
//! `POST /admin/rollback`.

use std::path::{Component, Path, PathBuf};

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{run_blocking, AppState};
use crate::error::{Error, Result};
use crate::index::{Outcome, Patch, ProductWrite};
use crate::jobs::{JobStatus, ReindexSpec};

/// Routes of this file.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/products", web::put().to(put_products))
        .route("/products/{id}", web::patch().to(patch_product))
        .route("/products/{id}", web::delete().to(delete_product))
        .route("/admin/reindex", web::post().to(reindex))
        .route("/admin/rollback", web::post().to(rollback))
        .route("/admin/jobs/{id}", web::get().to(job))
        .route("/admin/jobs/{id}", web::delete().to(cancel_job));
}

/// Largest request body, bytes.
const MAX_BODY: usize = 32 << 20;

async fn body(state: &AppState, http: &HttpRequest, payload: web::Payload) -> Result<web::Bytes> {
    super::read_body(state, http, payload, MAX_BODY, |reason| {
        Error::InvalidProduct {
            index: None,
            reason,
        }
    })
    .await
}

fn summary(outcomes: &[Outcome]) -> serde_json::Value {
    let count = |o: Outcome| outcomes.iter().filter(|&&x| x == o).count();
    json!({
        "applied": count(Outcome::Applied),
        "stale": count(Outcome::Stale),
        "unchanged": count(Outcome::Unchanged),
        "not_found": count(Outcome::NotFound),
        "outcomes": outcomes,
    })
}

/// Batch upsert: answers once the batch is durable (searchable within the commit interval).
async fn put_products(
    state: web::Data<AppState>,
    http: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let body = body(&state, &http, payload).await?;
    let engine = state.engine.clone();
    let outcomes = run_blocking(&state, move || {
        let writes = engine.parse_products(&body)?;
        engine.write_products(writes)
    })
    .await?;
    Ok(HttpResponse::Ok().json(summary(&outcomes)))
}

async fn patch_product(
    state: web::Data<AppState>,
    http: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let body = body(&state, &http, payload).await?;
    let patch: Patch = serde_json::from_slice(&body).map_err(|e| Error::InvalidProduct {
        index: None,
        reason: format!("malformed patch (fields: price, in_stock, sales, updated_at): {e}"),
    })?;
    let id = id.into_inner();
    write_one(&state, ProductWrite::Patch(id.clone(), patch), id).await
}

/// One write of product `id`: `{"id", "outcome"}`, or 404 when there is no such product.
async fn write_one(state: &AppState, write: ProductWrite, id: String) -> Result<HttpResponse> {
    let engine = state.engine.clone();
    let outcomes = run_blocking(state, move || engine.write_products(vec![write])).await?;
    if outcomes == [Outcome::NotFound] {
        return Err(Error::ProductNotFound(id.chars().take(256).collect()));
    }
    Ok(HttpResponse::Ok().json(json!({"id": id, "outcome": outcomes[0]})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteParams {
    /// When the product was removed, Unix seconds (default: now).
    updated_at: Option<i64>,
}

async fn delete_product(
    state: web::Data<AppState>,
    id: web::Path<String>,
    params: web::Query<DeleteParams>,
) -> Result<HttpResponse> {
    let id = id.into_inner();
    write_one(
        &state,
        ProductWrite::Delete(id.clone(), params.updated_at),
        id,
    )
    .await
}

/// Starts a background rebuild; answers 202 with the job to poll.
async fn reindex(
    state: web::Data<AppState>,
    http: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let body = body(&state, &http, payload).await?;
    let mut spec: ReindexSpec = serde_json::from_slice(&body).map_err(|e| {
        Error::param(
            "body",
            format!("expected {{\"catalog\": NAME in the import folder, \"format\"?, \"skip_invalid\"?, \"force\"?, \"allow_count_change\"?, \"no_model\"?}}: {e}"),
        )
    })?;
    spec.catalog = import_path(&state.config.import_dir, &spec.catalog)?;
    let status = state.engine.reindex(spec)?;
    Ok(HttpResponse::Accepted().json(shown(&state, status)))
}

/// A job's status with server paths replaced: the catalog by its name in the import
/// folder, the data directory by `DATA_DIR` (in the error text and the report's path).
fn shown(state: &AppState, mut s: JobStatus) -> JobStatus {
    let hide = |text: &str| {
        let mut t = text.to_string();
        for (dir, name) in [
            (&state.config.import_dir, ""),
            (&state.engine.data_dir().to_path_buf(), "DATA_DIR/"),
        ] {
            for form in [dir.canonicalize().ok(), Some(dir.clone())]
                .into_iter()
                .flatten()
            {
                let prefix = format!("{}/", form.display());
                if prefix.len() > 1 {
                    t = t.replace(&prefix, name);
                }
            }
        }
        t
    };
    s.catalog = hide(&s.catalog);
    s.error = s.error.as_deref().map(hide);
    s.errors_file = s
        .errors_file
        .map(|p| PathBuf::from(hide(&p.display().to_string())));
    s
}

/// The file `name` names inside the import folder: a relative name without `..`, that
/// resolves (symlinks followed) to a file inside the folder. Errors show the name given,
/// never a server path.
fn import_path(dir: &Path, name: &Path) -> Result<PathBuf> {
    let shown = name
        .display()
        .to_string()
        .chars()
        .take(200)
        .collect::<String>();
    let plain = name
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !plain || name.as_os_str().is_empty() {
        return Err(Error::Forbidden(format!(
            "catalog `{shown}`: name a file inside the import folder (relative, no `..`)"
        )));
    }
    let missing = || {
        Error::param(
            "catalog",
            format!("`{shown}` is not a file in the import folder"),
        )
    };
    let root = dir.canonicalize().map_err(|_| missing())?;
    let real = dir.join(name).canonicalize().map_err(|_| missing())?;
    if !real.starts_with(&root) {
        return Err(Error::Forbidden(format!(
            "catalog `{shown}` points outside the import folder"
        )));
    }
    if !real.is_file() {
        return Err(missing());
    }
    Ok(real)
}

async fn rollback(state: web::Data<AppState>) -> Result<HttpResponse> {
    let engine = state.engine.clone();
    let name = run_blocking(&state, move || engine.rollback()).await?;
    Ok(HttpResponse::Ok().json(json!({"generation": name})))
}

async fn job(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse> {
    let s = state.engine.job(&id)?;
    Ok(HttpResponse::Ok().json(shown(&state, s)))
}

async fn cancel_job(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse> {
    let s = state.engine.cancel_job(&id)?;
    Ok(HttpResponse::Accepted().json(shown(&state, s)))
}
