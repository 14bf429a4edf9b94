//! Error -> HTTP: one exhaustive mapping from [`Error`] to a status, and a JSON body
//! `{"code", "message"}` for every failure, including malformed requests.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;

use crate::error::Error;

/// The JSON error body.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// Stable machine-readable code.
    pub code: &'a str,
    /// Human-readable explanation.
    pub message: String,
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::InvalidQuery(_)
            | Error::InvalidParam { .. }
            | Error::UnknownProfile { .. }
            | Error::InvalidEvent { .. }
            | Error::InvalidProduct { .. }
            | Error::InvalidExperiment(_) => StatusCode::BAD_REQUEST,
            Error::ProductNotFound(_)
            | Error::UserNotFound(_)
            | Error::JobNotFound(_)
            | Error::ExperimentNotFound(_) => StatusCode::NOT_FOUND,
            Error::JobRunning(_) => StatusCode::CONFLICT,
            Error::ReadOnly(_) | Error::NoEvalSet => StatusCode::SERVICE_UNAVAILABLE,
            Error::GateFailed(_) | Error::Cancelled => StatusCode::UNPROCESSABLE_ENTITY,
            Error::NoEventStore => StatusCode::SERVICE_UNAVAILABLE,
            Error::InvalidProfile { .. }
            | Error::BadCatalog { .. }
            | Error::BadCatalogFile { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            Error::NoIndex(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Config(_)
            | Error::CudaNotCompiled
            | Error::Model { .. }
            | Error::Store(_)
            | Error::Io { .. }
            | Error::Index(_)
            | Error::Inference(_)
            | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(code = self.code(), error = %self, "request failed");
        }
        let mut res = HttpResponse::build(status);
        if matches!(self, Error::Overloaded) {
            res.insert_header((header::RETRY_AFTER, "1"));
        }
        res.json(ErrorBody {
            code: self.code(),
            message: self.to_string(),
        })
    }
}

/// A JSON 400 for requests actix rejects before a handler runs (bad query string, path).
pub fn bad_request(code: &'static str, message: String) -> actix_web::Error {
    let body = ErrorBody { code, message };
    actix_web::error::InternalError::from_response(
        body.message.clone(),
        HttpResponse::BadRequest().json(body),
    )
    .into()
}

/// JSON 404 for unknown routes.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    HttpResponse::NotFound().json(ErrorBody {
        code: "not_found",
        message: format!("no route for {} {}", req.method(), req.path()),
    })
}
