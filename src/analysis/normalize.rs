//! Text normalization shared by indexing and querying: raw text -> normalized text plus a map
//! back to the raw text's byte offsets.
//!
//! Both sides of the index must agree on one spelling of a product fact, or BM25 misses it:
//! full-width forms become half-width (`ＡＢＣ１２` -> `abc12`), Latin letters are case-folded,
//! traditional characters become simplified (`筆記本` -> `笔记本`) and unit spellings are
//! unified (`256GB`, `256 G`, `256g` -> `256g`; `50毫升`, `50ML` -> `50ml`).
//!
//! Every normalized char remembers the byte span of the raw text it came from, so the
//! tokenizer can report offsets into the text tantivy gave it.

/// One normalized character and the raw byte span it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NormChar {
    /// The normalized character.
    pub ch: char,
    /// Byte offset in the raw text where its source starts.
    pub from: usize,
    /// Byte offset in the raw text where its source ends.
    pub to: usize,
}

/// Normalized text with the source span of each character.
#[derive(Debug, Clone, Default)]
pub struct Normalized {
    /// The normalized text.
    pub text: String,
    /// One entry per char of `text`, in order.
    pub chars: Vec<NormChar>,
}

impl Normalized {
    /// Maps a byte range of `text` to the byte range of the raw text it came from.
    pub fn raw_span(&self, from: usize, to: usize) -> (usize, usize) {
        // Walk char boundaries; tokens are short and this runs once per token.
        let mut pos = 0;
        let (mut raw_from, mut raw_to) = (None, 0);
        for c in &self.chars {
            let len = c.ch.len_utf8();
            if pos >= from && raw_from.is_none() {
                raw_from = Some(c.from);
            }
            if pos + len <= to {
                raw_to = c.to;
            } else {
                break;
            }
            pos += len;
        }
        let raw_from = raw_from.unwrap_or(raw_to);
        (raw_from, raw_to.max(raw_from))
    }
}

/// Normalizes `raw` (see the module docs) and keeps the offset map.
pub fn normalize_with_offsets(raw: &str) -> Normalized {
    let mut chars: Vec<NormChar> = Vec::with_capacity(raw.len());
    let simplified = fast2s::convert(raw);
    // fast2s maps char to char, so the two sequences line up one to one.
    for ((from, orig), simp) in raw.char_indices().zip(simplified.chars()) {
        let to = from + orig.len_utf8();
        let c = fold_width(simp);
        if c.is_ascii_uppercase() {
            chars.push(NormChar {
                ch: c.to_ascii_lowercase(),
                from,
                to,
            });
        } else if c.is_uppercase() {
            for lc in c.to_lowercase() {
                chars.push(NormChar { ch: lc, from, to });
            }
        } else if c.is_control() || c.is_whitespace() {
            chars.push(NormChar { ch: ' ', from, to });
        } else {
            chars.push(NormChar { ch: c, from, to });
        }
    }
    let chars = unify_units(chars);
    let text = chars.iter().map(|c| c.ch).collect();
    Normalized { text, chars }
}

/// Normalizes text where offsets are not needed (queries, dictionary words, brands).
pub fn normalize(raw: &str) -> String {
    normalize_with_offsets(raw).text
}

/// Full-width ASCII variants and the ideographic space become their half-width forms.
fn fold_width(c: char) -> char {
    match c {
        '\u{3000}' => ' ',
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        _ => c,
    }
}

/// Unit spellings after a number, in their canonical form. Longest spelling first.
const UNITS: &[(&str, &str)] = &[
    ("毫升", "ml"),
    ("千克", "kg"),
    ("公斤", "kg"),
    ("英寸", "寸"),
    ("gb", "g"),
    ("tb", "t"),
    ("mb", "m"),
    ("ml", "ml"),
    ("kg", "kg"),
    ("克", "g"),
    ("升", "l"),
];

/// Rewrites `<number><spaces?><unit>` to `<number><canonical unit>`.
fn unify_units(chars: Vec<NormChar>) -> Vec<NormChar> {
    let mut out: Vec<NormChar> = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        out.push(c);
        i += 1;
        let ends_number =
            c.ch.is_ascii_digit() && chars.get(i).is_some_and(|n| !n.ch.is_ascii_digit());
        if !ends_number {
            continue;
        }
        let mut j = i;
        while chars.get(j).is_some_and(|n| n.ch == ' ') {
            j += 1;
        }
        for (spelling, canonical) in UNITS {
            let n = spelling.chars().count();
            let matches = chars.len() >= j + n
                && chars[j..j + n].iter().map(|c| c.ch).eq(spelling.chars())
                // `256gb` is a unit, `256gbx` is a model code: the unit must end the word.
                && chars.get(j + n).is_none_or(|next| !next.ch.is_ascii_alphabetic());
            if matches {
                let (from, to) = (chars[i].from, chars[j + n - 1].to);
                out.extend(canonical.chars().map(|ch| NormChar { ch, from, to }));
                i = j + n;
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_width_case_script_and_units() {
        assert_eq!(normalize("ＡＢＣ１２３"), "abc123");
        assert_eq!(normalize("iPhone15 PRO"), "iphone15 pro");
        assert_eq!(normalize("筆記本電腦"), "笔记本电脑");
        assert_eq!(normalize("256GB"), "256g");
        assert_eq!(normalize("256G"), "256g");
        assert_eq!(normalize("256 gb 手机"), "256g 手机");
        assert_eq!(normalize("50毫升"), "50ml");
        assert_eq!(normalize("50ML"), "50ml");
        assert_eq!(normalize("5公斤"), "5kg");
        assert_eq!(normalize("256gbx"), "256gbx");
    }

    #[test]
    fn keeps_raw_spans() {
        let n = normalize_with_offsets("Ａ手机256GB");
        assert_eq!(n.text, "a手机256g");
        assert_eq!(
            n.chars[0],
            NormChar {
                ch: 'a',
                from: 0,
                to: 3
            }
        );
        // The canonical `g` covers the raw `GB`.
        let last = n.chars.last().unwrap();
        assert_eq!((last.from, last.to), (12, 14));
        assert_eq!(n.raw_span(1, 7), (3, 9));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn spans_are_valid_and_ordered(raw in "\\PC{0,200}") {
            let n = normalize_with_offsets(&raw);
            prop_assert_eq!(n.text.chars().count(), n.chars.len());
            let mut last = 0;
            for c in &n.chars {
                prop_assert!(c.from <= c.to && c.to <= raw.len());
                prop_assert!(raw.is_char_boundary(c.from) && raw.is_char_boundary(c.to));
                prop_assert!(c.from >= last);
                last = c.from;
                prop_assert!(!c.ch.is_ascii_uppercase());
                let full_width = ('\u{FF01}'..='\u{FF5E}').contains(&c.ch);
                prop_assert!(!full_width, "full-width char left: {:?}", c.ch);
            }
        }

        #[test]
        /// `intent::understand` relies on this: a normalized text is its own key.
        #[test]
        fn normalizing_twice_changes_nothing(raw in "[a-zA-Z0-9０-９ａ-ｚＡ-Ｚ手機殼筆記本後臺GBgbmlML毫升寸 .,，。]{0,80}") {
            let once = normalize(&raw);
            prop_assert_eq!(normalize(&once), once);
        }

        fn long_mixed_input_does_not_panic(raw in "[a-zA-Z0-9０-９ａ-ｚ手機殼GB毫升 ]{5000,10000}") {
            let n = normalize(&raw);
            prop_assert!(n.len() <= raw.len() * 2);
        }
    }
}
