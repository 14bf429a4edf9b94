//! The rerank and embeddings APIs in the shapes other engines and SDKs already speak:
//! `POST /v1/rerank` and `POST /v2/rerank` (Cohere's shape, which Jina, Elasticsearch's
//! `custom` rerank service and OpenSearch connectors read) and `POST /v1/embeddings`
//! (OpenAI's shape, `float` or `base64`). Action `search`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{run_blocking, AppState};
use crate::engine::{RerankDocument, RerankRequest};
use crate::error::{Error, Result};

/// Routes of this file.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/rerank", web::post().to(rerank))
        .route("/v2/rerank", web::post().to(rerank))
        .route("/v1/embeddings", web::post().to(embeddings));
}

/// Largest request body.
const MAX_BODY: usize = 8 << 20;

/// `POST /v1/rerank` and `/v2/rerank`: `{"query", "documents": [string | {"text"} |
/// {"id"} | product object], "top_n"?, "return_documents"?, "model"?}` plus shoprank's
/// `user`, `profile`, `explain`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RerankBody {
    query: String,
    documents: Vec<Value>,
    #[serde(default)]
    top_n: Option<usize>,
    #[serde(default)]
    return_documents: Option<bool>,
    /// Accepted and echoed; shoprank ranks with its own model.
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    max_chunks_per_doc: Option<usize>,
    #[serde(default)]
    max_tokens_per_doc: Option<usize>,
    #[serde(default)]
    rank_fields: Option<Vec<String>>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    explain: bool,
}

/// The body read (within the limits) and parsed as `T`; a malformed one answers 400
/// naming the expected `shape`.
async fn json_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    http: &HttpRequest,
    payload: web::Payload,
    shape: &str,
) -> Result<T> {
    let raw = super::read_body(state, http, payload, MAX_BODY, |r| Error::param("body", r)).await?;
    serde_json::from_slice(&raw).map_err(|e| Error::param("body", format!("expected {shape}: {e}")))
}

/// A document as the engine takes it: `{"id"}` alone names an indexed product; a string,
/// `{"text"}` or a product object is text (its title, brand, category and attributes).
fn document(i: usize, v: &Value) -> Result<RerankDocument> {
    let bad = |why: &str| Error::param("documents", format!("document {i}: {why}"));
    match v {
        Value::String(s) => Ok(RerankDocument::Text(s.clone())),
        Value::Object(m) => {
            if let Some(t) = m.get("text") {
                return t
                    .as_str()
                    .map(|t| RerankDocument::Text(t.to_string()))
                    .ok_or_else(|| bad("`text` must be a string"));
            }
            let field = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("");
            let text: Vec<String> = ["title", "brand", "category"]
                .iter()
                .map(|k| field(k).to_string())
                .chain(
                    m.get("attributes")
                        .and_then(Value::as_object)
                        .into_iter()
                        .flatten()
                        .filter_map(|(_, v)| v.as_str().map(str::to_string)),
                )
                .filter(|s| !s.is_empty())
                .collect();
            match (m.get("id").and_then(Value::as_str), text.is_empty()) {
                (Some(id), true) => Ok(RerankDocument::Product(id.to_string())),
                (_, false) => Ok(RerankDocument::Text(text.join(" "))),
                (None, true) => Err(bad(
                    "expected a string, {\"text\"}, {\"id\"} or a product with a title",
                )),
            }
        }
        _ => Err(bad("expected a string or an object")),
    }
}

async fn rerank(
    state: web::Data<AppState>,
    http: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let body: RerankBody = json_body(
        &state,
        &http,
        payload,
        r#"{"query", "documents": [...], "top_n"?, "return_documents"?, "user"?, "profile"?, "explain"?}"#,
    )
    .await?;
    let _ = (
        body.max_chunks_per_doc,
        body.max_tokens_per_doc,
        body.rank_fields,
    );
    let documents = body
        .documents
        .iter()
        .enumerate()
        .map(|(i, v)| document(i, v))
        .collect::<Result<Vec<_>>>()?;
    let req = RerankRequest {
        query: body.query,
        documents,
        profile: body.profile,
        user: body.user,
        explain: body.explain,
    };
    let engine = state.engine.clone();
    let ranked = run_blocking(&state, move || engine.rerank(&req)).await?;
    let top_n = body.top_n.unwrap_or(ranked.len()).min(ranked.len());
    let v2 = http.path().starts_with("/v2/");
    let results: Vec<Value> = ranked
        .into_iter()
        .take(top_n)
        .map(|r| {
            let mut out = json!({"index": r.index, "relevance_score": r.score});
            if body.return_documents.unwrap_or(false) {
                let doc = &body.documents[r.index];
                out["document"] = match doc {
                    Value::String(s) => json!({"text": s}),
                    other => other.clone(),
                };
            }
            if let Some(e) = r.explain {
                out["explain"] = json!(e);
            }
            out
        })
        .collect();
    let id = format!("shoprank-{}", crate::util::now());
    let mut answer = json!({
        "id": id,
        "results": results,
        "meta": {"api_version": {"version": if v2 { "2" } else { "1" }}, "billed_units": {"search_units": 1}},
    });
    if let Some(m) = body.model {
        answer["model"] = json!(m);
    }
    Ok(HttpResponse::Ok().json(answer))
}

/// `POST /v1/embeddings`: `{"input": string | [string], "model"?, "encoding_format"?:
/// "float" | "base64", "dimensions"?, "user"?}` plus shoprank's `input_type`: `query`
/// (the model's query prefix) or `document` (default).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingsBody {
    input: Value,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    input_type: Option<String>,
}

/// Most texts in one embeddings request.
const MAX_INPUTS: usize = 2048;

async fn embeddings(
    state: web::Data<AppState>,
    http: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let body: EmbeddingsBody = json_body(
        &state,
        &http,
        payload,
        r#"{"input": string or [string], "model"?, "encoding_format"?, "input_type"?}"#,
    )
    .await?;
    let _ = body.user;
    let texts: Vec<String> = match &body.input {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    Error::param("input", "expected strings (token arrays are not taken)")
                })
            })
            .collect::<Result<_>>()?,
        _ => {
            return Err(Error::param(
                "input",
                "expected a string or an array of strings",
            ))
        }
    };
    if texts.is_empty() || texts.len() > MAX_INPUTS || texts.iter().any(|t| t.trim().is_empty()) {
        return Err(Error::param(
            "input",
            format!("send 1 to {MAX_INPUTS} non-empty texts"),
        ));
    }
    let as_queries = match body.input_type.as_deref() {
        None | Some("document") | Some("search_document") | Some("passage") => false,
        Some("query") | Some("search_query") => true,
        Some(other) => {
            return Err(Error::param(
                "input_type",
                format!("`{other}`: use query or document"),
            ))
        }
    };
    let base64 = match body.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(Error::param(
                "encoding_format",
                format!("`{other}`: use float or base64"),
            ))
        }
    };
    let engine = state.engine.clone();
    let owned = texts.clone();
    let (vectors, model) = run_blocking(&state, move || {
        Ok((engine.embed(&owned, as_queries)?, engine.model_id()))
    })
    .await?;
    if let Some(d) = body
        .dimensions
        .filter(|&d| vectors.first().is_some_and(|v| d != v.len()))
    {
        return Err(Error::param(
            "dimensions",
            format!("this model gives {} dimensions, not {d}", vectors[0].len()),
        ));
    }
    let tokens: usize = texts.iter().map(|t| t.chars().count()).sum();
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(encode_base64(&bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "object": "list",
        "data": data,
        "model": body.model.or(model).unwrap_or_default(),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}

/// Standard base64 with padding (RFC 4648), as OpenAI's `encoding_format: base64` sends
/// little-endian f32 vectors.
fn encode_base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode_base64(plain.as_bytes()), coded);
        }
    }
}
