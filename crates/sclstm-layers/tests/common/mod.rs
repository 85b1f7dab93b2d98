//! Shared helpers of the layer checks: deterministic inputs, central finite differences
//! and tolerance checks that print the index, both values and the shape on failure.

use ndarray::Array2;

/// Host matrix in f64.
pub type M = Array2<f64>;

/// Deterministic pseudo-random matrix with entries in about `[-scale, scale]`
/// (a `sin` formula, so a script could reproduce it).
pub fn det(rows: usize, cols: usize, seed: f64, scale: f64) -> M {
    Array2::from_shape_fn((rows, cols), |(r, c)| {
        let k = (r * cols + c) as f64;
        scale * ((k + 1.0) * 0.7137 + seed * 1.931).sin()
    })
}

/// `Σ out ⊙ weights`: a scalar loss whose gradient w.r.t. `out` is `weights`.
pub fn weighted_sum(out: &M, weights: &M) -> f64 {
    out.iter().zip(weights.iter()).map(|(a, b)| a * b).sum()
}

/// Central-difference gradient of `f` w.r.t. every entry of every matrix in `inputs`
/// (the autodiff crate's [`sclstm_autodiff::gradcheck::numeric_gradient`]).
pub fn numeric_grads(inputs: &[M], f: &dyn Fn(&[M]) -> f64) -> Vec<M> {
    let never: Result<Vec<M>, std::convert::Infallible> =
        sclstm_autodiff::gradcheck::numeric_gradient(inputs, |w| Ok(f(w)));
    match never {
        Ok(g) => g,
        Err(e) => match e {},
    }
}

/// Compares analytic gradients with finite differences under the workspace's one pass
/// rule ([`sclstm_autodiff::gradcheck::fd_error`] ≤ [`sclstm_autodiff::gradcheck::TOL`]);
/// on failure the message names the input, the index, both values and the shape.
pub fn compare_fd(what: &str, names: &[String], got: &[M], numeric: &[M]) -> Result<(), String> {
    use sclstm_autodiff::gradcheck::{TOL, fd_error};
    if got.len() != numeric.len() {
        return Err(format!(
            "{what}: {} gradients vs {}",
            got.len(),
            numeric.len()
        ));
    }
    for (k, (g, n)) in got.iter().zip(numeric).enumerate() {
        let name = names.get(k).map_or("?", String::as_str);
        if g.dim() != n.dim() {
            return Err(format!(
                "{what}: {name}: shape {:?} vs {:?}",
                g.dim(),
                n.dim()
            ));
        }
        for ((idx, &a), &b) in g.indexed_iter().zip(n.iter()) {
            let err = fd_error(a, b);
            if err > TOL {
                return Err(format!(
                    "{what}: {name} {:?} at {idx:?}: {a:e} vs finite differences {b:e} (error {err:e} > {TOL:e})",
                    g.dim()
                ));
            }
        }
    }
    Ok(())
}

/// Compares two computations of the same values (not finite differences: see
/// [`compare_fd`]) entry by entry with `|a − b| ≤ abs + rel·|b|`; on the first failure
/// returns a message naming the input, the index, both values and the shape.
pub fn compare(
    what: &str,
    names: &[String],
    got: &[M],
    want: &[M],
    abs: f64,
    rel: f64,
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{what}: {} gradients vs {}", got.len(), want.len()));
    }
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        let name = names.get(k).map_or("?", String::as_str);
        if g.dim() != w.dim() {
            return Err(format!(
                "{what}: {name}: shape {:?} vs {:?}",
                g.dim(),
                w.dim()
            ));
        }
        for ((idx, &a), &b) in g.indexed_iter().zip(w.iter()) {
            let within = (a - b).abs() <= abs + rel * b.abs();
            if !within {
                return Err(format!(
                    "{what}: {name} {:?} at {idx:?}: {a:e} vs {b:e} (|diff| {:e})",
                    g.dim(),
                    (a - b).abs()
                ));
            }
        }
    }
    Ok(())
}

/// Unwraps a list of optional gradients, failing on a missing one.
pub fn all_some(grads: Vec<Option<M>>) -> Vec<M> {
    grads
        .into_iter()
        .enumerate()
        .map(|(k, g)| g.unwrap_or_else(|| panic!("gradient {k} missing")))
        .collect()
}
