//! Register-tile gemm kernels for products with few rows (`m ≤ 12`): the per-step
//! recurrent products of a time loop, where `m` is the batch size. The caller also cuts
//! tall products into such row chunks (see `gemm.rs` and [`Isa::tall`]).
//!
//! matrixmultiply's AVX-512 kernel computes 16-row tiles, so at `m = 10` almost 40% of
//! its work is padding, and it repacks `B` on every call. Unpacked kernels replace it:
//!
//! - [`gemm`] (`B` stored `k × n`, e.g. `h_{t-1} · W`): keeps an `m × NT` block of `C`
//!   in registers (`NT` columns) and streams the rows of `B` from memory:
//!   `for p in 0..k: acc[i][..] += A[i, p] · B[p, j0 .. j0 + NT]`. Each element of `C` is
//!   summed over `p` in order with fused multiply-adds. The last partial column tile
//!   uses masked loads and stores. Two instruction sets ([`Isa`]): AVX-512F (up to 12
//!   rows, `NT` = 32 f32 / 16 f64; 64 f32 for up to six rows) and AVX2 + FMA (up to 6 rows, `NT` = 16 f32 / 8 f64;
//!   32 f32 for one or two rows).
//! - [`gemm_t`] (`B` stored `n × k`, e.g. `dG · Wᵀ`; AVX-512F only): every `C[i, j]` is
//!   a dot product of two contiguous rows, summed 16 (8) lanes at a time over blocks of
//!   `k`, then across lanes. About half the speed of [`gemm`], so the layers keep `Wᵀ`
//!   as a plain matrix instead.
//!
//! The caller picks the kernel with [`Isa::detect`] (the active [`Kernels`] set) and
//! [`usable_t`], and falls back to matrixmultiply where neither applies.

use sclstm_core::Real;

use crate::kernels::Kernels;

/// Largest `m` of a "tiny-m" product (a per-step product at batch size): the most rows
/// the transposed-`B` kernel ([`gemm_t`]) and the AVX2 tile kernel serve.
pub(crate) const MAX_M: usize = 12;

/// The instruction set of the plain-`B` register-tile kernel ([`gemm`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// AVX-512F: tiles of up to 12 rows × two 512-bit registers (four for up to 6 rows).
    Avx512,
    /// AVX2 + FMA: tiles of up to 6 rows × two 256-bit registers.
    Avx2,
}

impl Isa {
    /// The kernel of the active set ([`Kernels::active`]: the best this CPU runs, or the
    /// one `SCLSTM_KERNELS` forces); `None` for the portable set.
    pub(crate) fn detect() -> Option<Isa> {
        Isa::of(Kernels::active())
    }

    /// Every kernel this CPU runs, best first (the tests check each one).
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Isa> {
        let mut isas: Vec<Isa> = Kernels::available()
            .into_iter()
            .filter_map(Isa::of)
            .collect();
        // The avxvnni and avx2 sets share the AVX2 tiles.
        isas.dedup();
        isas
    }

    fn of(k: Kernels) -> Option<Isa> {
        match k {
            Kernels::Avx512 => Some(Isa::Avx512),
            Kernels::AvxVnni | Kernels::Avx2 => Some(Isa::Avx2),
            Kernels::Portable => None,
        }
    }

    /// Most rows of `A` one call of [`gemm`] takes (its register tile's height).
    pub(crate) fn rows(self) -> usize {
        match self {
            Isa::Avx512 => 12,
            Isa::Avx2 => 6,
        }
    }

    /// Whether the kernel also serves tall products (row chunks over any `m`), or only
    /// products of at most [`MAX_M`] rows, for a `B` in the strip layout (`strips`) or
    /// row-major. In strips every tile streams one contiguous run of `B` and both
    /// kernels beat matrixmultiply at the layers' shapes (AVX2 on Zen 4, `gemm_gflops`
    /// m×n×k: 300×1200×408 112–115 GFLOP/s against 102–104 on a plain `B`,
    /// 300×408×1200 102–104 against 96–101). A row-major `B` is read a row apart per
    /// step of `k`: the 12-row AVX-512 tile still wins at the layers' shapes, the 6-row
    /// AVX2 tile, with half the reuse of each `B` load, does not (300×408×1200 61–86
    /// against 85–101).
    pub(crate) fn tall(self, strips: bool) -> bool {
        self == Isa::Avx512 || strips
    }
}

/// Whether the transposed-`B` kernel ([`gemm_t`]) can run: rows of `A` and of the
/// stored `B` (`n × k`) both contiguous along `k`.
pub(crate) fn usable_t(m: usize, csa: isize, rsb: isize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        (1..=MAX_M).contains(&m) && csa == 1 && rsb == 1 && Kernels::active() == Kernels::Avx512
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, csa, rsb);
        false
    }
}

/// `C = A·Bᵀ + beta·C` for a stored `B` of `n × k` (the per-step `dH = dG · Wᵀ`): every
/// `C[i, j]` is a dot product of two contiguous rows, accumulated 16 (f32) or 8 (f64)
/// lanes at a time over `k` for two columns at once, then reduced across lanes.
/// Computes all `n` columns; `beta` is 0 (C not read) or 1.
///
/// # Safety
/// `R` must be f32 or f64, [`usable_t`] must have returned true for `m`, `A`'s column
/// stride and `B`'s row stride, `csb` is the stored row length of `B`, and the
/// pointers must be valid for the strided regions.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_t<R: Real>(
    m: usize,
    k: usize,
    n: usize,
    a: *const R,
    rsa: isize,
    b: *const R,
    csb: isize,
    beta: R,
    c: *mut R,
    rsc: isize,
) {
    let is_f32 = R::f32_ptr(a).is_some();
    let args = PanelT {
        k,
        n,
        a: a.cast::<u8>(),
        rsa,
        b: b.cast::<u8>(),
        csb,
        accumulate: beta != R::zero(),
        c: c.cast::<u8>(),
        rsc,
    };
    #[cfg(target_arch = "x86_64")]
    // SAFETY: forwarded from the caller; `m` selects a panel of exactly that height and
    // the element type is the one `Real::f32_ptr` reports.
    unsafe {
        if is_f32 {
            match m {
                1 => x86::panel_t_f32::<1>(&args),
                2 => x86::panel_t_f32::<2>(&args),
                3 => x86::panel_t_f32::<3>(&args),
                4 => x86::panel_t_f32::<4>(&args),
                5 => x86::panel_t_f32::<5>(&args),
                6 => x86::panel_t_f32::<6>(&args),
                7 => x86::panel_t_f32::<7>(&args),
                8 => x86::panel_t_f32::<8>(&args),
                9 => x86::panel_t_f32::<9>(&args),
                10 => x86::panel_t_f32::<10>(&args),
                11 => x86::panel_t_f32::<11>(&args),
                12 => x86::panel_t_f32::<12>(&args),
                _ => unreachable!("internal: usable_t() limits m to 1..=MAX_M"),
            }
        } else {
            match m {
                1 => x86::panel_t_f64::<1>(&args),
                2 => x86::panel_t_f64::<2>(&args),
                3 => x86::panel_t_f64::<3>(&args),
                4 => x86::panel_t_f64::<4>(&args),
                5 => x86::panel_t_f64::<5>(&args),
                6 => x86::panel_t_f64::<6>(&args),
                7 => x86::panel_t_f64::<7>(&args),
                8 => x86::panel_t_f64::<8>(&args),
                9 => x86::panel_t_f64::<9>(&args),
                10 => x86::panel_t_f64::<10>(&args),
                11 => x86::panel_t_f64::<11>(&args),
                12 => x86::panel_t_f64::<12>(&args),
                _ => unreachable!("internal: usable_t() limits m to 1..=MAX_M"),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, is_f32, args);
        unreachable!("internal: usable_t() is false off x86_64")
    }
}

/// Operands of one transposed-`B` call (pointers type-erased; strides in elements).
struct PanelT {
    k: usize,
    n: usize,
    a: *const u8,
    rsa: isize,
    b: *const u8,
    csb: isize,
    accumulate: bool,
    c: *mut u8,
    rsc: isize,
}

/// Computes all `n` columns of `C = A·B + beta·C` for `B` with column stride 1;
/// `beta` is 0 (C not read) or 1. Columns go in tiles of two vector registers (AVX-512:
/// 32 f32 or 16 f64; AVX2: 16 f32 or 8 f64); a last partial tile uses masked loads and
/// stores, so nothing outside `C`'s `m × n` block (or `B`'s `k × n`) is touched. With
/// `strip_k > 0`, `B` is in the strip layout (`sclstm_core::STRIP` columns per strip,
/// `strip_k` elements from one strip to the next, row stride `rsb` inside a strip) and
/// starts at a strip boundary; each tile lies inside one strip.
///
/// # Safety
/// `R` must be f32 or f64, `isa` must come from [`Isa::detect`] / [`Isa::available`],
/// `1 ≤ m ≤ isa.rows()`, and the pointers must be valid for the strided `m × k`,
/// `k × n`, `m × n` regions.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm<R: Real>(
    isa: Isa,
    m: usize,
    k: usize,
    n: usize,
    a: *const R,
    rsa: isize,
    csa: isize,
    b: *const R,
    rsb: isize,
    strip_k: usize,
    beta: R,
    c: *mut R,
    rsc: isize,
) {
    let is_f32 = R::f32_ptr(a).is_some();
    let nt = match (isa, is_f32) {
        (Isa::Avx512, true) => 32,
        (Isa::Avx512, false) | (Isa::Avx2, true) => 16,
        (Isa::Avx2, false) => 8,
    };
    let args = Panel {
        k,
        tiles: n / nt,
        tail: n % nt,
        a: a.cast::<u8>(),
        rsa,
        csa,
        b: b.cast::<u8>(),
        rsb,
        strip_k: strip_k as isize,
        accumulate: beta != R::zero(),
        c: c.cast::<u8>(),
        rsc,
    };
    #[cfg(target_arch = "x86_64")]
    // SAFETY: forwarded from the caller; `m` selects a panel of exactly that height and
    // the element type is the one `Real::f32_ptr` reports.
    unsafe {
        if isa == Isa::Avx2 {
            return match (is_f32, m) {
                (true, 1) => avx2::panel_f32::<1>(&args),
                (true, 2) => avx2::panel_f32::<2>(&args),
                (true, 3) => avx2::panel_f32::<3>(&args),
                (true, 4) => avx2::panel_f32::<4>(&args),
                (true, 5) => avx2::panel_f32::<5>(&args),
                (true, 6) => avx2::panel_f32::<6>(&args),
                (false, 1) => avx2::panel_f64::<1>(&args),
                (false, 2) => avx2::panel_f64::<2>(&args),
                (false, 3) => avx2::panel_f64::<3>(&args),
                (false, 4) => avx2::panel_f64::<4>(&args),
                (false, 5) => avx2::panel_f64::<5>(&args),
                (false, 6) => avx2::panel_f64::<6>(&args),
                _ => unreachable!("internal: the caller limits m to 1..=Isa::Avx2.rows()"),
            };
        }
        if is_f32 {
            match m {
                1 => x86::panel_f32::<1>(&args),
                2 => x86::panel_f32::<2>(&args),
                3 => x86::panel_f32::<3>(&args),
                4 => x86::panel_f32::<4>(&args),
                5 => x86::panel_f32::<5>(&args),
                6 => x86::panel_f32::<6>(&args),
                7 => x86::panel_f32::<7>(&args),
                8 => x86::panel_f32::<8>(&args),
                9 => x86::panel_f32::<9>(&args),
                10 => x86::panel_f32::<10>(&args),
                11 => x86::panel_f32::<11>(&args),
                12 => x86::panel_f32::<12>(&args),
                _ => unreachable!("internal: the caller limits m to 1..=Isa::Avx512.rows()"),
            }
        } else {
            match m {
                1 => x86::panel_f64::<1>(&args),
                2 => x86::panel_f64::<2>(&args),
                3 => x86::panel_f64::<3>(&args),
                4 => x86::panel_f64::<4>(&args),
                5 => x86::panel_f64::<5>(&args),
                6 => x86::panel_f64::<6>(&args),
                7 => x86::panel_f64::<7>(&args),
                8 => x86::panel_f64::<8>(&args),
                9 => x86::panel_f64::<9>(&args),
                10 => x86::panel_f64::<10>(&args),
                11 => x86::panel_f64::<11>(&args),
                12 => x86::panel_f64::<12>(&args),
                _ => unreachable!("internal: the caller limits m to 1..=Isa::Avx512.rows()"),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, args);
        unreachable!("internal: Isa::detect() is None off x86_64")
    }
}

/// Operands of one call (element pointers type-erased; strides in elements).
struct Panel {
    k: usize,
    tiles: usize,
    /// Columns of the last, partial tile (0 when `n` is a multiple of the tile width).
    tail: usize,
    a: *const u8,
    rsa: isize,
    csa: isize,
    b: *const u8,
    rsb: isize,
    /// Elements from one strip of `B` to the next in the strip layout; 0 for a plain `B`.
    strip_k: isize,
    accumulate: bool,
    c: *mut u8,
    rsc: isize,
}

impl Panel {
    /// Element offset in `B` of row 0 of column `j` (the first column of a tile).
    fn b_col(&self, j: isize) -> isize {
        const STRIP: isize = sclstm_core::STRIP as isize;
        if self.strip_k == 0 {
            j
        } else {
            j / STRIP * self.strip_k + j % STRIP
        }
    }
}

/// The AVX-512 panels. `M` is a constant so that the row loop unrolls and the
/// `2·M` accumulators stay in registers (`M ≤ 12` uses at most 24 of the 32).
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::{
        __m512, __m512d, _mm512_add_pd, _mm512_add_ps, _mm512_fmadd_pd, _mm512_fmadd_ps,
        _mm512_loadu_pd, _mm512_loadu_ps, _mm512_mask_storeu_pd, _mm512_mask_storeu_ps,
        _mm512_maskz_loadu_pd, _mm512_maskz_loadu_ps, _mm512_permute_ps, _mm512_reduce_add_pd,
        _mm512_reduce_add_ps, _mm512_set1_pd, _mm512_set1_ps, _mm512_setzero_pd, _mm512_setzero_ps,
        _mm512_shuffle_f32x4, _mm512_storeu_ps,
    };

    use super::{Panel, PanelT};

    /// Length of a k-block of the transposed kernel: 512 elements of each of up to 12
    /// rows of A (24 KiB in f32) stay in L1 while the column pairs stream past; longer
    /// blocks spill A to L2, shorter ones pay more lane reductions per FMA.
    const K_BLOCK: usize = 512;

    /// The lane sums of four vectors: `[Σa, Σb, Σc, Σd]`. Adds the 128-bit blocks of
    /// pairs of vectors first (`[a0+a2, a1+a3, b0+b2, b1+b3]`), then of the two pairs
    /// (`[Σ blocks of a, … of b, … of c, … of d]`), then the four lanes in each block.
    ///
    /// # Safety
    /// AVX-512F available.
    #[target_feature(enable = "avx512f")]
    unsafe fn reduce4_f32(a: __m512, b: __m512, c: __m512, d: __m512) -> [f32; 4] {
        let ab = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x44>(a, b),
            _mm512_shuffle_f32x4::<0xEE>(a, b),
        );
        let cd = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x44>(c, d),
            _mm512_shuffle_f32x4::<0xEE>(c, d),
        );
        let x = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(ab, cd),
            _mm512_shuffle_f32x4::<0xDD>(ab, cd),
        );
        let t = _mm512_add_ps(x, _mm512_permute_ps::<0xB1>(x));
        let t = _mm512_add_ps(t, _mm512_permute_ps::<0x4E>(t));
        let mut lanes = [0.0f32; 16];
        // SAFETY: `lanes` holds 16 f32.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), t) };
        [lanes[0], lanes[4], lanes[8], lanes[12]]
    }

    /// All columns of `C = A·Bᵀ` (f32), two at a time, then a last odd one.
    ///
    /// # Safety
    /// AVX-512F available; the panel's pointers are f32 and valid as for `gemm_t`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn panel_t_f32<const M: usize>(x: &PanelT) {
        // Blocks of K_BLOCK along k keep the rows of A in L1 while every column
        // pair streams past them; the partial sums of later blocks are added to C.
        let mut p0 = 0;
        while p0 < x.k || p0 == 0 {
            let p1 = (p0 + K_BLOCK).min(x.k);
            let add = x.accumulate || p0 > 0;
            let mut j = 0;
            // SAFETY: columns j, j + 1 < n and p0 ≤ p1 ≤ k.
            unsafe {
                while j + 2 <= x.n {
                    cols_t_f32::<M, 2>(x, j, p0, p1, add);
                    j += 2;
                }
                if j < x.n {
                    cols_t_f32::<M, 1>(x, j, p0, p1, add);
                }
            }
            if p1 == x.k {
                break;
            }
            p0 = p1;
        }
    }

    /// Columns `j0 .. j0 + NJ` of `C = A·Bᵀ` (f32) over `k` in `p0 .. p1`, written to C
    /// (or added to it when `add`).
    ///
    /// # Safety
    /// As for [`panel_t_f32`], with `j0 + NJ ≤ n`.
    #[target_feature(enable = "avx512f")]
    unsafe fn cols_t_f32<const M: usize, const NJ: usize>(
        x: &PanelT,
        j0: usize,
        p0: usize,
        p1: usize,
        add: bool,
    ) {
        let (a, b, c) = (x.a.cast::<f32>(), x.b.cast::<f32>(), x.c.cast::<f32>());
        // SAFETY (whole body): offsets stay inside the regions the caller vouched for;
        // the masked loads read only the `rest` valid elements of the last chunk.
        unsafe {
            let mut acc: [[__m512; NJ]; M] = [[_mm512_setzero_ps(); NJ]; M];
            let full = p0 + (p1 - p0) / 16 * 16;
            let mut p = p0;
            while p < full {
                let mut bv = [_mm512_setzero_ps(); NJ];
                for (jj, v) in bv.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(b.offset((j0 + jj) as isize * x.csb + p as isize));
                }
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let av = _mm512_loadu_ps(a.offset(i as isize * x.rsa + p as isize));
                    for (acc_ij, &bj) in acc_i.iter_mut().zip(&bv) {
                        *acc_ij = _mm512_fmadd_ps(av, bj, *acc_ij);
                    }
                }
                p += 16;
            }
            let rest = p1 - full;
            if rest > 0 {
                let mask = ((1u32 << rest) - 1) as u16;
                let mut bv = [_mm512_setzero_ps(); NJ];
                for (jj, v) in bv.iter_mut().enumerate() {
                    let ptr = b.offset((j0 + jj) as isize * x.csb + p as isize);
                    *v = _mm512_maskz_loadu_ps(mask, ptr);
                }
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let ptr = a.offset(i as isize * x.rsa + p as isize);
                    let av = _mm512_maskz_loadu_ps(mask, ptr);
                    for (acc_ij, &bj) in acc_i.iter_mut().zip(&bv) {
                        *acc_ij = _mm512_fmadd_ps(av, bj, *acc_ij);
                    }
                }
            }
            // Reduce the accumulators four at a time (about half the shuffles of four
            // separate reductions), the rest one by one.
            let mut sums = [[0.0f32; NJ]; M];
            let flat: &[__m512] = acc.as_flattened();
            let out: &mut [f32] = sums.as_flattened_mut();
            let mut q = 0;
            while q + 4 <= flat.len() {
                let r = reduce4_f32(flat[q], flat[q + 1], flat[q + 2], flat[q + 3]);
                out[q..q + 4].copy_from_slice(&r);
                q += 4;
            }
            while q < flat.len() {
                out[q] = _mm512_reduce_add_ps(flat[q]);
                q += 1;
            }
            for (i, sums_i) in sums.iter().enumerate() {
                for (jj, &s) in sums_i.iter().enumerate() {
                    let dst = c.offset(i as isize * x.rsc + (j0 + jj) as isize);
                    *dst = if add { *dst + s } else { s };
                }
            }
        }
    }

    /// All columns of `C = A·Bᵀ` (f64), two at a time, then a last odd one.
    ///
    /// # Safety
    /// AVX-512F available; the panel's pointers are f64 and valid as for `gemm_t`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn panel_t_f64<const M: usize>(x: &PanelT) {
        // Blocks of K_BLOCK along k keep the rows of A in L1 while every column
        // pair streams past them; the partial sums of later blocks are added to C.
        let mut p0 = 0;
        while p0 < x.k || p0 == 0 {
            let p1 = (p0 + K_BLOCK).min(x.k);
            let add = x.accumulate || p0 > 0;
            let mut j = 0;
            // SAFETY: columns j, j + 1 < n and p0 ≤ p1 ≤ k.
            unsafe {
                while j + 2 <= x.n {
                    cols_t_f64::<M, 2>(x, j, p0, p1, add);
                    j += 2;
                }
                if j < x.n {
                    cols_t_f64::<M, 1>(x, j, p0, p1, add);
                }
            }
            if p1 == x.k {
                break;
            }
            p0 = p1;
        }
    }

    /// Columns `j0 .. j0 + NJ` of `C = A·Bᵀ` (f64) over `k` in `p0 .. p1`, written to C
    /// (or added to it when `add`).
    ///
    /// # Safety
    /// As for [`panel_t_f64`], with `j0 + NJ ≤ n`.
    #[target_feature(enable = "avx512f")]
    unsafe fn cols_t_f64<const M: usize, const NJ: usize>(
        x: &PanelT,
        j0: usize,
        p0: usize,
        p1: usize,
        add: bool,
    ) {
        let (a, b, c) = (x.a.cast::<f64>(), x.b.cast::<f64>(), x.c.cast::<f64>());
        // SAFETY (whole body): as in `cols_t_f32`.
        unsafe {
            let mut acc: [[__m512d; NJ]; M] = [[_mm512_setzero_pd(); NJ]; M];
            let full = p0 + (p1 - p0) / 8 * 8;
            let mut p = p0;
            while p < full {
                let mut bv = [_mm512_setzero_pd(); NJ];
                for (jj, v) in bv.iter_mut().enumerate() {
                    *v = _mm512_loadu_pd(b.offset((j0 + jj) as isize * x.csb + p as isize));
                }
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let av = _mm512_loadu_pd(a.offset(i as isize * x.rsa + p as isize));
                    for (acc_ij, &bj) in acc_i.iter_mut().zip(&bv) {
                        *acc_ij = _mm512_fmadd_pd(av, bj, *acc_ij);
                    }
                }
                p += 8;
            }
            let rest = p1 - full;
            if rest > 0 {
                let mask = ((1u32 << rest) - 1) as u8;
                let mut bv = [_mm512_setzero_pd(); NJ];
                for (jj, v) in bv.iter_mut().enumerate() {
                    let ptr = b.offset((j0 + jj) as isize * x.csb + p as isize);
                    *v = _mm512_maskz_loadu_pd(mask, ptr);
                }
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let ptr = a.offset(i as isize * x.rsa + p as isize);
                    let av = _mm512_maskz_loadu_pd(mask, ptr);
                    for (acc_ij, &bj) in acc_i.iter_mut().zip(&bv) {
                        *acc_ij = _mm512_fmadd_pd(av, bj, *acc_ij);
                    }
                }
            }
            for (i, acc_i) in acc.iter().enumerate() {
                for (jj, &v) in acc_i.iter().enumerate() {
                    let dst = c.offset(i as isize * x.rsc + (j0 + jj) as isize);
                    let s = _mm512_reduce_add_pd(v);
                    *dst = if add { *dst + s } else { s };
                }
            }
        }
    }

    /// Rows up to which [`panel_f32`] runs `M × 64` tiles (four vectors per row) before
    /// the `M × 32` ones. A core with two 512-bit multiply-add units keeps eight in
    /// flight, which `M × 32` tiles give only from four rows. Zen 4 (one per cycle)
    /// gains 2–6% at 2, 3 and 6 rows alone (`gemm_gflops --rows`: 2 rows 77 → 82 GFLOP/s)
    /// and nothing measurable inside a training step, whose per-step weights stream from
    /// L3 there.
    const WIDE_ROWS: usize = 6;

    /// All columns of `C` (f32) in `M × 32` tiles, the last one masked; with at most
    /// [`WIDE_ROWS`] rows, `M × 64` tiles first, so that `4·M` accumulators (not `2·M`)
    /// hide the latency of the multiply-adds and each broadcast of `A` feeds four.
    ///
    /// # Safety
    /// AVX-512F available; the panel's pointers are f32 and valid as for `gemm`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn panel_f32<const M: usize>(x: &Panel) {
        // SAFETY (whole body): the tiles stay inside the regions the caller vouched for.
        unsafe {
            let wide = if M <= WIDE_ROWS { x.tiles / 2 } else { 0 };
            for t in 0..wide {
                tile_f32::<M, 4>(x, (t * 64) as isize, [u16::MAX; 4]);
            }
            for t in 2 * wide..x.tiles {
                tile_f32::<M, 2>(x, (t * 32) as isize, [u16::MAX; 2]);
            }
            // A tail of at most 16 columns in one vector per row: a second, fully masked
            // vector would still cost its loads and multiply-adds.
            let j0 = (x.tiles * 32) as isize;
            match x.tail {
                0 => {}
                1..=16 => tile_f32::<M, 1>(x, j0, [lanes(x.tail)]),
                _ => tile_f32::<M, 2>(x, j0, [lanes(x.tail), lanes(x.tail - 16)]),
            }
        }
    }

    /// One `M × 16V` f32 tile of `C` at column `j0` (`V` vectors per row, `V·M + V + 1`
    /// of the 32 registers); `masks[h]` masks the columns of vector `h` (masked-out lanes
    /// are neither loaded from `B` nor stored to `C`).
    ///
    /// # Safety
    /// As for [`panel_f32`]; the unmasked columns lie inside `B` and `C`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile_f32<const M: usize, const V: usize>(x: &Panel, j0: isize, masks: [u16; V]) {
        let (a, b, c) = (x.a.cast::<f32>(), x.b.cast::<f32>(), x.c.cast::<f32>());
        // SAFETY (whole body): masked lanes are not accessed; the rest is in bounds.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); V]; M];
            // Each vector's first column of B, found once (a 64-column tile spans two
            // strips).
            let bj: [*const f32; V] =
                std::array::from_fn(|h| b.offset(x.b_col(j0 + 16 * h as isize)));
            for p in 0..x.k as isize {
                let off = p * x.rsb;
                let bv: [__m512; V] =
                    std::array::from_fn(|h| _mm512_maskz_loadu_ps(masks[h], bj[h].offset(off)));
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*a.offset(i as isize * x.rsa + p * x.csa));
                    for (acc_iv, &bv) in acc_i.iter_mut().zip(&bv) {
                        *acc_iv = _mm512_fmadd_ps(av, bv, *acc_iv);
                    }
                }
            }
            store_tile_f32(acc, c.offset(j0), x.rsc, masks, x.accumulate);
        }
    }

    /// The mask of the first `n` lanes (at most 16) of a 16-lane vector.
    pub(crate) fn lanes(n: usize) -> u16 {
        ((1u32 << n.min(16)) - 1) as u16
    }

    /// Stores an `M × 16V` f32 tile held in registers (`acc[i]`: row `i`, `V` vectors)
    /// at `c` (row stride `rsc`), added to what is there when `accumulate`; `masks[h]`
    /// masks the columns of vector `h`.
    ///
    /// # Safety
    /// AVX-512F available; the unmasked columns of the `M` rows lie inside `C`, and no
    /// other thread touches them.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn store_tile_f32<const M: usize, const V: usize>(
        acc: [[__m512; V]; M],
        c: *mut f32,
        rsc: isize,
        masks: [u16; V],
        accumulate: bool,
    ) {
        // SAFETY (whole body): masked lanes are not accessed; the rest is in bounds.
        unsafe {
            for (i, acc_i) in acc.iter().enumerate() {
                let cp = c.offset(i as isize * rsc);
                for (h, (&v, &mask)) in acc_i.iter().zip(&masks).enumerate() {
                    let dst = cp.add(16 * h);
                    let v = if accumulate {
                        _mm512_add_ps(_mm512_maskz_loadu_ps(mask, dst), v)
                    } else {
                        v
                    };
                    _mm512_mask_storeu_ps(dst, mask, v);
                }
            }
        }
    }

    /// All columns of `C` (f64) in `M × 16` tiles, the last one masked.
    ///
    /// # Safety
    /// AVX-512F available; the panel's pointers are f64 and valid as for `gemm`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn panel_f64<const M: usize>(x: &Panel) {
        // SAFETY (whole body): the tiles stay inside the regions the caller vouched for.
        unsafe {
            for t in 0..x.tiles {
                tile_f64::<M>(x, (t * 16) as isize, u8::MAX, u8::MAX);
            }
            if x.tail > 0 {
                let lanes = |n: usize| ((1u32 << n.min(8)) - 1) as u8;
                let j0 = (x.tiles * 16) as isize;
                tile_f64::<M>(x, j0, lanes(x.tail), lanes(x.tail.saturating_sub(8)));
            }
        }
    }

    /// One `M × 16` f64 tile of `C` at column `j0`, masked as in [`tile_f32`].
    ///
    /// # Safety
    /// As for [`panel_f64`]; the unmasked columns lie inside `B` and `C`.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile_f64<const M: usize>(x: &Panel, j0: isize, m0: u8, m1: u8) {
        let (a, b, c) = (x.a.cast::<f64>(), x.b.cast::<f64>(), x.c.cast::<f64>());
        // SAFETY (whole body): masked lanes are not accessed; the rest is in bounds.
        unsafe {
            let mut acc = [[_mm512_setzero_pd(); 2]; M];
            // The tile's first column of B, found once (it lies inside one strip).
            let bj = b.offset(x.b_col(j0));
            for p in 0..x.k as isize {
                let bp = bj.offset(p * x.rsb);
                let b0 = _mm512_maskz_loadu_pd(m0, bp);
                let b1 = _mm512_maskz_loadu_pd(m1, bp.add(8));
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_pd(*a.offset(i as isize * x.rsa + p * x.csa));
                    acc_i[0] = _mm512_fmadd_pd(av, b0, acc_i[0]);
                    acc_i[1] = _mm512_fmadd_pd(av, b1, acc_i[1]);
                }
            }
            for (i, acc_i) in acc.iter().enumerate() {
                let cp = c.offset(i as isize * x.rsc + j0);
                for (h, (&v, mask)) in acc_i.iter().zip([m0, m1]).enumerate() {
                    let dst = cp.add(8 * h);
                    let v = if x.accumulate {
                        _mm512_add_pd(_mm512_maskz_loadu_pd(mask, dst), v)
                    } else {
                        v
                    };
                    _mm512_mask_storeu_pd(dst, mask, v);
                }
            }
        }
    }
}

/// The AVX2 + FMA panels: the same register tiles as the AVX-512 ones at half the
/// width, `M ≤ 6` rows so that the `2·M` accumulators, two `B` vectors and the
/// broadcast fit the 16 vector registers. AVX2 masks live in vector registers, so only
/// the last, partial tile of a panel is masked (`MASKED`): with the masks in the loop
/// of a 6-row tile the compiler spilled an accumulator to the stack, halving its speed.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::{
        __m256, __m256i, _mm256_add_pd, _mm256_add_ps, _mm256_cmpgt_epi32, _mm256_cmpgt_epi64,
        _mm256_fmadd_pd, _mm256_fmadd_ps, _mm256_loadu_pd, _mm256_loadu_ps, _mm256_maskload_pd,
        _mm256_maskload_ps, _mm256_maskstore_pd, _mm256_maskstore_ps, _mm256_set_epi64x,
        _mm256_set1_epi32, _mm256_set1_epi64x, _mm256_set1_pd, _mm256_set1_ps, _mm256_setr_epi32,
        _mm256_setzero_pd, _mm256_setzero_ps, _mm256_storeu_pd, _mm256_storeu_ps,
    };

    use super::Panel;

    /// Lane mask selecting the first `n` of 8 f32 lanes (all when `n ≥ 8`).
    #[target_feature(enable = "avx2")]
    pub(crate) fn lanes_f32(n: usize) -> __m256i {
        let n = n.min(8) as i32;
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }

    /// Lane mask selecting the first `n` of 4 f64 lanes (all when `n ≥ 4`).
    #[target_feature(enable = "avx2")]
    fn lanes_f64(n: usize) -> __m256i {
        let n = n.min(4) as i64;
        _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_set_epi64x(3, 2, 1, 0))
    }

    /// Rows up to which [`panel_f32`] runs `M × 32` tiles (four vectors per row) before
    /// the `M × 16` ones; a 32-column tile of three rows spills (16 registers).
    const WIDE_ROWS: usize = 2;

    /// All columns of `C` (f32) in `M × 16` tiles, the last one masked; with at most
    /// [`WIDE_ROWS`] rows, `M × 32` tiles first, so that `4·M` accumulators (not `2·M`) hide the latency
    /// of the multiply-adds.
    ///
    /// # Safety
    /// AVX2 and FMA available; the panel's pointers are f32 and valid as for `gemm`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn panel_f32<const M: usize>(x: &Panel) {
        let full = lanes_f32(8);
        // SAFETY (whole body): the tiles stay inside the regions the caller vouched for.
        unsafe {
            let wide = if M <= WIDE_ROWS { x.tiles / 2 } else { 0 };
            for t in 0..wide {
                tile_f32::<M, 4, false>(x, (t * 32) as isize, [full; 4]);
            }
            for t in 2 * wide..x.tiles {
                tile_f32::<M, 2, false>(x, (t * 16) as isize, [full; 2]);
            }
            if x.tail > 0 {
                let masks = [lanes_f32(x.tail), lanes_f32(x.tail.saturating_sub(8))];
                tile_f32::<M, 2, true>(x, (x.tiles * 16) as isize, masks);
            }
        }
    }

    /// One `M × 8V` f32 tile of `C` at column `j0` (`V` vectors per row: `2·M + 2 + 1` or,
    /// for `M ≤ 2`, `4·M + 4 + 1` of the 16 registers); with `MASKED`, masked-out lanes
    /// are neither loaded from `B` nor stored to `C` (without it `masks` are not read).
    ///
    /// # Safety
    /// As for [`panel_f32`]; the unmasked columns lie inside `B` and `C`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_f32<const M: usize, const V: usize, const MASKED: bool>(
        x: &Panel,
        j0: isize,
        masks: [__m256i; V],
    ) {
        let (a, b, c) = (x.a.cast::<f32>(), x.b.cast::<f32>(), x.c.cast::<f32>());
        // SAFETY (whole body): masked lanes are not accessed; the rest is in bounds.
        unsafe {
            let load = |p: *const f32, mask| {
                if MASKED {
                    _mm256_maskload_ps(p, mask)
                } else {
                    _mm256_loadu_ps(p)
                }
            };
            let mut acc = [[_mm256_setzero_ps(); V]; M];
            // The tile's first column of B, found once (it lies inside one strip: `j0`
            // is a multiple of the tile's width, which divides the strip's).
            let bj = b.offset(x.b_col(j0));
            for p in 0..x.k as isize {
                let bp = bj.offset(p * x.rsb);
                let bv: [__m256; V] = std::array::from_fn(|h| load(bp.add(8 * h), masks[h]));
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let av = _mm256_set1_ps(*a.offset(i as isize * x.rsa + p * x.csa));
                    for (acc_iv, &bv) in acc_i.iter_mut().zip(&bv) {
                        *acc_iv = _mm256_fmadd_ps(av, bv, *acc_iv);
                    }
                }
            }
            for (i, acc_i) in acc.iter().enumerate() {
                let cp = c.offset(i as isize * x.rsc + j0);
                for (h, (&v, &mask)) in acc_i.iter().zip(&masks).enumerate() {
                    let dst = cp.add(8 * h);
                    let v = if x.accumulate {
                        _mm256_add_ps(load(dst, mask), v)
                    } else {
                        v
                    };
                    if MASKED {
                        _mm256_maskstore_ps(dst, mask, v);
                    } else {
                        _mm256_storeu_ps(dst, v);
                    }
                }
            }
        }
    }

    /// All columns of `C` (f64) in `M × 8` tiles, the last one masked.
    ///
    /// # Safety
    /// AVX2 and FMA available; the panel's pointers are f64 and valid as for `gemm`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn panel_f64<const M: usize>(x: &Panel) {
        let full = lanes_f64(4);
        // SAFETY (whole body): the tiles stay inside the regions the caller vouched for.
        unsafe {
            for t in 0..x.tiles {
                tile_f64::<M, false>(x, (t * 8) as isize, full, full);
            }
            if x.tail > 0 {
                let (m0, m1) = (lanes_f64(x.tail), lanes_f64(x.tail.saturating_sub(4)));
                tile_f64::<M, true>(x, (x.tiles * 8) as isize, m0, m1);
            }
        }
    }

    /// One `M × 8` f64 tile of `C` at column `j0`, masked as in [`tile_f32`].
    ///
    /// # Safety
    /// As for [`panel_f64`]; the unmasked columns lie inside `B` and `C`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_f64<const M: usize, const MASKED: bool>(
        x: &Panel,
        j0: isize,
        m0: __m256i,
        m1: __m256i,
    ) {
        let (a, b, c) = (x.a.cast::<f64>(), x.b.cast::<f64>(), x.c.cast::<f64>());
        // SAFETY (whole body): masked lanes are not accessed; the rest is in bounds.
        unsafe {
            let load = |p: *const f64, mask| {
                if MASKED {
                    _mm256_maskload_pd(p, mask)
                } else {
                    _mm256_loadu_pd(p)
                }
            };
            let mut acc = [[_mm256_setzero_pd(); 2]; M];
            // The tile's first column of B, found once (it lies inside one strip).
            let bj = b.offset(x.b_col(j0));
            for p in 0..x.k as isize {
                let bp = bj.offset(p * x.rsb);
                let b0 = load(bp, m0);
                let b1 = load(bp.add(4), m1);
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let av = _mm256_set1_pd(*a.offset(i as isize * x.rsa + p * x.csa));
                    acc_i[0] = _mm256_fmadd_pd(av, b0, acc_i[0]);
                    acc_i[1] = _mm256_fmadd_pd(av, b1, acc_i[1]);
                }
            }
            for (i, acc_i) in acc.iter().enumerate() {
                let cp = c.offset(i as isize * x.rsc + j0);
                for (h, (&v, mask)) in acc_i.iter().zip([m0, m1]).enumerate() {
                    let dst = cp.add(4 * h);
                    let v = if x.accumulate {
                        _mm256_add_pd(load(dst, mask), v)
                    } else {
                        v
                    };
                    if MASKED {
                        _mm256_maskstore_pd(dst, mask, v);
                    } else {
                        _mm256_storeu_pd(dst, v);
                    }
                }
            }
        }
    }
}
