//! `ChineseTokenizer`: raw text -> normalized jieba words as tantivy tokens with raw byte offsets.
//!
//! The index side runs jieba's search mode, so `笔记本电脑` is indexed as `笔记`, `笔记本`,
//! `电脑` and `笔记本电脑`, and a query for any of them matches. The query side cuts in
//! search mode too: on the shared Multi-CPR dev queries, BM25 reached MRR@10 0.706 with
//! search-mode query words, 0.698 with default-mode words and 0.679 with search mode
//! without HMM. A query that matches a whole compound also matches its parts, so a
//! product that has the compound scores above one that only has a part. Both sides
//! normalize first (see `normalize`).

use std::sync::Arc;

use jieba_rs::Jieba;
use tantivy::tokenizer::{Token, TokenStream, Tokenizer};

use super::normalize::normalize_with_offsets;

/// Which side of the index the tokenizer serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Documents: search mode, sub-words of long words are emitted too.
    Index,
    /// Queries: default mode.
    Query,
}

/// A tantivy tokenizer for Chinese (and mixed Latin/number) product text.
#[derive(Clone)]
pub struct ChineseTokenizer {
    jieba: Arc<Jieba>,
    side: Side,
}

impl ChineseTokenizer {
    /// A tokenizer sharing one loaded dictionary.
    pub fn new(jieba: Arc<Jieba>, side: Side) -> Self {
        ChineseTokenizer { jieba, side }
    }

    /// The tokens of `text`, sorted by offset; offsets are byte offsets into `text`.
    pub fn tokens(&self, text: &str) -> Vec<Token> {
        let norm = normalize_with_offsets(text);
        // Both sides cut in search mode with HMM today (measured best on the shared dev
        // queries, see the module docs); the sides stay apart so query-only steps can be
        // added to `zh_query` without touching the index.
        let words = match self.side {
            Side::Index | Side::Query => self.jieba.cut_for_search(&norm.text, true),
        };
        // Byte offset of each normalized char, to map jieba's byte offsets to char indices.
        let mut char_starts = Vec::with_capacity(norm.chars.len() + 1);
        let mut pos = 0;
        for c in &norm.chars {
            char_starts.push(pos);
            pos += c.ch.len_utf8();
        }
        char_starts.push(pos);
        let char_at = |byte: usize| char_starts.partition_point(|&p| p < byte);
        let mut tokens: Vec<Token> = words
            .into_iter()
            .filter(|w| is_searchable(w.word))
            .map(|w| {
                let (first, last) = (char_at(w.byte_start), char_at(w.byte_end) - 1);
                Token {
                    offset_from: norm.chars[first].from,
                    offset_to: norm.chars[last].to,
                    position: 0,
                    text: w.word.to_string(),
                    position_length: 1,
                }
            })
            .collect();
        tokens.sort_by_key(|t| (t.offset_from, t.offset_to));
        tokens.dedup_by(|a, b| a.text == b.text && a.offset_from == b.offset_from);
        for (i, t) in tokens.iter_mut().enumerate() {
            t.position = i;
        }
        tokens
    }
}

/// A word worth indexing: it has a letter, digit or CJK character, and is not absurdly long.
fn is_searchable(word: &str) -> bool {
    word.len() <= 64 && word.chars().any(char::is_alphanumeric)
}

impl Tokenizer for ChineseTokenizer {
    type TokenStream<'a> = ChineseTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> ChineseTokenStream {
        ChineseTokenStream::new(self.tokens(text))
    }
}

/// Tokens of one text, produced eagerly (jieba cuts the whole text at once).
pub struct ChineseTokenStream {
    tokens: Vec<Token>,
    index: Option<usize>,
}

impl ChineseTokenStream {
    /// A stream over tokens already cut.
    pub(crate) fn new(tokens: Vec<Token>) -> Self {
        ChineseTokenStream {
            tokens,
            index: None,
        }
    }
}

impl TokenStream for ChineseTokenStream {
    fn advance(&mut self) -> bool {
        let next = self.index.map_or(0, |i| i + 1);
        self.index = Some(next);
        next < self.tokens.len()
    }

    fn token(&self) -> &Token {
        &self.tokens[self.index.unwrap_or(0)]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.index.unwrap_or(0)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::LazyLock;

    static JIEBA: LazyLock<Arc<Jieba>> = LazyLock::new(|| Arc::new(Jieba::new()));

    fn words(side: Side, text: &str) -> Vec<String> {
        ChineseTokenizer::new(JIEBA.clone(), side)
            .tokens(text)
            .into_iter()
            .map(|t| t.text)
            .collect()
    }

    #[test]
    fn index_side_emits_sub_words() {
        let w = words(Side::Index, "笔记本电脑");
        for expected in ["笔记", "笔记本", "电脑", "笔记本电脑"] {
            assert!(
                w.contains(&expected.to_string()),
                "{expected} missing from {w:?}"
            );
        }
    }

    #[test]
    fn query_side_matches_whole_words_and_parts() {
        let w = words(Side::Query, "笔记本电脑");
        assert!(
            w.contains(&"笔记本电脑".to_string()) && w.contains(&"电脑".to_string()),
            "{w:?}"
        );
    }

    #[test]
    fn normalizes_before_cutting() {
        let w = words(Side::Query, "ＩＰＨＯＮＥ 手機殼 256GB");
        assert!(w.contains(&"iphone".to_string()), "{w:?}");
        assert!(w.contains(&"256g".to_string()), "{w:?}");
        assert!(!w.iter().any(|t| t.trim().is_empty()));
    }

    #[test]
    fn offsets_point_into_the_raw_text() {
        let text = "兰蔻小黑瓶 50ml";
        for t in ChineseTokenizer::new(JIEBA.clone(), Side::Index).tokens(text) {
            assert_eq!(&text[t.offset_from..t.offset_to], t.text);
        }
    }

    proptest! {
        #[test]
        fn offsets_are_valid_and_non_decreasing(text in "\\PC{0,60}") {
            for side in [Side::Index, Side::Query] {
                let tokens = ChineseTokenizer::new(JIEBA.clone(), side).tokens(&text);
                let mut last = 0;
                for t in &tokens {
                    prop_assert!(t.offset_from <= t.offset_to && t.offset_to <= text.len());
                    prop_assert!(text.is_char_boundary(t.offset_from) && text.is_char_boundary(t.offset_to));
                    prop_assert!(t.offset_from >= last);
                    last = t.offset_from;
                    prop_assert!(!t.text.is_empty());
                }
            }
        }

        #[test]
        fn untouched_text_round_trips(text in "[手机壳苹果笔记本电脑面霜口红a-f0-9 ]{0,40}") {
            for t in ChineseTokenizer::new(JIEBA.clone(), Side::Index).tokens(&text) {
                prop_assert_eq!(&text[t.offset_from..t.offset_to], t.text.as_str());
            }
        }
    }
}
