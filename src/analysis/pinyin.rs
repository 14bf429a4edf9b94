//! Pinyin typed for Chinese: `lan kou mian shuang` or `kouhong` -> the catalog's own words
//! (`兰蔻 面霜`, `口红`).
//!
//! Many shoppers type pinyin and search without picking the characters. The vocabulary is
//! the catalog's: the jieba words of its titles (2 to 4 Chinese characters, from the
//! index's term dictionary, with their document frequency) and its brands, keyed by full
//! pinyin without tones or spaces. A run of Latin letters in a query is converted when it
//! is not itself a word of the catalog and can be cut completely into vocabulary keys;
//! the cut with the fewest words wins, then the more frequent words.

use std::collections::{HashMap, HashSet};

use pinyin::ToPinyin;
use serde::Serialize;

/// Full pinyin and initials of normalized text (non-Chinese characters kept as they are).
pub fn pinyin_keys(text: &str) -> (String, String) {
    let (mut full, mut initials) = (String::new(), String::new());
    for (c, p) in text.chars().zip(text.to_pinyin()) {
        match p {
            Some(p) => {
                full.push_str(p.plain());
                initials.push_str(p.first_letter());
            }
            None if c.is_whitespace() => {}
            None => {
                full.push(c);
                initials.push(c);
            }
        }
    }
    (full, initials)
}

/// A conversion made in a query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PinyinConversion {
    /// The Latin text as typed (normalized).
    pub from: String,
    /// The catalog words it became, space-separated.
    pub to: String,
}

/// The catalog's words by full pinyin.
#[derive(Debug, Default)]
pub struct PinyinVocab {
    /// Full pinyin -> (word, document frequency), the most frequent word per key.
    words: HashMap<String, (String, u64)>,
    /// Latin words of the catalog (never converted).
    latin: HashSet<String>,
    /// Longest key, in bytes.
    longest: usize,
}

/// Shortest Latin run worth converting (`mi` or `pro` are more likely words than pinyin).
const MIN_LETTERS: usize = 4;

impl PinyinVocab {
    /// From the catalog's terms and their document frequencies: Chinese words of 2 to 4
    /// characters become vocabulary, ASCII words are remembered as the catalog's own.
    pub fn new(terms: impl IntoIterator<Item = (String, u64)>) -> Self {
        let mut v = PinyinVocab::default();
        for (term, freq) in terms {
            let n = term.chars().count();
            if term.is_ascii() {
                v.latin.insert(term);
            } else if (2..=4).contains(&n) && term.chars().all(super::is_cjk) {
                let (key, _) = pinyin_keys(&term);
                if !key.is_ascii() {
                    continue;
                }
                v.longest = v.longest.max(key.len());
                let entry = v.words.entry(key).or_insert((term.clone(), 0));
                if freq > entry.1 {
                    *entry = (term, freq);
                }
            }
        }
        v
    }

    /// Converts the pinyin runs of normalized text: each run of Latin letters and spaces
    /// that is no catalog word and cuts completely into vocabulary words. `None` when
    /// nothing was converted.
    pub fn convert(&self, text: &str) -> Option<(String, PinyinConversion)> {
        let mut out = String::new();
        let (mut from, mut to) = (Vec::new(), Vec::new());
        let mut rest = text;
        while let Some(start) = rest.find(|c: char| c.is_ascii_lowercase()) {
            let len = rest[start..]
                .find(|c: char| !(c.is_ascii_lowercase() || c == ' '))
                .unwrap_or(rest.len() - start);
            let run = rest[start..start + len].trim_end();
            out.push_str(&rest[..start]);
            match self.cut(run) {
                Some(words) => {
                    from.push(run.to_string());
                    to.push(words.join(" "));
                    out.push_str(&words.join(" "));
                }
                None => out.push_str(run),
            }
            rest = &rest[start + run.len()..];
        }
        out.push_str(rest);
        (!from.is_empty()).then(|| {
            let conversion = PinyinConversion {
                from: from.join(" "),
                to: to.join(" "),
            };
            (out, conversion)
        })
    }

    /// The fewest (then most frequent) vocabulary words whose keys spell `run` (spaces
    /// ignored); `None` if a word of the run is a catalog word or no cut covers it.
    fn cut(&self, run: &str) -> Option<Vec<String>> {
        if run.split(' ').any(|w| self.latin.contains(w)) {
            return None;
        }
        let letters: String = run.chars().filter(|c| *c != ' ').collect();
        if letters.len() < MIN_LETTERS {
            return None;
        }
        let n = letters.len();
        // best[i]: (words, -Σ ln freq, previous cut) for letters[..i].
        let mut best: Vec<Option<(usize, f64, usize)>> = vec![None; n + 1];
        best[0] = Some((0, 0.0, 0));
        for i in 0..n {
            let Some((count, cost, _)) = best[i] else {
                continue;
            };
            for j in i + 2..=n.min(i + self.longest) {
                let Some((_, freq)) = self.words.get(&letters[i..j]) else {
                    continue;
                };
                let candidate = (count + 1, cost - (1.0 + *freq as f64).ln(), i);
                let better = match best[j] {
                    None => true,
                    Some((c, w, _)) => (candidate.0, candidate.1) < (c, w),
                };
                if better {
                    best[j] = Some(candidate);
                }
            }
        }
        best[n]?;
        let mut words = Vec::new();
        let mut j = n;
        while j > 0 {
            let (_, _, i) = best[j]?;
            words.push(self.words[&letters[i..j]].0.clone());
            j = i;
        }
        words.reverse();
        Some(words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> PinyinVocab {
        let terms = [
            ("兰蔻", 5),
            ("面霜", 20),
            ("口红", 30),
            ("扣红", 1),
            ("电饭煲", 8),
            ("手机壳", 40),
            ("手机", 50),
            ("iphone", 9),
            ("nike", 3),
        ];
        PinyinVocab::new(terms.map(|(t, f)| (t.to_string(), f)))
    }

    #[test]
    fn full_pinyin_with_or_without_spaces_becomes_catalog_words() {
        let v = vocab();
        let (text, c) = v.convert("lan kou mian shuang").unwrap();
        assert_eq!(text, "兰蔻 面霜");
        assert_eq!(c.from, "lan kou mian shuang");
        assert_eq!(
            v.convert("kouhong").unwrap().0,
            "口红",
            "the more frequent word"
        );
        assert_eq!(
            v.convert("shoujike").unwrap().0,
            "手机壳",
            "the fewest words"
        );
        assert_eq!(v.convert("lankou面霜").unwrap().0, "兰蔻面霜");
        assert_eq!(v.convert("便宜 kouhong 50ml").unwrap().0, "便宜 口红 50ml");
    }

    #[test]
    fn catalog_words_and_short_or_unknown_runs_stay() {
        let v = vocab();
        assert!(v.convert("iphone 手机壳").is_none());
        assert!(v.convert("nike").is_none());
        assert!(v.convert("mi").is_none());
        assert!(v.convert("xyzxyz").is_none());
        assert!(v.convert("口红").is_none());
    }
}
