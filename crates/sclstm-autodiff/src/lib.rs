//! Wengert-list reverse-mode autodiff for sclstm, written from scratch.
//!
//! - [`Tape`]: nodes pushed in execution order, [`Var`] indices, [`Op`] enum with one
//!   exhaustive backward `match`, printable with `{:?}`. [`Tape::no_grad`] gives an
//!   evaluation tape that records nothing.
//! - [`ParamStore`]: named parameters entered on a tape by id without copying;
//!   [`Grads`] / [`ParamGrads`] return their gradients by [`ParamId`], sparse
//!   ([`Grad::Rows`]) for embedding tables.
//! - [`optim`]: SGD, Adam (PyTorch defaults), global-norm clipping, exportable state.
//! - [`gradcheck`]: central finite differences in f64 for every op, reusable by fused layers.
//!
//! ```
//! use ndarray::array;
//! use sclstm_autodiff::Tape;
//!
//! // y = Σ (x ⊙ x)  ⇒  dy/dx = 2x
//! let mut tape = Tape::<f64>::new();
//! let x = tape.leaf(array![[1.0, -2.0]]);
//! let sq = tape.mul(x, x).unwrap();
//! let y = tape.sum(sq).unwrap();
//! let grads = tape.backward(y).unwrap();
//! assert_eq!(grads.get(x).unwrap().to_dense(), array![[2.0, -4.0]]);
//! ```

pub mod gradcheck;
mod grads;
pub mod ops;
pub mod optim;
mod params;
mod tape;

pub use grads::{Grad, Grads, ParamGrads, RowGrad};
pub use params::{ParamId, ParamStore};
pub use tape::{DropoutRate, Op, Reduction, Tape, Var};

/// Errors from parameter handling, optimizer state and op configuration (numeric
/// errors are [`sclstm_core::NumError`]).
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum AutodiffError {
    /// A parameter name used twice.
    #[error("parameter {0:?} already exists")]
    Duplicate(String),
    /// A name that no parameter has.
    #[error("no parameter named {0:?}")]
    Unknown(String),
    /// A value whose shape differs from the parameter's.
    #[error("parameter {name:?}: expected shape {expected:?}, found {found:?}")]
    Shape {
        /// Parameter name.
        name: String,
        /// The parameter's shape.
        expected: (usize, usize),
        /// The shape given.
        found: (usize, usize),
    },
    /// A dropout probability outside `[0, 1)`.
    #[error("dropout probability must be in [0, 1), got {0}")]
    InvalidDropout(f64),
    /// Optimizer state that does not fit the parameters.
    #[error("optimizer state: {0}")]
    State(String),
}

#[cfg(test)]
mod tests {
    use super::optim::{Adam, AdamConfig};
    use super::*;
    use ndarray::Array2;
    use sclstm_core::{Matrix, NumError};

    /// Trains a tiny embedding + linear softmax tagger for a few Adam steps; returns the
    /// losses and the final parameters.
    fn train(pool: Option<&rayon::ThreadPool>) -> Result<(Vec<f32>, Vec<Matrix<f32>>), NumError> {
        let mut store = ParamStore::<f32>::new();
        let emb = store
            .add(
                "emb",
                Array2::from_shape_fn((50, 8), |(i, j)| ((i * 8 + j) as f32 * 0.37).sin() * 0.3),
            )
            .expect("fresh");
        let w = store
            .add(
                "w",
                Array2::from_shape_fn((8, 3), |(i, j)| ((i * 3 + j) as f32 * 0.71).cos() * 0.3),
            )
            .expect("fresh");
        let b = store.add("b", Array2::zeros((1, 3))).expect("fresh");
        let ids = [3, 17, 17, 42, 5, 9];
        let labels = [0, 1, 1, 2, 0, 2];
        let mask = [true, true, true, true, true, false];
        let mut adam = Adam::new(AdamConfig {
            lr: 0.05,
            ..AdamConfig::default()
        });
        let mut losses = Vec::new();
        for _ in 0..30 {
            let grads = {
                let mut t = Tape::with_params(&store).with_pool(pool);
                let (e, wv, bv) = (t.param(emb)?, t.param(w)?, t.param(b)?);
                let x = t.embedding(e, &ids)?;
                let z = t.matmul(x, wv)?;
                let z = t.add_bias(z, bv)?;
                let loss = t.cross_entropy(z, &labels, &mask, Reduction::Mean)?;
                losses.push(t.value(loss)[[0, 0]]);
                t.backward(loss)?.into_param_grads()
            };
            adam.step_clipped(&mut store, &grads, 5.0, None)
                .expect("shapes match");
        }
        let params = store.iter().map(|(_, _, v)| v.clone()).collect();
        Ok((losses, params))
    }

    #[test]
    fn tiny_tagger_learns_and_is_deterministic() -> Result<(), NumError> {
        let (losses, params) = train(None)?;
        assert!(losses[29] < 0.2 * losses[0], "{losses:?}");
        let (losses2, params2) = train(None)?;
        assert_eq!(losses, losses2);
        assert_eq!(params, params2);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool");
        let (losses3, _) = train(Some(&pool))?;
        for (a, b) in losses.iter().zip(&losses3) {
            assert!((a - b).abs() < 1e-5);
        }
        Ok(())
    }
}
