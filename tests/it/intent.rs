//! Golden test of query understanding on the labelled queries in
//! `fixtures/intent_queries.jsonl` (written for the demo catalog's brands and categories):
//! precision and recall per intent type, printed, with floors asserted.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use shoprank::catalog::{read_catalog, Format};
use shoprank::intent::{IntentModel, PriceIntent};
use shoprank::schema::CatalogSchema;

#[derive(Default)]
struct Counts {
    tp: usize,
    fp: usize,
    fn_: usize,
}

impl Counts {
    fn precision(&self) -> f64 {
        self.tp as f64 / (self.tp + self.fp).max(1) as f64
    }
    fn recall(&self) -> f64 {
        self.tp as f64 / (self.tp + self.fn_).max(1) as f64
    }
    fn add_sets(&mut self, predicted: &BTreeSet<String>, expected: &BTreeSet<String>) {
        self.tp += predicted.intersection(expected).count();
        self.fp += predicted.difference(expected).count();
        self.fn_ += expected.difference(predicted).count();
    }
}

fn price_label(v: &Value) -> Option<String> {
    let o = v.as_object()?;
    let num = |k: &str| o.get(k).and_then(Value::as_f64);
    Some(if o.get("cheap").is_some() {
        "cheap".into()
    } else if let Some(a) = num("around") {
        format!("around {a}")
    } else {
        format!("range {:?} {:?}", num("min"), num("max"))
    })
}

fn price_predicted(p: &PriceIntent) -> String {
    match p {
        PriceIntent::Cheap => "cheap".into(),
        PriceIntent::Around { target } => format!("around {target}"),
        PriceIntent::Range { min, max } => format!("range {min:?} {max:?}"),
    }
}

#[test]
fn labelled_queries_meet_the_precision_floors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let schema = CatalogSchema::default();
    let (products, _) = read_catalog(
        &root.join("fixtures/demo_catalog.jsonl"),
        Format::Jsonl,
        &schema,
    )
    .unwrap()
    .accept(false)
    .unwrap();
    let model = IntentModel::new(
        &products,
        None,
        Some(&root.join("index_schema/brand_aliases.toml")),
    )
    .unwrap();
    let text = std::fs::read_to_string(root.join("fixtures/intent_queries.jsonl")).unwrap();
    let (mut brand, mut price, mut category, mut attributes) = (
        Counts::default(),
        Counts::default(),
        Counts::default(),
        Counts::default(),
    );
    let mut misses = Vec::new();
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        n += 1;
        let label: Value = serde_json::from_str(line).unwrap();
        let q = label["q"].as_str().unwrap();
        let (intents, _) = model.analyze(&shoprank::analysis::normalize(q), None);

        let got: BTreeSet<String> = intents
            .brand
            .iter()
            .filter(|b| b.confidence >= 0.5)
            .map(|b| b.value.clone())
            .collect();
        let want: BTreeSet<String> = label["brand"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_str().unwrap().to_string())
            .collect();
        if got != want {
            misses.push(format!("brand {q}: got {got:?}, want {want:?}"));
        }
        brand.add_sets(&got, &want);

        let got = intents.price.as_ref().map(price_predicted);
        let want = price_label(&label["price"]);
        match (&got, &want) {
            (Some(g), Some(w)) if g == w => price.tp += 1,
            (Some(_), Some(_)) => {
                price.fp += 1;
                price.fn_ += 1;
            }
            (Some(_), None) => price.fp += 1,
            (None, Some(_)) => price.fn_ += 1,
            (None, None) => {}
        }
        if got != want {
            misses.push(format!("price {q}: got {got:?}, want {want:?}"));
        }

        let got = intents.category.first().map(|c| c.value.clone());
        let want = label["category"].as_str().map(str::to_string);
        let consistent = |g: &str, w: &str| g == w || g.starts_with(&format!("{w}/"));
        match (&got, &want) {
            (Some(g), Some(w)) if consistent(g, w) => category.tp += 1,
            (Some(_), Some(_)) => {
                category.fp += 1;
                category.fn_ += 1;
            }
            (Some(_), None) => category.fp += 1,
            (None, Some(_)) => category.fn_ += 1,
            (None, None) => {}
        }

        let got: BTreeSet<String> = intents.attributes.iter().cloned().collect();
        let want: BTreeSet<String> = label["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        if got != want {
            misses.push(format!("attributes {q}: got {got:?}, want {want:?}"));
        }
        attributes.add_sets(&got, &want);
    }
    for m in &misses {
        println!("{m}");
    }
    for (name, c) in [
        ("brand", &brand),
        ("price", &price),
        ("category", &category),
        ("attributes", &attributes),
    ] {
        println!(
            "{name:<10} precision {:.3} recall {:.3} (tp {} fp {} fn {})",
            c.precision(),
            c.recall(),
            c.tp,
            c.fp,
            c.fn_
        );
    }
    assert!(n >= 150, "only {n} labelled queries");
    assert!(
        brand.precision() >= 0.9 && price.precision() >= 0.9,
        "brand/price precision below 0.9"
    );
    assert!(
        brand.recall() >= 0.8 && price.recall() >= 0.8,
        "brand/price recall below 0.8"
    );
    assert!(
        category.precision() >= 0.7 && attributes.precision() >= 0.7,
        "category/attribute precision below 0.7"
    );
}
