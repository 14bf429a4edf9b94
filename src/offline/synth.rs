//! Synthetic scale catalogs: the real titles of `../shared/data` (Taobao cosmetics, OpenBG,
//! the Multi-CPR pool) recombined into as many products as asked, for load and memory
//! benchmarks. Every product is labelled synthetic (id `syn-N`, shop `合成-…`).
//!
//! A product takes a real base product (its brand, category, price level), keeps most of
//! its title's phrases, borrows one phrase from another product of the same source and
//! adds an attribute phrase (colour, size, edition); its price is the base price times a
//! log-normal factor and its sales follow a heavy-tailed (log-uniform) distribution.

use std::io::Write;
use std::path::Path;

use crate::catalog::{read_shared, Format, Product};
use crate::error::{Error, Result};
use crate::util::Rng;

const EXTRAS: &[&str] = &[
    "新款",
    "2024款",
    "官方旗舰",
    "正品",
    "大容量",
    "便携",
    "礼盒装",
    "限定版",
    "升级款",
    "经典款",
    "套装",
    "家用",
    "学生",
    "男女通用",
    "加厚",
    "轻薄",
    "旗舰款",
    "迷你",
];
const COLORS: &[&str] = &[
    "黑色", "白色", "红色", "蓝色", "粉色", "灰色", "绿色", "金色",
];
const SIZES: &[&str] = &[
    "50ml", "100ml", "200g", "500g", "1kg", "S码", "M码", "L码", "XL",
];

/// The real base products of the shared data folder.
pub fn bases(shared: &Path) -> Result<Vec<(Product, &'static str)>> {
    let mut out = Vec::new();
    for (file, format, source) in [
        (
            "taobao_cosmetics/snapshots.csv",
            Format::Taobao,
            "cosmetics",
        ),
        ("openbg_products/products.tsv", Format::Openbg, "openbg"),
        (
            "multicpr_ecom_pool/corpus.tsv",
            Format::Multicpr,
            "multicpr",
        ),
    ] {
        let products = read_shared(shared, file, format, "synth")?;
        out.extend(products.into_iter().map(|mut p| {
            if p.category.is_empty() && source == "cosmetics" {
                p.category = "美妆/护肤彩妆".into();
            }
            (p, source)
        }));
    }
    Ok(out)
}

/// Writes `n` synthetic products as catalog JSON lines to `out`.
pub fn generate(shared: &Path, n: usize, seed: u64, out: &Path) -> Result<usize> {
    let bases = bases(shared)?;
    let phrases: Vec<Vec<&str>> = bases
        .iter()
        .map(|(p, _)| p.title.split_whitespace().collect())
        .collect();
    let mut rng = Rng(seed);
    let file = std::fs::File::create(out).map_err(|e| Error::io(out, e))?;
    let mut w = std::io::BufWriter::new(file);
    let pick = |rng: &mut Rng, v: &[&'static str]| v[rng.below(v.len())];
    for i in 0..n {
        let b = rng.below(bases.len());
        let (base, source) = &bases[b];
        // Another product of the same source lends a phrase.
        let mut other = rng.below(bases.len());
        for _ in 0..8 {
            if bases[other].1 == *source {
                break;
            }
            other = rng.below(bases.len());
        }
        let mut title: Vec<String> = phrases[b].iter().map(|s| s.to_string()).collect();
        if title.len() > 2 && rng.unit() < 0.5 {
            title.remove(1 + rng.below(title.len() - 1));
        }
        if let Some(borrowed) = phrases[other].get(rng.below(phrases[other].len().max(1))) {
            // A long unspaced title lends a short window, not all of itself.
            let chars: Vec<char> = borrowed.chars().collect();
            let len = chars.len().min(4 + rng.below(5));
            let at = rng.below(chars.len() - len + 1);
            title.push(chars[at..at + len].iter().collect());
        }
        title.push(pick(&mut rng, EXTRAS).to_string());
        if rng.unit() < 0.5 {
            title.push(pick(&mut rng, COLORS).to_string());
        }
        if rng.unit() < 0.3 {
            title.push(pick(&mut rng, SIZES).to_string());
        }
        let title: String = title.join(" ").chars().take(120).collect();
        // Log-normal price around the base price (or around 100 yuan without one).
        let normal = (-2.0 * rng.unit().max(1e-12).ln()).sqrt()
            * (2.0 * std::f64::consts::PI * rng.unit()).cos();
        let price = base.price.unwrap_or(100.0) * (0.3 * normal).exp();
        let sales = 10f64.powf(rng.unit() * 5.0) as u64;
        let brand = base.brand.clone();
        let record = serde_json::json!({
            "id": format!("syn-{i}"),
            "title": title,
            "brand": brand,
            "category": base.category,
            "price": (price * 100.0).round() / 100.0,
            "sales": sales,
            "rating": ((4.0 + rng.unit()) * 10.0).round() / 10.0,
            "shop": format!("合成-{}", if brand.is_empty() { *source } else { brand.as_str() }),
            "attributes": base.attributes,
            "in_stock": rng.unit() < 0.95,
            "updated_at": 1_700_000_000 + i as i64,
        });
        serde_json::to_writer(&mut w, &record).map_err(|e| Error::Internal(e.to_string()))?;
        w.write_all(b"\n").map_err(|e| Error::io(out, e))?;
    }
    w.flush().map_err(|e| Error::io(out, e))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::read_catalog;
    use crate::schema::CatalogSchema;

    #[test]
    fn generates_valid_labelled_products_or_says_what_is_missing() {
        let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("synth.jsonl");
        if !shared.is_dir() {
            let err = generate(&shared, 10, 1, &out).unwrap_err();
            assert!(err.to_string().contains("missing"), "{err}");
            return;
        }
        assert_eq!(generate(&shared, 500, 7, &out).unwrap(), 500);
        let report = read_catalog(&out, Format::Jsonl, &CatalogSchema::default()).unwrap();
        assert!(report.errors.is_empty(), "{:?}", &report.errors[..1]);
        assert_eq!(report.products.len(), 500);
        assert!(report
            .products
            .iter()
            .all(|p| p.id.starts_with("syn-") && p.shop.starts_with("合成-")));
        let brands: std::collections::HashSet<_> =
            report.products.iter().map(|p| &p.brand).collect();
        assert!(brands.len() > 20, "realistic brands: {}", brands.len());
        // Same seed, same catalog.
        let again = dir.path().join("again.jsonl");
        generate(&shared, 500, 7, &again).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
    }
}
