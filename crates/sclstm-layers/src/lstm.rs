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
//! call cache shared by the directions. Each direction:
//! 1. gathers its rows of the input on the device ([`Backend::gather_rows`], per-sentence
//!    reversed for the reverse direction) and uploads its mask and weights (one transfer
//!    per layer call, never per step);
//! 2. computes the input projection of **all** steps as one gemm with `T·B` rows and the
//!    bias fused: `gates = x·W_ihᵀ + b`, and likewise `o_k = x^k·U_kᵀ + b_k`;
//! 3. for `t = 0..T`: `gates[t] += h_{t-1}·W_hhᵀ` (gemm over the sentences still
//!    running at `t`, see below), the cell kernel, then per task `o_k[t] += q^k_{t-1}·W_kᵀ`
//!    and the task gate kernel;
//! 4. scatter-adds its `h` (and `q^k`) rows into the call's output at its columns
//!    ([`Backend::scatter_add_rows`]; rows back in the caller's order), which is then
//!    downloaded once for all directions.
//!
//! Inside the layer the batch runs longest sentence first, so the sentences still running
//! at step `t` are the first `active[t]` rows of that step and the per-step products skip
//! the finished ones (their gates are masked to zero anyway, and their gradients are
//! zero, so the result is the same). When lengths differ a lot the batch is also split
//! into two groups (long and short sentences, [`SeqShape::groups`]) that run as separate
//! (T_g, B_g) problems, so the large products over all rows skip most padding; each
//! (group, direction) pair is a *unit* with its own cache, and the weight gradients of
//! the groups are summed in group order. The forward's weights are uploaded transposed
//! (`W_ihᵀ`, `W_hhᵀ`, `U_kᵀ`, `W_kᵀ`) so that every forward product reads a plain
//! row-major `B`; the backward's products (`d_gates·W_hh`, `d_gates·W_ih`) read the
//! weights as stored, uploaded only when the call records for a backward. With a [`Join`]
//! in the [`LayerWorkspace`] the two directions run concurrently (forward and backward).
//!
//! The backward uploads `d_out` once; each direction gathers its columns and rows of it
//! into `d_h` (and `d_q_k`), runs the step kernels in reverse, pushing `d_gates[t]·W_hh` into
//! `d_h[t]` and `d_o_k[t]·W_k` into `d_q_k[t]`, and computes all weight gradients after
//! the loop as big gemms over `T·B` rows: `dW_ih = d_gatesᵀ·x`, `dW_hh = d_gatesᵀ·h[0..T]`,
//! `db = 1ᵀ·d_gates` (a gemm with a ones vector), `d_x = d_gates·W_ih`; the directions'
//! `d_x` rows are scatter-added, in unit order, into the call's input buffer (its input
//! is no longer needed) and downloaded once.
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
//! `(T+1)·B` rows and kept in the [`LayerWorkspace`] pool when the op is dropped. A later
//! call with the same layer geometry takes the smallest pooled cache with enough rows
//! (and not more than 4× too many, since downloads copy whole buffers): no allocation
//! per step, and none per batch once every row bucket has been seen. The call's shared
//! inputs, output and input gradients live in a `CallCache`, pooled the same way, and
//! each direction's weights in a `WeightBufs` set, written once per call and read by the
//! direction's units (pooled by layer sizes alone).

use std::cell::Cell;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use num_traits::{One, Zero};
use sclstm_core::{Backend, CellStep, FusedOp, Gemm, Matrix, NumError, Real, RowCopy};

use crate::Recorded;
use crate::seq::{SeqShape, row_major, transposed_into};

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
    /// Identifies the weights' values (e.g. `ParamStore::version`): calls with the same
    /// `Some(v)` and the same weight matrices (by address) promise identical values, so
    /// the workspace reuses the device copies the first call wrote (tagging batch after
    /// batch with fixed weights: no transposes, no weight transfers). `None` writes the
    /// weights afresh.
    pub weights_version: Option<u64>,
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

/// Runs the two directions of a bidirectional layer, possibly at the same time.
///
/// The layers are generic over [`Backend`] and own no threads; a backend that has
/// threads (the CPU backend's rayon pool) supplies this so that each direction's time
/// loop runs on its own thread. The directions share nothing mutable and each writes
/// only its own buffers, so running them concurrently changes no result.
pub trait Join: Send + Sync {
    /// Runs `a` and `b` to completion, in either order or concurrently.
    fn join(&self, a: &mut (dyn FnMut() + Send), b: &mut (dyn FnMut() + Send));
}

/// A backend plus a pool of reusable direction caches. Cheap to clone; keep one per
/// layer (or per model) so that caches are reused across batches.
pub struct LayerWorkspace<B: Backend> {
    backend: Arc<B>,
    pool: Arc<Pool<DirCache<B>>>,
    /// Shared input / output buffers of recent calls.
    calls: Arc<Pool<CallCache<B>>>,
    /// Device copies of directions' weights of recent calls.
    weights: Arc<Pool<WeightBufs<B>>>,
    /// Runs the two directions concurrently when set; `None` runs them one after the other.
    join: Option<Arc<dyn Join>>,
}

impl<B: Backend> Clone for LayerWorkspace<B> {
    fn clone(&self) -> Self {
        LayerWorkspace {
            backend: Arc::clone(&self.backend),
            pool: Arc::clone(&self.pool),
            calls: Arc::clone(&self.calls),
            weights: Arc::clone(&self.weights),
            join: self.join.clone(),
        }
    }
}

impl<B: Backend> fmt::Debug for LayerWorkspace<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pooled = self.pool.len();
        f.debug_struct("LayerWorkspace")
            .field("backend", &self.backend.name())
            .field("pooled_caches", &pooled)
            .field("concurrent_directions", &self.join.is_some())
            .finish()
    }
}

/// Direction caches kept for reuse at most; past it the oldest pooled cache is dropped.
/// Enough for every unit of a three-layer model (2 groups × 2 directions × 3 layers) in
/// two or three row buckets.
const POOL_LIMIT: usize = 32;

/// Elements (all buffers together) the pooled caches may hold; past it the oldest are
/// dropped. 128 Mi elements is 512 MiB in f32: the caches of a paper-config training
/// step (batch 10, up to 12 units of 2–10 M elements each) in its usual row buckets, so
/// that steps reuse them, while long batches (evaluation, outliers) do not pin more for
/// the rest of the run.
const POOL_ELEMS: usize = 128 << 20;

/// Call caches (shared inputs and outputs of one layer call) kept for reuse at most:
/// three layers with and without a backward, in two or three row buckets.
const CALL_POOL_LIMIT: usize = 16;

/// Elements the pooled call caches may hold (128 MiB in f32): a paper-config training
/// step's three call caches hold up to 2 M elements each, an evaluation batch's (2,048
/// padded tokens, three task gates) up to 6 M each.
const CALL_POOL_ELEMS: usize = 32 << 20;

/// Weight sets (one direction's weights on the device) kept for reuse at most: both
/// directions of three layers, with and without the backward's copies, for two task sets.
const WEIGHT_POOL_LIMIT: usize = 24;

/// Elements the pooled weight sets may hold (256 MiB in f32); one direction of an upper
/// paper-config layer with one task gate holds about 4 M with the backward's copies and
/// the weight gradients.
const WEIGHT_POOL_ELEMS: usize = 64 << 20;

/// A cache that can wait in a [`Pool`].
trait Pooled {
    /// Among the caches that fit, the smallest is taken first (row capacity for the
    /// caches that have rows).
    fn rank(&self) -> usize;
    /// Elements in all its buffers together.
    fn elems(&self) -> usize;
}

/// Caches waiting for reuse, oldest first, bounded in count and in elements.
struct Pool<C> {
    items: Mutex<Vec<C>>,
    /// Most caches kept.
    limit: usize,
    /// Most elements kept (all caches together).
    max_elems: usize,
}

impl<C: Pooled> Pool<C> {
    fn new(limit: usize, max_elems: usize) -> Self {
        Pool {
            items: Mutex::new(Vec::new()),
            limit,
            max_elems,
        }
    }

    /// Caches waiting.
    fn len(&self) -> usize {
        lock(&self.items).len()
    }

    /// Removes and returns the first-ranked cache for which `fits` holds.
    fn take(&self, fits: impl Fn(&C) -> bool) -> Option<C> {
        let mut items = lock(&self.items);
        let best = items
            .iter()
            .enumerate()
            .filter(|(_, c)| fits(c))
            .min_by_key(|(_, c)| c.rank())
            .map(|(i, _)| i)?;
        Some(items.remove(best))
    }

    /// Returns caches, dropping the oldest past the count or element bound.
    fn give(&self, caches: impl IntoIterator<Item = C>) {
        let mut items = lock(&self.items);
        items.extend(caches);
        let mut held: usize = items.iter().map(Pooled::elems).sum();
        let mut excess = items.len().saturating_sub(self.limit);
        for c in items.iter().skip(excess) {
            if held <= self.max_elems {
                break;
            }
            held -= c.elems();
            excess += 1;
        }
        items.drain(..excess);
    }
}

/// A weights version ([`ScLstmArgs::weights_version`]) and a direction's weight
/// addresses ([`weights_key`]): the values a weight set holds.
type Stamp = (u64, Vec<usize>);

/// Addresses of a direction's weight matrices: with a weights version they identify the
/// values a weight set holds.
fn weights_key<R>(d: &DirectionWeights<'_, R>) -> Vec<usize> {
    let mut key = vec![d.cell.w_ih.as_ptr() as usize, d.cell.w_hh.as_ptr() as usize];
    for g in &d.tasks {
        key.extend([g.u.as_ptr() as usize, g.w.as_ptr() as usize]);
    }
    key
}

/// A pooled cache serves a call needing `need` rows only if it has at most this many
/// times as many: downloads copy whole buffers, so a far larger cache would copy mostly
/// unused rows on every call.
const MAX_SLACK: usize = 4;

impl<B: Backend> LayerWorkspace<B> {
    /// A workspace with an empty cache pool.
    pub fn new(backend: Arc<B>) -> Self {
        LayerWorkspace {
            backend,
            pool: Arc::new(Pool::new(POOL_LIMIT, POOL_ELEMS)),
            calls: Arc::new(Pool::new(CALL_POOL_LIMIT, CALL_POOL_ELEMS)),
            weights: Arc::new(Pool::new(WEIGHT_POOL_LIMIT, WEIGHT_POOL_ELEMS)),
            join: None,
        }
    }

    /// Runs the two directions of every bidirectional layer through `join` (e.g. on
    /// the two threads of the backend's pool). `None` runs them in turn.
    pub fn set_join(&mut self, join: Option<Arc<dyn Join>>) {
        self.join = join;
    }

    /// Whether the directions run through a [`Join`].
    pub fn has_join(&self) -> bool {
        self.join.is_some()
    }

    /// Runs `f(i, item)` for every unit's cache (or every direction's weight set) and
    /// returns the results in order. With a [`Join`] the items are dealt to its two sides
    /// by parity: units are group-major, so for a bidirectional layer one side runs every
    /// forward direction and the other every reverse one (equal work, and a direction's
    /// units run one after the other).
    fn each_unit<C: Send, T: Send>(
        &self,
        caches: &mut [C],
        f: impl Fn(usize, &mut C) -> T + Sync,
    ) -> Vec<T> {
        let n = caches.len();
        match &self.join {
            Some(join) if n >= 2 => {
                let (mut even, mut odd): (Vec<_>, Vec<_>) =
                    caches.iter_mut().enumerate().partition(|(i, _)| i % 2 == 0);
                let (mut r_even, mut r_odd) = (Vec::new(), Vec::new());
                join.join(
                    &mut || r_even = even.iter_mut().map(|(i, dc)| f(*i, dc)).collect(),
                    &mut || r_odd = odd.iter_mut().map(|(i, dc)| f(*i, dc)).collect(),
                );
                let (mut r_even, mut r_odd) = (r_even.into_iter(), r_odd.into_iter());
                (0..n)
                    .map(|i| {
                        if i % 2 == 0 {
                            r_even.next()
                        } else {
                            r_odd.next()
                        }
                        .expect("internal: the join ran every unit")
                    })
                    .collect()
            }
            _ => caches
                .iter_mut()
                .enumerate()
                .map(|(i, dc)| f(i, dc))
                .collect(),
        }
    }

    /// The backend the layers run on.
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    /// Number of direction caches waiting in the pool for reuse.
    pub fn pooled(&self) -> usize {
        self.pool.len()
    }

    /// A cache fitting `geo`: the smallest pooled one that fits (see
    /// [`DirCache::fits`]), else a new one whose row capacity is the next power of two.
    ///
    /// Batch lengths vary from step to step, so capacities are bucketed by powers of two:
    /// a handful of sizes serve every batch with at most 2× unused rows, instead of a
    /// pool that fills with caches slightly too short for the next batch while longer
    /// ones are allocated and freed every step.
    fn take(&self, geo: &DirGeometry, backward: bool) -> Result<DirCache<B>, NumError> {
        match self.pool.take(|c| c.fits(geo, backward)) {
            Some(mut c) => {
                // Same layer sizes, enough rows: serve this call's (T, B) from the prefix.
                c.geo = geo.clone();
                Ok(c)
            }
            None => DirCache::new(self.backend.as_ref(), geo, backward),
        }
    }

    /// Returns caches to the pool, dropping the oldest past [`POOL_LIMIT`] caches or
    /// [`POOL_ELEMS`] elements.
    fn give(&self, caches: Vec<DirCache<B>>) {
        self.pool.give(caches);
    }

    /// A call cache for a call of geometry `geo` with `nd` directions, pooled or new
    /// (bucketed by powers of two of `T·B` like the direction caches).
    fn take_call(&self, geo: &DirGeometry, nd: usize) -> Result<CallCache<B>, NumError> {
        match self.calls.take(|c| c.fits(geo, nd)) {
            Some(c) => Ok(c),
            None => CallCache::new(self.backend.as_ref(), geo, nd),
        }
    }

    /// One weight set per direction for a layer of `geo` (with the backward's copies
    /// when `backward`), given the stamp each direction's weights carry: a pooled set
    /// already holding them ([`WeightBufs::holds`]) is taken first and needs no write;
    /// otherwise a pooled set that fits, or a new one.
    fn take_weights(
        &self,
        geo: &DirGeometry,
        stamps: &[Option<Stamp>],
        backward: bool,
    ) -> Result<Vec<WeightBufs<B>>, NumError> {
        stamps
            .iter()
            .map(|stamp| {
                let fits = |w: &WeightBufs<B>| w.fits(geo, backward);
                let kept = self.weights.take(|w| fits(w) && w.holds(stamp, backward));
                match kept.or_else(|| self.weights.take(fits)) {
                    Some(w) => Ok(w),
                    None => WeightBufs::new(self.backend.as_ref(), geo, backward),
                }
            })
            .collect()
    }

    /// Returns a call's caches to their pools.
    fn give_all(&self, held: HeldCaches<B>) {
        self.give(held.units);
        self.calls.give(held.call);
        self.weights.give(held.weights);
    }
}

/// Locks a mutex, recovering the data if another thread panicked while holding it (the
/// pool and caches hold no invariant a panic could break: every use rewrites them).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Allocates buffers on a backend and counts their elements (a cache's `elems`).
struct Counted<'a, B: Backend> {
    be: &'a B,
    /// Elements allocated so far.
    elems: Cell<usize>,
}

impl<'a, B: Backend> Counted<'a, B> {
    fn new(be: &'a B) -> Self {
        Counted {
            be,
            elems: Cell::new(0),
        }
    }

    /// A zero-filled buffer of `n` elements (at least one).
    fn zeros(&self, n: usize) -> Result<B::Buf, NumError> {
        self.elems.set(self.elems.get() + n.max(1));
        self.be.zeros(n.max(1))
    }

    /// A buffer holding `data`.
    fn upload(&self, data: &[B::Elem]) -> Result<B::Buf, NumError> {
        self.elems.set(self.elems.get() + data.len());
        self.be.upload(data)
    }
}

/// Sizes of one direction's computation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DirGeometry {
    /// Steps `T`.
    steps: usize,
    /// Batch `B`.
    batch: usize,
    /// Shared input width `D`.
    input: usize,
    /// Hidden size `H`.
    hidden: usize,
    /// Per task: (`D_k`, reads a separate input).
    tasks: Vec<(usize, bool)>,
}

/// Device buffers of one task gate of one direction. Shapes name the capacity
/// `rows ≥ (T+1)·B`; a call uses the prefix its (T, B) needs.
struct TaskCache<B: Backend> {
    /// Separate task input `x^k` (T, B, D_k); `None` when the gate reads `x`.
    x_k: Option<B::Buf>,
    /// Task gate pre-activations, then `o^k_t` (T, B, H).
    o_k: B::Buf,
    /// Task outputs, slot 0 = 0, `q^k_t` in slot t+1 (T+1, B, H).
    q_k: B::Buf,
    /// Gradient w.r.t. the task gate pre-activations (T, B, H).
    d_o_k: B::Buf,
    /// Gradient w.r.t. `q_k` slots (T+1, B, H).
    d_q_k: B::Buf,
    /// Gradient w.r.t. `x^k` (T, B, D_k); `None` when the gate reads `x`.
    d_x_k: Option<B::Buf>,
}

/// Device buffers of one direction of one layer (llm.c-style activation cache). Shapes
/// name the capacity `rows ≥ (T+1)·B`; a call uses the prefix its (T, B) needs.
struct DirCache<B: Backend> {
    /// Sizes of the call currently using the cache (set on every take from the pool).
    geo: DirGeometry,
    /// Row capacity: `(T+1)·B` of the batch that allocated it, rounded up to a power of two.
    rows: usize,
    /// Elements in all its buffers together.
    elems: usize,
    /// Whether it has the backward's buffers (every gradient); a forward-only cache
    /// holds 1-element placeholders there.
    backward: bool,
    /// Input in this direction's time order (T, B, D).
    x: B::Buf,
    /// All ones (T·B): column sums (bias gradients) as a gemm.
    ones: B::Buf,
    /// 1 inside a sentence, 0 on padding (T, B).
    mask: B::Buf,
    /// Gate pre-activations, then activations `[i, f, g, o]` (T, B, 4H).
    gates: B::Buf,
    /// Cell states, slot 0 = 0, `c_t` in slot t+1 (T+1, B, H).
    c: B::Buf,
    /// Hidden states, slot 0 = 0, `h_t` in slot t+1 (T+1, B, H).
    h: B::Buf,
    /// `tanh(c_t)` (T, B, H).
    tanh_c: B::Buf,
    /// Gradient w.r.t. the gate pre-activations (T, B, 4H).
    d_gates: B::Buf,
    /// Gradient w.r.t. `h` slots (T+1, B, H).
    d_h: B::Buf,
    /// Gradient w.r.t. `c` slots (T+1, B, H).
    d_c: B::Buf,
    /// Gradient w.r.t. `x` (T, B, D), including shared-input task gates.
    d_x: B::Buf,
    /// One per requested task, in request order.
    tasks: Vec<TaskCache<B>>,
}

impl<B: Backend> Pooled for DirCache<B> {
    fn rank(&self) -> usize {
        self.rows
    }
    fn elems(&self) -> usize {
        self.elems
    }
}

impl<B: Backend> DirCache<B> {
    /// Allocates zeroed buffers for `geo`, with room for the next power of two of the
    /// rows it needs; the backward's buffers only when `backward`.
    fn new(be: &B, geo: &DirGeometry, backward: bool) -> Result<Self, NumError> {
        let rows = ((geo.steps + 1) * geo.batch).next_power_of_two();
        let (d, h) = (geo.input, geo.hidden);
        let alloc = Counted::new(be);
        let z = |n: usize| alloc.zeros(n);
        // Buffers only the backward reads or writes.
        let zb = |n: usize| alloc.zeros(if backward { n } else { 1 });
        let ones = if backward {
            alloc.upload(&vec![B::Elem::one(); rows])?
        } else {
            z(1)?
        };
        let mut tasks = Vec::with_capacity(geo.tasks.len());
        for &(dk, separate) in &geo.tasks {
            tasks.push(TaskCache {
                x_k: if separate { Some(z(rows * dk)?) } else { None },
                o_k: z(rows * h)?,
                q_k: z(rows * h)?,
                d_o_k: zb(rows * h)?,
                d_q_k: zb(rows * h)?,
                d_x_k: if separate { Some(zb(rows * dk)?) } else { None },
            });
        }
        let mut cache = DirCache {
            geo: geo.clone(),
            rows,
            elems: 0,
            backward,
            x: z(rows * d)?,
            ones,
            mask: z(rows)?,
            gates: z(rows * 4 * h)?,
            c: z(rows * h)?,
            h: z(rows * h)?,
            tanh_c: z(rows * h)?,
            d_gates: zb(rows * 4 * h)?,
            d_h: zb(rows * h)?,
            d_c: zb(rows * h)?,
            d_x: zb(rows * d)?,
            tasks,
        };
        cache.elems = alloc.elems.get();
        Ok(cache)
    }

    /// Whether this cache can serve `geo` (with a backward when `backward`): same layer
    /// sizes, enough rows, at most [`MAX_SLACK`] times the rows it needs, and the
    /// backward's buffers if asked for.
    fn fits(&self, geo: &DirGeometry, backward: bool) -> bool {
        let need = (geo.steps + 1) * geo.batch;
        self.same_layer(geo)
            && self.rows >= need
            && self.rows <= MAX_SLACK * need
            && (self.backward || !backward)
    }

    /// Whether this cache was made for the same layer sizes as `geo` (any length).
    fn same_layer(&self, geo: &DirGeometry) -> bool {
        self.geo.input == geo.input && self.geo.hidden == geo.hidden && self.geo.tasks == geo.tasks
    }
}

/// Device buffers one layer call shares between its units, in the caller's row order
/// (row `t·B + b` = step `t` of sentence `b`): the inputs are uploaded once and every
/// unit gathers its rows from them; the units' outputs are scatter-added into `out` and
/// downloaded once. The backward reuses the same buffers, whose forward contents are no
/// longer needed by then (the units keep their own gathered inputs): `out` receives the
/// output gradient, `x` and `x_k` collect the input gradients. Shapes name the capacity
/// `rows ≥ T·B`.
struct CallCache<B: Backend> {
    /// Layer sizes of the call that made it (`steps`, `batch` unused).
    geo: DirGeometry,
    /// Directions.
    nd: usize,
    /// Row capacity: `T·B` of the call that allocated it, rounded up to a power of two.
    rows: usize,
    /// Elements in all its buffers together.
    elems: usize,
    /// Shared input `x`, then its gradient (T·B, D).
    x: B::Buf,
    /// Separate task inputs `x^k`, then their gradients (T·B, D_k), one per task that
    /// reads one, in order.
    x_k: Vec<B::Buf>,
    /// The layer's output, then its gradient (T·B, nd·(1+K)·H), column layout in the
    /// module docs.
    out: B::Buf,
}

impl<B: Backend> CallCache<B> {
    /// Allocates buffers for a call of `geo` with `nd` directions.
    fn new(be: &B, geo: &DirGeometry, nd: usize) -> Result<Self, NumError> {
        let rows = (geo.steps * geo.batch).next_power_of_two();
        let width = nd * (1 + geo.tasks.len()) * geo.hidden;
        let alloc = Counted::new(be);
        let z = |n: usize| alloc.zeros(n);
        let mut cache = CallCache {
            geo: geo.clone(),
            nd,
            rows,
            elems: 0,
            x: z(rows * geo.input)?,
            x_k: geo
                .tasks
                .iter()
                .filter(|&&(_, sep)| sep)
                .map(|&(dk, _)| z(rows * dk))
                .collect::<Result<_, _>>()?,
            out: z(rows * width)?,
        };
        cache.elems = alloc.elems.get();
        Ok(cache)
    }

    /// Whether this cache can serve a call of `geo` with `nd` directions: same layer
    /// sizes, enough rows but at most [`MAX_SLACK`] times too many.
    fn fits(&self, geo: &DirGeometry, nd: usize) -> bool {
        let need = geo.steps * geo.batch;
        self.nd == nd
            && self.geo.input == geo.input
            && self.geo.hidden == geo.hidden
            && self.geo.tasks == geo.tasks
            && self.rows >= need
            && self.rows <= MAX_SLACK * need
    }
}

impl<B: Backend> Pooled for CallCache<B> {
    fn rank(&self) -> usize {
        self.rows
    }
    fn elems(&self) -> usize {
        self.elems
    }
}

/// Device copies of one task gate's weights.
struct GateWeightBufs<B: Backend> {
    /// `U_k` (H, D_k), for the backward's `d_x^k = d_o_k·U_k` (backward only).
    u: B::Buf,
    /// `U_kᵀ` (D_k, H): the forward's input projection `x·U_kᵀ` with a plain `B`.
    u_t: B::Buf,
    /// `W_k` (H, H), for the backward's `d_q_k[t] += d_o_k[t]·W_k` (backward only).
    w: B::Buf,
    /// `W_kᵀ` (H, H): the forward's `q^k_{t-1}·W_kᵀ` with a plain `B`.
    w_t: B::Buf,
    /// `b_k` (H).
    b: B::Buf,
}

/// Device copies of one direction's weights, written once per layer call and read by
/// every unit (length group) of that direction. Their sizes do not depend on the batch,
/// so any pooled set of the same layer sizes serves.
struct WeightBufs<B: Backend> {
    /// Layer sizes it was made for (`steps`, `batch` unused).
    geo: DirGeometry,
    /// Elements in all its buffers together.
    elems: usize,
    /// Whether it has the backward's copies (the weights as stored); a forward-only set
    /// holds 1-element placeholders there.
    backward: bool,
    /// The [`ScLstmArgs::weights_version`] and weight addresses ([`weights_key`]) of the
    /// values it holds, when written by a call that had a version: a later call with the
    /// same stamp finds its weights already on the device.
    stamp: Option<Stamp>,
    /// Whether the stamped write included the backward's copies.
    stamp_has_backward: bool,
    /// `W_ih` (4H, D), for the backward's `d_x = d_gates·W_ih` (backward only).
    w_ih: B::Buf,
    /// `W_ihᵀ` (D, 4H): the forward's input projection `x·W_ihᵀ` with a plain `B`.
    w_ih_t: B::Buf,
    /// `W_hh` (4H, H), for the backward's `d_h[t] += d_gates[t]·W_hh` (backward only).
    w_hh: B::Buf,
    /// `W_hhᵀ` (H, 4H): the forward's `h_{t-1}·W_hhᵀ` with a plain (not transposed) `B`,
    /// the faster layout for the per-step product (see the CPU backend's small-m kernels).
    w_hh_t: B::Buf,
    /// `b` (4H).
    b: B::Buf,
    /// One per requested task, in request order.
    tasks: Vec<GateWeightBufs<B>>,
    /// Every weight gradient of the direction, packed in gradient order
    /// ([`param_sizes`]): `W_ih` (4H, D), `W_hh` (4H, H), `b` (4H), then per task `U_k`
    /// (H, D_k), `W_k` (H, H), `b_k` (H) (backward only). The direction's units add into
    /// it in group order (one after the other: they run on the same side of the
    /// [`Join`], so the lock is never contended), and it is downloaded once.
    d_params: Mutex<B::Buf>,
}

impl<B: Backend> WeightBufs<B> {
    /// Allocates buffers for one direction of a layer of `geo`; the backward's copies
    /// only when `backward`.
    fn new(be: &B, geo: &DirGeometry, backward: bool) -> Result<Self, NumError> {
        let (d, h) = (geo.input, geo.hidden);
        let alloc = Counted::new(be);
        let z = |n: usize| alloc.zeros(n);
        let zb = |n: usize| alloc.zeros(if backward { n } else { 1 });
        let mut tasks = Vec::with_capacity(geo.tasks.len());
        for &(dk, _) in &geo.tasks {
            tasks.push(GateWeightBufs {
                u: zb(h * dk)?,
                u_t: z(h * dk)?,
                w: zb(h * h)?,
                w_t: z(h * h)?,
                b: z(h)?,
            });
        }
        let mut bufs = WeightBufs {
            geo: geo.clone(),
            elems: 0,
            backward,
            stamp: None,
            stamp_has_backward: false,
            w_ih: zb(4 * h * d)?,
            w_ih_t: z(4 * h * d)?,
            w_hh: zb(4 * h * h)?,
            w_hh_t: z(4 * h * h)?,
            b: z(4 * h)?,
            tasks,
            d_params: Mutex::new(zb(param_sizes(geo).iter().sum())?),
        };
        bufs.elems = alloc.elems.get();
        Ok(bufs)
    }

    /// Whether this set can hold the weights of a layer of `geo` (with the backward's
    /// copies when `backward`).
    fn fits(&self, geo: &DirGeometry, backward: bool) -> bool {
        self.geo.input == geo.input
            && self.geo.hidden == geo.hidden
            && self.geo.tasks == geo.tasks
            && (self.backward || !backward)
    }

    /// Writes one direction's weights: the forward's transposes, and the weights as
    /// stored when `record` (the backward reads them). Stamps the set with `stamp`.
    fn write(
        &mut self,
        be: &B,
        dir: &DirectionWeights<'_, B::Elem>,
        record: bool,
        stamp: Option<Stamp>,
    ) -> Result<(), NumError> {
        // The forward reads every weight transposed into a plain matrix (`x·Wᵀ` with a
        // row-major `Wᵀ`): the CPU backend's unpacked kernels stream a plain `B` about
        // twice as fast as a transposed one. The backward reads the weights as stored.
        self.stamp = None;
        let mut scratch = Vec::new();
        let mut write_t = |buf: &mut B::Buf, m: &Matrix<B::Elem>| {
            transposed_into(m, &mut scratch);
            be.write(buf, &scratch)
        };
        write_t(&mut self.w_ih_t, dir.cell.w_ih)?;
        write_t(&mut self.w_hh_t, dir.cell.w_hh)?;
        for (gb, w) in self.tasks.iter_mut().zip(&dir.tasks) {
            write_t(&mut gb.u_t, w.u)?;
            write_t(&mut gb.w_t, w.w)?;
        }
        if record {
            be.write(&mut self.w_ih, &row_major(dir.cell.w_ih))?;
            be.write(&mut self.w_hh, &row_major(dir.cell.w_hh))?;
        }
        be.write(&mut self.b, &row_major(dir.cell.b))?;
        for (gb, w) in self.tasks.iter_mut().zip(&dir.tasks) {
            if record {
                be.write(&mut gb.u, &row_major(w.u))?;
                be.write(&mut gb.w, &row_major(w.w))?;
            }
            be.write(&mut gb.b, &row_major(w.b))?;
        }
        self.stamp = stamp;
        self.stamp_has_backward = record;
        Ok(())
    }

    /// Whether the set already holds the weights stamped `stamp` (never for `None`),
    /// including the backward's copies when `record`.
    fn holds(&self, stamp: &Option<Stamp>, record: bool) -> bool {
        stamp.is_some() && self.stamp == *stamp && (self.stamp_has_backward || !record)
    }
}

impl<B: Backend> Pooled for WeightBufs<B> {
    /// Sets holding no versioned weights are taken first, so that those kept for later
    /// calls with the same weights survive.
    fn rank(&self) -> usize {
        usize::from(self.stamp.is_some())
    }
    fn elems(&self) -> usize {
        self.elems
    }
}

/// Element counts of one direction's weights in gradient order: `W_ih`, `W_hh`, `b`,
/// then per task `U_k`, `W_k`, `b_k` (the layout of `WeightBufs::d_params`).
fn param_sizes(geo: &DirGeometry) -> Vec<usize> {
    let (d, h) = (geo.input, geo.hidden);
    let mut sizes = vec![4 * h * d, 4 * h * h, 4 * h];
    for &(dk, _) in &geo.tasks {
        sizes.extend([h * dk, h * h, h]);
    }
    sizes
}

/// Runs one direction forward on the device (the caller has gathered the unit's rows of
/// `x` and of any separate `x^k` into the cache and written the direction's weights
/// into `wb`); `h` and each task's `q_k` stay in the cache for the caller to collect.
fn dir_forward<B: Backend>(
    be: &B,
    dc: &mut DirCache<B>,
    wb: &WeightBufs<B>,
    mask: &[B::Elem],
    active: &[usize],
) -> Result<(), NumError> {
    let DirGeometry {
        steps,
        batch,
        input: d,
        hidden: hd,
        ..
    } = dc.geo.clone();
    let rows = steps * batch;
    let zeros = vec![B::Elem::zero(); batch * hd];

    be.write(&mut dc.mask, mask)?;
    be.write(&mut dc.c, &zeros)?;
    be.write(&mut dc.h, &zeros)?;
    // gates = x · W_ihᵀ + b for all T·B rows at once.
    let proj = Gemm::new(rows, 4 * hd, d);
    be.gemm(&proj, &dc.x, &wb.w_ih_t, Some(&wb.b), &mut dc.gates)?;

    for (j, (tc, gb)) in dc.tasks.iter_mut().zip(&wb.tasks).enumerate() {
        be.write(&mut tc.q_k, &zeros)?;
        let dk = dc.geo.tasks[j].0;
        // o_k = x^k · U_kᵀ + b_k for all rows.
        let proj = Gemm::new(rows, hd, dk);
        let xk = tc.x_k.as_ref().unwrap_or(&dc.x);
        be.gemm(&proj, xk, &gb.u_t, Some(&gb.b), &mut tc.o_k)?;
    }

    for (t, &running) in active.iter().enumerate().take(steps) {
        let s = CellStep {
            t,
            batch,
            hidden: hd,
        };
        // gates[t] += h_{t-1} · W_hhᵀ
        let rec = Gemm {
            a_off: t * batch * hd,
            c_off: t * batch * 4 * hd,
            accumulate: true,
            ..Gemm::new(running, 4 * hd, hd)
        };
        be.gemm(&rec, &dc.h, &wb.w_hh_t, None, &mut dc.gates)?;
        be.lstm_cell_fwd(
            s,
            &mut dc.gates,
            &mut dc.c,
            &mut dc.h,
            &mut dc.tanh_c,
            &dc.mask,
        )?;
        for (tc, gb) in dc.tasks.iter_mut().zip(&wb.tasks) {
            // o_k[t] += q^k_{t-1} · W_kᵀ
            let rec = Gemm {
                a_off: t * batch * hd,
                c_off: t * batch * hd,
                accumulate: true,
                ..Gemm::new(running, hd, hd)
            };
            be.gemm(&rec, &tc.q_k, &gb.w_t, None, &mut tc.o_k)?;
            be.task_gate_fwd(s, &mut tc.o_k, &mut tc.q_k, &dc.tanh_c, &dc.mask)?;
        }
    }
    Ok(())
}

/// Runs one direction's BPTT on the device. The caller has gathered the output
/// gradients into `d_h` and each task's `d_q_k` ((T+1, B, H), slot 0 ignored) in this
/// unit's row order. The input gradients `d_x` (and `d_x_k`) stay in the cache for the
/// caller to collect; the weight gradients go to the direction's `wb.d_params`
/// (overwritten by the `first` group, added to by later ones).
fn dir_backward<B: Backend>(
    be: &B,
    dc: &mut DirCache<B>,
    wb: &WeightBufs<B>,
    first: bool,
    active: &[usize],
) -> Result<(), NumError> {
    let DirGeometry {
        steps,
        batch,
        input: d,
        hidden: hd,
        ..
    } = dc.geo.clone();
    let rows = steps * batch;
    let (bh, bg) = (batch * hd, batch * 4 * hd);

    be.fill_zero(&mut dc.d_c)?;

    for t in (0..steps).rev() {
        let s = CellStep {
            t,
            batch,
            hidden: hd,
        };
        for (tc, gb) in dc.tasks.iter_mut().zip(&wb.tasks) {
            // d_o_k[t] from d_q_k[t+1]; d_c[t+1] += d_q·o·(1 − tanh²c_t).
            be.task_gate_bwd(
                s,
                &tc.o_k,
                &dc.tanh_c,
                &dc.mask,
                &tc.d_q_k,
                &mut tc.d_o_k,
                &mut dc.d_c,
            )?;
            if t > 0 {
                // d_q_k[t] (= d q^k_{t-1}) += d_o_k[t] · W_k
                let g = Gemm {
                    a_off: t * bh,
                    c_off: t * bh,
                    accumulate: true,
                    ..Gemm::new(active[t], hd, hd)
                };
                be.gemm(&g, &tc.d_o_k, &gb.w, None, &mut tc.d_q_k)?;
            }
        }
        be.lstm_cell_bwd(
            s,
            &dc.gates,
            &dc.c,
            &dc.tanh_c,
            &dc.mask,
            &dc.d_h,
            &mut dc.d_c,
            &mut dc.d_gates,
        )?;
        if t > 0 {
            // d_h[t] (= d h_{t-1}) += d_gates[t] · W_hh
            let g = Gemm {
                a_off: t * bg,
                c_off: t * bh,
                accumulate: true,
                ..Gemm::new(active[t], hd, 4 * hd)
            };
            be.gemm(&g, &dc.d_gates, &wb.w_hh, None, &mut dc.d_h)?;
        }
    }

    // Weight gradients: one gemm each over all T·B rows, into their packed slots of the
    // direction's buffer; the first group overwrites, later ones add.
    let mut d_params = lock(&wb.d_params);
    let d_params = &mut *d_params;
    let accumulate = !first;
    let sizes = param_sizes(&dc.geo);
    let offsets: Vec<usize> = sizes
        .iter()
        .scan(0, |at, &n| {
            *at += n;
            Some(*at - n)
        })
        .collect();
    let d_gates_t = |n: usize, c_off: usize| Gemm {
        trans_a: true,
        c_off,
        accumulate,
        ..Gemm::new(4 * hd, n, rows)
    };
    be.gemm(
        &d_gates_t(d, offsets[0]),
        &dc.d_gates,
        &dc.x,
        None,
        d_params,
    )?;
    be.gemm(
        &d_gates_t(hd, offsets[1]),
        &dc.d_gates,
        &dc.h,
        None,
        d_params,
    )?;
    let bias = Gemm {
        c_off: offsets[2],
        accumulate,
        ..Gemm::new(1, 4 * hd, rows)
    };
    be.gemm(&bias, &dc.ones, &dc.d_gates, None, d_params)?;
    be.gemm(
        &Gemm::new(rows, d, 4 * hd),
        &dc.d_gates,
        &wb.w_ih,
        None,
        &mut dc.d_x,
    )?;
    for (j, (tc, gb)) in dc.tasks.iter_mut().zip(&wb.tasks).enumerate() {
        let dk = dc.geo.tasks[j].0;
        let at = &offsets[3 + 3 * j..6 + 3 * j];
        let d_o_t = |n: usize, c_off: usize| Gemm {
            trans_a: true,
            c_off,
            accumulate,
            ..Gemm::new(hd, n, rows)
        };
        let xk = tc.x_k.as_ref().unwrap_or(&dc.x);
        be.gemm(&d_o_t(dk, at[0]), &tc.d_o_k, xk, None, d_params)?;
        be.gemm(&d_o_t(hd, at[1]), &tc.d_o_k, &tc.q_k, None, d_params)?;
        let bias = Gemm {
            c_off: at[2],
            accumulate,
            ..Gemm::new(1, hd, rows)
        };
        be.gemm(&bias, &dc.ones, &tc.d_o_k, None, d_params)?;
        let back = Gemm::new(rows, dk, hd);
        match &mut tc.d_x_k {
            Some(dxk) => be.gemm(&back, &tc.d_o_k, &gb.u, None, dxk)?,
            None => {
                let acc = Gemm {
                    accumulate: true,
                    ..back
                };
                be.gemm(&acc, &tc.d_o_k, &gb.u, None, &mut dc.d_x)?;
            }
        }
    }

    Ok(())
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
    if u32::try_from(seq.rows()).is_err() {
        // Rows are addressed by 32-bit ids in the backends' row gathers.
        return Err(NumError::ShapeMismatch {
            op,
            lhs: vec![seq.rows()],
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
        input: d,
        hidden: hd,
        tasks,
    };
    Ok((seq, geo))
}

/// One piece of a layer call: one direction over one group of sentences
/// ([`SeqShape::groups`]), run as its own (T_g, B_g) problem with its own cache.
struct Unit<R> {
    /// 0 = forward, 1 = reverse.
    dir: usize,
    /// Sizes: `steps` = the group's longest sentence, `batch` = its sentence count.
    geo: DirGeometry,
    /// Internal row `t·B_g + j` → row of the caller's `(T·B, ·)` matrices: the ids of
    /// the row gathers and scatter-adds between the call cache and the unit's cache.
    ids: Vec<u32>,
    /// Per step: sentences of the group still running (a prefix: the group is longest
    /// first), so the per-step products skip the finished ones.
    active: Vec<usize>,
    /// The (T_g, B_g) mask (the same for both directions: reversal keeps padding last).
    mask: Vec<R>,
}

/// Splits a layer call into units: for each group of sentences, each direction (units
/// are ordered group-major). Inside a group the sentences run longest first and the
/// reverse direction reverses each sentence.
fn plan<R: Real>(seq: &SeqShape, geo: &DirGeometry, nd: usize) -> Vec<Unit<R>> {
    let batch = seq.batch();
    let rev = seq.reversal();
    let groups = seq.groups();
    let mut units = Vec::with_capacity(groups.len() * nd);
    for members in &groups {
        let lens: Vec<usize> = members.iter().map(|&b| seq.lens[b]).collect();
        let steps = lens.iter().copied().max().unwrap_or(0).max(1);
        let bg = members.len();
        let mask = (0..steps * bg)
            .map(|r| {
                if r / bg < lens[r % bg] {
                    R::one()
                } else {
                    R::zero()
                }
            })
            .collect::<Vec<R>>();
        let active: Vec<usize> = (0..steps)
            .map(|t| lens.iter().filter(|&&l| l > t).count())
            .collect();
        for dir in 0..nd {
            let to_caller = |r: usize| {
                let row = (r / bg) * batch + members[r % bg];
                let row = if dir == 1 { rev[row] } else { row };
                u32::try_from(row).expect("internal: validate bounds the rows to u32")
            };
            let ids = (0..steps * bg).map(to_caller).collect();
            units.push(Unit {
                dir,
                geo: DirGeometry {
                    steps,
                    batch: bg,
                    ..geo.clone()
                },
                ids,
                active: active.clone(),
                mask: mask.clone(),
            });
        }
    }
    units
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
    let units = plan::<B::Elem>(&seq, &geo, nd);
    let stamps: Vec<Option<Stamp>> = args
        .directions
        .iter()
        .map(|d| args.weights_version.map(|v| (v, weights_key(d))))
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
    let separate: Vec<bool> = geo.tasks.iter().map(|&(_, s)| s).collect();
    let node = ScLstmOp {
        ws: ws.clone(),
        caches: Mutex::new(held),
        geo,
        units,
        separate,
        nd,
    };
    Ok((out, Some(Box::new(node))))
}

/// Rows of `width` values at column `col` of a caller-order `(rows, stride)` buffer (the
/// table side, addressed by the unit's ids) paired with the rows of a packed unit buffer
/// (the dense side: unit row `r` after `skip` leading rows, e.g. a state buffer's zero
/// slot).
fn caller_rows(rows: usize, stride: usize, col: usize, width: usize, skip: usize) -> RowCopy {
    RowCopy {
        width,
        table_rows: rows,
        table_stride: stride,
        table_off: col,
        dense_stride: width,
        dense_off: skip * width,
    }
}

/// The device work of [`sc_lstm_forward`] once the caches are taken: uploads the inputs
/// once and each direction's weights once, gathers each unit's rows, runs the units,
/// scatters their `h` and `q_k` into the call's output and downloads it.
fn forward_units<B: Backend>(
    ws: &LayerWorkspace<B>,
    args: &ScLstmArgs<'_, B::Elem>,
    units: &[Unit<B::Elem>],
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
    be.fill_zero(&mut call.out)?;
    // Each direction's weights (on the two sides of the join), unless the set already
    // holds them under the same stamp.
    let written = ws.each_unit(weights, |i, wb| {
        if wb.holds(&stamps[i], record) {
            return Ok(());
        }
        wb.write(be, &args.directions[i], record, stamps[i].clone())
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
        dir_forward(be, dc, &weights[unit.dir], &unit.mask, &unit.active)
    });
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    // Slot t+1, row j of a unit's state buffer → its caller row, at the block's columns.
    for (unit, dc) in units.iter().zip(caches.iter()) {
        let place = |col: usize| caller_rows(rows, width, col, hd, unit.geo.batch);
        be.scatter_add_rows(&place(unit.dir * hd), &unit.ids, &dc.h, &mut call.out)?;
        for (j, tc) in dc.tasks.iter().enumerate() {
            let col = (nd * (1 + j) + unit.dir) * hd;
            be.scatter_add_rows(&place(col), &unit.ids, &tc.q_k, &mut call.out)?;
        }
    }
    let mut flat = be.download(&call.out)?;
    flat.truncate(rows * width);
    Ok(Matrix::from_shape_vec((rows, width), flat).expect("internal: output length matches"))
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
        weights_version: None,
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
        weights_version: None,
    };
    sc_lstm_forward(ws, &args, record)
}

/// The caches a layer call takes from the workspace (and a recorded layer keeps for its
/// backward).
struct HeldCaches<B: Backend> {
    /// One per unit, in unit order.
    units: Vec<DirCache<B>>,
    /// The call cache (`None` only before it is taken).
    call: Option<CallCache<B>>,
    /// One weight set per direction.
    weights: Vec<WeightBufs<B>>,
}

impl<B: Backend> Default for HeldCaches<B> {
    fn default() -> Self {
        HeldCaches {
            units: Vec::new(),
            call: None,
            weights: Vec::new(),
        }
    }
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
    /// The (group, direction) pieces of the call, one cache each (same order).
    units: Vec<Unit<B::Elem>>,
    /// Per task: reads a separate input.
    separate: Vec<bool>,
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
        be.fill_zero(&mut call.x)?;
        for buf in &mut call.x_k {
            be.fill_zero(buf)?;
        }

        let call_in = &*call;
        let run = |i: usize, dc: &mut DirCache<B>| {
            let unit = &self.units[i];
            // Output columns → (T_g+1, B_g, H) gradients from slot 1 (slot 0 is never read).
            let take = |col: usize| caller_rows(rows, width, col, hd, unit.geo.batch);
            be.gather_rows(&take(unit.dir * hd), &unit.ids, &call_in.out, &mut dc.d_h)?;
            for (j, tc) in dc.tasks.iter_mut().enumerate() {
                let col = (nd * (1 + j) + unit.dir) * hd;
                be.gather_rows(&take(col), &unit.ids, &call_in.out, &mut tc.d_q_k)?;
            }
            dir_backward(be, dc, &weights[unit.dir], i < nd, &unit.active)
        };
        // A direction's units must run in group order (the first overwrites the
        // direction's weight gradients, later ones add): with two directions the join
        // keeps each direction on one side; with one, every unit runs on this thread.
        let results: Vec<Result<(), NumError>> = if nd == 2 {
            self.ws.each_unit(caches, run)
        } else {
            caches
                .iter_mut()
                .enumerate()
                .map(|(i, dc)| run(i, dc))
                .collect()
        };
        // Units are group-major: the first group's weight gradients start each
        // direction's sums, later groups add to them in group order (a fixed order:
        // deterministic). The input gradients are added into the call's buffers in the
        // same unit order.
        for ((unit, dc), done) in self.units.iter().zip(caches.iter()).zip(results) {
            done?;
            be.scatter_add_rows(
                &caller_rows(rows, d, 0, d, 0),
                &unit.ids,
                &dc.d_x,
                &mut call.x,
            )?;
            let separate = dc.tasks.iter().filter_map(|tc| tc.d_x_k.as_ref());
            for ((dxk, acc), &(dk, _)) in separate
                .zip(call.x_k.iter_mut())
                .zip(self.geo.tasks.iter().filter(|t| t.1))
            {
                be.scatter_add_rows(&caller_rows(rows, dk, 0, dk, 0), &unit.ids, dxk, acc)?;
            }
        }
        let fetch = |buf: &B::Buf, cols: usize| -> Result<Matrix<B::Elem>, NumError> {
            let mut v = be.download(buf)?;
            v.truncate(rows * cols);
            Ok(Matrix::from_shape_vec((rows, cols), v).expect("internal: gradient length matches"))
        };
        let d_x = fetch(&call.x, d)?;
        let mut d_x_k = call
            .x_k
            .iter()
            .zip(self.geo.tasks.iter().filter(|t| t.1))
            .map(|(buf, &(dk, _))| fetch(buf, dk));

        let mut shapes = vec![(4 * hd, d), (4 * hd, hd), (1, 4 * hd)];
        for &(dk, _) in &self.geo.tasks {
            shapes.extend([(hd, dk), (hd, hd), (1, hd)]);
        }
        // Each direction's weight gradients in one transfer.
        let sizes = param_sizes(&self.geo);
        let mut per_dir: Vec<Vec<Option<Matrix<B::Elem>>>> = weights
            .iter()
            .map(|wb| {
                let parts = be.download_parts(&lock(&wb.d_params), &sizes)?;
                Ok(parts
                    .into_iter()
                    .zip(&shapes)
                    .map(|(v, &shape)| {
                        Some(
                            Matrix::from_shape_vec(shape, v)
                                .expect("internal: gradient length matches its shape"),
                        )
                    })
                    .collect())
            })
            .collect::<Result<_, NumError>>()?;
        let mut grads = vec![Some(d_x)];
        for _ in self.separate.iter().filter(|&&s| s) {
            let m = d_x_k
                .next()
                .expect("internal: one call buffer per separate input");
            grads.push(Some(m?));
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
