//! bf16 weight products: an inference forward stays within bf16's rounding of the f32
//! forward (and differs from it, so the bf16 kernels ran), recorded calls stay f32, the
//! weight sets kept on the device switch form with the call, and backends without bf16
//! products refuse the setting.

use std::sync::Arc;

use ndarray::Array2;
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
fn bf16_inference_is_close_to_f32_and_recorded_calls_stay_f32() {
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
    let mut bf = workspace_f32(2);
    if let Err(e) = bf.set_bf16_products(true) {
        assert!(
            !sclstm_cpu::bf16::available(),
            "refused on a CPU that runs it: {e}"
        );
        assert!(e.to_string().contains("AVX512_BF16"), "{e}");
        return;
    }
    assert!(sclstm_cpu::bf16::available());
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
    let bf16_out = sc_lstm_forward(&bf, &args, false).expect("bf16 forward").0;
    let diff = max_diff(&f32_out, &bf16_out);
    assert!(diff > 0.0, "the bf16 products ran");
    // Outputs lie in (-1, 1); bf16 keeps 8 significant bits of weights and inputs.
    assert!(diff < 0.03, "bf16 output off by {diff}");
    // A recorded call on the same workspace, with the same weights version, runs in f32
    // (its weight set must not be the bf16 one kept from the call before).
    let (recorded, node) = sc_lstm_forward(&bf, &args, true).expect("recorded forward");
    assert!(node.is_some());
    let (recorded_f32, _) = sc_lstm_forward(&plain, &args, true).expect("recorded forward");
    assert_eq!(
        recorded, recorded_f32,
        "training is untouched by bf16 products"
    );
    // Inference again: bf16 once more, not the f32 copies the recorded call wrote.
    assert_eq!(
        sc_lstm_forward(&bf, &args, false).expect("bf16 forward").0,
        bf16_out
    );
    // Switched off, the same workspace is f32 again.
    bf.set_bf16_products(false)
        .expect("f32 is always available");
    assert_eq!(
        sc_lstm_forward(&bf, &args, false).expect("f32 forward").0,
        f32_out
    );
}

#[test]
fn an_f64_backend_refuses_bf16_products_and_keeps_its_setting() {
    let mut ws = workspace();
    let err = ws.set_bf16_products(true).unwrap_err();
    assert!(err.to_string().contains("f32 buffers"), "{err}");
    assert!(!format!("{ws:?}").contains("bf16_products: true"));
}
