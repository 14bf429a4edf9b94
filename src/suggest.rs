//! Suggestions: a typed prefix (Chinese characters, full pinyin or pinyin initials) ->
//! popular completions.
//!
//! Entries come from a query log (`shoprank suggest --load queries.tsv`: popularity = how
//! often the normalized query occurs), the catalog's brands and category names, and
//! search events as they arrive. Each entry is indexed under three keys, all normalized
//! and without spaces: its text (`口红`), its full pinyin (`kouhong`) and its initials
//! (`kh`). A lookup takes the sorted range of keys starting with the prefix, on all three
//! lists, and returns the most popular entries. Polyphonic characters use their most
//! common reading.

use std::collections::HashMap;
use std::path::Path;
use std::sync::RwLock;

pub use crate::analysis::pinyin_keys;
use serde::Serialize;

use crate::analysis::normalize;
use crate::error::{Error, Result};

/// One suggestion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suggestion {
    /// The completed text.
    pub text: String,
    /// Popularity.
    pub score: f64,
    /// Why a personal suggestion ranks where it does: `history` (the shopper searched it)
    /// or `taste` (it names a brand or category the shopper favors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'static str>,
}

#[derive(Default)]
struct Index {
    texts: Vec<String>,
    scores: Vec<f64>,
    /// (key, entry) sorted by key; one list per key kind.
    keys: [Vec<(String, u32)>; 3],
    by_text: HashMap<String, u32>,
}

impl Index {
    fn build(counts: HashMap<String, f64>) -> Index {
        let mut idx = Index::default();
        for (text, score) in counts {
            let i = idx.texts.len() as u32;
            let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            let (full, initials) = pinyin_keys(&text);
            idx.keys[0].push((compact, i));
            idx.keys[1].push((full, i));
            idx.keys[2].push((initials, i));
            idx.by_text.insert(text.clone(), i);
            idx.texts.push(text);
            idx.scores.push(score);
        }
        for k in &mut idx.keys {
            k.sort_unstable();
        }
        idx
    }
}

/// The suggestion index: a static part rebuilt on load, and boosts from live searches.
#[derive(Default)]
pub struct Suggester {
    index: RwLock<Index>,
    /// Live searches (normalized query -> count and who searched it), including queries not
    /// in the index.
    live: RwLock<HashMap<String, Live>>,
    /// Blocked words: no suggestion contains one.
    blocked: Vec<String>,
}

/// Live searches of one query.
#[derive(Default)]
struct Live {
    count: f64,
    /// Hashes of the users who searched it (up to [`LIVE_MIN_USERS`]).
    users: Vec<u64>,
}

/// Distinct users a live query needs before it is suggested to anyone: one shopper's
/// searches never become another's suggestions.
pub const LIVE_MIN_USERS: usize = 3;

/// The reviewed blocklist shipped with shoprank (adult, gambling, fraud and junk words).
pub const BLOCKLIST: &str = include_str!("../index_schema/suggest_blocklist.txt");

/// Words of a blocklist file: one per line, `#` starts a comment; normalized.
pub fn blocklist_words(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| normalize(l.split('#').next().unwrap_or("").trim()))
        .filter(|w| !w.is_empty())
        .collect()
}

/// Longest text kept as a suggestion, in characters.
const MAX_CHARS: usize = 30;

impl Suggester {
    /// Builds from weighted texts (query log lines, brands, category names); texts that
    /// hold a `blocked` word are left out.
    pub fn new(texts: impl IntoIterator<Item = (String, f64)>, blocked: Vec<String>) -> Suggester {
        let mut counts: HashMap<String, f64> = HashMap::new();
        for (t, w) in texts {
            let t = compact(&t);
            if !t.is_empty() && t.chars().count() <= MAX_CHARS && !is_blocked(&blocked, &t) {
                *counts.entry(t).or_default() += w;
            }
        }
        Suggester {
            index: RwLock::new(Index::build(counts)),
            live: RwLock::new(HashMap::new()),
            blocked,
        }
    }

    /// Reads a query log: `qid<TAB>query` or one query per line.
    pub fn read_log(path: &Path) -> Result<Vec<(String, f64)>> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Ok(text
            .lines()
            .map(|l| l.split_once('\t').map_or(l, |(_, q)| q).trim())
            .filter(|q| !q.is_empty())
            .map(|q| (q.to_string(), 1.0))
            .collect())
    }

    /// Counts a search (from a search event of `user`) towards the query's popularity.
    /// Only a hash of the user is kept, and only to count distinct users.
    pub fn record(&self, query: &str, user: &str) {
        let q = compact(query);
        if q.is_empty() || q.chars().count() > MAX_CHARS || is_blocked(&self.blocked, &q) {
            return;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(user, &mut hasher);
        let who = std::hash::Hasher::finish(&hasher);
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        let entry = live.entry(q).or_default();
        entry.count += 1.0;
        if entry.users.len() < LIVE_MIN_USERS && !entry.users.contains(&who) {
            entry.users.push(who);
        }
    }

    /// Entries in the index.
    pub fn len(&self) -> usize {
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .texts
            .len()
    }

    /// True when there is nothing to suggest from.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.live.read().map_or(true, |l| l.is_empty())
    }

    /// Up to `k` completions of `prefix`, most popular first.
    pub fn suggest(&self, prefix: &str, k: usize) -> Vec<Suggestion> {
        let p: String = normalize(prefix)
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if p.is_empty() || k == 0 {
            return Vec::new();
        }
        // Typed characters match characters; Latin letters also match pinyin and initials
        // (a Chinese prefix matched by sound would suggest homophones: `笔记` -> `毕节`).
        let lists = if p.is_ascii() { 3 } else { 1 };
        let idx = self.index.read().unwrap_or_else(|e| e.into_inner());
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        let boost = |text: &String| match live.get(text) {
            Some(l) if l.users.len() >= LIVE_MIN_USERS => l.count,
            _ => 0.0,
        };
        // Short prefixes match thousands of entries: keep the best 3k by a partial sort,
        // enough to hold k distinct entries (one entry appears at most once per key list).
        let mut found: Vec<(f64, u32)> = Vec::new();
        for list in idx.keys.iter().take(lists) {
            let start = list.partition_point(|(k, _)| k.as_str() < p.as_str());
            for (_, i) in list[start..]
                .iter()
                .take_while(|(k, _)| k.starts_with(p.as_str()))
            {
                found.push((idx.scores[*i as usize] + boost(&idx.texts[*i as usize]), *i));
            }
        }
        let keep = 3 * k;
        if found.len() > keep {
            found.select_nth_unstable_by(keep, |a, b| b.0.total_cmp(&a.0));
            found.truncate(keep);
        }
        found.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        found.dedup_by_key(|x| x.1);
        let mut out: Vec<Suggestion> = found
            .into_iter()
            .map(|(score, i)| Suggestion {
                text: idx.texts[i as usize].clone(),
                score,
                source: None,
            })
            .collect();
        // Live queries not in the index (new since the last load), matched on their text.
        for (text, l) in live.iter() {
            if l.users.len() >= LIVE_MIN_USERS
                && !idx.by_text.contains_key(text)
                && text.replace(' ', "").starts_with(&p)
            {
                out.push(Suggestion {
                    text: text.clone(),
                    score: l.count,
                    source: None,
                });
            }
        }
        out.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.text.len().cmp(&b.text.len()))
                .then_with(|| a.text.cmp(&b.text))
        });
        out.dedup_by(|a, b| a.text == b.text);
        out.truncate(k);
        out
    }
}

/// Normalized text with runs of whitespace as one space.
fn compact(text: &str) -> String {
    normalize(text)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn is_blocked(blocked: &[String], text: &str) -> bool {
    blocked.iter().any(|w| text.contains(w.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suggester() -> Suggester {
        Suggester::new(
            [
                ("口红", 50.0),
                ("口红 哑光", 20.0),
                ("洗衣液", 30.0),
                ("洗衣机", 10.0),
                ("口罩", 5.0),
                ("KH-1 零件", 1.0),
                ("毕节", 99.0),
            ]
            .map(|(t, w)| (t.to_string(), w)),
            blocklist_words(BLOCKLIST),
        )
    }

    fn texts(s: &Suggester, p: &str) -> Vec<String> {
        s.suggest(p, 5).into_iter().map(|x| x.text).collect()
    }

    #[test]
    fn completes_characters_pinyin_and_initials() {
        let s = suggester();
        assert_eq!(texts(&s, "口"), ["口红", "口红 哑光", "口罩"]);
        assert_eq!(
            texts(&s, "kh")[..2],
            ["口红".to_string(), "口红 哑光".to_string()]
        );
        assert_eq!(texts(&s, "xiyi"), ["洗衣液", "洗衣机"]);
        assert_eq!(texts(&s, "xyj"), ["洗衣机"]);
        assert_eq!(texts(&s, "ＫＯＵ"), ["口红", "口红 哑光", "口罩"]);
        assert!(texts(&s, "zzz").is_empty());
        assert!(
            texts(&s, "笔记").is_empty(),
            "characters never match by sound"
        );
        assert_eq!(texts(&s, "bj"), ["毕节"]);
        assert!(texts(&s, " ").is_empty());
    }

    #[test]
    fn live_searches_raise_and_add_entries_once_several_users_search_them() {
        let s = suggester();
        for i in 0..40 {
            s.record("洗衣机", &format!("u{}", i % 4));
        }
        for user in ["a", "b", "c"] {
            s.record("洗衣凝珠", user);
        }
        assert_eq!(texts(&s, "洗衣"), ["洗衣机", "洗衣液", "洗衣凝珠"]);
        // One shopper's searches, however many, are nobody else's suggestion.
        for _ in 0..50 {
            s.record("洗衣服的秘密", "only-me");
        }
        assert!(!texts(&s, "洗衣").contains(&"洗衣服的秘密".to_string()));
    }

    #[test]
    fn blocked_words_are_never_suggested() {
        let s = Suggester::new(
            [("成人用品 情趣", 99.0), ("成人奶粉", 5.0)].map(|(t, w)| (t.to_string(), w)),
            blocklist_words(BLOCKLIST),
        );
        assert_eq!(texts(&s, "成人"), ["成人奶粉"]);
        for user in ["a", "b", "c"] {
            s.record("代开发票 正规", user);
        }
        assert!(texts(&s, "代开").is_empty());
    }
}
