//! Encoder speed against its peers in the same run (issues 7 and 13). Two measures, each
//! round, for every side in turn so a noisy machine hits all alike:
//! - batch: the 2,083 Multi-CPR pool titles (the texts an index build encodes), batches
//!   sorted by length, the manifest's batch size and max length, all threads;
//! - query: 500 real Taobao queries one at a time on one thread, no query cache.
//!
//! Sides: shoprank at f32 and at int8 (the int8 kernel the CPU picks), and, when
//! `SHOPRANK_PEER_PYTHON` names a Python with `torch`, `transformers`, `onnx` and
//! `onnxruntime`, `benches/encode_peer.py` running PyTorch, ONNX Runtime fp32 and ONNX
//! Runtime int8 (dynamic quantization) on the same model. `SHOPRANK_ENCODE_ROUNDS` rounds
//! (default 3); the table gives the medians over rounds of titles/s, query p50 and p99,
//! with the CPU model and flags, and how close every side's title vectors are to
//! shoprank f32's (a faster wrong answer must show).
//!
//! `benches/encode_peer.sh` sets up the Python and runs this bench.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use shoprank::catalog::{read_catalog, Format};
use shoprank::encoder::{Encoder, EncoderConfig, Precision};
use shoprank::schema::CatalogSchema;

/// Queries timed one at a time.
const QUERIES: usize = 500;
/// The peers `benches/encode_peer.py` runs.
const PEERS: [(&str, &str); 3] = [
    ("PyTorch fp32", "torch"),
    ("ONNX Runtime fp32", "ort-fp32"),
    ("ONNX Runtime int8", "ort-int8"),
];

/// One side's numbers for one round.
struct Round {
    titles_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn main() {
    let settings = common::settings();
    let config =
        EncoderConfig::from_manifest(&settings.manifest, settings.model.as_deref()).unwrap();
    let load = |precision| {
        let mut s = settings.clone();
        s.precision = Some(precision);
        shoprank::engine::load_encoder(&s)
            .expect("the encoder bench needs the model: run models/fetch.sh")
    };
    let ours = [
        ("shoprank f32", load(Precision::F32)),
        ("shoprank int8", load(Precision::Int8)),
    ];
    let (products, _) = read_catalog(
        &common::shared().join("multicpr_ecom_pool/corpus.tsv"),
        Format::Multicpr,
        &CatalogSchema::default(),
    )
    .unwrap()
    .accept(false)
    .unwrap();
    let texts: Vec<String> = products
        .iter()
        .map(|p| p.embedding_text().replace(['\n', '\r'], " "))
        .collect();
    let queries: Vec<String> =
        std::fs::read_to_string(common::shared().join("multicpr_ecom/queries.tsv"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('\t').map(|(_, q)| q.trim().to_string()))
            .filter(|q| !q.is_empty())
            .take(QUERIES)
            .collect();
    let (n, encoder) = (texts.len(), &ours[0].1);
    let tokens: usize = encoder.document_tokens(&texts).unwrap().iter().sum();
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let rounds: usize = std::env::var("SHOPRANK_ENCODE_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let python = std::env::var("SHOPRANK_PEER_PYTHON").ok();
    let work = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/encode-bench");
    std::fs::create_dir_all(&work).unwrap();
    let texts_file = work.join("texts.txt");
    std::fs::write(&texts_file, texts.join("\n") + "\n").unwrap();
    let queries_file = work.join("queries.txt");
    std::fs::write(&queries_file, queries.join("\n") + "\n").unwrap();

    println!("{}", cpu_line());
    println!(
        "encode: {n} Multi-CPR pool titles, {tokens} tokens ({:.1} per title), model {}, batch {}, max length {}, {threads} threads; {} real queries one at a time, 1 thread; int8 kernel {}",
        tokens as f64 / n as f64,
        config.id,
        config.batch_size,
        config.max_length,
        queries.len(),
        shoprank::encoder::int8_kernel(),
    );
    for (_, e) in &ours {
        e.encode_documents(&texts[..64], |_| {}).unwrap(); // warm-up, untimed
    }
    let sides: Vec<&str> = ours
        .iter()
        .map(|(name, _)| *name)
        .chain(
            python
                .iter()
                .flat_map(|_| PEERS.iter().map(|(name, _)| *name)),
        )
        .collect();
    // `SHOPRANK_ENCODE_SIDES=int8` times only the sides whose name holds a listed word
    // (to profile one side); shoprank f32 still runs once, as the reference vectors.
    let only: Option<Vec<String>> = std::env::var("SHOPRANK_ENCODE_SIDES")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    let timed = |side: &str| {
        only.as_ref()
            .is_none_or(|o| o.iter().any(|w| side.contains(w.as_str())))
    };
    let mut results: Vec<Vec<Round>> = sides.iter().map(|_| Vec::new()).collect();
    let mut vectors: Vec<Vec<f32>> = sides.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        let mut line = format!("round {round}:");
        for (i, side) in sides.iter().enumerate() {
            let reference = i == 0 && round == 1;
            if !(timed(side) || reference) {
                continue;
            }
            let r = if let Some((_, e)) = ours.get(i) {
                let (r, v) = run_ours(e, &texts, &queries);
                vectors[i] = v;
                r
            } else {
                let backend = PEERS[i - ours.len()].1;
                let out = work.join(format!("{backend}.f32"));
                let python = python.as_deref().unwrap();
                let files = (&texts_file, &queries_file, &out);
                let r = run_peer(python, backend, files, &config, threads, &work);
                vectors[i] = read_f32(&out);
                r
            };
            line += &format!(
                " {side} {:.0} titles/s {:.2}/{:.2} ms;",
                r.titles_per_s, r.p50_ms, r.p99_ms
            );
            results[i].push(r);
        }
        println!("{line}");
    }

    println!("\n{}", cpu_line());
    println!(
        "| side | titles/s | tokens/s | query p50 / p99 ms | cosine to shoprank f32 (mean / min) |"
    );
    println!("|---|---|---|---|---|");
    let mut table = Vec::new();
    for (i, side) in sides.iter().enumerate() {
        if !timed(side) {
            continue;
        }
        let med = |f: fn(&Round) -> f64| median(results[i].iter().map(f).collect());
        let (rate, p50, p99) = (
            med(|r| r.titles_per_s),
            med(|r| r.p50_ms),
            med(|r| r.p99_ms),
        );
        let cos = agreement(&vectors[0], &vectors[i], encoder.dim(), n);
        println!(
            "| {side} | {rate:.0} | {:.0} | {p50:.2} / {p99:.2} | {:.5} / {:.5} |",
            rate * tokens as f64 / n as f64,
            cos.0,
            cos.1
        );
        table.push((*side, rate, p50));
    }
    if let Some(&(_, ort_rate, ort_p50)) = table.iter().find(|t| t.0 == "ONNX Runtime int8") {
        for (side, rate, p50) in &table[..ours.len()] {
            println!(
                "{side} / ONNX Runtime int8: batch {:.2}x titles/s, query p50 {:.2}x the time",
                rate / ort_rate,
                p50 / ort_p50
            );
        }
    } else {
        println!("peers: not run (set SHOPRANK_PEER_PYTHON, or use benches/encode_peer.sh)");
    }
}

/// One batch pass and one pass over the queries with a shoprank encoder.
fn run_ours(e: &Encoder, texts: &[String], queries: &[String]) -> (Round, Vec<f32>) {
    let started = Instant::now();
    let vectors = e.encode_documents(texts, |_| {}).unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(vectors.len(), texts.len());
    let mut ms = Vec::with_capacity(queries.len());
    for q in queries {
        let started = Instant::now();
        let v = e.encode_query_uncached(q).unwrap();
        ms.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(v.len(), e.dim());
    }
    let (p50, p99) = percentiles(ms);
    let round = Round {
        titles_per_s: texts.len() as f64 / secs,
        p50_ms: p50,
        p99_ms: p99,
    };
    (round, vectors.concat())
}

/// One run of a peer (its own timings, model load excluded).
fn run_peer(
    python: &str,
    backend: &str,
    (texts, queries, out): (&PathBuf, &PathBuf, &PathBuf),
    config: &EncoderConfig,
    threads: usize,
    work: &Path,
) -> Round {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/encode_peer.py");
    let mut cmd = Command::new(python);
    cmd.arg(&script)
        .arg(texts)
        .arg(queries)
        .arg(&config.dir)
        .arg(out)
        .args(["--backend", backend])
        .arg("--onnx-dir")
        .arg(work.join("onnx"))
        .args(["--threads", &threads.to_string()])
        .args(["--batch", &config.batch_size.to_string()])
        .args(["--max-length", &config.max_length.to_string()]);
    if config.lowercase {
        cmd.arg("--lowercase");
    }
    let output = cmd
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script:?} --backend {backend} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let field = |name: &str, i: usize| -> f64 {
        let line = stdout.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(i).unwrap().parse().unwrap()
    };
    Round {
        titles_per_s: field("texts ", 1) / field("secs ", 1),
        p50_ms: field("query_ms ", 1),
        p99_ms: field("query_ms ", 2),
    }
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Mean and min cosine of two sides' title vectors.
fn agreement(a: &[f32], b: &[f32], dim: usize, n: usize) -> (f32, f32) {
    assert_eq!(
        (a.len(), b.len()),
        (n * dim, n * dim),
        "one vector per title"
    );
    let cos: Vec<f32> = a
        .chunks_exact(dim)
        .zip(b.chunks_exact(dim))
        .map(|(a, b)| shoprank::encoder::dot(a, b))
        .collect();
    let min = cos.iter().copied().fold(f32::INFINITY, f32::min);
    (cos.iter().sum::<f32>() / n as f32, min)
}

/// The CPU's model name and the vector flags that pick kernels.
fn cpu_line() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let flags: Vec<&str> = info
        .lines()
        .find_map(|l| l.strip_prefix("flags"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let has: Vec<String> = ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"]
        .iter()
        .map(|f| format!("{f} {}", if flags.contains(f) { "yes" } else { "no" }))
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("CPU: {model}, {cores} cores; {}", has.join(", "))
}

fn percentiles(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.99))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
