//! Encoder throughput against PyTorch in the same run (issue 7). Encodes the 2,083
//! Multi-CPR pool titles (the texts an index build encodes) with shoprank and, when
//! `SHOPRANK_PEER_PYTHON` names a Python with `torch` and `transformers`, with
//! `benches/encode_torch.py` (BertModel on the CPU, same model, threads, batch size and
//! max length). The two alternate for `SHOPRANK_ENCODE_ROUNDS` rounds (default 3) so a
//! noisy machine hits both alike; the report gives each round, the medians, the ratio,
//! tokens/s and GFLOP/s against the fp32 peak, and how close the two sides' vectors are.
//!
//! `benches/encode_peer.sh` sets up the Python and runs this bench.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use shoprank::catalog::{read_catalog, Format};
use shoprank::encoder::EncoderConfig;
use shoprank::schema::CatalogSchema;

fn main() {
    let settings = common::settings();
    let config =
        EncoderConfig::from_manifest(&settings.manifest, settings.model.as_deref()).unwrap();
    let encoder = shoprank::engine::load_encoder(&settings)
        .expect("the encoder bench needs the model: run models/fetch.sh");
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
    let n = texts.len();
    let tokens: usize = encoder.document_tokens(&texts).unwrap().iter().sum();
    // candle's matmuls use RAYON_NUM_THREADS threads, else one per core; PyTorch gets as many.
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let rounds: usize = std::env::var("SHOPRANK_ENCODE_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let peer = std::env::var("SHOPRANK_PEER_PYTHON").ok();
    let work = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/encode-bench");
    std::fs::create_dir_all(&work).unwrap();
    let texts_file = work.join("texts.txt");
    std::fs::write(&texts_file, texts.join("\n") + "\n").unwrap();
    let peer_out = work.join("torch.f32");

    println!(
        "encode: {n} Multi-CPR pool titles, {tokens} tokens ({:.1} per title), model {}, batch {}, max length {}, {threads} threads",
        tokens as f64 / n as f64,
        encoder.id(),
        config.batch_size,
        config.max_length
    );
    encoder.encode_documents(&texts[..64], |_| {}).unwrap(); // warm-up, untimed
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut vectors = Vec::new();
    for round in 1..=rounds {
        let started = Instant::now();
        vectors = encoder.encode_documents(&texts, |_| {}).unwrap();
        let secs = started.elapsed().as_secs_f64();
        ours.push(n as f64 / secs);
        let mut line = format!("round {round}: shoprank {:.0} titles/s", n as f64 / secs);
        if let Some(python) = &peer {
            let secs = run_peer(python, &texts_file, &config, threads, &peer_out);
            theirs.push(n as f64 / secs);
            line += &format!(", PyTorch {:.0} titles/s", n as f64 / secs);
        }
        println!("{line}");
    }
    let report = |who: &str, rate: f64| {
        let gflops = rate * tokens as f64 / n as f64 * encoder.flops_per_token() / 1e9;
        println!(
            "{who}: {rate:.0} titles/s, {:.0} tokens/s, {gflops:.0} GFLOP/s = {:.0}% of the 418 GFLOP/s fp32 peak",
            rate * tokens as f64 / n as f64,
            gflops / 418.0 * 100.0
        );
    };
    let ours = median(&mut ours);
    report("shoprank", ours);
    if peer.is_none() {
        println!("PyTorch: not run (set SHOPRANK_PEER_PYTHON, or use benches/encode_peer.sh)");
        return;
    }
    let theirs = median(&mut theirs);
    report("PyTorch", theirs);
    println!("ratio shoprank / PyTorch: {:.2}x", ours / theirs);
    // Both sides must have computed the same embedding for the ratio to mean anything.
    let bytes = std::fs::read(&peer_out).unwrap();
    let dim = encoder.dim();
    assert_eq!(
        bytes.len(),
        n * dim * 4,
        "PyTorch wrote {} bytes",
        bytes.len()
    );
    let peer: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let cos: Vec<f32> = vectors
        .iter()
        .zip(peer.chunks_exact(dim))
        .map(|(a, b)| shoprank::encoder::dot(a, b))
        .collect();
    let min = cos.iter().copied().fold(f32::INFINITY, f32::min);
    let mean = cos.iter().sum::<f32>() / n as f32;
    println!("agreement: cosine(shoprank, PyTorch) mean {mean:.5}, min {min:.5}");
}

/// One PyTorch pass over the texts; its own timing (model load excluded).
fn run_peer(python: &str, texts: &Path, config: &EncoderConfig, threads: usize, out: &Path) -> f64 {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/encode_torch.py");
    let mut cmd = Command::new(python);
    cmd.arg(&script)
        .arg(texts)
        .arg(&config.dir)
        .arg(out)
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
        "{script:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout.lines().find(|l| l.starts_with("secs ")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
