//! Gradients: dense matrices, or sparse row sets for embedding tables.

use ndarray::{Array2, Axis};
use rayon::ThreadPool;
use rayon::prelude::*;
use sclstm_core::{Matrix, NumError, Real};

use crate::{ParamId, Var};

/// Gradient w.r.t. some rows of an `n_rows × dim` matrix; every other row is zero.
///
/// `rows` is sorted and free of duplicates; row `r = rows[i]` has gradient `values[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RowGrad<R> {
    /// Rows of the full matrix.
    pub n_rows: usize,
    /// Touched rows, ascending, unique.
    pub rows: Vec<usize>,
    /// Gradient of each touched row: (rows.len(), dim).
    pub values: Matrix<R>,
}

impl<R: Real> RowGrad<R> {
    /// Builds a row gradient from per-position gradients `d_out` (one row per id),
    /// summing the positions that share an id. Summation is in position order within
    /// each row, so the result is deterministic.
    pub fn from_ids(n_rows: usize, ids: &[usize], d_out: &Matrix<R>) -> Self {
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&p| ids[p]); // stable: positions stay in order per id
        let mut rows = Vec::new();
        let mut values = Array2::zeros((0, d_out.ncols()));
        let mut current = usize::MAX;
        for p in order {
            if ids[p] != current {
                current = ids[p];
                rows.push(current);
                values
                    .push_row(d_out.row(p))
                    .expect("internal: row width matches");
            } else {
                let mut last = values.row_mut(rows.len() - 1);
                last += &d_out.row(p);
            }
        }
        RowGrad {
            n_rows,
            rows,
            values,
        }
    }

    /// The equivalent dense matrix.
    pub fn to_dense(&self) -> Matrix<R> {
        let mut d = Array2::zeros((self.n_rows, self.values.ncols()));
        self.add_to(&mut d);
        d
    }

    /// Adds these rows into a dense matrix of the full shape.
    pub fn add_to(&self, dense: &mut Matrix<R>) {
        for (i, &r) in self.rows.iter().enumerate() {
            let mut row = dense.row_mut(r);
            row += &self.values.row(i);
        }
    }

    /// Merges another row gradient of the same table into this one.
    fn merge(&mut self, other: &RowGrad<R>) {
        let dim = self.values.ncols();
        let mut rows = Vec::with_capacity(self.rows.len() + other.rows.len());
        let mut values = Array2::zeros((0, dim));
        let (mut i, mut j) = (0, 0);
        while i < self.rows.len() || j < other.rows.len() {
            let take_self =
                j >= other.rows.len() || (i < self.rows.len() && self.rows[i] <= other.rows[j]);
            let take_other =
                i >= self.rows.len() || (j < other.rows.len() && other.rows[j] <= self.rows[i]);
            let mut row = Array2::zeros((1, dim));
            let mut r = 0;
            if take_self {
                row.row_mut(0).assign(&self.values.row(i));
                r = self.rows[i];
                i += 1;
            }
            if take_other {
                let mut first = row.row_mut(0);
                first += &other.values.row(j);
                r = other.rows[j];
                j += 1;
            }
            rows.push(r);
            values
                .push_row(row.row(0))
                .expect("internal: row width matches");
        }
        self.rows = rows;
        self.values = values;
    }
}

/// A gradient: dense, or sparse rows of an embedding table.
#[derive(Debug, Clone, PartialEq)]
pub enum Grad<R> {
    /// A full matrix of the variable's shape.
    Dense(Matrix<R>),
    /// Only some rows are non-zero.
    Rows(RowGrad<R>),
}

impl<R: Real> Grad<R> {
    /// Shape of the variable this gradient belongs to.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Grad::Dense(m) => m.dim(),
            Grad::Rows(r) => (r.n_rows, r.values.ncols()),
        }
    }

    /// The gradient as a dense matrix (a copy).
    pub fn to_dense(&self) -> Matrix<R> {
        match self {
            Grad::Dense(m) => m.clone(),
            Grad::Rows(r) => r.to_dense(),
        }
    }

    /// The stored values: the whole matrix, or only the touched rows.
    pub fn values(&self) -> &Matrix<R> {
        match self {
            Grad::Dense(m) => m,
            Grad::Rows(r) => &r.values,
        }
    }

    /// Sum of squares of all elements (rows absent from a sparse gradient are zero).
    pub fn sq_norm(&self) -> R {
        let v = self.values();
        match v.as_slice() {
            Some(xs) => sum_of_squares(xs),
            None => v.iter().map(|&x| x * x).sum(),
        }
    }

    /// A dense view of this gradient, converting sparse rows in place first.
    pub(crate) fn make_dense(&mut self) -> &mut Matrix<R> {
        if let Grad::Rows(r) = self {
            *self = Grad::Dense(r.to_dense());
        }
        match self {
            Grad::Dense(m) => m,
            Grad::Rows(_) => unreachable!("internal: converted above"),
        }
    }

    /// Adds `other` (same shape) into this gradient: rows + rows stays sparse.
    ///
    /// # Errors
    /// [`NumError::ShapeMismatch`] if the shapes differ.
    pub fn accumulate(&mut self, other: &Grad<R>) -> Result<(), NumError> {
        if self.shape() != other.shape() {
            let (a, b) = (self.shape(), other.shape());
            return Err(NumError::ShapeMismatch {
                op: "grad accumulate",
                lhs: vec![a.0, a.1],
                rhs: vec![b.0, b.1],
            });
        }
        match (&mut *self, other) {
            (Grad::Rows(a), Grad::Rows(b)) => a.merge(b),
            (_, Grad::Rows(b)) => b.add_to(self.make_dense()),
            (_, Grad::Dense(b)) => *self.make_dense() += b,
        }
        Ok(())
    }
}

/// `Σ x²` with eight interleaved partial sums, so the loop vectorizes; the order is
/// fixed, so the result is deterministic.
fn sum_of_squares<R: Real>(xs: &[R]) -> R {
    let mut acc = [R::zero(); 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x * x;
        }
    }
    let tail: R = rest.iter().map(|&x| x * x).sum();
    acc.iter().copied().sum::<R>() + tail
}

/// Adds a contribution into an optional gradient slot.
pub(crate) fn add_into<R: Real>(slot: &mut Option<Grad<R>>, g: Grad<R>) -> Result<(), NumError> {
    match slot {
        None => *slot = Some(g),
        Some(s) => s.accumulate(&g)?,
    }
    Ok(())
}

/// A dense gradient slot of the given shape, created as zeros if empty.
pub(crate) fn dense_slot<R: Real>(
    slot: &mut Option<Grad<R>>,
    shape: (usize, usize),
) -> &mut Matrix<R> {
    slot.get_or_insert_with(|| Grad::Dense(Array2::zeros(shape)))
        .make_dense()
}

/// The result of [`crate::Tape::backward`]: gradients of the leaves (inputs and
/// parameters) of the tape. Gradients of intermediate nodes are freed as soon as
/// they have been propagated, unless requested with [`crate::Tape::backward_keeping`].
#[derive(Debug, Clone)]
pub struct Grads<R> {
    pub(crate) vars: Vec<Option<Grad<R>>>,
    /// Var of each parameter on the tape, indexed by [`ParamId`].
    pub(crate) param_vars: Vec<Option<Var>>,
}

impl<R: Real> Grads<R> {
    /// Gradient of a leaf or kept variable (`None`: no gradient reached it, or it was
    /// an intermediate var that was not kept).
    pub fn get(&self, v: Var) -> Option<&Grad<R>> {
        self.vars.get(v.index()).and_then(Option::as_ref)
    }

    /// Gradient of a parameter (`None`: not on the tape or no gradient reached it).
    pub fn param(&self, id: ParamId) -> Option<&Grad<R>> {
        let v = (*self.param_vars.get(id.index())?)?;
        self.get(v)
    }

    /// Moves the parameter gradients out, indexed by [`ParamId`].
    pub fn into_param_grads(mut self) -> ParamGrads<R> {
        let grads = self
            .param_vars
            .iter()
            .map(|v| v.and_then(|v| self.vars[v.index()].take()))
            .collect();
        ParamGrads { grads }
    }
}

/// Gradients of parameters, indexed by [`ParamId`]: what optimizers and clipping consume.
#[derive(Debug, Clone, Default)]
pub struct ParamGrads<R> {
    grads: Vec<Option<Grad<R>>>,
}

impl<R: Real> ParamGrads<R> {
    /// No gradient for any parameter.
    pub fn new() -> Self {
        ParamGrads { grads: Vec::new() }
    }

    /// The gradient of one parameter.
    pub fn get(&self, id: ParamId) -> Option<&Grad<R>> {
        self.grads.get(id.index()).and_then(Option::as_ref)
    }

    /// Sets (replaces) the gradient of one parameter.
    pub fn set(&mut self, id: ParamId, g: Grad<R>) {
        if self.grads.len() <= id.index() {
            self.grads.resize(id.index() + 1, None);
        }
        self.grads[id.index()] = Some(g);
    }

    /// Adds another set of gradients into this one (e.g. the losses of several tasks).
    ///
    /// # Errors
    /// [`NumError::ShapeMismatch`] if a parameter's gradients disagree in shape.
    pub fn accumulate(&mut self, other: ParamGrads<R>) -> Result<(), NumError> {
        if self.grads.len() < other.grads.len() {
            self.grads.resize(other.grads.len(), None);
        }
        for (slot, g) in self.grads.iter_mut().zip(other.grads) {
            if let Some(g) = g {
                add_into(slot, g)?;
            }
        }
        Ok(())
    }

    /// All present gradients as `(id, grad)`.
    pub fn iter(&self) -> impl Iterator<Item = (ParamId, &Grad<R>)> {
        self.grads
            .iter()
            .enumerate()
            .filter_map(|(i, g)| g.as_ref().map(|g| (ParamId(i as u32), g)))
    }

    /// All present gradients, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ParamId, &mut Grad<R>)> {
        self.grads
            .iter_mut()
            .enumerate()
            .filter_map(|(i, g)| g.as_mut().map(|g| (ParamId(i as u32), g)))
    }

    /// Euclidean norm of all gradients taken together (sparse rows count once each). With
    /// `pool`, the parameters' sums of squares are taken on its threads; they are added in
    /// parameter order either way, so the result does not depend on it.
    pub fn global_norm(&self, pool: Option<&ThreadPool>) -> R {
        let grads: Vec<&Grad<R>> = self.iter().map(|(_, g)| g).collect();
        let squares: Vec<f64> = match pool {
            Some(pool) => pool.install(|| grads.par_iter().map(|g| g.sq_norm().to_f64()).collect()),
            None => grads.iter().map(|g| g.sq_norm().to_f64()).collect(),
        };
        R::from_f64(squares.iter().sum::<f64>().sqrt())
    }
}

/// Sum over rows: (n, d) → (1, d).
pub(crate) fn col_sums<R: Real>(d: &Matrix<R>) -> Matrix<R> {
    d.sum_axis(Axis(0)).insert_axis(Axis(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn row_grad_sums_repeated_ids_and_merges() {
        let d = array![[1.0, 1.0], [2.0, 2.0], [4.0, 4.0]];
        let g = RowGrad::from_ids(5, &[3, 0, 3], &d);
        assert_eq!(g.rows, vec![0, 3]);
        assert_eq!(g.values, array![[2.0, 2.0], [5.0, 5.0]]);
        let mut a = Grad::Rows(g.clone());
        let b = Grad::Rows(RowGrad::from_ids(
            5,
            &[1, 3],
            &array![[1.0, 0.0], [0.0, 1.0]],
        ));
        a.accumulate(&b).unwrap();
        let Grad::Rows(merged) = &a else {
            panic!("rows + rows must stay sparse")
        };
        assert_eq!(merged.rows, vec![0, 1, 3]);
        assert_eq!(a.to_dense(), g.to_dense() + b.to_dense());
        let mut dense = Grad::Dense(Array2::ones((5, 2)));
        dense.accumulate(&a).unwrap();
        assert_eq!(dense.to_dense(), a.to_dense() + 1.0);
        assert!(
            dense
                .accumulate(&Grad::Dense(Array2::zeros((2, 2))))
                .is_err()
        );
    }

    #[test]
    fn global_norm_counts_every_parameter() {
        let mut pg = ParamGrads::<f64>::new();
        pg.set(ParamId(0), Grad::Dense(array![[3.0]]));
        pg.set(
            ParamId(2),
            Grad::Rows(RowGrad::from_ids(9, &[4], &array![[4.0]])),
        );
        assert_eq!(pg.global_norm(None), 5.0);
        assert!(pg.get(ParamId(1)).is_none());
    }
}
