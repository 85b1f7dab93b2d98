//! Optimizers (SGD, Adam) and global-norm gradient clipping, with PyTorch semantics.
//!
//! # Sparse gradients
//! An embedding table's gradient arrives as [`Grad::Rows`]. SGD updates only those rows
//! (exactly what a dense update with zero rows does). Adam offers two modes:
//!
//! - [`SparseMode::DenseEquivalent`] (default): the same result as PyTorch's dense
//!   `torch.optim.Adam` on the dense gradient. Rows not in this step's gradient still
//!   decay their moments and move by their momentum. Rows whose moments are still zero
//!   (never touched) provably do not move, so only rows touched at least once are
//!   updated: the arithmetic is `O(#rows ever touched · dim)` per step, not `O(V · dim)`
//!   (plus one flag per row saying what it takes). With a pool, runs of rows are updated
//!   on its threads.
//! - [`SparseMode::Lazy`]: only the rows in this step's gradient are updated (like
//!   `torch.optim.SparseAdam`); untouched rows keep their moments unchanged.
//!
//! A parameter without a gradient in a step is skipped entirely and its step count
//! does not advance (PyTorch skips parameters whose `.grad` is `None`).

use rayon::ThreadPool;
use rayon::prelude::*;
use sclstm_core::{Matrix, Real};
use sclstm_cpu::kernels::Kernels;

use crate::{AutodiffError, Grad, ParamGrads, ParamId, ParamStore};

/// Elements per task when a dense Adam update is split across threads.
const PAR_CHUNK: usize = 1 << 15;

/// The factor `torch.nn.utils.clip_grad_norm_` multiplies every gradient by, given their
/// global norm `total` ([`ParamGrads::global_norm`]): `max_norm / (total + 1e-6)` when that
/// is below 1, else 1. Pass it to [`Adam::step_scaled`], which applies it as it reads each
/// gradient.
pub fn clip_coef(total: f64, max_norm: f64) -> f64 {
    let coef = max_norm / (total + 1e-6);
    coef.min(1.0)
}

/// Plain stochastic gradient descent: `p ← p − lr · g`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sgd {
    /// Learning rate.
    pub lr: f64,
}

impl Sgd {
    /// Applies one step to every parameter that has a gradient.
    ///
    /// # Errors
    /// [`AutodiffError::Shape`] if a gradient's shape differs from its parameter's.
    pub fn step<R: Real>(
        &self,
        params: &mut ParamStore<R>,
        grads: &ParamGrads<R>,
    ) -> Result<(), AutodiffError> {
        let lr = R::from_f64(self.lr);
        for (id, g) in grads.iter() {
            check_shape(params, id, g)?;
            let p = params.get_mut(id);
            match g {
                Grad::Dense(d) => p.scaled_add(-lr, d),
                Grad::Rows(rows) => {
                    for (i, &r) in rows.rows.iter().enumerate() {
                        p.row_mut(r).scaled_add(-lr, &rows.values.row(i));
                    }
                }
            }
        }
        Ok(())
    }
}

fn check_shape<R: Real>(
    params: &ParamStore<R>,
    id: ParamId,
    g: &Grad<R>,
) -> Result<(), AutodiffError> {
    let expected = params.get(id).dim();
    if id.index() >= params.len() || g.shape() != expected {
        return Err(AutodiffError::Shape {
            name: params.name(id).to_string(),
            expected,
            found: g.shape(),
        });
    }
    Ok(())
}

/// How Adam treats rows missing from a sparse gradient (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SparseMode {
    /// Identical to dense Adam on the dense gradient.
    #[default]
    DenseEquivalent,
    /// Only rows present in the gradient are updated.
    Lazy,
}

/// Adam hyper-parameters; [`Default`] gives PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Learning rate (1e-3).
    pub lr: f64,
    /// First-moment decay β₁ (0.9).
    pub beta1: f64,
    /// Second-moment decay β₂ (0.999).
    pub beta2: f64,
    /// Denominator term ε (1e-8).
    pub eps: f64,
    /// Treatment of sparse row gradients.
    pub sparse: SparseMode,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            sparse: SparseMode::DenseEquivalent,
        }
    }
}

/// Exported Adam state of one parameter (for checkpoints).
#[derive(Debug, Clone, PartialEq)]
pub struct AdamParamState<R> {
    /// Steps taken by this parameter.
    pub step: u64,
    /// First moment `m`, the parameter's shape.
    pub m: Matrix<R>,
    /// Second moment `v`, the parameter's shape.
    pub v: Matrix<R>,
}

/// What one row of a parameter takes in a step with a row gradient.
#[derive(Debug, Clone, Copy, PartialEq)]
enum RowSource {
    /// Not updated.
    Skip,
    /// Updated with a zero gradient (its moments decay, it moves by its momentum).
    Zero,
    /// Updated with this row of the gradient.
    Grad(usize),
}

/// Internal per-parameter state.
#[derive(Debug, Clone)]
struct Slot<R> {
    state: AdamParamState<R>,
    /// For parameters updated by row gradients: the step at which each row was last
    /// in a gradient (0 = never, so its moments are zero and it cannot move).
    /// `None` once the parameter has had a dense gradient (every row is live).
    last_touch: Option<Vec<u64>>,
    /// Rows with `last_touch > 0`, in first-touch order.
    live_rows: Vec<usize>,
}

/// Adam (Kingma & Ba) with bias correction, written as `torch.optim.Adam` computes it:
/// `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `p ← p − (lr / (1−β₁ᵗ)) · m / (√v / √(1−β₂ᵗ) + ε)`.
#[derive(Debug, Clone)]
pub struct Adam<R> {
    /// Hyper-parameters.
    pub config: AdamConfig,
    slots: Vec<Option<Slot<R>>>,
}

impl<R: Real> Adam<R> {
    /// A fresh optimizer (all moments zero).
    pub fn new(config: AdamConfig) -> Self {
        Adam {
            config,
            slots: Vec::new(),
        }
    }

    /// Applies one step to every parameter that has a gradient.
    ///
    /// # Errors
    /// [`AutodiffError::Shape`] if a gradient's shape differs from its parameter's.
    pub fn step(
        &mut self,
        params: &mut ParamStore<R>,
        grads: &ParamGrads<R>,
    ) -> Result<(), AutodiffError> {
        self.step_scaled(params, grads, 1.0, None)
    }

    /// Clips the gradients to the global norm `max_norm` and takes a step, as
    /// `torch.nn.utils.clip_grad_norm_` followed by `torch.optim.Adam.step` do: the norm is
    /// summed on `pool` ([`ParamGrads::global_norm`]) and the coefficient ([`clip_coef`])
    /// applied as Adam reads each gradient ([`Adam::step_scaled`]). Returns the norm before
    /// clipping; when it is not finite nothing is updated, so the caller can stop with the
    /// parameters as they were.
    ///
    /// # Errors
    /// [`AutodiffError::Shape`] if a gradient's shape differs from its parameter's.
    pub fn step_clipped(
        &mut self,
        params: &mut ParamStore<R>,
        grads: &ParamGrads<R>,
        max_norm: f64,
        pool: Option<&ThreadPool>,
    ) -> Result<f64, AutodiffError> {
        let norm = grads.global_norm(pool).to_f64();
        if norm.is_finite() {
            self.step_scaled(params, grads, clip_coef(norm, max_norm), pool)?;
        }
        Ok(norm)
    }

    /// [`Adam::step`] on the gradients multiplied by `scale` (a clipping coefficient,
    /// [`clip_coef`]: each gradient element is multiplied as it is read, exactly as a
    /// separate scaling pass would, without that pass), with dense updates split over `pool`
    /// in fixed chunks (the update is elementwise, so the result is the same for any thread
    /// count).
    ///
    /// # Errors
    /// [`AutodiffError::Shape`] if a gradient's shape differs from its parameter's.
    pub fn step_scaled(
        &mut self,
        params: &mut ParamStore<R>,
        grads: &ParamGrads<R>,
        scale: f64,
        pool: Option<&ThreadPool>,
    ) -> Result<(), AutodiffError> {
        if self.slots.len() < params.len() {
            self.slots.resize_with(params.len(), || None);
        }
        for (id, g) in grads.iter() {
            check_shape(params, id, g)?;
            let p = params.get_mut(id);
            let slot = self.slots[id.index()].get_or_insert_with(|| Slot {
                state: AdamParamState {
                    step: 0,
                    m: Matrix::zeros(p.dim()),
                    v: Matrix::zeros(p.dim()),
                },
                last_touch: Some(vec![0; p.nrows()]),
                live_rows: Vec::new(),
            });
            slot.state.step += 1;
            let k = Coefs::new(&self.config, slot.state.step, scale);
            match g {
                Grad::Dense(d) => {
                    slot.last_touch = None;
                    slot.live_rows = Vec::new();
                    let st = &mut slot.state;
                    let flat = (
                        p.as_slice_mut(),
                        st.m.as_slice_mut(),
                        st.v.as_slice_mut(),
                        d.as_slice(),
                    );
                    if let (Some(ps), Some(ms), Some(vs), Some(ds)) = flat {
                        match pool {
                            Some(pool) if ps.len() >= 2 * PAR_CHUNK => pool.install(|| {
                                ps.par_chunks_mut(PAR_CHUNK)
                                    .zip(ms.par_chunks_mut(PAR_CHUNK))
                                    .zip(vs.par_chunks_mut(PAR_CHUNK))
                                    .zip(ds.par_chunks(PAR_CHUNK))
                                    .for_each(|(((p, m), v), g)| {
                                        k.update_slices(p, m, v, Some(g));
                                    });
                            }),
                            _ => k.update_slices(ps, ms, vs, Some(ds)),
                        }
                    } else {
                        for r in 0..p.nrows() {
                            k.update_row(p, &mut st.m, &mut st.v, r, Some(d.row(r)));
                        }
                    }
                }
                Grad::Rows(rows) => {
                    let step = slot.state.step;
                    if let Some(touch) = &mut slot.last_touch {
                        for &r in &rows.rows {
                            if touch[r] == 0 {
                                slot.live_rows.push(r);
                            }
                            touch[r] = step;
                        }
                    }
                    // What each parameter row takes this step: its gradient row, a zero
                    // gradient (live rows missing from it, unless lazy), or nothing.
                    let mut source = vec![RowSource::Skip; p.nrows()];
                    if self.config.sparse == SparseMode::DenseEquivalent {
                        match &slot.last_touch {
                            Some(_) => {
                                for &r in &slot.live_rows {
                                    source[r] = RowSource::Zero;
                                }
                            }
                            None => source.fill(RowSource::Zero),
                        }
                    }
                    for (i, &r) in rows.rows.iter().enumerate() {
                        source[r] = RowSource::Grad(i);
                    }
                    let st = &mut slot.state;
                    let g = rows.values.as_slice();
                    let dim = p.ncols();
                    let flat = (p.as_slice_mut(), st.m.as_slice_mut(), st.v.as_slice_mut());
                    match (flat, g, pool) {
                        // Rows are independent: split them over the pool in runs of rows.
                        ((Some(ps), Some(ms), Some(vs)), Some(g), Some(pool)) if dim > 0 => {
                            let rows_per_task = PAR_CHUNK.div_ceil(dim);
                            pool.install(|| {
                                ps.par_chunks_mut(rows_per_task * dim)
                                    .zip(ms.par_chunks_mut(rows_per_task * dim))
                                    .zip(vs.par_chunks_mut(rows_per_task * dim))
                                    .zip(source.par_chunks(rows_per_task))
                                    .for_each(|(((p, m), v), source)| {
                                        let runs = p
                                            .chunks_mut(dim)
                                            .zip(m.chunks_mut(dim))
                                            .zip(v.chunks_mut(dim))
                                            .zip(source);
                                        for (((p, m), v), src) in runs {
                                            let g = match *src {
                                                RowSource::Skip => continue,
                                                RowSource::Zero => None,
                                                RowSource::Grad(i) => {
                                                    Some(&g[i * dim..(i + 1) * dim])
                                                }
                                            };
                                            k.update_slices(p, m, v, g);
                                        }
                                    });
                            });
                        }
                        _ => {
                            for (r, src) in source.iter().enumerate() {
                                let g = match *src {
                                    RowSource::Skip => continue,
                                    RowSource::Zero => None,
                                    RowSource::Grad(i) => Some(rows.values.row(i)),
                                };
                                k.update_row(p, &mut st.m, &mut st.v, r, g);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The state of every parameter that has taken a step, keyed by parameter name.
    pub fn export(&self, params: &ParamStore<R>) -> Vec<(String, AdamParamState<R>)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let s = s.as_ref()?;
                Some((params.name(ParamId(i as u32)).to_string(), s.state.clone()))
            })
            .collect()
    }

    /// Restores state exported by [`Adam::export`] (parameters absent from `state`
    /// start fresh). Rows with non-zero moments are treated as live.
    ///
    /// # Errors
    /// [`AutodiffError::Unknown`] for a name not in `params`; [`AutodiffError::Shape`]
    /// if a moment's shape differs from its parameter's.
    pub fn import(
        &mut self,
        params: &ParamStore<R>,
        state: Vec<(String, AdamParamState<R>)>,
    ) -> Result<(), AutodiffError> {
        let mut slots: Vec<Option<Slot<R>>> = (0..params.len()).map(|_| None).collect();
        for (name, st) in state {
            let id = params
                .id(&name)
                .ok_or_else(|| AutodiffError::Unknown(name.clone()))?;
            let expected = params.get(id).dim();
            for found in [st.m.dim(), st.v.dim()] {
                if found != expected {
                    return Err(AutodiffError::Shape {
                        name,
                        expected,
                        found,
                    });
                }
            }
            let zero = R::zero();
            let live_rows: Vec<usize> = (0..expected.0)
                .filter(|&r| {
                    st.m.row(r).iter().any(|&x| x != zero) || st.v.row(r).iter().any(|&x| x != zero)
                })
                .collect();
            let mut touch = vec![0; expected.0];
            for &r in &live_rows {
                touch[r] = 1;
            }
            slots[id.index()] = Some(Slot {
                state: st,
                last_touch: Some(touch),
                live_rows,
            });
        }
        self.slots = slots;
        Ok(())
    }
}

/// Per-step constants of the Adam update.
struct Coefs<R> {
    beta1: R,
    beta2: R,
    one_minus_beta1: R,
    one_minus_beta2: R,
    step_size: R,
    bc2_sqrt: R,
    eps: R,
    grad_scale: R,
    /// The kernel set whose vector unit runs the update, resolved once per step.
    kernels: Kernels,
}

impl<R: Real> Coefs<R> {
    fn new(c: &AdamConfig, step: u64, grad_scale: f64) -> Self {
        let t = step as f64;
        let bc1 = 1.0 - c.beta1.powf(t);
        let bc2 = 1.0 - c.beta2.powf(t);
        Coefs {
            beta1: R::from_f64(c.beta1),
            beta2: R::from_f64(c.beta2),
            one_minus_beta1: R::from_f64(1.0 - c.beta1),
            one_minus_beta2: R::from_f64(1.0 - c.beta2),
            step_size: R::from_f64(c.lr / bc1),
            bc2_sqrt: R::from_f64(bc2.sqrt()),
            eps: R::from_f64(c.eps),
            grad_scale: R::from_f64(grad_scale),
            kernels: Kernels::active(),
        }
    }

    /// Updates row `r` of the parameter and its moments; `g = None` means a zero gradient.
    fn update_row(
        &self,
        p: &mut Matrix<R>,
        m: &mut Matrix<R>,
        v: &mut Matrix<R>,
        r: usize,
        g: Option<ndarray::ArrayView1<'_, R>>,
    ) {
        let (mut p, mut m, mut v) = (p.row_mut(r), m.row_mut(r), v.row_mut(r));
        let g_slice = g.as_ref().map(|g| g.as_slice());
        match (
            p.as_slice_mut(),
            m.as_slice_mut(),
            v.as_slice_mut(),
            g_slice,
        ) {
            (Some(p), Some(m), Some(v), None) => self.update_slices(p, m, v, None),
            (Some(p), Some(m), Some(v), Some(Some(g))) => self.update_slices(p, m, v, Some(g)),
            // Non-contiguous rows (a parameter stored in another memory order).
            _ => {
                for j in 0..p.len() {
                    let gj = g.as_ref().map_or(R::zero(), |g| g[j]);
                    self.update_one(&mut p[j], &mut m[j], &mut v[j], gj);
                }
            }
        }
    }

    /// Updates contiguous runs of parameters and moments, on the widest vector unit of the
    /// active kernel set ([`Kernels::active`], resolved in [`Coefs::new`]).
    fn update_slices(&self, p: &mut [R], m: &mut [R], v: &mut [R], g: Option<&[R]>) {
        update_on(self.kernels, self, p, m, v, g);
    }

    /// The element loop of [`Coefs::update_slices`], inlined into each vector unit's copy
    /// by [`update_on`].
    #[inline(always)]
    fn update_runs(&self, p: &mut [R], m: &mut [R], v: &mut [R], g: Option<&[R]>) {
        match g {
            Some(g) => {
                for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(g) {
                    self.update_one(p, m, v, g);
                }
            }
            None => {
                for ((p, m), v) in p.iter_mut().zip(m).zip(v) {
                    self.update_one(p, m, v, R::zero());
                }
            }
        }
    }

    /// One element, in the order `torch.optim.Adam` computes it.
    #[inline(always)]
    fn update_one(&self, p: &mut R, m: &mut R, v: &mut R, g: R) {
        // × 1 when not clipping: exact.
        let g = g * self.grad_scale;
        *m = self.beta1 * *m + self.one_minus_beta1 * g;
        *v = self.beta2 * *v + self.one_minus_beta2 * g * g;
        let denom = v.sqrt() / self.bc2_sqrt + self.eps;
        *p -= self.step_size * *m / denom;
    }
}

sclstm_cpu::on_vector_unit! {
    /// [`Coefs::update_runs`] on the vector unit of `kernels`.
    fn update_on<R: Real>(
        k: &Coefs<R>,
        p: &mut [R],
        m: &mut [R],
        v: &mut [R],
        g: Option<&[R]>,
    ) {
        k.update_runs(p, m, v, g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RowGrad;
    use ndarray::array;

    fn one_param(v: Matrix<f64>) -> (ParamStore<f64>, ParamId) {
        let mut s = ParamStore::new();
        let id = s.add("p", v).unwrap();
        (s, id)
    }

    fn dense(id: ParamId, g: Matrix<f64>) -> ParamGrads<f64> {
        let mut pg = ParamGrads::new();
        pg.set(id, Grad::Dense(g));
        pg
    }

    /// Two Adam steps on a scalar, lr 0.1, PyTorch's β and ε, p₀ = 1, g₁ = 0.5, g₂ = −0.2.
    ///
    /// Step 1: m = 0.1·0.5 = 0.05, v = 0.001·0.25 = 2.5e-4, bc1 = 0.1, bc2 = 0.001,
    /// denom = √(2.5e-4)/√0.001 + 1e-8 = 0.5 + 1e-8, p₁ = 1 − (0.1/0.1)·0.05/(0.5+1e-8)
    /// = 1 − 0.1/(1 + 2e-8) = 0.900000002 (to 1e-15: 0.9 + 1.9999999600e-9).
    /// Step 2: m = 0.9·0.05 + 0.1·(−0.2) = 0.025, v = 0.999·2.5e-4 + 0.001·0.04
    /// = 2.8975e-4, bc1 = 0.19, bc2 = 0.001999, denom = √(2.8975e-4/0.001999) + 1e-8
    /// = 0.3807196887, p₂ = p₁ − (0.1/0.19)·0.025/denom = p₁ − 0.0345605839 = 0.8654394181
    /// (m is still positive, so p keeps falling although g₂ < 0).
    #[test]
    fn adam_matches_hand_computed_steps() {
        let (mut s, id) = one_param(array![[1.0]]);
        let mut adam = Adam::new(AdamConfig {
            lr: 0.1,
            ..AdamConfig::default()
        });
        adam.step(&mut s, &dense(id, array![[0.5]])).unwrap();
        let p1 = 1.0 - 0.1 / (1.0 + 2e-8);
        assert!((s.get(id)[[0, 0]] - p1).abs() < 1e-15);
        adam.step(&mut s, &dense(id, array![[-0.2]])).unwrap();
        let denom = (2.8975e-4f64 / 0.001999).sqrt() + 1e-8;
        let p2 = p1 - (0.1 / 0.19) * 0.025 / denom;
        assert!((s.get(id)[[0, 0]] - p2).abs() < 1e-14);
        // The decimal value of p₂ from the algebra above.
        assert!((s.get(id)[[0, 0]] - 0.8654394181).abs() < 1e-9);
        let exported = adam.export(&s);
        assert_eq!(exported[0].0, "p");
        assert_eq!(exported[0].1.step, 2);
        assert!((exported[0].1.m[[0, 0]] - 0.025).abs() < 1e-15);
        assert!((exported[0].1.v[[0, 0]] - 2.8975e-4).abs() < 1e-15);
    }

    #[test]
    fn adam_on_a_pool_equals_serial_adam() {
        let big = Matrix::from_shape_fn((300, 400), |(i, j)| ((i * 400 + j) as f64).sin());
        let g = Matrix::from_shape_fn((300, 400), |(i, j)| ((i + 3 * j) as f64).cos());
        let (mut s1, id) = one_param(big.clone());
        let (mut s2, _) = one_param(big);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let mut a1 = Adam::new(AdamConfig::default());
        let mut a2 = Adam::new(AdamConfig::default());
        for _ in 0..2 {
            a1.step(&mut s1, &dense(id, g.clone())).unwrap();
            a2.step_scaled(&mut s2, &dense(id, g.clone()), 1.0, Some(&pool))
                .unwrap();
        }
        assert_eq!(s1.get(id), s2.get(id));
        assert_eq!(a1.export(&s1), a2.export(&s2));
    }

    #[test]
    fn every_vector_unit_updates_bit_for_bit_like_the_scalar_loop() {
        // An odd length (a ragged tail on every lane width), magnitudes from 1e-30 to 1e3,
        // and zero, negative and missing gradients.
        let n: usize = 1037;
        let values = |seed: f32| -> Vec<f32> {
            (0..n)
                .map(|i| {
                    let x = (i as f32 * 0.37 + seed).sin();
                    x * 10f32.powi((i % 34) as i32 - 30)
                })
                .collect()
        };
        let (p0, m0, g0) = (values(0.1), values(0.7), values(1.3));
        let v0: Vec<f32> = values(2.9).iter().map(|x| x * x).collect();
        let config = AdamConfig::default();
        let k = Coefs::<f32>::new(&config, 7, 0.5);
        for g in [Some(&g0[..]), None] {
            let run = |kernels: Kernels| {
                let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
                update_on(kernels, &k, &mut p, &mut m, &mut v, g);
                (p, m, v)
            };
            let scalar = {
                let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
                k.update_runs(&mut p, &mut m, &mut v, g);
                (p, m, v)
            };
            for kernels in Kernels::available() {
                let (p, m, v) = run(kernels);
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&p), bits(&scalar.0), "{}", kernels.name());
                assert_eq!(bits(&m), bits(&scalar.1), "{}", kernels.name());
                assert_eq!(bits(&v), bits(&scalar.2), "{}", kernels.name());
            }
        }
    }

    #[test]
    fn adam_state_round_trips_through_export() {
        let (mut s1, id) = one_param(array![[1.0, 2.0], [3.0, 4.0]]);
        let mut s2 = s1.clone();
        let mut a1 = Adam::new(AdamConfig::default());
        let g = dense(id, array![[0.1, -0.2], [0.3, 0.0]]);
        a1.step(&mut s1, &g).unwrap();
        s2.set("p", s1.get(id).clone()).unwrap();
        let mut a2 = Adam::new(AdamConfig::default());
        a2.import(&s2, a1.export(&s1)).unwrap();
        a1.step(&mut s1, &g).unwrap();
        a2.step(&mut s2, &g).unwrap();
        assert_eq!(s1.get(id), s2.get(id));
        let bad = vec![(
            "p".to_string(),
            AdamParamState {
                step: 1,
                m: Matrix::zeros((1, 1)),
                v: Matrix::zeros((2, 2)),
            },
        )];
        assert!(matches!(
            a2.import(&s2, bad),
            Err(AutodiffError::Shape { .. })
        ));
        let unknown = vec![("q".to_string(), a1.export(&s1)[0].1.clone())];
        assert!(matches!(
            a2.import(&s2, unknown),
            Err(AutodiffError::Unknown(_))
        ));
    }

    /// Dense-equivalent sparse Adam gives bit-identical results to dense Adam on the
    /// dense gradient; lazy Adam leaves untouched rows alone.
    #[test]
    fn sparse_adam_equals_dense_adam_and_lazy_skips_rows() {
        let table = Matrix::from_shape_fn((6, 3), |(i, j)| (i * 3 + j) as f64 * 0.1 - 0.7);
        let steps: [(&[usize], Matrix<f64>); 3] = [
            (&[1, 3], array![[0.1, 0.2, -0.3], [0.5, -0.1, 0.0]]),
            (&[3], array![[-0.4, 0.3, 0.2]]),
            (&[0, 5], array![[0.2, 0.2, 0.2], [-1.0, 0.5, 0.1]]),
        ];
        let (mut sparse_store, id) = one_param(table.clone());
        let (mut dense_store, _) = one_param(table.clone());
        let (mut lazy_store, _) = one_param(table.clone());
        let mut sparse = Adam::new(AdamConfig::default());
        let mut dense_adam = Adam::new(AdamConfig::default());
        let mut lazy = Adam::new(AdamConfig {
            sparse: SparseMode::Lazy,
            ..AdamConfig::default()
        });
        for (rows, vals) in &steps {
            let rg = RowGrad {
                n_rows: 6,
                rows: rows.to_vec(),
                values: vals.clone(),
            };
            let mut pg = ParamGrads::new();
            pg.set(id, Grad::Rows(rg.clone()));
            sparse.step(&mut sparse_store, &pg).unwrap();
            lazy.step(&mut lazy_store, &pg).unwrap();
            dense_adam
                .step(&mut dense_store, &dense(id, rg.to_dense()))
                .unwrap();
        }
        assert_eq!(sparse_store.get(id), dense_store.get(id));
        assert_eq!(
            sparse.export(&sparse_store),
            dense_adam.export(&dense_store)
        );
        // Rows 2 and 4 were never touched: unchanged everywhere.
        assert_eq!(dense_store.get(id).row(2), table.row(2));
        // Row 1 was touched only at step 1: dense Adam keeps moving it, lazy does not
        // after step 1.
        assert_ne!(dense_store.get(id).row(1), lazy_store.get(id).row(1));
        let mut after_one = one_param(table.clone()).0;
        let mut lazy1 = Adam::new(AdamConfig {
            sparse: SparseMode::Lazy,
            ..AdamConfig::default()
        });
        let mut pg = ParamGrads::new();
        pg.set(
            id,
            Grad::Rows(RowGrad {
                n_rows: 6,
                rows: steps[0].0.to_vec(),
                values: steps[0].1.clone(),
            }),
        );
        lazy1.step(&mut after_one, &pg).unwrap();
        assert_eq!(lazy_store.get(id).row(1), after_one.get(id).row(1));
    }

    /// Global norm of [3, 4] and [12] is 13; with max_norm 5 every gradient is scaled by
    /// 5 / (13 + 1e-6). With max_norm 20 nothing changes.
    #[test]
    fn clipping_matches_torch_semantics() {
        let mut pg = ParamGrads::<f64>::new();
        pg.set(ParamId(0), Grad::Dense(array![[3.0, 4.0]]));
        pg.set(ParamId(1), Grad::Dense(array![[12.0]]));
        assert_eq!(pg.global_norm(None), 13.0);
        assert_eq!(clip_coef(13.0, 20.0), 1.0);
        assert_eq!(clip_coef(13.0, 5.0), 5.0 / (13.0 + 1e-6));
    }

    /// Scaling inside the update is bit for bit a scaling pass followed by a plain step,
    /// on dense and row gradients, in both sparse modes, serial and on a pool.
    #[test]
    fn a_scaled_step_equals_scaling_then_stepping() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for sparse in [SparseMode::DenseEquivalent, SparseMode::Lazy] {
            let config = AdamConfig {
                sparse,
                ..AdamConfig::default()
            };
            let mut store = ParamStore::<f32>::new();
            let w = Matrix::from_shape_fn((300, 250), |(i, j)| ((i * 250 + j) as f32).sin());
            // Enough rows that the pool splits them into several runs.
            let e = Matrix::from_shape_fn((12_000, 6), |(i, j)| ((i + 7 * j) as f32).cos());
            let (w_id, e_id) = (store.add("w", w).unwrap(), store.add("e", e).unwrap());
            let (mut fused, mut passes) = (store.clone(), store);
            let (mut a1, mut a2) = (Adam::new(config), Adam::new(config));
            for step in 0..3 {
                let mut pg = ParamGrads::<f32>::new();
                let gw =
                    Matrix::from_shape_fn((300, 250), |(i, j)| ((i + 3 * j + step) as f32).cos());
                pg.set(w_id, Grad::Dense(gw));
                let rows = [step, 5 + step, 11_000 - step];
                let ge = Matrix::from_shape_fn((3, 6), |(i, j)| (i as f32 - j as f32) * 0.7);
                pg.set(e_id, Grad::Rows(RowGrad::from_ids(12_000, &rows, &ge)));
                let coef = clip_coef(pg.global_norm(Some(&pool)).to_f64(), 1.0);
                assert!(coef < 1.0);
                a1.step_scaled(&mut fused, &pg, coef, Some(&pool)).unwrap();
                for (_, g) in pg.iter_mut() {
                    let values = match g {
                        Grad::Dense(m) => m,
                        Grad::Rows(r) => &mut r.values,
                    };
                    values.mapv_inplace(|x| x * coef as f32);
                }
                a2.step(&mut passes, &pg).unwrap();
            }
            assert_eq!(fused.get(w_id), passes.get(w_id));
            assert_eq!(fused.get(e_id), passes.get(e_id));
            assert_eq!(a1.export(&fused), a2.export(&passes));
        }
    }

    #[test]
    fn sgd_updates_dense_and_sparse_rows() {
        let (mut s, id) = one_param(array![[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]);
        Sgd { lr: 0.5 }
            .step(
                &mut s,
                &dense(id, array![[2.0, 0.0], [0.0, 2.0], [0.0, 0.0]]),
            )
            .unwrap();
        assert_eq!(s.get(id), &array![[0.0, 1.0], [2.0, 1.0], [3.0, 3.0]]);
        let mut pg = ParamGrads::new();
        pg.set(
            id,
            Grad::Rows(RowGrad {
                n_rows: 3,
                rows: vec![2],
                values: array![[2.0, 4.0]],
            }),
        );
        Sgd { lr: 0.5 }.step(&mut s, &pg).unwrap();
        assert_eq!(s.get(id), &array![[0.0, 1.0], [2.0, 1.0], [2.0, 1.0]]);
        assert!(
            Sgd { lr: 0.1 }
                .step(&mut s, &dense(id, array![[1.0]]))
                .is_err()
        );
    }
}
