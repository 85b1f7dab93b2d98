//! What the packed inference products ([`crate::bf16`], [`crate::int8`]) share: the
//! operand checks, the CPU features they need, and the driver of their fast kernels.
//!
//! A product `C (+)= A·B (+ bias)` reads `B` packed along `k` in 32-bit words once (a
//! weight, written when the weights are; `sclstm_core::Packed`) and packs each row of
//! `A` (activations) the same way as the product starts. The fast kernels ([`Kernel`])
//! compute `M × 32` blocks of `C` in registers as the f32 register tiles do (the AVX-512
//! ones at once, the AVX-VNNI and AVX2 ones in passes of up to 6 rows × 16 or 8 columns)
//! and stream `B`'s word rows, summing a whole word's products along `k` into a 32-bit
//! lane. Threads split `C` as for the f32 products ([`crate::gemm`]), so a fixed thread
//! count gives a fixed result.

use rayon::ThreadPool;
use sclstm_core::{BackendErrorKind, Gemm, NumError, Packed, STRIP};

use crate::kernels::Kernels;

/// Index of word `(p, j)` of a `kp × n` word matrix: row-major, or in the strip layout.
pub(crate) fn word_at(kp: usize, n: usize, strips: bool, p: usize, j: usize) -> usize {
    if strips {
        (j / STRIP) * STRIP * kp + p * STRIP + j % STRIP
    } else {
        p * n + j
    }
}

/// Checks a packed product's operands: neither stored transposed, `A`, bias and `C` as
/// for an f32 product, `B` holding [`Packed::elems`] of `k × n` from `b_off`.
///
/// # Errors
/// [`NumError::ShapeMismatch`] for a transposed operand, [`NumError::BufferTooSmall`]
/// naming the first operand that does not fit.
pub fn check_gemm_packed(
    p: Packed,
    g: &Gemm,
    a_len: usize,
    b_len: usize,
    bias_len: Option<usize>,
    c_len: usize,
) -> Result<(), NumError> {
    if g.trans_a || g.trans_b {
        return Err(NumError::ShapeMismatch {
            op: "gemm_packed (operands must be stored plain, not transposed)",
            lhs: vec![usize::from(g.trans_a)],
            rhs: vec![usize::from(g.trans_b)],
        });
    }
    let needed = g.b_off + p.elems(g.k, g.n, g.b_strips);
    if b_len < needed {
        return Err(NumError::BufferTooSmall {
            op: "gemm_packed (b)",
            len: b_len,
            needed,
        });
    }
    crate::gemm::check_gemm(g, a_len, usize::MAX, bias_len, c_len)
}

/// Packs a row-major `k × n` matrix into `p`'s layout ([`crate::bf16::pack_pairs`],
/// [`crate::int8::pack_quads`]).
///
/// # Errors
/// [`NumError::BufferTooSmall`] when `src` holds fewer than `k·n` values or `dst` fewer
/// than [`Packed::elems`].
pub fn pack(
    p: Packed,
    k: usize,
    n: usize,
    strips: bool,
    src: &[f32],
    dst: &mut [u32],
) -> Result<(), NumError> {
    match p {
        Packed::Bf16 => crate::bf16::pack_pairs(k, n, strips, src, dst),
        Packed::Int8 => crate::int8::pack_quads(k, n, strips, src, dst),
    }
}

/// `p`'s reference product (the spec of its fast kernel).
///
/// # Errors
/// As [`check_gemm_packed`].
pub fn gemm_naive(
    p: Packed,
    g: &Gemm,
    a: &[f32],
    b: &[u32],
    bias: Option<&[f32]>,
    c: &mut [f32],
) -> Result<(), NumError> {
    check_gemm_packed(p, g, a.len(), b.len(), bias.map(<[f32]>::len), c.len())?;
    match p {
        Packed::Bf16 => crate::bf16::gemm_bf16_naive(g, a, b, bias, c),
        Packed::Int8 => crate::int8::gemm_int8_naive(g, a, b, bias, c),
    }
    Ok(())
}

/// A fast kernel of the packed products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// bf16 pairs on AVX512_BF16 (`vdpbf16ps`).
    Bf16Avx512,
    /// int8 quads on AVX512_VNNI (`vpdpbusd`).
    Int8Vnni,
    /// int8 quads on AMX tiles (`tdpbusd`) for blocks of at least 16 rows and 64 values
    /// of `k` with `B` in strips, AVX512_VNNI otherwise ([`crate::amx`]; the same integer sums).
    Int8Amx,
    /// int8 quads on AVX-VNNI (`vpdpbusd` on 256-bit vectors; the same integer sums).
    Int8AvxVnni,
    /// int8 quads on AVX2: the bytes widened to 16 bits, pairs summed by `vpmaddwd`
    /// (a quarter of AVX-VNNI's products per instruction; the same integer sums, so the
    /// same results).
    Int8Avx2,
}

impl Kernel {
    /// What the kernel is, for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Kernel::Bf16Avx512 => "AVX512_BF16 register tile (vdpbf16ps), B in bf16 pairs",
            Kernel::Int8Vnni => "AVX512_VNNI register tile (vpdpbusd), B in int8 quads",
            Kernel::Int8Amx => {
                "AMX tiles (tdpbusd) from 16 rows, AVX512_VNNI tile below, B in int8 quads"
            }
            Kernel::Int8AvxVnni => "AVX-VNNI register tile (256-bit vpdpbusd), B in int8 quads",
            Kernel::Int8Avx2 => "AVX2 register tile (vpmaddwd), B in int8 quads",
        }
    }

    /// The kernel that takes the blocks this one leaves (AMX's too-small blocks go to
    /// AVX512_VNNI), which a CPU running this one therefore runs too.
    fn fallback(self) -> Option<Kernel> {
        match self {
            Kernel::Int8Amx => Some(Kernel::Int8Vnni),
            _ => None,
        }
    }
}

/// `p`'s fast kernel with the kernel set `set` on this CPU, if it has one: bf16 needs
/// the avx512 set and AVX512_BF16; int8 runs AMX tiles with the avx512 set where
/// [`crate::amx::usable`], else `vpdpbusd` with the avx512 set on a CPU with
/// AVX512_VNNI, else 256-bit `vpdpbusd` with the avx512 or avxvnni set on a CPU with
/// AVX-VNNI, else `vpmaddwd` with any set but the portable one.
pub fn kernel_for(p: Packed, set: Kernels) -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    {
        let avx512 = set == Kernels::Avx512 && set.runs_here();
        match p {
            Packed::Bf16 if avx512 && std::is_x86_feature_detected!("avx512bf16") => {
                Some(Kernel::Bf16Avx512)
            }
            Packed::Int8 if avx512 && crate::amx::usable() => Some(Kernel::Int8Amx),
            Packed::Int8 if avx512 && std::is_x86_feature_detected!("avx512vnni") => {
                Some(Kernel::Int8Vnni)
            }
            Packed::Int8
                if matches!(set, Kernels::Avx512 | Kernels::AvxVnni)
                    && Kernels::AvxVnni.runs_here() =>
            {
                Some(Kernel::Int8AvxVnni)
            }
            Packed::Int8 if set != Kernels::Portable && Kernels::Avx2.runs_here() => {
                Some(Kernel::Int8Avx2)
            }
            _ => None,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (p, set);
        None
    }
}

/// `p`'s fast kernel with the active kernel set ([`Kernels::active`]: `SCLSTM_KERNELS`
/// may force a smaller one).
pub fn kernel(p: Packed) -> Option<Kernel> {
    kernel_for(p, Kernels::active())
}

/// Whether `p` has a fast kernel here ([`kernel`]).
pub fn available(p: Packed) -> bool {
    kernel(p).is_some()
}

/// Why `p` has no fast kernel here (`None` when it has).
pub fn unavailable_reason(p: Packed) -> Option<String> {
    if available(p) {
        return None;
    }
    let needs = match p {
        Packed::Bf16 => "AVX512_BF16 and the avx512 kernel set",
        Packed::Int8 => {
            "AVX2 and a kernel set other than portable (about 2.5 times as fast with \
             AVX-VNNI or AVX512_VNNI)"
        }
    };
    Some(format!(
        "{} products need {needs}; this CPU ({}) runs the {} set{}",
        p.name(),
        crate::kernels::cpu_model(),
        Kernels::active().name(),
        if p == Packed::Bf16 && kernel_for(p, Kernels::Avx512).is_none() {
            " and has no AVX512_BF16"
        } else {
            ""
        }
    ))
}

/// `p`'s fast product with the active kernel set ([`kernel`]), split across `pool` as the
/// f32 products are (see `gemm::split_output`).
///
/// # Errors
/// As [`check_gemm_packed`]; [`NumError::Backend`] when [`available`] is false.
pub fn gemm_fast(
    p: Packed,
    g: &Gemm,
    a: &[f32],
    b: &[u32],
    bias: Option<&[f32]>,
    c: &mut [f32],
    pool: Option<&ThreadPool>,
) -> Result<(), NumError> {
    match kernel(p) {
        Some(kernel) => gemm_with(kernel, p, g, a, b, bias, c, pool),
        None => Err(unavailable(unavailable_reason(p).unwrap_or_default())),
    }
}

/// Every fast kernel of `p` this CPU runs (one per kernel set that has one, each
/// followed by the kernel that takes the blocks it leaves), best first.
pub fn kernels_here(p: Packed) -> Vec<Kernel> {
    let mut all: Vec<Kernel> = Kernels::available()
        .into_iter()
        .filter_map(|set| kernel_for(p, set))
        .flat_map(|k| std::iter::once(k).chain(k.fallback()))
        .collect();
    all.dedup();
    all
}

/// Whether this CPU runs `kernel` for `p` ([`kernels_here`], without allocating).
fn runs_here(p: Packed, kernel: Kernel) -> bool {
    Kernels::ALL.into_iter().any(|set| {
        kernel_for(p, set).is_some_and(|best| best == kernel || best.fallback() == Some(kernel))
    })
}

/// The error of a packed product refused for `message`.
fn unavailable(message: String) -> NumError {
    NumError::Backend {
        backend: "cpu".into(),
        kind: BackendErrorKind::Unavailable,
        message,
    }
}

/// [`gemm_fast`] with `kernel`, whatever the active kernel set (the tests compare each
/// kernel this CPU runs with the reference).
///
/// # Errors
/// As [`gemm_fast`]; [`NumError::Backend`] when `kernel` is not one of `p`'s
/// [`kernels_here`].
#[allow(clippy::too_many_arguments)]
pub fn gemm_with(
    kernel: Kernel,
    p: Packed,
    g: &Gemm,
    a: &[f32],
    b: &[u32],
    bias: Option<&[f32]>,
    c: &mut [f32],
    pool: Option<&ThreadPool>,
) -> Result<(), NumError> {
    if !runs_here(p, kernel) {
        let message = format!(
            "the {} products have no {kernel:?} kernel on this CPU",
            p.name()
        );
        return Err(unavailable(message));
    }
    check_gemm_packed(p, g, a.len(), b.len(), bias.map(<[f32]>::len), c.len())?;
    if g.m == 0 || g.n == 0 {
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    {
        let words = p.words(g.k, g.n, g.b_strips);
        let view = x86::View {
            k: g.k,
            n: g.n,
            // Offsets as pointer arithmetic: with `k = 0` nothing is read, and an offset
            // past the end is then no error.
            a: a.as_ptr().wrapping_add(g.a_off),
            b: b.as_ptr().wrapping_add(g.b_off),
            strips: g.b_strips,
            cols: b.as_ptr().wrapping_add(g.b_off + words),
            bias: bias.map(<[f32]>::as_ptr),
            c: c.as_mut_ptr().wrapping_add(g.c_off),
            accumulate: g.accumulate,
        };
        // SAFETY: this CPU runs `kernel` (checked above); the operands were
        // checked and the blocks `split_output` hands out are disjoint and inside `m × n`.
        crate::gemm::split_output(g, pool, |r0, r1, c0, c1| unsafe {
            match kernel {
                Kernel::Bf16Avx512 => view.block::<crate::bf16::x86::Pairs>(r0, r1, c0, c1),
                Kernel::Int8Vnni => view.block::<crate::int8::x86::Vnni>(r0, r1, c0, c1),
                Kernel::Int8Amx
                    if view.strips
                        && r1 - r0 >= crate::amx::MIN_ROWS
                        && view.k >= crate::amx::MIN_K =>
                {
                    crate::amx::x86::block(&view, r0, r1, c0, c1)
                }
                Kernel::Int8Amx => view.block::<crate::int8::x86::Vnni>(r0, r1, c0, c1),
                Kernel::Int8AvxVnni => view.block::<crate::int8::x86::AvxVnni>(r0, r1, c0, c1),
                Kernel::Int8Avx2 => view.block::<crate::int8::x86::Avx2>(r0, r1, c0, c1),
            }
        });
        Ok(())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (kernel, pool);
        unreachable!("internal: no packed kernel runs off x86_64")
    }
}

/// The driver of the fast kernels.
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::cell::RefCell;

    use sclstm_core::STRIP;

    use crate::gemm::{TALL_COL_BLOCK, seed_bias};
    use crate::small_m::x86::lanes;

    /// Rows of `C` a register tile holds: `2·12` accumulators, two `B` vectors and the
    /// broadcast in 27 of the 32 registers, as for the f32 tile.
    const ROWS: usize = 12;

    thread_local! {
        /// Each thread's `A` rows packed into words, and their scales, reused across calls.
        static A_ROWS: RefCell<(Vec<u32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    }

    /// A packed layout's kernels.
    pub(crate) trait Words {
        /// Values of `k` per word.
        const PER_WORD: usize;

        /// Words of a packed row of `A` per word of `B` (1 where `A`'s values take as
        /// many bits as `B`'s).
        const A_WORDS: usize = 1;

        /// Rows of `A` one pass over a block of `B`'s columns packs and runs (at most
        /// [`ROWS`]).
        const CHUNK_ROWS: usize = ROWS;

        /// Packs `k` contiguous f32 into `⌈k / PER_WORD⌉ · A_WORDS` words at `dst`,
        /// returning the row's scale (1 where the layout has none).
        ///
        /// # Safety
        /// The layout's CPU features available; `src` valid for `k` reads, `dst` for the
        /// words' writes.
        unsafe fn pack_row(src: *const f32, k: usize, dst: *mut u32) -> f32;

        /// One `M × 32` tile of `p` at column `j0`; `m0` / `m1` mask the columns of the
        /// two halves (masked-out lanes are neither loaded from `B` nor stored to `C`).
        ///
        /// # Safety
        /// As for [`View::block`]; the unmasked columns lie inside the panel.
        unsafe fn tile<const M: usize>(p: &Panel, j0: usize, m0: u16, m1: u16);
    }

    /// The operands of one checked product (pointers at their offsets; `A` and `C`
    /// row-major with `k` and `n` columns, `B` packed with `n` columns, its words in
    /// strips when `strips`, `cols` just past its words).
    pub(crate) struct View {
        pub(crate) k: usize,
        pub(crate) n: usize,
        pub(crate) a: *const f32,
        pub(crate) b: *const u32,
        pub(crate) strips: bool,
        pub(crate) cols: *const u32,
        pub(crate) bias: Option<*const f32>,
        pub(crate) c: *mut f32,
        pub(crate) accumulate: bool,
    }

    // SAFETY: the pointers come from slices borrowed for the whole call of `gemm_fast`;
    // threads only read A, B and bias, and write disjoint blocks of C.
    unsafe impl Sync for View {}

    impl View {
        /// Computes the block `C[r0..r1, c0..c1]` with the kernels of `K`.
        ///
        /// # Safety
        /// `K`'s CPU features available; the block lies inside `m × n` and no other
        /// thread touches it.
        pub(crate) unsafe fn block<K: Words>(&self, r0: usize, r1: usize, c0: usize, c1: usize) {
            let (rows, kp, n) = (r1 - r0, self.k.div_ceil(K::PER_WORD), self.n);
            let rsa = kp * K::A_WORDS;
            A_ROWS.with_borrow_mut(|(words, scales)| {
                // `pack_row` writes every word of the rows, so old contents never show.
                if words.len() < rows * rsa {
                    words.resize(rows * rsa, 0);
                }
                scales.resize(rows, 0.0);
                // SAFETY (whole body): offsets stay inside the checked operands.
                unsafe {
                    for (i, scale) in scales.iter_mut().enumerate() {
                        let row = self.a.add((r0 + i) * self.k);
                        *scale = K::pack_row(row, self.k, words.as_mut_ptr().add(i * rsa));
                    }
                    let c = self.c.add(r0 * n + c0);
                    let mut accumulate = self.accumulate;
                    if let Some(bias) = self.bias {
                        seed_bias(c, n as isize, rows, c1 - c0, bias.add(c0), accumulate);
                        accumulate = true;
                    }
                    // Row chunks of CHUNK_ROWS over one L2-sized block of B's columns
                    // at a time, as for the f32 tall products.
                    let mut j0 = c0;
                    while j0 < c1 {
                        let w = TALL_COL_BLOCK.min(c1 - j0);
                        let mut i0 = 0;
                        while i0 < rows {
                            let h = K::CHUNK_ROWS.min(rows - i0);
                            // Strip-layout blocks start on a strip (split_output
                            // and TALL_COL_BLOCK keep multiples of STRIP).
                            let (b, rsb, strip) = if self.strips {
                                (self.b.add(j0 / STRIP * STRIP * kp), STRIP, STRIP * kp)
                            } else {
                                (self.b.add(j0), n, 0)
                            };
                            let panel = Panel {
                                kp,
                                w,
                                a: words.as_ptr().add(i0 * rsa),
                                rsa,
                                row_scales: scales.as_ptr().add(i0),
                                b,
                                rsb,
                                strip,
                                col_scales: self.cols.add(j0).cast(),
                                col_sums: self.cols.add(n + j0).cast(),
                                c: c.add(i0 * n + (j0 - c0)),
                                rsc: n as isize,
                                accumulate,
                            };
                            panel.run::<K>(h);
                            i0 += h;
                        }
                        j0 += w;
                    }
                }
            });
        }
    }

    /// One register-tile pass: rows of `A` packed (`rsa` words from one row to the next,
    /// their scales at `row_scales`), `w` columns of `B` (`kp` words along `k`, row
    /// stride `rsb` words; `strip` words from one strip to the next in the strip layout,
    /// else 0; for int8 the columns' scales and sums at `col_scales` and `col_sums`,
    /// unread otherwise) and `C` (row stride `rsc`).
    pub(crate) struct Panel {
        pub(crate) kp: usize,
        w: usize,
        pub(crate) a: *const u32,
        pub(crate) rsa: usize,
        pub(crate) row_scales: *const f32,
        b: *const u32,
        rsb: usize,
        strip: usize,
        pub(crate) col_scales: *const f32,
        pub(crate) col_sums: *const i32,
        pub(crate) c: *mut f32,
        pub(crate) rsc: isize,
        pub(crate) accumulate: bool,
    }

    impl Panel {
        /// Computes the panel's `h` rows (`1 ≤ h ≤ ROWS`).
        ///
        /// # Safety
        /// As for [`View::block`]; the panel lies inside the block.
        unsafe fn run<K: Words>(&self, h: usize) {
            // SAFETY: forwarded; `h` selects a tile of exactly that height.
            unsafe {
                match h {
                    1 => self.tiles::<K, 1>(),
                    2 => self.tiles::<K, 2>(),
                    3 => self.tiles::<K, 3>(),
                    4 => self.tiles::<K, 4>(),
                    5 => self.tiles::<K, 5>(),
                    6 => self.tiles::<K, 6>(),
                    7 => self.tiles::<K, 7>(),
                    8 => self.tiles::<K, 8>(),
                    9 => self.tiles::<K, 9>(),
                    10 => self.tiles::<K, 10>(),
                    11 => self.tiles::<K, 11>(),
                    12 => self.tiles::<K, 12>(),
                    _ => unreachable!("internal: row chunks have 1..=ROWS rows"),
                }
            }
        }

        /// All `w` columns in `M × 32` tiles, the last one masked.
        ///
        /// # Safety
        /// As for [`Panel::run`].
        unsafe fn tiles<K: Words, const M: usize>(&self) {
            // SAFETY: the tiles stay inside the panel.
            unsafe {
                for t in 0..self.w / 32 {
                    K::tile::<M>(self, t * 32, u16::MAX, u16::MAX);
                }
                let tail = self.w % 32;
                if tail > 0 {
                    let j0 = self.w - tail;
                    K::tile::<M>(self, j0, lanes(tail), lanes(tail.saturating_sub(16)));
                }
            }
        }

        /// Word `p` of `B`'s 32-column tile at column `j0`, as a pointer to its first
        /// lane. Tiles are 32 = STRIP columns wide, so each starts a strip.
        ///
        /// # Safety
        /// The tile lies inside the panel and `p < kp`.
        #[inline(always)]
        pub(crate) unsafe fn b_row(&self, j0: usize, p: usize) -> *const i32 {
            let col = if self.strip == 0 {
                j0
            } else {
                j0 / STRIP * self.strip
            };
            // SAFETY: the caller's contract.
            unsafe { self.b.add(p * self.rsb + col).cast() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Random values in ±1.
    fn random(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
        (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// Sums of `|A||B|` per output element, the scale of its f32 summation error.
    fn magnitude(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|p| f64::from(a[i * k + p].abs() * b[p * n + j].abs()))
                    .sum();
            }
        }
        out
    }

    /// Whether the fast result `got` may stand for the reference's `want`: bit for bit
    /// for int8 (exact integer sums, the same scaling), within f32 summation error for
    /// bf16 (the reference sums in f64).
    fn agrees(p: Packed, want: f32, got: f32, k: usize, scale: f64) -> bool {
        match p {
            Packed::Int8 => want.to_bits() == got.to_bits(),
            Packed::Bf16 => {
                (f64::from(want) - f64::from(got)).abs() <= 1e-6 + (k as f64) * 6e-8 * scale
            }
        }
    }

    #[test]
    fn the_fast_kernels_agree_with_the_reference_or_are_refused() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        // Tiny-m recurrent shapes, tall projections, odd k (and k of every remainder by
        // 4), ragged column tails, a product large enough to split across threads (by
        // columns and by rows).
        let shapes = [
            (1, 1, 1),
            (10, 1200, 300),
            (7, 33, 5),
            (12, 64, 2),
            (13, 31, 17),
            (5, 47, 18),
            (25, 300, 601),
            (300, 1200, 58),
            (3, 17, 0),
            // AMX: one and two tile rows, a partial second pass, k a whole tile, k below
            // one tile, k with a partial last tile, ragged columns.
            (16, 32, 64),
            (33, 47, 256),
            (48, 96, 17),
            (70, 64, 601),
        ];
        for p in [Packed::Bf16, Packed::Int8] {
            for ((m, n, k), strips) in shapes.into_iter().flat_map(|s| [(s, false), (s, true)]) {
                let (mut a, b) = (random(&mut rng, m * k), random(&mut rng, k * n));
                if m > 3 && k > 0 {
                    // A row of A with a NaN: NaN in its row for int8, as in f32 for bf16.
                    a[2 * k + k / 2] = f32::NAN;
                    // A row of subnormal values, too small for int8's multiplier.
                    a[3 * k..4 * k].iter_mut().for_each(|v| *v *= 1e-38);
                }
                let bias = random(&mut rng, n);
                let mut packed = vec![0u32; p.elems(k, n, strips)];
                pack(p, k, n, strips, &b, &mut packed).unwrap();
                let scale = magnitude(&a, &b, m, n, k);
                for (accumulate, with_bias, threads) in [
                    (false, false, 1),
                    (true, true, 2),
                    (false, true, 2),
                    (true, false, 1),
                ] {
                    let g = Gemm {
                        accumulate,
                        b_strips: strips,
                        ..Gemm::new(m, n, k)
                    };
                    let start = random(&mut rng, m * n);
                    let fill = |c: &mut Vec<f32>| {
                        if accumulate {
                            c.clone_from(&start);
                        } else {
                            c.fill(f32::NAN);
                        }
                    };
                    let (mut want, mut got) = (vec![0.0; m * n], vec![0.0; m * n]);
                    fill(&mut want);
                    fill(&mut got);
                    let bias = with_bias.then_some(&bias[..]);
                    gemm_naive(p, &g, &a, &packed, bias, &mut want).unwrap();
                    let pool = (threads > 1).then_some(&pool);
                    if !available(p) {
                        let err = gemm_fast(p, &g, &a, &packed, bias, &mut got, pool);
                        let err = err.unwrap_err();
                        assert!(err.to_string().contains(p.name()), "{err}");
                    }
                    for kernel in kernels_here(p) {
                        fill(&mut got);
                        gemm_with(kernel, p, &g, &a, &packed, bias, &mut got, pool).unwrap();
                        let cells = want.iter().zip(&got).zip(&scale).enumerate();
                        for (idx, ((&w, &x), &s)) in cells {
                            let both_nan = w.is_nan() && x.is_nan();
                            assert!(
                                both_nan || agrees(p, w, x, k, s),
                                "{kernel:?} {m}×{n}×{k} strips {strips} acc {accumulate} \
                                 bias {with_bias} at {idx}: {w} vs {x}",
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_fast_kernels_touch_only_their_block_and_give_one_result_per_thread_count() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for (p, kernel) in [Packed::Bf16, Packed::Int8]
            .into_iter()
            .flat_map(|p| kernels_here(p).into_iter().map(move |kernel| (p, kernel)))
        {
            let gemm_fast = |g: &Gemm, a: &[f32], b: &[u32], bias, c: &mut [f32], pool| {
                gemm_with(kernel, p, g, a, b, bias, c, pool)
            };
            let mut rng = ChaCha8Rng::seed_from_u64(11);
            let (m, n, k) = (40, 700, 300);
            let (a, b) = (random(&mut rng, m * k), random(&mut rng, k * n));
            let mut packed = vec![0u32; p.elems(k, n, false) + 5];
            pack(p, k, n, false, &b, &mut packed[5..]).unwrap();
            // C at an offset inside a larger buffer: the rest stays as it was.
            let g = Gemm {
                c_off: 3,
                b_off: 5,
                ..Gemm::new(m, n, k)
            };
            let mut one = vec![-7.0f32; m * n + 9];
            gemm_fast(&g, &a, &packed, None, &mut one, None).unwrap();
            let mut again = vec![-7.0f32; m * n + 9];
            gemm_fast(&g, &a, &packed, None, &mut again, None).unwrap();
            assert_eq!(one, again, "deterministic");
            let mut two = vec![-7.0f32; m * n + 9];
            gemm_fast(&g, &a, &packed, None, &mut two, Some(&pool)).unwrap();
            for buf in [&one, &two] {
                assert!(buf[..3].iter().chain(&buf[3 + m * n..]).all(|&x| x == -7.0));
            }
            // Per element, one thread sums in one order: the same result at both counts,
            // and with B's words in strips.
            assert_eq!(one, two);
            let mut strips = vec![0u32; p.elems(k, n, true) + 5];
            pack(p, k, n, true, &b, &mut strips[5..]).unwrap();
            let mut striped = vec![-7.0f32; m * n + 9];
            let gs = Gemm {
                b_strips: true,
                ..g
            };
            gemm_fast(&gs, &a, &strips, None, &mut striped, Some(&pool)).unwrap();
            assert_eq!(one, striped);
            // An empty inner dimension reads nothing but B's column data: C = bias.
            let mut cols = vec![0u32; p.elems(0, 3, false)];
            pack(p, 0, 3, false, &[], &mut cols).unwrap();
            let empty = Gemm {
                a_off: 9,
                ..Gemm::new(2, 3, 0)
            };
            let mut c = vec![f32::NAN; 6];
            gemm_fast(&empty, &[], &cols, Some(&[1.0, 2.0, 3.0]), &mut c, None).unwrap();
            assert_eq!(c, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0], "{}", p.name());
            // A kernel of the other layout is refused.
            let all = [
                Kernel::Bf16Avx512,
                Kernel::Int8Vnni,
                Kernel::Int8Amx,
                Kernel::Int8AvxVnni,
                Kernel::Int8Avx2,
            ];
            let other = all.into_iter().filter(|&x| !kernels_here(p).contains(&x));
            for x in other {
                let err = gemm_with(x, p, &g, &a, &packed, None, &mut one, None).unwrap_err();
                assert!(err.to_string().contains(&format!("{x:?}")), "{err}");
            }
            // A short B is refused, naming it.
            let err = gemm_fast(&g, &a, &packed[..packed.len() - 1], None, &mut one, None);
            assert!(matches!(
                err,
                Err(NumError::BufferTooSmall {
                    op: "gemm_packed (b)",
                    ..
                })
            ));
        }
    }
}
