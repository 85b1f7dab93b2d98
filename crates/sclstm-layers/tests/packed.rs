//! Packed weight products (bf16, int8): an inference forward stays within the rounding
//! or quantization of the f32 forward (and differs from it, so the packed kernels ran),
//! recorded calls stay f32, the weight sets kept on the device switch form with the
//! call and the setting, and backends without packed products refuse the setting.

use std::sync::Arc;

use ndarray::Array2;
use sclstm_core::Packed;
use sclstm_cpu::CpuBackend;
use sclstm_layers::{LayerWorkspace, WeightsId, sc_lstm_forward};

use crate::lstm_checks::{Spec, workspace};

/// An f32 CPU workspace on `threads` threads.
fn workspace_f32(threads: usize) -> LayerWorkspace<CpuBackend<f32>> {
    LayerWorkspace::new(Arc::new(
        CpuBackend::<f32>::new(threads).expect("cpu backend"),
    ))
}

/// Largest absolute difference of two outputs.
fn max_diff(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn packed_inference_is_close_to_f32_and_recorded_calls_stay_f32() {
    // Two directions, a shared and a separate task input, ragged lengths, sizes that
    // leave partial tiles and an odd k.
    let spec = Spec {
        steps: 9,
        lens: vec![9, 4, 7, 1, 9],
        input: 37,
        hidden: 19,
        dirs: 2,
        tasks: vec![None, Some(5)],
    };
    let v: Vec<Array2<f32>> = spec
        .inputs(0.3)
        .iter()
        .map(|m| m.mapv(|x| x as f32))
        .collect();
    let plain = workspace_f32(2);
    let mut args = spec.args(&v);
    let n = 3 * (1 + spec.tasks.len()) as u32;
    args.weights_id = Some(WeightsId {
        store: 1,
        version: 1,
        directions: vec![(0..n).collect(), (n..2 * n).collect()],
    });
    let f32_out = sc_lstm_forward(&plain, &args, false)
        .expect("f32 forward")
        .0;
    // One workspace switched between the two packed forms keeps its weight sets apart.
    let mut ws = workspace_f32(2);
    let mut outs = Vec::new();
    // Outputs lie in (-1, 1); bf16 keeps 8 significant bits of weights and inputs, int8
    // 1/254 of each column's and each row's largest value.
    for (p, bound) in [(Packed::Bf16, 0.03), (Packed::Int8, 0.06)] {
        if let Err(e) = ws.set_packed_products(Some(p)) {
            assert!(
                !sclstm_cpu::packed::available(p),
                "refused on a CPU that runs it: {e}"
            );
            assert!(e.to_string().contains(p.name()), "{e}");
            continue;
        }
        assert!(sclstm_cpu::packed::available(p));
        let out = sc_lstm_forward(&ws, &args, false)
            .expect("packed forward")
            .0;
        let diff = max_diff(&f32_out, &out);
        assert!(diff > 0.0, "the {} products ran", p.name());
        assert!(diff < bound, "{} output off by {diff}", p.name());
        // A recorded call on the same workspace, with the same weights version, runs in
        // f32 (its weight set must not be the packed one kept from the call before).
        let (recorded, node) = sc_lstm_forward(&ws, &args, true).expect("recorded forward");
        assert!(node.is_some());
        let (recorded_f32, _) = sc_lstm_forward(&plain, &args, true).expect("recorded forward");
        assert_eq!(
            recorded,
            recorded_f32,
            "training is untouched by {} products",
            p.name()
        );
        // Inference again: packed once more, not the f32 copies the recorded call wrote.
        assert_eq!(
            sc_lstm_forward(&ws, &args, false)
                .expect("packed forward")
                .0,
            out
        );
        outs.push(out);
    }
    if let [bf16, int8] = &outs[..] {
        assert_ne!(
            bf16, int8,
            "the weight sets were written again in the new form"
        );
    }
    // Switched off, the same workspace is f32 again.
    ws.set_packed_products(None)
        .expect("f32 is always available");
    assert_eq!(
        sc_lstm_forward(&ws, &args, false).expect("f32 forward").0,
        f32_out
    );
}

#[test]
fn an_f64_backend_refuses_packed_products_and_keeps_its_setting() {
    let mut ws = workspace();
    for p in [Packed::Bf16, Packed::Int8] {
        let err = ws.set_packed_products(Some(p)).unwrap_err();
        assert!(err.to_string().contains("f32 buffers"), "{err}");
        assert!(format!("{ws:?}").contains("packed_products: None"));
    }
}
