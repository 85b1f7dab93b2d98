//! A whole SC-LSTM layer (one task gate) forward and backward through Backend calls only,
//! on both backends: the time loop stays on the device, read back once at the end.

use sclstm_core::{Backend, CellStep, Gemm, NumError};

use crate::common::{TestResult, assert_close, cpu, gpu, mask, rng, uniform};

const T: usize = 5;
const B: usize = 3;
const H: usize = 4;
const D: usize = 3;
/// Sentence lengths: a full one, a shorter one and a one-token one (padding masked).
const LENS: [usize; B] = [5, 3, 1];
/// Looser than one kernel: errors compound over 5 steps forward and back.
const ABS: f32 = 2e-5;
const REL: f32 = 1e-4;

/// Host inputs: x (T·B, D), U (D, 4H), W (H, 4H), b (4H), U_k (D, H), W_k (H, H),
/// b_k (H), and the loss weights r_h, r_q (T·B, H) of L = Σ r_h·h + Σ r_q·q^k.
struct Inputs {
    x: Vec<f32>,
    u: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    u_k: Vec<f32>,
    w_k: Vec<f32>,
    b_k: Vec<f32>,
    r_h: Vec<f32>,
    r_q: Vec<f32>,
}

/// Downloaded results, in the order of [`NAMES`].
const NAMES: [&str; 8] = ["h", "c", "q_k", "d_x", "d_u", "d_w", "d_u_k", "d_w_k"];

/// `(T+1, B, H)` gradient buffer: slot 0 zero, slot t+1 = `r[t]`.
fn shifted(r: &[f32]) -> Vec<f32> {
    let mut v = vec![0.0; B * H];
    v.extend_from_slice(r);
    v
}

fn layer_on<Bk: Backend<Elem = f32>>(be: &Bk, inp: &Inputs) -> Result<Vec<Vec<f32>>, NumError> {
    let (bh, g4) = (B * H, 4 * H);
    let x = be.upload(&inp.x)?;
    let (u, w, bias) = (be.upload(&inp.u)?, be.upload(&inp.w)?, be.upload(&inp.b)?);
    let (u_k, w_k, b_k) = (
        be.upload(&inp.u_k)?,
        be.upload(&inp.w_k)?,
        be.upload(&inp.b_k)?,
    );
    let m = be.upload(&mask(T, &LENS))?;
    let mut gates = be.zeros(T * B * g4)?;
    let mut c = be.zeros((T + 1) * bh)?;
    let mut h = be.zeros((T + 1) * bh)?;
    let mut tanh_c = be.zeros(T * bh)?;
    let mut o_k = be.zeros(T * bh)?;
    let mut q_k = be.zeros((T + 1) * bh)?;

    // Input projections for all steps at once: gates = X U + b, o_k = X U_k + b_k.
    be.gemm(&Gemm::new(T * B, g4, D), &x, &u, Some(&bias), &mut gates)?;
    be.gemm(&Gemm::new(T * B, H, D), &x, &u_k, Some(&b_k), &mut o_k)?;
    for t in 0..T {
        let s = CellStep {
            t,
            batch: B,
            hidden: H,
        };
        let rec = Gemm {
            a_off: t * bh,
            c_off: t * B * g4,
            accumulate: true,
            ..Gemm::new(B, g4, H)
        };
        be.gemm(&rec, &h, &w, None, &mut gates)?;
        be.lstm_cell_fwd(s, &mut gates, &mut c, &mut h, &mut tanh_c, &m)?;
        let rec_k = Gemm {
            a_off: t * bh,
            c_off: t * bh,
            accumulate: true,
            ..Gemm::new(B, H, H)
        };
        be.gemm(&rec_k, &q_k, &w_k, None, &mut o_k)?;
        be.task_gate_fwd(s, &mut o_k, &mut q_k, &tanh_c, &m)?;
    }

    // Backward through time.
    let mut d_h = be.upload(&shifted(&inp.r_h))?;
    let mut d_q = be.upload(&shifted(&inp.r_q))?;
    let mut d_c = be.zeros((T + 1) * bh)?;
    let mut d_gates = be.zeros(T * B * g4)?;
    let mut d_o_k = be.zeros(T * bh)?;
    for t in (0..T).rev() {
        let s = CellStep {
            t,
            batch: B,
            hidden: H,
        };
        be.task_gate_bwd(s, &o_k, &tanh_c, &m, &d_q, &mut d_o_k, &mut d_c)?;
        // d q_{t-1} += d_o_k[t] · W_kᵀ
        let back_k = Gemm {
            trans_b: true,
            a_off: t * bh,
            c_off: t * bh,
            accumulate: true,
            ..Gemm::new(B, H, H)
        };
        be.gemm(&back_k, &d_o_k, &w_k, None, &mut d_q)?;
        be.lstm_cell_bwd(s, &gates, &c, &tanh_c, &m, &d_h, &mut d_c, &mut d_gates)?;
        // d h_{t-1} += d_gates[t] · Wᵀ
        let back = Gemm {
            trans_b: true,
            a_off: t * B * g4,
            c_off: t * bh,
            accumulate: true,
            ..Gemm::new(B, H, g4)
        };
        be.gemm(&back, &d_gates, &w, None, &mut d_h)?;
    }
    // Weight gradients over all steps at once: d_W = h_{0..T-1}ᵀ · d_gates, etc.
    let mut d_x = be.zeros(T * B * D)?;
    let mut d_u = be.zeros(D * g4)?;
    let mut d_w = be.zeros(H * g4)?;
    let mut d_u_k = be.zeros(D * H)?;
    let mut d_w_k = be.zeros(H * H)?;
    let wgrad = |m_: usize, n: usize| Gemm {
        trans_a: true,
        ..Gemm::new(m_, n, T * B)
    };
    be.gemm(&wgrad(D, g4), &x, &d_gates, None, &mut d_u)?;
    be.gemm(&wgrad(H, g4), &h, &d_gates, None, &mut d_w)?;
    be.gemm(&wgrad(D, H), &x, &d_o_k, None, &mut d_u_k)?;
    be.gemm(&wgrad(H, H), &q_k, &d_o_k, None, &mut d_w_k)?;
    let dx = |n: usize| Gemm {
        trans_b: true,
        accumulate: true,
        ..Gemm::new(T * B, D, n)
    };
    be.gemm(&dx(g4), &d_gates, &u, None, &mut d_x)?;
    be.gemm(&dx(H), &d_o_k, &u_k, None, &mut d_x)?;
    be.sync()?;
    [&h, &c, &q_k, &d_x, &d_u, &d_w, &d_u_k, &d_w_k]
        .into_iter()
        .map(|buf| be.download(buf))
        .collect()
}

#[test]
fn sc_lstm_layer_time_loop_matches_cpu() -> TestResult {
    let mut r = rng(7);
    let inp = Inputs {
        x: uniform(&mut r, T * B * D, 1.0),
        u: uniform(&mut r, D * 4 * H, 0.8),
        w: uniform(&mut r, H * 4 * H, 0.8),
        b: uniform(&mut r, 4 * H, 0.5),
        u_k: uniform(&mut r, D * H, 0.8),
        w_k: uniform(&mut r, H * H, 0.8),
        b_k: uniform(&mut r, H, 0.5),
        r_h: uniform(&mut r, T * B * H, 1.0),
        r_q: uniform(&mut r, T * B * H, 1.0),
    };
    let want = layer_on(&cpu(), &inp)?;
    let got = layer_on(gpu(), &inp)?;
    for ((name, g), w) in NAMES.iter().zip(&got).zip(&want) {
        assert_close(&format!("time loop {name}"), g, w, ABS, REL);
    }
    // Padding stays zero: sentence 2 has one token, so h at t ≥ 1 is 0 for b = 2.
    let h = &got[0];
    for t in 1..T {
        let slot = (t + 1) * B * H + 2 * H;
        assert!(
            h[slot..slot + H].iter().all(|&v| v == 0.0),
            "h leaks into padding at t={t}"
        );
    }
    // The loop did something: the last hidden state of the full sentence is not zero.
    assert!(h[T * B * H..T * B * H + H].iter().any(|&v| v != 0.0));
    Ok(())
}
