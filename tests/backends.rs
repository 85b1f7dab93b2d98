//! The wgpu backend trains the same model as the CPU backend (run on lavapipe in CI).
//!
//! Tolerance: |wgpu − cpu| ≤ 1e-4 + 1e-3·|cpu|. Both run in f32; software Vulkan's
//! transcendental functions differ from the host's in the last bits, and the differences
//! grow through BPTT, so exact equality is not expected.

use std::sync::Arc;

use sclstm_autodiff::optim::{Adam, AdamConfig, clip_grad_norm};
use sclstm_core::Backend;
use sclstm_cpu::CpuBackend;
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
        let (value, mut grads) = {
            let mut tape = self.tape();
            let loss = self
                .loss(&mut tape, &data.input(), k, &data.gold[k], 0)
                .unwrap();
            (
                tape.value(loss)[[0, 0]],
                tape.backward(loss).unwrap().into_param_grads(),
            )
        };
        clip_grad_norm(&mut grads, 5.0);
        opt.step(self.params_mut(), &grads).unwrap();
        value
    }
}
