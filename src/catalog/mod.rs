//! Catalog ingest: a catalog file -> validated [`Product`]s plus a per-record error report.
//!
//! Every format (JSONL, CSV/TSV with a header, and adapters for the shared Multi-CPR,
//! Taobao cosmetics and OpenBG files) is turned into field maps by `formats`; one
//! validator ([`Product::from_fields`]) checks them, so a bad record reads the same whatever
//! its format: file, line, field and reason.

pub mod formats;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use formats::Format;

use crate::error::{Error, Result};
use crate::schema::{CatalogSchema, UnknownFields};

/// A product as indexed and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    /// Stable id from the catalog.
    pub id: String,
    /// Title shown to shoppers; the main searchable text.
    pub title: String,
    /// Brand, empty when unknown.
    #[serde(default)]
    pub brand: String,
    /// Category path, `/`-separated (`美妆/面部护理/面霜`), empty when unknown.
    #[serde(default)]
    pub category: String,
    /// Price in yuan, when known.
    #[serde(default)]
    pub price: Option<f64>,
    /// Units sold (popularity).
    #[serde(default)]
    pub sales: u64,
    /// Average rating in 0..=5, when known.
    #[serde(default)]
    pub rating: Option<f64>,
    /// Shop name.
    #[serde(default)]
    pub shop: String,
    /// Attributes (`容量` -> `50ml`).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Whether the product can be bought now.
    #[serde(default = "yes")]
    pub in_stock: bool,
    /// Last change, Unix seconds.
    #[serde(default)]
    pub updated_at: i64,
    /// Fields outside the schema, kept when the schema says `unknown_fields = "keep"`.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

fn yes() -> bool {
    true
}

/// One bad record: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordError {
    /// 1-based line in the catalog file.
    pub line: usize,
    /// The record's id, when it could be read.
    pub id: Option<String>,
    /// The offending field (`-` when the whole line is unreadable).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(id) = &self.id {
            write!(f, " (id `{id}`)")?;
        }
        write!(f, ", field `{}`: {}", self.field, self.reason)
    }
}

/// The outcome of reading a catalog: the valid products and every bad record.
#[derive(Debug, Default)]
pub struct IngestReport {
    /// The catalog file.
    pub path: PathBuf,
    /// Valid products, in file order.
    pub products: Vec<Product>,
    /// Bad records, in file order.
    pub errors: Vec<RecordError>,
}

impl IngestReport {
    /// The products, or [`Error::BadCatalog`] when any record is bad and `skip_invalid` is off.
    pub fn accept(self, skip_invalid: bool) -> Result<(Vec<Product>, Vec<RecordError>)> {
        if !self.errors.is_empty() && !skip_invalid {
            return Err(Error::BadCatalog {
                path: self.path,
                count: self.errors.len(),
                first: self.errors[0].to_string(),
            });
        }
        Ok((self.products, self.errors))
    }
}

/// The valid products of a catalog in the shared data folder (`../shared/data`), bad
/// records skipped; a missing file is a config error naming who needed it.
pub fn read_shared(
    shared: &Path,
    file: &str,
    format: Format,
    needed_by: &str,
) -> Result<Vec<Product>> {
    let path = shared.join(file);
    if !path.is_file() {
        return Err(Error::Config(format!(
            "{} is missing: {needed_by} reads the shared data set (see its DATA.md)",
            path.display()
        )));
    }
    let (products, _) = read_catalog(&path, format, &CatalogSchema::default())?.accept(true)?;
    Ok(products)
}

/// The JSON values of a request body: one object, an array or NDJSON, at most `max` of
/// them. The error is (position, reason).
pub fn json_values(
    body: &[u8],
    what: &str,
    max: usize,
) -> std::result::Result<Vec<Value>, (Option<usize>, String)> {
    let text = std::str::from_utf8(body).map_err(|e| {
        (
            None,
            format!("body is not valid UTF-8 (byte {})", e.valid_up_to()),
        )
    })?;
    let trimmed = text.trim_start();
    let values: Vec<Value> = if trimmed.starts_with('[') {
        serde_json::from_str(trimmed).map_err(|e| (None, format!("malformed JSON array: {e}")))?
    } else {
        // One object (compact or pretty-printed) or NDJSON: a stream of JSON values.
        let mut out = Vec::new();
        for v in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
            let v = v.map_err(|e| {
                (
                    Some(out.len()),
                    format!("malformed JSON at line {}: {e}", e.line()),
                )
            })?;
            out.push(v);
        }
        out
    };
    if values.is_empty() {
        return Err((None, format!("no {what} in the body")));
    }
    if values.len() > max {
        return Err((
            None,
            format!(
                "{} {what} in one batch, at most {max}: split it",
                values.len()
            ),
        ));
    }
    Ok(values)
}

/// Reads and validates a catalog file.
pub fn read_catalog(path: &Path, format: Format, schema: &CatalogSchema) -> Result<IngestReport> {
    let records = formats::read_records(path, format)?;
    let mut report = IngestReport {
        path: path.to_path_buf(),
        ..Default::default()
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    for record in records {
        let line = record.line;
        let fields = match record.fields {
            Ok(fields) => fields,
            Err(reason) => {
                report.errors.push(RecordError {
                    line,
                    id: None,
                    field: "-".into(),
                    reason,
                });
                continue;
            }
        };
        match Product::from_fields(fields, schema) {
            Ok(product) => {
                if let Some(first) = seen.insert(product.id.clone(), line) {
                    report.errors.push(RecordError {
                        line,
                        id: Some(product.id),
                        field: "id".into(),
                        reason: format!("duplicate id, first seen on line {first}"),
                    });
                } else {
                    report.products.push(product);
                }
            }
            Err((field, reason, id)) => {
                report.errors.push(RecordError {
                    line,
                    id,
                    field,
                    reason,
                });
            }
        }
    }
    Ok(report)
}

type FieldError = (String, String, Option<String>);

impl Product {
    /// Validates one record given as a JSON object.
    ///
    /// The error is `(field, reason, id if known)`.
    pub fn from_fields(
        mut fields: Map<String, Value>,
        schema: &CatalogSchema,
    ) -> Result<Product, FieldError> {
        let id = match fields.remove("id") {
            Some(Value::String(s)) => s.trim().to_string(),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => {
                return Err(("id".into(), format!("expected a string, got {other}"), None))
            }
            None => String::new(),
        };
        let fail = |field: &str, reason: String| (field.to_string(), reason, Some(id.clone()));
        if id.is_empty() {
            return Err((
                "id".into(),
                "missing or empty; every product needs an id".into(),
                None,
            ));
        }
        if id.len() > 256 || id.chars().any(char::is_control) {
            return Err(fail(
                "id",
                "must be at most 256 bytes without control characters".into(),
            ));
        }
        let mut p = Product {
            id: id.clone(),
            title: String::new(),
            brand: String::new(),
            category: String::new(),
            price: None,
            sales: 0,
            rating: None,
            shop: String::new(),
            attributes: BTreeMap::new(),
            in_stock: true,
            updated_at: 0,
            extra: Map::new(),
        };
        for (key, value) in fields {
            if value.is_null() {
                continue;
            }
            match key.as_str() {
                "title" => p.title = text(&value).map_err(|r| fail("title", r))?,
                "brand" => p.brand = text(&value).map_err(|r| fail("brand", r))?,
                "shop" => p.shop = text(&value).map_err(|r| fail("shop", r))?,
                "category" => p.category = category(&value).map_err(|r| fail("category", r))?,
                "price" => {
                    let v = number(&value).map_err(|r| fail("price", r))?;
                    if v < 0.0 {
                        return Err(fail("price", format!("must not be negative, got {v}")));
                    }
                    p.price = Some(v);
                }
                "sales" => {
                    let v = number(&value).map_err(|r| fail("sales", r))?;
                    if v < 0.0 || v.fract() != 0.0 {
                        return Err(fail("sales", format!("must be a whole number >= 0, got {v}")));
                    }
                    p.sales = v as u64;
                }
                "rating" => {
                    let v = number(&value).map_err(|r| fail("rating", r))?;
                    if !(0.0..=5.0).contains(&v) {
                        return Err(fail("rating", format!("must be within 0..=5, got {v}")));
                    }
                    p.rating = Some(v);
                }
                "in_stock" => {
                    p.in_stock = match &value {
                        Value::Bool(b) => *b,
                        Value::Number(n) if n.as_u64() == Some(0) => false,
                        Value::Number(n) if n.as_u64() == Some(1) => true,
                        Value::String(s) if s == "true" || s == "1" => true,
                        Value::String(s) if s == "false" || s == "0" => false,
                        other => return Err(fail("in_stock", format!("expected true or false, got {other}"))),
                    }
                }
                "updated_at" => {
                    let v = number(&value).map_err(|r| fail("updated_at", r))?;
                    if !(0.0..=4.0e9).contains(&v) {
                        return Err(fail("updated_at", format!("expected Unix seconds, got {v}")));
                    }
                    p.updated_at = v as i64;
                }
                "attributes" => p.attributes = attributes(&value).map_err(|r| fail("attributes", r))?,
                _ => match schema.unknown_fields {
                    UnknownFields::Keep => {
                        p.extra.insert(key, value);
                    }
                    UnknownFields::Reject => {
                        return Err(fail(
                            &key,
                            "unknown field; the schema rejects fields it does not declare (set unknown_fields = \"keep\" in the schema file to keep them)".into(),
                        ))
                    }
                },
            }
        }
        for field in &schema.required {
            let missing = match field.as_str() {
                "title" => p.title.is_empty(),
                "brand" => p.brand.is_empty(),
                "category" => p.category.is_empty(),
                "price" => p.price.is_none(),
                "rating" => p.rating.is_none(),
                "shop" => p.shop.is_empty(),
                _ => false,
            };
            if missing {
                return Err(fail(
                    field,
                    "required by the schema but missing or empty".into(),
                ));
            }
        }
        Ok(p)
    }

    /// The text the encoder sees for this product.
    pub fn embedding_text(&self) -> String {
        let mut text = self.title.clone();
        if !self.brand.is_empty() && !self.title.contains(&self.brand) {
            text = format!("{} {}", self.brand, text);
        }
        text
    }

    /// Attributes as searchable text (`容量 50ml 颜色 红色`).
    pub fn attributes_text(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.attributes {
            out.push_str(k);
            out.push(' ');
            out.push_str(v);
            out.push(' ');
        }
        out
    }
}

fn text(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => {
            let s = s.trim();
            if s.len() > 4096 {
                return Err(format!("too long ({} bytes, at most 4096)", s.len()));
            }
            Ok(s.to_string())
        }
        Value::Number(n) => Ok(n.to_string()),
        other => Err(format!("expected a string, got {other}")),
    }
}

fn number(value: &Value) -> Result<f64, String> {
    let v = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s.trim().is_empty() => return Err("empty".into()),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match v {
        Some(v) if v.is_finite() => Ok(v),
        _ => Err(format!("expected a number, got {value}")),
    }
}

/// A category path: `a/b/c` (also accepts `>` separators or a JSON array of segments).
fn category(value: &Value) -> Result<String, String> {
    let segments: Vec<String> = match value {
        Value::String(s) => s.split(['/', '>']).map(|p| p.trim().to_string()).collect(),
        Value::Array(items) => items.iter().map(text).collect::<Result<_, _>>()?,
        other => {
            return Err(format!(
                "expected a path string like `美妆/面霜`, got {other}"
            ))
        }
    };
    let segments: Vec<String> = segments.into_iter().filter(|s| !s.is_empty()).collect();
    Ok(segments.join("/"))
}

/// Attributes: a JSON object of scalars, or `k=v;k=v` text. A repeated key keeps all values.
fn attributes(value: &Value) -> Result<BTreeMap<String, String>, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() || v.is_empty() {
            return;
        }
        out.entry(k.to_string())
            .and_modify(|old| {
                old.push(' ');
                old.push_str(v)
            })
            .or_insert_with(|| v.to_string());
    };
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::String(s) => put(k, s),
                    Value::Number(n) => put(k, &n.to_string()),
                    Value::Bool(b) => put(k, &b.to_string()),
                    other => {
                        return Err(format!(
                            "attribute `{k}` must be a string or number, got {other}"
                        ))
                    }
                }
            }
        }
        Value::String(s) => {
            for pair in s.split(';') {
                if pair.trim().is_empty() {
                    continue;
                }
                let Some((k, v)) = pair.split_once('=') else {
                    return Err(format!("`{pair}` is not `key=value`"));
                };
                put(k, v);
            }
        }
        other => return Err(format!("expected an object or `k=v;k=v`, got {other}")),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn validates_fields_by_name() {
        let schema = CatalogSchema::default();
        let p = Product::from_fields(
            fields(
                json!({"id": 7, "title": "自然堂面霜", "price": "139", "category": "美妆 > 面霜",
                          "attributes": "净含量=50g;功效=补水;功效=保湿"}),
            ),
            &schema,
        )
        .unwrap();
        assert_eq!(p.id, "7");
        assert_eq!(p.price, Some(139.0));
        assert_eq!(p.category, "美妆/面霜");
        assert_eq!(p.attributes["功效"], "补水 保湿");

        let err = Product::from_fields(
            fields(json!({"id": "a", "title": "x", "price": "cheap"})),
            &schema,
        )
        .unwrap_err();
        assert_eq!(err.0, "price");
        let err = Product::from_fields(
            fields(json!({"id": "a", "title": "x", "colour": "red"})),
            &schema,
        )
        .unwrap_err();
        assert_eq!(err.0, "colour");
        let err = Product::from_fields(fields(json!({"id": "a"})), &schema).unwrap_err();
        assert_eq!(err.0, "title");
        let err = Product::from_fields(fields(json!({"title": "x"})), &schema).unwrap_err();
        assert_eq!(err.0, "id");
        let err = Product::from_fields(
            fields(json!({"id": "a", "title": "x", "rating": 9})),
            &schema,
        )
        .unwrap_err();
        assert_eq!(err.0, "rating");
    }

    #[test]
    fn keeps_unknown_fields_when_the_schema_says_so() {
        let schema = CatalogSchema {
            unknown_fields: UnknownFields::Keep,
            ..Default::default()
        };
        let p = Product::from_fields(
            fields(json!({"id": "a", "title": "x", "colour": "red"})),
            &schema,
        )
        .unwrap();
        assert_eq!(p.extra["colour"], "red");
    }
}
