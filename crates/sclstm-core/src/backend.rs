//! The `Backend` trait: the handful of kernels that decide training speed.
//!
//! Everything else (heads, CRF, optimizers) is host code. A backend owns device buffers
//! ([`Backend::Buf`]) and runs gemm, the LSTM / SC-LSTM pointwise step kernels and row
//! gathers / scatter-adds (embedding lookups, per-sentence reversal) on them. A layer's
//! whole time loop is a sequence of calls on buffers that stay on the device;
//! [`Backend::download`] is the only way back to the host.
//!
//! # Buffer layouts (shared by every backend): packed sequences
//! All buffers are flat and row-major. One direction of one layer runs `T` steps over a
//! batch of `B` sentences ordered longest first, so the sentences still running at step
//! `t` are the first `n_t` of the batch (`n_0 ≥ n_1 ≥ … ≥ n_{T-1}`, hidden size `H`,
//! gate order **i, f, g (= ĉ), o**, PyTorch's). Only real tokens have rows: there is no
//! padding and no mask. Step `t` owns rows `[p_t, p_t + n_t)` of the *step buffers*,
//! with `p_t = n_0 + … + n_{t-1}` (so `N = Σ n_t` rows in all, one per token); the
//! *state buffers* hold the initial state (zeros) in rows `[0, B)` and the state after
//! step `t` in rows `[B + p_t, B + p_t + n_t)`. A [`CellStep`] names the three row
//! offsets a step kernel touches.
//!
//! | buffer    | rows           | contents                                                        |
//! |-----------|----------------|-----------------------------------------------------------------|
//! | `gates`   | step, 4H wide  | pre-activations `U x_t + b + W h_{t-1}`; the cell forward overwrites them with the activations `[i, f, g, o]` |
//! | `c`, `h`  | state, H wide  | `c_t`, `h_t` after each step, initial state first                |
//! | `tanh_c`  | step, H wide   | `tanh(c_t)`, saved for the backward and the task gates           |
//! | `d_gates` | step, 4H wide  | gradient w.r.t. the gate pre-activations                        |
//! | `d_h`, `d_c` | state, H wide | gradient w.r.t. the row of the same index in `h` / `c`          |
//! | `o_k`     | step, H wide   | task gate pre-activations `U_k x_t + b_k + W_k q_{t-1}`, overwritten by `σ(·)` |
//! | `q_k`     | state, H wide  | task outputs `q^k_t`, initial state (zeros) first                |
//! | `d_o_k`   | step, H wide   | gradient w.r.t. the task gate pre-activations                   |
//! | `d_q_k`   | state, H wide  | gradient w.r.t. the row of the same index in `q_k`               |
//!
//! The reverse direction runs on per-sentence reversed input, so it has the same `n_t`.
//!
//! # The packed layouts (inference products, [`Packed`])
//! [`Backend::write_packed`] stores a `k × n` weight `M` for [`Backend::gemm_packed`] as
//! rows of 32-bit words along `k`; a buffer of 32-bit elements holds them bit for bit.
//!
//! * **bf16 pairs** ([`Packed::Bf16`]): `⌈k/2⌉ × n` words; word `(p, j)` holds
//!   `M[2p, j]` in its low 16 bits and `M[2p + 1, j]` in its high 16 bits (0 past the
//!   last row), each rounded to bf16 (the upper half of an f32, to nearest, ties to
//!   even): the operand layout of AVX512_BF16's `vdpbf16ps` and of AMX's bf16 tiles.
//! * **int8 quads** ([`Packed::Int8`]): column `j` is quantized symmetrically with the
//!   scale `s_j = max_p |M[p, j]| / 127`: `q = round(M[p, j] · (127 / max_p |M[p, j]|))`
//!   (to nearest, ties to even; 0 for an all-zero column), in `[-127, 127]`. `⌈k/4⌉ × n`
//!   words; word `(p, j)` holds `q[4p + i, j]` in byte `i` (0 past the last row): the
//!   operand layout of `vpdpbusd` (AVX512_VNNI's and AVX-VNNI's; an AVX2 kernel widens
//!   the bytes to 16 bits for `vpmaddwd`). After the words (in strips or not) come the `n` scales `s_j`
//!   (f32 bits), then the `n` column sums `Σ_p q[p, j]` (i32 bits). The product
//!   quantizes each row `r` of `A` the same way on the way in (scale
//!   `t_r = max |A[r, ·]| / 127`; for `vpdpbusd` stored offset by 128 as unsigned bytes)
//!   and gives `(Σ_p (a_rp + 128)·q_pj − 128·Σ_p q_pj) · (t_r · s_j)`, which is
//!   `(Σ_p a_rp·q_pj) · (t_r · s_j)`: the integer sum is exact.
//!   A row of `A` holding a NaN or an infinity gives NaN in its row of the product.
//!
//! # The strip layout (weights a time loop reads again and again)
//! A `k × n` right operand `B` of a product with [`Gemm::b_strips`] is stored in column
//! strips of [`STRIP`] columns: strip `s` (columns `STRIP·s ..`) is a `k × STRIP`
//! row-major block starting at element `STRIP·k·s`, the last strip padded with zeros to
//! [`STRIP`] columns ([`strip_len`] elements in all). A kernel that computes `C` a few
//! columns at a time then streams each strip as one contiguous run instead of reading a
//! short piece of every row of `B` (a page apart for the layers' weights), which matters
//! most for the per-step products, whose few rows reuse each weight only a few times.
//! Only backends that say so ([`Backend::strip_weights`]) take it.

use crate::{BackendErrorKind, NumError, Real};

/// Columns per strip of the strip layout (module docs): 32 f32 values are two AVX-512
/// registers, the width of the CPU's register tiles.
pub const STRIP: usize = 32;

/// Elements of a `k × n` matrix in the strip layout: `k · STRIP · ⌈n / STRIP⌉`.
pub fn strip_len(k: usize, n: usize) -> usize {
    k * STRIP * n.div_ceil(STRIP)
}

/// One matrix product `C[c_off..] (+)= op(A[a_off..]) · op(B[b_off..]) (+ bias)`.
///
/// All operands are dense row-major: `op(A)` is `m × k` (stored `k × m` when
/// `trans_a`), `op(B)` is `k × n` (stored `n × k` when `trans_b`, or in the strip layout
/// when `b_strips`), `C` is `m × n`.
/// With `accumulate` the product is added to `C`, otherwise `C` is overwritten.
/// The optional bias (length `n`) is added to every row of the product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gemm {
    /// Rows of `op(A)` and `C`.
    pub m: usize,
    /// Columns of `op(B)` and `C`.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// `A` is stored transposed (`k × m`).
    pub trans_a: bool,
    /// `B` is stored transposed (`n × k`).
    pub trans_b: bool,
    /// `B` is stored in the strip layout (module docs; never with `trans_b`, and only on
    /// a backend whose [`Backend::strip_weights`] says so).
    pub b_strips: bool,
    /// Element offset of `A` in its buffer.
    pub a_off: usize,
    /// Element offset of `B` in its buffer.
    pub b_off: usize,
    /// Element offset of `C` in its buffer.
    pub c_off: usize,
    /// Add to `C` instead of overwriting it.
    pub accumulate: bool,
}

impl Gemm {
    /// A plain `C = A · B` of the given sizes with every offset 0.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        Gemm {
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            b_strips: false,
            a_off: 0,
            b_off: 0,
            c_off: 0,
            accumulate: false,
        }
    }

    /// Floating-point operations of this product (`2·m·n·k`).
    pub fn flops(&self) -> u64 {
        2 * self.m as u64 * self.n as u64 * self.k as u64
    }

    /// Elements of `B` the product reads from `b_off` on: `k·n`, or [`strip_len`] in the
    /// strip layout.
    pub fn b_len(&self) -> usize {
        if self.b_strips {
            strip_len(self.k, self.n)
        } else {
            self.k * self.n
        }
    }
}

/// Rows moved between an indexed buffer (a *table*, addressed by row ids) and a dense
/// buffer whose row `p` pairs with the `p`-th id, by [`Backend::gather_rows`] and
/// [`Backend::scatter_add_rows`]: an embedding lookup and its gradient, or a row
/// permutation (a layer's per-sentence reversal) and its inverse.
///
/// Element `j < width` of table row `i` is `table[table_off + i·table_stride + j]`; of
/// dense row `p` it is `dense[dense_off + p·dense_stride + j]`. The row count is the
/// length of the id list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowCopy {
    /// Values moved per row.
    pub width: usize,
    /// Rows of the table (ids must be below it).
    pub table_rows: usize,
    /// Distance between table rows, `≥ width`.
    pub table_stride: usize,
    /// Element offset of table row 0.
    pub table_off: usize,
    /// Distance between dense rows, `≥ width`.
    pub dense_stride: usize,
    /// Element offset of dense row 0.
    pub dense_off: usize,
}

impl RowCopy {
    /// Whole rows of a `(table_rows, width)` table to and from a packed `(n, width)` buffer.
    pub fn packed(table_rows: usize, width: usize) -> Self {
        RowCopy {
            width,
            table_rows,
            table_stride: width,
            table_off: 0,
            dense_stride: width,
            dense_off: 0,
        }
    }

    /// Checks the ids against `table_rows` and both buffers against the regions touched;
    /// every backend calls it first, so they fail alike.
    ///
    /// # Errors
    /// [`NumError::IndexOutOfRange`] for an id ≥ `table_rows`;
    /// [`NumError::ShapeMismatch`] for a stride below `width` (rows would overlap);
    /// [`NumError::BufferTooSmall`] for a buffer shorter than its region.
    pub fn check(
        &self,
        op: &'static str,
        ids: &[u32],
        table_len: usize,
        dense_len: usize,
    ) -> Result<(), NumError> {
        if self.width > self.table_stride.min(self.dense_stride) {
            return Err(NumError::ShapeMismatch {
                op,
                lhs: vec![self.width],
                rhs: vec![self.table_stride, self.dense_stride],
            });
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.table_rows) {
            return Err(NumError::IndexOutOfRange {
                op,
                index: bad as usize,
                bound: self.table_rows,
            });
        }
        if ids.is_empty() || self.width == 0 {
            return Ok(());
        }
        let end = |off: usize, rows: usize, stride: usize| off + (rows - 1) * stride + self.width;
        let max_id = ids.iter().copied().max().unwrap_or(0) as usize;
        let table_needed = end(self.table_off, max_id + 1, self.table_stride);
        let dense_needed = end(self.dense_off, ids.len(), self.dense_stride);
        for (len, needed) in [(table_len, table_needed), (dense_len, dense_needed)] {
            if len < needed {
                return Err(NumError::BufferTooSmall { op, len, needed });
            }
        }
        Ok(())
    }
}

/// The rows one step of a layer's time loop works on (packed layout, module docs): a
/// pointwise kernel touches `rows` rows from each of the three offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellStep {
    /// Sentences running at this step (`n_t`).
    pub rows: usize,
    /// Hidden size `H`.
    pub hidden: usize,
    /// First row of the step in the step buffers (`p_t`).
    pub step: usize,
    /// First row of the state before the step in the state buffers (`c_{t-1}`, `h_{t-1}`,
    /// `q_{t-1}` and their gradients).
    pub prev: usize,
    /// First row of the state after the step (`c_t`, `h_t`, `q_t` and their gradients);
    /// at least `prev + rows`, so the two regions never overlap.
    pub next: usize,
}

impl CellStep {
    /// Checks that the state regions do not overlap (`next ≥ prev + rows`); every
    /// backend calls it first, so they fail alike.
    ///
    /// # Errors
    /// [`NumError::ShapeMismatch`] when they overlap.
    pub fn check(&self, op: &'static str) -> Result<(), NumError> {
        if self.next < self.prev + self.rows {
            return Err(NumError::ShapeMismatch {
                op,
                lhs: vec![self.prev, self.rows],
                rhs: vec![self.next],
            });
        }
        Ok(())
    }

    /// Elements a buffer needs to hold this step's rows at `first`, `width` wide.
    pub fn needs(&self, first: usize, width: usize) -> usize {
        (first + self.rows) * width
    }
}

/// The inference products with the right operand packed along `k` in 32-bit words
/// (module docs): weights and layer inputs rounded or quantized, for inference only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Packed {
    /// bf16 pairs: products of bf16 values summed in f32.
    Bf16,
    /// int8 quads: per-column weight scales, per-row input scales, sums in i32.
    Int8,
}

impl Packed {
    /// The name users give it (`--precision bf16|int8`).
    pub fn name(self) -> &'static str {
        match self {
            Packed::Bf16 => "bf16",
            Packed::Int8 => "int8",
        }
    }

    /// Values of `k` per 32-bit word.
    pub fn per_word(self) -> usize {
        match self {
            Packed::Bf16 => 2,
            Packed::Int8 => 4,
        }
    }

    /// Elements the word rows of a packed `k × n` matrix take (in the strip layout with
    /// `strips`).
    pub fn words(self, k: usize, n: usize, strips: bool) -> usize {
        let kp = k.div_ceil(self.per_word());
        if strips { strip_len(kp, n) } else { kp * n }
    }

    /// Elements a packed `k × n` matrix takes: its [`Packed::words`], then, for int8,
    /// the `n` scales and `n` column sums.
    pub fn elems(self, k: usize, n: usize, strips: bool) -> usize {
        let words = self.words(k, n, strips);
        match self {
            Packed::Bf16 => words,
            Packed::Int8 => words + 2 * n,
        }
    }
}

/// The error of a backend without `p` products.
fn no_packed(backend: &str, p: Packed) -> NumError {
    NumError::Backend {
        backend: backend.to_string(),
        kind: BackendErrorKind::Unavailable,
        message: format!("this backend has no {} products; use f32", p.name()),
    }
}

/// The kernels a compute device offers to the layers. See the module docs for layouts.
///
/// Every method checks that its buffers are large enough for the region it touches and
/// returns [`NumError::BufferTooSmall`] otherwise. Backward kernels **accumulate** into
/// gradient buffers unless stated otherwise; callers zero them first.
pub trait Backend: Send + Sync {
    /// Element type of the device buffers.
    type Elem: Real;
    /// A device buffer of `Elem`.
    type Buf: Send + Sync;

    /// Human-readable backend name, e.g. `"cpu (2 threads)"` or the adapter's name.
    fn name(&self) -> String;

    /// Copies host data into a new device buffer.
    fn upload(&self, data: &[Self::Elem]) -> Result<Self::Buf, NumError>;

    /// Overwrites the start of an existing buffer with host data (no allocation).
    fn write(&self, buf: &mut Self::Buf, data: &[Self::Elem]) -> Result<(), NumError>;

    /// Overwrites the first `len` elements of a buffer with what `fill` writes into a
    /// host slice of that length (every element, e.g. a weight transposed on the way
    /// in). The default stages the slice in host memory and [`Backend::write`]s it; a
    /// backend whose buffers are host memory hands `fill` the buffer itself, saving the
    /// copy.
    ///
    /// # Errors
    /// [`NumError::BufferTooSmall`] when the buffer holds fewer than `len` elements, and
    /// the errors of [`Backend::write`].
    fn write_with(
        &self,
        buf: &mut Self::Buf,
        len: usize,
        fill: &mut dyn FnMut(&mut [Self::Elem]),
    ) -> Result<(), NumError> {
        let mut staged = vec![<Self::Elem as num_traits::Zero>::zero(); len];
        fill(&mut staged);
        self.write(buf, &staged)
    }

    /// Copies a whole device buffer back to the host, waiting for pending work.
    fn download(&self, buf: &Self::Buf) -> Result<Vec<Self::Elem>, NumError>;

    /// Copies consecutive parts of a buffer back to the host in one transfer, waiting
    /// for pending work: part `i` has `sizes[i]` elements and starts where part `i - 1`
    /// ended (part 0 at element 0). One round trip where several buffers would need one
    /// each.
    fn download_parts(
        &self,
        buf: &Self::Buf,
        sizes: &[usize],
    ) -> Result<Vec<Vec<Self::Elem>>, NumError>;

    /// Whether buffers are host memory, so that [`Backend::download_owned`] hands one over
    /// without a copy (the CPU backend). The default: no.
    fn host_buffers(&self) -> bool {
        false
    }

    /// The first `len` elements of `buf` as a host vector, consuming the buffer. The
    /// default downloads them ([`Backend::download_parts`]); a [`Backend::host_buffers`]
    /// backend returns the buffer itself.
    ///
    /// # Errors
    /// [`NumError::BufferTooSmall`] when the buffer holds fewer than `len` elements, and
    /// the errors of [`Backend::download_parts`].
    fn download_owned(&self, buf: Self::Buf, len: usize) -> Result<Vec<Self::Elem>, NumError> {
        Ok(self.download_parts(&buf, &[len])?.remove(0))
    }

    /// A new zero-filled buffer of `len` elements.
    fn zeros(&self, len: usize) -> Result<Self::Buf, NumError>;

    /// Fills a whole buffer with zeros (no allocation).
    fn fill_zero(&self, buf: &mut Self::Buf) -> Result<(), NumError>;

    /// `C (+)= op(A)·op(B) (+ bias)`, see [`Gemm`].
    fn gemm(
        &self,
        g: &Gemm,
        a: &Self::Buf,
        b: &Self::Buf,
        bias: Option<&Self::Buf>,
        c: &mut Self::Buf,
    ) -> Result<(), NumError>;

    /// LSTM cell forward at one step (paper Eq. 1). Reads the pre-activations at
    /// `s.step` and `c_{t-1}` at `s.prev`; writes the activations back over the
    /// pre-activations, `c_t = i*g + f*c_{t-1}` and `h_t = o*tanh(c_t)` at `s.next` and
    /// `tanh(c_t)` at `s.step`.
    fn lstm_cell_fwd(
        &self,
        s: CellStep,
        gates: &mut Self::Buf,
        c: &mut Self::Buf,
        h: &mut Self::Buf,
        tanh_c: &mut Self::Buf,
    ) -> Result<(), NumError>;

    /// LSTM cell backward at one step. Reads `d_h` and `d_c` at `s.next` (complete
    /// gradients w.r.t. h_t and every other path into c_t), the saved activations and
    /// `tanh_c` at `s.step`, `c_{t-1}` at `s.prev`; writes `d_gates` at `s.step`
    /// (pre-activation gradients) and adds `f * dc_t` to `d_c` at `s.prev`.
    #[allow(clippy::too_many_arguments)]
    fn lstm_cell_bwd(
        &self,
        s: CellStep,
        gates: &Self::Buf,
        c: &Self::Buf,
        tanh_c: &Self::Buf,
        d_h: &Self::Buf,
        d_c: &mut Self::Buf,
        d_gates: &mut Self::Buf,
    ) -> Result<(), NumError>;

    /// SC-LSTM task gate forward at one step (paper Eq. 2): `o_k = σ(o_k)` in place at
    /// `s.step`, `q_k` at `s.next` = `o_k * tanh_c` (both at `s.step`).
    fn task_gate_fwd(
        &self,
        s: CellStep,
        o_k: &mut Self::Buf,
        q_k: &mut Self::Buf,
        tanh_c: &Self::Buf,
    ) -> Result<(), NumError>;

    /// SC-LSTM task gate backward at one step. Reads `d_q_k` at `s.next`; writes
    /// `d_o_k = d_q · tanh_c · o(1-o)` at `s.step` and adds `d_q · o · (1 - tanh_c²)` to
    /// `d_c` at `s.next`.
    #[allow(clippy::too_many_arguments)]
    fn task_gate_bwd(
        &self,
        s: CellStep,
        o_k: &Self::Buf,
        tanh_c: &Self::Buf,
        d_q_k: &Self::Buf,
        d_o_k: &mut Self::Buf,
        d_c: &mut Self::Buf,
    ) -> Result<(), NumError>;

    /// Embedding lookup / row gather: dense row `p` = table row `ids[p]`, see [`RowCopy`].
    /// Other elements of `dense` are left alone.
    fn gather_rows(
        &self,
        r: &RowCopy,
        ids: &[u32],
        table: &Self::Buf,
        dense: &mut Self::Buf,
    ) -> Result<(), NumError>;

    /// Scatter-add, the gradient of [`Backend::gather_rows`]: table row `ids[p]` += dense
    /// row `p`. Rows sharing an id are added in increasing `p`, starting from the table's
    /// value, so every backend sums in the same order and results are deterministic.
    fn scatter_add_rows(
        &self,
        r: &RowCopy,
        ids: &[u32],
        dense: &Self::Buf,
        table: &mut Self::Buf,
    ) -> Result<(), NumError>;

    /// Whether this backend runs `p` products ([`Backend::write_packed`],
    /// [`Backend::gemm_packed`]); the default refuses.
    ///
    /// # Errors
    /// [`NumError::Backend`] of kind [`BackendErrorKind::Unavailable`] saying why not.
    fn packed_products(&self, p: Packed) -> Result<(), NumError> {
        Err(no_packed(&self.name(), p))
    }

    /// Overwrites the start of `buf` with a `k × n` matrix in `p`'s layout (module docs):
    /// `fill` writes the matrix, row-major in `Elem`, into a host slice of `k·n`, and the
    /// backend packs it into [`Packed::elems`] elements, its words in the strip layout with
    /// `strips` (read with [`Gemm::b_strips`]).
    ///
    /// # Errors
    /// As [`Backend::packed_products`]; [`NumError::BufferTooSmall`] when `buf` holds
    /// fewer elements than that.
    fn write_packed(
        &self,
        p: Packed,
        buf: &mut Self::Buf,
        k: usize,
        n: usize,
        strips: bool,
        fill: &mut dyn FnMut(&mut [Self::Elem]),
    ) -> Result<(), NumError> {
        let _ = (buf, k, n, strips, fill);
        Err(no_packed(&self.name(), p))
    }

    /// `C (+)= A·B (+ bias)` as [`Backend::gemm`], with `B` written by
    /// [`Backend::write_packed`] in `p`'s layout (`g.b_off` counts its elements;
    /// `g.b_strips` when it was written in strips) and `A` rounded (bf16) or quantized
    /// per row (int8) on the way in. Neither operand may be stored transposed. For
    /// inference only: gradients stay f32.
    ///
    /// # Errors
    /// As [`Backend::packed_products`]; [`NumError::ShapeMismatch`] for a transposed
    /// operand; [`NumError::BufferTooSmall`] when an operand does not fit.
    fn gemm_packed(
        &self,
        p: Packed,
        g: &Gemm,
        a: &Self::Buf,
        b: &Self::Buf,
        bias: Option<&Self::Buf>,
        c: &mut Self::Buf,
    ) -> Result<(), NumError> {
        let _ = (g, a, b, bias, c);
        Err(no_packed(&self.name(), p))
    }

    /// Whether the layers should write their f32 weight copies in the strip layout
    /// ([`Gemm::b_strips`]). The default (and any backend without strip-reading kernels):
    /// no.
    fn strip_weights(&self) -> bool {
        false
    }

    /// Waits until all submitted work has finished (a no-op on the CPU).
    fn sync(&self) -> Result<(), NumError>;

    /// Whether [`Backend::join`] runs its two sides at the same time (a backend with
    /// threads for it). Layers run a bidirectional layer's directions through `join`.
    fn concurrent(&self) -> bool {
        false
    }

    /// Runs `a` and `b` to completion: concurrently on a [`Backend::concurrent`] backend,
    /// otherwise `a` then `b`. The layers own no threads; this is how they use the
    /// backend's.
    fn join(&self, a: &mut (dyn FnMut() + Send), b: &mut (dyn FnMut() + Send)) {
        a();
        b();
    }
}
