//! The HTTP API through actix's test service, on the demo catalog indexed without a model.
//!
//! Size: ~630 lines, one suite over one demo index and its helpers.

use crate::common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::test;
use serde_json::Value;
use tempfile::TempDir;

use shoprank::catalog::Product;
use shoprank::server::{app, AppState};
use shoprank::Engine;

/// A data dir with the demo catalog, an engine over it and the catalog by id.
struct Ctx {
    data: TempDir,
    engine: Arc<Engine>,
    catalog: HashMap<String, Product>,
    max_in_flight: usize,
}

struct Response {
    status: StatusCode,
    content_type: String,
    headers: header::HeaderMap,
    body: Vec<u8>,
}

impl Response {
    fn json(&self) -> Value {
        assert!(
            self.content_type.starts_with("application/json"),
            "content type `{}` (status {}): {}",
            self.content_type,
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

impl Ctx {
    fn new() -> Ctx {
        let data = common::demo_index(None);
        let engine = Arc::new(common::open_engine(data.path(), None));
        let catalog = common::demo_products()
            .into_iter()
            .map(|p| (p.id.clone(), p))
            .collect();
        Ctx {
            data,
            engine,
            catalog,
            max_in_flight: 64,
        }
    }

    async fn get(&self, uri: &str) -> Response {
        let service =
            test::init_service(app(AppState::new(self.engine.clone(), self.max_in_flight))).await;
        let res =
            test::call_service(&service, test::TestRequest::get().uri(uri).to_request()).await;
        let status = res.status();
        let headers = res.headers().clone();
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = test::read_body(res).await.to_vec();
        Response {
            status,
            content_type,
            headers,
            body,
        }
    }

    /// `GET /search` with the parameters percent-encoded.
    async fn search(&self, params: &[(&str, &str)]) -> Response {
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", common::urlencode(v)))
            .collect();
        self.get(&format!("/search?{}", query.join("&"))).await
    }

    /// A search that must succeed, with every result on one page.
    async fn search_all(&self, params: &[(&str, &str)]) -> Value {
        let mut params = params.to_vec();
        params.push(("size", "100"));
        let res = self.search(&params).await;
        assert_eq!(res.status, StatusCode::OK, "{params:?}: {}", res.json());
        let body = res.json();
        let total = body["total"].as_u64().unwrap() as usize;
        assert!(
            total <= 100,
            "{params:?}: {total} results do not fit one page"
        );
        assert_eq!(hits(&body).len(), total);
        body
    }

    fn product(&self, id: &str) -> &Product {
        self.catalog
            .get(id)
            .unwrap_or_else(|| panic!("hit `{id}` is not in the catalog"))
    }
}

fn hits(body: &Value) -> &Vec<Value> {
    body["hits"].as_array().expect("hits is an array")
}

fn ids(body: &Value) -> Vec<String> {
    hits(body)
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect()
}

/// Facet counts as the server should compute them over `products`: brands, and every
/// category path with its ancestors, most frequent first, at most 20 each.
fn expected_facets(products: &[&Product]) -> Value {
    let mut brands: BTreeMap<String, usize> = BTreeMap::new();
    let mut categories: BTreeMap<String, usize> = BTreeMap::new();
    for p in products {
        if !p.brand.is_empty() {
            *brands.entry(p.brand.clone()).or_default() += 1;
        }
        let segments: Vec<&str> = p.category.split('/').collect();
        for n in 1..=segments.len() {
            *categories.entry(segments[..n].join("/")).or_default() += 1;
        }
    }
    let list = |counts: BTreeMap<String, usize>| {
        let mut v: Vec<(String, usize)> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(20);
        v.into_iter()
            .map(|(value, count)| serde_json::json!({"value": value, "count": count}))
            .collect::<Vec<_>>()
    };
    serde_json::json!({"brand": list(brands), "category": list(categories)})
}

fn assert_facets_match(ctx: &Ctx, body: &Value) {
    let products: Vec<&Product> = ids(body).iter().map(|id| ctx.product(id)).collect();
    assert_eq!(
        body["facets"],
        expected_facets(&products),
        "{}",
        body["query"]
    );
}

/// Checks a filter against the catalog: the filtered results are exactly the unfiltered
/// results whose product passes `keep`, the filter removes something, and facets count
/// the filtered set.
async fn check_filter(
    ctx: &Ctx,
    q: &str,
    filter: &[(&str, &str)],
    keep: impl Fn(&Product) -> bool,
) {
    let all = ctx.search_all(&[("q", q)]).await;
    let mut params = vec![("q", q)];
    params.extend_from_slice(filter);
    let filtered = ctx.search_all(&params).await;
    let got: BTreeSet<String> = ids(&filtered).into_iter().collect();
    for id in &got {
        assert!(
            keep(ctx.product(id)),
            "{filter:?}: `{id}` should be filtered out"
        );
    }
    let want: BTreeSet<String> = ids(&all)
        .into_iter()
        .filter(|id| keep(ctx.product(id)))
        .collect();
    assert_eq!(got, want, "{filter:?} on `{q}`");
    assert!(!got.is_empty(), "{filter:?} on `{q}` left nothing to check");
    assert!(
        got.len() < ids(&all).len(),
        "{filter:?} on `{q}` removed nothing"
    );
    assert_facets_match(ctx, &filtered);
}

#[actix_web::test]
async fn search_returns_the_documented_shape() {
    let ctx = Ctx::new();
    let res = ctx.search(&[("q", "口红")]).await;
    assert_eq!(res.status, StatusCode::OK);
    let body = res.json();
    assert_eq!(body["query"], "口红");
    assert_eq!(body["profile"], "default");
    assert_eq!(body["semantic"], false);
    let total = body["total"].as_u64().unwrap();
    // The six lipsticks of the catalog, by title and category.
    assert_eq!(total, 6, "{body}");
    let hits = hits(&body);
    assert_eq!(hits.len(), 6);
    let mut last = f64::INFINITY;
    for h in hits {
        let id = h["id"].as_str().unwrap();
        let p = ctx.product(id);
        assert_eq!(h["title"], p.title.as_str());
        assert_eq!(h["brand"], p.brand.as_str());
        assert_eq!(h["category"], p.category.as_str());
        assert_eq!(h["price"].as_f64(), p.price);
        assert_eq!(p.category, "美妆/彩妆/口红");
        let score = h["score"].as_f64().unwrap();
        assert!(score <= last + 1e-6, "hits are sorted by score");
        last = score;
        assert!(h.get("explain").is_none(), "no explain unless asked");
    }
    for list in ["brand", "category"] {
        let facets = body["facets"][list].as_array().unwrap();
        assert!(!facets.is_empty());
        for f in facets {
            assert!(f["value"].is_string() && f["count"].as_u64().unwrap() >= 1);
        }
    }
    assert_facets_match(&ctx, &body);
    for stage in ["analyze", "encode", "retrieve", "rank", "total"] {
        let ms = body["timings_ms"][stage].as_f64();
        assert!(ms.is_some_and(|ms| ms >= 0.0), "timings_ms.{stage}: {body}");
    }
}

#[actix_web::test]
async fn explain_contributions_add_up_to_the_score() {
    let ctx = Ctx::new();
    let body = ctx
        .search_all(&[("q", "蓝牙耳机"), ("explain", "true")])
        .await;
    assert!(hits(&body).len() >= 5);
    for h in hits(&body) {
        let e = &h["explain"];
        let features = e["features"].as_array().expect("explain.features");
        let mut sum = 0.0;
        let mut names = Vec::new();
        for f in features {
            let (value, weight, contribution) = (
                f["value"].as_f64().unwrap(),
                f["weight"].as_f64().unwrap(),
                f["contribution"].as_f64().unwrap(),
            );
            assert!((weight * value - contribution).abs() < 1e-5, "{f}");
            sum += contribution;
            names.push(f["name"].as_str().unwrap().to_string());
        }
        // No semantic feature without a model; `蓝牙耳机` names a category, so its match
        // (and mismatch) counts.
        assert_eq!(
            names,
            [
                "bm25",
                "popularity",
                "rating",
                "category_match",
                "category_mismatch"
            ],
            "{h}"
        );
        let score = h["score"].as_f64().unwrap();
        assert!((sum - score).abs() < 1e-4, "{}: {sum} != {score}", h["id"]);
        assert!(e["bm25_raw"].as_f64().unwrap() > 0.0);
        assert_eq!(e["matched_by"], serde_json::json!(["bm25"]));
    }
}

#[actix_web::test]
async fn brand_filter_returns_only_that_brand() {
    let ctx = Ctx::new();
    check_filter(&ctx, "口红", &[("brand", "完美日记")], |p| {
        p.brand == "完美日记"
    })
    .await;
    // Brands compare in normalized spelling.
    check_filter(&ctx, "手机", &[("brand", "APPLE/苹果")], |p| {
        p.brand == "Apple/苹果"
    })
    .await;
}

#[actix_web::test]
async fn category_filter_matches_whole_path_segments() {
    let ctx = Ctx::new();
    check_filter(&ctx, "苹果", &[("category", "生鲜")], |p| {
        p.category.starts_with("生鲜/")
    })
    .await;
    check_filter(
        &ctx,
        "手机",
        &[("category", "数码/手机配件/手机壳")],
        |p| p.category == "数码/手机配件/手机壳",
    )
    .await;
    // `生鲜/水` is not a segment prefix of `生鲜/水果/...`.
    let body = ctx
        .search_all(&[("q", "苹果"), ("category", "生鲜/水")])
        .await;
    assert_eq!(body["total"], 0, "{body}");
}

#[actix_web::test]
async fn price_filters_are_inclusive_ranges() {
    let ctx = Ctx::new();
    check_filter(
        &ctx,
        "手机",
        &[("price_min", "1000"), ("price_max", "5000")],
        |p| p.price.is_some_and(|x| (1000.0..=5000.0).contains(&x)),
    )
    .await;
    check_filter(&ctx, "手机", &[("price_min", "5999")], |p| {
        p.price.is_some_and(|x| x >= 5999.0)
    })
    .await;
    check_filter(&ctx, "手机壳", &[("price_max", "29.9")], |p| {
        p.price.is_some_and(|x| x <= 29.9)
    })
    .await;
    // Both bounds on one price: the two laptops at exactly 4999.
    let body = ctx
        .search_all(&[
            ("q", "笔记本电脑"),
            ("price_min", "4999"),
            ("price_max", "4999"),
        ])
        .await;
    let mut got = ids(&body);
    got.sort();
    assert_eq!(got, ["demo-029", "demo-031"]);
}

#[actix_web::test]
async fn in_stock_filter_drops_sold_out_products() {
    let ctx = Ctx::new();
    check_filter(&ctx, "手机壳", &[("in_stock", "true")], |p| p.in_stock).await;
    // `false` means "no filter", not "only sold-out products".
    let all = ctx.search_all(&[("q", "手机壳")]).await;
    let off = ctx
        .search_all(&[("q", "手机壳"), ("in_stock", "false")])
        .await;
    assert_eq!(ids(&all), ids(&off));
}

#[actix_web::test]
async fn pages_split_the_same_ranking() {
    let ctx = Ctx::new();
    let p1 = ctx
        .search(&[("q", "手机"), ("size", "5"), ("page", "1")])
        .await
        .json();
    let p2 = ctx
        .search(&[("q", "手机"), ("size", "5"), ("page", "2")])
        .await
        .json();
    let ten = ctx.search(&[("q", "手机"), ("size", "10")]).await.json();
    assert!(ten["total"].as_u64().unwrap() > 10);
    assert_eq!(p1["total"], ten["total"]);
    assert_eq!(p2["total"], ten["total"]);
    assert_eq!(p2["page"], 2);
    let (a, b) = (ids(&p1), ids(&p2));
    assert_eq!((a.len(), b.len()), (5, 5));
    assert!(a.iter().all(|id| !b.contains(id)), "{a:?} / {b:?}");
    assert_eq!([a, b].concat(), ids(&ten));
    // Facets describe all results, not the page.
    assert_eq!(p1["facets"], p2["facets"]);
    let past_the_end = ctx
        .search(&[("q", "手机"), ("size", "5"), ("page", "50")])
        .await;
    assert_eq!(past_the_end.status, StatusCode::OK);
    let body = past_the_end.json();
    assert!(hits(&body).is_empty());
    assert_eq!(body["total"], ten["total"]);
}

#[actix_web::test]
async fn the_bm25_profile_ranks_by_bm25_alone() {
    let ctx = Ctx::new();
    let body = ctx
        .search_all(&[("q", "洗衣液"), ("profile", "bm25"), ("explain", "1")])
        .await;
    assert_eq!(body["profile"], "bm25");
    let hits = hits(&body);
    assert!(hits.len() >= 5);
    assert!(
        (hits[0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-5,
        "best BM25 is 1"
    );
    for h in hits {
        let features = h["explain"]["features"].as_array().unwrap();
        let bm25 = features.iter().find(|f| f["name"] == "bm25").unwrap();
        assert_eq!(bm25["weight"], 1.0);
        let score = h["score"].as_f64().unwrap();
        assert!((bm25["value"].as_f64().unwrap() - score).abs() < 1e-5);
        for f in features.iter().filter(|f| f["name"] != "bm25") {
            assert_eq!(f["weight"], 0.0, "{f}");
        }
    }
}

#[actix_web::test]
async fn an_unknown_profile_is_a_400_naming_the_known_ones() {
    let ctx = Ctx::new();
    let res = ctx.search(&[("q", "口红"), ("profile", "nope")]).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    let body = res.json();
    assert_eq!(body["code"], "unknown_profile");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("nope") && message.contains("bm25") && message.contains("default"),
        "{message}"
    );
}

/// Every malformed search answers 4xx with a JSON `{code, message}`.
#[actix_web::test]
async fn malformed_searches_get_json_errors_with_a_code() {
    let ctx = Ctx::new();
    let long = "a".repeat(10 * 1024);
    let cases: Vec<(String, &str, &str)> = vec![
        ("/search?q=".into(), "invalid_query", "empty"),
        ("/search?q=%20%20%20".into(), "invalid_query", "empty"),
        ("/search".into(), "invalid_parameter", "`q`"),
        ("/search?size=5".into(), "invalid_parameter", "`q`"),
        (format!("/search?q={long}"), "invalid_query", "256"),
        ("/search?q=x&page=abc".into(), "invalid_parameter", "`page`"),
        ("/search?q=x&page=0".into(), "invalid_parameter", "`page`"),
        ("/search?q=x&page=-1".into(), "invalid_parameter", "`page`"),
        ("/search?q=x&size=0".into(), "invalid_parameter", "`size`"),
        (
            "/search?q=x&size=1000".into(),
            "invalid_parameter",
            "`size`",
        ),
        (
            "/search?q=x&price_min=5&price_max=1".into(),
            "invalid_parameter",
            "`price_min`",
        ),
        (
            "/search?q=x&price_min=-1".into(),
            "invalid_parameter",
            "`price_min`",
        ),
        (
            "/search?q=x&price_max=cheap".into(),
            "invalid_parameter",
            "`price_max`",
        ),
        (
            "/search?q=x&price_max=NaN".into(),
            "invalid_parameter",
            "`price_max`",
        ),
        (
            "/search?q=x&in_stock=maybe".into(),
            "invalid_parameter",
            "`in_stock`",
        ),
        (
            "/search?q=x&explain=yes".into(),
            "invalid_parameter",
            "`explain`",
        ),
        (
            "/search?q=x&prize_max=3".into(),
            "invalid_parameter",
            "prize_max",
        ),
    ];
    for (uri, code, words) in cases {
        let res = ctx.get(&uri).await;
        let shown = &uri[..uri.len().min(60)];
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{shown}");
        let body = res.json();
        assert_eq!(body["code"], code, "{shown}: {body}");
        let message = body["message"].as_str().expect("message is a string");
        assert!(
            message.contains(words),
            "{shown}: `{words}` not in `{message}`"
        );
        assert_eq!(body.as_object().unwrap().len(), 2, "{shown}: {body}");
    }
}

/// `%FF%FE` is not UTF-8 once percent-decoded; the query must be refused, not searched as
/// two U+FFFD replacement characters (actix's `web::Query` decodes lossily).
#[actix_web::test]
async fn a_query_that_is_not_utf8_is_refused() {
    let ctx = Ctx::new();
    for uri in [
        "/search?q=%FF%FE",
        "/search?q=%E5%8F",
        "/search?q=ok&brand=%C0",
    ] {
        let res = ctx.get(uri).await;
        assert!(res.status.is_client_error(), "{uri}: {}", res.status);
        let body = res.json();
        let code = body["code"].as_str().unwrap();
        assert!(
            code == "invalid_query" || code == "invalid_parameter",
            "{uri}: {body}"
        );
    }
}

#[actix_web::test]
async fn products_are_served_by_id() {
    let ctx = Ctx::new();
    let res = ctx.get("/products/demo-001").await;
    assert_eq!(res.status, StatusCode::OK);
    let body = res.json();
    assert_eq!(body, serde_json::to_value(ctx.product("demo-001")).unwrap());
    assert_eq!(body["title"], "苹果iPhone15手机壳 透明防摔硅胶保护套");
    assert_eq!(body["attributes"]["适用机型"], "iPhone 15");

    for uri in ["/products/demo-999", "/products/%E8%8B%B9%E6%9E%9C"] {
        let res = ctx.get(uri).await;
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{uri}");
        let body = res.json();
        assert_eq!(body["code"], "product_not_found");
    }
    let body = ctx.get("/products/demo-999").await.json();
    assert!(body["message"].as_str().unwrap().contains("demo-999"));
}

#[actix_web::test]
async fn health_says_semantic_ranking_is_off_and_why() {
    let ctx = Ctx::new();
    let res = ctx.get("/health").await;
    assert_eq!(res.status, StatusCode::OK);
    let body = res.json();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["semantic"], false);
    assert!(body["model"].is_null());
    let note = body["note"].as_str().expect("a note when semantic is off");
    assert!(!note.trim().is_empty());
    assert_eq!(body["products"], 120);
    let live = shoprank::index::current_name(ctx.data.path())
        .unwrap()
        .unwrap();
    assert_eq!(body["generation"], live);
    let profiles: Vec<&str> = body["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        profiles.contains(&"default") && profiles.contains(&"bm25"),
        "{profiles:?}"
    );
}

#[actix_web::test]
async fn metrics_are_prometheus_text() {
    let ctx = Ctx::new();
    assert_eq!(ctx.search(&[("q", "口红")]).await.status, StatusCode::OK);
    assert_eq!(
        ctx.search(&[("q", "")]).await.status,
        StatusCode::BAD_REQUEST
    );
    let res = ctx.get("/metrics").await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(
        res.content_type.starts_with("text/plain"),
        "{}",
        res.content_type
    );
    let text = String::from_utf8(res.body).unwrap();
    let mut samples: HashMap<String, f64> = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample line: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in: {line}"));
        samples.insert(name.to_string(), value);
    }
    let sample = |name: &str| {
        *samples
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
    };
    assert!(text.contains("# TYPE shoprank_search_stage_seconds histogram"));
    assert!(sample("shoprank_search_stage_seconds_count{stage=\"total\"}") >= 1.0);
    assert!(sample("shoprank_search_stage_seconds_bucket{stage=\"retrieve\",le=\"+Inf\"}") >= 1.0);
    assert_eq!(
        sample("shoprank_requests_total{route=\"/search\",status=\"200\"}"),
        1.0
    );
    assert_eq!(
        sample("shoprank_requests_total{route=\"/search\",status=\"400\"}"),
        1.0
    );
    assert_eq!(sample("shoprank_errors_total{code=\"invalid_query\"}"), 1.0);
}

#[actix_web::test]
async fn unknown_routes_get_a_json_404() {
    let ctx = Ctx::new();
    let res = ctx.get("/nope?q=1").await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    let body = res.json();
    assert_eq!(body["code"], "not_found");
    assert!(body["message"].as_str().unwrap().contains("/nope"));
}

#[actix_web::test]
async fn a_full_in_flight_limit_answers_429_with_retry_after() {
    let mut ctx = Ctx::new();
    ctx.max_in_flight = 0;
    let res = ctx.search(&[("q", "口红")]).await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        res.headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(res.json()["code"], "overloaded");
}
