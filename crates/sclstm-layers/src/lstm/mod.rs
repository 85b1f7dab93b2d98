//! LSTM and SC-LSTM layers (paper Eq. 1–3) with hand-written BPTT, driven by [`Backend`]
//! calls, and their [`FusedOp`] tape nodes.
//!
//! # Parameters (PyTorch-like layout, gate order i, f, g, o)
//!
//! | name   | shape    | paper                                                   |
//! |--------|----------|---------------------------------------------------------|
//! | `w_ih` | (4H, D)  | rows `[U_i; U_f; U_c; U_o]` (input weights)             |
//! | `w_hh` | (4H, H)  | rows `[W_i; W_f; W_c; W_o]` (recurrent weights)         |
//! | `b`    | (1, 4H)  | one bias per gate; PyTorch's `b_ih + b_hh` sum to it    |
//! | `u`    | (H, D_k) | task gate `U_k`                                         |
//! | `w`    | (H, H)   | task gate `W_k`                                         |
//! | `b`    | (1, H)   | task gate bias `b_k`                                    |
//!
//! The paper's Eq. 1–2 carry no bias; like every common implementation we add one per
//! gate. PyTorch has two (`b_ih`, `b_hh`) that only ever appear summed, so one suffices:
//! to import PyTorch weights use `b = b_ih + b_hh`.
//!
//! # Task gates
//! Only the tasks passed in [`ScLstmArgs::task_inputs`] (with one [`TaskGateWeights`]
//! per direction each) are computed: a training batch of task A passes only A's gate,
//! inference passes all. A task gate reads `c_t` but feeds nothing back into the shared
//! cell, so `h` does not depend on which tasks are requested, and a task's parameters get
//! gradient only from losses that read its `q^k`. What the gate reads as `x^k_t` (the
//! paper leaves it open above layer 1) is chosen per task:
//! * (a) `shared`, [`TaskInput::Shared`]: the layer's own input `x`. With this reading
//!   only the top layer's `q^k` is used, so a model passes no tasks to lower layers and
//!   their gates are not computed at all;
//! * (b) `chained`, [`TaskInput::Separate`]: a separate matrix, e.g. the lower layer's
//!   `[q^k_fwd ⊕ q^k_bwd]` columns, so a task-specific path runs through every layer
//!   (layer 1 then uses `Shared`, its input being the embeddings).
//!
//! # One layer call
//! Inputs are time-major `(T·B, D)` matrices with sentence lengths (see [`crate::SeqShape`]).
//! The call uploads `x` (and any separate `x^k`) once, in the caller's row order, into a
//! call cache shared by the directions. Each direction (a *unit*, with its own cache):
//! 1. gathers its rows of the input on the device ([`Backend::gather_rows`]) into the
//!    packed layout of `sclstm_core::backend`: the batch longest sentence first, step `t`
//!    holding only the `n_t` sentences still running, one row per real token (`N` rows in
//!    all), each sentence reversed for the reverse direction; and uploads its weights (one
//!    transfer per layer call, never per step);
//! 2. computes the input projection of **all** tokens as one gemm with `N` rows and the
//!    bias fused: `gates = x·W_ihᵀ + b`, and likewise `o_k = x^k·U_kᵀ + b_k`;
//! 3. for `t = 0..T`: `gates[t] += h_{t-1}·W_hhᵀ` (a gemm over the `n_t` running
//!    sentences), the cell kernel, then per task `o_k[t] += q^k_{t-1}·W_kᵀ` and the task
//!    gate kernel;
//! 4. scatter-adds its `h` (and `q^k`) rows into the call's output at its columns
//!    ([`Backend::scatter_add_rows`]; rows back in the caller's order), which is then
//!    downloaded once for all directions.
//!
//! No product and no kernel touches padding: the large products run over the `N` real
//! tokens, the per-step ones over the running sentences, and padding rows of the output
//! stay zero. The forward's weights are uploaded transposed
//! (`W_ihᵀ`, `W_hhᵀ`, `U_kᵀ`, `W_kᵀ`) so that every forward product reads a plain
//! row-major `B`; the backward's products (`d_gates·W_hh`, `d_gates·W_ih`) read the
//! weights as stored, uploaded only when the call records for a backward. Where the
//! backend asks for it ([`Backend::strip_weights`]), each of these f32 copies is written
//! in the strip layout of `sclstm_core::backend` instead of row-major (the transposes
//! and copies move every value anyway, so the layout costs nothing), and its products
//! say so ([`Gemm::b_strips`]). With a [`Join`]
//! in the [`LayerWorkspace`] the two directions run concurrently (forward and backward).
//!
//! The backward uploads `d_out` once; each direction gathers its columns and token rows
//! of it into `d_h` (and `d_q_k`), runs the step kernels in reverse, pushing
//! `d_gates[t]·W_hh` into the gradient of `h_{t-1}` and `d_o_k[t]·W_k` into that of
//! `q^k_{t-1}`, and computes all weight gradients after the loop as big gemms over the
//! `N` token rows: `dW_ih = d_gatesᵀ·x`, `dW_hh = d_gatesᵀ·h_prev` (the previous states
//! gathered in line with the steps), `db = 1ᵀ·d_gates` (a gemm with a ones vector),
//! `d_x = d_gates·W_ih`; the directions' `d_x` rows are scatter-added, in unit order,
//! into the call's input buffer (its input is no longer needed) and downloaded once.
//! The derivation is in `BACKWARD.md`.
//!
//! # Output columns
//! With `nd` directions (1 or 2) and requested tasks `[k1, k2, …]`, the output is
//! `(T·B, nd·(1 + K)·H)`:
//!
//! ```text
//! [ h_fwd ⊕ h_bwd ⊕ q^{k1}_fwd ⊕ q^{k1}_bwd ⊕ q^{k2}_fwd ⊕ q^{k2}_bwd ⊕ … ]
//! ```
//!
//! (without the `_bwd` blocks for one direction). Row `t·B + b` is step `t` of sentence
//! `b` in the original order for both directions: the reverse direction's outputs are
//! reversed back. Padding rows are zero. The top SC-LSTM layer's
//! `s^k_t = q^k_t ⊕ h_t` (Eq. 3) is a selection of these columns, made by the model.
//!
//! # Gradient order of the [`FusedOp`]
//! `backward(d_out)` returns one entry per recorded input, in this order:
//!
//! 1. `x`;
//! 2. `x^k` for each task whose input is [`TaskInput::Separate`], in task order;
//! 3. for each direction (forward, then reverse): `W_ih`, `W_hh`, `b`;
//! 4. for each task in request order, for each direction: `U_k`, `W_k`, `b_k`.
//!
//! [`ScLstmArgs::input_names`] lists the same order as strings.
//!
//! # Caches
//! Device buffers of one direction live in a `DirCache` (llm.c-style activation cache with a
//! shape comment on every field), allocated for a capacity of the next power of two of
//! `B + N` rows and kept in the [`LayerWorkspace`] pool when the op is dropped. A later
//! call with the same layer geometry takes the smallest pooled cache with enough rows
//! (and not more than 4× too many, since downloads copy whole buffers): no allocation
//! per step, and none per batch once every row bucket has been seen. The call's shared
//! inputs, output and input gradients live in a `CallCache`, pooled the same way, and
//! each direction's weights in a `WeightBufs` set, written once per call and read by the
//! direction's unit (pooled by layer sizes alone). On a workspace with packed products
//! ([`LayerWorkspace::set_packed_products`]) a call that does not record writes the
//! forward's weight copies packed (bf16 pairs or int8 quads) and runs its weight
//! products with [`Backend::gemm_packed`]; a recording call always writes and reads
//! f32.

use std::cell::Cell;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use num_traits::{One, Zero};
use sclstm_core::{
    Backend, CellStep, FusedOp, Gemm, Matrix, NumError, Packed, Real, RowCopy, strip_len,
};

use crate::Recorded;
use crate::seq::{
    SeqShape, both_strips_into, row_major, strips_into, transpose_into, transpose_strips_into,
};

mod caches;
mod planner;
mod pool;
mod time_loop;
mod workspace;

use caches::*;
use planner::*;
use pool::*;
use time_loop::*;
use workspace::HeldCaches;
pub use workspace::{Join, LayerWorkspace};

/// Weights of one direction's shared LSTM cell (paper Eq. 1); layout in the module docs.
#[derive(Debug, Clone, Copy)]
pub struct LstmWeights<'a, R> {
    /// Input weights `W_ih`, (4H, D), gate rows in the order i, f, g, o.
    pub w_ih: &'a Matrix<R>,
    /// Recurrent weights `W_hh`, (4H, H), gate rows in the order i, f, g, o.
    pub w_hh: &'a Matrix<R>,
    /// Bias, (1, 4H) (= PyTorch's `b_ih + b_hh`).
    pub b: &'a Matrix<R>,
}

/// Weights of one task gate of one direction (paper Eq. 2 plus a bias).
#[derive(Debug, Clone, Copy)]
pub struct TaskGateWeights<'a, R> {
    /// `U_k`, (H, D_k): reads the task input `x^k_t`.
    pub u: &'a Matrix<R>,
    /// `W_k`, (H, H): reads the previous task output `q^k_{t-1}`.
    pub w: &'a Matrix<R>,
    /// `b_k`, (1, H).
    pub b: &'a Matrix<R>,
}

/// Everything one direction owns: the shared cell and one gate per requested task.
#[derive(Debug, Clone)]
pub struct DirectionWeights<'a, R> {
    /// The shared LSTM cell.
    pub cell: LstmWeights<'a, R>,
    /// Task gates, in the order of [`ScLstmArgs::task_inputs`].
    pub tasks: Vec<TaskGateWeights<'a, R>>,
}

/// What a task gate reads as `x^k_t` (the paper leaves it open above layer 1).
#[derive(Debug, Clone, Copy)]
pub enum TaskInput<'a, R> {
    /// Reading (a), `shared`: the layer's shared input `x` (so `D_k = D`).
    Shared,
    /// Reading (b), `chained`: a separate time-major `(T·B, D_k)` input, e.g. the lower
    /// layer's `[q^k_fwd ⊕ q^k_bwd]`. It is a recorded input of the op and gets a gradient.
    Separate(&'a Matrix<R>),
}

/// Arguments of one (bi)directional SC-LSTM layer call. With no tasks it is a plain
/// (Bi)LSTM layer.
#[derive(Debug, Clone)]
pub struct ScLstmArgs<'a, R> {
    /// Shared input, time-major (T·B, D).
    pub x: &'a Matrix<R>,
    /// Sentence lengths (B entries, each ≤ T).
    pub lens: &'a [usize],
    /// One entry per requested task: what its gate reads.
    pub task_inputs: Vec<TaskInput<'a, R>>,
    /// `[forward]` or `[forward, reverse]`.
    pub directions: Vec<DirectionWeights<'a, R>>,
    /// Names the weights' values: calls with equal ids promise identical values, so the
    /// workspace reuses the device copies the first call wrote (tagging batch after batch
    /// with fixed weights: no transposes, no weight transfers). `None` writes the weights
    /// afresh.
    pub weights_id: Option<WeightsId>,
}

/// Names the values a call's weights hold: the parameter store, its version, and per
/// direction the ids of its parameters in that store (`w_ih`, `w_hh`, `b`, then `u`, `w`,
/// `b` of each requested task gate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightsId {
    /// Identity of the parameter store (e.g. `ParamStore::store_id`).
    pub store: u64,
    /// The store's version (e.g. `ParamStore::version`): it changes whenever values may.
    pub version: u64,
    /// Per direction, the ids of its parameters in the store.
    pub directions: Vec<Vec<u32>>,
}

impl<R: Real> ScLstmArgs<'_, R> {
    /// Hidden size `H` (from the first direction's `W_hh`).
    pub fn hidden(&self) -> usize {
        self.directions.first().map_or(0, |d| d.cell.w_hh.ncols())
    }

    /// Output width `nd·(1 + K)·H`.
    pub fn output_width(&self) -> usize {
        self.directions.len() * (1 + self.task_inputs.len()) * self.hidden()
    }

    /// Output columns of `[h_fwd ⊕ h_bwd]` (just `h` for one direction).
    pub fn h_columns(&self) -> std::ops::Range<usize> {
        0..self.directions.len() * self.hidden()
    }

    /// Output columns of `[q^k_fwd ⊕ q^k_bwd]` for the `j`-th requested task.
    pub fn q_columns(&self, j: usize) -> std::ops::Range<usize> {
        let block = self.directions.len() * self.hidden();
        block * (1 + j)..block * (2 + j)
    }

    /// Names of the op's inputs in gradient order (see the module docs), e.g.
    /// `["x", "x^1", "fwd.w_ih", …, "task0.fwd.u", …]`; task `j` is the `j`-th requested.
    pub fn input_names(&self) -> Vec<String> {
        let dirs = ["fwd", "bwd"];
        let nd = self.directions.len();
        let mut names = vec!["x".to_string()];
        for (j, inp) in self.task_inputs.iter().enumerate() {
            if matches!(inp, TaskInput::Separate(_)) {
                names.push(format!("x^{j}"));
            }
        }
        for d in &dirs[..nd] {
            for p in ["w_ih", "w_hh", "b"] {
                names.push(format!("{d}.{p}"));
            }
        }
        for j in 0..self.task_inputs.len() {
            for d in &dirs[..nd] {
                for p in ["u", "w", "b"] {
                    names.push(format!("task{j}.{d}.{p}"));
                }
            }
        }
        names
    }
}

/// Checks one matrix's shape.
fn expect_shape<R>(
    op: &'static str,
    m: &Matrix<R>,
    rows: usize,
    cols: usize,
) -> Result<(), NumError> {
    if m.dim() != (rows, cols) {
        return Err(NumError::ShapeMismatch {
            op,
            lhs: vec![m.nrows(), m.ncols()],
            rhs: vec![rows, cols],
        });
    }
    Ok(())
}

/// Validates `args` and returns the sequence shape and every direction's geometry.
fn validate<R: Real>(
    op: &'static str,
    args: &ScLstmArgs<'_, R>,
) -> Result<(SeqShape, DirGeometry), NumError> {
    let seq = SeqShape::new(op, args.x.nrows(), args.lens)?;
    if u32::try_from(seq.rows() + seq.batch()).is_err() {
        // Rows (caller rows, and state rows B + N ≤ B + T·B) are addressed by 32-bit ids
        // in the backends' row gathers.
        return Err(NumError::ShapeMismatch {
            op,
            lhs: vec![seq.rows() + seq.batch()],
            rhs: vec![u32::MAX as usize],
        });
    }
    let nd = args.directions.len();
    if nd == 0 || nd > 2 {
        return Err(NumError::ShapeMismatch {
            op,
            lhs: vec![nd],
            rhs: vec![1, 2],
        });
    }
    let d = args.x.ncols();
    let hd = args.directions[0].cell.w_hh.ncols();
    let mut tasks = Vec::with_capacity(args.task_inputs.len());
    for inp in &args.task_inputs {
        tasks.push(match inp {
            TaskInput::Shared => (d, false),
            TaskInput::Separate(m) => {
                expect_shape(op, m, seq.rows(), m.ncols())?;
                (m.ncols(), true)
            }
        });
    }
    for dir in &args.directions {
        expect_shape(op, dir.cell.w_ih, 4 * hd, d)?;
        expect_shape(op, dir.cell.w_hh, 4 * hd, hd)?;
        expect_shape(op, dir.cell.b, 1, 4 * hd)?;
        if dir.tasks.len() != tasks.len() {
            return Err(NumError::ShapeMismatch {
                op,
                lhs: vec![dir.tasks.len()],
                rhs: vec![tasks.len()],
            });
        }
        for (tw, &(dk, _)) in dir.tasks.iter().zip(&tasks) {
            expect_shape(op, tw.u, hd, dk)?;
            expect_shape(op, tw.w, hd, hd)?;
            expect_shape(op, tw.b, 1, hd)?;
        }
    }
    let geo = DirGeometry {
        steps: seq.steps,
        batch: seq.batch(),
        tokens: seq.lens.iter().sum(),
        input: d,
        hidden: hd,
        tasks,
    };
    Ok((seq, geo))
}

/// Runs a (bi)directional SC-LSTM layer (a plain (Bi)LSTM layer when no tasks are
/// requested). Returns the output `(T·B, nd·(1+K)·H)` (column layout in the module docs)
/// and, when `record`, the [`FusedOp`] whose backward is the hand-written BPTT.
///
/// Only the requested tasks' gates are computed: a training batch of task A passes only
/// A's gate weights; inference passes all.
///
/// # Errors
/// [`NumError::ShapeMismatch`] / [`NumError::Empty`] for inconsistent shapes or lengths;
/// any backend error.
pub fn sc_lstm_forward<B: Backend + 'static>(
    ws: &LayerWorkspace<B>,
    args: &ScLstmArgs<'_, B::Elem>,
    record: bool,
) -> Result<Recorded<B::Elem>, NumError> {
    let op = "sc_lstm_forward";
    let (seq, geo) = validate(op, args)?;
    let nd = args.directions.len();
    let units = plan(&seq, &geo, nd);
    let stamps: Vec<Option<Stamp>> = args
        .directions
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let id = args.weights_id.as_ref()?;
            Some((id.store, id.version, id.directions.get(i)?.clone()))
        })
        .collect();
    let mut held = HeldCaches::default();
    let taken = (|| {
        for unit in &units {
            held.units.push(ws.take(&unit.geo, record)?);
        }
        held.call = Some(ws.take_call(&geo, nd)?);
        held.weights = ws.take_weights(&geo, &stamps, record)?;
        forward_units(ws, args, &units, &mut held, &stamps, record)
    })();
    let out = match taken {
        Ok(out) => out,
        Err(e) => {
            ws.give_all(held);
            return Err(e);
        }
    };
    if !record {
        ws.give_all(held);
        return Ok((out, None));
    }
    let node = ScLstmOp {
        ws: ws.clone(),
        caches: Mutex::new(held),
        geo,
        units,
        nd,
    };
    Ok((out, Some(Box::new(node))))
}

/// The device work of [`sc_lstm_forward`] once the caches are taken: uploads the inputs
/// once and each direction's weights once, gathers each unit's rows, runs the units,
/// scatters their `h` and `q_k` into the call's output and downloads it.
fn forward_units<B: Backend>(
    ws: &LayerWorkspace<B>,
    args: &ScLstmArgs<'_, B::Elem>,
    units: &[Unit],
    held: &mut HeldCaches<B>,
    stamps: &[Option<Stamp>],
    record: bool,
) -> Result<Matrix<B::Elem>, NumError> {
    let HeldCaches {
        units: caches,
        call,
        weights,
    } = held;
    let call = call
        .as_mut()
        .expect("internal: the call cache is taken first");
    let be = ws.backend.as_ref();
    let (rows, d, hd) = (args.x.nrows(), args.x.ncols(), args.hidden());
    let nd = args.directions.len();
    let width = args.output_width();
    be.write(&mut call.x, &row_major(args.x))?;
    let separate: Vec<&Matrix<B::Elem>> = args
        .task_inputs
        .iter()
        .filter_map(|inp| match inp {
            TaskInput::Shared => None,
            TaskInput::Separate(m) => Some(*m),
        })
        .collect();
    for (buf, m) in call.x_k.iter_mut().zip(&separate) {
        be.write(buf, &row_major(m))?;
    }
    // Each direction's weights (on the two sides of the join), unless the set already
    // holds them under the same stamp.
    let packed = ws.packed_for(record);
    let written = ws.each_unit(weights, |i, wb| {
        if wb.holds(&stamps[i], record, packed) {
            return Ok(());
        }
        wb.write(be, &args.directions[i], record, stamps[i].clone(), packed)
    });
    written.into_iter().collect::<Result<Vec<()>, _>>()?;
    let (call_in, weights) = (&*call, &*weights);
    let results = ws.each_unit(caches, |i, dc| {
        let unit = &units[i];
        be.gather_rows(
            &caller_rows(rows, d, 0, d, 0),
            &unit.ids,
            &call_in.x,
            &mut dc.x,
        )?;
        let mut sep = call_in.x_k.iter().zip(&separate);
        for tc in &mut dc.tasks {
            if let Some(x_k) = &mut tc.x_k {
                let (src, m) = sep
                    .next()
                    .expect("internal: one call buffer per separate input");
                let dk = m.ncols();
                be.gather_rows(&caller_rows(rows, dk, 0, dk, 0), &unit.ids, src, x_k)?;
            }
        }
        dir_forward(be, dc, &weights[unit.dir], &unit.steps)
    });
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    let mut out = ResultBuf::new(be, &mut call.out, rows, width)?;
    // A unit's state rows after the B initial ones → their caller rows, at the block's
    // columns (padding rows stay zero).
    for (unit, dc) in units.iter().zip(caches.iter()) {
        let place = |col: usize| caller_rows(rows, width, col, hd, unit.geo.batch);
        be.scatter_add_rows(&place(unit.dir * hd), &unit.ids, &dc.h, out.buf())?;
        for (j, tc) in dc.tasks.iter().enumerate() {
            let col = (nd * (1 + j) + unit.dir) * hd;
            be.scatter_add_rows(&place(col), &unit.ids, &tc.q_k, out.buf())?;
        }
    }
    out.into_matrix(be)
}

/// A plain bidirectional LSTM layer: output `(T·B, 2H) = [h_fwd ⊕ h_bwd]`. Gradient
/// order: `[x, W_ih_f, W_hh_f, b_f, W_ih_b, W_hh_b, b_b]`.
///
/// # Errors
/// As [`sc_lstm_forward`].
pub fn bilstm_forward<B: Backend + 'static>(
    ws: &LayerWorkspace<B>,
    x: &Matrix<B::Elem>,
    lens: &[usize],
    fwd: LstmWeights<'_, B::Elem>,
    bwd: LstmWeights<'_, B::Elem>,
    record: bool,
) -> Result<Recorded<B::Elem>, NumError> {
    let args = ScLstmArgs {
        x,
        lens,
        task_inputs: Vec::new(),
        weights_id: None,
        directions: vec![
            DirectionWeights {
                cell: fwd,
                tasks: Vec::new(),
            },
            DirectionWeights {
                cell: bwd,
                tasks: Vec::new(),
            },
        ],
    };
    sc_lstm_forward(ws, &args, record)
}

/// A single forward-direction LSTM layer: output `(T·B, H) = h`. Gradient order:
/// `[x, W_ih, W_hh, b]`.
///
/// # Errors
/// As [`sc_lstm_forward`].
pub fn lstm_forward<B: Backend + 'static>(
    ws: &LayerWorkspace<B>,
    x: &Matrix<B::Elem>,
    lens: &[usize],
    w: LstmWeights<'_, B::Elem>,
    record: bool,
) -> Result<Recorded<B::Elem>, NumError> {
    let args = ScLstmArgs {
        x,
        lens,
        task_inputs: Vec::new(),
        directions: vec![DirectionWeights {
            cell: w,
            tasks: Vec::new(),
        }],
        weights_id: None,
    };
    sc_lstm_forward(ws, &args, record)
}

/// The recorded (bi)directional SC-LSTM / LSTM layer: keeps its direction caches on the
/// device until dropped (then they return to the workspace pool).
pub struct ScLstmOp<B: Backend> {
    /// Backend and the pool the caches return to.
    ws: LayerWorkspace<B>,
    /// The caches it holds (behind a mutex: `backward` takes `&self`).
    caches: Mutex<HeldCaches<B>>,
    /// Sizes of the whole call (`steps` and `batch` of the caller's matrices).
    geo: DirGeometry,
    /// The directions of the call, one cache each (same order).
    units: Vec<Unit>,
    /// Number of directions.
    nd: usize,
}

impl<B: Backend> fmt::Debug for ScLstmOp<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScLstmOp")
            .field("directions", &self.nd)
            .field("steps", &self.geo.steps)
            .field("batch", &self.geo.batch)
            .field("input", &self.geo.input)
            .field("hidden", &self.geo.hidden)
            .field("tasks (D_k, separate)", &self.geo.tasks)
            .finish()
    }
}

impl<B: Backend> Drop for ScLstmOp<B> {
    fn drop(&mut self) {
        let held = std::mem::take(&mut *lock(&self.caches));
        self.ws.give_all(held);
    }
}

impl<B: Backend> FusedOp<B::Elem> for ScLstmOp<B> {
    fn name(&self) -> &'static str {
        if self.geo.tasks.is_empty() {
            if self.nd == 2 {
                "bilstm_layer"
            } else {
                "lstm_layer"
            }
        } else if self.nd == 2 {
            "bi_sc_lstm_layer"
        } else {
            "sc_lstm_layer"
        }
    }

    fn backward(&self, d_out: &Matrix<B::Elem>) -> Result<Vec<Option<Matrix<B::Elem>>>, NumError> {
        let op = "sc_lstm_backward";
        let DirGeometry {
            steps,
            batch,
            input: d,
            hidden: hd,
            ..
        } = self.geo.clone();
        let rows = steps * batch;
        let nd = self.nd;
        let n_tasks = self.geo.tasks.len();
        expect_shape(op, d_out, rows, nd * (1 + n_tasks) * hd)?;
        let be = self.ws.backend.as_ref();
        let mut guard = lock(&self.caches);
        let HeldCaches {
            units: caches,
            call,
            weights,
        } = &mut *guard;
        let weights = &*weights;
        let call = call
            .as_mut()
            .expect("internal: the call cache stays until the op is dropped");
        let width = nd * (1 + n_tasks) * hd;

        be.write(&mut call.out, &row_major(d_out))?;

        let call_in = &*call;
        // Each direction's weight gradients (one unit per direction).
        let run = |i: usize, dc: &mut DirCache<B>| {
            let unit = &self.units[i];
            // Output columns → the state gradient rows after the B initial ones.
            let take = |col: usize| caller_rows(rows, width, col, hd, unit.geo.batch);
            be.gather_rows(&take(unit.dir * hd), &unit.ids, &call_in.out, &mut dc.d_h)?;
            for (j, tc) in dc.tasks.iter_mut().enumerate() {
                let col = (nd * (1 + j) + unit.dir) * hd;
                be.gather_rows(&take(col), &unit.ids, &call_in.out, &mut tc.d_q_k)?;
            }
            dir_backward(be, dc, &weights[unit.dir], unit)
        };
        // The directions run on the two sides of the join, each handing back its own weight
        // gradients.
        let results = self.ws.each_unit(caches, run);
        let mut shapes = vec![(4 * hd, d), (4 * hd, hd), (1, 4 * hd)];
        for &(dk, _) in &self.geo.tasks {
            shapes.extend([(hd, dk), (hd, hd), (1, hd)]);
        }
        let mut per_dir: Vec<Vec<Option<Matrix<B::Elem>>>> = vec![Vec::new(); nd];
        let mut d_x = ResultBuf::new(be, &mut call.x, rows, d)?;
        let mut d_x_k = call
            .x_k
            .iter_mut()
            .zip(self.geo.tasks.iter().filter(|t| t.1))
            .map(|(buf, &(dk, _))| ResultBuf::new(be, buf, rows, dk))
            .collect::<Result<Vec<_>, _>>()?;
        // The input gradients are added into the call's buffers in unit order (a fixed
        // order: deterministic).
        for ((unit, dc), done) in self.units.iter().zip(caches.iter()).zip(results) {
            per_dir[unit.dir] = done?
                .into_iter()
                .zip(&shapes)
                .map(|(v, &shape)| {
                    Some(
                        Matrix::from_shape_vec(shape, v)
                            .expect("internal: gradient length matches its shape"),
                    )
                })
                .collect();
            be.scatter_add_rows(
                &caller_rows(rows, d, 0, d, 0),
                &unit.ids,
                &dc.d_x,
                d_x.buf(),
            )?;
            let separate = dc.tasks.iter().filter_map(|tc| tc.d_x_k.as_ref());
            for ((dxk, acc), &(dk, _)) in separate
                .zip(d_x_k.iter_mut())
                .zip(self.geo.tasks.iter().filter(|t| t.1))
            {
                be.scatter_add_rows(&caller_rows(rows, dk, 0, dk, 0), &unit.ids, dxk, acc.buf())?;
            }
        }
        let mut grads = vec![Some(d_x.into_matrix(be)?)];
        for g in d_x_k {
            grads.push(Some(g.into_matrix(be)?));
        }
        // Gradient order: each direction's cell, then per task each direction's gate.
        for pieces in &mut per_dir {
            grads.extend(pieces[..3].iter_mut().map(Option::take));
        }
        for j in 0..n_tasks {
            for pieces in &mut per_dir {
                grads.extend(pieces[3 + 3 * j..6 + 3 * j].iter_mut().map(Option::take));
            }
        }
        Ok(grads)
    }
}
