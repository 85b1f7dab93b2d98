//! The wgpu backend trains the same model as the CPU backend (run on lavapipe in CI).
//!
//! Tolerance: |wgpu − cpu| ≤ 1e-4 + 1e-3·|cpu|. Both run in f32; software Vulkan's
//! transcendental functions differ from the host's in the last bits, and the differences
//! grow through BPTT, so exact equality is not expected.

use std::sync::Arc;

use sclstm_autodiff::optim::{Adam, AdamConfig};
use sclstm_core::{Backend, Matrix};
use sclstm_cpu::CpuBackend;
use sclstm_layers::{
    DirectionWeights, LayerWorkspace, LstmWeights, ScLstmArgs, TaskGateWeights, TaskInput,
    sc_lstm_forward,
};
use sclstm_model::{CharCnnConfig, Family, HeadKind, ModelConfig, ModelInput, Tagger, TaskConfig};
use sclstm_wgpu::WgpuBackend;

const T: usize = 6;
const B: usize = 3;
const W: usize = 4;

struct Data {
    lens: Vec<usize>,
    words: Vec<u32>,
    caps: Vec<u32>,
    chars: Vec<u32>,
    char_lens: Vec<usize>,
    gold: [Vec<u32>; 2],
}

impl Data {
    fn new() -> Self {
        let lens = vec![6, 3, 5];
        let n = T * B;
        let words: Vec<u32> = (0..n)
            .map(|p| {
                if p / B < lens[p % B] {
                    1 + (p as u32 * 7) % 29
                } else {
                    0
                }
            })
            .collect();
        let caps = words.iter().map(|w| w % 8).collect();
        let chars = (0..n * W).map(|i| 1 + (i as u32 * 5) % 9).collect();
        let char_lens = words
            .iter()
            .map(|&w| if w == 0 { 0 } else { 1 + (w as usize % W) })
            .collect();
        let gold = [
            words.iter().map(|w| w % 3).collect(),
            words.iter().map(|w| (w / 2) % 4).collect(),
        ];
        Data {
            lens,
            words,
            caps,
            chars,
            char_lens,
            gold,
        }
    }

    fn input(&self) -> ModelInput<'_> {
        ModelInput {
            steps: T,
            batch: B,
            lens: &self.lens,
            word_ids: &self.words,
            cap_ids: &self.caps,
            char_ids: &self.chars,
            char_lens: &self.char_lens,
            word_len_max: W,
            contextual: &[],
        }
    }
}

fn config() -> ModelConfig {
    let task = |name: &str, tags: &[&str]| TaskConfig {
        head: HeadKind::Crf,
        ..TaskConfig::new(name, tags)
    };
    let mut c = ModelConfig::new(
        Family::ScLstm,
        vec![
            task("ner", &["O", "B-PER", "I-PER"]),
            task("pos", &["NOUN", "VERB", "DET", "ADJ"]),
        ],
        32,
    );
    c.word_dim = 6;
    c.hidden = 5;
    c.layers = 2;
    c.dropout = 0.0;
    c.char_cnn = Some(CharCnnConfig {
        channels: 4,
        ..CharCnnConfig::new(10)
    });
    c
}

fn close(what: &str, a: f32, b: f32) {
    let tol = 1e-4 + 1e-3 * b.abs();
    assert!((a - b).abs() <= tol, "{what}: wgpu {a} vs cpu {b}");
}

/// Loss and gradients of one training step of task `k`, in parameter order.
fn step<Bk: Backend<Elem = f32> + 'static>(
    tagger: &Tagger<Bk>,
    data: &Data,
    k: usize,
) -> (f32, Vec<Vec<f32>>) {
    let mut tape = tagger.tape();
    let loss = tagger
        .loss(&mut tape, &data.input(), k, &data.gold[k], 0)
        .unwrap();
    let value = tape.value(loss)[[0, 0]];
    let grads = tape.backward(loss).unwrap().into_param_grads();
    let all = tagger
        .params()
        .iter()
        .map(|(id, _, m)| match grads.get(id) {
            Some(g) => g.to_dense().iter().copied().collect(),
            None => vec![0.0; m.len()],
        })
        .collect();
    (value, all)
}

fn wgpu() -> Arc<WgpuBackend> {
    Arc::new(WgpuBackend::new().unwrap_or_else(|e| {
        panic!("{e}\nthe wgpu tests need a Vulkan driver: apt-get install mesa-vulkan-drivers libvulkan1")
    }))
}

#[test]
fn sc_lstm_crf_training_step_matches_cpu() {
    let data = Data::new();
    let cpu = Tagger::new(
        config(),
        Arc::new(CpuBackend::<f32>::new(1).unwrap()),
        3,
        None,
    )
    .unwrap();
    let gpu = Tagger::new(config(), wgpu(), 3, None).unwrap();
    for k in 0..2 {
        let (lc, gc) = step(&cpu, &data, k);
        let (lg, gg) = step(&gpu, &data, k);
        close("loss", lg, lc);
        let names: Vec<String> = cpu.params().iter().map(|(_, n, _)| n.to_string()).collect();
        let mut nonzero = 0;
        for ((name, c), g) in names.iter().zip(&gc).zip(&gg) {
            for (i, (x, y)) in g.iter().zip(c).enumerate() {
                close(&format!("task {k} grad {name}[{i}]"), *x, *y);
                nonzero += usize::from(*y != 0.0);
            }
        }
        assert!(
            nonzero > 100,
            "the step reaches the parameters ({nonzero} non-zero gradients)"
        );
    }
}

/// One bidirectional SC-LSTM layer call with two task gates on sentences of lengths 8
/// and 1 (two units in the packed layout, sentences finishing at different steps) on
/// `be`: its output and its input gradient for an all-ones output gradient.
fn layer_call<Bk: Backend<Elem = f32> + 'static>(be: Arc<Bk>) -> (Matrix<f32>, Matrix<f32>) {
    let (d, h) = (5, 6);
    let lens = [8, 1, 8, 1];
    let rows = 8 * lens.len();
    let m = |r: usize, c: usize, seed: usize| {
        Matrix::from_shape_fn((r, c), |(i, j)| {
            (((i * 31 + j * 17 + seed * 7) % 23) as f32 - 11.0) / 20.0
        })
    };
    let x = m(rows, d, 1);
    let cells: Vec<[Matrix<f32>; 3]> = (0..2)
        .map(|s| [m(4 * h, d, 2 + s), m(4 * h, h, 4 + s), m(1, 4 * h, 6 + s)])
        .collect();
    let gates: Vec<Vec<[Matrix<f32>; 3]>> = (0..2)
        .map(|s| {
            (0..2)
                .map(|k| [m(h, d, 8 + s + k), m(h, h, 10 + s + k), m(1, h, 12 + s + k)])
                .collect()
        })
        .collect();
    let args = ScLstmArgs {
        x: &x,
        lens: &lens,
        task_inputs: vec![TaskInput::Shared, TaskInput::Shared],
        directions: cells
            .iter()
            .zip(&gates)
            .map(|([w_ih, w_hh, b], g)| DirectionWeights {
                cell: LstmWeights { w_ih, w_hh, b },
                tasks: g
                    .iter()
                    .map(|[u, w, b]| TaskGateWeights { u, w, b })
                    .collect(),
            })
            .collect(),
        weights_id: None,
    };
    let ws = LayerWorkspace::new(be);
    let (out, op) = sc_lstm_forward(&ws, &args, true).unwrap();
    let d_out = Matrix::from_elem(out.dim(), 1.0);
    let grads = op.expect("a recorded call").backward(&d_out).unwrap();
    let d_x = grads[0].clone().expect("x gets a gradient");
    (out, d_x)
}

/// The layer call uploads its input once, gathers each unit's rows on the device and
/// collects every unit's `h` and `q^k` into one buffer: the forward ends in a single
/// download (one submission), the backward in one per direction plus one for the input
/// gradient; output and input gradient match the CPU.
#[test]
fn layer_calls_download_once_forward_and_once_per_direction_backward() {
    let be = wgpu();
    // Warm up: pipelines, caches, arenas.
    layer_call(Arc::clone(&be));
    let before = be.stats().submits;
    let (out, d_x) = layer_call(Arc::clone(&be));
    let after = be.stats().submits;
    let (cpu_out, cpu_d_x) = layer_call(Arc::new(CpuBackend::<f32>::new(1).unwrap()));
    for (i, (g, c)) in out.iter().zip(&cpu_out).enumerate() {
        close(&format!("out[{i}]"), *g, *c);
    }
    for (i, (g, c)) in d_x.iter().zip(&cpu_d_x).enumerate() {
        close(&format!("d_x[{i}]"), *g, *c);
    }
    assert!(cpu_out.iter().any(|&v| v != 0.0) && cpu_d_x.iter().any(|&v| v != 0.0));
    // Forward: one download. Backward: the input gradient once, plus one download per
    // direction of its packed weight gradients (nine matrices, summed over both groups
    // on the device).
    assert_eq!(after - before, 1 + 1 + 2);
}

#[test]
fn twenty_step_training_runs_agree() {
    let data = Data::new();
    let mut cpu = Tagger::new(
        config(),
        Arc::new(CpuBackend::<f32>::new(1).unwrap()),
        5,
        None,
    )
    .unwrap();
    let mut gpu = Tagger::new(config(), wgpu(), 5, None).unwrap();
    let (mut oc, mut og) = (
        Adam::new(AdamConfig::default()),
        Adam::new(AdamConfig::default()),
    );
    let mut first = None;
    let mut last = 0.0;
    for s in 0..20 {
        let k = s % 2;
        let mut losses = [0.0f32; 2];
        for (i, (t, opt)) in [
            (&mut cpu as &mut dyn Train, &mut oc),
            (&mut gpu as &mut dyn Train, &mut og),
        ]
        .into_iter()
        .enumerate()
        {
            losses[i] = t.train_step(&data, k, opt);
        }
        close(&format!("loss at step {s}"), losses[1], losses[0]);
        if k == 0 {
            first.get_or_insert(losses[0]);
            last = losses[0];
        }
    }
    assert!(
        last < first.unwrap(),
        "training lowers the loss: {first:?} → {last}"
    );
}

/// One Adam step on either backend.
trait Train {
    fn train_step(&mut self, data: &Data, k: usize, opt: &mut Adam<f32>) -> f32;
}

impl<Bk: Backend<Elem = f32> + 'static> Train for Tagger<Bk> {
    fn train_step(&mut self, data: &Data, k: usize, opt: &mut Adam<f32>) -> f32 {
        let (value, grads) = {
            let mut tape = self.tape();
            let loss = self
                .loss(&mut tape, &data.input(), k, &data.gold[k], 0)
                .unwrap();
            (
                tape.value(loss)[[0, 0]],
                tape.backward(loss).unwrap().into_param_grads(),
            )
        };
        opt.step_clipped(self.params_mut(), &grads, 5.0, None)
            .unwrap();
        value
    }
}
