//! Synonyms: `index_schema/synonyms.txt` -> query-time expansions.
//!
//! ```text
//! 手机壳, 保护套, 手机套      # equivalent: each one also searches the others
//! 苹果手机 => iphone         # one-way: the left side also searches the right side
//! ```
//! Phrases are normalized; a phrase found anywhere in the normalized query adds its
//! synonyms, which BM25 searches at a lower weight. Applied at query time only, so the file
//! reloads without a reindex (`POST /admin/reload`).

use std::collections::BTreeMap;
use std::path::Path;

use crate::analysis::normalize;
use crate::error::{Error, Result};

/// Phrase -> phrases it also searches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Synonyms {
    map: BTreeMap<String, Vec<String>>,
}

impl Synonyms {
    /// Parses synonym text; errors name the line.
    pub fn parse(text: &str, origin: &str) -> Result<Synonyms> {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut link = |from: &str, to: &str| {
            if from != to {
                let list = map.entry(from.to_string()).or_default();
                if !list.iter().any(|t| t == to) {
                    list.push(to.to_string());
                }
            }
        };
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let phrases = |s: &str| -> Vec<String> {
                s.split([',', '，'])
                    .map(|p| normalize(p).trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect()
            };
            let bad = |why: &str| Error::Config(format!("{origin}:{}: {why}", i + 1));
            match line.split_once("=>") {
                Some((left, right)) => {
                    let (from, to) = (phrases(left), phrases(right));
                    if from.is_empty() || to.is_empty() {
                        return Err(bad("`a => b` needs phrases on both sides"));
                    }
                    for f in &from {
                        for t in &to {
                            link(f, t);
                        }
                    }
                }
                None => {
                    let group = phrases(line);
                    if group.len() < 2 {
                        return Err(bad(
                            "an equivalence group needs at least two phrases separated by commas",
                        ));
                    }
                    for a in &group {
                        for b in &group {
                            link(a, b);
                        }
                    }
                }
            }
        }
        Ok(Synonyms { map })
    }

    /// Reads a synonym file.
    pub fn load(path: &Path) -> Result<Synonyms> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Synonyms::parse(&text, &path.display().to_string())
    }

    /// Phrases the normalized query also searches.
    pub fn expand(&self, normalized: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (phrase, targets) in &self.map {
            if normalized.contains(phrase.as_str()) {
                for t in targets {
                    if !normalized.contains(t.as_str()) && !out.contains(t) {
                        out.push(t.clone());
                    }
                }
            }
        }
        out
    }

    /// Number of phrases with synonyms.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equivalent_groups_and_one_way_rules() {
        let s = Synonyms::parse(
            "# comment\n手机壳, 保护套，手机套\n苹果手机 => iphone\n",
            "syn.txt",
        )
        .unwrap();
        assert_eq!(s.expand("华为手机壳"), ["保护套", "手机套"]);
        assert_eq!(s.expand("保护套 透明"), ["手机壳", "手机套"]);
        assert_eq!(s.expand("苹果手机 256g"), ["iphone"]);
        assert!(
            s.expand("iphone").is_empty(),
            "one-way rules do not go back"
        );
        let err = Synonyms::parse("手机壳\n", "syn.txt")
            .unwrap_err()
            .to_string();
        assert!(err.contains("syn.txt:1"), "{err}");
        assert!(Synonyms::parse(" => iphone", "syn.txt").is_err());
    }
}
