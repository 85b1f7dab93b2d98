//! The layers against outside oracles: fixtures computed in PyTorch by the scripts in
//! `benches/reference/` (`oracle_layers.py`, `oracle_crf.py`) and committed under
//! `tests/fixtures/`, all in float64.
//!
//! * `lstm_torch.json`: `torch.nn.LSTM` (bidirectional, packed by length) — the gate
//!   order, the bias `b = b_ih + b_hh`, the per-sentence reversal and the padding;
//! * `sc_lstm_torch.json`: an explicit SC-LSTM loop (paper Eq. 1–3 plus biases) with one
//!   task gate reading `x` and one reading a separate input;
//! * `crf_torchcrf.json`: `torchcrf.CRF` NLL (sum and mean), its gradients, `log Z` and
//!   Viterbi paths, with moderate transitions and with −10⁴ constraints.
//!
//! Every element is compared; a failure names the worst one.

use std::collections::HashMap;

use ndarray::Array2;
use sclstm_layers::{
    CrfReduction, CrfWeights, DirectionWeights, LstmWeights, ScLstmArgs, TaskGateWeights,
    TaskInput, crf_log_partition, crf_nll, sc_lstm_forward, viterbi_decode,
};
use serde_json::Value;

use crate::common::{M, all_some};
use crate::lstm_checks::workspace;

/// Relative tolerance of every comparison with the float64 fixtures.
const REL: f64 = 1e-10;
/// Absolute floor, for elements that are (near) zero.
const ABS: f64 = 1e-13;

/// Parses a fixture file of `tests/fixtures/`.
fn fixture(text: &str) -> Value {
    serde_json::from_str(text).expect("fixture is valid JSON")
}

/// A `{"shape": [r, c], "data": [...]}` entry as a matrix.
fn matrix(v: &Value, name: &str) -> M {
    let t = v
        .get(name)
        .unwrap_or_else(|| panic!("fixture has no tensor {name}"));
    let dims: Vec<usize> = serde_json::from_value(t["shape"].clone()).expect("shape");
    let data: Vec<f64> = serde_json::from_value(t["data"].clone()).expect("data");
    Array2::from_shape_vec((dims[0], dims[1]), data).expect("data matches its shape")
}

/// A list of non-negative integers.
fn usizes(v: &Value, name: &str) -> Vec<usize> {
    serde_json::from_value(v[name].clone()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Asserts `|got − want| ≤ REL·|want| + ABS` for every element; the message names the
/// worst element (largest error relative to its bound). Returns the largest relative
/// error `|got − want| / max(|want|, ABS / REL)`.
fn assert_close(what: &str, got: &M, want: &M) -> f64 {
    assert_eq!(got.dim(), want.dim(), "{what}: shape");
    let mut worst = (0.0, (0, 0), 0.0, 0.0);
    let mut max_rel: f64 = 0.0;
    for ((idx, &g), &w) in got.indexed_iter().zip(want.iter()) {
        let ratio = (g - w).abs() / (REL * w.abs() + ABS);
        if ratio > worst.0 || ratio.is_nan() {
            worst = (
                if ratio.is_nan() { f64::INFINITY } else { ratio },
                idx,
                g,
                w,
            );
        }
        max_rel = max_rel.max((g - w).abs() / w.abs().max(ABS / REL));
    }
    let (ratio, idx, g, w) = worst;
    assert!(
        ratio <= 1.0,
        "{what} {:?}: worst at {idx:?}: got {g:e}, oracle {w:e} (|diff| {:e})",
        got.dim(),
        (g - w).abs()
    );
    max_rel
}

/// Runs the layer on a fixture's inputs (bidirectional; `tasks` says which gates read
/// `x` (`None`) or the named separate input), then compares its output with `out` and
/// its backward of `d_out` with `grad.<name>` for every input name.
fn check_layer(fx: &Value, tasks: &[Option<&str>]) {
    let t = &fx["tensors"];
    let lens = usizes(&fx["meta"], "lens");
    let mut names = vec!["x".to_string()];
    names.extend(tasks.iter().flatten().map(|s| s.to_string()));
    for d in ["fwd", "bwd"] {
        names.extend(["w_ih", "w_hh", "b"].map(|p| format!("{d}.{p}")));
    }
    for k in 0..tasks.len() {
        for d in ["fwd", "bwd"] {
            names.extend(["u", "w", "b"].map(|p| format!("task{k}.{d}.{p}")));
        }
    }
    let v: HashMap<&str, M> = names.iter().map(|n| (n.as_str(), matrix(t, n))).collect();
    let directions = ["fwd", "bwd"]
        .map(|d| DirectionWeights {
            cell: LstmWeights {
                w_ih: &v[format!("{d}.w_ih").as_str()],
                w_hh: &v[format!("{d}.w_hh").as_str()],
                b: &v[format!("{d}.b").as_str()],
            },
            tasks: (0..tasks.len())
                .map(|k| TaskGateWeights {
                    u: &v[format!("task{k}.{d}.u").as_str()],
                    w: &v[format!("task{k}.{d}.w").as_str()],
                    b: &v[format!("task{k}.{d}.b").as_str()],
                })
                .collect(),
        })
        .to_vec();
    let args = ScLstmArgs {
        x: &v["x"],
        lens: &lens,
        task_inputs: tasks
            .iter()
            .map(|s| s.map_or(TaskInput::Shared, |n| TaskInput::Separate(&v[n])))
            .collect(),
        directions,
        weights_id: None,
    };
    assert_eq!(args.input_names(), names, "gradient order of the op");
    let ws = workspace();
    let (out, node) = sc_lstm_forward(&ws, &args, true).unwrap();
    let mut worst = assert_close("out", &out, &matrix(t, "out"));
    let grads = all_some(node.unwrap().backward(&matrix(t, "d_out")).unwrap());
    assert_eq!(grads.len(), names.len());
    for (name, g) in names.iter().zip(&grads) {
        let rel = assert_close(
            &format!("grad {name}"),
            g,
            &matrix(t, &format!("grad.{name}")),
        );
        worst = worst.max(rel);
    }
    println!("worst relative error {worst:.1e}");
}

/// `bilstm`: output and every gradient equal `torch.nn.LSTM`'s (packed sequences, bias
/// `b_ih + b_hh`, gate order i, f, g, o; lengths 5 2 4 1 in 6 padded steps).
#[test]
fn bilstm_matches_torch_nn_lstm() {
    check_layer(&fixture(include_str!("fixtures/lstm_torch.json")), &[]);
}

/// A bidirectional SC-LSTM layer with task 0 reading `x` and task 1 reading `x^1`:
/// `h`, both `q^k` and every gradient equal an explicit PyTorch loop of Eq. 1–3.
#[test]
fn sc_lstm_matches_an_explicit_pytorch_loop() {
    check_layer(
        &fixture(include_str!("fixtures/sc_lstm_torch.json")),
        &[None, Some("x^1")],
    );
}

/// The two cases of the CRF fixture.
fn crf_cases() -> Vec<(String, Value)> {
    let fx = fixture(include_str!("fixtures/crf_torchcrf.json"));
    let cases = fx["cases"].as_object().expect("cases").clone();
    assert_eq!(cases.len(), 2, "moderate and constrained");
    cases.into_iter().collect()
}

/// The CRF inputs of one case: emissions, transitions, start, end, tags, lens.
fn crf_inputs(c: &Value) -> ([M; 4], Vec<usize>, Vec<usize>) {
    let m = ["emissions", "transitions", "start", "end"].map(|n| matrix(c, n));
    (m, usizes(c, "tags"), usizes(c, "lens"))
}

/// `crf_nll` (sum and mean) and its gradients w.r.t. emissions, transitions, start and
/// end equal pytorch-crf's negated log-likelihood and its gradients.
#[test]
fn crf_nll_and_gradients_match_pytorch_crf() {
    for (case, c) in crf_cases() {
        let ([e, a, s, z], tags, lens) = crf_inputs(&c);
        let w = CrfWeights {
            transitions: &a,
            start: &s,
            end: &z,
        };
        for (red, reduction) in [("sum", CrfReduction::Sum), ("mean", CrfReduction::Mean)] {
            let (nll, node) = crf_nll(&e, &tags, &lens, w, reduction, true).unwrap();
            let want = c[format!("nll.{red}")].as_f64().expect("nll");
            let what = format!("{case} {red}");
            assert_close(&format!("{what} nll"), &nll, &M::from_elem((1, 1), want));
            let grads = all_some(node.unwrap().backward(&M::ones((1, 1))).unwrap());
            for (name, g) in ["emissions", "transitions", "start", "end"]
                .iter()
                .zip(&grads)
            {
                let oracle = matrix(&c, &format!("grad.{red}.{name}"));
                assert_close(&format!("{what} grad {name}"), g, &oracle);
            }
        }
    }
}

/// `crf_log_partition` equals pytorch-crf's normaliser, sentence by sentence.
#[test]
fn crf_log_partition_matches_pytorch_crf() {
    for (case, c) in crf_cases() {
        let ([e, a, s, z], _, lens) = crf_inputs(&c);
        let w = CrfWeights {
            transitions: &a,
            start: &s,
            end: &z,
        };
        let got = crf_log_partition(&e, &lens, w).unwrap();
        let want: Vec<f64> = serde_json::from_value(c["log_z"].clone()).expect("log_z");
        let row = |v: Vec<f64>| M::from_shape_vec((1, v.len()), v).unwrap();
        assert_close(&format!("{case} log Z"), &row(got), &row(want));
    }
}

/// `viterbi_decode` (unconstrained) returns pytorch-crf's `decode` paths.
#[test]
fn viterbi_matches_pytorch_crf_decode() {
    for (case, c) in crf_cases() {
        let ([e, a, s, z], _, lens) = crf_inputs(&c);
        let w = CrfWeights {
            transitions: &a,
            start: &s,
            end: &z,
        };
        let got = viterbi_decode(&e, &lens, w, None).unwrap();
        let want: Vec<Vec<usize>> = serde_json::from_value(c["viterbi"].clone()).expect("paths");
        assert_eq!(got, want, "{case}");
    }
}
