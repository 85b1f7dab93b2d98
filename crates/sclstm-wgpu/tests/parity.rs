//! Kernel parity, WGSL against the CPU backend, one generic body per kernel run on both.
//!
//! Sizes: 1, odd, not a multiple of the workgroup (64 × 64 tiles for `gemm`, 16 × 64
//! for `gemm_small_m`, 256 lanes for the pointwise kernels), and more than one workgroup
//! along every grid dimension. The gemm kernel is chosen by m (`SMALL_M_MAX`), so the
//! small-m sweep covers m = 1, 10, 16, 17 and 32, the large sweep m > 32.
//! The step kernels run the time loop of a packed batch ([`packed_steps`]: rows shrinking
//! from step to step, state rows at `prev` / `next`) with odd hidden sizes.
//! Outputs start as NaN so an unwritten element fails; regions a kernel must not touch
//! (other steps' rows included) hold [`PAD`] or the NaN of a later step and are checked
//! bit for bit.
//!
//! Tolerances (abs + rel·|cpu|):
//! * gemm on integer inputs in -4..=4: exact (every partial sum is an integer < 2^24).
//! * gemm on uniform floats in [-1, 1): 1e-5·max(1, k/300) + 1e-5·|cpu| (summation
//!   order differs, and the rounding of a sum grows with its length k).
//! * pointwise kernels: 2e-6 + 2e-5·|cpu|: exp on the GPU is not correctly rounded, and
//!   tanh near 0 has a large *relative* error, hence the absolute part.

use sclstm_core::{Backend, BackendErrorKind, CellStep, Gemm, NumError, Packed};
use sclstm_wgpu::{SMALL_M_MAX, WgpuBackend, WgpuContext, WgpuError};

use crate::common::{
    PAD, TestResult, assert_close, cpu, gpu, own_gpu, packed_steps, rng, small_ints, uniform,
};

const CELL_ABS: f32 = 2e-6;
const CELL_REL: f32 = 2e-5;

/// Asserts that `got` equals `input` bit for bit outside `written`.
fn assert_untouched(what: &str, got: &[f32], input: &[f32], written: std::ops::Range<usize>) {
    for (i, (g, w)) in got.iter().zip(input).enumerate() {
        if !written.contains(&i) {
            assert!(
                g.to_bits() == w.to_bits(),
                "{what}: index {i} outside {written:?} changed from {w} to {g}"
            );
        }
    }
}

/// Copies `region` into a buffer of `pad_before + region + pad_after` elements of [`PAD`].
fn padded(pad_before: usize, region: &[f32], pad_after: usize) -> Vec<f32> {
    let mut v = vec![PAD; pad_before];
    v.extend_from_slice(region);
    v.extend(std::iter::repeat_n(PAD, pad_after));
    v
}

fn gemm_on<B: Backend<Elem = f32>>(
    be: &B,
    g: &Gemm,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    c: &[f32],
) -> Result<Vec<f32>, NumError> {
    let a = be.upload(a)?;
    let b = be.upload(b)?;
    let bias = bias.map(|x| be.upload(x)).transpose()?;
    let mut c = be.upload(c)?;
    be.gemm(g, &a, &b, bias.as_ref(), &mut c)?;
    be.download(&c)
}

/// One gemm configuration on both backends; returns nothing, asserts everything.
fn gemm_case(g: Gemm, with_bias: bool, ints: bool, seed: u64) -> TestResult {
    let mut r = rng(seed);
    let mut draw = |len: usize| {
        if ints {
            small_ints(&mut r, len)
        } else {
            uniform(&mut r, len, 1.0)
        }
    };
    let a = padded(g.a_off, &draw(g.m * g.k), 2);
    let b = padded(g.b_off, &draw(g.k * g.n), 3);
    let bias = with_bias.then(|| draw(g.n));
    let region = if g.accumulate {
        draw(g.m * g.n)
    } else {
        vec![f32::NAN; g.m * g.n]
    };
    let c = padded(g.c_off, &region, 5);
    let want = gemm_on(&cpu(), &g, &a, &b, bias.as_deref(), &c)?;
    let got = gemm_on(gpu(), &g, &a, &b, bias.as_deref(), &c)?;
    let what = format!("gemm {g:?} bias={with_bias}");
    assert_untouched(&what, &got, &c, g.c_off..g.c_off + g.m * g.n);
    let (abs, rel) = if ints {
        (0.0, 0.0)
    } else {
        (1e-5 * (g.k as f32 / 300.0).max(1.0), 1e-5)
    };
    assert_close(&what, &got, &want, abs, rel);
    Ok(())
}

/// Every transpose / accumulate / bias combination at each `(m, n, k)`, with offsets,
/// compared exactly on integer-valued data; seeds count up from `seed`.
fn all_layouts_exact(sizes: &[(usize, usize, usize)], mut seed: u64) -> TestResult {
    for &(m, n, k) in sizes {
        for trans_a in [false, true] {
            for trans_b in [false, true] {
                for accumulate in [false, true] {
                    for with_bias in [false, true] {
                        seed += 1;
                        let g = Gemm {
                            trans_a,
                            trans_b,
                            accumulate,
                            a_off: 3,
                            b_off: 5,
                            c_off: 7,
                            ..Gemm::new(m, n, k)
                        };
                        gemm_case(g, with_bias, true, seed)?;
                    }
                }
            }
        }
    }
    Ok(())
}

#[test]
fn gemm_parity_all_layouts_exact() -> TestResult {
    // (m, n, k): 1; odd; k = 0 (bias only); tiles not full; > 1 tile along m and n.
    let sizes = [(1, 1, 1), (3, 5, 7), (2, 3, 0), (65, 67, 17), (130, 70, 33)];
    all_layouts_exact(&sizes, 0)
}

#[test]
fn gemm_parity_floats() -> TestResult {
    // Gate-projection-like shape: long k, n not a multiple of 64.
    gemm_case(Gemm::new(37, 129, 300), true, false, 100)?;
    let g = Gemm {
        trans_a: true,
        accumulate: true,
        ..Gemm::new(40, 68, 257)
    };
    gemm_case(g, false, false, 101)
}

/// `gemm_small_m` (m ≤ `SMALL_M_MAX`): one 16-row tile, a partial one, two tiles, the
/// largest m it serves; n below, at and above the 64-column tile; k below the four-way
/// split, not a multiple of 4, and long.
#[test]
fn gemm_small_m_parity_all_layouts_exact() -> TestResult {
    let sizes = [
        (1, 1, 1),
        (1, 130, 9),
        (10, 67, 33),
        (16, 64, 3),
        (17, 129, 301),
        (32, 65, 18),
    ];
    assert!(sizes.iter().all(|&(m, _, _)| m <= SMALL_M_MAX));
    all_layouts_exact(&sizes, 1000)
}

#[test]
fn gemm_small_m_parity_floats() -> TestResult {
    // The per-step recurrent product of the paper config: h_{t-1} (10 × 300) times
    // W_hhᵀ (300 × 1200) added into step t's gates.
    let rec = Gemm {
        a_off: 3 * 10 * 300,
        c_off: 3 * 10 * 1200,
        accumulate: true,
        ..Gemm::new(10, 1200, 300)
    };
    gemm_case(rec, false, false, 1100)?;
    // Its backward (d_gates · W_hh), and a stored-transposed B with bias.
    gemm_case(Gemm::new(10, 300, 1200), false, false, 1101)?;
    let g = Gemm {
        trans_b: true,
        ..Gemm::new(17, 70, 129)
    };
    gemm_case(g, true, false, 1102)
}

#[test]
fn gemm_rejects_short_buffers_like_the_cpu() -> TestResult {
    let g = Gemm {
        c_off: 1,
        ..Gemm::new(2, 2, 2)
    };
    let err_cpu = gemm_on(&cpu(), &g, &[1.0; 4], &[1.0; 4], None, &[0.0; 4]).unwrap_err();
    let err_gpu = gemm_on(gpu(), &g, &[1.0; 4], &[1.0; 4], None, &[0.0; 4]).unwrap_err();
    assert_eq!(
        err_gpu,
        NumError::BufferTooSmall {
            op: "gemm (c)",
            len: 4,
            needed: 5
        }
    );
    assert_eq!(err_cpu, err_gpu);
    Ok(())
}

/// Sentences running at each step of the packed test sequence (`n_t`, longest first):
/// the rows shrink, so from step 1 on `next` lies past `prev + rows` wherever a
/// sentence ended at the step before.
const RUNNING: [usize; 5] = [5, 4, 4, 2, 1];
/// Batch size `B = n_0`: rows of the initial state.
const BATCH: usize = RUNNING[0];
/// Rows of the step buffers: one per token, `Σ n_t`.
const TOKENS: usize = 16;
/// Rows of [`PAD`] after the last row of every buffer, which no step may touch.
const EXTRA_ROWS: usize = 2;
/// Hidden sizes: 1; odd; 5·53 = 265 lanes at the widest step (two workgroups, not a
/// multiple of 256); 5·301 = 1505 (six workgroups) down to 301 at the last step.
const HIDDEN: [usize; 4] = [1, 5, 53, 301];

/// `n` copies of NaN: an output region, so an element left unwritten fails.
fn nan(n: usize) -> Vec<f32> {
    vec![f32::NAN; n]
}

/// `n` copies of [`PAD`]: a region the kernels must not touch.
fn pad(n: usize) -> Vec<f32> {
    vec![PAD; n]
}

/// Checks one output of a step kernel against the CPU: the `s.rows` rows (`width`
/// wide) from row `first` of `got` are close to `want`'s, and every other element is
/// `input`'s, bit for bit (other steps' rows, the initial state, the rows after the end).
fn check_rows(
    what: &str,
    s: &CellStep,
    (first, width): (usize, usize),
    got: &[f32],
    want: &[f32],
    input: &[f32],
) {
    let written = first * width..(first + s.rows) * width;
    assert_untouched(what, got, input, written.clone());
    assert_close(
        what,
        &got[written.clone()],
        &want[written],
        CELL_ABS,
        CELL_REL,
    );
}

#[test]
fn packed_test_steps_follow_the_core_layout() {
    assert_eq!(RUNNING.iter().sum::<usize>(), TOKENS);
    let steps = packed_steps(&RUNNING, 3);
    let at = |s: &CellStep| (s.rows, s.step, s.prev, s.next);
    let got: Vec<_> = steps.iter().map(at).collect();
    assert_eq!(
        got,
        [
            (5, 0, 0, 5),
            (4, 5, 5, 10),
            (4, 9, 10, 14),
            (2, 13, 14, 18),
            (1, 15, 18, 20)
        ]
    );
    for s in &steps {
        s.check("packed_steps")
            .expect("the state regions never overlap");
    }
}

fn lstm_fwd_on<B: Backend<Elem = f32>>(
    be: &B,
    s: CellStep,
    host: [&[f32]; 4],
) -> Result<[Vec<f32>; 4], NumError> {
    let [gates, c, h, tanh_c] = host;
    let (mut gates, mut c) = (be.upload(gates)?, be.upload(c)?);
    let (mut h, mut tanh_c) = (be.upload(h)?, be.upload(tanh_c)?);
    be.lstm_cell_fwd(s, &mut gates, &mut c, &mut h, &mut tanh_c)?;
    Ok([
        be.download(&gates)?,
        be.download(&c)?,
        be.download(&h)?,
        be.download(&tanh_c)?,
    ])
}

/// The forward time loop over the packed sequence, one step at a time on the same host
/// state for both backends (the CPU's result feeds the next step): each step reads the
/// state its predecessor wrote at `prev` and writes only its own rows.
#[test]
fn lstm_cell_fwd_parity() -> TestResult {
    for (seed, hd) in HIDDEN.into_iter().enumerate() {
        let mut r = rng(200 + seed as u64);
        let mut gates = [
            uniform(&mut r, TOKENS * 4 * hd, 3.0),
            pad(EXTRA_ROWS * 4 * hd),
        ]
        .concat();
        // The initial state c_0 is read; h_0 is not (the cell leaves it alone).
        let c0 = uniform(&mut r, BATCH * hd, 2.0);
        let mut c = [c0, nan(TOKENS * hd), pad(EXTRA_ROWS * hd)].concat();
        let mut h = [pad(BATCH * hd), nan(TOKENS * hd), pad(EXTRA_ROWS * hd)].concat();
        let mut tanh_c = [nan(TOKENS * hd), pad(EXTRA_ROWS * hd)].concat();
        for (t, s) in packed_steps(&RUNNING, hd).into_iter().enumerate() {
            let inputs = [&gates[..], &c, &h, &tanh_c];
            let want = lstm_fwd_on(&cpu(), s, inputs)?;
            let got = lstm_fwd_on(gpu(), s, inputs)?;
            let rows = [(s.step, 4 * hd), (s.next, hd), (s.next, hd), (s.step, hd)];
            for (k, name) in ["gates", "c", "h", "tanh_c"].into_iter().enumerate() {
                let what = format!("lstm_cell_fwd {name} H={hd} t={t} {s:?}");
                check_rows(&what, &s, rows[k], &got[k], &want[k], inputs[k]);
            }
            [gates, c, h, tanh_c] = want;
        }
    }
    Ok(())
}

fn lstm_bwd_on<B: Backend<Elem = f32>>(
    be: &B,
    s: CellStep,
    host: [&[f32]; 6],
) -> Result<[Vec<f32>; 2], NumError> {
    let [gates, c, tanh_c, d_h, d_c, d_gates] = host;
    let (gates, c, tanh_c) = (be.upload(gates)?, be.upload(c)?, be.upload(tanh_c)?);
    let d_h = be.upload(d_h)?;
    let (mut d_c, mut d_gates) = (be.upload(d_c)?, be.upload(d_gates)?);
    be.lstm_cell_bwd(s, &gates, &c, &tanh_c, &d_h, &mut d_c, &mut d_gates)?;
    Ok([be.download(&d_c)?, be.download(&d_gates)?])
}

/// BPTT over the packed sequence, last step first: each step overwrites its own rows
/// of `d_gates` and adds into `d_c` at `prev` the gradient the next step backward reads
/// at its `next`.
#[test]
fn lstm_cell_bwd_parity() -> TestResult {
    for (seed, hd) in HIDDEN.into_iter().enumerate() {
        let mut r = rng(300 + seed as u64);
        // Saved activations: i, f, o in (0, 1), g and tanh(c) in (-1, 1).
        let acts: Vec<f32> = uniform(&mut r, TOKENS * 4 * hd, 1.0)
            .into_iter()
            .enumerate()
            .map(|(i, v)| if (i / hd) % 4 == 2 { v } else { v.abs() })
            .collect();
        let gates = [acts, pad(EXTRA_ROWS * 4 * hd)].concat();
        let state = BATCH + TOKENS;
        let c = [uniform(&mut r, state * hd, 2.0), pad(EXTRA_ROWS * hd)].concat();
        let tanh_c = [uniform(&mut r, TOKENS * hd, 1.0), pad(EXTRA_ROWS * hd)].concat();
        let d_h = [uniform(&mut r, state * hd, 1.0), pad(EXTRA_ROWS * hd)].concat();
        let mut d_c = [uniform(&mut r, state * hd, 1.0), pad(EXTRA_ROWS * hd)].concat();
        let mut d_gates = [nan(TOKENS * 4 * hd), pad(EXTRA_ROWS * 4 * hd)].concat();
        for (t, s) in packed_steps(&RUNNING, hd).into_iter().enumerate().rev() {
            let inputs = [&gates[..], &c, &tanh_c, &d_h, &d_c, &d_gates];
            let want = lstm_bwd_on(&cpu(), s, inputs)?;
            let got = lstm_bwd_on(gpu(), s, inputs)?;
            let what = format!("lstm_cell_bwd H={hd} t={t} {s:?}");
            let rows = [(s.prev, hd), (s.step, 4 * hd)];
            for (k, name) in ["d_c", "d_gates"].into_iter().enumerate() {
                let what = format!("{what} {name}");
                check_rows(&what, &s, rows[k], &got[k], &want[k], inputs[4 + k]);
            }
            [d_c, d_gates] = want;
        }
    }
    Ok(())
}

fn task_fwd_on<B: Backend<Elem = f32>>(
    be: &B,
    s: CellStep,
    host: [&[f32]; 3],
) -> Result<[Vec<f32>; 2], NumError> {
    let [o_k, q_k, tanh_c] = host;
    let (mut o_k, mut q_k) = (be.upload(o_k)?, be.upload(q_k)?);
    let tanh_c = be.upload(tanh_c)?;
    be.task_gate_fwd(s, &mut o_k, &mut q_k, &tanh_c)?;
    Ok([be.download(&o_k)?, be.download(&q_k)?])
}

#[test]
fn task_gate_fwd_parity() -> TestResult {
    for (seed, hd) in HIDDEN.into_iter().enumerate() {
        let mut r = rng(400 + seed as u64);
        let mut o_k = [uniform(&mut r, TOKENS * hd, 4.0), pad(EXTRA_ROWS * hd)].concat();
        // The gate never reads q_{t-1}: the initial state must stay as it is.
        let mut q_k = [pad(BATCH * hd), nan(TOKENS * hd), pad(EXTRA_ROWS * hd)].concat();
        let tanh_c = [uniform(&mut r, TOKENS * hd, 1.0), pad(EXTRA_ROWS * hd)].concat();
        for (t, s) in packed_steps(&RUNNING, hd).into_iter().enumerate() {
            let inputs = [&o_k[..], &q_k, &tanh_c];
            let want = task_fwd_on(&cpu(), s, inputs)?;
            let got = task_fwd_on(gpu(), s, inputs)?;
            let what = format!("task_gate_fwd H={hd} t={t} {s:?}");
            let rows = [(s.step, hd), (s.next, hd)];
            for (k, name) in ["o_k", "q_k"].into_iter().enumerate() {
                let what = format!("{what} {name}");
                check_rows(&what, &s, rows[k], &got[k], &want[k], inputs[k]);
            }
            [o_k, q_k] = want;
        }
    }
    Ok(())
}

fn task_bwd_on<B: Backend<Elem = f32>>(
    be: &B,
    s: CellStep,
    host: [&[f32]; 5],
) -> Result<[Vec<f32>; 2], NumError> {
    let [o_k, tanh_c, d_q_k, d_o_k, d_c] = host;
    let (o_k, tanh_c, d_q_k) = (be.upload(o_k)?, be.upload(tanh_c)?, be.upload(d_q_k)?);
    let (mut d_o_k, mut d_c) = (be.upload(d_o_k)?, be.upload(d_c)?);
    be.task_gate_bwd(s, &o_k, &tanh_c, &d_q_k, &mut d_o_k, &mut d_c)?;
    Ok([be.download(&d_o_k)?, be.download(&d_c)?])
}

#[test]
fn task_gate_bwd_parity() -> TestResult {
    for (seed, hd) in HIDDEN.into_iter().enumerate() {
        let mut r = rng(500 + seed as u64);
        let state = BATCH + TOKENS;
        let o_k: Vec<f32> = uniform(&mut r, TOKENS * hd, 1.0)
            .iter()
            .map(|v| v.abs())
            .chain(pad(EXTRA_ROWS * hd))
            .collect();
        let tanh_c = [uniform(&mut r, TOKENS * hd, 1.0), pad(EXTRA_ROWS * hd)].concat();
        let d_q_k = [uniform(&mut r, state * hd, 1.0), pad(EXTRA_ROWS * hd)].concat();
        let mut d_o_k = [nan(TOKENS * hd), pad(EXTRA_ROWS * hd)].concat();
        let mut d_c = [uniform(&mut r, state * hd, 1.0), pad(EXTRA_ROWS * hd)].concat();
        for (t, s) in packed_steps(&RUNNING, hd).into_iter().enumerate().rev() {
            let inputs = [&o_k[..], &tanh_c, &d_q_k, &d_o_k, &d_c];
            let want = task_bwd_on(&cpu(), s, inputs)?;
            let got = task_bwd_on(gpu(), s, inputs)?;
            let what = format!("task_gate_bwd H={hd} t={t} {s:?}");
            let rows = [(s.step, hd), (s.next, hd)];
            for (k, name) in ["d_o_k", "d_c"].into_iter().enumerate() {
                let what = format!("{what} {name}");
                check_rows(&what, &s, rows[k], &got[k], &want[k], inputs[3 + k]);
            }
            [d_o_k, d_c] = want;
        }
    }
    Ok(())
}

/// Buffer lengths for [`cell_kernel_errors`], in each kernel's argument order.
#[derive(Debug, Clone, Copy)]
struct CellLens {
    lstm_fwd: [usize; 4],
    lstm_bwd: [usize; 6],
    task_fwd: [usize; 3],
    task_bwd: [usize; 5],
}

impl CellLens {
    /// Every buffer exactly as long as `s` needs: `gates` / `d_gates` to the step's last
    /// row, 4H wide; the other step buffers H wide; the state buffers to row `next + rows`
    /// (`c` in the backward to `prev + rows`, the only rows it reads).
    fn fitting(s: &CellStep) -> Self {
        let (hd, rows) = (s.hidden, s.rows);
        let step4 = (s.step + rows) * 4 * hd;
        let step1 = (s.step + rows) * hd;
        let prev = (s.prev + rows) * hd;
        let next = (s.next + rows) * hd;
        CellLens {
            lstm_fwd: [step4, next, next, step1],
            lstm_bwd: [step4, prev, step1, next, next, step4],
            task_fwd: [step1, next, step1],
            task_bwd: [step1, step1, next, step1, next],
        }
    }
}

/// `N` zero buffers of the given lengths.
fn zero_bufs<B: Backend<Elem = f32>, const N: usize>(
    be: &B,
    lens: [usize; N],
) -> Result<[B::Buf; N], NumError> {
    let bufs = lens
        .iter()
        .map(|&n| be.zeros(n))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(bufs.try_into().ok().expect("one buffer per length"))
}

/// Runs the four step kernels on zero buffers of the given lengths and returns their
/// errors (`None` where one succeeded).
fn cell_kernel_errors<B: Backend<Elem = f32>>(
    be: &B,
    s: CellStep,
    lens: &CellLens,
) -> Result<[Option<NumError>; 4], NumError> {
    let [mut gates, mut c, mut h, mut tanh_c] = zero_bufs(be, lens.lstm_fwd)?;
    let fwd = be.lstm_cell_fwd(s, &mut gates, &mut c, &mut h, &mut tanh_c);
    let [gates, c, tanh_c, d_h, mut d_c, mut d_gates] = zero_bufs(be, lens.lstm_bwd)?;
    let bwd = be.lstm_cell_bwd(s, &gates, &c, &tanh_c, &d_h, &mut d_c, &mut d_gates);
    let [mut o_k, mut q_k, tanh_c] = zero_bufs(be, lens.task_fwd)?;
    let task_fwd = be.task_gate_fwd(s, &mut o_k, &mut q_k, &tanh_c);
    let [o_k, tanh_c, d_q_k, mut d_o_k, mut d_c] = zero_bufs(be, lens.task_bwd)?;
    let task_bwd = be.task_gate_bwd(s, &o_k, &tanh_c, &d_q_k, &mut d_o_k, &mut d_c);
    be.sync()?;
    Ok([fwd, bwd, task_fwd, task_bwd].map(Result::err))
}

const CELL_OPS: [&str; 4] = [
    "lstm_cell_fwd",
    "lstm_cell_bwd",
    "task_gate_fwd",
    "task_gate_bwd",
];

/// Overlapping state regions (`next < prev + rows`) are refused with `ShapeMismatch`
/// before any buffer length is looked at; buffers of exactly the needed length are
/// accepted, one element less is `BufferTooSmall`. The CPU backend fails alike.
#[test]
fn cell_kernels_reject_overlapping_steps_and_short_buffers() -> TestResult {
    let cpu = cpu();
    let overlapping = CellStep {
        rows: 3,
        hidden: 2,
        step: 0,
        prev: 1,
        next: 3,
    };
    let empty = CellLens {
        lstm_fwd: [0; 4],
        lstm_bwd: [0; 6],
        task_fwd: [0; 3],
        task_bwd: [0; 5],
    };
    for lens in [CellLens::fitting(&overlapping), empty] {
        let got = cell_kernel_errors(gpu(), overlapping, &lens)?;
        let want = CELL_OPS.map(|op| {
            Some(NumError::ShapeMismatch {
                op,
                lhs: vec![1, 3],
                rhs: vec![3],
            })
        });
        assert_eq!(got, want, "{lens:?}");
        assert_eq!(
            cell_kernel_errors(&cpu, overlapping, &lens)?,
            got,
            "{lens:?}"
        );
    }

    // Adjacent regions (next = prev + rows) are fine, and so is a gap after `prev`.
    let s = CellStep {
        rows: 2,
        hidden: 3,
        step: 4,
        prev: 1,
        next: 3,
    };
    for s in [s, CellStep { next: 6, ..s }] {
        let fitting = CellLens::fitting(&s);
        assert_eq!(
            cell_kernel_errors(gpu(), s, &fitting)?,
            [None, None, None, None]
        );
        // One buffer per kernel one element short, the others fitting: a step buffer
        // (gates, d_gates, o_k) or the state the kernel writes (h, d_c, q_k, d_c).
        for (k, short) in [
            (0, 0),
            (0, 2),
            (1, 5),
            (1, 4),
            (2, 0),
            (2, 1),
            (3, 3),
            (3, 4),
        ] {
            let mut lens = fitting;
            let len = match k {
                0 => &mut lens.lstm_fwd[short],
                1 => &mut lens.lstm_bwd[short],
                2 => &mut lens.task_fwd[short],
                _ => &mut lens.task_bwd[short],
            };
            *len -= 1;
            let needed = *len + 1;
            let got = cell_kernel_errors(gpu(), s, &lens)?;
            let mut want = [None, None, None, None];
            want[k] = Some(NumError::BufferTooSmall {
                op: CELL_OPS[k],
                len: needed - 1,
                needed,
            });
            assert_eq!(got, want, "{s:?}, buffer {short} of {}", CELL_OPS[k]);
            assert_eq!(cell_kernel_errors(&cpu, s, &lens)?, got, "{s:?}");
        }
    }
    Ok(())
}

/// A step with no rows (or no hidden units) checks its buffers and records nothing.
#[test]
fn empty_cell_steps_dispatch_nothing() -> TestResult {
    let be = own_gpu();
    for s in [
        CellStep {
            rows: 0,
            hidden: 3,
            step: 2,
            prev: 1,
            next: 4,
        },
        CellStep {
            rows: 2,
            hidden: 0,
            step: 2,
            prev: 1,
            next: 4,
        },
    ] {
        let before = be.stats().dispatches;
        assert_eq!(
            cell_kernel_errors(&be, s, &CellLens::fitting(&s))?,
            [None, None, None, None]
        );
        assert_eq!(be.stats().dispatches, before, "{s:?}");
    }
    Ok(())
}

/// `write` and `fill_zero` keep program order with the kernels recorded around them,
/// and uniforms of successive dispatches in one submission do not overwrite each other.
#[test]
fn recorded_work_keeps_program_order() -> TestResult {
    let be = gpu();
    let ones = be.upload(&[1.0; 4])?; // 2 × 2
    let mut x = be.upload(&[1.0, 2.0, 3.0, 4.0])?;
    let mut out = be.upload(&[f32::NAN; 8])?;
    // out[0..4] = ones · x, then x changes, then out[4..8] = ones · x (new values).
    be.gemm(&Gemm::new(2, 2, 2), &ones, &x, None, &mut out)?;
    be.write(&mut x, &[10.0, 20.0])?;
    let second = Gemm {
        c_off: 4,
        ..Gemm::new(2, 2, 2)
    };
    be.gemm(&second, &ones, &x, None, &mut out)?;
    assert_eq!(
        be.download(&out)?,
        vec![4.0, 6.0, 4.0, 6.0, 13.0, 24.0, 13.0, 24.0]
    );
    be.fill_zero(&mut x)?;
    be.gemm(&second, &ones, &x, None, &mut out)?;
    assert_eq!(be.download(&out)?[4..], [0.0; 4]);
    Ok(())
}

#[test]
fn empty_buffers_round_trip() -> TestResult {
    let be = gpu();
    let mut e = be.upload(&[])?;
    assert!(e.is_empty());
    be.write(&mut e, &[])?;
    assert_eq!(be.download(&e)?, Vec::<f32>::new());
    assert_eq!(be.download(&be.zeros(3)?)?, vec![0.0; 3]);
    Ok(())
}

/// A device opened by the caller works through [`WgpuContext::from_device`].
#[test]
fn injected_device_runs_kernels() -> TestResult {
    let ctx = gpu().context();
    let injected = WgpuContext::from_device(
        ctx.device().clone(),
        ctx.queue().clone(),
        ctx.adapter_info().clone(),
    );
    let be = WgpuBackend::from_context(injected);
    assert!(be.name().starts_with("wgpu "));
    let a = be.upload(&[1.0, 2.0, 3.0, 4.0])?;
    let mut c = be.zeros(4)?;
    be.gemm(&Gemm::new(2, 2, 2), &a, &a, None, &mut c)?;
    assert_eq!(be.download(&c)?, vec![7.0, 10.0, 15.0, 22.0]);
    Ok(())
}

#[test]
fn adapter_is_reported() {
    let summary = gpu().adapter();
    assert!(!summary.name.is_empty());
    let shown = summary.to_string();
    eprintln!("adapter: {shown}");
    assert!(shown.contains(&summary.name), "{shown}");
    // A software adapter says so; a GPU gets no warning.
    assert_eq!(summary.cpu_warning().is_some(), summary.is_cpu());
    if summary.name.contains("llvmpipe") {
        assert!(summary.is_cpu(), "lavapipe is a CPU device: {shown}");
        assert!(summary.cpu_warning().unwrap().contains("not a GPU"));
    }
}

#[test]
fn no_adapter_error_names_the_way_out() {
    let e = WgpuError::NoAdapter {
        backends: "VULKAN".into(),
        reason: "no adapter".into(),
    };
    let shown = e.to_string();
    assert!(shown.contains("--backend cpu"), "{shown}");
    assert!(shown.contains("mesa-vulkan-drivers"), "{shown}");
    let as_num: NumError = e.into();
    assert!(as_num.to_string().contains("mesa-vulkan-drivers"));
}

#[test]
#[should_panic(expected = "index 1")]
fn assert_close_rejects_nan() {
    assert_close("checker", &[1.0, f32::NAN], &[1.0, 2.0], 1.0, 1.0);
}

#[test]
fn oversized_buffers_are_typed_errors() {
    // 2^26 f32 = 256 MiB, above the default 128 MiB binding limit: refused before allocating.
    let err = gpu().zeros(1 << 26).unwrap_err();
    assert!(
        matches!(&err, NumError::Backend { backend, kind: BackendErrorKind::Limit, message }
            if backend == "wgpu" && message.contains("binding limit")),
        "{err}"
    );
}

#[test]
fn device_validation_errors_are_caught_not_panics() {
    let ctx = gpu().context();
    // MAP_READ may only be combined with COPY_DST: wgpu reports a validation error.
    let result = ctx.scoped("creating an invalid buffer", || {
        ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("invalid"),
            size: 16,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
    });
    match result {
        Err(e @ WgpuError::Device { what, .. }) => {
            assert_eq!(what, "creating an invalid buffer");
            assert_eq!(e.kind(), BackendErrorKind::Validation);
            assert!(matches!(
                NumError::from(e),
                NumError::Backend {
                    kind: BackendErrorKind::Validation,
                    ..
                }
            ));
        }
        other => panic!("expected a caught validation error, got {other:?}"),
    }
    // The same scope around valid work reports nothing.
    assert!(ctx.scoped("valid", || 1 + 1).is_ok());
}

/// More dispatches than the uniform arena has slots (4096), each with its own offsets,
/// recorded without a sync: every dispatch must still see its own uniforms.
#[test]
fn uniform_arena_wraps_without_mixing_dispatches() -> TestResult {
    let be = gpu();
    let n = 4200;
    let values: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let a = be.upload(&values)?;
    let one = be.upload(&[1.0])?;
    let mut c = be.upload(&vec![f32::NAN; n])?;
    for i in 0..n {
        let g = Gemm {
            a_off: i,
            c_off: i,
            ..Gemm::new(1, 1, 1)
        };
        be.gemm(&g, &a, &one, None, &mut c)?;
    }
    assert_eq!(be.download(&c)?, values);
    Ok(())
}

#[test]
fn packed_products_are_refused_with_a_typed_error() -> TestResult {
    let be = own_gpu();
    for p in [Packed::Bf16, Packed::Int8] {
        let err = be.packed_products(p).unwrap_err();
        assert!(
            matches!(
                err,
                NumError::Backend {
                    kind: BackendErrorKind::Unavailable,
                    ..
                }
            ) && err.to_string().contains(p.name()),
            "{err}"
        );
        let mut w = be.zeros(16)?;
        assert!(
            be.write_packed(p, &mut w, 2, 2, false, &mut |dst| dst.fill(1.0))
                .is_err()
        );
        let (a, mut c) = (be.zeros(4)?, be.zeros(4)?);
        assert!(
            be.gemm_packed(p, &Gemm::new(2, 2, 2), &a, &w, None, &mut c)
                .is_err()
        );
    }
    Ok(())
}
