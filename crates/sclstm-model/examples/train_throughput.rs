//! Training-step throughput of a model on synthetic batches (tokens per second).
//!
//! ```text
//! cargo run --release -p sclstm-model --example train_throughput -- [family] [threads] [steps]
//! ```
//!
//! Paper settings (§4.2–4.3): 3 tasks (NER 9 tags, chunk 23, POS 17, softmax heads),
//! word embedding 50 ⊕ 8 caps, 3 bidirectional layers of 300, dropout 0.5, batch 10,
//! Adam, clipping at 5; sentences of 5–25 tokens over a 20k-word vocabulary.

use std::sync::Arc;
use std::time::Instant;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sclstm_autodiff::optim::{Adam, AdamConfig};
use sclstm_cpu::CpuBackend;
use sclstm_model::{Family, ModelConfig, ModelError, ModelInput, Tagger, TaskConfig};

fn tags(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("T{i}")).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let family = match args.get(1).map(String::as_str) {
        None | Some("sc-lstm") => Family::ScLstm,
        Some("lstm-s") => Family::LstmS,
        Some("lstm-d") => Family::LstmD,
        Some("stl") => Family::Stl,
        Some(other) => return Err(format!("unknown family {other}").into()),
    };
    let threads: usize = args.get(2).map_or(Ok(2), |s| s.parse())?;
    let steps: usize = args.get(3).map_or(Ok(30), |s| s.parse())?;
    let vocab = 20_000;
    let tasks = [("ner", 9), ("chunk", 23), ("pos", 17)]
        .iter()
        .map(|&(n, k)| TaskConfig {
            tags: tags(k),
            ..TaskConfig::new(n, &[])
        })
        .collect();
    let mut cfg = ModelConfig::new(family, tasks, vocab);
    cfg.word_dim = 50;
    let backend = Arc::new(CpuBackend::<f32>::new(threads)?);
    let mut tagger = Tagger::new(cfg, backend, 1, None)?;
    if threads > 1 {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        tagger.set_thread_pool(Some(Arc::new(pool)));
    }
    let mut adam = Adam::new(AdamConfig::default());
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (mut tokens, mut elapsed) = (0usize, 0.0f64);
    for step in 0..steps + 3 {
        let batch = 10;
        let lens: Vec<usize> = (0..batch).map(|_| rng.random_range(5..=25)).collect();
        let t_max = *lens.iter().max().expect("non-empty");
        let n = t_max * batch;
        let words: Vec<u32> = (0..n).map(|_| rng.random_range(1..vocab as u32)).collect();
        let caps: Vec<u32> = (0..n).map(|_| rng.random_range(0..8)).collect();
        let task = step % 3;
        let gold: Vec<u32> = (0..n).map(|_| rng.random_range(0..9)).collect();
        let input = ModelInput {
            steps: t_max,
            batch,
            lens: &lens,
            word_ids: &words,
            cap_ids: &caps,
            char_ids: &[],
            char_lens: &[],
            word_len_max: 0,
            contextual: &[],
        };
        let start = Instant::now();
        let grads = {
            let mut tape = tagger.tape();
            let loss = tagger.loss(&mut tape, &input, task, &gold, step as u64)?;
            tape.backward(loss)
                .map_err(ModelError::from)?
                .into_param_grads()
        };
        adam.step_clipped(tagger.params_mut(), &grads, 5.0, None)?;
        // The first steps allocate the layer caches; time the rest.
        if step >= 3 {
            elapsed += start.elapsed().as_secs_f64();
            tokens += lens.iter().sum::<usize>();
        }
    }
    println!(
        "{} threads={threads}: {tokens} tokens in {elapsed:.2} s = {:.0} tokens/s",
        family.name(),
        tokens as f64 / elapsed
    );
    Ok(())
}
