//! One direction's time loop: the forward of paper Eq. 1–3 and its hand-written BPTT
//! (derived in `BACKWARD.md`), on the packed layout of `sclstm_core::backend`.

use super::*;

/// Runs one direction forward on the device (the caller has gathered the unit's rows of
/// `x` and of any separate `x^k` into the cache and written the direction's weights
/// into `wb`); `h` and each task's `q_k` stay in the cache for the caller to collect.
pub(super) fn dir_forward<B: Backend>(
    be: &B,
    dc: &mut DirCache<B>,
    wb: &WeightBufs<B>,
    steps: &[CellStep],
) -> Result<(), NumError> {
    let DirGeometry {
        batch,
        tokens,
        input: d,
        hidden: hd,
        ..
    } = dc.geo.clone();
    // The initial state: the first B rows of every state buffer.
    let zeros = vec![B::Elem::zero(); batch * hd];
    be.write(&mut dc.c, &zeros)?;
    be.write(&mut dc.h, &zeros)?;
    // gates = x · W_ihᵀ + b for every token at once.
    let proj = Gemm {
        b_strips: wb.strips,
        ..Gemm::new(tokens, 4 * hd, d)
    };
    weight_gemm(be, wb, &proj, &dc.x, &wb.w_ih_t, Some(&wb.b), &mut dc.gates)?;

    for (j, (tc, gb)) in dc.tasks.iter_mut().zip(&wb.tasks).enumerate() {
        be.write(&mut tc.q_k, &zeros)?;
        let dk = dc.geo.tasks[j].0;
        // o_k = x^k · U_kᵀ + b_k for every token.
        let proj = Gemm {
            b_strips: wb.strips,
            ..Gemm::new(tokens, hd, dk)
        };
        let xk = tc.x_k.as_ref().unwrap_or(&dc.x);
        weight_gemm(be, wb, &proj, xk, &gb.u_t, Some(&gb.b), &mut tc.o_k)?;
    }

    // The task cells read the shared cell (tanh c_t) but never write to it, so each
    // runs its own time loop after the shared one: every loop streams one recurrent
    // weight, which stays in a core's L2 where all of them together would not.
    for &s in steps {
        // gates[t] += h_{t-1} · W_hhᵀ
        let rec = Gemm {
            a_off: s.prev * hd,
            c_off: s.step * 4 * hd,
            accumulate: true,
            b_strips: wb.strips,
            ..Gemm::new(s.rows, 4 * hd, hd)
        };
        weight_gemm(be, wb, &rec, &dc.h, &wb.w_hh_t, None, &mut dc.gates)?;
        be.lstm_cell_fwd(s, &mut dc.gates, &mut dc.c, &mut dc.h, &mut dc.tanh_c)?;
    }
    for (tc, gb) in dc.tasks.iter_mut().zip(&wb.tasks) {
        for &s in steps {
            // o_k[t] += q^k_{t-1} · W_kᵀ
            let rec = Gemm {
                a_off: s.prev * hd,
                c_off: s.step * hd,
                accumulate: true,
                b_strips: wb.strips,
                ..Gemm::new(s.rows, hd, hd)
            };
            weight_gemm(be, wb, &rec, &tc.q_k, &gb.w_t, None, &mut tc.o_k)?;
            be.task_gate_fwd(s, &mut tc.o_k, &mut tc.q_k, &dc.tanh_c)?;
        }
    }
    Ok(())
}

/// A forward product `x·Wᵀ` reading one of `wb`'s forward copies: packed when the set
/// holds them packed, else in f32 (in strips or not, as `g` says for both).
#[allow(clippy::too_many_arguments)]
fn weight_gemm<B: Backend>(
    be: &B,
    wb: &WeightBufs<B>,
    g: &Gemm,
    x: &B::Buf,
    w_t: &B::Buf,
    bias: Option<&B::Buf>,
    out: &mut B::Buf,
) -> Result<(), NumError> {
    if let Some(p) = wb.packed {
        be.gemm_packed(p, g, x, w_t, bias, out)
    } else {
        be.gemm(g, x, w_t, bias, out)
    }
}

/// Runs one direction's BPTT on the device. The caller has gathered the output
/// gradients into `d_h` and each task's `d_q_k` (state rows, after the B initial ones)
/// in this unit's row order. The input gradients `d_x` (and `d_x_k`) stay in the cache
/// for the caller to collect; the weight gradients come back as host vectors in
/// gradient order ([`param_sizes`]).
pub(super) fn dir_backward<B: Backend>(
    be: &B,
    dc: &mut DirCache<B>,
    wb: &WeightBufs<B>,
    unit: &Unit,
) -> Result<Vec<Vec<B::Elem>>, NumError> {
    let DirGeometry {
        tokens,
        input: d,
        hidden: hd,
        ..
    } = dc.geo.clone();

    be.fill_zero(&mut dc.d_c)?;

    // Each task cell's BPTT needs nothing from the shared cell's (only the forward's
    // o_k and tanh c), so it runs first, in its own time loop, leaving its terms in d_c
    // for the shared loop to read (one recurrent weight streamed per loop, as forward).
    for (tc, gb) in dc.tasks.iter_mut().zip(&wb.tasks) {
        for (t, &s) in unit.steps.iter().enumerate().rev() {
            // d_o_k[t] from d_q_k_t; d_c_t += d_q·o·(1 − tanh²c_t).
            be.task_gate_bwd(
                s,
                &tc.o_k,
                &dc.tanh_c,
                &tc.d_q_k,
                &mut tc.d_o_k,
                &mut dc.d_c,
            )?;
            if t > 0 {
                // d q^k_{t-1} += d_o_k[t] · W_k
                let g = Gemm {
                    a_off: s.step * hd,
                    c_off: s.prev * hd,
                    accumulate: true,
                    b_strips: wb.strips,
                    ..Gemm::new(s.rows, hd, hd)
                };
                be.gemm(&g, &tc.d_o_k, &gb.w, None, &mut tc.d_q_k)?;
            }
        }
    }
    for (t, &s) in unit.steps.iter().enumerate().rev() {
        be.lstm_cell_bwd(
            s,
            &dc.gates,
            &dc.c,
            &dc.tanh_c,
            &dc.d_h,
            &mut dc.d_c,
            &mut dc.d_gates,
        )?;
        if t > 0 {
            // d h_{t-1} += d_gates[t] · W_hh
            let g = Gemm {
                a_off: s.step * 4 * hd,
                c_off: s.prev * hd,
                accumulate: true,
                b_strips: wb.strips,
                ..Gemm::new(s.rows, hd, 4 * hd)
            };
            be.gemm(&g, &dc.d_gates, &wb.w_hh, None, &mut dc.d_h)?;
        }
    }

    // Weight gradients: one gemm each over all N token rows, into their places in the
    // direction's buffer. The recurrent ones read the previous states lined up with
    // the steps (gathered into `prev_state`).
    let mut grads = GradBufs::new(be, wb)?;
    let states = RowCopy::packed(dc.geo.batch + tokens, hd);
    let d_gates_t = |n: usize, c_off: usize| Gemm {
        trans_a: true,
        c_off,
        ..Gemm::new(4 * hd, n, tokens)
    };
    let (buf, at) = grads.at(0);
    be.gemm(&d_gates_t(d, at), &dc.d_gates, &dc.x, None, buf)?;
    be.gather_rows(&states, &unit.prev_ids, &dc.h, &mut dc.prev_state)?;
    let (buf, at) = grads.at(1);
    be.gemm(&d_gates_t(hd, at), &dc.d_gates, &dc.prev_state, None, buf)?;
    let (buf, at) = grads.at(2);
    let bias = Gemm {
        c_off: at,
        ..Gemm::new(1, 4 * hd, tokens)
    };
    be.gemm(&bias, &dc.ones, &dc.d_gates, None, buf)?;
    be.gemm(
        &Gemm {
            b_strips: wb.strips,
            ..Gemm::new(tokens, d, 4 * hd)
        },
        &dc.d_gates,
        &wb.w_ih,
        None,
        &mut dc.d_x,
    )?;
    for (j, (tc, gb)) in dc.tasks.iter_mut().zip(&wb.tasks).enumerate() {
        let dk = dc.geo.tasks[j].0;
        let d_o_t = |n: usize, c_off: usize| Gemm {
            trans_a: true,
            c_off,
            ..Gemm::new(hd, n, tokens)
        };
        let xk = tc.x_k.as_ref().unwrap_or(&dc.x);
        let (buf, at) = grads.at(3 + 3 * j);
        be.gemm(&d_o_t(dk, at), &tc.d_o_k, xk, None, buf)?;
        be.gather_rows(&states, &unit.prev_ids, &tc.q_k, &mut dc.prev_state)?;
        let (buf, at) = grads.at(4 + 3 * j);
        be.gemm(&d_o_t(hd, at), &tc.d_o_k, &dc.prev_state, None, buf)?;
        let (buf, at) = grads.at(5 + 3 * j);
        let bias = Gemm {
            c_off: at,
            ..Gemm::new(1, hd, tokens)
        };
        be.gemm(&bias, &dc.ones, &tc.d_o_k, None, buf)?;
        let back = Gemm {
            b_strips: wb.strips,
            ..Gemm::new(tokens, dk, hd)
        };
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

    grads.into_vecs(be)
}
