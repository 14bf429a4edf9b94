//! Catalog ingest: bad records are reported with their line and field, a catalog with bad
//! records never replaces the live index unless told to skip them, and every format adapter
//! maps its columns to product fields.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use shoprank::catalog::{self, Format, IngestReport, RecordError};
use shoprank::index;
use shoprank::{Error, SearchRequest};

/// The bad records planted in `fixtures/bad_catalog.jsonl`: (line, field, words of the reason).
/// Line 10 is blank (skipped, but counted); lines 1, 3, 11 and 12 are valid.
const PLANTED: &[(usize, &str, &str)] = &[
    (2, "-", "malformed JSON"),
    (4, "title", "missing"),
    (5, "price", "negative"),
    (6, "colour", "unknown field"),
    (7, "rating", "0..=5"),
    (8, "id", "duplicate id, first seen on line 1"),
    (9, "-", "expected a JSON object, got an array"),
];
const VALID_IDS: &[&str] = &["bad-001", "bad-003", "bad-011", "bad-012"];

fn read(path: &Path, format: Format) -> IngestReport {
    catalog::read_catalog(path, format, &common::schema()).expect("catalog file is readable")
}

fn bad_report() -> IngestReport {
    read(&common::fixture("bad_catalog.jsonl"), Format::Jsonl)
}

fn lines_and_fields(errors: &[RecordError]) -> Vec<(usize, &str)> {
    errors.iter().map(|e| (e.line, e.field.as_str())).collect()
}

fn ids(products: &[catalog::Product]) -> Vec<&str> {
    products.iter().map(|p| p.id.as_str()).collect()
}

#[test]
fn bad_records_are_reported_with_line_and_field() {
    let report = bad_report();
    let expected: Vec<(usize, &str)> = PLANTED.iter().map(|&(l, f, _)| (l, f)).collect();
    assert_eq!(lines_and_fields(&report.errors), expected);
    for (e, &(line, _, words)) in report.errors.iter().zip(PLANTED) {
        assert!(
            e.reason.contains(words),
            "line {line}: `{}` should mention `{words}`",
            e.reason
        );
        assert!(e.to_string().starts_with(&format!("line {line}")), "{e}");
    }
    // The id is reported when the line could be read as an object.
    let id_of = |line: usize| {
        report
            .errors
            .iter()
            .find(|e| e.line == line)
            .and_then(|e| e.id.clone())
    };
    assert_eq!(id_of(2), None);
    assert_eq!(id_of(5).as_deref(), Some("bad-005"));
    assert_eq!(id_of(8).as_deref(), Some("bad-001"));
    assert_eq!(id_of(9), None);

    assert_eq!(ids(&report.products), VALID_IDS);
    // The first bad-001 is the one kept, with its own fields.
    let first = &report.products[0];
    assert_eq!((first.brand.as_str(), first.price), ("自然堂", Some(139.0)));
    assert!(!report.products[3].in_stock);
}

#[test]
fn accept_without_skip_fails_naming_the_first_bad_line() {
    let report = bad_report();
    let path = report.path.clone();
    let err = report.accept(false).unwrap_err();
    assert_eq!(err.code(), "bad_catalog");
    match &err {
        Error::BadCatalog {
            path: p,
            count,
            first,
        } => {
            assert_eq!(p, &path);
            assert_eq!(*count, PLANTED.len());
            assert!(first.starts_with("line 2, field `-`"), "{first}");
        }
        other => panic!("expected BadCatalog, got {other:?}"),
    }
    let message = err.to_string();
    for words in [
        "7 bad record(s)",
        "bad_catalog.jsonl",
        "line 2",
        "--skip-invalid",
    ] {
        assert!(message.contains(words), "`{words}` missing from: {message}");
    }
}

#[test]
fn accept_with_skip_returns_the_valid_records_and_the_errors() {
    let (products, errors) = bad_report().accept(true).unwrap();
    assert_eq!(ids(&products), VALID_IDS);
    assert_eq!(errors.len(), PLANTED.len());
    // A clean catalog is accepted either way.
    let clean = read(&common::fixture("demo_catalog.jsonl"), Format::Jsonl);
    assert_eq!(clean.accept(false).unwrap().0.len(), 120);
}

#[test]
fn invalid_utf8_is_reported_on_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gbk.jsonl");
    let mut bytes = b"{\"id\": \"u-1\", \"title\": \"\xe5\x8f\xa3\xe7\xba\xa2\"}\n".to_vec();
    // Line 2: a title in GBK (口红), not UTF-8.
    bytes.extend_from_slice(b"{\"id\": \"u-2\", \"title\": \"\xbf\xda\xba\xec\"}\n");
    bytes.extend_from_slice(b"{\"id\": \"u-3\", \"title\": \"ok\"}\n");
    std::fs::write(&path, bytes).unwrap();
    let report = read(&path, Format::Jsonl);
    assert_eq!(lines_and_fields(&report.errors), vec![(2, "-")]);
    assert!(
        report.errors[0].reason.contains("UTF-8"),
        "{:?}",
        report.errors
    );
    assert_eq!(ids(&report.products), vec!["u-1", "u-3"]);
    assert_eq!(report.products[0].title, "口红");
}

#[test]
fn csv_with_a_header_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("products.csv");
    // A byte-order mark as spreadsheet exports write it, a quoted comma, `>` separators,
    // `k=v;k=v` attributes, an empty cell, a bad price and a row with an extra column.
    let text = "\u{feff}id,title,brand,category,price,sales,rating,in_stock,attributes\n\
        c-1,\"得力中性笔 0.5mm, 黑色 12支装\",得力,文具/书写工具/中性笔,9.9,88000,4.8,true,笔尖=0.5mm;颜色=黑色\n\
        c-2,自然堂冰肌水光面霜 50g,自然堂,美妆 > 面部护理 > 面霜,139,,4.7,0,\n\
        c-3,完美日记小细跟口红,完美日记,美妆/彩妆/口红,便宜,10,4.5,true,\n\
        c-4,多一列的行,晨光,文具,1,2,3,true,,多余\n";
    std::fs::write(&path, text).unwrap();
    assert_eq!(Format::from_path(&path).unwrap(), Format::Csv);
    let report = read(&path, Format::Csv);
    assert_eq!(
        lines_and_fields(&report.errors),
        vec![(4, "price"), (5, "-")]
    );
    assert!(
        report.errors[0].reason.contains("便宜"),
        "{:?}",
        report.errors
    );
    assert!(
        report.errors[1]
            .reason
            .contains("expected 9 columns, found 10"),
        "{:?}",
        report.errors
    );
    assert_eq!(ids(&report.products), vec!["c-1", "c-2"]);
    let (c1, c2) = (&report.products[0], &report.products[1]);
    assert_eq!(c1.title, "得力中性笔 0.5mm, 黑色 12支装");
    assert_eq!(c1.price, Some(9.9));
    assert_eq!(c1.sales, 88000);
    assert_eq!(c1.attributes["颜色"], "黑色");
    assert_eq!(c1.attributes["笔尖"], "0.5mm");
    assert!(c1.in_stock);
    assert_eq!(c2.category, "美妆/面部护理/面霜");
    assert_eq!(c2.sales, 0);
    assert!(!c2.in_stock);
    assert!(c2.attributes.is_empty());
}

#[test]
fn taobao_adapter_keeps_the_latest_snapshot_per_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("taobao.csv");
    std::fs::write(
        &path,
        "update_time,id,title,price,sale_count,comment_count,店名\n\
         2016/11/05,A1,自然堂冰肌水光面霜,139,500,20,自然堂\n\
         2016/11/14,A1,自然堂冰肌水光面霜 双11特惠,99,2600,80,自然堂\n\
         2016/11/06,B2,美宝莲巨遮瑕粉底液,119,300,15,美宝莲\n\
         昨天,C3,雅诗兰黛小棕瓶精华,790,10,1,雅诗兰黛\n",
    )
    .unwrap();
    let report = read(&path, Format::Taobao);
    assert_eq!(lines_and_fields(&report.errors), vec![(5, "-")]);
    assert!(report.errors[0].reason.contains("update_time"));
    assert_eq!(ids(&report.products), vec!["A1", "B2"]);
    let a1 = &report.products[0];
    assert_eq!(a1.title, "自然堂冰肌水光面霜 双11特惠");
    assert_eq!((a1.price, a1.sales), (Some(99.0), 2600));
    assert_eq!((a1.brand.as_str(), a1.shop.as_str()), ("自然堂", "自然堂"));
    assert_eq!(a1.updated_at, 1_479_081_600, "2016-11-14 00:00 UTC");

    // A file without the adapter's columns is unreadable as a whole.
    std::fs::write(&path, "id,title\nA1,面霜\n").unwrap();
    let err = catalog::read_catalog(&path, Format::Taobao, &common::schema()).unwrap_err();
    assert_eq!(err.code(), "bad_catalog_file");
    assert!(err.to_string().contains("update_time"), "{err}");
}

#[test]
fn openbg_adapter_maps_columns_and_numbers_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openbg.tsv");
    std::fs::write(
        &path,
        "title\tbrand\tcategory_coarse\tcategory_fine\tattributes\n\
         花西子空气蜜粉 散粉 定妆\t花西子\t美妆\t散粉\t功效=控油;功效=定妆;净含量=4.5g\n\
         \t无名\t美妆\t口红\t\n\
         李宁超轻21 跑步鞋\t李宁\t运动\t\t鞋码=42\n",
    )
    .unwrap();
    let report = read(&path, Format::Openbg);
    assert_eq!(lines_and_fields(&report.errors), vec![(3, "title")]);
    assert_eq!(report.errors[0].id.as_deref(), Some("openbg-3"));
    assert_eq!(ids(&report.products), vec!["openbg-2", "openbg-4"]);
    let (p, q) = (&report.products[0], &report.products[1]);
    assert_eq!(p.category, "美妆/散粉");
    assert_eq!(p.brand, "花西子");
    assert_eq!(p.attributes["功效"], "控油 定妆");
    assert_eq!(p.attributes["净含量"], "4.5g");
    assert_eq!(q.category, "运动");
}

#[test]
fn multicpr_adapter_reads_id_and_title() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corpus.tsv");
    std::fs::write(&path, "1\t烟台红富士苹果 5斤\n2\t苹果手机壳 透明\n3\n").unwrap();
    let report = read(&path, Format::Multicpr);
    assert_eq!(ids(&report.products), vec!["1", "2"]);
    assert_eq!(report.products[1].title, "苹果手机壳 透明");
    assert_eq!(lines_and_fields(&report.errors), vec![(3, "-")]);
    assert!(report.errors[0]
        .reason
        .contains("expected 2 columns, found 1"));
}

#[test]
fn formats_by_name_and_extension() {
    for (name, format) in [
        ("jsonl", Format::Jsonl),
        ("csv", Format::Csv),
        ("tsv", Format::Tsv),
        ("multicpr", Format::Multicpr),
        ("taobao", Format::Taobao),
        ("openbg", Format::Openbg),
    ] {
        assert_eq!(name.parse::<Format>().unwrap(), format);
    }
    let err = "xlsx".parse::<Format>().unwrap_err();
    assert_eq!(err.code(), "invalid_parameter");
    assert!(err.to_string().contains("xlsx"));
    assert_eq!(
        Format::from_path(Path::new("a/b.jsonl")).unwrap(),
        Format::Jsonl
    );
    assert!(Format::from_path(Path::new("catalog.txt")).is_err());
}

// ---- through the command line ---------------------------------------------------------

/// Runs the `shoprank` binary from the data directory, outside the checkout (a built
/// binary runs from anywhere: the schema is compiled in, the manifest and text files are
/// found above the binary), without any SHOPRANK_* variable of the calling environment.
fn shoprank(data_dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoprank"));
    for (key, _) in std::env::vars() {
        if key.starts_with("SHOPRANK_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(data_dir)
        .env("RUST_LOG", "warn")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .expect("the shoprank binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn index_demo(data_dir: &Path) -> String {
    let demo = common::fixture("demo_catalog.jsonl");
    let out = shoprank(
        data_dir,
        &["index", "--catalog", demo.to_str().unwrap(), "--no-model"],
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("indexed 120 products"),
        "{}",
        text(&out.stdout)
    );
    index::current_name(data_dir)
        .unwrap()
        .expect("a live generation")
}

fn generation_dirs(data_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data_dir.join("generations"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn cli_refuses_a_bad_catalog_and_keeps_the_live_generation() {
    let data = tempfile::tempdir().unwrap();
    let live = index_demo(data.path());
    let before = generation_dirs(data.path());

    let bad = common::fixture("bad_catalog.jsonl");
    let out = shoprank(
        data.path(),
        &["index", "--catalog", bad.to_str().unwrap(), "--no-model"],
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "indexing a bad catalog succeeded");
    for words in [
        "line 2, field `-`",
        "line 6 (id `bad-006`), field `colour`",
        "line 8 (id `bad-001`), field `id`",
        "nothing was published",
    ] {
        assert!(
            stderr.contains(words),
            "`{words}` missing from stderr:\n{stderr}"
        );
    }

    assert_eq!(index::current_name(data.path()).unwrap(), Some(live));
    assert_eq!(
        generation_dirs(data.path()),
        before,
        "no generation was added"
    );
    let engine = common::open_engine(data.path(), None);
    assert_eq!(engine.generation().products.len(), 120);
    let res = engine.search(&SearchRequest::new("口红")).unwrap();
    assert!(res.total > 0);
    assert!(res.hits.iter().all(|h| h.id.starts_with("demo-")));
}

#[test]
fn cli_skip_invalid_publishes_the_valid_records_and_writes_the_errors() {
    let data = tempfile::tempdir().unwrap();
    let live = index_demo(data.path());
    let errors_file = data.path().join("errors.jsonl");
    let bad = common::fixture("bad_catalog.jsonl");
    let out = shoprank(
        data.path(),
        &[
            "index",
            "--catalog",
            bad.to_str().unwrap(),
            "--no-model",
            "--skip-invalid",
            "--errors",
            errors_file.to_str().unwrap(),
            // 4 valid products replace 120: past the product-count gate on purpose.
            "--force",
        ],
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("skipped 7 bad records"),
        "{}",
        text(&out.stdout)
    );

    let written = std::fs::read_to_string(&errors_file).unwrap();
    let rows: Vec<serde_json::Value> = written
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(rows.len(), PLANTED.len());
    for (row, &(line, field, words)) in rows.iter().zip(PLANTED) {
        assert_eq!(row["line"], line);
        assert_eq!(row["field"], field);
        let reason = row["reason"].as_str().unwrap();
        assert!(reason.contains(words), "line {line}: {reason}");
    }

    let now = index::current_name(data.path()).unwrap().unwrap();
    assert_ne!(now, live, "a new generation is live");
    let engine = common::open_engine(data.path(), None);
    let mut live_ids: Vec<String> = engine
        .generation()
        .products
        .iter()
        .map(|p| p.id.clone())
        .collect();
    live_ids.sort();
    assert_eq!(live_ids, VALID_IDS);
    let res = engine.search(&SearchRequest::new("中性笔")).unwrap();
    assert_eq!(res.hits.first().map(|h| h.id.as_str()), Some("bad-011"));
}

/// Two builds in one data directory never run at once: the second is refused while the
/// first holds the build lock, and nothing of the live generation changes.
#[test]
fn a_second_concurrent_build_is_refused() {
    let data = common::demo_index(None);
    let current = std::fs::read_to_string(data.path().join("CURRENT")).unwrap();
    let lock = std::fs::File::create(data.path().join(".build.lock")).unwrap();
    lock.lock().unwrap();
    let err = shoprank::index::build(
        data.path(),
        common::demo_products(),
        shoprank::index::BuildOptions::new(&common::schema(), "test"),
    )
    .err()
    .expect("a second build is refused");
    assert!(
        err.to_string().contains("another build is running"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(data.path().join("CURRENT")).unwrap(),
        current
    );
    lock.unlock().unwrap();
}
