//! `BigramTokenizer`: raw text -> overlapping CJK character bigrams, as Lucene's CJK
//! analyzer cuts, for the `.bigram` sub-fields.
//!
//! jieba's words split a query and a title differently when a compound, brand fragment or
//! model name is not in its dictionary (`洁面乳` vs `洁面` + `乳`); character bigrams do not
//! depend on a dictionary, so a sub-field of bigrams beside the word field catches what the
//! words miss. Bigrams also span word boundaries (`果手` in `苹果手机`), which rewards titles
//! where the query's words stand next to each other: a proximity signal for CJK text.
//!
//! A run of CJK characters gives its bigrams (a lone character gives itself); a run of
//! letters and digits is one token (`iphone15`, `50ml`); everything else separates runs.
//! Text is normalized first, as on the word side.

use tantivy::tokenizer::{Token, Tokenizer};

use super::normalize::normalize_with_offsets;

/// A tantivy tokenizer emitting CJK bigrams and whole Latin/digit runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct BigramTokenizer;

/// A Han, kana or hangul character (bigram side) as opposed to a Latin letter or digit.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF
        | 0xF900..=0xFAFF | 0x20000..=0x2FA1F)
}

impl BigramTokenizer {
    /// The tokens of `text` in order; offsets are byte offsets into `text`.
    pub fn tokens(&self, text: &str) -> Vec<Token> {
        let norm = normalize_with_offsets(text);
        let chars = &norm.chars;
        let mut tokens = Vec::new();
        let push = |first: usize, last: usize, tokens: &mut Vec<Token>| {
            let text: String = chars[first..=last].iter().map(|c| c.ch).collect();
            if text.len() <= 64 {
                tokens.push(Token {
                    offset_from: chars[first].from,
                    offset_to: chars[last].to,
                    position: tokens.len(),
                    text,
                    position_length: 1,
                });
            }
        };
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i].ch;
            let start = i;
            if is_cjk(c) {
                while i < chars.len() && is_cjk(chars[i].ch) {
                    i += 1;
                }
                if i - start == 1 {
                    push(start, start, &mut tokens);
                }
                for a in start..i.saturating_sub(1) {
                    push(a, a + 1, &mut tokens);
                }
            } else if c.is_alphanumeric() {
                while i < chars.len() && chars[i].ch.is_alphanumeric() && !is_cjk(chars[i].ch) {
                    i += 1;
                }
                push(start, i - 1, &mut tokens);
                // A model name mixing letters and digits also gives its letter and digit
                // parts (`lf50` -> `lf`, `50`), so `ES-LF50` finds `LF30 50 51`.
                let mut part = start;
                for j in start + 1..=i {
                    let boundary =
                        j == i || chars[j].ch.is_ascii_digit() != chars[j - 1].ch.is_ascii_digit();
                    if boundary && !(part == start && j == i) {
                        push(part, j - 1, &mut tokens);
                    }
                    if boundary {
                        part = j;
                    }
                }
            } else {
                i += 1;
            }
        }
        tokens
    }

    /// The distinct token texts of `text`, in order.
    pub fn terms(&self, text: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for t in self.tokens(text) {
            if !out.contains(&t.text) {
                out.push(t.text);
            }
        }
        out
    }
}

impl Tokenizer for BigramTokenizer {
    type TokenStream<'a> = super::chinese::ChineseTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        super::chinese::ChineseTokenStream::new(self.tokens(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn terms(text: &str) -> Vec<String> {
        BigramTokenizer.terms(text)
    }

    #[test]
    fn cjk_runs_give_bigrams_and_latin_runs_stay_whole() {
        assert_eq!(terms("苹果手机壳"), ["苹果", "果手", "手机", "机壳"]);
        assert_eq!(
            terms("iPhone15 硅胶壳 a 套"),
            ["iphone15", "iphone", "15", "硅胶", "胶壳", "a", "套"]
        );
        assert_eq!(terms("兰蔻50ML面霜"), ["兰蔻", "50ml", "50", "ml", "面霜"]);
        assert!(terms("， 。!").is_empty());
    }

    #[test]
    fn traditional_and_full_width_text_is_normalized_first() {
        assert_eq!(terms("手機殼ＸＲ"), ["手机", "机壳", "xr"]);
    }

    proptest! {
        #[test]
        fn offsets_are_valid(text in "\\PC{0,60}") {
            let mut last = 0;
            for t in BigramTokenizer.tokens(&text) {
                prop_assert!(t.offset_from <= t.offset_to && t.offset_to <= text.len());
                prop_assert!(text.is_char_boundary(t.offset_from) && text.is_char_boundary(t.offset_to));
                prop_assert!(t.offset_from >= last);
                last = t.offset_from;
                prop_assert!(!t.text.is_empty());
            }
        }
    }
}
