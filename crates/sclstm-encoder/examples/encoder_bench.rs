//! Feature extraction throughput of the encoder on a shipped corpus, and (with
//! `--compare`) its largest difference from `benches/reference/encoder.py`'s features.
//!
//! ```text
//! cargo run --release -p sclstm-encoder --example encoder_bench -- \
//!     [--encoder DIR] [--data FILE] [--sentences N] [--threads T] [--pool first|mean] \
//!     [--compare /tmp/minilm_reference.safetensors]
//! ```
//!
//! Sentences are encoded in packed batches of [`SENTENCES_PER_BATCH`], as a cache fill does.

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use sclstm_cpu::CpuBackend;
use sclstm_data::shipped::{Task, read_task_file};
use sclstm_encoder::cache::SENTENCES_PER_BATCH;
use sclstm_encoder::{FeatureExtractor, Pool};

fn main() -> Result<(), Box<dyn Error>> {
    let mut encoder = PathBuf::from("datasets/encoders/all-MiniLM-L6-v2");
    let mut data = PathBuf::from("datasets/conll2003/test.txt");
    let (mut sentences, mut threads, mut pool, mut compare) = (1000, 2, Pool::First, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--encoder" => encoder = value.into(),
            "--data" => data = value.into(),
            "--sentences" => sentences = value.parse()?,
            "--threads" => threads = value.parse()?,
            "--pool" => pool = Pool::parse(&value).ok_or("--pool is first or mean")?,
            "--compare" => compare = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    let enc = FeatureExtractor::open(&encoder, pool, CpuBackend::new(threads)?)?;
    let corpus = read_task_file(&data, Task::Ner)?;
    let sents: Vec<Vec<&str>> = corpus
        .iter()
        .take(sentences)
        .map(|s| s.words.iter().map(String::as_str).collect())
        .collect();
    let words: usize = sents.iter().map(Vec::len).sum();
    let pieces: usize = sents
        .iter()
        .map(|s| {
            Ok(enc
                .wordpiece()
                .word_pieces(s)?
                .iter()
                .map(Vec::len)
                .sum::<usize>()
                + 2)
        })
        .sum::<Result<usize, sclstm_encoder::EncoderError>>()?;
    // One warm-up batch (page faults, thread start).
    enc.extract(&sents[..sents.len().min(SENTENCES_PER_BATCH)])?;
    let start = Instant::now();
    let mut feats = Vec::with_capacity(sents.len());
    for chunk in sents.chunks(SENTENCES_PER_BATCH) {
        feats.extend(enc.extract(chunk)?);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "sclstm-encoder, {threads} threads, pool {}: {} sentences, {words} words, {pieces} sub-words (with [CLS]/[SEP]) in {secs:.2} s: {:.0} words/s, {:.0} sub-words/s",
        pool.name(),
        sents.len(),
        words as f64 / secs,
        pieces as f64 / secs
    );
    println!(
        "f16 cache: {} bytes a word, {:.1} MB for these {words} words",
        2 * enc.width(),
        (2 * enc.width() * words) as f64 / 1e6
    );
    if let Some(path) = compare {
        let buf = std::fs::read(&path)?;
        let st = safetensors::SafeTensors::deserialize(&buf)?;
        let reference: Vec<f32> = st
            .tensor("features")?
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let ours: Vec<f32> = feats
            .iter()
            .flatten()
            .copied()
            .take(reference.len())
            .collect();
        if ours.len() != reference.len() {
            return Err(format!(
                "{} reference values, {} computed",
                reference.len(),
                ours.len()
            )
            .into());
        }
        let (h, states) = (enc.config().hidden_size, enc.config().states());
        let mut worst = vec![(0.0f64, 0.0f64); states];
        for (i, (&a, &r)) in ours.iter().zip(&reference).enumerate() {
            let l = (i % enc.width()) / h;
            let abs = f64::from((a - r).abs());
            worst[l].0 = worst[l].0.max(abs);
            worst[l].1 = worst[l].1.max(abs / f64::from(r.abs()).max(1.0));
        }
        println!(
            "against {} ({} words):",
            path.display(),
            reference.len() / enc.width()
        );
        for (l, (abs, rel)) in worst.iter().enumerate() {
            println!("  state {l}: max |diff| {abs:.2e}, max |diff| / max(1, |ref|) {rel:.2e}");
        }
    }
    Ok(())
}
