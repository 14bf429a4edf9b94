//! Golden queries for relevance (no model: BM25 with its bigram sub-fields plus intents):
//! a confident brand or category intent demotes mismatches, brands are found in any script
//! (aliases from the alias file and learned from titles), and the bigram sub-field finds
//! what jieba's words split differently. On the demo catalog, small catalogs written here,
//! and the shared Taobao cosmetics catalog when `../shared/data` is there.

use crate::common;

use std::path::Path;

use serde_json::json;
use shoprank::catalog::{read_catalog, Format, Product};
use shoprank::engine::{Engine, Hit, SearchRequest};

fn search(engine: &Engine, query: &str, size: usize) -> Vec<Hit> {
    let mut req = SearchRequest::new(query);
    req.size = size;
    req.explain = true;
    engine.search(&req).expect("search answers").hits
}

fn feature(hit: &Hit, name: &str) -> Option<f32> {
    let explain = serde_json::to_value(hit.explain.as_ref().expect("explain asked")).unwrap();
    explain["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .map(|f| f["value"].as_f64().unwrap() as f32)
}

fn listing(hits: &[Hit]) -> String {
    hits.iter()
        .map(|h| format!("{} [{}] {}", h.title, h.brand, h.category))
        .collect::<Vec<_>>()
        .join("\n  ")
}

fn product(id: &str, title: &str, brand: &str, category: &str) -> Product {
    serde_json::from_value(json!({"id": id, "title": title, "brand": brand, "category": category}))
        .expect("a valid product")
}

/// The shared Taobao cosmetics catalog (latest snapshot of each product); `None`, with a
/// notice naming what is skipped, without `../shared/data`.
fn shared_cosmetics(skipped: &str) -> Option<Vec<Product>> {
    let csv =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/taobao_cosmetics/snapshots.csv");
    if !csv.is_file() {
        eprintln!("NOTICE: {} is missing; {skipped} skipped", csv.display());
        return None;
    }
    let report = read_catalog(&csv, Format::Taobao, &common::schema()).expect("reads");
    Some(report.accept(false).expect("valid").0)
}

fn engine_of(products: Vec<Product>) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    common::build_index(dir.path(), products, None);
    let engine = common::open_engine(dir.path(), None);
    (dir, engine)
}

#[test]
fn apple_phone_case_query_demotes_other_brands_and_phones() {
    let data = common::demo_index(None);
    let engine = common::open_engine(data.path(), None);
    let hits = search(&engine, "苹果手机壳", 20);
    let is_iphone_case = |h: &Hit| {
        let t = h.title.to_lowercase();
        h.category.ends_with("手机壳") && (t.contains("苹果") || t.contains("iphone"))
    };
    let cases = hits.iter().filter(|h| is_iphone_case(h)).count();
    assert!(cases >= 5, "the demo catalog has 5 iPhone cases");
    assert!(
        hits[..cases].iter().all(is_iphone_case),
        "iPhone cases first (case makers' brands included):\n  {}",
        listing(&hits)
    );
    let xiaomi_case = hits
        .iter()
        .find(|h| h.brand == "小米" && h.category.ends_with("手机壳"));
    let xiaomi_case = xiaomi_case.expect("the Xiaomi case is a candidate");
    assert_eq!(feature(xiaomi_case, "brand_mismatch"), Some(0.7));
    let iphone = hits
        .iter()
        .find(|h| h.brand == "Apple/苹果" && !h.category.ends_with("手机壳"));
    if let Some(phone) = iphone {
        assert!(feature(phone, "category_mismatch").unwrap() > 0.0);
        assert_eq!(feature(phone, "brand_mismatch"), Some(0.0));
    }
    // A case maker's iPhone case is not a brand mismatch: its title names the brand.
    let baseus = hits
        .iter()
        .find(|h| h.brand == "倍思")
        .expect("a 倍思 case");
    assert_eq!(feature(baseus, "brand_match"), Some(0.7));
    assert_eq!(feature(baseus, "brand_mismatch"), Some(0.0));
}

#[test]
fn brand_aliases_are_learned_from_titles_that_carry_both_spellings() {
    let mut products = vec![
        product("o1", "Colorkey珂拉琪 多效修护霜 50g", "珂拉琪", "美妆/面霜"),
        product("o2", "COLORKEY 珂拉琪 爽肤水 补水", "珂拉琪", "美妆/爽肤水"),
        product(
            "o3",
            "colorkey/珂拉琪 洁面乳 tmall 正品",
            "珂拉琪",
            "美妆/洁面",
        ),
        product("o4", "珂拉琪 新生塑颜 面霜 紧致", "珂拉琪", "美妆/面霜"),
        product("o5", "珂拉琪 水感透白 面霜 保湿", "珂拉琪", "美妆/面霜"),
        product("n1", "妮维雅 蓝罐 面霜 tmall", "妮维雅", "美妆/面霜"),
        product("n2", "妮维雅 润唇膏 tmall", "妮维雅", "美妆/唇膏"),
        product("z1", "自然堂 雪域 面霜 spf", "自然堂", "美妆/面霜"),
        product("z2", "自然堂 冰肌 面霜 spf", "自然堂", "美妆/面霜"),
        product("x1", "兰芝 睡眠 面霜 spf", "兰芝", "美妆/面霜"),
    ];
    // A placeholder brand is no brand: never an alias, never learned from.
    products.push(product("p1", "其他 面霜 无名", "other/其他", "美妆/面霜"));
    let (_d, engine) = engine_of(products);

    let analysis = serde_json::to_value(engine.analyze("colorkey 面霜").unwrap()).unwrap();
    let brand = &analysis["intents"]["brand"][0];
    assert_eq!(brand["value"], "珂拉琪", "{analysis}");
    assert_eq!(brand["source"], "titles", "{analysis}");
    assert_eq!(brand["names"], json!(["珂拉琪"]), "{analysis}");
    // `tmall` is in titles of two brands (and a generic word); `spf` in two as well.
    for generic in ["tmall 面霜", "spf 面霜", "其他 面霜"] {
        let a = serde_json::to_value(engine.analyze(generic).unwrap()).unwrap();
        assert_eq!(a["intents"]["brand"], json!([]), "{generic}: {a}");
    }
    let aliases = engine.brand_aliases();
    assert!(
        aliases.contains(&"colorkey\t珂拉琪\ttitles".to_string()),
        "{aliases:?}"
    );

    // Every 珂拉琪 面霜 first, also those whose titles never say `colorkey`.
    let hits = search(&engine, "colorkey 面霜", 10);
    let top: Vec<&str> = hits[..3].iter().map(|h| h.id.as_str()).collect();
    for id in ["o1", "o4", "o5"] {
        assert!(
            top.contains(&id),
            "{id} in the top 3:\n  {}",
            listing(&hits)
        );
    }
}

#[test]
fn the_alias_file_joins_the_catalogs_spelling_of_a_brand() {
    // The catalog spells the brand `SKII` and its titles carry no Latin name; the alias
    // file's `SK-II` entry (sk2, sk-ii, ...) joins it through the shared spelling `skii`.
    let (_d, engine) = engine_of(vec![
        product("s1", "护肤精华露 神仙水 230ml", "SKII", "美妆/精华"),
        product("s2", "前男友面膜 6片", "SKII", "美妆/面膜"),
        product("l1", "兰芝 精华水 神仙水 平替", "兰芝", "美妆/精华"),
        product("l2", "兰芝 睡眠面膜", "兰芝", "美妆/面膜"),
    ]);
    for (query, top) in [("sk2神仙水", "s1"), ("SK-II 面膜", "s2")] {
        let a = serde_json::to_value(engine.analyze(query).unwrap()).unwrap();
        assert_eq!(a["intents"]["brand"][0]["value"], "SKII", "{query}: {a}");
        assert_eq!(a["intents"]["brand"][0]["source"], "file", "{query}: {a}");
        let hits = search(&engine, query, 4);
        assert_eq!(hits[0].id, top, "{query}:\n  {}", listing(&hits));
        let other = hits.iter().find(|h| h.brand == "兰芝").unwrap();
        assert!(feature(other, "brand_mismatch").unwrap() > 0.0);
    }
}

#[test]
fn bigrams_find_what_jieba_words_split_differently() {
    // jieba cuts the query `洁面乳` whole but the title's `洁面` + `乳液` apart; the
    // bigram sub-field still matches `洁面`, and the title with both bigrams wins.
    let (_d, engine) = engine_of(vec![
        product("a", "氨基酸洁面乳 150ml", "", ""),
        product("b", "温和洁面 乳液 两件套", "", ""),
        product("c", "保湿乳液 200ml", "", ""),
    ]);
    let a = serde_json::to_value(engine.analyze("洁面乳").unwrap()).unwrap();
    assert_eq!(a["bigrams"], json!(["洁面", "面乳"]), "{a}");
    let hits = search(&engine, "洁面乳", 3);
    assert_eq!(hits[0].id, "a", "{}", listing(&hits));
    let explain = serde_json::to_value(hits[0].explain.as_ref().unwrap()).unwrap();
    let terms = explain["bm25_terms"]["terms"].as_array().unwrap();
    assert!(
        terms
            .iter()
            .any(|t| t["field"] == "title.bigram" && t["term"] == "面乳"),
        "explain names the bigram sub-field: {explain}"
    );
}

/// Cross-script brand queries on the shared Taobao cosmetics catalog (22 brand shops whose
/// titles often carry a Latin name beside the Chinese one): the brand is understood, with
/// its source, and fills the top 10.
#[test]
fn shared_cosmetics_latin_brand_queries_find_the_brand() {
    let Some(products) = shared_cosmetics("shared-catalog golden queries") else {
        return;
    };
    let (_d, engine) = engine_of(products);
    for (query, brand) in [
        ("olay 面霜", "玉兰油"),
        ("sk2神仙水", "SKII"),
        ("SK-II 面膜", "SKII"),
        ("clinique 三部曲", "倩碧"),
        ("innisfree 火山泥", "悦诗风吟"),
        ("shiseido 洗面奶", "资生堂"),
        ("herborist 面膜", "佰草集"),
    ] {
        let a = serde_json::to_value(engine.analyze(query).unwrap()).unwrap();
        assert_eq!(a["intents"]["brand"][0]["value"], brand, "{query}: {a}");
        // The brand's products first: no other brand ranks above one of them.
        let hits = search(&engine, query, 10);
        let last_of_brand = hits.iter().rposition(|h| h.brand == brand);
        let first_other = hits.iter().position(|h| h.brand != brand);
        assert!(
            last_of_brand.is_some() && first_other.is_none_or(|o| o > last_of_brand.unwrap()),
            "{query}: {brand} first:\n  {}",
            listing(&hits)
        );
    }
}

#[test]
fn a_query_for_something_not_sold_matches_nothing_and_says_so() {
    let data = common::demo_index(None);
    let engine = common::open_engine(data.path(), None);
    for query in ["不存在的东西xyz", "量子纠缠发射器", "asdfgh"] {
        let mut req = SearchRequest::new(query);
        req.size = 5;
        let res = engine.search(&req).unwrap();
        assert!(res.no_match, "{query}: {}", listing(&res.hits));
        assert_eq!(
            (res.total, res.pageable, res.hits.len()),
            (0, 0, 0),
            "{query}"
        );
        // Without a model the candidates are BM25's only (a stray shared word, if any).
        assert!(
            res.related.len() <= 5,
            "{query}: at most a page of related products"
        );
    }
    let res = engine
        .search(&SearchRequest::new("不存在的东西xyz"))
        .unwrap();
    assert!(
        !res.related.is_empty(),
        "`的` or `东西` is somewhere in the demo catalog"
    );
    let res = engine.search(&SearchRequest::new("口红")).unwrap();
    assert!(!res.no_match && res.related.is_empty() && res.total >= res.hits.len());
    assert!(
        res.hits.iter().all(|h| h.category.ends_with("口红")),
        "{}",
        listing(&res.hits)
    );
    let metrics = engine.metrics.render();
    assert!(metrics.contains("shoprank_searches_total 5"), "{metrics}");
    assert!(
        metrics.contains("shoprank_searches_no_match_total 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("shoprank_zero_result_rate 0.8"),
        "{metrics}"
    );
}

#[test]
fn total_counts_every_matching_product_not_only_the_ranked_candidates() {
    let mut products: Vec<Product> = (0..300)
        .map(|i| product(&format!("c{i}"), &format!("硅胶手机壳 款式{i}"), "", ""))
        .collect();
    products.push(product("x", "不锈钢保温杯 500ml", "", ""));
    let (_d, engine) = engine_of(products);
    let mut req = SearchRequest::new("手机壳");
    req.size = 10;
    let res = engine.search(&req).unwrap();
    assert_eq!(res.total, 300, "every product holding the query's terms");
    assert_eq!(
        res.pageable, 200,
        "the default profile ranks 200 BM25 candidates"
    );
    let mut req = SearchRequest::new("手机壳");
    req.filters.brand = Some("无此品牌".into());
    let res = engine.search(&req).unwrap();
    assert_eq!(
        (res.total, res.no_match),
        (0, true),
        "filters apply to the count"
    );
}

#[test]
fn pinyin_queries_search_the_catalogs_words() {
    let data = common::demo_index(None);
    let engine = common::open_engine(data.path(), None);
    let res = engine
        .search(&SearchRequest::new("lan kou mian shuang"))
        .unwrap();
    let conversion = res.pinyin.as_ref().expect("the conversion is shown");
    assert_eq!(conversion.to, "兰蔻 面霜");
    assert!(res.hits[0].title.contains("兰蔻") && res.hits[0].title.contains("面霜"));
    let res = engine.search(&SearchRequest::new("kouhong")).unwrap();
    assert!(
        res.hits[..3].iter().all(|h| h.category.ends_with("口红")),
        "kouhong:\n  {}",
        listing(&res.hits)
    );
    let a = serde_json::to_value(engine.analyze("lankou面霜").unwrap()).unwrap();
    assert_eq!(a["pinyin"]["from"], "lankou", "{a}");
    assert_eq!(a["search_text"], "兰蔻面霜", "{a}");
    // Latin words of the catalog and brand aliases stay as typed.
    for query in ["iphone 手机壳", "lancome 口红"] {
        let a = serde_json::to_value(engine.analyze(query).unwrap()).unwrap();
        assert!(a.get("pinyin").is_none(), "{query}: {a}");
    }
}

/// Every shop of the shared cosmetics catalog typed as pinyin (`yushifengyin` for
/// 悦诗风吟): its products come first.
#[test]
fn shared_cosmetics_brands_typed_in_pinyin_find_the_brand() {
    let Some(products) = shared_cosmetics("pinyin golden queries") else {
        return;
    };
    let mut brands: Vec<String> = products.iter().map(|p| p.brand.clone()).collect();
    brands.sort();
    brands.dedup();
    let (_d, engine) = engine_of(products);
    let mut found = 0;
    for brand in brands.iter().filter(|b| !b.is_ascii()) {
        let (query, _) = shoprank::analysis::pinyin_keys(brand);
        let mut req = SearchRequest::new(query.clone());
        req.size = 5;
        let res = engine.search(&req).unwrap();
        if res.hits.len() == 5 && res.hits.iter().all(|h| &h.brand == brand) {
            found += 1;
        } else {
            eprintln!(
                "{query} ({brand}): {:?}\n  {}",
                res.pinyin,
                listing(&res.hits)
            );
        }
    }
    let chinese = brands.iter().filter(|b| !b.is_ascii()).count();
    assert!(
        found + 1 >= chinese,
        "{found} of {chinese} brands found by pinyin"
    );
}

fn suggestions(engine: &Engine, prefix: &str, user: Option<&str>) -> Vec<String> {
    (engine.suggest(prefix, 8, user).unwrap().into_iter())
        .map(|s| s.text)
        .collect()
}

#[test]
fn suggestions_are_frequent_clean_answerable_and_each_shoppers_own() {
    use shoprank::behavior::{Event, EventType};
    let data = common::demo_index(None);
    // The query log: a frequent query, a one-off, an adult query, a query for nothing sold.
    let log = data.path().join("suggest/queries.txt");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let lines = ["口红 哑光"; 3]
        .into_iter()
        .chain(["口红 试色 一次"])
        .chain(["口红 成人用品"; 5])
        .chain(["口琴 专业"; 4])
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&log, lines).unwrap();
    let store = tempfile::tempdir().unwrap();
    let engine = common::open_engine_with_events(data.path(), &store.path().join("e.redb"));

    let everyone = suggestions(&engine, "口", None);
    assert!(everyone.contains(&"口红 哑光".to_string()), "{everyone:?}");
    assert!(
        !everyone.contains(&"口红 试色 一次".to_string()),
        "seen once: {everyone:?}"
    );
    assert!(
        !everyone.iter().any(|s| s.contains("成人用品")),
        "blocked: {everyone:?}"
    );
    assert!(
        !everyone.contains(&"口琴 专业".to_string()),
        "no results: {everyone:?}"
    );

    // A shopper who bought 兰蔻 twice and searched for a 兰蔻 serum.
    let now = shoprank::util::now();
    let mut events = Vec::new();
    for id in ["demo-065", "demo-064"] {
        events.push(Event {
            user_id: "alice".into(),
            kind: EventType::Purchase,
            product_id: Some(id.into()),
            query: None,
            ts: now - 60,
        });
    }
    events.push(Event {
        user_id: "alice".into(),
        kind: EventType::Search,
        product_id: None,
        query: Some("兰蔻小黑瓶 精华".into()),
        ts: now - 30,
    });
    engine.record_events(events).unwrap();
    let alice = engine.suggest("兰", 8, Some("alice")).unwrap();
    assert_eq!(alice[0].text, "兰蔻小黑瓶 精华", "{alice:?}");
    assert_eq!(alice[0].source, Some("history"));
    let bob = suggestions(&engine, "兰", Some("bob"));
    assert!(
        !bob.contains(&"兰蔻小黑瓶 精华".to_string()),
        "not Alice's history: {bob:?}"
    );
    // Her taste lifts 兰蔻 above the other brands that start the same way.
    let alice_taste = engine.suggest("l", 8, Some("alice")).unwrap();
    let anyone = suggestions(&engine, "l", None);
    let rank = |list: &[String]| list.iter().position(|t| t == "兰蔻");
    let alice_list: Vec<String> = alice_taste.iter().map(|s| s.text.clone()).collect();
    assert!(
        rank(&alice_list).unwrap_or(99) <= rank(&anyone).unwrap_or(99),
        "{alice_list:?} vs {anyone:?}"
    );
}

/// A query whose shoppers click (almost) only one brand's products names that brand, with
/// `source: clicks`, and ranks it first from then on.
#[test]
fn a_brand_is_learned_from_the_clicks_after_a_query() {
    use shoprank::behavior::{Event, EventType};
    let data = common::demo_index(None);
    let store = tempfile::tempdir().unwrap();
    let engine = common::open_engine_with_events(data.path(), &store.path().join("e.redb"));
    let query = "zespri 金果";
    let before = serde_json::to_value(engine.analyze(query).unwrap()).unwrap();
    assert_eq!(before["intents"]["brand"], json!([]), "{before}");
    let kiwi = engine
        .search(&SearchRequest::new("奇异果"))
        .unwrap()
        .hits
        .into_iter()
        .find(|h| h.brand == "佳沛")
        .expect("the demo catalog sells 佳沛 kiwis");
    let now = shoprank::util::now();
    let mut events = Vec::new();
    for user in ["u1", "u2", "u3"] {
        let event = |kind, product: Option<&str>, query: Option<&str>, ts| Event {
            user_id: user.into(),
            kind,
            product_id: product.map(str::to_string),
            query: query.map(str::to_string),
            ts,
        };
        events.push(event(EventType::Search, None, Some(query), now - 100));
        events.push(event(EventType::Click, Some(&kiwi.id), None, now - 90));
        events.push(event(EventType::Click, Some(&kiwi.id), None, now - 80));
    }
    engine.record_events(events).unwrap();
    let after = serde_json::to_value(engine.analyze(query).unwrap()).unwrap();
    let brand = &after["intents"]["brand"][0];
    assert_eq!(brand["value"], "佳沛", "{after}");
    assert_eq!(brand["source"], "clicks", "{after}");
    let hits = search(&engine, query, 3);
    assert_eq!(hits[0].brand, "佳沛", "{}", listing(&hits));
}
