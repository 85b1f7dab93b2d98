//! Pointwise LSTM / SC-LSTM step kernels over host slices (paper Eq. 1–2).
//!
//! Layouts are those of `sclstm_core::Backend` (flat, row-major, packed sequences, gate
//! order **i, f, g (= ĉ), o**). Each function works on the `s.rows` rows of one step:
//!
//! | buffer                     | width | rows touched                                    |
//! |----------------------------|-------|-------------------------------------------------|
//! | `gates`, `d_gates`         | 4H    | `[s.step, s.step + s.rows)`                     |
//! | `tanh_c`, `o_k`, `d_o_k`   | H     | `[s.step, s.step + s.rows)`                     |
//! | `c`, `d_c`                 | H     | state before at `s.prev`, state after at `s.next` |
//! | `h`, `d_h`, `q_k`, `d_q_k` | H     | `[s.next, s.next + s.rows)`                     |
//!
//! Every row is a real token: there is no padding and no mask.
//!
//! The functions at the top level are the fast kernels: they cut every buffer into the
//! exact slices of the step once, then loop over equal-length rows, so the inner loops
//! carry no bounds checks and no branches, and allocate nothing. In f32 the forward
//! kernels use branch-free activations built on a polynomial `exp` (no libm call), so
//! the compiler vectorizes the whole loop; in f64 (gradient checks) they call the
//! library `exp`/`tanh`. [`reference`](mod@reference) holds the naive indexed loops that
//! define the semantics; the tests check the fast kernels against them in both
//! precisions.

use crate::kernels::Kernels;
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

/// LSTM cell forward at one step (paper Eq. 1, no peepholes):
///
/// ```text
/// i = σ(a_i)   f = σ(a_f)   g = ĉ = tanh(a_g)   o = σ(a_o)     (a = the step's gates, pre-activations)
/// c_t = i·g + f·c_{t-1}      h_t = o·tanh(c_t)
/// ```
///
/// # Arguments
/// * `gates` (4H wide): pre-activations `U x_t + b + W h_{t-1}` at `s.step` on entry,
///   overwritten with the activations `[i, f, g, o]`.
/// * `c` (H wide): reads `c_{t-1}` at `s.prev`, writes `c_t` at `s.next`.
/// * `h` (H wide): writes `h_t` at `s.next`.
/// * `tanh_c` (H wide): writes `tanh(c_t)` at `s.step`.
///
/// # Errors
/// [`NumError::ShapeMismatch`] if the state regions overlap ([`CellStep::check`]);
/// [`NumError::BufferTooSmall`] if a buffer does not hold the step's rows.
pub fn lstm_cell_fwd<R: Real>(
    s: CellStep,
    gates: &mut [R],
    c: &mut [R],
    h: &mut [R],
    tanh_c: &mut [R],
) -> Result<(), NumError> {
    if let (Some(g), Some(c), Some(h), Some(tc)) = (
        R::as_f32_mut(gates),
        R::as_f32_mut(c),
        R::as_f32_mut(h),
        R::as_f32_mut(tanh_c),
    ) {
        return simd::cell_fwd_f32(Kernels::active(), s, g, c, h, tc);
    }
    cell_fwd::<R, Libm>(s, gates, c, h, tanh_c)
}

/// The f32 kernels on the vector unit of the active kernel set ([`Kernels::active`]): the
/// polynomial activations run on full-width registers (16 lanes with AVX-512, 8 with AVX2)
/// instead of the baseline SSE2's 4, with bit-identical results.
mod simd {
    use super::{CellStep, NumError, VecF32, cell_bwd, cell_fwd, gate_fwd};

    crate::on_vector_unit! {
        /// [`cell_fwd`] with f32 activations.
        pub(super) fn cell_fwd_f32(
            s: CellStep,
            gates: &mut [f32],
            c: &mut [f32],
            h: &mut [f32],
            tanh_c: &mut [f32],
        ) -> Result<(), NumError> {
            cell_fwd::<f32, VecF32>(s, gates, c, h, tanh_c)
        }
    }

    crate::on_vector_unit! {
        /// [`gate_fwd`] with f32 activations.
        pub(super) fn gate_fwd_f32(
            s: CellStep,
            o_k: &mut [f32],
            q_k: &mut [f32],
            tanh_c: &[f32],
        ) -> Result<(), NumError> {
            gate_fwd::<f32, VecF32>(s, o_k, q_k, tanh_c)
        }
    }

    crate::on_vector_unit! {
        /// [`cell_bwd`] in f32.
        #[allow(clippy::too_many_arguments)]
        pub(super) fn cell_bwd_f32(
            s: CellStep,
            gates: &[f32],
            c: &[f32],
            tanh_c: &[f32],
            d_h: &[f32],
            d_c: &mut [f32],
            d_gates: &mut [f32],
        ) -> Result<(), NumError> {
            cell_bwd::<f32>(s, gates, c, tanh_c, d_h, d_c, d_gates)
        }
    }
}

/// Elements of the step's rows from row `first` of a buffer `width` wide.
fn span(s: &CellStep, first: usize, width: usize) -> std::ops::Range<usize> {
    first * width..(first + s.rows) * width
}

/// The body of [`lstm_cell_fwd`] for one choice of activations.
#[inline(always)]
fn cell_fwd<R: Real, A: Activations<R>>(
    s: CellStep,
    gates: &mut [R],
    c: &mut [R],
    h: &mut [R],
    tanh_c: &mut [R],
) -> Result<(), NumError> {
    let hd = s.hidden;
    let op = "lstm_cell_fwd";
    let g4 = 4 * hd;
    s.check(op)?;
    need(op, gates.len(), s.needs(s.step, g4))?;
    need(op, c.len(), s.needs(s.next, hd))?;
    need(op, h.len(), s.needs(s.next, hd))?;
    need(op, tanh_c.len(), s.needs(s.step, hd))?;
    if hd == 0 || s.rows == 0 {
        return Ok(());
    }
    let gates_t = &mut gates[span(&s, s.step, g4)];
    // `check` puts the state before entirely below the state after.
    let (c_lo, c_hi) = c.split_at_mut(s.next * hd);
    let c_prev = &c_lo[span(&s, s.prev, hd)];
    let c_next = &mut c_hi[..s.rows * hd];
    let h_next = &mut h[span(&s, s.next, hd)];
    let tc_t = &mut tanh_c[span(&s, s.step, hd)];

    let rows = gates_t
        .chunks_exact_mut(g4)
        .zip(c_prev.chunks_exact(hd))
        .zip(c_next.chunks_exact_mut(hd))
        .zip(h_next.chunks_exact_mut(hd))
        .zip(tc_t.chunks_exact_mut(hd));
    for ((((row, cp), cn), hn), tc) in rows {
        // One simple loop per activation: each compiles to full-width SIMD, where a
        // single loop computing all five activations per element does not vectorize.
        let (i_f, rest) = row.split_at_mut(2 * hd);
        let (g_g, o_g) = rest.split_at_mut(hd);
        for v in i_f.iter_mut() {
            *v = A::sigmoid(*v);
        }
        for v in g_g.iter_mut() {
            *v = A::tanh(*v);
        }
        for v in o_g.iter_mut() {
            *v = A::sigmoid(*v);
        }
        let (i_g, f_g) = i_f.split_at(hd);
        // Equal-length views: the indexed loop below then carries no bounds checks.
        let (i_g, f_g, g_g, o_g) = (&i_g[..hd], &f_g[..hd], &g_g[..hd], &o_g[..hd]);
        let (cp, cn, hn, tc) = (&cp[..hd], &mut cn[..hd], &mut hn[..hd], &mut tc[..hd]);
        for j in 0..hd {
            let cv = i_g[j] * g_g[j] + f_g[j] * cp[j];
            let tv = A::tanh(cv);
            cn[j] = cv;
            tc[j] = tv;
            hn[j] = o_g[j] * tv;
        }
    }
    Ok(())
}

/// LSTM cell backward at one step, the derivative of [`lstm_cell_fwd`].
///
/// On entry `d_h` at `s.next` is the complete gradient w.r.t. `h_t` and `d_c` at
/// `s.next` the gradient reaching `c_t` by every path except `h_t` (the next step's
/// forget path and the task gates). With the saved activations `i, f, g, o` and
/// `tanh(c_t)`:
///
/// ```text
/// dc    = d_c_t + d_h_t·o·(1 − tanh²c_t)     total gradient w.r.t. c_t
/// d_a_i = dc·g·i(1−i)           (σ' = σ(1−σ))
/// d_a_f = dc·c_{t-1}·f(1−f)
/// d_a_g = dc·i·(1−g²)           (tanh' = 1 − tanh²)
/// d_a_o = d_h_t·tanh(c_t)·o(1−o)
/// d_c_{t-1} += f·dc             (c_{t-1} feeds c_t through f)
/// ```
///
/// `d_gates` (4H wide) is **written** at `s.step` (the pre-activation gradients, order
/// i, f, g, o); `d_c` at `s.prev` is **accumulated**. `c` is read at `s.prev`
/// (`c_{t-1}`), `gates` and `tanh_c` at `s.step`.
///
/// # Errors
/// [`NumError::ShapeMismatch`] if the state regions overlap ([`CellStep::check`]);
/// [`NumError::BufferTooSmall`] if a buffer does not hold the step's rows.
#[allow(clippy::too_many_arguments)]
pub fn lstm_cell_bwd<R: Real>(
    s: CellStep,
    gates: &[R],
    c: &[R],
    tanh_c: &[R],
    d_h: &[R],
    d_c: &mut [R],
    d_gates: &mut [R],
) -> Result<(), NumError> {
    if let (Some(g), Some(cc), Some(tc), Some(dh), Some(dc), Some(dg)) = (
        R::as_f32(gates),
        R::as_f32(c),
        R::as_f32(tanh_c),
        R::as_f32(d_h),
        R::as_f32_mut(d_c),
        R::as_f32_mut(d_gates),
    ) {
        return simd::cell_bwd_f32(Kernels::active(), s, g, cc, tc, dh, dc, dg);
    }
    cell_bwd(s, gates, c, tanh_c, d_h, d_c, d_gates)
}

/// The body of [`lstm_cell_bwd`].
#[inline(always)]
fn cell_bwd<R: Real>(
    s: CellStep,
    gates: &[R],
    c: &[R],
    tanh_c: &[R],
    d_h: &[R],
    d_c: &mut [R],
    d_gates: &mut [R],
) -> Result<(), NumError> {
    let hd = s.hidden;
    let op = "lstm_cell_bwd";
    let g4 = 4 * hd;
    s.check(op)?;
    need(op, gates.len(), s.needs(s.step, g4))?;
    need(op, c.len(), s.needs(s.prev, hd))?;
    need(op, tanh_c.len(), s.needs(s.step, hd))?;
    need(op, d_h.len(), s.needs(s.next, hd))?;
    need(op, d_c.len(), s.needs(s.next, hd))?;
    need(op, d_gates.len(), s.needs(s.step, g4))?;
    if hd == 0 || s.rows == 0 {
        return Ok(());
    }
    let one = R::one();
    let gates_t = &gates[span(&s, s.step, g4)];
    let d_gates_t = &mut d_gates[span(&s, s.step, g4)];
    let c_prev = &c[span(&s, s.prev, hd)];
    let tc_t = &tanh_c[span(&s, s.step, hd)];
    let dh_t = &d_h[span(&s, s.next, hd)];
    let (dc_lo, dc_hi) = d_c.split_at_mut(s.next * hd);
    let dc_prev = &mut dc_lo[span(&s, s.prev, hd)];
    let dc_next = &dc_hi[..s.rows * hd];

    let rows = gates_t
        .chunks_exact(g4)
        .zip(d_gates_t.chunks_exact_mut(g4))
        .zip(c_prev.chunks_exact(hd))
        .zip(tc_t.chunks_exact(hd))
        .zip(dh_t.chunks_exact(hd))
        .zip(dc_next.chunks_exact(hd))
        .zip(dc_prev.chunks_exact_mut(hd));
    for ((((((row, drow), cp), tc), dh), dcn), dcp) in rows {
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
            let dc = dcn[j] + dh[j] * o * (one - tv * tv);
            d_i[j] = dc * g * i * (one - i);
            d_f[j] = dc * cp[j] * f * (one - f);
            d_g[j] = dc * i * (one - g * g);
            d_o[j] = dh[j] * tv * o * (one - o);
            dcp[j] += f * dc;
        }
    }
    Ok(())
}

/// SC-LSTM task gate forward at one step (paper Eq. 2):
///
/// ```text
/// o^k_t = σ(a)          (a = W_k q^k_{t-1} + U_k x^k_t + b_k, overwritten in place)
/// q^k_t = o^k_t·tanh(c_t)
/// ```
///
/// `o_k` (H wide) is overwritten at `s.step`; `q_k` (H wide) is written at `s.next`;
/// `tanh_c` is read at `s.step`.
///
/// # Errors
/// [`NumError::ShapeMismatch`] if the state regions overlap ([`CellStep::check`]);
/// [`NumError::BufferTooSmall`] if a buffer does not hold the step's rows.
pub fn task_gate_fwd<R: Real>(
    s: CellStep,
    o_k: &mut [R],
    q_k: &mut [R],
    tanh_c: &[R],
) -> Result<(), NumError> {
    if let (Some(o), Some(q), Some(tc)) =
        (R::as_f32_mut(o_k), R::as_f32_mut(q_k), R::as_f32(tanh_c))
    {
        return simd::gate_fwd_f32(Kernels::active(), s, o, q, tc);
    }
    gate_fwd::<R, Libm>(s, o_k, q_k, tanh_c)
}

/// The body of [`task_gate_fwd`] for one choice of activations.
#[inline(always)]
fn gate_fwd<R: Real, A: Activations<R>>(
    s: CellStep,
    o_k: &mut [R],
    q_k: &mut [R],
    tanh_c: &[R],
) -> Result<(), NumError> {
    let hd = s.hidden;
    let op = "task_gate_fwd";
    s.check(op)?;
    need(op, o_k.len(), s.needs(s.step, hd))?;
    need(op, q_k.len(), s.needs(s.next, hd))?;
    need(op, tanh_c.len(), s.needs(s.step, hd))?;
    if hd == 0 || s.rows == 0 {
        return Ok(());
    }
    let o_t = &mut o_k[span(&s, s.step, hd)];
    let q_next = &mut q_k[span(&s, s.next, hd)];
    let tc_t = &tanh_c[span(&s, s.step, hd)];
    for ((o, q), &tv) in o_t.iter_mut().zip(q_next.iter_mut()).zip(tc_t) {
        let ov = A::sigmoid(*o);
        *o = ov;
        *q = ov * tv;
    }
    Ok(())
}

/// SC-LSTM task gate backward at one step, the derivative of [`task_gate_fwd`]. With
/// `d_q` = `d_q_k` at `s.next` (complete gradient w.r.t. `q^k_t`) and the saved
/// `o = o^k_t`:
///
/// ```text
/// d_o_k  = d_q·tanh(c_t)·o(1−o)          written at s.step (pre-activation gradient)
/// d_c_t += d_q·o·(1 − tanh²c_t)          accumulated at s.next (q^k_t depends on c_t)
/// ```
///
/// # Errors
/// [`NumError::ShapeMismatch`] if the state regions overlap ([`CellStep::check`]);
/// [`NumError::BufferTooSmall`] if a buffer does not hold the step's rows.
pub fn task_gate_bwd<R: Real>(
    s: CellStep,
    o_k: &[R],
    tanh_c: &[R],
    d_q_k: &[R],
    d_o_k: &mut [R],
    d_c: &mut [R],
) -> Result<(), NumError> {
    let hd = s.hidden;
    let op = "task_gate_bwd";
    s.check(op)?;
    need(op, o_k.len(), s.needs(s.step, hd))?;
    need(op, tanh_c.len(), s.needs(s.step, hd))?;
    need(op, d_q_k.len(), s.needs(s.next, hd))?;
    need(op, d_o_k.len(), s.needs(s.step, hd))?;
    need(op, d_c.len(), s.needs(s.next, hd))?;
    if hd == 0 || s.rows == 0 {
        return Ok(());
    }
    let one = R::one();
    let o_t = &o_k[span(&s, s.step, hd)];
    let tc_t = &tanh_c[span(&s, s.step, hd)];
    let dq_t = &d_q_k[span(&s, s.next, hd)];
    let do_t = &mut d_o_k[span(&s, s.step, hd)];
    let dc_t = &mut d_c[span(&s, s.next, hd)];
    let lanes = o_t
        .iter()
        .zip(tc_t)
        .zip(dq_t)
        .zip(do_t.iter_mut())
        .zip(dc_t.iter_mut());
    for ((((&o, &tv), &dq), d_o), d_c) in lanes {
        *d_o = dq * tv * o * (one - o);
        *d_c += dq * o * (one - tv * tv);
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
    /// As [`super::lstm_cell_fwd`].
    pub fn lstm_cell_fwd<R: Real>(
        s: CellStep,
        gates: &mut [R],
        c: &mut [R],
        h: &mut [R],
        tanh_c: &mut [R],
    ) -> Result<(), NumError> {
        let hd = s.hidden;
        let op = "lstm_cell_fwd";
        s.check(op)?;
        need(op, gates.len(), s.needs(s.step, 4 * hd))?;
        need(op, c.len(), s.needs(s.next, hd))?;
        need(op, h.len(), s.needs(s.next, hd))?;
        need(op, tanh_c.len(), s.needs(s.step, hd))?;
        for r in 0..s.rows {
            let g0 = (s.step + r) * 4 * hd;
            let cur = (s.step + r) * hd;
            let prev = (s.prev + r) * hd;
            let next = (s.next + r) * hd;
            for j in 0..hd {
                let i_g = gates[g0 + j].sigmoid();
                let f_g = gates[g0 + hd + j].sigmoid();
                let g_g = gates[g0 + 2 * hd + j].tanh();
                let o_g = gates[g0 + 3 * hd + j].sigmoid();
                gates[g0 + j] = i_g;
                gates[g0 + hd + j] = f_g;
                gates[g0 + 2 * hd + j] = g_g;
                gates[g0 + 3 * hd + j] = o_g;
                let c_t = i_g * g_g + f_g * c[prev + j];
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
    /// As [`super::lstm_cell_bwd`].
    pub fn lstm_cell_bwd<R: Real>(
        s: CellStep,
        gates: &[R],
        c: &[R],
        tanh_c: &[R],
        d_h: &[R],
        d_c: &mut [R],
        d_gates: &mut [R],
    ) -> Result<(), NumError> {
        let hd = s.hidden;
        let op = "lstm_cell_bwd";
        s.check(op)?;
        need(op, gates.len(), s.needs(s.step, 4 * hd))?;
        need(op, c.len(), s.needs(s.prev, hd))?;
        need(op, tanh_c.len(), s.needs(s.step, hd))?;
        need(op, d_h.len(), s.needs(s.next, hd))?;
        need(op, d_c.len(), s.needs(s.next, hd))?;
        need(op, d_gates.len(), s.needs(s.step, 4 * hd))?;
        let one = R::one();
        for r in 0..s.rows {
            let g0 = (s.step + r) * 4 * hd;
            let cur = (s.step + r) * hd;
            let prev = (s.prev + r) * hd;
            let next = (s.next + r) * hd;
            for j in 0..hd {
                let (i_g, f_g) = (gates[g0 + j], gates[g0 + hd + j]);
                let (g_g, o_g) = (gates[g0 + 2 * hd + j], gates[g0 + 3 * hd + j]);
                let tc = tanh_c[cur + j];
                let dh = d_h[next + j];
                let dc = d_c[next + j] + dh * o_g * (one - tc * tc);
                d_gates[g0 + j] = dc * g_g * i_g * (one - i_g);
                d_gates[g0 + hd + j] = dc * c[prev + j] * f_g * (one - f_g);
                d_gates[g0 + 2 * hd + j] = dc * i_g * (one - g_g * g_g);
                d_gates[g0 + 3 * hd + j] = dh * tc * o_g * (one - o_g);
                d_c[prev + j] += f_g * dc;
            }
        }
        Ok(())
    }

    /// Reference for [`super::task_gate_fwd`] (paper Eq. 2).
    ///
    /// # Errors
    /// As [`super::task_gate_fwd`].
    pub fn task_gate_fwd<R: Real>(
        s: CellStep,
        o_k: &mut [R],
        q_k: &mut [R],
        tanh_c: &[R],
    ) -> Result<(), NumError> {
        let hd = s.hidden;
        let op = "task_gate_fwd";
        s.check(op)?;
        need(op, o_k.len(), s.needs(s.step, hd))?;
        need(op, q_k.len(), s.needs(s.next, hd))?;
        need(op, tanh_c.len(), s.needs(s.step, hd))?;
        for r in 0..s.rows {
            let cur = (s.step + r) * hd;
            let next = (s.next + r) * hd;
            for j in 0..hd {
                let o = o_k[cur + j].sigmoid();
                o_k[cur + j] = o;
                q_k[next + j] = o * tanh_c[cur + j];
            }
        }
        Ok(())
    }

    /// Reference for [`super::task_gate_bwd`].
    ///
    /// # Errors
    /// As [`super::task_gate_bwd`].
    pub fn task_gate_bwd<R: Real>(
        s: CellStep,
        o_k: &[R],
        tanh_c: &[R],
        d_q_k: &[R],
        d_o_k: &mut [R],
        d_c: &mut [R],
    ) -> Result<(), NumError> {
        let hd = s.hidden;
        let op = "task_gate_bwd";
        s.check(op)?;
        need(op, o_k.len(), s.needs(s.step, hd))?;
        need(op, tanh_c.len(), s.needs(s.step, hd))?;
        need(op, d_q_k.len(), s.needs(s.next, hd))?;
        need(op, d_o_k.len(), s.needs(s.step, hd))?;
        need(op, d_c.len(), s.needs(s.next, hd))?;
        let one = R::one();
        for r in 0..s.rows {
            let cur = (s.step + r) * hd;
            let next = (s.next + r) * hd;
            for j in 0..hd {
                let (o, tc) = (o_k[cur + j], tanh_c[cur + j]);
                let dq = d_q_k[next + j];
                d_o_k[cur + j] = dq * tc * o * (one - o);
                d_c[next + j] += dq * o * (one - tc * tc);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{
        exp_f32, lstm_cell_bwd, lstm_cell_fwd, reference, simd, task_gate_bwd, task_gate_fwd,
    };
    use crate::kernels::Kernels;
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

    /// The packed steps of a batch with these lengths (longest first): per step the
    /// rows running and the three offsets, as the layers compute them.
    fn steps(lens: &[usize], hd: usize) -> Vec<CellStep> {
        let batch = lens.len();
        let t_len = lens.iter().copied().max().unwrap_or(0);
        let mut at = 0;
        let mut prev = 0;
        (0..t_len)
            .map(|t| {
                let rows = lens.iter().filter(|&&l| l > t).count();
                let s = CellStep {
                    rows,
                    hidden: hd,
                    step: at,
                    prev,
                    next: batch + at,
                };
                prev = batch + at;
                at += rows;
                s
            })
            .collect()
    }

    /// Asserts element-wise closeness (`|g − w| ≤ tol·(1 + |w|)`), printing the index.
    fn assert_close<R: Real>(what: &str, lens: &[usize], got: &[R], want: &[R], tol: f64) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
            let (g, w) = (g.to_f64(), w.to_f64());
            let ok = (g - w).abs() <= tol * (1.0 + w.abs());
            assert!(
                ok,
                "{what} {} lens {lens:?} index {k}: fast {g} vs reference {w}",
                R::NAME
            );
        }
    }

    /// Runs a whole packed batch forward and backward with both kernel sets and
    /// compares every buffer; outputs start as NaN so an unwritten element fails. f64
    /// checks the library-precision path (tolerance 1e-12), f32 the vectorized
    /// activations.
    fn compare(lens: &[usize], hd: usize) {
        compare_as::<f64>(lens, hd, 1e-12);
        compare_as::<f32>(lens, hd, 2e-6);
    }

    fn compare_as<R: Real>(lens: &[usize], hd: usize, tol: f64) {
        let bsz = lens.len();
        let n: usize = lens.iter().sum();
        let plan = steps(lens, hd);
        let pre = fill::<R>(n * 4 * hd, 0.3);
        let pre_k = fill::<R>(n * hd, 1.1);
        let d_h = fill::<R>((bsz + n) * hd, 2.3);
        let d_q = fill::<R>((bsz + n) * hd, 3.7);
        let nan = R::nan();
        let run = |fast: bool| {
            let mut gates = pre.clone();
            let mut o_k = pre_k.clone();
            let mut c = vec![nan; (bsz + n) * hd];
            let mut h = vec![nan; (bsz + n) * hd];
            let mut q = vec![nan; (bsz + n) * hd];
            c[..bsz * hd].fill(R::zero());
            h[..bsz * hd].fill(R::zero());
            q[..bsz * hd].fill(R::zero());
            let mut tc = vec![nan; n * hd];
            for &s in &plan {
                if fast {
                    lstm_cell_fwd(s, &mut gates, &mut c, &mut h, &mut tc).unwrap();
                    task_gate_fwd(s, &mut o_k, &mut q, &tc).unwrap();
                } else {
                    reference::lstm_cell_fwd(s, &mut gates, &mut c, &mut h, &mut tc).unwrap();
                    reference::task_gate_fwd(s, &mut o_k, &mut q, &tc).unwrap();
                }
            }
            let mut d_c = fill::<R>((bsz + n) * hd, 5.1);
            let mut d_gates = vec![nan; n * 4 * hd];
            let mut d_o = vec![nan; n * hd];
            for &s in plan.iter().rev() {
                if fast {
                    task_gate_bwd(s, &o_k, &tc, &d_q, &mut d_o, &mut d_c).unwrap();
                    lstm_cell_bwd(s, &gates, &c, &tc, &d_h, &mut d_c, &mut d_gates).unwrap();
                } else {
                    reference::task_gate_bwd(s, &o_k, &tc, &d_q, &mut d_o, &mut d_c).unwrap();
                    reference::lstm_cell_bwd(s, &gates, &c, &tc, &d_h, &mut d_c, &mut d_gates)
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
                "{name} lens {lens:?}: unwritten (NaN) entry"
            );
            assert_close(name, lens, g, w, tol);
        }
    }

    #[test]
    fn every_vector_unit_gives_the_same_f32_bits() {
        let (lens, hd) = ([9usize, 7, 4, 1], 37);
        let (bsz, n) = (lens.len(), lens.iter().sum::<usize>());
        let plan = steps(&lens, hd);
        let run = |kernels: Kernels| {
            let mut gates = fill::<f32>(n * 4 * hd, 0.3);
            let mut o_k = fill::<f32>(n * hd, 1.1);
            let mut c = vec![f32::NAN; (bsz + n) * hd];
            let mut h = vec![f32::NAN; (bsz + n) * hd];
            let mut q = vec![f32::NAN; (bsz + n) * hd];
            c[..bsz * hd].fill(0.0);
            h[..bsz * hd].fill(0.0);
            let mut tc = vec![f32::NAN; n * hd];
            for &s in &plan {
                simd::cell_fwd_f32(kernels, s, &mut gates, &mut c, &mut h, &mut tc).unwrap();
                simd::gate_fwd_f32(kernels, s, &mut o_k, &mut q, &tc).unwrap();
            }
            let d_h = fill::<f32>((bsz + n) * hd, 2.3);
            let mut d_c = fill::<f32>((bsz + n) * hd, 5.1);
            let mut d_gates = vec![f32::NAN; n * 4 * hd];
            for &s in plan.iter().rev() {
                simd::cell_bwd_f32(kernels, s, &gates, &c, &tc, &d_h, &mut d_c, &mut d_gates)
                    .unwrap();
            }
            [gates, c, h, tc, o_k, q, d_c, d_gates]
                .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
        };
        let baseline = run(Kernels::Portable);
        for kernels in Kernels::available() {
            assert!(run(kernels) == baseline, "{}", kernels.name());
        }
    }

    #[test]
    fn fast_matches_reference_size_one() {
        compare(&[1], 1);
    }

    #[test]
    fn fast_matches_reference_odd_sizes_with_finished_sentences() {
        compare(&[3, 2, 1], 3);
        compare(&[5, 4, 0], 7);
    }

    #[test]
    fn fast_matches_reference_larger() {
        compare(&[9, 9, 7, 5, 2], 33);
    }

    #[test]
    fn a_step_touches_only_its_rows() {
        // Step 1 of lengths [3, 2, 1]: 2 rows at step row 3, state before at 3, after at 6.
        let hd = 5;
        let s = steps(&[3, 2, 1], hd)[1];
        assert_eq!((s.rows, s.step, s.prev, s.next), (2, 3, 3, 6));
        let (n, states) = (6, 9);
        let mut gates = fill::<f64>(n * 4 * hd, 0.5);
        let mut c = vec![f64::NAN; states * hd];
        c[s.prev * hd..(s.prev + 2) * hd].fill(0.25);
        let mut h = vec![f64::NAN; states * hd];
        let mut tc = vec![f64::NAN; n * hd];
        let mut o_k = fill::<f64>(n * hd, 0.9);
        let mut q = vec![f64::NAN; states * hd];
        lstm_cell_fwd(s, &mut gates, &mut c, &mut h, &mut tc).unwrap();
        task_gate_fwd(s, &mut o_k, &mut q, &tc).unwrap();
        // Rows holding numbers: the ones the step wrote (and, for `c`, the state before).
        let written = |buf: &[f64]| -> Vec<usize> {
            (0..buf.len() / hd)
                .filter(|&r| buf[r * hd..(r + 1) * hd].iter().all(|v| !v.is_nan()))
                .collect()
        };
        assert_eq!(written(&h), vec![6, 7]);
        assert_eq!(written(&q), vec![6, 7]);
        assert_eq!(written(&tc), vec![3, 4]);
        assert_eq!(written(&c), vec![3, 4, 6, 7]);
        let mut d_gates = vec![f64::NAN; n * 4 * hd];
        let mut d_c = vec![f64::NAN; states * hd];
        d_c[s.prev * hd..(s.next + 2) * hd].fill(0.0);
        let d_h = vec![1.0; states * hd];
        lstm_cell_bwd(s, &gates, &c, &tc, &d_h, &mut d_c, &mut d_gates).unwrap();
        let rows: Vec<usize> = (0..n)
            .filter(|&r| {
                d_gates[r * 4 * hd..(r + 1) * 4 * hd]
                    .iter()
                    .all(|v| !v.is_nan())
            })
            .collect();
        assert_eq!(rows, vec![3, 4]);
        assert!(
            d_c[s.prev * hd..(s.prev + 2) * hd]
                .iter()
                .all(|&v| v != 0.0)
        );
        assert!(
            d_c[(s.prev + 2) * hd..s.next * hd]
                .iter()
                .all(|&v| v == 0.0)
        );
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
            rows: 1,
            hidden: 2,
            step: 0,
            prev: 0,
            next: 1,
        };
        lstm_cell_fwd(s, &mut gates, &mut c, &mut h, &mut tc).unwrap();
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
            rows: 1,
            hidden: 1,
            step: 0,
            prev: 0,
            next: 1,
        };
        let mut gates = vec![0.0f64; 4];
        let mut c = vec![0.8, f64::NAN];
        let mut h = vec![0.0, f64::NAN];
        let mut tc = vec![f64::NAN];
        lstm_cell_fwd(s, &mut gates, &mut c, &mut h, &mut tc).unwrap();
        assert_eq!(gates, vec![0.5, 0.5, 0.0, 0.5]);
        assert!((c[1] - 0.4).abs() < 1e-15);
        assert!((h[1] - 0.5 * 0.4f64.tanh()).abs() < 1e-15);
    }

    #[test]
    fn overlapping_states_are_rejected() {
        let s = CellStep {
            rows: 3,
            hidden: 2,
            step: 0,
            prev: 0,
            next: 2,
        };
        let mut buf = vec![0.0f64; 100];
        let (mut c, mut h, mut tc) = (buf.clone(), buf.clone(), buf.clone());
        let err = lstm_cell_fwd(s, &mut buf, &mut c, &mut h, &mut tc);
        assert!(matches!(
            err,
            Err(NumError::ShapeMismatch {
                op: "lstm_cell_fwd",
                ..
            })
        ));
        let err = reference::lstm_cell_bwd(s, &buf, &c, &tc, &h, &mut c.clone(), &mut buf.clone());
        assert!(matches!(
            err,
            Err(NumError::ShapeMismatch {
                op: "lstm_cell_bwd",
                ..
            })
        ));
    }

    #[test]
    fn short_buffers_are_rejected() {
        let s = CellStep {
            rows: 2,
            hidden: 3,
            step: 2,
            prev: 2,
            next: 4,
        };
        let mut small = vec![0.0f64; 5];
        let mut other = vec![0.0f64; 100];
        let mut tc = vec![0.0f64; 100];
        let err = lstm_cell_fwd(s, &mut small, &mut other, &mut vec![0.0; 100], &mut tc);
        assert!(matches!(
            err,
            Err(NumError::BufferTooSmall {
                op: "lstm_cell_fwd",
                ..
            })
        ));
        let err = task_gate_fwd(s, &mut other, &mut small, &tc);
        assert!(matches!(
            err,
            Err(NumError::BufferTooSmall {
                op: "task_gate_fwd",
                ..
            })
        ));
        let mut d = vec![0.0f64; 100];
        let err = task_gate_bwd(s, &tc, &tc, &small, &mut d, &mut other);
        assert!(matches!(
            err,
            Err(NumError::BufferTooSmall {
                op: "task_gate_bwd",
                ..
            })
        ));
        let mut dg = vec![0.0f64; 100];
        let err = lstm_cell_bwd(s, &tc, &small, &tc, &tc, &mut d, &mut dg);
        assert!(matches!(
            err,
            Err(NumError::BufferTooSmall {
                op: "lstm_cell_bwd",
                ..
            })
        ));
    }
}
