//! Brand intent: normalized query -> brands named in it, with a confidence.
//!
//! Aliases come from the catalog (each `/`-separated part of a brand: `CHANDO/自然堂` gives
//! `chando` and `自然堂`) and from the alias file (`index_schema/brand_aliases.toml`). A
//! Chinese alias matches anywhere, also inside a longer word (`兰蔻小黑瓶`); a Latin alias
//! must not touch other letters (`iphone15` names Apple, `pineapple` does not). Aliases
//! that are also ordinary words carry a lower confidence and are dropped next to their
//! context words (`新鲜苹果` is fruit).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::analysis::normalize;
use crate::error::{Error, Result};

/// A detected brand.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BrandIntent {
    /// Canonical brand, as in the catalog.
    pub value: String,
    /// 0..=1.
    pub confidence: f32,
    /// The alias seen in the query.
    pub alias: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AliasFile {
    #[serde(default)]
    aliases: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    ambiguous: BTreeMap<String, Ambiguous>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ambiguous {
    confidence: f32,
    #[serde(default)]
    not_with: Vec<String>,
}

#[derive(Debug, Clone)]
struct Alias {
    text: String,
    brand: String,
    latin: bool,
    confidence: f32,
    not_with: Vec<String>,
}

/// Finds brands in queries.
#[derive(Debug, Clone, Default)]
pub struct BrandMatcher {
    /// Longest alias first.
    aliases: Vec<Alias>,
    /// Normalized brand -> canonical brand.
    canonical: HashMap<String, String>,
}

impl BrandMatcher {
    /// From the catalog's brands and an optional alias file.
    pub fn new<'a>(
        catalog_brands: impl IntoIterator<Item = &'a str>,
        alias_file: Option<&Path>,
    ) -> Result<Self> {
        let file: AliasFile = match alias_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
                toml::from_str(&text)
                    .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?
            }
            None => AliasFile::default(),
        };
        let mut by_text: HashMap<String, (String, f32, Vec<String>)> = HashMap::new();
        let mut canonical = HashMap::new();
        let mut add = |alias: &str, brand: &str| {
            let text = normalize(alias).trim().to_string();
            if text.chars().count() >= 2 && !by_text.contains_key(&text) {
                by_text.insert(text, (brand.to_string(), 1.0, Vec::new()));
            }
        };
        for brand in catalog_brands {
            canonical.insert(normalize(brand), brand.to_string());
            for part in brand.split('/') {
                add(part, brand);
            }
        }
        for (brand, aliases) in &file.aliases {
            canonical
                .entry(normalize(brand))
                .or_insert_with(|| brand.clone());
            for part in brand.split('/') {
                add(part, brand);
            }
            for a in aliases {
                add(a, brand);
            }
        }
        for (alias, amb) in &file.ambiguous {
            if let Some(entry) = by_text.get_mut(&normalize(alias)) {
                entry.1 = amb.confidence.clamp(0.0, 1.0);
                entry.2 = amb.not_with.iter().map(|w| normalize(w)).collect();
            }
        }
        let mut aliases: Vec<Alias> = by_text
            .into_iter()
            .map(|(text, (brand, confidence, not_with))| Alias {
                latin: text.is_ascii(),
                text,
                brand,
                confidence,
                not_with,
            })
            .collect();
        aliases.sort_by(|a, b| {
            b.text
                .len()
                .cmp(&a.text.len())
                .then_with(|| a.text.cmp(&b.text))
        });
        Ok(BrandMatcher { aliases, canonical })
    }

    /// The canonical spelling of a brand name, when known.
    pub fn canonical(&self, brand: &str) -> Option<&str> {
        self.canonical.get(&normalize(brand)).map(String::as_str)
    }

    /// Brands named in normalized text, best first, with the byte spans they occupy.
    pub fn detect(&self, text: &str) -> Vec<(BrandIntent, (usize, usize))> {
        let mut taken: Vec<(usize, usize)> = Vec::new();
        let mut found: Vec<(BrandIntent, (usize, usize))> = Vec::new();
        for a in &self.aliases {
            for (start, _) in text.match_indices(a.text.as_str()) {
                let end = start + a.text.len();
                if taken.iter().any(|&(s, e)| start < e && s < end) {
                    continue;
                }
                if a.latin {
                    let before = text[..start].chars().next_back();
                    let after = text[end..].chars().next();
                    if before.is_some_and(|c| c.is_ascii_alphabetic())
                        || after.is_some_and(|c| c.is_ascii_alphabetic())
                    {
                        continue;
                    }
                }
                if a.not_with.iter().any(|w| text.contains(w.as_str())) {
                    continue;
                }
                taken.push((start, end));
                match found.iter_mut().find(|(b, _)| b.value == a.brand) {
                    Some((b, _)) => b.confidence = b.confidence.max(a.confidence),
                    None => found.push((
                        BrandIntent {
                            value: a.brand.clone(),
                            confidence: a.confidence,
                            alias: a.text.clone(),
                        },
                        (start, end),
                    )),
                }
            }
        }
        found.sort_by(|a, b| b.0.confidence.total_cmp(&a.0.confidence));
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher() -> BrandMatcher {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("index_schema/brand_aliases.toml");
        BrandMatcher::new(["Apple/苹果", "兰蔻", "CHANDO/自然堂", "小米"], Some(&file)).unwrap()
    }

    fn brands(text: &str) -> Vec<String> {
        matcher()
            .detect(&normalize(text))
            .into_iter()
            .map(|(b, _)| b.value)
            .collect()
    }

    #[test]
    fn finds_brands_in_any_script_and_inside_words() {
        assert_eq!(brands("兰蔻小黑瓶50ml"), ["兰蔻"]);
        assert_eq!(brands("iphone15pro"), ["Apple/苹果"]);
        assert_eq!(brands("ＣＨＡＮＤＯ面霜"), ["CHANDO/自然堂"]);
        assert_eq!(brands("lancome 口红"), ["兰蔻"]);
        assert_eq!(brands("红米note13"), ["小米"]);
        assert!(brands("pineapple 凤梨").is_empty());
        assert!(brands("新鲜苹果 5斤").is_empty());
        let apple = matcher().detect(&normalize("苹果手机壳"));
        assert_eq!(apple[0].0.value, "Apple/苹果");
        assert!(apple[0].0.confidence < 1.0);
    }
}
