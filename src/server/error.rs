//! Error -> HTTP: the status from the error table ([`Error::status`]), and a JSON body
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
        StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if self.kind() == crate::error::Kind::Internal {
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
