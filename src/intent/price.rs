//! Price intent: normalized query text -> price range, target or "cheap", plus the byte span
//! the expression occupies (so it can be left out of the text that is searched).
//!
//! `500元以下`, `不超过500` -> max; `1000以上` -> min; `100-200元` -> range; `两百左右`,
//! `200元` -> around; `便宜`, `性价比`, `学生党` -> cheap. Chinese numerals are read
//! (`两百` = 200, `一千五` = 1500). A number glued to letters (`iphone15`) or followed by a
//! measure unit (`256g`, `5斤`, `42码`) is not a price.

use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

/// What the shopper said about price.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PriceIntent {
    /// An explicit bound or range (`500元以下`, `100-200元`): becomes a filter.
    Range {
        /// Lowest price, inclusive.
        #[serde(skip_serializing_if = "Option::is_none")]
        min: Option<f64>,
        /// Highest price, inclusive.
        #[serde(skip_serializing_if = "Option::is_none")]
        max: Option<f64>,
    },
    /// About this much (`两百左右`): a soft preference.
    Around {
        /// The target price.
        target: f64,
    },
    /// Cheap, good value (`便宜`, `性价比`): a soft preference for lower prices.
    Cheap,
}

const NUM: &str = r"(\d+(?:\.\d+)?k?|[零一二两三四五六七八九十百千万]+)";
const UNIT: &str = r"(?:元|块钱|块|rmb)?";

struct Pattern {
    re: Regex,
    make: fn(f64, Option<f64>) -> PriceIntent,
}

static PATTERNS: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    let p = |re: String, make: fn(f64, Option<f64>) -> PriceIntent| Pattern {
        re: Regex::new(&re).expect("price pattern"),
        make,
    };
    vec![
        p(
            format!(r"{NUM}\s*{UNIT}\s*(?:-|~|到|至)\s*{NUM}\s*{UNIT}"),
            |a, b| {
                let b = b.unwrap_or(a);
                PriceIntent::Range {
                    min: Some(a.min(b)),
                    max: Some(a.max(b)),
                }
            },
        ),
        p(
            format!(r"(?:不超过|不超|低于|少于|小于|不到|最多)\s*{NUM}\s*{UNIT}"),
            |a, _| PriceIntent::Range {
                min: None,
                max: Some(a),
            },
        ),
        p(
            format!(r"{NUM}\s*{UNIT}\s*(?:以下|以内|之内|内)"),
            |a, _| PriceIntent::Range {
                min: None,
                max: Some(a),
            },
        ),
        p(
            format!(r"(?:高于|超过|大于|不低于|至少)\s*{NUM}\s*{UNIT}"),
            |a, _| PriceIntent::Range {
                min: Some(a),
                max: None,
            },
        ),
        p(format!(r"{NUM}\s*{UNIT}\s*(?:以上|起)"), |a, _| {
            PriceIntent::Range {
                min: Some(a),
                max: None,
            }
        }),
        p(
            format!(r"(?:大概|差不多|预算)?\s*{NUM}\s*{UNIT}\s*(?:左右|上下|附近)"),
            |a, _| PriceIntent::Around { target: a },
        ),
        p(format!(r"{NUM}\s*(?:元|块钱|块)"), |a, _| {
            PriceIntent::Around { target: a }
        }),
    ]
});

static CHEAP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"便宜|性价比|平价|实惠|学生党|低价|白菜价|划算|省钱").expect("cheap pattern")
});

/// Measure units that make a number a size, not a price.
fn is_unit_start(c: char) -> bool {
    c.is_ascii_alphabetic() || "码寸斤克个件只支瓶片包盒袋箱岁年月天度号层寸米升人".contains(c)
}

/// The price intent of normalized text and the byte span of its expression.
pub fn parse(text: &str) -> Option<(PriceIntent, (usize, usize))> {
    for pattern in PATTERNS.iter() {
        for caps in pattern.re.captures_iter(text) {
            let whole = caps.get(0)?;
            let first = caps.get(1)?;
            // A number glued to letters or digits before it (`iphone15`, `v2`) is a model.
            if text[..first.start()]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '.')
            {
                continue;
            }
            // ... and one followed by a unit is a size (`256g`, `5斤`), unless a price word follows.
            let after = text[whole.end()..].chars().next();
            if after.is_some_and(is_unit_start)
                && !whole
                    .as_str()
                    .ends_with(['元', '块', '下', '内', '上', '右', '起'])
            {
                continue;
            }
            let Some(a) = number(first.as_str()) else {
                continue;
            };
            let b = caps.get(2).and_then(|m| number(m.as_str()));
            if !(0.0..1e8).contains(&a) {
                continue;
            }
            // `11-11`, `12-12` (shopping festivals, dates) are not a price range: equal
            // ends without a currency word.
            let has_unit = ["元", "块", "rmb"]
                .iter()
                .any(|u| whole.as_str().contains(u));
            if b == Some(a) && !has_unit {
                continue;
            }
            return Some(((pattern.make)(a, b), (whole.start(), whole.end())));
        }
    }
    CHEAP
        .find(text)
        .map(|m| (PriceIntent::Cheap, (m.start(), m.end())))
}

/// Arabic digits or a Chinese numeral (`两百`, `一千五`, `三万`) as a number.
pub fn number(s: &str) -> Option<f64> {
    if let Ok(v) = s.parse::<f64>() {
        return Some(v);
    }
    if let Some(v) = s.strip_suffix('k').and_then(|d| d.parse::<f64>().ok()) {
        return Some(v * 1000.0);
    }
    let digit = |c: char| {
        "零一二三四五六七八九"
            .find(c)
            .map(|i| (i / 3) as f64)
            .or((c == '两').then_some(2.0))
    };
    let (mut total, mut section, mut current) = (0.0, 0.0, None::<f64>);
    let (mut last_unit, mut after_zero) = (1.0, false);
    for c in s.chars() {
        if let Some(d) = digit(c) {
            after_zero |= c == '零';
            current = Some(d);
            continue;
        }
        let unit = match c {
            '十' => 10.0,
            '百' => 100.0,
            '千' => 1000.0,
            '万' => 10_000.0,
            _ => return None,
        };
        if unit == 10_000.0 {
            total += (section + current.unwrap_or(0.0)) * unit;
            section = 0.0;
        } else {
            section += current.unwrap_or(1.0) * unit;
        }
        current = None;
        last_unit = unit;
    }
    // `一千五` is 1500: a trailing digit counts in the unit below the last one.
    if let Some(d) = current {
        section += if last_unit >= 10.0 && !after_zero && s.chars().count() > 1 {
            d * last_unit / 10.0
        } else {
            d
        };
    }
    Some(total + section)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn intent(text: &str) -> Option<PriceIntent> {
        parse(text).map(|(i, _)| i)
    }

    #[test]
    fn reads_chinese_numerals() {
        for (s, v) in [
            ("两百", 200.0),
            ("一千五", 1500.0),
            ("三千", 3000.0),
            ("五百", 500.0),
            ("十", 10.0),
            ("二十五", 25.0),
            ("两百五", 250.0),
            ("三万", 30000.0),
            ("一百零五", 105.0),
            ("1.5", 1.5),
            ("5k", 5000.0),
        ] {
            assert_eq!(number(s), Some(v), "{s}");
        }
        assert_eq!(number("百货"), None);
    }

    #[test]
    fn parses_the_common_forms() {
        let range = |min, max| Some(PriceIntent::Range { min, max });
        assert_eq!(intent("500元以下蓝牙耳机"), range(None, Some(500.0)));
        assert_eq!(intent("1000以内 耳机"), range(None, Some(1000.0)));
        assert_eq!(intent("不超过300的面霜"), range(None, Some(300.0)));
        assert_eq!(intent("100-200元 洗面奶"), range(Some(100.0), Some(200.0)));
        assert_eq!(intent("100到200元"), range(Some(100.0), Some(200.0)));
        assert_eq!(intent("2000以上 手机"), range(Some(2000.0), None));
        assert_eq!(
            intent("两百左右的口红"),
            Some(PriceIntent::Around { target: 200.0 })
        );
        assert_eq!(intent("便宜的手机壳"), Some(PriceIntent::Cheap));
        assert_eq!(intent("性价比高的笔记本电脑"), Some(PriceIntent::Cheap));
    }

    #[test]
    fn model_numbers_and_sizes_are_not_prices() {
        for text in [
            "iphone15pro",
            "256g手机",
            "新鲜苹果 5斤",
            "nike跑鞋 42码",
            "兰蔻小黑瓶50ml",
            "mate60",
            "14寸笔记本",
            "【11-11】兰蔻小黑瓶",
            "双12 12-12 口红",
        ] {
            assert_eq!(intent(text), None, "{text}");
        }
    }

    proptest! {
        #[test]
        fn never_panics_and_spans_are_valid(text in "[0-9a-z元块以下内上左右两百千万一二三四五六七八九十 -~到至便宜]{0,80}") {
            if let Some((_, (a, b))) = parse(&text) {
                prop_assert!(a <= b && b <= text.len());
                prop_assert!(text.is_char_boundary(a) && text.is_char_boundary(b));
            }
        }

        #[test]
        fn long_queries_do_not_panic(text in "\\PC{2000,5000}") {
            let _ = parse(&crate::analysis::normalize(&text));
        }
    }
}
