//! Judgments from behavior: a search log (searches with the products shown, in order, and
//! the clicks, carts and purchases that followed) -> graded judgments (TREC qrels) that
//! `eval` and `tune` read.
//!
//! Shoppers click what they see, and they see the top of the list far more than the rest,
//! so raw click-through rates mostly measure where the old ranking put a product. This
//! module corrects that with a position-based click model (Craswell et al. 2008; Wang et
//! al., WSDM 2018): P(click at position k) = θ_k × γ(query, product), where θ_k is the
//! chance that position k is examined. θ is estimated from the log by EM (it needs the
//! same product shown at different positions now and then), or fixed to 1/k^η. Each
//! impression's interaction value (click 1, favorite or cart 2, purchase 3) is divided by
//! θ_k / θ_1 (inverse propensity weighting), averaged over the product's impressions for
//! the query, and thresholded into grades 0..=3.
//!
//! The event store holds no impressions (an `Event` is one product or one query), so the
//! input is a JSONL search log, one object per line:
//! - a search: `{"type": "search", "search_id": "s1", "user_id": "u1", "query": "口红",
//!   "ts": 1700000000, "impressions": ["p7", "p2", "p9"]}` (`impressions` in shown order;
//!   `search_id` and `user_id` optional, but one of them is needed to attribute clicks);
//! - an interaction: `{"type": "click" | "view" | "favorite" | "cart" | "purchase",
//!   "search_id": "s1", "product_id": "p2", "user_id": "u1", "ts": 1700000030}`. With
//!   `search_id` it belongs to that search; without, to the same user's latest search at
//!   most 30 minutes earlier that showed the product. Interactions that match no shown
//!   product are counted and ignored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Positions after this one share one examination propensity.
pub const MAX_POSITION: usize = 50;
/// EM iterations for the propensities.
const EM_ITERATIONS: usize = 100;

/// One logged search.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedSearch {
    /// As typed (first spelling seen).
    pub query: String,
    /// The shopper, when known.
    pub user: Option<String>,
    /// Unix seconds, when known.
    pub ts: Option<i64>,
    /// Products shown, in order.
    pub impressions: Vec<String>,
    /// Best interaction value per shown position (0 = none).
    pub values: Vec<u32>,
}

/// A parsed search log.
#[derive(Debug, Clone, Default)]
pub struct SearchLog {
    /// The searches, in file order.
    pub searches: Vec<LoggedSearch>,
    /// Interactions attributed to a search.
    pub attributed: usize,
    /// Interactions that matched no shown product.
    pub unattributed: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(rename = "type")]
    kind: String,
    search_id: Option<String>,
    user_id: Option<String>,
    query: Option<String>,
    product_id: Option<String>,
    impressions: Option<Vec<String>>,
    ts: Option<i64>,
}

/// Value of an interaction type, or `None` for an unknown type.
fn value_of(kind: &str) -> Option<u32> {
    match kind {
        "click" | "view" => Some(1),
        "favorite" | "cart" => Some(2),
        "purchase" => Some(3),
        _ => None,
    }
}

/// Reads search-log files (see the module docs); errors name the file and line.
pub fn read_log(paths: &[PathBuf]) -> Result<SearchLog> {
    let mut texts = Vec::new();
    for p in paths {
        texts.push((
            p.clone(),
            std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?,
        ));
    }
    parse_log(texts.iter().map(|(p, t)| (p.as_path(), t.as_str())))
}

/// Parses search-log texts, each with the path used in errors.
pub fn parse_log<'a>(files: impl IntoIterator<Item = (&'a Path, &'a str)>) -> Result<SearchLog> {
    let mut log = SearchLog::default();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut interactions = Vec::new();
    for (path, text) in files {
        for (i, raw) in text.lines().enumerate() {
            if raw.trim().is_empty() {
                continue;
            }
            let bad = |what: String| Error::Config(format!("{}:{}: {what}", path.display(), i + 1));
            let line: Line = serde_json::from_str(raw)
                .map_err(|e| bad(format!("malformed search-log record: {e}")))?;
            if line.kind == "search" {
                let query = line
                    .query
                    .as_deref()
                    .map(str::trim)
                    .filter(|q| !q.is_empty())
                    .ok_or_else(|| bad("a `search` needs a non-empty `query`".into()))?;
                let impressions = line.impressions.ok_or_else(|| {
                    bad("a `search` needs `impressions`: the product ids shown, in order".into())
                })?;
                if let Some(id) = line.search_id {
                    if by_id.insert(id.clone(), log.searches.len()).is_some() {
                        return Err(bad(format!("search_id `{id}` appears twice")));
                    }
                }
                log.searches.push(LoggedSearch {
                    query: query.to_string(),
                    user: line.user_id,
                    ts: line.ts,
                    values: vec![0; impressions.len()],
                    impressions,
                });
            } else {
                let value = value_of(&line.kind).ok_or_else(|| {
                    bad(format!(
                        "unknown type `{}` (search, click, view, favorite, cart, purchase)",
                        line.kind
                    ))
                })?;
                let product = line
                    .product_id
                    .ok_or_else(|| bad(format!("a `{}` needs a `product_id`", line.kind)))?;
                if line.search_id.is_none() && (line.user_id.is_none() || line.ts.is_none()) {
                    return Err(bad("an interaction needs a `search_id`, or a `user_id` and `ts` to find its search".into()));
                }
                interactions.push((
                    (path.display().to_string(), i + 1),
                    line.search_id,
                    line.user_id,
                    line.ts,
                    product,
                    value,
                ));
            }
        }
    }
    // Searches by user in time order, for interactions without a search id.
    let mut by_user: HashMap<&str, Vec<(i64, usize)>> = HashMap::new();
    for (i, s) in log.searches.iter().enumerate() {
        if let (Some(u), Some(ts)) = (&s.user, s.ts) {
            by_user.entry(u.as_str()).or_default().push((ts, i));
        }
    }
    for v in by_user.values_mut() {
        v.sort();
    }
    let mut hits = Vec::new();
    for (at, search_id, user, ts, product, value) in interactions {
        let search = match (&search_id, &user, ts) {
            (Some(id), _, _) => Some(*by_id.get(id).ok_or_else(|| {
                Error::Config(format!("{}:{}: unknown search_id `{id}`", at.0, at.1))
            })?),
            (None, Some(u), Some(ts)) => by_user.get(u.as_str()).and_then(|list| {
                list.iter()
                    .rev()
                    .filter(|(t, _)| *t <= ts && ts - *t <= 1800)
                    .find(|(_, i)| log.searches[*i].impressions.contains(&product))
                    .map(|(_, i)| *i)
            }),
            _ => None,
        };
        match search.and_then(|s| {
            Some((
                s,
                log.searches[s]
                    .impressions
                    .iter()
                    .position(|p| *p == product)?,
            ))
        }) {
            Some(hit) => hits.push((hit, value)),
            None => log.unattributed += 1,
        }
    }
    for ((s, pos), value) in hits {
        let v = &mut log.searches[s].values[pos];
        *v = (*v).max(value);
        log.attributed += 1;
    }
    Ok(log)
}

fn bucket(position: usize) -> usize {
    position.min(MAX_POSITION - 1)
}

/// Examination propensities per position (index 0 = top), relative to the top (θ_1 = 1),
/// estimated by EM on the position-based model. Positions never shown keep 1/k.
pub fn estimate_propensities(log: &SearchLog) -> Vec<f64> {
    let mut theta: Vec<f64> = (0..MAX_POSITION).map(|k| 1.0 / (k + 1) as f64).collect();
    let mut pairs: HashMap<(&str, &str), usize> = HashMap::new();
    let mut obs: Vec<(usize, usize, bool)> = Vec::new(); // (pair, position bucket, clicked)
    for s in &log.searches {
        for (k, (p, &v)) in s.impressions.iter().zip(&s.values).enumerate() {
            let n = pairs.len();
            let pair = *pairs.entry((s.query.as_str(), p.as_str())).or_insert(n);
            obs.push((pair, bucket(k), v > 0));
        }
    }
    let mut gamma = vec![0.5f64; pairs.len()];
    for _ in 0..EM_ITERATIONS {
        let mut t_num = vec![0.0; MAX_POSITION];
        let mut t_den = vec![0.0; MAX_POSITION];
        let mut g_num = vec![0.0; gamma.len()];
        let mut g_den = vec![0.0; gamma.len()];
        for &(pair, k, clicked) in &obs {
            let (t, g) = (theta[k], gamma[pair]);
            let (examined, relevant) = if clicked {
                (1.0, 1.0)
            } else {
                let no_click = (1.0 - t * g).max(1e-12);
                (t * (1.0 - g) / no_click, (1.0 - t) * g / no_click)
            };
            t_num[k] += examined;
            t_den[k] += 1.0;
            g_num[pair] += relevant;
            g_den[pair] += 1.0;
        }
        for k in 0..MAX_POSITION {
            if t_den[k] > 0.0 {
                theta[k] = (t_num[k] / t_den[k]).clamp(1e-6, 1.0);
            }
        }
        for (g, (n, d)) in gamma.iter_mut().zip(g_num.iter().zip(&g_den)) {
            *g = (n / d).clamp(1e-6, 1.0 - 1e-6);
        }
    }
    let top = theta[0].max(1e-6);
    theta.iter().map(|t| (t / top).clamp(1e-3, 1.0)).collect()
}

/// Propensities 1/k^η.
pub fn power_propensities(eta: f64) -> Vec<f64> {
    (0..MAX_POSITION)
        .map(|k| 1.0 / ((k + 1) as f64).powf(eta))
        .collect()
}

/// Settings of [`judge`].
#[derive(Debug, Clone, Serialize)]
pub struct JudgeOptions {
    /// Fixed propensities 1/k^η instead of the EM estimate.
    pub eta: Option<f64>,
    /// Products shown fewer times than this for a query get no judgment.
    pub min_impressions: usize,
    /// Corrected value per impression needed for grades 1, 2 and 3.
    pub thresholds: [f64; 3],
}

impl Default for JudgeOptions {
    fn default() -> Self {
        JudgeOptions {
            eta: None,
            min_impressions: 3,
            thresholds: [0.1, 0.4, 1.0],
        }
    }
}

/// One (query, product) judgment.
#[derive(Debug, Clone, Serialize)]
pub struct Judgment {
    /// Query id (see [`Judgments::queries`]).
    pub qid: String,
    /// Product id.
    pub product: String,
    /// Times shown for the query.
    pub impressions: usize,
    /// Mean interaction value per impression, uncorrected.
    pub raw: f64,
    /// ... divided by the examination propensity of each impression's position.
    pub corrected: f64,
    /// 0..=3.
    pub grade: u32,
}

/// Judgments of a whole log.
#[derive(Debug, Clone, Serialize)]
pub struct Judgments {
    /// (qid, query), in order of first appearance; queries are grouped by normalized text.
    pub queries: Vec<(String, String)>,
    /// Examination propensity per position (top = 1).
    pub propensities: Vec<f64>,
    /// Sorted by query, then grade (best first), then product.
    pub judgments: Vec<Judgment>,
}

/// Turns a log into graded judgments (see the module docs).
pub fn judge(log: &SearchLog, opts: &JudgeOptions) -> Judgments {
    let propensities = match opts.eta {
        Some(eta) => power_propensities(eta),
        None => estimate_propensities(log),
    };
    let mut qids: HashMap<String, usize> = HashMap::new();
    let mut queries: Vec<(String, String)> = Vec::new();
    // (query index, product) -> (impressions, raw sum, corrected sum)
    let mut stats: HashMap<(usize, &str), (usize, f64, f64)> = HashMap::new();
    for s in &log.searches {
        let norm = crate::analysis::normalize(&s.query);
        let q = *qids.entry(norm).or_insert_with(|| {
            queries.push((format!("q{}", queries.len() + 1), s.query.clone()));
            queries.len() - 1
        });
        for (k, (p, &v)) in s.impressions.iter().zip(&s.values).enumerate() {
            let e = stats.entry((q, p.as_str())).or_default();
            e.0 += 1;
            e.1 += v as f64;
            e.2 += v as f64 / propensities[bucket(k)];
        }
    }
    let mut judgments: Vec<(usize, Judgment)> = stats
        .into_iter()
        .filter(|(_, (n, _, _))| *n >= opts.min_impressions.max(1))
        .map(|((q, p), (n, raw, corrected))| {
            let corrected = corrected / n as f64;
            let grade = opts.thresholds.iter().filter(|&&t| corrected >= t).count() as u32;
            (
                q,
                Judgment {
                    qid: queries[q].0.clone(),
                    product: p.to_string(),
                    impressions: n,
                    raw: raw / n as f64,
                    corrected,
                    grade,
                },
            )
        })
        .collect();
    judgments.sort_by(|(qa, a), (qb, b)| {
        qa.cmp(qb)
            .then(b.grade.cmp(&a.grade))
            .then(b.corrected.total_cmp(&a.corrected))
            .then(a.product.cmp(&b.product))
    });
    Judgments {
        queries,
        propensities,
        judgments: judgments.into_iter().map(|(_, j)| j).collect(),
    }
}

/// Writes `dir/queries.tsv` (`qid<TAB>query`) and `dir/qrels.tsv` (`qid 0 pid grade`).
pub fn write(j: &Judgments, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let queries = dir.join("queries.tsv");
    let qrels = dir.join("qrels.tsv");
    let text: String = j
        .queries
        .iter()
        .map(|(id, q)| format!("{id}\t{}\n", q.replace(['\t', '\n'], " ")))
        .collect();
    std::fs::write(&queries, text).map_err(|e| Error::io(&queries, e))?;
    let text: String = j
        .judgments
        .iter()
        .map(|x| format!("{} 0 {} {}\n", x.qid, x.product, x.grade))
        .collect();
    std::fs::write(&qrels, text).map_err(|e| Error::io(&qrels, e))?;
    Ok((queries, qrels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::Rng;

    /// Fraction of product pairs (with different true relevance) that `score` orders like
    /// the truth.
    fn pair_accuracy(truth: &[f64], score: &[f64]) -> f64 {
        let (mut right, mut all) = (0, 0);
        for a in 0..truth.len() {
            for b in a + 1..truth.len() {
                if truth[a] != truth[b] {
                    all += 1;
                    if (truth[a] - truth[b]) * (score[a] - score[b]) > 0.0 {
                        right += 1;
                    }
                }
            }
        }
        right as f64 / all as f64
    }

    /// A log of one query over 10 products whose true relevance rises with the id, shown
    /// by an old ranker that mostly puts them in the opposite order (the least relevant on
    /// top); examination 1/k.
    fn synthetic_log(rng: &mut Rng) -> (String, Vec<f64>) {
        let relevance: Vec<f64> = (0..10).map(|i| 0.3 + 0.06 * i as f64).collect();
        let mut out = String::new();
        for s in 0..8000 {
            let mut shown: Vec<usize> = (0..10).collect();
            if rng.unit() < 0.3 {
                for i in (1..10).rev() {
                    shown.swap(i, rng.below(i + 1));
                }
            }
            let ids: Vec<String> = shown.iter().map(|p| format!("\"p{p}\"")).collect();
            out += &format!("{{\"type\":\"search\",\"search_id\":\"s{s}\",\"query\":\"口红\",\"impressions\":[{}]}}\n", ids.join(","));
            for (k, &p) in shown.iter().enumerate() {
                if rng.unit() < 1.0 / (k + 1) as f64 && rng.unit() < relevance[p] {
                    let kind = if rng.unit() < 0.2 { "cart" } else { "click" };
                    out += &format!(
                        "{{\"type\":\"{kind}\",\"search_id\":\"s{s}\",\"product_id\":\"p{p}\"}}\n"
                    );
                }
            }
        }
        (out, relevance)
    }

    #[test]
    fn ipw_recovers_the_true_order_better_than_raw_ctr() {
        let (text, truth) = synthetic_log(&mut Rng(3));
        let log = parse_log([(Path::new("log.jsonl"), text.as_str())]).unwrap();
        assert_eq!(log.unattributed, 0);
        let j = judge(&log, &JudgeOptions::default());
        // The estimated propensities fall with the position like the true 1/k.
        assert!(
            (j.propensities[1] - 0.5).abs() < 0.1,
            "{:?}",
            &j.propensities[..10]
        );
        assert!(
            (j.propensities[4] - 0.2).abs() < 0.1,
            "{:?}",
            &j.propensities[..10]
        );
        let by = |f: fn(&Judgment) -> f64| -> Vec<f64> {
            (0..10)
                .map(|p| {
                    f(j.judgments
                        .iter()
                        .find(|x| x.product == format!("p{p}"))
                        .unwrap())
                })
                .collect()
        };
        let raw = pair_accuracy(&truth, &by(|x| x.raw));
        let ipw = pair_accuracy(&truth, &by(|x| x.corrected));
        assert!(
            raw < 0.6,
            "raw CTR should be fooled by the old order: {raw}"
        );
        assert!(ipw > 0.9 && ipw > raw + 0.3, "ipw {ipw} vs raw {raw}");
        // The same with fixed 1/k propensities.
        let fixed = judge(
            &log,
            &JudgeOptions {
                eta: Some(1.0),
                ..JudgeOptions::default()
            },
        );
        let fixed_scores: Vec<f64> = (0..10)
            .map(|p| {
                fixed
                    .judgments
                    .iter()
                    .find(|x| x.product == format!("p{p}"))
                    .unwrap()
                    .corrected
            })
            .collect();
        assert!(pair_accuracy(&truth, &fixed_scores) > 0.9);
        // The most relevant product gets the best grade.
        assert_eq!(j.judgments[0].product, "p9");
    }

    #[test]
    fn attributes_by_user_and_time_without_search_id() {
        let text = r#"{"type":"search","user_id":"u","query":"口红","ts":1000,"impressions":["a","b"]}
{"type":"search","user_id":"u","query":"面霜","ts":2000,"impressions":["c","a"]}
{"type":"purchase","user_id":"u","product_id":"a","ts":2100}
{"type":"click","user_id":"u","product_id":"b","ts":2200}
{"type":"click","user_id":"u","product_id":"a","ts":9000}
"#;
        let log = parse_log([(Path::new("l"), text)]).unwrap();
        assert_eq!(log.searches[1].values, [0, 3]);
        assert_eq!(log.searches[0].values, [0, 1]);
        assert_eq!((log.attributed, log.unattributed), (2, 1));
        let j = judge(
            &log,
            &JudgeOptions {
                eta: Some(1.0),
                min_impressions: 1,
                ..JudgeOptions::default()
            },
        );
        assert_eq!(
            j.queries,
            [
                ("q1".to_string(), "口红".to_string()),
                ("q2".to_string(), "面霜".to_string())
            ]
        );
        let a2 = j
            .judgments
            .iter()
            .find(|x| x.qid == "q2" && x.product == "a")
            .unwrap();
        assert_eq!((a2.corrected, a2.grade), (6.0, 3));
    }

    #[test]
    fn bad_records_name_file_and_line() {
        let cases = [
            (
                "{\"type\":\"search\",\"query\":\"x\"}\n",
                "log.jsonl:1:",
                "impressions",
            ),
            (
                "\n{\"type\":\"hover\",\"product_id\":\"a\",\"search_id\":\"s\"}\n",
                "log.jsonl:2:",
                "hover",
            ),
            (
                "{\"type\":\"click\",\"product_id\":\"a\"}\n",
                "log.jsonl:1:",
                "search_id",
            ),
            (
                "{\"type\":\"click\",\"product_id\":\"a\",\"search_id\":\"zz\"}\n",
                "log.jsonl:1:",
                "unknown search_id",
            ),
            (
                "{\"type\":\"search\",\"query\":\"x\",\"impressions\":[],\"colour\":1}\n",
                "log.jsonl:1:",
                "colour",
            ),
            ("not json\n", "log.jsonl:1:", "malformed"),
        ];
        for (text, at, needle) in cases {
            let err = parse_log([(Path::new("log.jsonl"), text)])
                .unwrap_err()
                .to_string();
            assert!(err.contains(at) && err.contains(needle), "{err}");
        }
    }
}
