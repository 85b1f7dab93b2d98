//! Pointwise LSTM / SC-LSTM step kernels over host slices (paper Eq. 1–2).
//!
//! Layouts are those of `sclstm_core::Backend` (flat, row-major, time-major, gate order
//! **i, f, g (= ĉ), o**). Each function works on one time step `s.t` for the whole batch:
//!
//! | buffer            | shape        | step `t` region                         |
//! |-------------------|--------------|-----------------------------------------|
//! | `gates`, `d_gates`| (T, B, 4H)   | `[t·B·4H, (t+1)·B·4H)`                  |
//! | `c`, `h`, `d_c`, `d_h`, `q_k`, `d_q_k` | (T+1, B, H) | slot `t` = state before step `t`, slot `t+1` = after |
//! | `tanh_c`, `o_k`, `d_o_k` | (T, B, H) | `[t·B·H, (t+1)·B·H)`                |
//! | `mask`            | (T, B)       | `[t·B, (t+1)·B)`                        |
//!
//! The functions at the top level are the fast kernels: they cut every buffer into the
//! exact per-row slices of step `t` once, then loop over equal-length slices, so the
//! inner loops carry no bounds checks and no branches, and allocate nothing. In f32 the
//! forward kernels use branch-free activations built on a polynomial `exp` (no libm
//! call), so the compiler vectorizes the whole loop; in f64 (gradient checks) they call
//! the library `exp`/`tanh`. [`reference`](mod@reference) holds the naive indexed
//! loops that define the semantics; the tests check the fast kernels against them in
//! both precisions.
//!
//! Masked entries (`mask[t, b] = 0`, padding after a sentence's end) produce zero gates,
//! states and outputs in the forward, and write zero gradients / add nothing in the
//! backward, so padding never leaks into states or gradients.

use sclstm_core::{CellStep, NumError, Real};

/// Fails with [`NumError::BufferTooSmall`] when `len` is below `needed`.
fn need(op: &'static str, len: usize, needed: usize) -> Result<(), NumError> {
    if len < needed {
        Err(NumError::BufferTooSmall { op, len, needed })
    } else {
        Ok(())
    }
}

/// The activations the fast forward kernels use. [`Libm`] for any [`Real`] (f64 gradient
/// checks); [`VecF32`] for f32 training, where the libm calls would stop the compiler
/// from vectorizing the loops.
trait Activations<R> {
    /// Logistic sigmoid.
    fn sigmoid(x: R) -> R;
    /// Hyperbolic tangent.
    fn tanh(x: R) -> R;
}

/// Library `exp`/`tanh`: sigmoid written as `1 / (1 + e^-x)` without a branch. For large
/// negative `x`, `e^-x` overflows to `+∞` and the result is the correct limit 0; for
/// large positive `x` it is 1. No NaN arises for finite or infinite input.
struct Libm;

impl<R: Real> Activations<R> for Libm {
    #[inline(always)]
    fn sigmoid(x: R) -> R {
        R::one() / (R::one() + (-x).exp())
    }
    #[inline(always)]
    fn tanh(x: R) -> R {
        x.tanh()
    }
}

/// Branch-free f32 activations built on [`exp_f32`], so a loop over them compiles to
/// SIMD code. `tanh(x) = 2σ(2x) − 1`: absolute error about 1e-7 (a few f32 ulps of 1),
/// which is below f32 training noise; the f64 path keeps library precision.
struct VecF32;

impl Activations<f32> for VecF32 {
    #[inline(always)]
    fn sigmoid(x: f32) -> f32 {
        1.0 / (1.0 + exp_f32(-x))
    }
    #[inline(always)]
    fn tanh(x: f32) -> f32 {
        2.0 / (1.0 + exp_f32(-2.0 * x)) - 1.0
    }
}

/// `e^x` for f32 from plain arithmetic (vectorizable, no libm call): `x = n·ln2 + r` with
/// `n` rounded by the 1.5·2²³ trick and `ln2` split in two (Cody–Waite), the Cephes
/// degree-6 polynomial for `e^r` on `|r| ≤ ln2/2` (relative error ≈ 1 ulp), and `2^n`
/// built in the exponent bits. The input is clamped to [-87, 88] so `2^n` stays normal:
/// the results there (≈ 1.6e-38 and 1.7e38) act as 0 and ∞ in σ and tanh. NaN stays NaN.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5·2^23: adding and subtracting it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes 5.0000001201e-1 rounds to 0.5 in f32
    let e_r = p * r * r + r + 1.0;
    // `n` as an integer without a float→int conversion (Rust's `as` saturates and maps
    // NaN to 0, a branch per lane that stops vectorization): after adding 1.5·2²³ the
    // integer sits in the low mantissa bits, so the bit patterns differ by exactly `n`.
    // n ∈ [-126, 127] here, so `n + 127` is a valid biased exponent.
    let n_int = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let two_n = f32::from_bits(n_int.wrapping_add(127) << 23);
    e_r * two_n
}

/// LSTM cell forward at step `t` (paper Eq. 1, no peepholes):
///
/// ```text
/// i = σ(a_i)   f = σ(a_f)   g = ĉ = tanh(a_g)   o = σ(a_o)     (a = gates[t], pre-activations)
/// c_t = i·g + f·c_{t-1}      h_t = o·tanh(c_t)                  (all times mask[t])
/// ```
///
/// # Arguments
/// * `gates` (T, B, 4H): pre-activations `U x_t + b + W h_{t-1}` at step `t` on entry,
///   overwritten with the activations `[i, f, g, o]`.
/// * `c` (T+1, B, H): reads slot `t` (`c_{t-1}`), writes slot `t+1` (`c_t`).
/// * `h` (T+1, B, H): writes slot `t+1` (`h_t`).
/// * `tanh_c` (T, B, H): writes `tanh(c_t)` at step `t`.
/// * `mask` (T, B): 1 inside a sentence, 0 on padding.
///
/// # Errors
/// [`NumError::BufferTooSmall`] if a buffer does not hold step `t`.
pub fn lstm_cell_fwd<R: Real>(
    s: CellStep,
    gates: &mut [R],
    c: &mut [R],
    h: &mut [R],
    tanh_c: &mut [R],
    mask: &[R],
) -> Result<(), NumError> {
    if let (Some(g), Some(c), Some(h), Some(tc), Some(m)) = (
        R::as_f32_mut(gates),
        R::as_f32_mut(c),
        R::as_f32_mut(h),
        R::as_f32_mut(tanh_c),
        R::as_f32(mask),
    ) {
        return simd::cell_fwd_f32(s, g, c, h, tc, m);
    }
    cell_fwd::<R, Libm>(s, gates, c, h, tanh_c, mask)
}

/// Runtime dispatch of the f32 kernels to copies compiled for wider vector units.
///
/// The kernel bodies are `#[inline(always)]` generics; each `#[target_feature]` wrapper
/// below compiles them again with AVX-512 (16 lanes) or AVX2 (8 lanes) enabled, so the
/// polynomial activations run on full-width registers instead of the baseline SSE2 (4
/// lanes). The arithmetic is the same IEEE operations in the same order (Rust never
/// contracts `a·b + c` into an FMA on its own), so every path gives bit-identical
/// results and runs stay deterministic whatever the machine picks.
mod simd {
    use super::{CellStep, NumError, VecF32, cell_bwd, cell_fwd, gate_fwd};
    use crate::kernels::Kernels;

    /// Which compiled copy to run on this machine.
    #[derive(Clone, Copy)]
    enum Level {
        /// AVX-512F present.
        Avx512,
        /// AVX2 present (no AVX-512F).
        Avx2,
        /// Baseline x86-64 or another architecture.
        Base,
    }

    /// The vector unit of the active kernel set ([`Kernels::active`]: the widest this
    /// machine has unless `SCLSTM_KERNELS` forces a narrower one).
    fn level() -> Level {
        match Kernels::active() {
            Kernels::Avx512 => Level::Avx512,
            Kernels::Avx2 => Level::Avx2,
            Kernels::Portable => Level::Base,
        }
    }

    /// [`cell_fwd`] with f32 activations on the widest vector unit.
    pub(super) fn cell_fwd_f32(
        s: CellStep,
        gates: &mut [f32],
        c: &mut [f32],
        h: &mut [f32],
        tanh_c: &mut [f32],
        mask: &[f32],
    ) -> Result<(), NumError> {
        match level() {
            // SAFETY: AVX-512F was detected at run time.
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => unsafe { x86::cell_fwd_avx512(s, gates, c, h, tanh_c, mask) },
            // SAFETY: AVX2 was detected at run time.
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => unsafe { x86::cell_fwd_avx2(s, gates, c, h, tanh_c, mask) },
            _ => cell_fwd::<f32, VecF32>(s, gates, c, h, tanh_c, mask),
        }
    }

    /// [`gate_fwd`] with f32 activations on the widest vector unit.
    pub(super) fn gate_fwd_f32(
        s: CellStep,
        o_k: &mut [f32],
        q_k: &mut [f32],
        tanh_c: &[f32],
        mask: &[f32],
    ) -> Result<(), NumError> {
        match level() {
            // SAFETY: AVX-512F was detected at run time.
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => unsafe { x86::gate_fwd_avx512(s, o_k, q_k, tanh_c, mask) },
            // SAFETY: AVX2 was detected at run time.
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => unsafe { x86::gate_fwd_avx2(s, o_k, q_k, tanh_c, mask) },
            _ => gate_fwd::<f32, VecF32>(s, o_k, q_k, tanh_c, mask),
        }
    }

    /// [`cell_bwd`] in f32 on the widest vector unit.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn cell_bwd_f32(
        s: CellStep,
        gates: &[f32],
        c: &[f32],
        tanh_c: &[f32],
        mask: &[f32],
        d_h: &[f32],
        d_c: &mut [f32],
        d_gates: &mut [f32],
    ) -> Result<(), NumError> {
        match level() {
            // SAFETY: AVX-512F was detected at run time.
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => unsafe {
                x86::cell_bwd_avx512(s, gates, c, tanh_c, mask, d_h, d_c, d_gates)
            },
            // SAFETY: AVX2 was detected at run time.
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => unsafe {
                x86::cell_bwd_avx2(s, gates, c, tanh_c, mask, d_h, d_c, d_gates)
            },
            _ => cell_bwd::<f32>(s, gates, c, tanh_c, mask, d_h, d_c, d_gates),
        }
    }

    /// The kernel bodies compiled with wider vector units enabled.
    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use super::super::{CellStep, NumError, VecF32, cell_bwd, cell_fwd, gate_fwd};

        /// [`cell_fwd`] compiled for AVX-512F.
        #[target_feature(enable = "avx512f")]
        pub(super) fn cell_fwd_avx512(
            s: CellStep,
            gates: &mut [f32],
            c: &mut [f32],
            h: &mut [f32],
            tanh_c: &mut [f32],
            mask: &[f32],
        ) -> Result<(), NumError> {
            cell_fwd::<f32, VecF32>(s, gates, c, h, tanh_c, mask)
        }

        /// [`cell_fwd`] compiled for AVX2.
        #[target_feature(enable = "avx2")]
        pub(super) fn cell_fwd_avx2(
            s: CellStep,
            gates: &mut [f32],
            c: &mut [f32],
            h: &mut [f32],
            tanh_c: &mut [f32],
            mask: &[f32],
        ) -> Result<(), NumError> {
            cell_fwd::<f32, VecF32>(s, gates, c, h, tanh_c, mask)
        }

        /// [`gate_fwd`] compiled for AVX-512F.
        #[target_feature(enable = "avx512f")]
        pub(super) fn gate_fwd_avx512(
            s: CellStep,
            o_k: &mut [f32],
            q_k: &mut [f32],
            tanh_c: &[f32],
            mask: &[f32],
        ) -> Result<(), NumError> {
            gate_fwd::<f32, VecF32>(s, o_k, q_k, tanh_c, mask)
        }

        /// [`gate_fwd`] compiled for AVX2.
        #[target_feature(enable = "avx2")]
        pub(super) fn gate_fwd_avx2(
            s: CellStep,
            o_k: &mut [f32],
            q_k: &mut [f32],
            tanh_c: &[f32],
            mask: &[f32],
        ) -> Result<(), NumError> {
            gate_fwd::<f32, VecF32>(s, o_k, q_k, tanh_c, mask)
        }

        /// [`cell_bwd`] compiled for AVX-512F.
        #[target_feature(enable = "avx512f")]
        #[allow(clippy::too_many_arguments)]
        pub(super) fn cell_bwd_avx512(
            s: CellStep,
            gates: &[f32],
            c: &[f32],
            tanh_c: &[f32],
            mask: &[f32],
            d_h: &[f32],
            d_c: &mut [f32],
            d_gates: &mut [f32],
        ) -> Result<(), NumError> {
            cell_bwd::<f32>(s, gates, c, tanh_c, mask, d_h, d_c, d_gates)
        }

        /// [`cell_bwd`] compiled for AVX2.
        #[target_feature(enable = "avx2")]
        #[allow(clippy::too_many_arguments)]
        pub(super) fn cell_bwd_avx2(
            s: CellStep,
            gates: &[f32],
            c: &[f32],
            tanh_c: &[f32],
            mask: &[f32],
            d_h: &[f32],
            d_c: &mut [f32],
            d_gates: &mut [f32],
        ) -> Result<(), NumError> {
            cell_bwd::<f32>(s, gates, c, tanh_c, mask, d_h, d_c, d_gates)
        }
    }
}

/// The body of [`lstm_cell_fwd`] for one choice of activations.
#[inline(always)]
fn cell_fwd<R: Real, A: Activations<R>>(
    s: CellStep,
    gates: &mut [R],
    c: &mut [R],
    h: &mut [R],
    tanh_c: &mut [R],
    mask: &[R],
) -> Result<(), NumError> {
    let (t, bsz, hd) = (s.t, s.batch, s.hidden);
    let op = "lstm_cell_fwd";
    let (bh, g4) = (bsz * hd, 4 * hd);
    need(op, gates.len(), (t + 1) * bsz * g4)?;
    need(op, c.len(), (t + 2) * bh)?;
    need(op, h.len(), (t + 2) * bh)?;
    need(op, tanh_c.len(), (t + 1) * bh)?;
    need(op, mask.len(), (t + 1) * bsz)?;
    if hd == 0 {
        return Ok(());
    }
    let gates_t = &mut gates[t * bsz * g4..(t + 1) * bsz * g4];
    let (c_lo, c_hi) = c.split_at_mut((t + 1) * bh);
    let c_prev = &c_lo[t * bh..];
    let c_next = &mut c_hi[..bh];
    let h_next = &mut h[(t + 1) * bh..(t + 2) * bh];
    let tc_t = &mut tanh_c[t * bh..(t + 1) * bh];
    let mask_t = &mask[t * bsz..(t + 1) * bsz];

    let rows = gates_t
        .chunks_exact_mut(g4)
        .zip(c_prev.chunks_exact(hd))
        .zip(c_next.chunks_exact_mut(hd))
        .zip(h_next.chunks_exact_mut(hd))
        .zip(tc_t.chunks_exact_mut(hd))
        .zip(mask_t);
    for (((((row, cp), cn), hn), tc), &m) in rows {
        // One simple loop per activation: each compiles to full-width SIMD, where a
        // single loop computing all five activations per element does not vectorize.
        let (i_f, rest) = row.split_at_mut(2 * hd);
        let (g_g, o_g) = rest.split_at_mut(hd);
        for v in i_f.iter_mut() {
            *v = A::sigmoid(*v) * m;
        }
        for v in g_g.iter_mut() {
            *v = A::tanh(*v) * m;
        }
        for v in o_g.iter_mut() {
            *v = A::sigmoid(*v) * m;
        }
        let (i_g, f_g) = i_f.split_at(hd);
        // Equal-length views: the indexed loop below then carries no bounds checks.
        let (i_g, f_g, g_g, o_g) = (&i_g[..hd], &f_g[..hd], &g_g[..hd], &o_g[..hd]);
        let (cp, cn, hn, tc) = (&cp[..hd], &mut cn[..hd], &mut hn[..hd], &mut tc[..hd]);
        for j in 0..hd {
            let cv = (i_g[j] * g_g[j] + f_g[j] * cp[j]) * m;
            let tv = A::tanh(cv);
            cn[j] = cv;
            tc[j] = tv;
            hn[j] = o_g[j] * tv;
        }
    }
    Ok(())
}

/// LSTM cell backward at step `t`, the derivative of [`lstm_cell_fwd`].
///
/// On entry `d_h[t+1]` is the complete gradient w.r.t. `h_t` and `d_c[t+1]` the gradient
/// reaching `c_t` by every path except `h_t` (the next step's forget path and the task
/// gates). With `m = mask[t]` and the saved activations `i, f, g, o` and `tanh(c_t)`:
///
/// ```text
/// dc    = (d_c[t+1] + d_h[t+1]·o·(1 − tanh²c_t))·m     total gradient w.r.t. c_t
/// d_a_i = dc·g·i(1−i)           (σ' = σ(1−σ))
/// d_a_f = dc·c_{t-1}·f(1−f)
/// d_a_g = dc·i·(1−g²)           (tanh' = 1 − tanh²)
/// d_a_o = d_h[t+1]·m·tanh(c_t)·o(1−o)
/// d_c[t] += f·dc                (c_{t-1} feeds c_t through f)
/// ```
///
/// `d_gates[t]` (T, B, 4H) is **written** (the pre-activation gradients, order i, f, g,
/// o); `d_c[t]` is **accumulated**. `c` (T+1, B, H) is read at slot `t` (`c_{t-1}`).
/// Masked entries write zeros and add nothing.
///
/// # Errors
/// [`NumError::BufferTooSmall`] if a buffer does not hold step `t`.
#[allow(clippy::too_many_arguments)]
pub fn lstm_cell_bwd<R: Real>(
    s: CellStep,
    gates: &[R],
    c: &[R],
    tanh_c: &[R],
    mask: &[R],
    d_h: &[R],
    d_c: &mut [R],
    d_gates: &mut [R],
) -> Result<(), NumError> {
    if let (Some(g), Some(cc), Some(tc), Some(m), Some(dh), Some(dc), Some(dg)) = (
        R::as_f32(gates),
        R::as_f32(c),
        R::as_f32(tanh_c),
        R::as_f32(mask),
        R::as_f32(d_h),
        R::as_f32_mut(d_c),
        R::as_f32_mut(d_gates),
    ) {
        return simd::cell_bwd_f32(s, g, cc, tc, m, dh, dc, dg);
    }
    cell_bwd(s, gates, c, tanh_c, mask, d_h, d_c, d_gates)
}

/// The body of [`lstm_cell_bwd`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn cell_bwd<R: Real>(
    s: CellStep,
    gates: &[R],
    c: &[R],
    tanh_c: &[R],
    mask: &[R],
    d_h: &[R],
    d_c: &mut [R],
    d_gates: &mut [R],
) -> Result<(), NumError> {
    let (t, bsz, hd) = (s.t, s.batch, s.hidden);
    let op = "lstm_cell_bwd";
    let (bh, g4) = (bsz * hd, 4 * hd);
    need(op, gates.len(), (t + 1) * bsz * g4)?;
    need(op, c.len(), (t + 1) * bh)?;
    need(op, tanh_c.len(), (t + 1) * bh)?;
    need(op, mask.len(), (t + 1) * bsz)?;
    need(op, d_h.len(), (t + 2) * bh)?;
    need(op, d_c.len(), (t + 2) * bh)?;
    need(op, d_gates.len(), (t + 1) * bsz * g4)?;
    if hd == 0 {
        return Ok(());
    }
    let one = R::one();
    let gates_t = &gates[t * bsz * g4..(t + 1) * bsz * g4];
    let d_gates_t = &mut d_gates[t * bsz * g4..(t + 1) * bsz * g4];
    let c_prev = &c[t * bh..(t + 1) * bh];
    let tc_t = &tanh_c[t * bh..(t + 1) * bh];
    let dh_t = &d_h[(t + 1) * bh..(t + 2) * bh];
    let (dc_lo, dc_hi) = d_c.split_at_mut((t + 1) * bh);
    let dc_prev = &mut dc_lo[t * bh..];
    let dc_next = &dc_hi[..bh];
    let mask_t = &mask[t * bsz..(t + 1) * bsz];

    let rows = gates_t
        .chunks_exact(g4)
        .zip(d_gates_t.chunks_exact_mut(g4))
        .zip(c_prev.chunks_exact(hd))
        .zip(tc_t.chunks_exact(hd))
        .zip(dh_t.chunks_exact(hd))
        .zip(dc_next.chunks_exact(hd))
        .zip(dc_prev.chunks_exact_mut(hd))
        .zip(mask_t);
    for (((((((row, drow), cp), tc), dh), dcn), dcp), &m) in rows {
        let (i_g, rest) = row.split_at(hd);
        let (f_g, rest) = rest.split_at(hd);
        let (g_g, o_g) = rest.split_at(hd);
        let (d_i, rest) = drow.split_at_mut(hd);
        let (d_f, rest) = rest.split_at_mut(hd);
        let (d_g, d_o) = rest.split_at_mut(hd);
        // Equal-length views: the indexed loop below then carries no bounds checks.
        let (i_g, f_g, g_g, o_g) = (&i_g[..hd], &f_g[..hd], &g_g[..hd], &o_g[..hd]);
        let (cp, tc, dh, dcn) = (&cp[..hd], &tc[..hd], &dh[..hd], &dcn[..hd]);
        let (d_i, d_f, d_g, d_o) = (
            &mut d_i[..hd],
            &mut d_f[..hd],
            &mut d_g[..hd],
            &mut d_o[..hd],
        );
        let dcp = &mut dcp[..hd];
        for j in 0..hd {
            let (i, f, g, o, tv) = (i_g[j], f_g[j], g_g[j], o_g[j], tc[j]);
            let dhm = dh[j] * m;
            let dc = dcn[j] * m + dhm * o * (one - tv * tv);
            d_i[j] = dc * g * i * (one - i);
            d_f[j] = dc * cp[j] * f * (one - f);
            d_g[j] = dc * i * (one - g * g);
            d_o[j] = dhm * tv * o * (one - o);
            dcp[j] += f * dc;
        }
    }
    Ok(())
}

/// SC-LSTM task gate forward at step `t` (paper Eq. 2):
///
/// ```text
/// o^k_t = σ(a)·m        (a = o_k[t] = W_k q^k_{t-1} + U_k x^k_t + b_k, overwritten in place)
/// q^k_t = o^k_t·tanh(c_t)
/// ```
///
/// `o_k` (T, B, H) step `t` is overwritten; `q_k` (T+1, B, H) slot `t+1` is written;
/// `tanh_c` (T, B, H) and `mask` (T, B) are read.
///
/// # Errors
/// [`NumError::BufferTooSmall`] if a buffer does not hold step `t`.
pub fn task_gate_fwd<R: Real>(
    s: CellStep,
    o_k: &mut [R],
    q_k: &mut [R],
    tanh_c: &[R],
    mask: &[R],
) -> Result<(), NumError> {
    if let (Some(o), Some(q), Some(tc), Some(m)) = (
        R::as_f32_mut(o_k),
        R::as_f32_mut(q_k),
        R::as_f32(tanh_c),
        R::as_f32(mask),
    ) {
        return simd::gate_fwd_f32(s, o, q, tc, m);
    }
    gate_fwd::<R, Libm>(s, o_k, q_k, tanh_c, mask)
}

/// The body of [`task_gate_fwd`] for one choice of activations.
#[inline(always)]
fn gate_fwd<R: Real, A: Activations<R>>(
    s: CellStep,
    o_k: &mut [R],
    q_k: &mut [R],
    tanh_c: &[R],
    mask: &[R],
) -> Result<(), NumError> {
    let (t, bsz, hd) = (s.t, s.batch, s.hidden);
    let op = "task_gate_fwd";
    let bh = bsz * hd;
    need(op, o_k.len(), (t + 1) * bh)?;
    need(op, q_k.len(), (t + 2) * bh)?;
    need(op, tanh_c.len(), (t + 1) * bh)?;
    need(op, mask.len(), (t + 1) * bsz)?;
    if hd == 0 {
        return Ok(());
    }
    let o_t = &mut o_k[t * bh..(t + 1) * bh];
    let q_next = &mut q_k[(t + 1) * bh..(t + 2) * bh];
    let tc_t = &tanh_c[t * bh..(t + 1) * bh];
    let mask_t = &mask[t * bsz..(t + 1) * bsz];
    let rows = o_t
        .chunks_exact_mut(hd)
        .zip(q_next.chunks_exact_mut(hd))
        .zip(tc_t.chunks_exact(hd))
        .zip(mask_t);
    for (((orow, qrow), tcrow), &m) in rows {
        for ((o, q), &tv) in orow.iter_mut().zip(qrow.iter_mut()).zip(tcrow) {
            let ov = A::sigmoid(*o) * m;
            *o = ov;
            *q = ov * tv;
        }
    }
    Ok(())
}

/// SC-LSTM task gate backward at step `t`, the derivative of [`task_gate_fwd`]. With
/// `d_q = d_q_k[t+1]·m` (complete gradient w.r.t. `q^k_t`) and the saved `o = o^k_t`:
///
/// ```text
/// d_o_k[t]  = d_q·tanh(c_t)·o(1−o)          written (pre-activation gradient)
/// d_c[t+1] += d_q·o·(1 − tanh²c_t)          accumulated (q^k_t depends on c_t)
/// ```
///
/// Masked entries write zeros and add nothing.
///
/// # Errors
/// [`NumError::BufferTooSmall`] if a buffer does not hold step `t`.
pub fn task_gate_bwd<R: Real>(
    s: CellStep,
    o_k: &[R],
    tanh_c: &[R],
    mask: &[R],
    d_q_k: &[R],
    d_o_k: &mut [R],
    d_c: &mut [R],
) -> Result<(), NumError> {
    let (t, bsz, hd) = (s.t, s.batch, s.hidden);
    let op = "task_gate_bwd";
    let bh = bsz * hd;
    need(op, o_k.len(), (t + 1) * bh)?;
    need(op, tanh_c.len(), (t + 1) * bh)?;
    need(op, mask.len(), (t + 1) * bsz)?;
    need(op, d_q_k.len(), (t + 2) * bh)?;
    need(op, d_o_k.len(), (t + 1) * bh)?;
    need(op, d_c.len(), (t + 2) * bh)?;
    if hd == 0 {
        return Ok(());
    }
    let one = R::one();
    let o_t = &o_k[t * bh..(t + 1) * bh];
    let tc_t = &tanh_c[t * bh..(t + 1) * bh];
    let dq_t = &d_q_k[(t + 1) * bh..(t + 2) * bh];
    let do_t = &mut d_o_k[t * bh..(t + 1) * bh];
    let dc_t = &mut d_c[(t + 1) * bh..(t + 2) * bh];
    let mask_t = &mask[t * bsz..(t + 1) * bsz];
    let rows = o_t
        .chunks_exact(hd)
        .zip(tc_t.chunks_exact(hd))
        .zip(dq_t.chunks_exact(hd))
        .zip(do_t.chunks_exact_mut(hd))
        .zip(dc_t.chunks_exact_mut(hd))
        .zip(mask_t);
    for (((((orow, tcrow), dqrow), dorow), dcrow), &m) in rows {
        let lanes = orow
            .iter()
            .zip(tcrow)
            .zip(dqrow)
            .zip(dorow.iter_mut())
            .zip(dcrow.iter_mut());
        for ((((&o, &tv), &dqv), d_o), d_c) in lanes {
            let dq = dqv * m;
            *d_o = dq * tv * o * (one - o);
            *d_c += dq * o * (one - tv * tv);
        }
    }
    Ok(())
}

/// Naive reference versions of the step kernels: plain indexed loops that define the
/// semantics (the spec) and serve as the fallback. Same arguments, layouts and errors
/// as the fast kernels in the parent module.
pub mod reference {
    use super::need;
    use sclstm_core::{CellStep, NumError, Real};

    /// Reference for [`super::lstm_cell_fwd`] (paper Eq. 1).
    ///
    /// # Errors
    /// [`NumError::BufferTooSmall`] if a buffer does not hold step `t`.
    pub fn lstm_cell_fwd<R: Real>(
        s: CellStep,
        gates: &mut [R],
        c: &mut [R],
        h: &mut [R],
        tanh_c: &mut [R],
        mask: &[R],
    ) -> Result<(), NumError> {
        let (t, b, hd) = (s.t, s.batch, s.hidden);
        let op = "lstm_cell_fwd";
        need(op, gates.len(), (t + 1) * b * 4 * hd)?;
        need(op, c.len(), (t + 2) * b * hd)?;
        need(op, h.len(), (t + 2) * b * hd)?;
        need(op, tanh_c.len(), (t + 1) * b * hd)?;
        need(op, mask.len(), (t + 1) * b)?;
        for bi in 0..b {
            let m = mask[t * b + bi];
            let g0 = (t * b + bi) * 4 * hd;
            let cur = (t * b + bi) * hd;
            let next = ((t + 1) * b + bi) * hd;
            for j in 0..hd {
                let i_g = gates[g0 + j].sigmoid() * m;
                let f_g = gates[g0 + hd + j].sigmoid() * m;
                let g_g = gates[g0 + 2 * hd + j].tanh() * m;
                let o_g = gates[g0 + 3 * hd + j].sigmoid() * m;
                gates[g0 + j] = i_g;
                gates[g0 + hd + j] = f_g;
                gates[g0 + 2 * hd + j] = g_g;
                gates[g0 + 3 * hd + j] = o_g;
                let c_t = (i_g * g_g + f_g * c[cur + j]) * m;
                c[next + j] = c_t;
                tanh_c[cur + j] = c_t.tanh();
                h[next + j] = o_g * c_t.tanh();
            }
        }
        Ok(())
    }

    /// Reference for [`super::lstm_cell_bwd`].
    ///
    /// # Errors
    /// [`NumError::BufferTooSmall`] if a buffer does not hold step `t`.
    #[allow(clippy::too_many_arguments)]
    pub fn lstm_cell_bwd<R: Real>(
        s: CellStep,
        gates: &[R],
        c: &[R],
        tanh_c: &[R],
        mask: &[R],
        d_h: &[R],
        d_c: &mut [R],
        d_gates: &mut [R],
    ) -> Result<(), NumError> {
        let (t, b, hd) = (s.t, s.batch, s.hidden);
        let op = "lstm_cell_bwd";
        need(op, gates.len(), (t + 1) * b * 4 * hd)?;
        need(op, c.len(), (t + 1) * b * hd)?;
        need(op, tanh_c.len(), (t + 1) * b * hd)?;
        need(op, mask.len(), (t + 1) * b)?;
        need(op, d_h.len(), (t + 2) * b * hd)?;
        need(op, d_c.len(), (t + 2) * b * hd)?;
        need(op, d_gates.len(), (t + 1) * b * 4 * hd)?;
        let one = R::one();
        for bi in 0..b {
            let m = mask[t * b + bi];
            let g0 = (t * b + bi) * 4 * hd;
            let cur = (t * b + bi) * hd;
            let next = ((t + 1) * b + bi) * hd;
            for j in 0..hd {
                let (i_g, f_g) = (gates[g0 + j], gates[g0 + hd + j]);
                let (g_g, o_g) = (gates[g0 + 2 * hd + j], gates[g0 + 3 * hd + j]);
                let tc = tanh_c[cur + j];
                let dh = d_h[next + j] * m;
                let dc = d_c[next + j] * m + dh * o_g * (one - tc * tc);
                d_gates[g0 + j] = dc * g_g * i_g * (one - i_g);
                d_gates[g0 + hd + j] = dc * c[cur + j] * f_g * (one - f_g);
                d_gates[g0 + 2 * hd + j] = dc * i_g * (one - g_g * g_g);
                d_gates[g0 + 3 * hd + j] = dh * tc * o_g * (one - o_g);
                d_c[cur + j] += f_g * dc;
            }
        }
        Ok(())
    }

    /// Reference for [`super::task_gate_fwd`] (paper Eq. 2).
    ///
    /// # Errors
    /// [`NumError::BufferTooSmall`] if a buffer does not hold step `t`.
    pub fn task_gate_fwd<R: Real>(
        s: CellStep,
        o_k: &mut [R],
        q_k: &mut [R],
        tanh_c: &[R],
        mask: &[R],
    ) -> Result<(), NumError> {
        let (t, b, hd) = (s.t, s.batch, s.hidden);
        let op = "task_gate_fwd";
        need(op, o_k.len(), (t + 1) * b * hd)?;
        need(op, q_k.len(), (t + 2) * b * hd)?;
        need(op, tanh_c.len(), (t + 1) * b * hd)?;
        need(op, mask.len(), (t + 1) * b)?;
        for bi in 0..b {
            let m = mask[t * b + bi];
            let cur = (t * b + bi) * hd;
            let next = ((t + 1) * b + bi) * hd;
            for j in 0..hd {
                let o = o_k[cur + j].sigmoid() * m;
                o_k[cur + j] = o;
                q_k[next + j] = o * tanh_c[cur + j];
            }
        }
        Ok(())
    }

    /// Reference for [`super::task_gate_bwd`].
    ///
    /// # Errors
    /// [`NumError::BufferTooSmall`] if a buffer does not hold step `t`.
    pub fn task_gate_bwd<R: Real>(
        s: CellStep,
        o_k: &[R],
        tanh_c: &[R],
        mask: &[R],
        d_q_k: &[R],
        d_o_k: &mut [R],
        d_c: &mut [R],
    ) -> Result<(), NumError> {
        let (t, b, hd) = (s.t, s.batch, s.hidden);
        let op = "task_gate_bwd";
        need(op, o_k.len(), (t + 1) * b * hd)?;
        need(op, tanh_c.len(), (t + 1) * b * hd)?;
        need(op, mask.len(), (t + 1) * b)?;
        need(op, d_q_k.len(), (t + 2) * b * hd)?;
        need(op, d_o_k.len(), (t + 1) * b * hd)?;
        need(op, d_c.len(), (t + 2) * b * hd)?;
        let one = R::one();
        for bi in 0..b {
            let m = mask[t * b + bi];
            let cur = (t * b + bi) * hd;
            let next = ((t + 1) * b + bi) * hd;
            for j in 0..hd {
                let (o, tc) = (o_k[cur + j], tanh_c[cur + j]);
                let dq = d_q_k[next + j] * m;
                d_o_k[cur + j] = dq * tc * o * (one - o);
                d_c[next + j] += dq * o * (one - tc * tc);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{exp_f32, lstm_cell_bwd, lstm_cell_fwd, reference, task_gate_bwd, task_gate_fwd};
    use sclstm_core::{CellStep, NumError, Real};

    /// Deterministic pseudo-random values in about [-4, 4] (no RNG dependency needed).
    fn fill<R: Real>(n: usize, seed: f64) -> Vec<R> {
        (0..n)
            .map(|k| {
                let v = 4.0
                    * ((k as f64 + 1.0) * 0.731 + seed).sin()
                    * ((k as f64) * 0.17 + seed).cos();
                R::from_f64(v)
            })
            .collect()
    }

    /// Mask (T, B) where sentence `b` has length `lens[b]`.
    fn mask<R: Real>(t_len: usize, lens: &[usize]) -> Vec<R> {
        let b = lens.len();
        (0..t_len * b)
            .map(|k| {
                if k / b < lens[k % b] {
                    R::one()
                } else {
                    R::zero()
                }
            })
            .collect()
    }

    /// Asserts element-wise closeness (`|g − w| ≤ tol·(1 + |w|)`), printing index and dims.
    fn assert_close<R: Real>(
        what: &str,
        dims: (usize, usize, usize),
        got: &[R],
        want: &[R],
        tol: f64,
    ) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
            let (g, w) = (g.to_f64(), w.to_f64());
            let ok = (g - w).abs() <= tol * (1.0 + w.abs());
            assert!(
                ok,
                "{what} {} (T,B,H)={dims:?} index {k}: fast {g} vs reference {w}",
                R::NAME
            );
        }
    }

    /// Runs a whole sequence forward and backward with both kernel sets and compares
    /// every buffer; outputs start as NaN so an unwritten element fails. f64 checks the
    /// library-precision path (tolerance 1e-12), f32 the vectorized activations.
    fn compare(t_len: usize, lens: &[usize], hd: usize) {
        compare_as::<f64>(t_len, lens, hd, 1e-12);
        compare_as::<f32>(t_len, lens, hd, 2e-6);
    }

    fn compare_as<R: Real>(t_len: usize, lens: &[usize], hd: usize, tol: f64) {
        let bsz = lens.len();
        let dims = (t_len, bsz, hd);
        let m = mask::<R>(t_len, lens);
        let pre = fill::<R>(t_len * bsz * 4 * hd, 0.3);
        let pre_k = fill::<R>(t_len * bsz * hd, 1.1);
        let d_h = fill::<R>((t_len + 1) * bsz * hd, 2.3);
        let d_q = fill::<R>((t_len + 1) * bsz * hd, 3.7);
        let nan = R::nan();
        let run = |fast: bool| {
            let mut gates = pre.clone();
            let mut o_k = pre_k.clone();
            let mut c = vec![nan; (t_len + 1) * bsz * hd];
            let mut h = vec![nan; (t_len + 1) * bsz * hd];
            let mut q = vec![nan; (t_len + 1) * bsz * hd];
            c[..bsz * hd].fill(R::zero());
            h[..bsz * hd].fill(R::zero());
            q[..bsz * hd].fill(R::zero());
            let mut tc = vec![nan; t_len * bsz * hd];
            for t in 0..t_len {
                let s = CellStep {
                    t,
                    batch: bsz,
                    hidden: hd,
                };
                if fast {
                    lstm_cell_fwd(s, &mut gates, &mut c, &mut h, &mut tc, &m).unwrap();
                    task_gate_fwd(s, &mut o_k, &mut q, &tc, &m).unwrap();
                } else {
                    reference::lstm_cell_fwd(s, &mut gates, &mut c, &mut h, &mut tc, &m).unwrap();
                    reference::task_gate_fwd(s, &mut o_k, &mut q, &tc, &m).unwrap();
                }
            }
            let mut d_c = fill::<R>((t_len + 1) * bsz * hd, 5.1);
            let mut d_gates = vec![nan; t_len * bsz * 4 * hd];
            let mut d_o = vec![nan; t_len * bsz * hd];
            for t in (0..t_len).rev() {
                let s = CellStep {
                    t,
                    batch: bsz,
                    hidden: hd,
                };
                if fast {
                    task_gate_bwd(s, &o_k, &tc, &m, &d_q, &mut d_o, &mut d_c).unwrap();
                    lstm_cell_bwd(s, &gates, &c, &tc, &m, &d_h, &mut d_c, &mut d_gates).unwrap();
                } else {
                    reference::task_gate_bwd(s, &o_k, &tc, &m, &d_q, &mut d_o, &mut d_c).unwrap();
                    reference::lstm_cell_bwd(s, &gates, &c, &tc, &m, &d_h, &mut d_c, &mut d_gates)
                        .unwrap();
                }
            }
            [gates, c, h, tc, o_k, q, d_c, d_gates, d_o]
        };
        let fast = run(true);
        let want = run(false);
        let names = [
            "gates", "c", "h", "tanh_c", "o_k", "q_k", "d_c", "d_gates", "d_o_k",
        ];
        for ((name, g), w) in names.iter().zip(&fast).zip(&want) {
            assert!(
                g.iter().all(|v| v.is_finite()),
                "{name} {dims:?}: unwritten (NaN) entry"
            );
            assert_close(name, dims, g, w, tol);
        }
        // Masked steps: zero activations, states, task outputs and gradients.
        let [gates, c, h, tc, o_k, q, _, d_gates, d_o] = &fast;
        for t in 0..t_len {
            for (b, &len) in lens.iter().enumerate() {
                if t < len {
                    continue;
                }
                let r = t * bsz + b;
                let r1 = (t + 1) * bsz + b;
                assert!(
                    gates[r * 4 * hd..(r + 1) * 4 * hd]
                        .iter()
                        .all(|&v| v == R::zero())
                );
                assert!(
                    d_gates[r * 4 * hd..(r + 1) * 4 * hd]
                        .iter()
                        .all(|&v| v == R::zero())
                );
                for buf in [tc, o_k, d_o] {
                    assert!(buf[r * hd..(r + 1) * hd].iter().all(|&v| v == R::zero()));
                }
                for buf in [c, h, q] {
                    assert!(buf[r1 * hd..(r1 + 1) * hd].iter().all(|&v| v == R::zero()));
                }
            }
        }
    }

    #[test]
    fn fast_matches_reference_size_one() {
        compare(1, &[1], 1);
    }

    #[test]
    fn fast_matches_reference_odd_sizes_with_padding() {
        compare(3, &[3, 1, 2], 3);
        compare(5, &[5, 0, 4], 7);
    }

    #[test]
    fn fast_matches_reference_larger() {
        compare(9, &[9, 7, 2, 9, 5], 33);
    }

    #[test]
    fn vectorized_exp_is_accurate_and_saturates() {
        let mut worst = 0.0f64;
        for k in 0..=20_000 {
            let x = (-87.0 + 175.0 * k as f64 / 20_000.0) as f32;
            let got = exp_f32(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 4e-7, "relative error {worst}");
        assert_eq!(exp_f32(-1e4), exp_f32(-87.0));
        assert!(exp_f32(1e4) > 1e38 && exp_f32(f32::INFINITY).is_finite());
        assert!(exp_f32(f32::NAN).is_nan());
        // Activations built on it stay in range for huge inputs.
        let mut gates = vec![1e4f32, -1e4, 1e4, -1e4, -1e4, 1e4, -1e4, 1e4];
        let (mut c, mut h, mut tc) = (vec![0.0f32; 4], vec![0.0f32; 4], vec![0.0f32; 2]);
        let s = CellStep {
            t: 0,
            batch: 1,
            hidden: 2,
        };
        lstm_cell_fwd(s, &mut gates, &mut c, &mut h, &mut tc, &[1.0]).unwrap();
        // i = [1, 0], f = [1, 0], g = [-1, 1], o = [0, 1]  ⇒  c_t = [-1, 0], h_t = [0, 0.76…]
        let close =
            |got: &[f32], want: &[f32]| got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-30);
        assert!(
            close(&gates, &[1.0, 0.0, 1.0, 0.0, -1.0, 1.0, 0.0, 1.0]),
            "{gates:?}"
        );
        assert!(close(&c[2..], &[-1.0, 0.0]), "{c:?}");
        assert!(h.iter().all(|v| v.is_finite() && v.abs() <= 1.0));
    }

    #[test]
    fn cell_forward_matches_equation_one_by_hand() {
        // One unit, all pre-activations 0: i = f = o = 1/2, g = 0, so c_t = c_{t-1}/2.
        let s = CellStep {
            t: 0,
            batch: 1,
            hidden: 1,
        };
        let mut gates = vec![0.0f64; 4];
        let mut c = vec![0.8, f64::NAN];
        let mut h = vec![0.0, f64::NAN];
        let mut tc = vec![f64::NAN];
        lstm_cell_fwd(s, &mut gates, &mut c, &mut h, &mut tc, &[1.0]).unwrap();
        assert_eq!(gates, vec![0.5, 0.5, 0.0, 0.5]);
        assert!((c[1] - 0.4).abs() < 1e-15);
        assert!((h[1] - 0.5 * 0.4f64.tanh()).abs() < 1e-15);
    }

    #[test]
    fn short_buffers_are_rejected() {
        let s = CellStep {
            t: 1,
            batch: 2,
            hidden: 3,
        };
        let mut small = vec![0.0f64; 5];
        let mut other = vec![0.0f64; 100];
        let mut tc = vec![0.0f64; 100];
        let err = lstm_cell_fwd(
            s,
            &mut small,
            &mut other,
            &mut vec![0.0; 100],
            &mut tc,
            &[1.0; 4],
        );
        assert!(matches!(
            err,
            Err(NumError::BufferTooSmall {
                op: "lstm_cell_fwd",
                ..
            })
        ));
        let err = task_gate_fwd(s, &mut other, &mut small, &tc, &[1.0; 4]);
        assert!(matches!(
            err,
            Err(NumError::BufferTooSmall {
                op: "task_gate_fwd",
                ..
            })
        ));
        let mut d = vec![0.0f64; 100];
        let err = task_gate_bwd(s, &tc, &tc, &[1.0; 4], &small, &mut d, &mut other);
        assert!(matches!(
            err,
            Err(NumError::BufferTooSmall {
                op: "task_gate_bwd",
                ..
            })
        ));
        let mut dg = vec![0.0f64; 100];
        let err = lstm_cell_bwd(s, &tc, &tc, &tc, &[1.0; 2], &tc, &mut d, &mut dg);
        assert!(matches!(
            err,
            Err(NumError::BufferTooSmall {
                op: "lstm_cell_bwd",
                ..
            })
        ));
    }
}
