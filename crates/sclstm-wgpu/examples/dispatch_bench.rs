//! Host-overhead microbenchmark of the wgpu backend: one gate step and one SC-LSTM
//! layer time loop at the paper's sizes, timed to completion (`sync`).
//!
//! ```sh
//! WGPU_BACKEND=vulkan cargo run --release -p sclstm-wgpu --example dispatch_bench -- [rounds] [filter]
//! ```
//!
//! Every workload whose name contains `filter` (default: all) is run `rounds` times
//! (default 7) after one warm-up; the median and the spread (min, max) are printed in
//! milliseconds, with the backend's counters per round (dispatches, bind groups
//! created, compute passes, submits). Workloads:
//!
//! * `gemm_recurrent` — one per-step recurrent product `h_{t-1} · W_hhᵀ` (B × H · H × 4H,
//!   accumulate), 30 in one submission;
//! * `gate_step` — that product plus the LSTM cell forward, 30 steps in one submission;
//! * `layer_fwd_bwd` — one SC-LSTM layer call (`sclstm-layers`) with one direction and
//!   one task gate, recorded and run backward: input projections, T steps forward, BPTT,
//!   weight gradients, with the layer's uploads and downloads;
//! * `layer_fwd_bwd_bi` — the same with both directions;
//! * `tiny_dispatches` — 2000 dispatches on 1 × 4 operands (a gemm and a cell forward
//!   alternating): almost pure per-dispatch host cost;
//! * `gather_rows` — 30 embedding lookups of (T·B = 300) ids × 58 columns from a
//!   20 000-row table, each with ids of its own (every third one repeated), one submission;
//! * `scatter_add_rows` — their gradients: 30 scatter-adds of 300 × 58 into the table
//!   (host-side sort into segments included).
//!
//! Sizes: T 30, B 10, H 300, D 600 (layers 2–3 of the paper config). On a software
//! adapter (lavapipe) the figures measure host overhead and CPU-emulated kernels, not a GPU.

use std::time::Instant;

use sclstm_core::{Backend, CellStep, Gemm, Matrix, NumError, RowCopy};
use sclstm_layers::{
    DirectionWeights, LayerWorkspace, LstmWeights, ScLstmArgs, TaskGateWeights, TaskInput,
    sc_lstm_forward,
};
use sclstm_wgpu::{WgpuBackend, WgpuBuf};

const T: usize = 30;
const B: usize = 10;
const H: usize = 300;
const D: usize = 600;
/// Table rows and row width of the row workloads (a word-embedding-like table).
const VOCAB: usize = 20_000;
const WIDTH: usize = 58;

/// Deterministic values in [-0.5, 0.5) (no RNG dependency needed).
fn values(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) - 0.5
        })
        .collect()
}

/// The buffers of the per-step workloads: one direction's recurrent state and weights.
struct StepBufs {
    w_hh_t: WgpuBuf,
    gates: WgpuBuf,
    c: WgpuBuf,
    h: WgpuBuf,
    tanh_c: WgpuBuf,
}

impl StepBufs {
    /// Buffers of `T` steps of `B` rows each (every sentence runs all `T` steps): `T·B`
    /// step rows, `(T + 1)·B` state rows.
    fn new(be: &WgpuBackend) -> Result<Self, NumError> {
        Ok(StepBufs {
            w_hh_t: be.upload(&values(4 * H * H, 4))?,
            gates: be.zeros(T * B * 4 * H)?,
            c: be.zeros((T + 1) * B * H)?,
            h: be.zeros((T + 1) * B * H)?,
            tanh_c: be.zeros(T * B * H)?,
        })
    }
}

/// Step `t` of a batch of `rows` sentences that all run every step: step rows
/// `[t·rows, (t + 1)·rows)`, the state before it at row `t·rows` (the initial state at
/// `t = 0`), the state after it at row `(t + 1)·rows`.
fn step(t: usize, rows: usize, hidden: usize) -> CellStep {
    CellStep {
        rows,
        hidden,
        step: t * rows,
        prev: t * rows,
        next: (t + 1) * rows,
    }
}

/// Host weights and input of one SC-LSTM layer call with one task gate.
struct LayerData {
    x: Matrix<f32>,
    /// Per direction: `W_ih`, `W_hh`, `b`.
    cells: Vec<[Matrix<f32>; 3]>,
    /// Per direction: the task gate's `U_k`, `W_k`, `b_k`.
    gates: Vec<[Matrix<f32>; 3]>,
    lens: Vec<usize>,
}

impl LayerData {
    fn new(dirs: u32) -> Self {
        let m = |r: usize, c: usize, seed: u32| {
            Matrix::from_shape_vec((r, c), values(r * c, seed)).expect("shape fits")
        };
        LayerData {
            x: m(T * B, D, 1),
            cells: (0..dirs)
                .map(|d| {
                    [
                        m(4 * H, D, 10 * d + 2),
                        m(4 * H, H, 10 * d + 3),
                        m(1, 4 * H, 10 * d + 4),
                    ]
                })
                .collect(),
            gates: (0..dirs)
                .map(|d| {
                    [
                        m(H, D, 10 * d + 5),
                        m(H, H, 10 * d + 6),
                        m(1, H, 10 * d + 7),
                    ]
                })
                .collect(),
            lens: vec![T; B],
        }
    }

    /// One forward and backward of the layer through `sclstm-layers`, as training runs it.
    fn forward_backward(&self, ws: &LayerWorkspace<WgpuBackend>) -> Result<(), NumError> {
        let args = ScLstmArgs {
            x: &self.x,
            lens: &self.lens,
            task_inputs: vec![TaskInput::Shared],
            directions: self
                .cells
                .iter()
                .zip(&self.gates)
                .map(|([w_ih, w_hh, b], [u, w, bk])| DirectionWeights {
                    cell: LstmWeights { w_ih, w_hh, b },
                    tasks: vec![TaskGateWeights { u, w, b: bk }],
                })
                .collect(),
            weights_id: None,
        };
        let (out, op) = sc_lstm_forward(ws, &args, true)?;
        let op = op.expect("a recording call returns its op");
        op.backward(&Matrix::from_elem(out.dim(), 1.0))?;
        Ok(())
    }
}

/// Runs the workloads selected by a name filter, `rounds` times each after a warm-up.
struct Bench<'a> {
    be: &'a WgpuBackend,
    rounds: usize,
    filter: String,
}

impl Bench<'_> {
    /// Times `f` if `name` passes the filter; prints the median, min and max in ms and
    /// the backend's counters of one round.
    fn run(
        &self,
        name: &str,
        what: &str,
        mut f: impl FnMut() -> Result<(), NumError>,
    ) -> Result<(), NumError> {
        if !name.contains(&self.filter) {
            return Ok(());
        }
        f()?;
        let before = self.be.stats();
        let mut ms = Vec::with_capacity(self.rounds);
        for _ in 0..self.rounds {
            let start = Instant::now();
            f()?;
            ms.push(start.elapsed().as_secs_f64() * 1e3);
        }
        let after = self.be.stats();
        ms.sort_by(f64::total_cmp);
        let (med, lo, hi) = (ms[ms.len() / 2], ms[0], ms[ms.len() - 1]);
        let per_round = |a: u64, b: u64| (a - b) as f64 / self.rounds as f64;
        println!("{name:<18} median {med:9.3} ms  (min {lo:9.3}, max {hi:9.3})  {what}");
        println!(
            "{:<18} per round: {} dispatches ({} small-m gemms), {} bind groups created, {} passes, {} submits, {} index arena grows",
            "",
            per_round(after.dispatches, before.dispatches),
            per_round(after.small_m_gemms, before.small_m_gemms),
            per_round(after.bind_groups_created, before.bind_groups_created),
            per_round(after.compute_passes, before.compute_passes),
            per_round(after.submits, before.submits),
            per_round(after.index_arena_grows, before.index_arena_grows),
        );
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = match std::env::args().nth(1) {
        Some(s) => s.parse()?,
        None => 7,
    };
    let filter = std::env::args().nth(2).unwrap_or_default();
    let be = std::sync::Arc::new(WgpuBackend::new()?);
    let bench = Bench {
        be: &be,
        rounds: rounds.max(1),
        filter,
    };
    println!("adapter: {}", be.adapter());
    println!("T {T}, B {B}, H {H}, D {D}; {rounds} rounds after one warm-up");

    let mut layers = [StepBufs::new(&be)?];
    be.sync()?;

    let rec = |t: usize| Gemm {
        a_off: t * B * H,
        c_off: t * B * 4 * H,
        accumulate: true,
        ..Gemm::new(B, 4 * H, H)
    };
    bench.run(
        "gemm_recurrent",
        "30 products of 10×300·300×1200",
        || {
            let l = &mut layers[0];
            for t in 0..T {
                be.gemm(&rec(t), &l.h, &l.w_hh_t, None, &mut l.gates)?;
            }
            be.sync()
        },
    )?;

    bench.run("gate_step", "30 × (product + cell forward)", || {
        let l = &mut layers[0];
        for t in 0..T {
            be.gemm(&rec(t), &l.h, &l.w_hh_t, None, &mut l.gates)?;
            be.lstm_cell_fwd(
                step(t, B, H),
                &mut l.gates,
                &mut l.c,
                &mut l.h,
                &mut l.tanh_c,
            )?;
        }
        be.sync()
    })?;

    let ws = LayerWorkspace::new(std::sync::Arc::clone(&be));
    let (one, two) = (LayerData::new(1), LayerData::new(2));
    bench.run("layer_fwd_bwd", "one direction, one task gate", || {
        one.forward_backward(&ws)
    })?;
    bench.run("layer_fwd_bwd_bi", "both directions, one task gate", || {
        two.forward_backward(&ws)
    })?;

    let w = be.upload(&values(16 * 4, 99))?;
    let mut gates = be.zeros(1000 * 16)?;
    let (mut c, mut h) = (be.zeros(1001 * 4)?, be.zeros(1001 * 4)?);
    let mut tanh_c = be.zeros(1000 * 4)?;
    bench.run(
        "tiny_dispatches",
        "2000 dispatches on 1 × 4 operands",
        || {
            for t in 0..1000 {
                let g = Gemm {
                    a_off: t * 4,
                    c_off: t * 16,
                    accumulate: true,
                    ..Gemm::new(1, 16, 4)
                };
                be.gemm(&g, &h, &w, None, &mut gates)?;
                be.lstm_cell_fwd(step(t, 1, 4), &mut gates, &mut c, &mut h, &mut tanh_c)?;
            }
            be.sync()
        },
    )?;

    // T·B ids per call, a different list for each of the T calls; every third position
    // repeats an earlier id, as frequent words do.
    let id_lists: Vec<Vec<u32>> = (0..T as u32)
        .map(|k| {
            let mut ids: Vec<u32> = values(T * B, 1000 + k)
                .iter()
                .map(|v| ((v + 0.5) * VOCAB as f32) as u32 % VOCAB as u32)
                .collect();
            for p in (3..ids.len()).step_by(3) {
                ids[p] = ids[p / 3];
            }
            ids
        })
        .collect();
    let r = RowCopy::packed(VOCAB, WIDTH);
    let mut table = be.upload(&values(VOCAB * WIDTH, 77))?;
    let mut dense = be.upload(&values(T * B * WIDTH, 78))?;
    bench.run(
        "gather_rows",
        "30 gathers of 300 ids × 58 from 20000 rows",
        || {
            for ids in &id_lists {
                be.gather_rows(&r, ids, &table, &mut dense)?;
            }
            be.sync()
        },
    )?;
    bench.run(
        "scatter_add_rows",
        "30 scatter-adds of 300 ids × 58 into 20000 rows",
        || {
            for ids in &id_lists {
                be.scatter_add_rows(&r, ids, &dense, &mut table)?;
            }
            be.sync()
        },
    )?;
    Ok(())
}
