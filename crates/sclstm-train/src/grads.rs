//! Gradient-behaviour statistics (`--log-grads N`): how much each task pulls on the shared
//! parameters, and whether the tasks pull in the same direction.
//!
//! For a fixed probe batch per task (the first `batch_size` training sentences, with a
//! fixed dropout mask so that successive measurements are comparable), each task's gradient is computed separately on the current parameters. With
//! `g_k` restricted to the shared parameters (those no single task owns):
//! - `shared_norm[k] = ‖g_k‖` and `specific_norm[k]` = norm on task `k`'s own parameters;
//! - `cosine["a/b"] = ⟨g_a, g_b⟩ / (‖g_a‖ ‖g_b‖)`: negative values are the optimisation
//!   conflicts the paper argues LSTM-s suffers from (§2.2);
//! - `update_ratio = ‖θ_after − θ_before‖ / ‖θ_before‖` of the optimizer step just taken.

use std::collections::BTreeMap;

use sclstm_autodiff::{ParamGrads, ParamId};
use sclstm_core::{Backend, Real};
use sclstm_model::{ModelInput, Tagger};
use serde::{Deserialize, Serialize};

/// Dropout seed of the probe batches: the same mask at every measurement.
const PROBE_DROPOUT_SEED: u64 = 0x9_7AD5;

/// One line of `grads.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GradsLine {
    /// Optimizer steps taken so far.
    pub step: u64,
    /// 0-based epoch.
    pub epoch: usize,
    /// Norm of each task's gradient on the shared parameters.
    pub shared_norm: BTreeMap<String, f64>,
    /// Norm of each task's gradient on its own parameters.
    pub specific_norm: BTreeMap<String, f64>,
    /// Cosine similarity of each pair of tasks' shared gradients, keyed `a/b`.
    pub cosine: BTreeMap<String, f64>,
    /// Relative size of the last update.
    pub update_ratio: f64,
}

/// Flattened shared-parameter gradient of one task, in parameter order.
fn shared_vector<R: Real>(grads: &ParamGrads<R>, shared: &[ParamId]) -> Vec<Vec<f64>> {
    shared
        .iter()
        .map(|&id| match grads.get(id) {
            Some(g) => g.to_dense().iter().map(|&x| Real::to_f64(x)).collect(),
            None => Vec::new(),
        })
        .collect()
}

fn dot(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    a.iter()
        .zip(b)
        .filter(|(x, y)| !x.is_empty() && !y.is_empty())
        .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>())
        .sum()
}

/// Cosine similarity; 0 when either vector is zero.
pub fn cosine(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    let (na, nb) = (dot(a, a).sqrt(), dot(b, b).sqrt());
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot(a, b) / (na * nb)
    }
}

/// Computes one `grads.jsonl` line. `probes[k]` is task `k`'s probe batch with its gold tags.
pub fn measure<B: Backend + 'static>(
    tagger: &Tagger<B>,
    task_names: &[String],
    probes: &[(ModelInput<'_>, &[u32])],
    step: u64,
    epoch: usize,
    update_ratio: f64,
) -> anyhow::Result<GradsLine> {
    let ids: Vec<ParamId> = tagger.params().iter().map(|(id, _, _)| id).collect();
    let shared: Vec<ParamId> = ids
        .iter()
        .copied()
        .filter(|&id| tagger.param_owner(id).is_none())
        .collect();
    let mut vectors = Vec::new();
    let mut line = GradsLine {
        step,
        epoch,
        shared_norm: BTreeMap::new(),
        specific_norm: BTreeMap::new(),
        cosine: BTreeMap::new(),
        update_ratio,
    };
    for (k, (input, gold)) in probes.iter().enumerate() {
        let mut tape = tagger.tape();
        let loss = tagger.loss(&mut tape, input, k, gold, PROBE_DROPOUT_SEED)?;
        let grads = tape.backward(loss)?.into_param_grads();
        let v = shared_vector(&grads, &shared);
        let specific: f64 = ids
            .iter()
            .filter(|&&id| tagger.param_owner(id) == Some(k))
            .filter_map(|&id| grads.get(id))
            .map(|g| Real::to_f64(g.sq_norm()))
            .sum();
        line.shared_norm
            .insert(task_names[k].clone(), dot(&v, &v).sqrt());
        line.specific_norm
            .insert(task_names[k].clone(), specific.sqrt());
        vectors.push(v);
    }
    for a in 0..vectors.len() {
        for b in a + 1..vectors.len() {
            line.cosine.insert(
                format!("{}/{}", task_names[a], task_names[b]),
                cosine(&vectors[a], &vectors[b]),
            );
        }
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::cosine;

    #[test]
    fn cosine_of_parallel_opposite_and_orthogonal_vectors() {
        let a = vec![vec![1.0, 2.0], vec![3.0]];
        let b = vec![vec![2.0, 4.0], vec![6.0]];
        let c = vec![vec![-1.0, -2.0], vec![-3.0]];
        let d = vec![vec![2.0, -1.0], vec![0.0]];
        assert!((cosine(&a, &b) - 1.0).abs() < 1e-12);
        assert!((cosine(&a, &c) + 1.0).abs() < 1e-12);
        assert!(cosine(&a, &d).abs() < 1e-12);
        assert_eq!(cosine(&a, &[vec![0.0, 0.0], vec![0.0]]), 0.0);
    }

    #[test]
    fn parameters_missing_from_one_task_count_as_zero() {
        // Task b has no gradient on the first parameter (empty vector).
        let a = vec![vec![1.0, 0.0], vec![1.0]];
        let b = vec![vec![], vec![1.0]];
        assert!((cosine(&a, &b) - 1.0 / 2f64.sqrt()).abs() < 1e-12);
    }
}
