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
//! * `layer_fwd_bwd` — one direction of one SC-LSTM layer with one task gate: input
//!   projections, T steps forward, BPTT, weight gradients, as `sclstm-layers` issues them;
//! * `layer_fwd_bwd_x4` — the same loop four times on four independent buffer sets
//!   before one sync (more distinct buffers than one layer binds);
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

use sclstm_core::{Backend, CellStep, Gemm, NumError, RowCopy};
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

/// The buffers of one direction of one SC-LSTM layer with one task gate.
struct Layer {
    x: WgpuBuf,
    w_ih: WgpuBuf,
    w_hh: WgpuBuf,
    w_hh_t: WgpuBuf,
    b: WgpuBuf,
    u_k: WgpuBuf,
    w_k: WgpuBuf,
    w_k_t: WgpuBuf,
    b_k: WgpuBuf,
    ones: WgpuBuf,
    mask: WgpuBuf,
    gates: WgpuBuf,
    c: WgpuBuf,
    h: WgpuBuf,
    tanh_c: WgpuBuf,
    o_k: WgpuBuf,
    q_k: WgpuBuf,
    d_gates: WgpuBuf,
    d_h: WgpuBuf,
    d_c: WgpuBuf,
    d_o_k: WgpuBuf,
    d_q_k: WgpuBuf,
    d_x: WgpuBuf,
    d_w_ih: WgpuBuf,
    d_w_hh: WgpuBuf,
    d_b: WgpuBuf,
    d_u_k: WgpuBuf,
    d_w_k: WgpuBuf,
    d_b_k: WgpuBuf,
}

impl Layer {
    fn new(be: &WgpuBackend, seed: u32) -> Result<Self, NumError> {
        let rows = (T + 1) * B;
        let up = |len: usize, k: u32| be.upload(&values(len, seed * 100 + k));
        Ok(Layer {
            x: up(rows * D, 1)?,
            w_ih: up(4 * H * D, 2)?,
            w_hh: up(4 * H * H, 3)?,
            w_hh_t: up(4 * H * H, 4)?,
            b: up(4 * H, 5)?,
            u_k: up(H * D, 6)?,
            w_k: up(H * H, 7)?,
            w_k_t: up(H * H, 8)?,
            b_k: up(H, 9)?,
            ones: be.upload(&vec![1.0; rows])?,
            mask: be.upload(&vec![1.0; rows])?,
            gates: be.zeros(rows * 4 * H)?,
            c: be.zeros(rows * H)?,
            h: be.zeros(rows * H)?,
            tanh_c: be.zeros(rows * H)?,
            o_k: be.zeros(rows * H)?,
            q_k: be.zeros(rows * H)?,
            d_gates: be.zeros(rows * 4 * H)?,
            d_h: up(rows * H, 10)?,
            d_c: be.zeros(rows * H)?,
            d_o_k: be.zeros(rows * H)?,
            d_q_k: up(rows * H, 11)?,
            d_x: be.zeros(rows * D)?,
            d_w_ih: be.zeros(4 * H * D)?,
            d_w_hh: be.zeros(4 * H * H)?,
            d_b: be.zeros(4 * H)?,
            d_u_k: be.zeros(H * D)?,
            d_w_k: be.zeros(H * H)?,
            d_b_k: be.zeros(H)?,
        })
    }

    /// Records one forward + backward of this direction (no sync).
    fn record(&mut self, be: &WgpuBackend) -> Result<(), NumError> {
        let (bh, bg, rows) = (B * H, B * 4 * H, T * B);
        let proj = |n: usize| Gemm {
            trans_b: true,
            ..Gemm::new(rows, n, D)
        };
        be.gemm(
            &proj(4 * H),
            &self.x,
            &self.w_ih,
            Some(&self.b),
            &mut self.gates,
        )?;
        be.gemm(&proj(H), &self.x, &self.u_k, Some(&self.b_k), &mut self.o_k)?;
        for t in 0..T {
            let s = CellStep {
                t,
                batch: B,
                hidden: H,
            };
            let rec = |n: usize, c_off: usize| Gemm {
                a_off: t * bh,
                c_off,
                accumulate: true,
                ..Gemm::new(B, n, H)
            };
            be.gemm(
                &rec(4 * H, t * bg),
                &self.h,
                &self.w_hh_t,
                None,
                &mut self.gates,
            )?;
            be.lstm_cell_fwd(
                s,
                &mut self.gates,
                &mut self.c,
                &mut self.h,
                &mut self.tanh_c,
                &self.mask,
            )?;
            be.gemm(&rec(H, t * bh), &self.q_k, &self.w_k_t, None, &mut self.o_k)?;
            be.task_gate_fwd(s, &mut self.o_k, &mut self.q_k, &self.tanh_c, &self.mask)?;
        }
        be.fill_zero(&mut self.d_c)?;
        for t in (0..T).rev() {
            let s = CellStep {
                t,
                batch: B,
                hidden: H,
            };
            be.task_gate_bwd(
                s,
                &self.o_k,
                &self.tanh_c,
                &self.mask,
                &self.d_q_k,
                &mut self.d_o_k,
                &mut self.d_c,
            )?;
            if t > 0 {
                let g = Gemm {
                    a_off: t * bh,
                    c_off: t * bh,
                    accumulate: true,
                    ..Gemm::new(B, H, H)
                };
                be.gemm(&g, &self.d_o_k, &self.w_k, None, &mut self.d_q_k)?;
            }
            be.lstm_cell_bwd(
                s,
                &self.gates,
                &self.c,
                &self.tanh_c,
                &self.mask,
                &self.d_h,
                &mut self.d_c,
                &mut self.d_gates,
            )?;
            if t > 0 {
                let g = Gemm {
                    a_off: t * bg,
                    c_off: t * bh,
                    accumulate: true,
                    ..Gemm::new(B, H, 4 * H)
                };
                be.gemm(&g, &self.d_gates, &self.w_hh, None, &mut self.d_h)?;
            }
        }
        let wgrad = |m: usize, n: usize| Gemm {
            trans_a: true,
            ..Gemm::new(m, n, rows)
        };
        be.gemm(
            &wgrad(4 * H, D),
            &self.d_gates,
            &self.x,
            None,
            &mut self.d_w_ih,
        )?;
        be.gemm(
            &wgrad(4 * H, H),
            &self.d_gates,
            &self.h,
            None,
            &mut self.d_w_hh,
        )?;
        be.gemm(
            &Gemm::new(1, 4 * H, rows),
            &self.ones,
            &self.d_gates,
            None,
            &mut self.d_b,
        )?;
        be.gemm(
            &Gemm::new(rows, D, 4 * H),
            &self.d_gates,
            &self.w_ih,
            None,
            &mut self.d_x,
        )?;
        be.gemm(&wgrad(H, D), &self.d_o_k, &self.x, None, &mut self.d_u_k)?;
        be.gemm(&wgrad(H, H), &self.d_o_k, &self.q_k, None, &mut self.d_w_k)?;
        be.gemm(
            &Gemm::new(1, H, rows),
            &self.ones,
            &self.d_o_k,
            None,
            &mut self.d_b_k,
        )?;
        let back = Gemm {
            accumulate: true,
            ..Gemm::new(rows, D, H)
        };
        be.gemm(&back, &self.d_o_k, &self.u_k, None, &mut self.d_x)?;
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
    let be = WgpuBackend::new()?;
    let bench = Bench {
        be: &be,
        rounds: rounds.max(1),
        filter,
    };
    println!("adapter: {}", be.adapter());
    println!("T {T}, B {B}, H {H}, D {D}; {rounds} rounds after one warm-up");

    let mut layers = (0..4)
        .map(|i| Layer::new(&be, i + 1))
        .collect::<Result<Vec<_>, _>>()?;
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
            let s = CellStep {
                t,
                batch: B,
                hidden: H,
            };
            be.gemm(&rec(t), &l.h, &l.w_hh_t, None, &mut l.gates)?;
            be.lstm_cell_fwd(s, &mut l.gates, &mut l.c, &mut l.h, &mut l.tanh_c, &l.mask)?;
        }
        be.sync()
    })?;

    bench.run("layer_fwd_bwd", "one direction, one task gate", || {
        layers[0].record(&be)?;
        be.sync()
    })?;

    bench.run("layer_fwd_bwd_x4", "four directions, one sync", || {
        for l in &mut layers {
            l.record(&be)?;
        }
        be.sync()
    })?;

    let w = be.upload(&values(16 * 4, 99))?;
    let mut gates = be.zeros(1000 * 16)?;
    let (mut c, mut h) = (be.zeros(1001 * 4)?, be.zeros(1001 * 4)?);
    let (mut tanh_c, mask) = (be.zeros(1000 * 4)?, be.upload(&vec![1.0; 1000])?);
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
                let s = CellStep {
                    t,
                    batch: 1,
                    hidden: 4,
                };
                be.lstm_cell_fwd(s, &mut gates, &mut c, &mut h, &mut tanh_c, &mask)?;
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
