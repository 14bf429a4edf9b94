//! `shoprank search`, `shoprank analyze` and `shoprank suggest`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use shoprank::engine::SearchRequest;
use shoprank::retrieve::Filters;
use shoprank::settings::Settings;

use super::{attach_events, open_engine};

/// `shoprank search`.
#[derive(Args)]
pub struct SearchArgs {
    /// The query.
    query: String,
    /// Ranking profile.
    #[arg(long)]
    profile: Option<String>,
    /// Show every feature's value and weight.
    #[arg(long)]
    explain: bool,
    /// Print the response as JSON.
    #[arg(long)]
    json: bool,
    /// Only this brand.
    #[arg(long)]
    brand: Option<String>,
    /// Only this category path prefix.
    #[arg(long)]
    category: Option<String>,
    /// Lowest price.
    #[arg(long)]
    price_min: Option<f64>,
    /// Highest price.
    #[arg(long)]
    price_max: Option<f64>,
    /// Only products in stock.
    #[arg(long)]
    in_stock: bool,
    /// Hits per page.
    #[arg(long, default_value_t = 10)]
    size: usize,
    /// Page number.
    #[arg(long, default_value_t = 1)]
    page: usize,
    /// Personalize for this user (reads the event store; not while `serve` holds it).
    #[arg(long)]
    user: Option<String>,
}

/// `shoprank suggest`.
#[derive(Args)]
pub struct SuggestArgs {
    /// The typed prefix (characters, pinyin or initials).
    prefix: Option<String>,
    /// Query log to load into the data directory.
    #[arg(long)]
    load: Option<PathBuf>,
    /// How many.
    #[arg(long, default_value_t = 10)]
    size: usize,
}

/// Searches and prints the hits (or the JSON response).
pub fn search(settings: Settings, a: SearchArgs) -> anyhow::Result<()> {
    let mut engine = open_engine(&settings)?;
    if a.user.is_some() {
        attach_events(&mut engine, &settings)?;
    }
    let (page, size) = (a.page, a.size);
    let req = SearchRequest {
        query: a.query,
        filters: Filters {
            brand: a.brand,
            category: a.category,
            price_min: a.price_min,
            price_max: a.price_max,
            in_stock: a.in_stock,
        },
        page,
        size,
        profile: a.profile,
        explain: a.explain,
        explain_terms: true,
        user: a.user,
        overrides: Default::default(),
        bm25: None,
        all_candidates: false,
    };
    let res = engine.search(&req)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&res)?);
        return Ok(());
    }
    println!(
        "{} matching products for `{}` ({} ranked; profile {}, semantic {}, {:.1} ms); tokens: {}",
        res.total,
        res.query,
        res.pageable,
        res.profile,
        if res.semantic { "on" } else { "off" },
        res.timings_ms.total,
        res.tokens.join(" ")
    );
    if res.no_match {
        println!("no product matches; related products instead:");
    }
    let shown = if res.no_match {
        &res.related
    } else {
        &res.hits
    };
    for (i, h) in shown.iter().enumerate() {
        let price = h.price.map_or("-".to_string(), |p| format!("¥{p}"));
        println!(
            "{:>3}. {:>7.4}  [{}] {}  {}  {}",
            (page - 1) * size + i + 1,
            h.score,
            h.id,
            h.title,
            h.brand,
            price
        );
        if let Some(e) = &h.explain {
            let parts: Vec<String> = e
                .features
                .iter()
                .map(|f| {
                    format!(
                        "{}={:.3}×{}={:.3}",
                        f.name, f.value, f.weight, f.contribution
                    )
                })
                .collect();
            println!(
                "       {}  (bm25 raw {:.2}, found by {})",
                parts.join("  "),
                e.bm25_raw,
                e.matched_by.join("+")
            );
        }
    }
    Ok(())
}

/// Prints how a query is understood, as JSON.
pub fn analyze(settings: Settings, query: Option<String>, aliases: bool) -> anyhow::Result<()> {
    let engine = open_engine(&settings)?;
    match query {
        Some(q) if !aliases => {
            println!("{}", serde_json::to_string_pretty(&engine.analyze(&q)?)?)
        }
        _ => engine.brand_aliases().iter().for_each(|l| println!("{l}")),
    }
    Ok(())
}

/// Loads a query log for suggestions and/or completes a prefix.
pub fn suggest(settings: Settings, a: SuggestArgs) -> anyhow::Result<()> {
    if let Some(file) = a.load {
        let queries = shoprank::suggest::Suggester::read_log(&file)?;
        let path = shoprank::engine::suggest_log_path(&settings.data_dir);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text: String = queries.iter().map(|(q, _)| format!("{q}\n")).collect();
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        println!(
            "loaded {} queries from {} into {}",
            queries.len(),
            file.display(),
            path.display()
        );
    }
    if let Some(prefix) = a.prefix {
        let engine = open_engine(&settings)?;
        for s in engine.suggest(&prefix, a.size, None)? {
            println!("{:>8.0}  {}", s.score, s.text);
        }
    }
    Ok(())
}
