//! Index build throughput (products/s, encoding included) for the Multi-CPR pool (2,083
//! titles) and the Taobao cosmetics catalog (3,497 products). One build each: a build
//! takes tens of seconds, too long for criterion's repeated sampling.
//!
//! Needs `../shared/data`; encodes with `models/m3e-small` when present.

use std::path::Path;
use std::time::Instant;

use shoprank::catalog::{read_catalog, Format};
use shoprank::engine::load_encoder;
use shoprank::index::{build, BuildOptions};
use shoprank::schema::CatalogSchema;
use shoprank::settings::Settings;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/data");
    assert!(
        shared.is_dir(),
        "{} is missing: benches read the shared data set",
        shared.display()
    );
    let settings = Settings {
        manifest: root.join("models/manifest.toml"),
        ..Settings::default()
    };
    let encoder = load_encoder(&settings).ok();
    let schema = CatalogSchema::default();
    for (name, file, format) in [
        (
            "multicpr_pool",
            "multicpr_ecom_pool/corpus.tsv",
            Format::Multicpr,
        ),
        (
            "taobao_cosmetics",
            "taobao_cosmetics/snapshots.csv",
            Format::Taobao,
        ),
    ] {
        let started = Instant::now();
        let report = read_catalog(&shared.join(file), format, &schema).unwrap();
        let (products, _) = report.accept(false).unwrap();
        let n = products.len();
        let dir = tempfile::tempdir().unwrap();
        let meta = build(
            dir.path(),
            products,
            BuildOptions {
                schema: &schema,
                user_dict: None,
                brand_aliases: None,
                encoder: encoder.as_ref(),
                source: name.into(),
            },
        )
        .unwrap();
        assert_eq!(meta.products, n);
        let secs = started.elapsed().as_secs_f64();
        println!(
            "index {name}: {n} products in {secs:.1}s = {:.0} products/s (encoding {:.1}s = {:.0} products/s, model {})",
            n as f64 / secs,
            meta.encode_secs,
            if meta.encode_secs > 0.0 { n as f64 / meta.encode_secs } else { 0.0 },
            meta.model_id.as_deref().unwrap_or("none")
        );
    }
}
