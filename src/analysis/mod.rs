//! Text analysis: raw product or query text -> normalized jieba words.
//!
//! One normalizer ([`normalize`]) feeds three tantivy analyzers registered by name:
//! [`INDEX_ANALYZER`] (search mode, sub-words indexed too) and [`QUERY_ANALYZER`] for jieba
//! words, and [`BIGRAM_ANALYZER`] (both sides) for the `.bigram` sub-fields.
//! The jieba dictionary is loaded once per index generation: the default dictionary, the
//! user dictionary file (brands, model numbers) and the catalog's own brands.
//!
//! This is not the BERT tokenizer: the encoder has its own WordPiece vocabulary.

pub mod bigram;
pub mod chinese;
pub mod normalize;
pub mod pinyin;

use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;

use jieba_rs::Jieba;
use tantivy::tokenizer::{RemoveLongFilter, TextAnalyzer, TokenizerManager};

pub use bigram::{is_cjk, BigramTokenizer};
pub use chinese::{ChineseTokenizer, Side};
pub use normalize::{normalize, normalize_with_offsets};
pub use pinyin::{pinyin_keys, PinyinConversion, PinyinVocab};

use crate::error::{Error, Result};

/// Name of the index-side analyzer in the schema file.
pub const INDEX_ANALYZER: &str = "zh_index";
/// Name of the query-side analyzer in the schema file.
pub const QUERY_ANALYZER: &str = "zh_query";
/// Name of the CJK bigram analyzer (index and query side) of `.bigram` sub-fields.
pub const BIGRAM_ANALYZER: &str = "cjk_bigram";
/// Longest query accepted, in characters (searches, suggestions, logged search events).
pub const MAX_QUERY_CHARS: usize = 256;

/// The loaded dictionary and the analyzers built on it.
#[derive(Clone)]
pub struct Analysis {
    jieba: Arc<Jieba>,
}

impl Analysis {
    /// Jieba's default dictionary plus a user dictionary file (if given) plus `extra_words`
    /// (the catalog's brands).
    ///
    /// A user dictionary line is `word [frequency] [tag]`; `#` starts a comment.
    pub fn load<'a>(
        user_dict: Option<&Path>,
        extra_words: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self> {
        let mut jieba = Jieba::new();
        if let Some(path) = user_dict {
            let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
                let line = line.map_err(|e| Error::io(path, e))?;
                let line = line.split('#').next().unwrap_or("").trim();
                let mut parts = line.split_whitespace();
                let Some(word) = parts.next() else { continue };
                let freq = match parts.next() {
                    Some(f) => Some(f.parse::<usize>().map_err(|_| {
                        Error::Config(format!(
                            "{}:{}: frequency `{f}` is not a whole number",
                            path.display(),
                            n + 1
                        ))
                    })?),
                    None => None,
                };
                add_word(&mut jieba, word, freq);
            }
        }
        for word in extra_words {
            add_word(&mut jieba, word, None);
        }
        Ok(Analysis {
            jieba: Arc::new(jieba),
        })
    }

    /// Registers [`INDEX_ANALYZER`] and [`QUERY_ANALYZER`] with an index's tokenizer manager.
    pub fn register(&self, manager: &TokenizerManager) {
        for (name, side) in [(INDEX_ANALYZER, Side::Index), (QUERY_ANALYZER, Side::Query)] {
            let analyzer = TextAnalyzer::builder(self.tokenizer(side))
                .filter(RemoveLongFilter::limit(200))
                .build();
            manager.register(name, analyzer);
        }
        manager.register(BIGRAM_ANALYZER, TextAnalyzer::from(BigramTokenizer));
    }

    /// A tokenizer for one side.
    pub fn tokenizer(&self, side: Side) -> ChineseTokenizer {
        ChineseTokenizer::new(self.jieba.clone(), side)
    }

    /// The bigram terms of `text` (see [`bigram`]), in order, without duplicates.
    pub fn bigrams(&self, text: &str) -> Vec<String> {
        BigramTokenizer.terms(text)
    }

    /// The query-side words of `text`, in order, without duplicates.
    pub fn query_words(&self, text: &str) -> Vec<String> {
        let mut words: Vec<String> = Vec::new();
        for t in self.tokenizer(Side::Query).tokens(text) {
            if !words.contains(&t.text) {
                words.push(t.text);
            }
        }
        words
    }
}

/// Adds a dictionary word in its normalized spelling (`CHANDO/自然堂` adds `自然堂`).
fn add_word(jieba: &mut Jieba, word: &str, freq: Option<usize>) {
    for part in word.split(['/', '\\', '(', ')', '（', '）', ' ']) {
        let part = normalize(part);
        let part = part.trim();
        if part.chars().count() >= 2 && !part.contains(' ') {
            jieba.add_word(part, freq, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_words_stay_whole() {
        let dir = tempfile::tempdir().unwrap();
        let dict = dir.path().join("userdict.txt");
        std::fs::write(&dict, "# brands\n花西子 50000\n小黑瓶\n").unwrap();
        let a = Analysis::load(Some(&dict), ["CHANDO/自然堂", "完美日记"]).unwrap();
        assert!(a.query_words("花西子散粉").contains(&"花西子".to_string()));
        assert!(a.query_words("兰蔻小黑瓶").contains(&"小黑瓶".to_string()));
        assert!(a
            .query_words("完美日记口红")
            .contains(&"完美日记".to_string()));
    }

    #[test]
    fn bad_frequency_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let dict = dir.path().join("userdict.txt");
        std::fs::write(&dict, "花西子\n小黑瓶 many\n").unwrap();
        let err = Analysis::load(Some(&dict), []).err().unwrap().to_string();
        assert!(err.contains("userdict.txt:2"), "{err}");
    }
}
