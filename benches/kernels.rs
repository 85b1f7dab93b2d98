//! Criterion benchmarks of the kernels that decide training speed, one group per
//! `<backend>_<kernel>`:
//!
//! | group                | what                                                            | throughput |
//! |----------------------|-----------------------------------------------------------------|------------|
//! | `cpu_gemm`           | gate-shaped products through `Backend::gemm`, fast vs naive     | FLOPs      |
//! | `cpu_lstm_layer`     | BiLSTM layer forward (+ backward) at the paper's sizes          | tokens     |
//! | `cpu_sc_lstm_layer`  | Bi-SC-LSTM layer, 1 task gate (training) / 3 (inference)        | tokens     |
//! | `cpu_rows`           | row gather (embedding lookup) and scatter-add (its gradient), 300 ids into a 40k × 58 table, 30% repeated | rows |
//! | `cpu_crf`            | CRF NLL + gradient and Viterbi, 9 and 23 tags, T 30, B 10       | tokens     |
//! | `cpu_train_step`     | one whole SC-LSTM training step (paper config, 3 tasks, softmax heads): forward, backward, clipping, Adam | tokens |
//! | `wgpu_*`             | the gemm, rows and layer groups on the wgpu backend, when a GPU adapter exists |   |
//!
//! Criterion prints throughput as `elem/s`: FLOP/s for the gemm groups, tokens/s for the
//! others. Inputs are synthetic and fixed (a seeded generator), so runs are comparable.
//!
//! ```text
//! cargo bench --bench kernels                 # everything (a few minutes on 2 cores)
//! cargo bench --bench kernels -- cpu_gemm     # one group
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use sclstm_autodiff::optim::{Adam, AdamConfig};
use sclstm_core::{Backend, Gemm, Matrix, RowCopy};
use sclstm_cpu::CpuBackend;
use sclstm_cpu::gemm::gemm_naive;
use sclstm_layers::{
    CrfReduction, CrfWeights, DirectionWeights, LayerWorkspace, LstmWeights, ScLstmArgs,
    TaskGateWeights, TaskInput, crf_nll, sc_lstm_forward, viterbi_decode,
};
use sclstm_model::{Family, ModelConfig, ModelInput, Tagger, TaskConfig};

/// Hidden size of every layer (paper config).
const HIDDEN: usize = 300;
/// Sentences per batch (paper config).
const BATCH: usize = 10;
/// Input width of layer 1: 50-d GloVe ⊕ 8 capitalization features.
const D_FIRST: usize = 58;
/// Input width of layers 2 and 3: `[h_fwd ⊕ h_bwd]`.
const D_UPPER: usize = 2 * HIDDEN;
/// Sentence lengths of the layer benchmarks: padded to `T = 25`, 195 tokens in all.
const LAYER_LENS: [usize; BATCH] = [25, 22, 19, 24, 13, 21, 25, 17, 9, 20];
/// Steps of the CRF benchmarks (every sentence full length).
const CRF_STEPS: usize = 30;
/// Tag-set sizes of the CRF benchmarks: NER (BIO) and chunking (BIO).
const CRF_TAGS: [usize; 2] = [9, 23];
/// Tasks of the paper config (NER, chunking, POS).
const TASKS: usize = 3;
/// Tag counts of the paper's tasks (NER BIO, chunking BIO, UPOS) for the training step.
const TASK_TAGS: [usize; TASKS] = [9, 23, 17];
/// Word vocabulary of the training-step model (about the shipped data's size).
const VOCAB: usize = 40_000;

/// Short, fixed measurement settings so that the whole suite runs in minutes on 2 cores.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10)
}

/// `n` values uniform in `[-scale, scale)` from a seeded xorshift generator.
fn synth(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let unit = (s >> 40) as f32 / (1u64 << 24) as f32;
            (2.0 * unit - 1.0) * scale
        })
        .collect()
}

/// A `rows × cols` matrix of [`synth`] values.
fn synth_matrix(rows: usize, cols: usize, seed: u64, scale: f32) -> Matrix<f32> {
    Matrix::from_shape_vec((rows, cols), synth(rows * cols, seed, scale))
        .expect("internal: synth returns rows·cols values")
}

/// Times `iters` runs of `step` on `be`, waiting for the device before the clock stops.
fn timed<B: Backend>(be: &B, iters: u64, mut step: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        step();
    }
    be.sync().expect("internal: backend sync");
    start.elapsed()
}

/// The gate-shaped products, as the layers issue them (weights stored `n × k`, so
/// `trans_b`): one step's gates from a 408-wide `[x ⊕ h]`, the same for 30 steps at
/// once (the hoisted input projection), and the recurrent product `h_{t-1}·W_hhᵀ`.
fn gemm_shapes() -> [(&'static str, Gemm); 3] {
    let tb = |m, n, k| Gemm {
        trans_b: true,
        ..Gemm::new(m, n, k)
    };
    [
        ("gate_10x408x1200", tb(10, 4 * HIDDEN, 408)),
        ("inproj_300x408x1200", tb(300, 4 * HIDDEN, 408)),
        ("recurrent_10x300x1200", tb(10, 4 * HIDDEN, HIDDEN)),
    ]
}

/// Largest relative difference between two results, relative to the largest magnitude.
fn max_rel_diff(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want)
        .fold(0.0f32, |m, (g, w)| m.max((g - w).abs() / scale))
}

/// Benchmarks `Backend::gemm` of every variant at the gate shapes, each checked against
/// the naive reference first; with `with_naive` the reference itself is timed too.
fn gemm_group<B: Backend<Elem = f32>>(
    c: &mut Criterion,
    group_name: &str,
    variants: &[(&str, &B)],
    with_naive: bool,
) {
    let mut group = c.benchmark_group(group_name);
    group.sampling_mode(SamplingMode::Flat);
    for (label, g) in gemm_shapes() {
        let a = synth(g.m * g.k, 1, 1.0);
        let b = synth(g.k * g.n, 2, 1.0);
        let mut want = vec![0.0f32; g.m * g.n];
        gemm_naive(&g, &a, &b, None, &mut want).expect("internal: gemm shapes fit");
        group.throughput(Throughput::Elements(g.flops()));
        for &(variant, be) in variants {
            let a_buf = be.upload(&a).expect("internal: upload");
            let b_buf = be.upload(&b).expect("internal: upload");
            let mut c_buf = be.zeros(g.m * g.n).expect("internal: alloc");
            be.gemm(&g, &a_buf, &b_buf, None, &mut c_buf)
                .expect("internal: gemm shapes fit");
            let got = be.download(&c_buf).expect("internal: download");
            let err = max_rel_diff(&got, &want);
            assert!(err < 1e-4, "{group_name}/{variant}/{label}: error {err}");
            group.bench_function(BenchmarkId::new(variant, label), |bch| {
                bch.iter_custom(|iters| {
                    timed(be, iters, || {
                        be.gemm(&g, &a_buf, &b_buf, None, &mut c_buf)
                            .expect("internal: gemm shapes fit");
                    })
                })
            });
        }
        if with_naive {
            let mut out = vec![0.0f32; g.m * g.n];
            group.bench_function(BenchmarkId::new("naive", label), |bch| {
                bch.iter(|| {
                    gemm_naive(&g, &a, &b, None, &mut out).expect("internal: gemm shapes fit");
                    black_box(out[0])
                })
            });
        }
    }
    group.finish();
}

/// Row ids of the rows groups: 300 positions (a batch of 10 sentences of 30 tokens)
/// into a `VOCAB`-row table; every third position repeats an earlier id, as frequent
/// words do.
fn row_ids() -> Vec<u32> {
    let mut ids: Vec<u32> = synth(300, 5, 1.0)
        .iter()
        .map(|v| ((v.abs() * 7919.0) as u32 * 31) % VOCAB as u32)
        .collect();
    for p in (3..ids.len()).step_by(3) {
        ids[p] = ids[p / 3];
    }
    ids
}

/// Benchmarks `Backend::gather_rows` and `Backend::scatter_add_rows` as an embedding
/// lookup of `D_FIRST`-wide rows and its gradient, each checked against a host loop
/// first.
fn rows_group<B: Backend<Elem = f32>>(c: &mut Criterion, group_name: &str, be: &B) {
    let ids = row_ids();
    let r = RowCopy::packed(VOCAB, D_FIRST);
    let table = synth(VOCAB * D_FIRST, 6, 1.0);
    let dense = synth(ids.len() * D_FIRST, 7, 1.0);
    let mut want_gather = Vec::with_capacity(dense.len());
    let mut want_scatter = table.clone();
    for (p, &id) in ids.iter().enumerate() {
        let row = id as usize * D_FIRST;
        want_gather.extend_from_slice(&table[row..row + D_FIRST]);
        for j in 0..D_FIRST {
            want_scatter[row + j] += dense[p * D_FIRST + j];
        }
    }
    let table_buf = be.upload(&table).expect("internal: upload");
    let dense_buf = be.upload(&dense).expect("internal: upload");
    let mut out = be.zeros(dense.len()).expect("internal: alloc");
    let mut acc = be.upload(&table).expect("internal: upload");
    be.gather_rows(&r, &ids, &table_buf, &mut out)
        .expect("internal: ids fit");
    be.scatter_add_rows(&r, &ids, &dense_buf, &mut acc)
        .expect("internal: ids fit");
    assert_eq!(be.download(&out).expect("internal: download"), want_gather);
    assert_eq!(be.download(&acc).expect("internal: download"), want_scatter);

    let mut group = c.benchmark_group(group_name);
    group.throughput(Throughput::Elements(ids.len() as u64));
    group.bench_function("gather_300x58", |bch| {
        bch.iter_custom(|iters| {
            timed(be, iters, || {
                be.gather_rows(&r, &ids, &table_buf, &mut out)
                    .expect("internal: ids fit");
            })
        })
    });
    group.bench_function("scatter_add_300x58", |bch| {
        bch.iter_custom(|iters| {
            timed(be, iters, || {
                be.scatter_add_rows(&r, &ids, &dense_buf, &mut acc)
                    .expect("internal: ids fit");
            })
        })
    });
    group.finish();
}

/// Host weights of one bidirectional (SC-)LSTM layer with `tasks` task gates.
struct LayerParams {
    /// Per direction: `W_ih` (4H, D), `W_hh` (4H, H), `b` (1, 4H).
    cell: Vec<[Matrix<f32>; 3]>,
    /// Per direction, per task: `U_k` (H, D), `W_k` (H, H), `b_k` (1, H).
    gates: Vec<Vec<[Matrix<f32>; 3]>>,
}

impl LayerParams {
    /// Uniform weights in `±1/√H` (PyTorch's LSTM initialisation), seeded per matrix.
    fn new(d: usize, tasks: usize) -> Self {
        let s = 1.0 / (HIDDEN as f32).sqrt();
        let h4 = 4 * HIDDEN;
        let cell = (0..2u64)
            .map(|di| {
                [
                    synth_matrix(h4, d, 10 + di, s),
                    synth_matrix(h4, HIDDEN, 20 + di, s),
                    synth_matrix(1, h4, 30 + di, s),
                ]
            })
            .collect();
        let gates = (0..2u64)
            .map(|di| {
                (0..tasks as u64)
                    .map(|k| {
                        let seed = 100 + 10 * k + di;
                        [
                            synth_matrix(HIDDEN, d, seed, s),
                            synth_matrix(HIDDEN, HIDDEN, seed + 1000, s),
                            synth_matrix(1, HIDDEN, seed + 2000, s),
                        ]
                    })
                    .collect()
            })
            .collect();
        LayerParams { cell, gates }
    }

    /// Layer arguments over `x`, requesting the first `tasks` gates (all reading `x`).
    fn args<'a>(&'a self, x: &'a Matrix<f32>, tasks: usize) -> ScLstmArgs<'a, f32> {
        let directions = self
            .cell
            .iter()
            .zip(&self.gates)
            .map(|([w_ih, w_hh, b], gates)| DirectionWeights {
                cell: LstmWeights { w_ih, w_hh, b },
                tasks: gates[..tasks]
                    .iter()
                    .map(|[u, w, b]| TaskGateWeights { u, w, b })
                    .collect(),
            })
            .collect();
        ScLstmArgs {
            x,
            lens: &LAYER_LENS,
            task_inputs: vec![TaskInput::Shared; tasks],
            directions,
            weights_id: None,
        }
    }
}

/// One layer case: name, input width, task gates requested, and whether the backward runs.
struct LayerCase {
    /// Benchmark id function part, e.g. `"fwd_bwd"`.
    what: &'static str,
    /// Input width `D`.
    d: usize,
    /// Task gates requested (0: a plain BiLSTM layer).
    tasks: usize,
    /// Run the backward too (training) or only the forward (inference).
    backward: bool,
}

/// Benchmarks the (SC-)LSTM layer cases on one backend, throughput in tokens.
fn layer_group<B: Backend<Elem = f32> + 'static>(
    c: &mut Criterion,
    group_name: &str,
    ws: &LayerWorkspace<B>,
    cases: &[LayerCase],
) {
    let steps = *LAYER_LENS.iter().max().expect("internal: non-empty batch");
    let rows = steps * BATCH;
    let tokens: usize = LAYER_LENS.iter().sum();
    let mut group = c.benchmark_group(group_name);
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(tokens as u64));
    for case in cases {
        let params = LayerParams::new(case.d, case.tasks);
        let x = synth_matrix(rows, case.d, 7, 1.0);
        let args = params.args(&x, case.tasks);
        let width = 2 * (1 + case.tasks) * HIDDEN;
        let d_out = synth_matrix(rows, width, 8, 1.0);
        let id = BenchmarkId::new(case.what, format!("d{}", case.d));
        group.bench_function(id, |bch| {
            bch.iter_custom(|iters| {
                timed(ws.backend().as_ref(), iters, || {
                    let (out, node) = sc_lstm_forward(ws, &args, case.backward)
                        .expect("internal: layer shapes are consistent");
                    if let Some(node) = node {
                        let grads = node
                            .backward(&d_out)
                            .expect("internal: gradient shape matches the output");
                        black_box(grads);
                    }
                    black_box(out);
                })
            })
        });
    }
    group.finish();
}

/// The BiLSTM cases: layer 1 and an upper layer, training and inference.
fn lstm_cases() -> Vec<LayerCase> {
    let case = |what, d, backward| LayerCase {
        what,
        d,
        tasks: 0,
        backward,
    };
    vec![
        case("fwd_bwd", D_FIRST, true),
        case("fwd_bwd", D_UPPER, true),
        case("fwd", D_FIRST, false),
        case("fwd", D_UPPER, false),
    ]
}

/// The Bi-SC-LSTM cases: a training batch computes its own task's gate only; inference
/// tags all three tasks at once.
fn sc_lstm_cases() -> Vec<LayerCase> {
    vec![
        LayerCase {
            what: "fwd_bwd_1task",
            d: D_FIRST,
            tasks: 1,
            backward: true,
        },
        LayerCase {
            what: "fwd_bwd_1task",
            d: D_UPPER,
            tasks: 1,
            backward: true,
        },
        LayerCase {
            what: "fwd_3tasks",
            d: D_UPPER,
            tasks: TASKS,
            backward: false,
        },
    ]
}

/// CRF NLL + gradient and Viterbi (host code), throughput in tokens.
fn crf_group(c: &mut Criterion) {
    let lens = [CRF_STEPS; BATCH];
    let rows = CRF_STEPS * BATCH;
    let mut group = c.benchmark_group("cpu_crf");
    group.throughput(Throughput::Elements(rows as u64));
    for tags in CRF_TAGS {
        let emissions = synth_matrix(rows, tags, 40 + tags as u64, 2.0);
        let transitions = synth_matrix(tags, tags, 50 + tags as u64, 0.1);
        let start = synth_matrix(1, tags, 60 + tags as u64, 0.1);
        let end = synth_matrix(1, tags, 70 + tags as u64, 0.1);
        let w = CrfWeights {
            transitions: &transitions,
            start: &start,
            end: &end,
        };
        let gold: Vec<usize> = synth(rows, 80 + tags as u64, 1.0)
            .iter()
            .map(|v| ((v + 1.0) * 0.5 * tags as f32) as usize % tags)
            .collect();
        let seed = Matrix::from_elem((1, 1), 1.0f32);
        group.bench_function(BenchmarkId::new("nll_grad", tags), |bch| {
            bch.iter(|| {
                let (loss, node) = crf_nll(&emissions, &gold, &lens, w, CrfReduction::Sum, true)
                    .expect("internal: crf shapes are consistent");
                let node = node.expect("internal: recording returns a node");
                let grads = node
                    .backward(&seed)
                    .expect("internal: loss gradient is 1×1");
                black_box((loss, grads))
            })
        });
        group.bench_function(BenchmarkId::new("viterbi", tags), |bch| {
            bch.iter(|| {
                viterbi_decode(&emissions, &lens, w, None)
                    .expect("internal: crf shapes are consistent")
            })
        });
    }
    group.finish();
}

/// One whole training step of the paper's SC-LSTM (GloVe 50d + caps, 3 × 300 Bi-SC-LSTM,
/// softmax heads) on the layer benchmarks' batch, the task cycling as in Algorithm 1:
/// forward, backward, clipping at 5 and an Adam update, host products on `threads`.
fn train_step_group(c: &mut Criterion, threads: usize) {
    let tasks = TASK_TAGS
        .iter()
        .enumerate()
        .map(|(k, &n)| {
            let tags: Vec<String> = (0..n).map(|i| format!("T{i}")).collect();
            TaskConfig {
                tags,
                ..TaskConfig::new(&format!("task{k}"), &[])
            }
        })
        .collect();
    let mut cfg = ModelConfig::new(Family::ScLstm, tasks, VOCAB);
    cfg.word_dim = 50;
    let be = Arc::new(CpuBackend::<f32>::new(threads).expect("internal: thread pool"));
    let mut tagger = Tagger::new(cfg, be, 1, None).expect("internal: paper config is valid");
    let pool = (threads > 1).then(|| {
        Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("internal: thread pool"),
        )
    });
    tagger.set_thread_pool(pool.clone());
    let steps = LAYER_LENS.iter().copied().max().unwrap_or(0);
    let words: Vec<u32> = synth(steps * BATCH, 11, 1.0)
        .iter()
        .map(|v| 2 + ((v.abs() * 1e4) as u32 % (VOCAB as u32 - 2)))
        .collect();
    let caps: Vec<u32> = words.iter().map(|w| w % 8).collect();
    let gold: Vec<u32> = words.iter().map(|w| w % 9).collect();
    let input = ModelInput {
        steps,
        batch: BATCH,
        lens: &LAYER_LENS,
        word_ids: &words,
        cap_ids: &caps,
        char_ids: &[],
        char_lens: &[],
        word_len_max: 0,
        contextual: &[],
    };
    let mut adam = Adam::new(AdamConfig::default());
    let mut group = c.benchmark_group("cpu_train_step");
    group.throughput(Throughput::Elements(LAYER_LENS.iter().sum::<usize>() as u64));
    let mut step = 0u64;
    group.bench_function(
        BenchmarkId::new("sc_lstm", format!("{threads}t")),
        |bench| {
            bench.iter(|| {
                // Gold ids below 9 are valid for every task's tag set.
                let task = (step % TASKS as u64) as usize;
                step += 1;
                let grads = {
                    let mut tape = tagger.tape();
                    let loss = tagger
                        .loss(&mut tape, &input, task, &gold, step)
                        .expect("internal: synthetic batch is valid");
                    tape.backward(loss)
                        .expect("internal: scalar loss")
                        .into_param_grads()
                };
                adam.step_clipped(tagger.params_mut(), &grads, 5.0, pool.as_deref())
                    .expect("internal: gradients match the parameters");
            });
        },
    );
    group.finish();
}

/// The CPU groups: gemm (2 threads, 1 thread, naive), rows, layers, CRF and a training
/// step.
fn cpu_benches(c: &mut Criterion) {
    let cpu2 = CpuBackend::<f32>::new(2).expect("internal: thread pool");
    let cpu1 = CpuBackend::<f32>::new(1).expect("internal: thread pool");
    gemm_group(
        c,
        "cpu_gemm",
        &[("fast_2t", &cpu2), ("fast_1t", &cpu1)],
        true,
    );
    rows_group(c, "cpu_rows", &cpu2);
    let ws = LayerWorkspace::new(Arc::new(cpu2));
    layer_group(c, "cpu_lstm_layer", &ws, &lstm_cases());
    layer_group(c, "cpu_sc_lstm_layer", &ws, &sc_lstm_cases());
    crf_group(c);
    train_step_group(c, 2);
    train_step_group(c, 1);
}

/// The wgpu groups, on a hardware adapter only (a software rasteriser would take the
/// suite from minutes to hours); otherwise says why they are skipped.
#[cfg(feature = "wgpu")]
fn wgpu_benches(c: &mut Criterion) {
    let be = match sclstm_wgpu::WgpuBackend::new() {
        Ok(be) => be,
        Err(e) => {
            eprintln!("wgpu benches skipped: {e}");
            return;
        }
    };
    let adapter = be.adapter();
    if format!("{:?}", adapter.device_type) == "Cpu" {
        eprintln!(
            "wgpu benches skipped: {} is a software adapter",
            adapter.name
        );
        return;
    }
    eprintln!("wgpu adapter: {} ({:?})", adapter.name, adapter.backend);
    gemm_group(c, "wgpu_gemm", &[("wgpu", &be)], false);
    rows_group(c, "wgpu_rows", &be);
    let ws = LayerWorkspace::new(Arc::new(be));
    layer_group(c, "wgpu_lstm_layer", &ws, &lstm_cases());
    layer_group(c, "wgpu_sc_lstm_layer", &ws, &sc_lstm_cases());
}

/// Without the `wgpu` feature there is no wgpu backend to measure.
#[cfg(not(feature = "wgpu"))]
fn wgpu_benches(_c: &mut Criterion) {}

criterion_group! {
    name = benches;
    config = config();
    targets = cpu_benches, wgpu_benches
}
criterion_main!(benches);
