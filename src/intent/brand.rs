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

use aho_corasick::AhoCorasick;
use serde::{Deserialize, Serialize};

use crate::analysis::normalize;
use crate::error::{Error, Result};

/// Where an alias came from (shown by `/analyze`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AliasSource {
    /// A `/`-separated part of a catalog brand (`Joyoung/九阳`).
    Catalog,
    /// The reviewed alias file.
    File,
    /// Learned from titles: a Latin word that (almost) only that brand's titles carry.
    Titles,
    /// Learned from clicks: shoppers who searched the query clicked (almost) only that
    /// brand's products.
    Clicks,
}

impl AliasSource {
    /// The source's name, as it is serialized.
    pub fn name(self) -> &'static str {
        match self {
            AliasSource::Catalog => "catalog",
            AliasSource::File => "file",
            AliasSource::Titles => "titles",
            AliasSource::Clicks => "clicks",
        }
    }
}

/// A detected brand.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BrandIntent {
    /// Canonical brand, as in the catalog.
    pub value: String,
    /// 0..=1.
    pub confidence: f32,
    /// The alias seen in the query.
    pub alias: String,
    /// Where that alias came from.
    pub source: AliasSource,
    /// The brand's names (the `/`-separated parts of its canonical spelling, normalized)
    /// that the query does not already contain: searched as synonyms, so `olay 面霜` finds
    /// titles that spell the brand `玉兰油`.
    pub names: Vec<String>,
    /// Every spelling of the brand (normalized; aliases too), for matching titles.
    #[serde(skip)]
    pub spellings: Vec<String>,
}

impl BrandIntent {
    /// Whether a product's normalized title or brand names this brand in any spelling.
    pub fn named_in(&self, normalized_text: &str) -> bool {
        self.spellings
            .iter()
            .any(|s| find_alias(normalized_text, s, s.is_ascii()).is_some())
    }
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
    source: AliasSource,
}

/// Finds brands in queries.
#[derive(Debug, Clone)]
pub struct BrandMatcher {
    /// Longest alias first.
    aliases: Vec<Alias>,
    /// Normalized brand -> canonical brand.
    canonical: HashMap<String, String>,
    /// Every alias at once, for scanning titles (pattern i is `aliases[i]`).
    scanner: AhoCorasick,
}

impl Default for BrandMatcher {
    fn default() -> Self {
        BrandMatcher::assemble(Vec::new(), HashMap::new())
    }
}

/// Brand values that name no brand (`other/其他`, `无品牌`): never aliases, never learned from.
fn is_placeholder(brand: &str) -> bool {
    const NONE: &[&str] = &[
        "other",
        "others",
        "其他",
        "其它",
        "其他品牌",
        "无品牌",
        "无",
        "见描述",
        "none",
        "n/a",
    ];
    brand
        .split('/')
        .all(|part| NONE.contains(&normalize(part).trim()))
}

/// Adds an alias (normalized, 2+ characters) unless the spelling is already taken.
fn add(by_text: &mut HashMap<String, Alias>, alias: &str, brand: &str, source: AliasSource) {
    let text = normalize(alias).trim().to_string();
    if text.chars().count() >= 2 && !by_text.contains_key(&text) {
        by_text.insert(
            text.clone(),
            Alias {
                latin: text.is_ascii(),
                text,
                brand: brand.to_string(),
                confidence: 1.0,
                not_with: Vec::new(),
                source,
            },
        );
    }
}

/// Titles a Latin word must appear in, and the share of them one brand must hold, to be
/// learned as that brand's alias.
const LEARN_MIN_TITLES: usize = 3;
const LEARN_MIN_SHARE: f32 = 0.8;

impl BrandMatcher {
    /// From the catalog's (brand, title) pairs and an optional alias file.
    ///
    /// Besides the brand field's parts and the file, aliases are learned from titles that
    /// carry a second spelling: a Latin word (`olay`, `sk-ii`, `clinique`) seen in at
    /// least [`LEARN_MIN_TITLES`] titles, [`LEARN_MIN_SHARE`] of them one brand's, names
    /// that brand. A product's brand is its brand field, or the brand its title names.
    pub fn new<'a>(
        catalog: impl IntoIterator<Item = (&'a str, &'a str)>,
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
        let catalog: Vec<(&str, &str)> = catalog
            .into_iter()
            .filter(|(b, _)| !is_placeholder(b))
            .collect();
        let mut by_text: HashMap<String, Alias> = HashMap::new();
        let mut canonical = HashMap::new();
        for &(brand, _) in &catalog {
            if brand.is_empty() {
                continue;
            }
            canonical.insert(normalize(brand), brand.to_string());
            for part in brand.split('/') {
                add(&mut by_text, part, brand, AliasSource::Catalog);
            }
        }
        for (key, aliases) in &file.aliases {
            let spellings: Vec<&str> = key
                .split('/')
                .chain(aliases.iter().map(String::as_str))
                .collect();
            // The file's entry joins the catalog's brand when they share a spelling (the
            // file's `SK-II` is the catalog's `SKII`, its `OLAY/玉兰油` the catalog's `玉兰油`).
            let brand = spellings
                .iter()
                .find_map(|a| by_text.get(normalize(a).trim()).map(|x| x.brand.clone()))
                .unwrap_or_else(|| key.clone());
            canonical
                .entry(normalize(&brand))
                .or_insert_with(|| brand.clone());
            for a in spellings {
                add(&mut by_text, a, &brand, AliasSource::File);
            }
        }
        for (alias, amb) in &file.ambiguous {
            if let Some(entry) = by_text.get_mut(&normalize(alias)) {
                entry.confidence = amb.confidence.clamp(0.0, 1.0);
                entry.not_with = amb.not_with.iter().map(|w| normalize(w)).collect();
            }
        }
        let known = BrandMatcher::assemble(by_text.values().cloned().collect(), canonical.clone());
        for (text, brand) in known.learn_from_titles(&catalog) {
            by_text.entry(text.clone()).or_insert(Alias {
                latin: true,
                text,
                brand,
                confidence: 1.0,
                not_with: Vec::new(),
                source: AliasSource::Titles,
            });
        }
        Ok(BrandMatcher::assemble(
            by_text.into_values().collect(),
            canonical,
        ))
    }

    fn assemble(mut aliases: Vec<Alias>, canonical: HashMap<String, String>) -> Self {
        aliases.sort_by(|a, b| {
            b.text
                .len()
                .cmp(&a.text.len())
                .then_with(|| a.text.cmp(&b.text))
        });
        let scanner = AhoCorasick::new(aliases.iter().map(|a| a.text.as_str()))
            .expect("aliases are short literal strings");
        BrandMatcher {
            aliases,
            canonical,
            scanner,
        }
    }

    /// The aliases a normalized text (a title) names, as [`BrandMatcher::detect`] would
    /// accept them but overlapping, in one pass however many aliases there are.
    fn named_in<'a>(&'a self, text: &'a str) -> impl Iterator<Item = &'a Alias> + 'a {
        self.scanner
            .find_overlapping_iter(text)
            .filter_map(move |m| {
                let a = &self.aliases[m.pattern().as_usize()];
                let ok = (!a.latin || latin_bounded(text, m.start(), m.end()))
                    && !a.not_with.iter().any(|w| text.contains(w.as_str()));
                ok.then_some(a)
            })
    }

    /// Whether a normalized text names any brand (an alias of confidence 1 or more).
    pub fn names_a_brand(&self, text: &str) -> bool {
        self.named_in(text).any(|a| a.confidence >= 1.0)
    }

    /// (alias, canonical brand) pairs learned from titles (see [`BrandMatcher::new`]).
    fn learn_from_titles(&self, catalog: &[(&str, &str)]) -> Vec<(String, String)> {
        // word -> (titles with it, titles with it per brand)
        let mut seen: HashMap<String, (usize, HashMap<String, usize>)> = HashMap::new();
        for &(brand, title) in catalog {
            let title = normalize(title);
            let brand = match self.canonical(brand) {
                Some(b) => Some(b.to_string()),
                None => self
                    .named_in(&title)
                    .find(|a| a.confidence >= 1.0)
                    .map(|a| a.brand.clone()),
            };
            let mut words = latin_words(&title);
            words.sort_unstable();
            words.dedup();
            for w in words {
                let entry = seen.entry(w.to_string()).or_default();
                entry.0 += 1;
                if let Some(b) = &brand {
                    *entry.1.entry(b.clone()).or_default() += 1;
                }
            }
        }
        let taken: std::collections::HashSet<&str> =
            self.aliases.iter().map(|a| a.text.as_str()).collect();
        let mut out: Vec<(String, String)> = seen
            .into_iter()
            .filter(|(w, _)| !taken.contains(w.as_str()))
            .filter_map(|(w, (n, per_brand))| {
                let (brand, k) = per_brand.into_iter().max_by_key(|(b, k)| (*k, b.clone()))?;
                (k >= LEARN_MIN_TITLES && k as f32 >= LEARN_MIN_SHARE * n as f32)
                    .then_some((w, brand))
            })
            .collect();
        out.sort();
        out
    }

    /// Every alias with its brand and source, by brand then alias (for review).
    pub fn aliases(&self) -> Vec<(&str, &str, AliasSource)> {
        let mut out: Vec<_> = self
            .aliases
            .iter()
            .map(|a| (a.text.as_str(), a.brand.as_str(), a.source))
            .collect();
        out.sort_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)));
        out
    }

    /// The intent for `brand` named by `alias` in normalized query `text` (for a brand
    /// learned outside the matcher, such as from clicks).
    pub fn intent(
        &self,
        brand: &str,
        alias: &str,
        confidence: f32,
        source: AliasSource,
        text: &str,
    ) -> BrandIntent {
        let brand = self.canonical(brand).unwrap_or(brand).to_string();
        BrandIntent {
            names: brand
                .split('/')
                .map(|n| normalize(n).trim().to_string())
                .filter(|n| !n.is_empty() && !text.contains(n.as_str()))
                .collect(),
            spellings: {
                let mut s = self.spellings(&brand);
                s.extend(brand.split('/').map(|n| normalize(n).trim().to_string()));
                s.retain(|x| !x.is_empty());
                s
            },
            value: brand,
            confidence,
            alias: alias.to_string(),
            source,
        }
    }

    /// Every spelling of a canonical brand (normalized), longest first.
    fn spellings(&self, brand: &str) -> Vec<String> {
        self.aliases
            .iter()
            .filter(|a| a.brand == brand)
            .map(|a| a.text.clone())
            .collect()
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
                if taken.iter().any(|&(s, e)| start < e && s < end)
                    || (a.latin && !latin_bounded(text, start, end))
                    || a.not_with.iter().any(|w| text.contains(w.as_str()))
                {
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
                            source: a.source,
                            names: a
                                .brand
                                .split('/')
                                .map(|n| normalize(n).trim().to_string())
                                .filter(|n| !n.is_empty() && !text.contains(n.as_str()))
                                .collect(),
                            spellings: self.spellings(&a.brand),
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

/// A Latin alias must not touch other letters (`iphone15` names Apple, `pineapple` does not).
fn latin_bounded(text: &str, start: usize, end: usize) -> bool {
    let before = text[..start].chars().next_back();
    let after = text[end..].chars().next();
    !before.is_some_and(|c| c.is_ascii_alphabetic())
        && !after.is_some_and(|c| c.is_ascii_alphabetic())
}

/// The first place `alias` occurs in `text` as an alias would match there.
fn find_alias(text: &str, alias: &str, latin: bool) -> Option<usize> {
    text.match_indices(alias)
        .map(|(i, _)| i)
        .find(|&i| !latin || latin_bounded(text, i, i + alias.len()))
}

/// Latin words of shop titles that name no brand, whatever brand's titles they are in.
const GENERIC: &[&str] = &[
    "tmall", "taobao", "new", "hot", "sale", "free", "spf", "pro", "plus", "max", "mini", "diy",
    "vip", "usb", "led", "lcd", "cpu", "wifi", "app", "logo", "ins", "ootd", "the", "and", "for",
];

/// Latin words of normalized text that could be brand spellings: runs of letters and
/// digits (joined by `-`, `'` or `&`), 3 to 24 bytes long, that start with a letter, hold
/// at least two and are not [`GENERIC`].
fn latin_words(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len()
            && (bytes[i].is_ascii_alphanumeric()
                || (matches!(bytes[i], b'-' | b'\'' | b'&')
                    && bytes.get(i + 1).is_some_and(u8::is_ascii_alphanumeric)))
        {
            i += 1;
        }
        let word = &text[start..i];
        if (3..=24).contains(&word.len())
            && !GENERIC.contains(&word)
            && bytes[start].is_ascii_alphabetic()
            && word.bytes().filter(u8::is_ascii_alphabetic).count() >= 2
        {
            out.push(word);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher() -> BrandMatcher {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("index_schema/brand_aliases.toml");
        let catalog = ["Apple/苹果", "兰蔻", "CHANDO/自然堂", "小米"].map(|b| (b, ""));
        BrandMatcher::new(catalog, Some(&file)).unwrap()
    }

    fn brands(text: &str) -> Vec<String> {
        matcher()
            .detect(&normalize(text))
            .into_iter()
            .map(|(b, _)| b.value)
            .collect()
    }

    #[test]
    fn source_names_are_their_serialized_names() {
        for source in [
            AliasSource::Catalog,
            AliasSource::File,
            AliasSource::Titles,
            AliasSource::Clicks,
        ] {
            assert_eq!(serde_json::to_value(source).unwrap(), source.name());
        }
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
