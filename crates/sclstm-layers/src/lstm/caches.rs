//! What one layer call keeps on the backend: per-unit direction caches (activations for
//! the backward), per-call input/output buffers, and per-direction weight sets.

use super::*;

/// What a weight set holds: the store, its version and the direction's parameter ids
/// (one direction's part of a [`WeightsId`]).
pub(super) type Stamp = (u64, u64, Vec<u32>);

/// A pooled cache serves a call needing `need` rows only if it has at most this many
/// times as many: downloads copy whole buffers, so a far larger cache would copy mostly
/// unused rows on every call.
pub(super) const MAX_SLACK: usize = 4;

/// Sizes of one direction's computation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DirGeometry {
    /// Steps `T` of the caller's (time-major, padded) matrices.
    pub(super) steps: usize,
    /// Batch `B`.
    pub(super) batch: usize,
    /// Real tokens `N` (the rows of the packed step buffers).
    pub(super) tokens: usize,
    /// Shared input width `D`.
    pub(super) input: usize,
    /// Hidden size `H`.
    pub(super) hidden: usize,
    /// Per task: (`D_k`, reads a separate input).
    pub(super) tasks: Vec<(usize, bool)>,
}

/// Device buffers of one task gate of one direction, in the packed layout
/// (`sclstm_core::backend`): step buffers (N, ·), state buffers (B + N, ·) with the
/// initial state first. Shapes name what a call uses; the capacity is `rows ≥ B + N`.
pub(super) struct TaskCache<B: Backend> {
    /// Separate task input `x^k` (N, D_k); `None` when the gate reads `x`.
    pub(super) x_k: Option<B::Buf>,
    /// Task gate pre-activations, then `o^k_t` (N, H).
    pub(super) o_k: B::Buf,
    /// Task outputs, initial zeros then `q^k_t` (B + N, H).
    pub(super) q_k: B::Buf,
    /// Gradient w.r.t. the task gate pre-activations (N, H).
    pub(super) d_o_k: B::Buf,
    /// Gradient w.r.t. the rows of `q_k` (B + N, H).
    pub(super) d_q_k: B::Buf,
    /// Gradient w.r.t. `x^k` (N, D_k); `None` when the gate reads `x`.
    pub(super) d_x_k: Option<B::Buf>,
}

/// Device buffers of one direction of one layer (llm.c-style activation cache), in the
/// packed layout (`sclstm_core::backend`): step buffers (N, ·), state buffers (B + N, ·)
/// with the initial state first. Shapes name what a call uses; the capacity is
/// `rows ≥ B + N`.
pub(super) struct DirCache<B: Backend> {
    /// Sizes of the call currently using the cache (set on every take from the pool).
    pub(super) geo: DirGeometry,
    /// Row capacity: `B + N` of the batch that allocated it, rounded up to a power of two.
    pub(super) rows: usize,
    /// Elements in all its buffers together.
    pub(super) elems: usize,
    /// Whether it has the backward's buffers (every gradient); a forward-only cache
    /// holds 1-element placeholders there.
    pub(super) backward: bool,
    /// Input in this direction's time order (N, D).
    pub(super) x: B::Buf,
    /// All ones (N): column sums (bias gradients) as a gemm.
    pub(super) ones: B::Buf,
    /// Gate pre-activations, then activations `[i, f, g, o]` (N, 4H).
    pub(super) gates: B::Buf,
    /// Cell states, initial zeros then `c_t` (B + N, H).
    pub(super) c: B::Buf,
    /// Hidden states, initial zeros then `h_t` (B + N, H).
    pub(super) h: B::Buf,
    /// `tanh(c_t)` (N, H).
    pub(super) tanh_c: B::Buf,
    /// Gradient w.r.t. the gate pre-activations (N, 4H).
    pub(super) d_gates: B::Buf,
    /// Gradient w.r.t. the rows of `h` (B + N, H).
    pub(super) d_h: B::Buf,
    /// Gradient w.r.t. the rows of `c` (B + N, H).
    pub(super) d_c: B::Buf,
    /// Gradient w.r.t. `x` (N, D), including shared-input task gates.
    pub(super) d_x: B::Buf,
    /// The state each token's step read (`h_{t-1}`, then each task's `q^k_{t-1}`),
    /// lined up with the step rows (N, H), for the recurrent weight gradients.
    pub(super) prev_state: B::Buf,
    /// One per requested task, in request order.
    pub(super) tasks: Vec<TaskCache<B>>,
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
    pub(super) fn new(be: &B, geo: &DirGeometry, backward: bool) -> Result<Self, NumError> {
        let rows = (geo.batch + geo.tokens).next_power_of_two();
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
            gates: z(rows * 4 * h)?,
            c: z(rows * h)?,
            h: z(rows * h)?,
            tanh_c: z(rows * h)?,
            d_gates: zb(rows * 4 * h)?,
            d_h: zb(rows * h)?,
            d_c: zb(rows * h)?,
            d_x: zb(rows * d)?,
            prev_state: zb(rows * h)?,
            tasks,
        };
        cache.elems = alloc.elems.get();
        Ok(cache)
    }

    /// Whether this cache can serve `geo` (with a backward when `backward`): same layer
    /// sizes, enough rows, at most [`MAX_SLACK`] times the rows it needs, and the
    /// backward's buffers if asked for.
    pub(super) fn fits(&self, geo: &DirGeometry, backward: bool) -> bool {
        let need = geo.batch + geo.tokens;
        self.same_layer(geo)
            && self.rows >= need
            && self.rows <= MAX_SLACK * need
            && (self.backward || !backward)
    }

    /// Whether this cache was made for the same layer sizes as `geo` (any length).
    pub(super) fn same_layer(&self, geo: &DirGeometry) -> bool {
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
pub(super) struct CallCache<B: Backend> {
    /// Layer sizes of the call that made it (`steps`, `batch` unused).
    pub(super) geo: DirGeometry,
    /// Directions.
    pub(super) nd: usize,
    /// Row capacity: `T·B` of the call that allocated it, rounded up to a power of two.
    pub(super) rows: usize,
    /// Elements in all its buffers together.
    pub(super) elems: usize,
    /// Shared input `x`, then its gradient (T·B, D).
    pub(super) x: B::Buf,
    /// Separate task inputs `x^k`, then their gradients (T·B, D_k), one per task that
    /// reads one, in order.
    pub(super) x_k: Vec<B::Buf>,
    /// The layer's output, then its gradient (T·B, nd·(1+K)·H), column layout in the
    /// module docs.
    pub(super) out: B::Buf,
}

/// Where a call sums a result it hands back (its output, or its input gradients): on a
/// backend whose buffers are host memory a fresh zeroed buffer, returned as the result
/// without a copy ([`Backend::download_owned`]); elsewhere the call's pooled buffer, zeroed
/// first and downloaded at the end.
pub(super) struct ResultBuf<'a, B: Backend> {
    /// The fresh buffer, on a [`Backend::host_buffers`] backend.
    fresh: Option<B::Buf>,
    /// The call's buffer, used where there is no fresh one.
    pooled: &'a mut B::Buf,
    /// Rows of the result.
    rows: usize,
    /// Columns of the result.
    cols: usize,
}

impl<'a, B: Backend> ResultBuf<'a, B> {
    /// A zeroed `(rows, cols)` result, in `pooled` unless the backend's buffers are host
    /// memory.
    pub(super) fn new(
        be: &B,
        pooled: &'a mut B::Buf,
        rows: usize,
        cols: usize,
    ) -> Result<Self, NumError> {
        let fresh = if be.host_buffers() {
            Some(be.zeros(rows * cols)?)
        } else {
            be.fill_zero(pooled)?;
            None
        };
        Ok(ResultBuf {
            fresh,
            pooled,
            rows,
            cols,
        })
    }

    /// The buffer to sum into.
    pub(super) fn buf(&mut self) -> &mut B::Buf {
        match &mut self.fresh {
            Some(b) => b,
            None => self.pooled,
        }
    }

    /// The result as a host matrix.
    pub(super) fn into_matrix(self, be: &B) -> Result<Matrix<B::Elem>, NumError> {
        let len = self.rows * self.cols;
        let v = match self.fresh {
            Some(b) => be.download_owned(b, len)?,
            None => be.download_parts(self.pooled, &[len])?.remove(0),
        };
        Ok(Matrix::from_shape_vec((self.rows, self.cols), v)
            .expect("internal: a result's length matches its shape"))
    }
}

impl<B: Backend> CallCache<B> {
    /// Allocates buffers for a call of `geo` with `nd` directions.
    pub(super) fn new(be: &B, geo: &DirGeometry, nd: usize) -> Result<Self, NumError> {
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
    pub(super) fn fits(&self, geo: &DirGeometry, nd: usize) -> bool {
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
pub(super) struct GateWeightBufs<B: Backend> {
    /// `U_k` (H, D_k), for the backward's `d_x^k = d_o_k·U_k` (backward only).
    pub(super) u: B::Buf,
    /// `U_kᵀ` (D_k, H): the forward's input projection `x·U_kᵀ` with a plain `B`.
    pub(super) u_t: B::Buf,
    /// `W_k` (H, H), for the backward's `d q^k_{t-1} += d_o_k[t]·W_k` (backward only).
    pub(super) w: B::Buf,
    /// `W_kᵀ` (H, H): the forward's `q^k_{t-1}·W_kᵀ` with a plain `B`.
    pub(super) w_t: B::Buf,
    /// `b_k` (H).
    pub(super) b: B::Buf,
}

/// Device copies of one direction's weights, written once per layer call and read by
/// the direction's unit. Their sizes do not depend on the batch, so any pooled set of the
/// same layer sizes serves.
pub(super) struct WeightBufs<B: Backend> {
    /// Layer sizes it was made for (`steps`, `batch`, `tokens` unused).
    pub(super) geo: DirGeometry,
    /// Elements in all its buffers together.
    pub(super) elems: usize,
    /// Whether it has the backward's copies (the weights as stored); a forward-only set
    /// holds 1-element placeholders there.
    pub(super) backward: bool,
    /// The [`WeightsId`] part of the values it holds, when written by a call that had a version: a later call with the
    /// same stamp finds its weights already on the device.
    pub(super) stamp: Option<Stamp>,
    /// Whether the stamped write included the backward's copies.
    pub(super) stamp_has_backward: bool,
    /// The packed layout (`sclstm_core::backend`'s packed layouts) the forward's copies
    /// (`w_ih_t`, `w_hh_t`, `u_t`, `w_t`) hold for [`Backend::gemm_packed`], or `None`
    /// for f32: written so by a call that does not record, on a workspace with packed
    /// products.
    pub(super) packed: Option<Packed>,
    /// Whether the f32 weight copies (all but the biases) are in the strip layout
    /// (`sclstm_core::backend`), as the backend asks ([`Backend::strip_weights`]).
    pub(super) strips: bool,
    /// `W_ih` (4H, D), for the backward's `d_x = d_gates·W_ih` (backward only).
    pub(super) w_ih: B::Buf,
    /// `W_ihᵀ` (D, 4H): the forward's input projection `x·W_ihᵀ` with a plain `B`.
    pub(super) w_ih_t: B::Buf,
    /// `W_hh` (4H, H), for the backward's `d h_{t-1} += d_gates[t]·W_hh` (backward only).
    pub(super) w_hh: B::Buf,
    /// `W_hhᵀ` (H, 4H): the forward's `h_{t-1}·W_hhᵀ` with a plain (not transposed) `B`,
    /// the faster layout for the per-step product (see the CPU backend's small-m kernels).
    pub(super) w_hh_t: B::Buf,
    /// `b` (4H).
    pub(super) b: B::Buf,
    /// One per requested task, in request order.
    pub(super) tasks: Vec<GateWeightBufs<B>>,
    /// Every weight gradient of the direction, packed in gradient order
    /// ([`param_sizes`]): `W_ih` (4H, D), `W_hh` (4H, H), `b` (4H), then per task `U_k`
    /// (H, D_k), `W_k` (H, H), `b_k` (H) (backward only). The direction's unit writes it
    /// (the lock is never contended: one unit per direction) and it is downloaded once;
    /// a 1-element placeholder on a backend whose buffers are host memory, which writes
    /// fresh buffers instead ([`GradBufs`]).
    pub(super) d_params: Mutex<B::Buf>,
}

impl<B: Backend> WeightBufs<B> {
    /// Allocates buffers for one direction of a layer of `geo`; the backward's copies
    /// only when `backward`.
    pub(super) fn new(be: &B, geo: &DirGeometry, backward: bool) -> Result<Self, NumError> {
        let (d, h) = (geo.input, geo.hidden);
        let strips = be.strip_weights();
        let alloc = Counted::new(be);
        // A `k × n` operand, in strips or plain.
        let len = |k: usize, n: usize| if strips { strip_len(k, n) } else { k * n };
        // The forward's copies: room for f32 or either packed layout.
        let z = |k: usize, n: usize| {
            let packed = [Packed::Bf16, Packed::Int8].map(|p| p.elems(k, n, strips));
            alloc.zeros(len(k, n).max(packed[0]).max(packed[1]))
        };
        // The backward's buffers: 1-element placeholders in a forward-only set.
        let zb = |elems: usize| alloc.zeros(if backward { elems } else { 1 });
        let mut tasks = Vec::with_capacity(geo.tasks.len());
        for &(dk, _) in &geo.tasks {
            tasks.push(GateWeightBufs {
                u: zb(len(h, dk))?,
                u_t: z(dk, h)?,
                w: zb(len(h, h))?,
                w_t: z(h, h)?,
                b: alloc.zeros(h)?,
            });
        }
        let mut bufs = WeightBufs {
            geo: geo.clone(),
            elems: 0,
            backward,
            stamp: None,
            stamp_has_backward: false,
            packed: None,
            strips,
            w_ih: zb(len(4 * h, d))?,
            w_ih_t: z(d, 4 * h)?,
            w_hh: zb(len(4 * h, h))?,
            w_hh_t: z(h, 4 * h)?,
            b: alloc.zeros(4 * h)?,
            tasks,
            // A backend whose buffers are host memory writes fresh ones ([`GradBufs`]).
            d_params: Mutex::new(if be.host_buffers() {
                alloc.zeros(1)?
            } else {
                zb(param_sizes(geo).iter().sum())?
            }),
        };
        bufs.elems = alloc.elems.get();
        Ok(bufs)
    }

    /// Whether this set can hold the weights of a layer of `geo` (with the backward's
    /// copies when `backward`).
    pub(super) fn fits(&self, geo: &DirGeometry, backward: bool) -> bool {
        self.geo.input == geo.input
            && self.geo.hidden == geo.hidden
            && self.geo.tasks == geo.tasks
            && (self.backward || !backward)
    }

    /// Writes one direction's weights: the forward's transposes (packed as `packed`
    /// says, which excludes `record`), and the weights as stored when `record` (the
    /// backward reads them). Stamps the set with `stamp`.
    pub(super) fn write(
        &mut self,
        be: &B,
        dir: &DirectionWeights<'_, B::Elem>,
        record: bool,
        stamp: Option<Stamp>,
        packed: Option<Packed>,
    ) -> Result<(), NumError> {
        debug_assert!(
            !(packed.is_some() && record),
            "internal: packed copies are forward-only"
        );
        // The forward reads every weight transposed into a plain matrix (`x·Wᵀ` with a
        // row-major `Wᵀ`): the CPU backend's unpacked kernels stream a plain `B` about
        // twice as fast as a transposed one. The backward reads the weights as stored.
        // Either copy goes in strips where the backend asks for them.
        self.stamp = None;
        self.packed = packed;
        let strips = self.strips;
        let write_t = |buf: &mut B::Buf, m: &Matrix<B::Elem>| {
            if let Some(p) = packed {
                let fill = &mut |dst: &mut [B::Elem]| transpose_into(m, dst);
                be.write_packed(p, buf, m.ncols(), m.nrows(), strips, fill)
            } else if strips {
                let len = strip_len(m.ncols(), m.nrows());
                be.write_with(buf, len, &mut |dst| transpose_strips_into(m, dst))
            } else {
                be.write_with(buf, m.len(), &mut |dst| transpose_into(m, dst))
            }
        };
        let write = |buf: &mut B::Buf, m: &Matrix<B::Elem>| {
            if strips {
                let len = strip_len(m.nrows(), m.ncols());
                be.write_with(buf, len, &mut |dst| strips_into(m, dst))
            } else {
                be.write(buf, &row_major(m))
            }
        };
        // A weight's forward copy and, when `record`, its backward copy: in one pass over
        // the weight where both go in strips (training's case).
        let write_both = |t_buf: &mut B::Buf, buf: &mut B::Buf, m: &Matrix<B::Elem>| {
            if record && strips {
                let (rows, cols) = m.dim();
                let mut plain_written = Ok(());
                be.write_with(t_buf, strip_len(cols, rows), &mut |t| {
                    plain_written = be.write_with(buf, strip_len(rows, cols), &mut |plain| {
                        both_strips_into(m, Some(&mut *t), Some(plain))
                    });
                })?;
                plain_written
            } else {
                write_t(t_buf, m)?;
                if record { write(buf, m) } else { Ok(()) }
            }
        };
        write_both(&mut self.w_ih_t, &mut self.w_ih, dir.cell.w_ih)?;
        write_both(&mut self.w_hh_t, &mut self.w_hh, dir.cell.w_hh)?;
        be.write(&mut self.b, &row_major(dir.cell.b))?;
        for (gb, w) in self.tasks.iter_mut().zip(&dir.tasks) {
            write_both(&mut gb.u_t, &mut gb.u, w.u)?;
            write_both(&mut gb.w_t, &mut gb.w, w.w)?;
            be.write(&mut gb.b, &row_major(w.b))?;
        }
        self.stamp = stamp;
        self.stamp_has_backward = record;
        Ok(())
    }

    /// Whether the set already holds the weights stamped `stamp` (never for `None`),
    /// including the backward's copies when `record`, with the forward's copies packed
    /// as `packed` says.
    pub(super) fn holds(
        &self,
        stamp: &Option<Stamp>,
        record: bool,
        packed: Option<Packed>,
    ) -> bool {
        stamp.is_some()
            && self.stamp == *stamp
            && (self.stamp_has_backward || !record)
            && self.packed == packed
    }

    /// Whether a call stamped `stamp` may write its weights over this set: the set
    /// holds no versioned weights, the call has none, or the set holds another version
    /// of the same parameters (one no later call asks for). Weights another layer of
    /// the same sizes will ask for again stay.
    pub(super) fn free_for(&self, stamp: &Option<Stamp>) -> bool {
        match (&self.stamp, stamp) {
            (Some((store, _, ids)), Some((want_store, _, want_ids))) => {
                store == want_store && ids == want_ids
            }
            _ => true,
        }
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

/// Where a direction's backward writes its weight gradients, in gradient order
/// ([`param_sizes`]): on a backend whose buffers are host memory one fresh buffer per
/// weight, each handed back without a copy ([`Backend::download_owned`]); elsewhere the
/// direction's pooled `d_params`, the gradients one after another, downloaded in one
/// transfer. The products that fill them overwrite every element.
pub(super) struct GradBufs<'a, B: Backend> {
    /// One buffer per weight, on a [`Backend::host_buffers`] backend; empty elsewhere.
    fresh: Vec<B::Buf>,
    /// The direction's buffer, used where there are no fresh ones.
    pooled: MutexGuard<'a, B::Buf>,
    /// Elements of each gradient.
    sizes: Vec<usize>,
}

impl<'a, B: Backend> GradBufs<'a, B> {
    /// The gradient buffers of one direction of `wb`'s layer.
    pub(super) fn new(be: &B, wb: &'a WeightBufs<B>) -> Result<Self, NumError> {
        let sizes = param_sizes(&wb.geo);
        let fresh = if be.host_buffers() {
            sizes
                .iter()
                .map(|&n| be.zeros(n))
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        Ok(GradBufs {
            fresh,
            pooled: lock(&wb.d_params),
            sizes,
        })
    }

    /// The buffer of gradient `i` and the element where it starts there.
    pub(super) fn at(&mut self, i: usize) -> (&mut B::Buf, usize) {
        match self.fresh.get_mut(i) {
            Some(b) => (b, 0),
            None => (&mut *self.pooled, self.sizes[..i].iter().sum()),
        }
    }

    /// The gradients as host vectors, in gradient order.
    pub(super) fn into_vecs(self, be: &B) -> Result<Vec<Vec<B::Elem>>, NumError> {
        if self.fresh.is_empty() {
            return be.download_parts(&self.pooled, &self.sizes);
        }
        self.fresh
            .into_iter()
            .zip(&self.sizes)
            .map(|(b, &n)| be.download_owned(b, n))
            .collect()
    }
}

/// Element counts of one direction's weights in gradient order: `W_ih`, `W_hh`, `b`,
/// then per task `U_k`, `W_k`, `b_k` (the layout of `WeightBufs::d_params`).
pub(super) fn param_sizes(geo: &DirGeometry) -> Vec<usize> {
    let (d, h) = (geo.input, geo.hidden);
    let mut sizes = vec![4 * h * d, 4 * h * h, 4 * h];
    for &(dk, _) in &geo.tasks {
        sizes.extend([h * dk, h * h, h]);
    }
    sizes
}
