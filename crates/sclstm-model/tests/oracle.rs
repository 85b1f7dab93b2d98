//! A whole tiny tagger against PyTorch: `fixtures/lstm_s_softmax_torch.json`, made by
//! `benches/reference/oracle_model.py` (an LSTM-s model with one softmax task in
//! `torch.nn`, float64). It pins the loss normalisation of the README's "Loss scale"
//! (token cross-entropies summed over the batch, divided by B), the fixed one-hot
//! capitalization features, the head's `s · weight + bias` layout and every gradient.

use std::sync::Arc;

use ndarray::Array2;
use sclstm_cpu::CpuBackend;
use sclstm_model::{Family, ModelConfig, ModelInput, Tagger, TaskConfig};
use serde_json::Value;

/// `|got − want| ≤ 1e-10·|want| + 1e-13` for every element, else a panic naming the worst.
fn assert_close(what: &str, got: &Array2<f64>, want: &Array2<f64>) {
    assert_eq!(got.dim(), want.dim(), "{what}: shape");
    let worst = got
        .indexed_iter()
        .zip(want.iter())
        .map(|((idx, &g), &w)| ((g - w).abs() / (1e-10 * w.abs() + 1e-13), idx, g, w))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .expect("non-empty");
    assert!(
        worst.0 <= 1.0,
        "{what}: worst at {:?}: got {:e}, oracle {:e}",
        worst.1,
        worst.2,
        worst.3
    );
}

/// A `{"shape": [r, c], "data": [...]}` entry as a matrix.
fn matrix(v: &Value) -> Array2<f64> {
    let dims: Vec<usize> = serde_json::from_value(v["shape"].clone()).expect("shape");
    let data: Vec<f64> = serde_json::from_value(v["data"].clone()).expect("data");
    Array2::from_shape_vec((dims[0], dims[1]), data).expect("data matches its shape")
}

#[test]
fn lstm_s_softmax_loss_and_gradients_match_pytorch() {
    let fx: Value = serde_json::from_str(include_str!("fixtures/lstm_s_softmax_torch.json"))
        .expect("fixture is valid JSON");
    let meta = &fx["meta"];
    let get = |v: &Value, k: &str| -> usize {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("fixture has no {k}")) as usize
    };
    let ids = |k: &str| -> Vec<u32> { serde_json::from_value(fx[k].clone()).expect("ids") };
    let tags: Vec<String> = serde_json::from_value(meta["tags"].clone()).expect("tags");
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    let mut cfg = ModelConfig::new(
        Family::LstmS,
        vec![TaskConfig::new("pos", &tags)],
        get(meta, "vocab"),
    );
    (cfg.word_dim, cfg.hidden, cfg.layers, cfg.dropout) =
        (get(meta, "word_dim"), get(meta, "hidden"), 1, 0.0);
    let be = Arc::new(CpuBackend::<f64>::new(1).expect("cpu backend"));
    let mut tagger = Tagger::new(cfg, be, 1, None).unwrap();
    let params = fx["params"].as_object().expect("params");
    let names: Vec<String> = tagger
        .params()
        .iter()
        .map(|(_, n, _)| n.to_string())
        .collect();
    assert_eq!(
        names.len(),
        params.len(),
        "the fixture sets every parameter: {names:?}"
    );
    for name in &names {
        let value = params
            .get(name)
            .unwrap_or_else(|| panic!("fixture lacks parameter {name}"));
        tagger.params_mut().set(name, matrix(value)).unwrap();
    }
    let lens: Vec<usize> = serde_json::from_value(fx["lens"].clone()).expect("lens");
    let (word_ids, cap_ids, gold) = (ids("word_ids"), ids("cap_ids"), ids("gold"));
    let input = ModelInput {
        steps: get(&fx, "steps"),
        batch: lens.len(),
        lens: &lens,
        word_ids: &word_ids,
        cap_ids: &cap_ids,
        char_ids: &[],
        char_lens: &[],
        word_len_max: 0,
        contextual: &[],
    };
    let mut tape = tagger.tape();
    let loss = tagger.loss(&mut tape, &input, 0, &gold, 0).unwrap();
    let want = fx["loss"].as_f64().expect("loss");
    let got = tape.value(loss).clone();
    assert_close("loss", &got, &Array2::from_elem((1, 1), want));
    let grads = tape.backward(loss).unwrap();
    for (id, name, _) in tagger.params().iter() {
        let g = grads
            .param(id)
            .unwrap_or_else(|| panic!("{name} gets no gradient"))
            .to_dense();
        assert_close(&format!("grad {name}"), &g, &matrix(&fx["grads"][name]));
    }
}
