//! Catalog schema: `index_schema/products.toml` -> validated [`CatalogSchema`] and the
//! tantivy schema built from it.
//!
//! The file decides which product fields are searched and with which analyzers, which
//! fields a record must have, and what happens to fields it does not know. Start-up fails
//! fast on a field or analyzer name that does not exist.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, INDEXED, STRING,
};

use crate::analysis::{BIGRAM_ANALYZER, INDEX_ANALYZER, QUERY_ANALYZER};
use crate::error::{Error, Result};

/// Product fields that can be searched as text.
pub const TEXT_FIELDS: &[&str] = &["title", "brand", "category", "attributes", "shop"];
/// Product fields that can be required.
pub const REQUIRABLE: &[&str] = &["title", "brand", "category", "price", "rating", "shop"];
/// Analyzer names shoprank registers.
pub const ANALYZERS: &[&str] = &[INDEX_ANALYZER, QUERY_ANALYZER];
/// Name suffix of a field's CJK-bigram sub-field (`title.bigram`).
pub const BIGRAM_SUFFIX: &str = ".bigram";

/// A name a profile may boost: a text field or its bigram sub-field.
pub fn is_boostable(name: &str) -> bool {
    let field = name.strip_suffix(BIGRAM_SUFFIX).unwrap_or(name);
    TEXT_FIELDS.contains(&field)
}

/// What to do with record fields the schema does not declare.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownFields {
    /// The record is bad.
    #[default]
    Reject,
    /// Kept under `extra`, not searched.
    Keep,
}

/// A searchable text field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchField {
    /// Product field name.
    pub name: String,
    /// Analyzer for the field's text at index time.
    pub index_analyzer: String,
    /// Analyzer for query text searched in this field.
    pub query_analyzer: String,
    /// Also index the field as CJK character bigrams, in a sub-field `NAME.bigram`
    /// searched with the query's bigrams (boost it in profiles under that name).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bigram: bool,
}

impl SearchField {
    /// The product field this (sub-)field indexes.
    pub fn source(&self) -> &str {
        self.name.strip_suffix(BIGRAM_SUFFIX).unwrap_or(&self.name)
    }

    /// Whether this is a bigram sub-field (searched with the query's bigrams).
    pub fn is_bigram(&self) -> bool {
        self.query_analyzer == BIGRAM_ANALYZER
    }
}

/// The validated schema file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSchema {
    /// Policy for undeclared fields.
    #[serde(default)]
    pub unknown_fields: UnknownFields,
    /// Required fields besides `id`.
    #[serde(default)]
    pub required: Vec<String>,
    /// Searchable text fields.
    pub search_fields: Vec<SearchField>,
}

impl Default for CatalogSchema {
    fn default() -> Self {
        let field = |name: &str| SearchField {
            name: name.into(),
            index_analyzer: INDEX_ANALYZER.into(),
            query_analyzer: QUERY_ANALYZER.into(),
            bigram: name != "category",
        };
        CatalogSchema {
            unknown_fields: UnknownFields::Reject,
            required: vec!["title".into()],
            search_fields: ["title", "brand", "category", "attributes"]
                .map(field)
                .to_vec(),
        }
    }
}

impl CatalogSchema {
    /// Reads and validates a schema file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let schema: CatalogSchema =
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        schema
            .validate()
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        Ok(schema)
    }

    /// Checks every name against what exists.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for r in &self.required {
            if !REQUIRABLE.contains(&r.as_str()) {
                return Err(format!(
                    "required field `{r}` is not a product field ({})",
                    REQUIRABLE.join(", ")
                ));
            }
        }
        if self.search_fields.is_empty() {
            return Err("search_fields is empty: at least `title` must be searchable".into());
        }
        for (i, f) in self.search_fields.iter().enumerate() {
            if !TEXT_FIELDS.contains(&f.name.as_str()) {
                return Err(format!(
                    "search field `{}` is not a text field ({})",
                    f.name,
                    TEXT_FIELDS.join(", ")
                ));
            }
            if self.search_fields[..i].iter().any(|g| g.name == f.name) {
                return Err(format!("search field `{}` is declared twice", f.name));
            }
            for a in [&f.index_analyzer, &f.query_analyzer] {
                if !ANALYZERS.contains(&a.as_str()) {
                    return Err(format!(
                        "analyzer `{a}` is not registered ({})",
                        ANALYZERS.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }

    /// The tantivy schema and its field handles.
    pub fn tantivy_schema(&self) -> (Schema, Fields) {
        let mut b = Schema::builder();
        let id = b.add_text_field("id", STRING);
        let ord = b.add_u64_field("ord", INDEXED | FAST);
        let mut text = Vec::new();
        for f in &self.search_fields {
            let sub = SearchField {
                name: format!("{}{BIGRAM_SUFFIX}", f.name),
                index_analyzer: BIGRAM_ANALYZER.into(),
                query_analyzer: BIGRAM_ANALYZER.into(),
                bigram: false,
            };
            for spec in std::iter::once(f.clone()).chain(f.bigram.then_some(sub)) {
                let indexing = TextFieldIndexing::default()
                    .set_tokenizer(&spec.index_analyzer)
                    .set_index_option(IndexRecordOption::WithFreqs);
                let field = b.add_text_field(
                    &spec.name,
                    TextOptions::default().set_indexing_options(indexing),
                );
                text.push((spec, field));
            }
        }
        let brand = b.add_text_field("brand_exact", STRING);
        let category = b.add_facet_field("category_path", INDEXED);
        let price = b.add_f64_field("price", INDEXED | FAST);
        let in_stock = b.add_bool_field("in_stock", INDEXED);
        (
            b.build(),
            Fields {
                id,
                ord,
                text,
                brand,
                category,
                price,
                in_stock,
            },
        )
    }
}

/// tantivy field handles.
#[derive(Debug, Clone)]
pub struct Fields {
    /// Product id (raw).
    pub id: Field,
    /// Row of the product in the generation's product table and vector file.
    pub ord: Field,
    /// Searchable text fields and their bigram sub-fields, with their settings.
    pub text: Vec<(SearchField, Field)>,
    /// Normalized brand, for exact filters.
    pub brand: Field,
    /// Category path as a facet, for prefix filters.
    pub category: Field,
    /// Price.
    pub price: Field,
    /// Stock flag.
    pub in_stock: Field,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_schema_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("index_schema/products.toml");
        assert_eq!(
            CatalogSchema::load(&path).unwrap(),
            CatalogSchema::default()
        );
    }

    #[test]
    fn unknown_names_fail_fast() {
        let mut s = CatalogSchema::default();
        s.search_fields[0].index_analyzer = "en_stem".into();
        assert!(s.validate().unwrap_err().contains("en_stem"));
        let mut s = CatalogSchema::default();
        s.search_fields[0].name = "colour".into();
        assert!(s.validate().unwrap_err().contains("colour"));
        let mut s = CatalogSchema::default();
        s.required.push("weight".into());
        assert!(s.validate().unwrap_err().contains("weight"));
    }
}
