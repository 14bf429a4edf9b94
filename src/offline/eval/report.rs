//! An [`EvalRun`] -> text for a terminal, a Markdown report, or one JSON document.

use std::fmt::Write;

use serde_json::{json, Map, Value};

use super::{EvalRun, QueryScores};

/// Output format of `shoprank eval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns.
    Text,
    /// One JSON document.
    Json,
    /// GitHub Markdown tables.
    Markdown,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            "markdown" | "md" => Ok(Format::Markdown),
            other => Err(format!("unknown format `{other}` (text, json, markdown)")),
        }
    }
}

/// Renders the run; `per_query` adds the per-query table (the JSON `per_query` array).
pub fn render(run: &EvalRun, format: Format, per_query: bool) -> String {
    match format {
        Format::Json => json(run, per_query).to_string() + "\n",
        Format::Text => tables(run, per_query, false),
        Format::Markdown => tables(run, per_query, true),
    }
}

fn metrics_json(k: usize, s: &QueryScores) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(format!("mrr@{k}"), json!(s.rr));
    m.insert(format!("ndcg@{k}"), json!(s.ndcg));
    m.insert(format!("recall@{k}"), json!(s.recall));
    m.insert("map".into(), json!(s.ap));
    m.insert("recall@1".into(), json!(s.recall1));
    m.insert("recall@100".into(), json!(s.recall100));
    m
}

/// The JSON document: `{"k", "queries", "skipped", "profiles": [{"profile", "mrr@k",
/// "ndcg@k", "recall@k", "map", "recall@1", "recall@100", "queries", "no_match"}],
/// "comparisons":
/// [{"baseline", "profile", "ndcg": {"mean_diff", "p_value", "queries"}, "mrr": {...}}],
/// "per_query"?: [{"qid", "query", "profiles": {name: {"rr", "ndcg", ...}}}]}`.
pub fn json(run: &EvalRun, per_query: bool) -> Value {
    let profiles: Vec<Value> = run
        .profiles
        .iter()
        .map(|p| {
            let mut m = Map::new();
            m.insert("profile".into(), json!(p.profile));
            m.extend(metrics_json(run.k, &p.mean));
            m.insert("queries".into(), json!(p.per_query.len()));
            m.insert("no_match".into(), json!(p.no_match));
            Value::Object(m)
        })
        .collect();
    let mut doc = json!({
        "k": run.k,
        "queries": run.queries.len(),
        "skipped": run.skipped,
        "profiles": profiles,
        "comparisons": run.comparisons,
    });
    if per_query {
        let rows: Vec<Value> = run
            .queries
            .iter()
            .enumerate()
            .map(|(i, (qid, query))| {
                let by_profile: Map<String, Value> = run
                    .profiles
                    .iter()
                    .map(|p| (p.profile.clone(), json!(p.per_query[i])))
                    .collect();
                json!({"qid": qid, "query": query, "profiles": by_profile})
            })
            .collect();
        doc["per_query"] = Value::Array(rows);
    }
    doc
}

/// Writes rows as aligned text or as a Markdown table.
fn table(out: &mut String, header: &[String], rows: &[Vec<String>], markdown: bool) {
    if markdown {
        let _ = writeln!(out, "| {} |", header.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
        for r in rows {
            let _ = writeln!(out, "| {} |", r.join(" | "));
        }
        out.push('\n');
        return;
    }
    let width = |c: usize| {
        rows.iter()
            .map(|r| r[c].chars().count())
            .chain([header[c].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    for r in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
}

fn tables(run: &EvalRun, per_query: bool, markdown: bool) -> String {
    let k = run.k;
    let mut out = String::new();
    if markdown {
        let _ = writeln!(out, "### Offline evaluation\n");
    }
    let _ = writeln!(
        out,
        "{} judged queries scored{}; cutoff k = {k}; MAP and Recall@100 over the top 100; \
         `no match`: queries that matched no product (scores rank every candidate).\n",
        run.queries.len(),
        if run.skipped > 0 {
            format!(" ({} skipped: no positive judgment)", run.skipped)
        } else {
            String::new()
        }
    );
    let header: Vec<String> = [
        "profile".to_string(),
        format!("MRR@{k}"),
        format!("NDCG@{k}"),
        format!("Recall@{k}"),
        "MAP".into(),
        "Recall@1".into(),
        "Recall@100".into(),
        "queries".into(),
        "no match".into(),
    ]
    .to_vec();
    let rows: Vec<Vec<String>> = run
        .profiles
        .iter()
        .map(|p| {
            let m = &p.mean;
            vec![
                if markdown {
                    format!("`{}`", p.profile)
                } else {
                    p.profile.clone()
                },
                format!("{:.4}", m.rr),
                format!("{:.4}", m.ndcg),
                format!("{:.4}", m.recall),
                format!("{:.4}", m.ap),
                format!("{:.4}", m.recall1),
                format!("{:.4}", m.recall100),
                p.per_query.len().to_string(),
                p.no_match.to_string(),
            ]
        })
        .collect();
    table(&mut out, &header, &rows, markdown);
    if !run.comparisons.is_empty() {
        let _ = writeln!(
            out,
            "{}Paired randomization test against `{}` ({} sign flips, two-sided):\n",
            if markdown { "" } else { "\n" },
            run.comparisons[0].baseline,
            super::significance::PERMUTATIONS
        );
        let header: Vec<String> = vec![
            "profile".into(),
            format!("ΔNDCG@{k}"),
            "p".into(),
            format!("ΔMRR@{k}"),
            "p".into(),
        ];
        let rows: Vec<Vec<String>> = run
            .comparisons
            .iter()
            .map(|c| {
                vec![
                    c.profile.clone(),
                    format!("{:+.4}", c.ndcg.mean_diff),
                    format!("{:.4}", c.ndcg.p_value),
                    format!("{:+.4}", c.mrr.mean_diff),
                    format!("{:.4}", c.mrr.p_value),
                ]
            })
            .collect();
        table(&mut out, &header, &rows, markdown);
    }
    if per_query {
        let _ = writeln!(out, "{}Per query:\n", if markdown { "" } else { "\n" });
        let mut header: Vec<String> = vec!["qid".into(), "query".into()];
        for p in &run.profiles {
            header.push(format!("{} NDCG@{k}", p.profile));
            header.push(format!("{} RR@{k}", p.profile));
        }
        let rows: Vec<Vec<String>> = run
            .queries
            .iter()
            .enumerate()
            .map(|(i, (qid, query))| {
                let mut r = vec![qid.clone(), query.replace('|', "\\|")];
                for p in &run.profiles {
                    r.push(format!("{:.3}", p.per_query[i].ndcg));
                    r.push(format!("{:.3}", p.per_query[i].rr));
                }
                r
            })
            .collect();
        table(&mut out, &header, &rows, markdown);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{compare, ProfileResult};
    use super::*;

    fn run() -> EvalRun {
        let a = ProfileResult {
            profile: "a".into(),
            mean: QueryScores::mean(&[QueryScores::from_grades(&[0, 1], &[1], 10)]),
            per_query: vec![QueryScores::from_grades(&[0, 1], &[1], 10)],
            no_match: 0,
        };
        let mut b = a.clone();
        b.profile = "b".into();
        b.per_query = vec![QueryScores::from_grades(&[1], &[1], 10)];
        b.mean = b.per_query[0];
        EvalRun {
            k: 10,
            queries: vec![("q1".into(), "口红|唇膏".into())],
            skipped: 1,
            comparisons: vec![compare(&a, &b)],
            profiles: vec![a, b],
        }
    }

    #[test]
    fn renders_every_format() {
        let r = run();
        let md = render(&r, Format::Markdown, true);
        assert!(md.contains("| `b` | 1.0000 | 1.0000 |"), "{md}");
        assert!(
            md.contains("| q1 | 口红\\|唇膏 | 0.631 | 0.500 | 1.000 | 1.000 |"),
            "{md}"
        );
        assert!(md.contains("1 skipped"), "{md}");
        let text = render(&r, Format::Text, false);
        assert!(
            text.contains("MRR@10") && !text.contains("Per query"),
            "{text}"
        );
        let j: Value = serde_json::from_str(&render(&r, Format::Json, true)).unwrap();
        assert_eq!(j["profiles"][1]["mrr@10"], json!(1.0));
        assert_eq!(j["profiles"][0]["map"], json!(0.5));
        assert_eq!(j["comparisons"][0]["mrr"]["queries"], json!(1));
        assert_eq!(j["per_query"][0]["profiles"]["a"]["rr"], json!(0.5));
        assert!("yaml".parse::<Format>().is_err());
    }
}
