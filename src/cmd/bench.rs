//! `sclstm bench`: training and inference throughput of a paper-config model on
//! synthetic batches, achieved matmul GFLOP/s and the fraction of a measured sgemm peak.
//!
//! The model has the paper's settings (§4.2–4.3): three tasks (NER 9 tags, chunking 22,
//! POS 17; softmax heads), word embeddings of 50 over a 40,000-word vocabulary ⊕ the 8
//! one-hot capitalization features, three bidirectional layers of 300, dropout 0.5,
//! Adam, clipping at 5, random weights. Sentence lengths follow the shipped training
//! corpora (see [`LENGTH_HISTOGRAM`]); word ids, caps and gold tags are random.
//!
//! * Training: each step picks a task at random (Algorithm 1), runs forward, backward,
//!   clipping and Adam on one batch, and counts the batch's real tokens. The first
//!   steps fill the layer cache pool and are not timed.
//! * Inference: sentences sorted by length and cut into batches as `eval` and `predict`
//!   cut them ([`tagging_batches`]: at most [`EVAL_BATCH`] sentences and [`EVAL_TOKENS`]
//!   padded tokens), one [`Tagger::predict`] call per batch tagging all three tasks;
//!   one untimed pass first.
//! * FLOPs: the matrix products of a step counted from the layer shapes over the batch's
//!   real tokens only (see [`forward_flops`]): useful work, so the GFLOP/s figure does
//!   not grow with padding (the layers skip much of it, the rest is not counted).
//! * Peak: the best f32 rate of a few 1024³ products through [`Backend::gemm`] on the same
//!   backend and thread count, or of the layer's own product shapes (the product lines)
//!   where one of those runs faster: a peak below a rate the machine reaches would flatter
//!   the fraction.
//! * Products: the paper config's kinds of product timed on their own (see
//!   [`product_rates`]), among them the per-step `h·W` at the rows a real batch runs at
//!   each step: fewer than the batch once its shorter sentences have ended, where the
//!   product streams the same weights for less work.
//! * Memory: the process's peak resident memory at the end (training, then inference).

use std::io::Write;

use anyhow::Context;
use std::sync::Arc;
use std::time::Instant;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sclstm_autodiff::optim::{Adam, AdamConfig};
use sclstm_core::{Backend, Gemm, Packed, Real};
use sclstm_cpu::kernels::{KERNELS_ENV, Kernels, cpu_model, cpu_topology};
use sclstm_cpu::packed;
use sclstm_model::{Family, ModelConfig, ModelError, ModelInput, Tagger, TaskConfig};
use serde::Serialize;

use crate::backend::{BackendJob, with_backend};
use crate::timed::{CallGroup, InSitu, JoinTotals, TimedBackend};
use sclstm_train::config::{self, BackendKind, Dtype, Precision};
use sclstm_train::pool::host_pool;
use sclstm_train::{EVAL_BATCH, EVAL_TOKENS, tagging_batches};

/// Arguments of `sclstm bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Compute backend of the recurrent layers.
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendKind,
    /// Model family to measure: stl, lstm-s, lstm-d or sc-lstm.
    #[arg(long, default_value = "sc-lstm")]
    pub model: config::Family,
    /// Training batch size (sentences per step).
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    /// Threads of the CPU backend and of the host products (0 = one per core, the default of
    /// every command).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Timed training steps (after the warm-up steps).
    #[arg(long, default_value_t = 60)]
    pub steps: usize,
    /// Sentences tagged in the inference measurement.
    #[arg(long, default_value_t = 640)]
    pub infer_sentences: usize,
    /// Seed of the weights, the synthetic data and the task order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Precision of the weight products in the inference measurement: `f32`, `bf16`
    /// (CPU with AVX512_BF16 only) or `int8` (AVX2; faster with AVX-VNNI or AVX512_VNNI);
    /// training is always f32.
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: Precision,
    /// Also time every backend call of the timed training steps and of the inference,
    /// grouped by kind: each kind of product's GFLOP/s inside a real step (next to the
    /// product lines, timed on their own) and each other kernel's milliseconds per step
    /// (per 1,000 tokens in inference).
    #[arg(long)]
    pub in_situ: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Sentence-length histogram of the shipped training sets: `(shortest, longest,
/// sentences)` per bucket. Computed once from `datasets/conll2003/train.txt`,
/// `datasets/conll2000/train.txt` (blank-line separated, `-DOCSTART-` lines skipped) and
/// `datasets/ud-en-ewt/train.conllu` (comment lines, multiword ranges `n-m` and empty
/// nodes `n.m` skipped): 35,520 sentences, 619,934 tokens, mean 17.5, longest 159.
/// Lengths are drawn by bucket weight, then uniformly inside the bucket.
const LENGTH_HISTOGRAM: [(usize, usize, u32); 12] = [
    (1, 5, 6094),
    (6, 10, 6891),
    (11, 15, 5211),
    (16, 20, 4512),
    (21, 25, 4036),
    (26, 30, 3271),
    (31, 35, 2376),
    (36, 40, 1476),
    (41, 50, 1222),
    (51, 60, 299),
    (61, 80, 113),
    (81, 159, 19),
];

/// Tasks of the paper config: name and tag count.
const TASKS: [(&str, usize); 3] = [("ner", 9), ("chunk", 22), ("pos", 17)];

/// Word vocabulary of the benchmark model (about the shipped data's size).
const VOCAB: usize = 40_000;

/// Training steps run before the clock starts (they allocate the layer caches).
const WARMUP_STEPS: usize = 3;

/// Side of the square product that measures the sgemm peak.
const PEAK_N: usize = 1024;

/// Batches whose per-step row counts the ragged product line runs ([`ragged_rows`]).
const RAGGED_BATCHES: usize = 16;
/// Seed of those batches' lengths (fixed: every run times the same steps).
const RAGGED_SEED: u64 = 0x7a66;

/// What `sclstm bench --json` prints.
#[derive(Debug, Serialize)]
struct Report {
    /// Model family (`sc-lstm`, `lstm-s`, …).
    model: &'static str,
    /// Backend description.
    backend: String,
    /// Threads requested.
    threads: usize,
    /// Training batch size.
    batch: usize,
    /// Timed training steps.
    steps: usize,
    /// Real (unpadded) tokens of the timed training steps.
    train_tokens: usize,
    /// Real (unpadded) tokens per second in training.
    train_tokens_per_s: f64,
    /// Real tokens per second tagging all three tasks.
    infer_tokens_per_s: f64,
    /// Precision of the weight products in the inference measurement.
    infer_precision: Precision,
    /// Useful matmul GFLOP/s in training (real tokens only).
    gflops: f64,
    /// Best measured f32 GFLOP/s: 1024³ products and the f32 product lines.
    peak_gflops: f64,
    /// `gflops / peak_gflops`.
    fraction_of_peak: f64,
    /// Where a timed training step's time goes, in milliseconds per step.
    phases: Phases,
    /// Gradient elements a step hands Adam, on average: dense parameters and embedding rows.
    grad_elems_per_step: f64,
    /// Peak resident memory of the whole run in bytes (`null` where unknown).
    peak_rss_bytes: Option<u64>,
    /// The CPU's model name.
    cpu: String,
    /// Logical CPUs this process may run on (`null` where unknown).
    logical_cpus: Option<usize>,
    /// Physical cores under them (`null` where unknown): fewer than `logical_cpus` when
    /// threads share a core's multiply-add units as hyperthreads.
    physical_cores: Option<usize>,
    /// The CPU backend's kernel set in use (`SCLSTM_KERNELS` forces one).
    kernels: &'static str,
    /// Every kernel set this CPU runs, best first.
    kernels_available: Vec<&'static str>,
    /// The paper config's kinds of product: which kernel computes each (CPU backend) and
    /// its GFLOP/s through the backend.
    products: Vec<ProductRate>,
    /// With `--in-situ`: every backend call of the timed training steps by kind, largest
    /// time first (empty otherwise).
    in_situ: Vec<CallGroup>,
    /// With `--in-situ`: the same for the timed inference.
    in_situ_inference: Vec<CallGroup>,
    /// With `--in-situ`: the joins of the timed training steps (`null` otherwise).
    joins: Option<JoinTotals>,
    /// With `--in-situ`: the joins of the timed inference (`null` otherwise).
    joins_inference: Option<JoinTotals>,
    /// Real tokens of the timed inference.
    infer_tokens: usize,
}

/// Mean milliseconds per timed training step in each phase.
#[derive(Debug, Default, Serialize)]
struct Phases {
    /// Building the tape: the loss of the batch (every layer's forward).
    forward_ms: f64,
    /// The tape's backward pass, down to the parameter gradients.
    backward_ms: f64,
    /// Gradient clipping and the Adam update.
    optimizer_ms: f64,
}

/// One kind of matrix product of the paper's model, timed on its own.
#[derive(Debug, Serialize)]
struct ProductRate {
    /// What the product is.
    kind: &'static str,
    /// `m × k · k × n`, noting a transposed stored `A`.
    shape: String,
    /// The kernel the CPU backend's kernel set uses for it.
    kernel: &'static str,
    /// Best GFLOP/s over a few repetitions.
    gflops: f64,
    /// Precision of the product (f32, or packed weights: bf16 or int8).
    precision: Precision,
}

/// Times the four kinds of product of a paper-config layer's training step (hidden 300,
/// gates 4·300, upper-layer input 600) at batch `batch`, with the operand layouts the
/// layer uses: the per-step recurrent product `h·W` (`W` stored transposed once per
/// step, so row-major here), its backward `dG·W` (`W` as stored, row-major), both in the
/// strip layout where the backend asks for it ([`Backend::strip_weights`]), the input
/// projection over all steps of a 25-word batch, and the weight gradient `dGᵀ·X` over
/// the same rows (`dG` read transposed). Then the per-step `h·W` again at the rows a real
/// batch runs at each step ([`ragged_rows`]). With packed inference (bf16 or int8), the
/// two forward products again with packed weights ([`Backend::gemm_packed`]). Each runs until ~0.1 s or
/// 1,000 calls, best time of 3 rounds.
fn product_rates<B: Backend>(
    b: &B,
    batch: usize,
    on_cpu: bool,
    precision: Precision,
) -> anyhow::Result<Vec<ProductRate>> {
    const H: usize = 300;
    let rows = 25 * batch;
    let products = Kernels::active()
        .products()
        .map(|(kind, kernel)| (kind, if on_cpu { kernel } else { "WGSL gemm shader" }));
    // Weights in the layout the layers write for this backend.
    let strips = b.strip_weights();
    let shapes = [
        Gemm {
            b_strips: strips,
            ..Gemm::new(batch, 4 * H, H)
        },
        Gemm {
            b_strips: strips,
            ..Gemm::new(batch, H, 4 * H)
        },
        Gemm {
            b_strips: strips,
            ..Gemm::new(rows, 4 * H, 2 * H)
        },
        Gemm {
            trans_a: true,
            ..Gemm::new(4 * H, 2 * H, rows)
        },
    ];
    let fill = |n: usize| -> Vec<B::Elem> {
        (0..n)
            .map(|i| B::Elem::from_f64(((i % 13) as f64 - 6.0) * 0.01))
            .collect()
    };
    let mut out = Vec::new();
    for ((kind, kernel), g) in products.into_iter().zip(shapes) {
        let a = b.upload(&fill(g.m * g.k))?;
        let w = b.upload(&fill(g.b_len()))?;
        let mut c = b.zeros(g.m * g.n)?;
        let gflops = best_gflops(b, g.flops(), &mut || b.gemm(&g, &a, &w, None, &mut c))?;
        out.push(ProductRate {
            kind,
            shape: shape_of(&g),
            kernel,
            gflops,
            precision: Precision::F32,
        });
    }
    let rows = ragged_rows(batch);
    let per_step = |m: usize| Gemm {
        b_strips: strips,
        ..Gemm::new(m, 4 * H, H)
    };
    let (a, w) = (
        b.upload(&fill(batch * H))?,
        b.upload(&fill(per_step(batch).b_len()))?,
    );
    let mut c = b.zeros(batch * 4 * H)?;
    let flops = rows.iter().map(|&m| per_step(m).flops()).sum();
    let gflops = best_gflops(b, flops, &mut || {
        rows.iter()
            .try_for_each(|&m| b.gemm(&per_step(m), &a, &w, None, &mut c))
    })?;
    out.push(ProductRate {
        kind: "per-step forward h·W at the rows still running (ragged batches)",
        shape: format!(
            "m = {batch}…1, mean {:.1} · {H}×{} ({} steps of {RAGGED_BATCHES} batches)",
            rows.iter().sum::<usize>() as f64 / rows.len() as f64,
            4 * H,
            rows.len()
        ),
        kernel: out[0].kernel,
        gflops,
        precision: Precision::F32,
    });
    if let Some(p) = precision.packed() {
        let kinds = match p {
            Packed::Bf16 => [
                "per-step forward h·W (m = batch ≤ 12), bf16 weights",
                "input projection over all steps, bf16 weights",
            ],
            Packed::Int8 => [
                "per-step forward h·W (m = batch ≤ 12), int8 weights",
                "input projection over all steps, int8 weights",
            ],
        };
        // Only the CPU backend has packed products (the others refused them already).
        let kernel = packed::kernel(p).map_or("none", packed::Kernel::describe);
        for (kind, g) in kinds.into_iter().zip([shapes[0], shapes[2]]) {
            let a = b.upload(&fill(g.m * g.k))?;
            let mut w = b.zeros(p.elems(g.k, g.n, g.b_strips))?;
            let values = fill(g.k * g.n);
            let copy = &mut |dst: &mut [B::Elem]| dst.copy_from_slice(&values);
            b.write_packed(p, &mut w, g.k, g.n, g.b_strips, copy)?;
            let mut c = b.zeros(g.m * g.n)?;
            let gflops = best_gflops(b, g.flops(), &mut || {
                b.gemm_packed(p, &g, &a, &w, None, &mut c)
            })?;
            out.push(ProductRate {
                kind,
                shape: if g.b_strips {
                    format!("{}, B in strips", shape_of(&g))
                } else {
                    shape_of(&g)
                },
                kernel,
                gflops,
                precision,
            });
        }
    }
    Ok(out)
}

/// `m×k · k×n`, noting a transposed stored `A`.
fn shape_of(g: &Gemm) -> String {
    format!(
        "{}×{} · {}×{}{}",
        g.m,
        g.k,
        g.k,
        g.n,
        if g.trans_a {
            " (A stored transposed)"
        } else {
            ""
        }
    )
}

/// Rows of the per-step products of [`RAGGED_BATCHES`] batches of `batch` sentences with
/// lengths drawn from [`LENGTH_HISTOGRAM`]: at step `t` of a batch, the sentences longer
/// than `t` (the layers' packed layout runs no padding rows).
fn ragged_rows(batch: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(RAGGED_SEED);
    let mut rows = Vec::new();
    for _ in 0..RAGGED_BATCHES {
        let lens: Vec<usize> = (0..batch).map(|_| draw_length(&mut rng)).collect();
        let steps = lens.iter().copied().max().unwrap_or(0);
        rows.extend((0..steps).map(|t| lens.iter().filter(|&&l| l > t).count()));
    }
    rows
}

/// GFLOP/s of `product` doing `flops`: calls for ~0.1 s (at most 1,000), best of 3 rounds.
fn best_gflops<B: Backend>(
    b: &B,
    flops: u64,
    product: &mut dyn FnMut() -> Result<(), sclstm_core::NumError>,
) -> anyhow::Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        let mut calls = 0u32;
        while calls < 1000 && start.elapsed().as_secs_f64() < 0.1 {
            product()?;
            calls += 1;
        }
        b.sync()?;
        best = best.min(start.elapsed().as_secs_f64() / f64::from(calls));
    }
    Ok(flops as f64 / best / 1e9)
}

/// Runs `sclstm bench`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.batch == 0 || args.steps == 0 || args.infer_sentences == 0 {
        anyhow::bail!("--batch, --steps and --infer-sentences must be at least 1");
    }
    let mut report = with_backend(
        args.backend,
        Dtype::F32,
        args.threads,
        BenchJob { args: &args },
    )?;
    report.peak_rss_bytes = crate::alloc::peak_rss_bytes();
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        writeln!(out, "model      {}", report.model)?;
        writeln!(out, "backend    {}", report.backend)?;
        let cores = match (report.logical_cpus, report.physical_cores) {
            (Some(l), Some(c)) => format!(
                ", {l} logical CPU{} on {c} core{}",
                if l == 1 { "" } else { "s" },
                if c == 1 { "" } else { "s" }
            ),
            _ => String::new(),
        };
        writeln!(
            out,
            "cpu        {}{cores} (kernels {}; this CPU runs {}; {KERNELS_ENV} forces one)",
            report.cpu,
            report.kernels,
            report.kernels_available.join(", ")
        )?;
        for p in &report.products {
            writeln!(
                out,
                "product    {:>9.1} GFLOP/s   {}: {} [{}]",
                p.gflops, p.kind, p.shape, p.kernel
            )?;
        }
        writeln!(
            out,
            "training   {:>9.0} tokens/s  (batch {}, {} steps)",
            report.train_tokens_per_s, report.batch, report.steps
        )?;
        let ph = &report.phases;
        writeln!(
            out,
            "step       {:>9.2} ms         forward {:.2} + backward {:.2} + clip and Adam {:.2} ms ({:.1} M gradient elements)",
            ph.forward_ms + ph.backward_ms + ph.optimizer_ms,
            ph.forward_ms,
            ph.backward_ms,
            ph.optimizer_ms,
            report.grad_elems_per_step / 1e6
        )?;
        writeln!(
            out,
            "inference  {:>9.0} tokens/s  (batch ≤ {EVAL_BATCH}, ≤ {EVAL_TOKENS} tokens, length-sorted, 3 tasks, {} products)",
            report.infer_tokens_per_s,
            report.infer_precision.name()
        )?;
        writeln!(
            out,
            "matmul     {:>9.1} GFLOP/s   = {:.0}% of the measured sgemm peak {:.1} GFLOP/s (best of 1024³ and the f32 products)",
            report.gflops,
            100.0 * report.fraction_of_peak,
            report.peak_gflops
        )?;
        if let Some(b) = report.peak_rss_bytes {
            writeln!(out, "memory     {:>9.2} GB peak resident", b as f64 / 1e9)?;
        }
        write_in_situ(&mut out, &report)?;
    }
    Ok(())
}

/// The benchmark, generic over the backend `with_backend` picked.
struct BenchJob<'a> {
    args: &'a Args,
}

impl BackendJob for BenchJob<'_> {
    type Output = Report;

    fn run<B: Backend + 'static>(self, b: Arc<B>) -> anyhow::Result<Report> {
        if !self.args.in_situ {
            return measure(self.args, b, &|_| None);
        }
        let timed = Arc::new(TimedBackend::new(b, self.args.batch));
        measure(self.args, timed.clone(), &|rows| Some(timed.take(rows)))
    }
}

/// The whole benchmark on backend `b`. `calls(rows)` returns the backend calls and joins
/// made since it was last called (`None` for an untimed backend) and takes the batch size of
/// the phase that follows: it is called when the timed training steps start and end and
/// when the timed inference starts and ends.
fn measure<B: Backend + 'static>(
    args: &Args,
    b: Arc<B>,
    calls: &dyn Fn(usize) -> Option<InSitu>,
) -> anyhow::Result<Report> {
    let family = args.model;
    let tasks = TASKS
        .iter()
        .map(|&(name, n)| {
            let tags: Vec<String> = (0..n).map(|i| format!("T{i}")).collect();
            TaskConfig {
                tags,
                ..TaskConfig::new(name, &[])
            }
        })
        .collect();
    let mut cfg = ModelConfig::new(family, tasks, VOCAB);
    cfg.word_dim = 50;
    if let Some(p) = args.precision.packed() {
        b.packed_products(p)
            .with_context(|| format!("--precision {}", p.name()))?;
    }
    let on_cpu = args.backend == BackendKind::Cpu;
    let products = product_rates(b.as_ref(), args.batch, on_cpu, args.precision)?;
    let peak = products
        .iter()
        .filter(|p| p.precision == Precision::F32)
        .map(|p| p.gflops)
        .fold(square_gflops(b.as_ref())?, f64::max);
    let backend_name = b.name();
    let mut tagger = Tagger::new(cfg.clone(), b, args.seed, None)?;
    // Training records every call, so only the inference measurement runs packed.
    args.precision.apply(&mut tagger, "--precision")?;
    let pool = host_pool(args.threads)?;
    tagger.set_thread_pool(pool.clone());

    let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ 0x5eed);
    let mut adam = Adam::new(AdamConfig::default());
    let (mut tokens, mut flops, mut elapsed) = (0usize, 0u64, 0.0f64);
    let (mut phases, mut grad_elems) = (Phases::default(), 0usize);
    for step in 0..WARMUP_STEPS + args.steps {
        if step == WARMUP_STEPS {
            calls(args.batch);
        }
        let task = rng.random_range(0..TASKS.len());
        let lens: Vec<usize> = (0..args.batch).map(|_| draw_length(&mut rng)).collect();
        let batch = SyntheticBatch::new(&mut rng, lens, TASKS[task].1);
        let start = Instant::now();
        let mut tape = tagger.tape();
        let loss = tagger.loss(&mut tape, &batch.input(), task, &batch.gold, step as u64)?;
        let forward = start.elapsed().as_secs_f64();
        let grads = tape
            .backward(loss)
            .map_err(ModelError::from)?
            .into_param_grads();
        let backward = start.elapsed().as_secs_f64();
        adam.step_clipped(tagger.params_mut(), &grads, 5.0, pool.as_deref())?;
        if step >= WARMUP_STEPS {
            let total = start.elapsed().as_secs_f64();
            elapsed += total;
            phases.forward_ms += forward * 1e3;
            phases.backward_ms += (backward - forward) * 1e3;
            phases.optimizer_ms += (total - backward) * 1e3;
            grad_elems += grads.iter().map(|(_, g)| g.values().len()).sum::<usize>();
            let real = batch.lens.iter().sum::<usize>();
            tokens += real;
            flops += 3 * forward_flops(&cfg, &[task], real)?;
        }
    }
    let in_situ = calls(args.batch).unwrap_or_default();
    let train_tokens_per_s = tokens as f64 / elapsed;
    let per_step = args.steps as f64;
    phases.forward_ms /= per_step;
    phases.backward_ms /= per_step;
    phases.optimizer_ms /= per_step;
    let gflops = flops as f64 / elapsed / 1e9;

    let mut lens: Vec<usize> = (0..args.infer_sentences)
        .map(|_| draw_length(&mut rng))
        .collect();
    lens.sort_unstable();
    let batches: Vec<SyntheticBatch> = tagging_batches(&lens)
        .into_iter()
        .map(|r| SyntheticBatch::new(&mut rng, lens[r].to_vec(), 1))
        .collect();
    let all: Vec<usize> = (0..TASKS.len()).collect();
    // One untimed pass: the layer cache pool then holds a cache for every row bucket
    // the batches need, as it does in steady state (e.g. evaluating every epoch).
    for batch in &batches {
        tagger.predict(&batch.input(), &all)?;
    }
    calls(EVAL_BATCH);
    let start = Instant::now();
    let mut infer_tokens = 0usize;
    for batch in &batches {
        let tags = tagger.predict(&batch.input(), &all)?;
        infer_tokens += tags.first().map_or(0, |t| t.iter().map(Vec::len).sum());
    }
    let infer_tokens_per_s = infer_tokens as f64 / start.elapsed().as_secs_f64();
    let in_situ_inference = calls(EVAL_BATCH).unwrap_or_default();
    let topology = cpu_topology();

    Ok(Report {
        model: family.name(),
        backend: backend_name,
        threads: args.threads,
        batch: args.batch,
        steps: args.steps,
        train_tokens: tokens,
        train_tokens_per_s,
        infer_tokens_per_s,
        infer_precision: args.precision,
        gflops,
        peak_gflops: peak,
        fraction_of_peak: gflops / peak,
        phases,
        grad_elems_per_step: grad_elems as f64 / per_step,
        peak_rss_bytes: None,
        cpu: cpu_model(),
        logical_cpus: topology.map(|t| t.logical),
        physical_cores: topology.map(|t| t.cores),
        kernels: Kernels::active().name(),
        kernels_available: Kernels::available().iter().map(|k| k.name()).collect(),
        products,
        joins: args.in_situ.then_some(in_situ.joins),
        joins_inference: args.in_situ.then_some(in_situ_inference.joins),
        in_situ: in_situ.calls,
        in_situ_inference: in_situ_inference.calls,
        infer_tokens,
    })
}

/// With `--in-situ`: the backend calls of a training step by kind, in milliseconds per
/// step (summed over the threads that made them), then those of the inference per 1,000
/// tokens; for products, GFLOP/s. After each, where the layers joined two threads: the
/// joins' wall time, a thread's waiting inside them, and the wall time outside them.
fn write_in_situ(out: &mut impl Write, report: &Report) -> std::io::Result<()> {
    let ph = &report.phases;
    let phases = [
        (
            "training",
            &report.in_situ,
            &report.joins,
            report.steps as f64,
            "step",
            ph.forward_ms + ph.backward_ms + ph.optimizer_ms,
        ),
        (
            "inference",
            &report.in_situ_inference,
            &report.joins_inference,
            report.infer_tokens as f64 / 1e3,
            "1,000 tokens",
            1e6 / report.infer_tokens_per_s,
        ),
    ];
    for (phase, groups, joins, units, unit, wall_ms) in phases {
        if groups.is_empty() {
            continue;
        }
        let total: f64 = groups.iter().map(|g| g.totals.seconds).sum();
        writeln!(
            out,
            "in situ    {:>9.2} ms per {unit} inside backend calls in {phase} (summed over threads), by kind:",
            total / units * 1e3
        )?;
        for g in groups {
            let t = &g.totals;
            let rate = if t.flops > 0 {
                format!("{:>6.1} GFLOP/s", t.flops as f64 / t.seconds / 1e9)
            } else {
                " ".repeat(14)
            };
            writeln!(
                out,
                "  {:>8.2} ms  {rate}  {:>7.1} calls  {}",
                t.seconds / units * 1e3,
                t.calls as f64 / units,
                g.kind
            )?;
        }
        if let Some(j) = joins.as_ref().filter(|j| j.calls > 0) {
            let ms = |s: f64| s / units * 1e3;
            writeln!(
                out,
                "joins      {:>9.2} ms per {unit} in {:.1} two-sided joins (the layers' directions), \
                 a thread waiting {:.2} ms of it ({:.2} ms from unequal sides); {:.2} ms of the \
                 {:.2} ms wall outside joins, {:.2} ms of them in backend calls",
                ms(j.wall_seconds),
                j.calls as f64 / units,
                ms(j.waiting_seconds),
                ms(j.unequal_seconds),
                (wall_ms - ms(j.wall_seconds)).max(0.0),
                wall_ms,
                ms(j.outside_call_seconds)
            )?;
        }
    }
    Ok(())
}

/// One sentence length drawn from [`LENGTH_HISTOGRAM`].
fn draw_length(rng: &mut ChaCha8Rng) -> usize {
    let total: u32 = LENGTH_HISTOGRAM.iter().map(|&(_, _, n)| n).sum();
    let mut pick = rng.random_range(0..total);
    for &(lo, hi, n) in &LENGTH_HISTOGRAM {
        if pick < n {
            return rng.random_range(lo..=hi);
        }
        pick -= n;
    }
    unreachable!("internal: the pick is below the histogram's total")
}

/// A time-major batch of random word ids, caps and gold tags.
struct SyntheticBatch {
    /// Padded steps `T` (the longest sentence).
    steps: usize,
    /// Sentence lengths.
    lens: Vec<usize>,
    /// Word ids (T·B).
    words: Vec<u32>,
    /// Capitalization classes (T·B).
    caps: Vec<u32>,
    /// Gold tags (T·B).
    gold: Vec<u32>,
}

impl SyntheticBatch {
    /// Random contents for sentences of `lens`, gold tags below `num_tags`.
    fn new(rng: &mut ChaCha8Rng, lens: Vec<usize>, num_tags: usize) -> Self {
        let steps = lens.iter().copied().max().unwrap_or(0);
        let n = steps * lens.len();
        let words = (0..n).map(|_| rng.random_range(1..VOCAB as u32)).collect();
        let caps = (0..n)
            .map(|_| rng.random_range(0..sclstm_model::NUM_CAPS as u32))
            .collect();
        let gold = (0..n)
            .map(|_| rng.random_range(0..num_tags as u32))
            .collect();
        SyntheticBatch {
            steps,
            lens,
            words,
            caps,
            gold,
        }
    }

    /// The model input view of this batch.
    fn input(&self) -> ModelInput<'_> {
        ModelInput {
            steps: self.steps,
            batch: self.lens.len(),
            lens: &self.lens,
            word_ids: &self.words,
            cap_ids: &self.caps,
            char_ids: &[],
            char_lens: &[],
            word_len_max: 0,
            contextual: &[],
        }
    }
}

/// Matmul FLOPs of the forward pass for `tasks` over `rows` token rows: per
/// direction of each layer run, the input projection `2·rows·D·4H`, the recurrent
/// products `2·rows·H·4H`, and per task gate `2·rows·(D_k + H)·H`; plus each task's head
/// `2·rows·D_s·tags`. Every product has two gradient products of the same size in the
/// backward, so a training step is 3× this (bias sums and the first layer's input
/// gradient included, which the layers compute too).
///
/// # Errors
/// An LSTM-d task without a layer assignment.
fn forward_flops(cfg: &ModelConfig, tasks: &[usize], rows: usize) -> Result<u64, ModelError> {
    let h = cfg.hidden as u64;
    let rows = rows as u64;
    let d0 = cfg.input_dim() as u64;
    let layer = |l: usize, gates: u64| {
        let d = if l == 0 { d0 } else { 2 * h };
        // Gates read the layer's shared input (the default task-input reading).
        2 * 2 * rows * (d * 4 * h + h * 4 * h + gates * (d + h) * h)
    };
    let stack = |n_layers: usize, top_gates: u64| -> u64 {
        (0..n_layers)
            .map(|l| layer(l, if l + 1 == n_layers { top_gates } else { 0 }))
            .sum()
    };
    let encoders = match cfg.family {
        Family::Stl => tasks.len() as u64 * stack(cfg.layers, 0),
        Family::LstmS => stack(cfg.layers, 0),
        Family::ScLstm => stack(cfg.layers, tasks.len() as u64),
        Family::LstmD => {
            let mut need = 1;
            for &k in tasks {
                need = need.max(cfg.supervised_layer(k)?);
            }
            stack(need, 0)
        }
    };
    let d_s = if cfg.family == Family::ScLstm {
        4 * h
    } else {
        2 * h
    };
    let heads: u64 = tasks
        .iter()
        .map(|&k| 2 * rows * d_s * cfg.tasks[k].tags.len() as u64)
        .sum();
    Ok(encoders + heads)
}

/// Best GFLOP/s of a few `PEAK_N`³ products through [`Backend::gemm`].
fn square_gflops<B: Backend>(b: &B) -> anyhow::Result<f64> {
    let n = PEAK_N;
    let fill: Vec<B::Elem> = (0..n * n)
        .map(|i| B::Elem::from_f64(((i % 7) as f64 - 3.0) * 0.25))
        .collect();
    let a = b.upload(&fill)?;
    let w = b.upload(&fill)?;
    let mut c = b.zeros(n * n)?;
    let g = Gemm::new(n, n, n);
    b.gemm(&g, &a, &w, None, &mut c)?;
    b.sync()?;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        b.gemm(&g, &a, &w, None, &mut c)?;
        b.sync()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(g.flops() as f64 / best / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paper(family: Family) -> ModelConfig {
        let tasks = TASKS
            .iter()
            .map(|&(name, n)| TaskConfig {
                tags: (0..n).map(|i| format!("T{i}")).collect(),
                ..TaskConfig::new(name, &[])
            })
            .collect();
        let mut cfg = ModelConfig::new(family, tasks, VOCAB);
        cfg.word_dim = 50;
        cfg
    }

    #[test]
    fn flop_count_matches_a_hand_count() -> Result<(), ModelError> {
        // LSTM-s, one row, NER head: layer 1 reads 58, layers 2–3 read 600, H = 300.
        // Per direction and row: 2·(D·1200 + 300·1200); two directions; head 2·600·9.
        let cfg = paper(Family::LstmS);
        let per_dir = |d: u64| 2 * (d * 1200 + 300 * 1200);
        let want = 2 * (per_dir(58) + 2 * per_dir(600)) + 2 * 600 * 9;
        assert_eq!(forward_flops(&cfg, &[0], 1)?, want);
        // SC-LSTM adds one gate (2·(600 + 300)·300 per direction) on the top layer and
        // reads [h ⊕ q] (1200) in the head.
        let sc = paper(Family::ScLstm);
        let want_sc = 2 * (per_dir(58) + 2 * per_dir(600) + 2 * 900 * 300) + 2 * 1200 * 9;
        assert_eq!(forward_flops(&sc, &[0], 1)?, want_sc);
        // Rows scale linearly.
        assert_eq!(forward_flops(&sc, &[0], 7)?, 7 * want_sc);
        Ok(())
    }

    #[test]
    fn ragged_rows_run_every_token_once_longest_sentences_last() {
        let rows = ragged_rows(10);
        let mut rng = ChaCha8Rng::seed_from_u64(RAGGED_SEED);
        let mut at = 0;
        for _ in 0..RAGGED_BATCHES {
            let lens: Vec<usize> = (0..10).map(|_| draw_length(&mut rng)).collect();
            let steps = *lens.iter().max().unwrap();
            let batch = &rows[at..at + steps];
            at += steps;
            assert_eq!(batch.iter().sum::<usize>(), lens.iter().sum::<usize>());
            assert_eq!(batch[0], 10, "every sentence runs at the first step");
            assert!(batch.windows(2).all(|w| w[1] <= w[0]), "{batch:?}");
            assert_eq!(
                *batch.last().unwrap(),
                lens.iter().filter(|&&l| l == steps).count()
            );
        }
        assert_eq!(at, rows.len());
    }

    #[test]
    fn lengths_stay_inside_the_histogram() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let lens: Vec<usize> = (0..5000).map(|_| draw_length(&mut rng)).collect();
        assert!(lens.iter().all(|&l| (1..=159).contains(&l)));
        let mean = lens.iter().sum::<usize>() as f64 / lens.len() as f64;
        assert!((15.0..20.0).contains(&mean), "mean length {mean}");
    }
}
