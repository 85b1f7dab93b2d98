//! The tape: a Wengert list of nodes in execution order.
//!
//! Every op call computes its value at once (eager), pushes one [`Node`] holding its
//! [`Op`] (input vars plus whatever the backward needs) and returns the new [`Var`].
//! Inputs always precede their users, so [`Tape::backward`] walks the nodes in reverse
//! with no sort, calling one exhaustive `match` whose arms only call the
//! [`crate::ops`] backward functions. Adding an `Op` variant is a compile error until
//! its backward arm exists.

use std::fmt;

use rayon::ThreadPool;
use sclstm_core::{FusedOp, Matrix, NumError, Real};

use crate::grads::{Grad, Grads, add_into, dense_slot};
use crate::ops::{
    char_conv, concat, cross_entropy, dropout, elementwise, embedding, matmul, reduce, scalar_mix,
};
use crate::{ParamId, ParamStore};

pub use crate::ops::cross_entropy::Reduction;
pub use crate::ops::dropout::DropoutRate;

/// A value on a tape: the index of its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var(pub(crate) u32);

impl Var {
    /// The node index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// A recorded operation: its inputs and the state its backward needs.
pub enum Op<R> {
    /// A leaf supplied by the caller (inputs, or anything a gradient is wanted for).
    Input,
    /// A parameter of the tape's [`ParamStore`], entered by id without a copy.
    Param(ParamId),
    /// A value recorded by a no-grad tape: no inputs, no gradient.
    Constant,
    /// `A · B`.
    MatMul {
        /// Left factor (m, k).
        a: Var,
        /// Right factor (k, n).
        b: Var,
    },
    /// `A + B`.
    Add {
        /// Left term.
        a: Var,
        /// Right term.
        b: Var,
    },
    /// `X + bias` broadcast over rows.
    AddBias {
        /// Input (n, d).
        x: Var,
        /// Bias (1, d).
        bias: Var,
    },
    /// `A ⊙ B`.
    Mul {
        /// Left factor.
        a: Var,
        /// Right factor.
        b: Var,
    },
    /// `σ(X)`.
    Sigmoid {
        /// Input.
        x: Var,
    },
    /// `tanh(X)`.
    Tanh {
        /// Input.
        x: Var,
    },
    /// `s · X` (task weight λ).
    Scale {
        /// Input.
        x: Var,
        /// The factor.
        s: R,
    },
    /// `[X_1 | X_2 | …]` along features.
    Concat {
        /// Inputs, left to right.
        xs: Vec<Var>,
    },
    /// Column blocks `(start, width)` of `X` side by side (a slice, a part of a split,
    /// or several blocks at once).
    SelectCols {
        /// Input.
        x: Var,
        /// The blocks, left to right in the output.
        blocks: Vec<(usize, usize)>,
    },
    /// `table[ids]`, sparse row gradient.
    Embedding {
        /// Table (V, d).
        table: Var,
        /// Row looked up for each output row.
        ids: Vec<usize>,
    },
    /// Character convolution + max-pool over each word.
    CharConv {
        /// Characters (N·W, C_in).
        x: Var,
        /// Kernel (3·C_in, C_out).
        kernel: Var,
        /// Bias (1, C_out).
        bias: Var,
        /// im2col patches and argmax positions.
        cache: char_conv::CharConvCache<R>,
    },
    /// `X ⊙ M` with the scaled keep mask `M`.
    Dropout {
        /// Input.
        x: Var,
        /// The mask drawn in the forward pass.
        mask: Matrix<R>,
    },
    /// Masked log-softmax + cross-entropy (scalar).
    CrossEntropy {
        /// Logits (N, C).
        logits: Var,
        /// Probabilities, labels, mask, reduction factor.
        cache: cross_entropy::CrossEntropyCache<R>,
    },
    /// ELMo scalar mix `γ Σ_j softmax(w)_j H_j` of layers stored side by side.
    ScalarMix {
        /// Layers (N, L·D).
        h: Var,
        /// Mixing logits (1, L).
        w: Var,
        /// Scale (1, 1).
        gamma: Var,
        /// Softmax weights and the unscaled mix.
        cache: scalar_mix::ScalarMixCache<R>,
    },
    /// `Σ X` (scalar).
    Sum {
        /// Input.
        x: Var,
    },
    /// `mean X` (scalar).
    Mean {
        /// Input.
        x: Var,
    },
    /// A fused layer with its own saved state and hand-written backward.
    Fused {
        /// Inputs in the order the op's backward returns their gradients.
        inputs: Vec<Var>,
        /// The op.
        op: Box<dyn FusedOp<R>>,
    },
}

impl<R: Real> Op<R> {
    /// Short name used when printing the tape.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Param(_) => "param",
            Op::Constant => "constant",
            Op::MatMul { .. } => "matmul",
            Op::Add { .. } => "add",
            Op::AddBias { .. } => "add_bias",
            Op::Mul { .. } => "mul",
            Op::Sigmoid { .. } => "sigmoid",
            Op::Tanh { .. } => "tanh",
            Op::Scale { .. } => "scale",
            Op::Concat { .. } => "concat",
            Op::SelectCols { .. } => "select_cols",
            Op::Embedding { .. } => "embedding",
            Op::CharConv { .. } => "char_conv_maxpool",
            Op::Dropout { .. } => "dropout",
            Op::CrossEntropy { .. } => "cross_entropy",
            Op::ScalarMix { .. } => "scalar_mix",
            Op::Sum { .. } => "sum",
            Op::Mean { .. } => "mean",
            Op::Fused { op, .. } => op.name(),
        }
    }

    /// The input vars, in order.
    pub fn inputs(&self) -> Vec<Var> {
        match self {
            Op::Input | Op::Param(_) | Op::Constant => vec![],
            Op::MatMul { a, b } | Op::Add { a, b } | Op::Mul { a, b } => vec![*a, *b],
            Op::AddBias { x, bias } => vec![*x, *bias],
            Op::Sigmoid { x }
            | Op::Tanh { x }
            | Op::Scale { x, .. }
            | Op::SelectCols { x, .. }
            | Op::Dropout { x, .. }
            | Op::Sum { x }
            | Op::Mean { x } => vec![*x],
            Op::Concat { xs } => xs.clone(),
            Op::Embedding { table, .. } => vec![*table],
            Op::CharConv {
                x, kernel, bias, ..
            } => vec![*x, *kernel, *bias],
            Op::CrossEntropy { logits, .. } => vec![*logits],
            Op::ScalarMix { h, w, gamma, .. } => vec![*h, *w, *gamma],
            Op::Fused { inputs, .. } => inputs.clone(),
        }
    }
}

impl<R: Real> fmt::Debug for Op<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(", self.name())?;
        if let Op::Param(id) = self {
            write!(f, "#{}", id.0)?;
        }
        for (i, v) in self.inputs().iter().enumerate() {
            write!(f, "{}{v}", if i == 0 { "" } else { ", " })?;
        }
        write!(f, ")")
    }
}

/// Where a node's value lives.
enum Value<R> {
    /// Computed by the op and owned by the tape.
    Owned(Matrix<R>),
    /// A parameter read in place from the store.
    Param(ParamId),
}

/// One entry of the tape.
struct Node<R> {
    op: Op<R>,
    value: Value<R>,
}

/// The Wengert list. `'p` is the borrow of the [`ParamStore`] (if any).
pub struct Tape<'p, R> {
    nodes: Vec<Node<R>>,
    params: Option<&'p ParamStore<R>>,
    /// Var of each parameter already on the tape, by id (a parameter enters once).
    param_vars: Vec<Option<Var>>,
    recording: bool,
    pool: Option<&'p ThreadPool>,
}

impl<R: Real> Default for Tape<'_, R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R> fmt::Debug for Tape<'_, R>
where
    R: Real,
{
    /// One line per node: `%i = op(inputs) (rows, cols)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Tape ({} nodes{})",
            self.nodes.len(),
            if self.recording { "" } else { ", no-grad" }
        )?;
        for (i, node) in self.nodes.iter().enumerate() {
            let (r, c) = self.value(Var(i as u32)).dim();
            writeln!(f, "  %{i} = {:?} ({r}, {c})", node.op)?;
        }
        Ok(())
    }
}

impl<'p, R: Real> Tape<'p, R> {
    /// A recording tape without parameters (inputs enter with [`Tape::leaf`]).
    pub fn new() -> Self {
        Tape {
            nodes: Vec::new(),
            params: None,
            param_vars: Vec::new(),
            recording: true,
            pool: None,
        }
    }

    /// A recording tape that reads parameters from `store` by id.
    pub fn with_params(store: &'p ParamStore<R>) -> Self {
        Tape {
            params: Some(store),
            param_vars: vec![None; store.len()],
            ..Self::new()
        }
    }

    /// Turns this into an evaluation tape: ops compute values but record no inputs
    /// and save no backward state ([`Op::Constant`]), and dropout is the identity.
    /// Use it for eval and predict.
    pub fn no_grad(mut self) -> Self {
        self.recording = false;
        self
    }

    /// Runs large products (matmul, char conv) on `pool` instead of the calling thread.
    pub fn with_pool(mut self, pool: Option<&'p ThreadPool>) -> Self {
        self.pool = pool;
        self
    }

    /// Whether ops are recorded for backward.
    pub fn is_recording(&self) -> bool {
        self.recording
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tape has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The value of a var.
    ///
    /// # Panics
    /// If `v` does not belong to this tape (an internal bug of the caller).
    pub fn value(&self, v: Var) -> &Matrix<R> {
        match &self.nodes[v.index()].value {
            Value::Owned(m) => m,
            Value::Param(id) => self
                .params
                .expect("internal: a param node implies a store")
                .get(*id),
        }
    }

    /// The op that produced a var.
    ///
    /// # Panics
    /// If `v` does not belong to this tape.
    pub fn op(&self, v: Var) -> &Op<R> {
        &self.nodes[v.index()].op
    }

    /// The shape of a var.
    pub fn shape(&self, v: Var) -> (usize, usize) {
        self.value(v).dim()
    }

    fn check(&self, op: &'static str, vars: &[Var]) -> Result<(), NumError> {
        match vars.iter().find(|v| v.index() >= self.nodes.len()) {
            Some(v) => Err(NumError::IndexOutOfRange {
                op,
                index: v.index(),
                bound: self.nodes.len(),
            }),
            None => Ok(()),
        }
    }

    fn push(&mut self, op: Op<R>, value: Matrix<R>) -> Var {
        let v = Var(u32::try_from(self.nodes.len()).expect("internal: < 2^32 nodes"));
        let op = if self.recording { op } else { Op::Constant };
        self.nodes.push(Node {
            op,
            value: Value::Owned(value),
        });
        v
    }

    /// Adds a leaf (an input, or any matrix a gradient is wanted for).
    pub fn leaf(&mut self, value: Matrix<R>) -> Var {
        let value = if value.is_standard_layout() {
            value
        } else {
            value.as_standard_layout().into_owned()
        };
        self.push(Op::Input, value)
    }

    /// Adds a leaf no gradient is wanted for (fixed features such as a frozen encoder's
    /// outputs): recorded as [`Op::Constant`], so ops that read it skip its gradient.
    pub fn constant(&mut self, value: Matrix<R>) -> Var {
        let value = if value.is_standard_layout() {
            value
        } else {
            value.as_standard_layout().into_owned()
        };
        let v = Var(u32::try_from(self.nodes.len()).expect("internal: < 2^32 nodes"));
        self.nodes.push(Node {
            op: Op::Constant,
            value: Value::Owned(value),
        });
        v
    }

    /// Puts a parameter on the tape by id, without copying it. Asking twice returns the
    /// same var, so all uses of a parameter share one gradient.
    ///
    /// # Errors
    /// [`NumError::IndexOutOfRange`] if the tape has no store or `id` is not in it.
    pub fn param(&mut self, id: ParamId) -> Result<Var, NumError> {
        let bound = self.params.map_or(0, ParamStore::len);
        if id.index() >= bound {
            return Err(NumError::IndexOutOfRange {
                op: "param",
                index: id.index(),
                bound,
            });
        }
        if let Some(v) = self.param_vars[id.index()] {
            return Ok(v);
        }
        let v = Var(u32::try_from(self.nodes.len()).expect("internal: < 2^32 nodes"));
        self.nodes.push(Node {
            op: Op::Param(id),
            value: Value::Param(id),
        });
        self.param_vars[id.index()] = Some(v);
        Ok(v)
    }

    /// `A · B` on the fast CPU gemm. See [`matmul::forward`].
    ///
    /// # Errors
    /// Shape mismatch or a foreign var.
    pub fn matmul(&mut self, a: Var, b: Var) -> Result<Var, NumError> {
        self.check("matmul", &[a, b])?;
        let y = matmul::forward(self.value(a), self.value(b), self.pool)?;
        Ok(self.push(Op::MatMul { a, b }, y))
    }

    /// `A + B`.
    ///
    /// # Errors
    /// Shape mismatch or a foreign var.
    pub fn add(&mut self, a: Var, b: Var) -> Result<Var, NumError> {
        self.check("add", &[a, b])?;
        let y = elementwise::add(self.value(a), self.value(b))?;
        Ok(self.push(Op::Add { a, b }, y))
    }

    /// `X + bias` with `bias` (1, d) broadcast over the rows of `X` (n, d).
    ///
    /// # Errors
    /// Shape mismatch or a foreign var.
    pub fn add_bias(&mut self, x: Var, bias: Var) -> Result<Var, NumError> {
        self.check("add_bias", &[x, bias])?;
        let y = elementwise::add_bias(self.value(x), self.value(bias))?;
        Ok(self.push(Op::AddBias { x, bias }, y))
    }

    /// `A ⊙ B` elementwise.
    ///
    /// # Errors
    /// Shape mismatch or a foreign var.
    pub fn mul(&mut self, a: Var, b: Var) -> Result<Var, NumError> {
        self.check("mul", &[a, b])?;
        let y = elementwise::mul(self.value(a), self.value(b))?;
        Ok(self.push(Op::Mul { a, b }, y))
    }

    /// `σ(X)`.
    ///
    /// # Errors
    /// A foreign var.
    pub fn sigmoid(&mut self, x: Var) -> Result<Var, NumError> {
        self.check("sigmoid", &[x])?;
        let y = elementwise::sigmoid(self.value(x));
        Ok(self.push(Op::Sigmoid { x }, y))
    }

    /// `tanh(X)`.
    ///
    /// # Errors
    /// A foreign var.
    pub fn tanh(&mut self, x: Var) -> Result<Var, NumError> {
        self.check("tanh", &[x])?;
        let y = elementwise::tanh(self.value(x));
        Ok(self.push(Op::Tanh { x }, y))
    }

    /// `s · X`: weights a task loss by its λ (paper Eq. 4).
    ///
    /// # Errors
    /// A foreign var.
    pub fn scale(&mut self, x: Var, s: R) -> Result<Var, NumError> {
        self.check("scale", &[x])?;
        let y = elementwise::scale(self.value(x), s);
        Ok(self.push(Op::Scale { x, s }, y))
    }

    /// `[X_1 | X_2 | …]` along features.
    ///
    /// # Errors
    /// No input, differing row counts, or a foreign var.
    pub fn concat(&mut self, xs: &[Var]) -> Result<Var, NumError> {
        self.check("concat", xs)?;
        let vals: Vec<&Matrix<R>> = xs.iter().map(|&v| self.value(v)).collect();
        let y = concat::forward(&vals)?;
        Ok(self.push(Op::Concat { xs: xs.to_vec() }, y))
    }

    /// `X[:, start .. start + width]`.
    ///
    /// # Errors
    /// Range outside the columns, or a foreign var.
    pub fn slice_cols(&mut self, x: Var, start: usize, width: usize) -> Result<Var, NumError> {
        self.select_cols(x, &[(start, width)])
    }

    /// `[X[:, s_1 .. s_1 + w_1] | X[:, s_2 .. s_2 + w_2] | …]` for the column blocks
    /// `(start, width)`, in one copy (slicing each block and concatenating the slices
    /// copies every value twice).
    ///
    /// # Errors
    /// A block outside the columns, or a foreign var.
    pub fn select_cols(&mut self, x: Var, blocks: &[(usize, usize)]) -> Result<Var, NumError> {
        self.check("select_cols", &[x])?;
        let y = concat::select_cols(self.value(x), blocks)?;
        let blocks = blocks.to_vec();
        Ok(self.push(Op::SelectCols { x, blocks }, y))
    }

    /// Splits `X` along features into consecutive parts of the given widths.
    ///
    /// # Errors
    /// [`NumError::ShapeMismatch`] unless the widths sum to the columns of `X`.
    pub fn split(&mut self, x: Var, widths: &[usize]) -> Result<Vec<Var>, NumError> {
        self.check("split", &[x])?;
        let total: usize = widths.iter().sum();
        let shape = self.shape(x);
        if total != shape.1 {
            return Err(crate::ops::mismatch("split", shape, (shape.0, total)));
        }
        let mut start = 0;
        let mut parts = Vec::with_capacity(widths.len());
        for &w in widths {
            parts.push(self.slice_cols(x, start, w)?);
            start += w;
        }
        Ok(parts)
    }

    /// Gathers rows `ids` of `table` (V, d) into (ids.len(), d). The table's gradient
    /// is sparse ([`Grad::Rows`]).
    ///
    /// # Errors
    /// An id ≥ V, or a foreign var.
    pub fn embedding(&mut self, table: Var, ids: &[usize]) -> Result<Var, NumError> {
        self.check("embedding", &[table])?;
        let y = embedding::forward(self.value(table), ids)?;
        let ids = if self.recording {
            ids.to_vec()
        } else {
            Vec::new()
        };
        Ok(self.push(Op::Embedding { table, ids }, y))
    }

    /// Character convolution (kernel 3, padding 1) + max-pool over each word:
    /// `x` (N·W, C_in) with `width` = W rows per word and `lengths[n]` real characters,
    /// `kernel` (3·C_in, C_out), `bias` (1, C_out) → (N, C_out). See [`char_conv`].
    ///
    /// # Errors
    /// Shape mismatch, empty input, a length above W, or a foreign var.
    pub fn char_conv_maxpool(
        &mut self,
        x: Var,
        kernel: Var,
        bias: Var,
        width: usize,
        lengths: &[usize],
    ) -> Result<Var, NumError> {
        self.check("char_conv_maxpool", &[x, kernel, bias])?;
        let (y, cache) = char_conv::forward(
            self.value(x),
            self.value(kernel),
            self.value(bias),
            width,
            lengths,
            self.pool,
        )?;
        Ok(self.push(
            Op::CharConv {
                x,
                kernel,
                bias,
                cache,
            },
            y,
        ))
    }

    /// Inverted dropout with a mask drawn from `rng` (on the tape's pool when it has one; the
    /// same mask either way); the identity on a no-grad tape.
    ///
    /// # Errors
    /// A foreign var.
    pub fn dropout(
        &mut self,
        x: Var,
        rate: DropoutRate,
        rng: &mut rand_chacha::ChaCha8Rng,
    ) -> Result<Var, NumError> {
        self.check("dropout", &[x])?;
        if !self.recording || rate.get() == 0.0 {
            let y = self.value(x).clone();
            return Ok(self.push(
                Op::Dropout {
                    x,
                    mask: Matrix::ones(y.dim()),
                },
                y,
            ));
        }
        let (y, mask) = dropout::forward(self.value(x), rate, rng, self.pool);
        Ok(self.push(Op::Dropout { x, mask }, y))
    }

    /// Masked log-softmax + cross-entropy of `logits` (N, C) against `labels`, counting
    /// rows where `mask` is true; a (1, 1) loss. See [`cross_entropy`].
    ///
    /// # Errors
    /// Length mismatch, all rows masked, a label ≥ C, a non-finite logit, a foreign var.
    pub fn cross_entropy(
        &mut self,
        logits: Var,
        labels: &[usize],
        mask: &[bool],
        reduction: Reduction,
    ) -> Result<Var, NumError> {
        self.check("cross_entropy", &[logits])?;
        let (loss, cache) = cross_entropy::forward(self.value(logits), labels, mask, reduction)?;
        Ok(self.push(Op::CrossEntropy { logits, cache }, loss))
    }

    /// ELMo's scalar mix `γ Σ_j softmax(w)_j H_j` of the `L` layers stored side by side
    /// in `h` (N, L·D), with `w` (1, L) and `gamma` (1, 1): (N, D). See [`scalar_mix`].
    ///
    /// # Errors
    /// Shape mismatch or a foreign var.
    pub fn scalar_mix(&mut self, h: Var, w: Var, gamma: Var) -> Result<Var, NumError> {
        self.check("scalar_mix", &[h, w, gamma])?;
        let (y, cache) = scalar_mix::forward(self.value(h), self.value(w), self.value(gamma))?;
        Ok(self.push(Op::ScalarMix { h, w, gamma, cache }, y))
    }

    /// `Σ X` as a (1, 1) scalar.
    ///
    /// # Errors
    /// A foreign var.
    pub fn sum(&mut self, x: Var) -> Result<Var, NumError> {
        self.check("sum", &[x])?;
        let y = reduce::sum(self.value(x));
        Ok(self.push(Op::Sum { x }, y))
    }

    /// `mean X` as a (1, 1) scalar.
    ///
    /// # Errors
    /// An empty input or a foreign var.
    pub fn mean(&mut self, x: Var) -> Result<Var, NumError> {
        self.check("mean", &[x])?;
        let y = reduce::mean(self.value(x))?;
        Ok(self.push(Op::Mean { x }, y))
    }

    /// Records a fused op whose forward the caller has already run: `value` is its one
    /// output, `op` its saved state and hand-written backward.
    ///
    /// # Panics
    /// If an input var does not belong to this tape (an internal bug of the caller).
    pub fn push_fused(&mut self, inputs: &[Var], value: Matrix<R>, op: Box<dyn FusedOp<R>>) -> Var {
        self.check(op.name(), inputs)
            .expect("internal: fused op inputs come from this tape");
        self.push(
            Op::Fused {
                inputs: inputs.to_vec(),
                op,
            },
            value,
        )
    }

    /// Back-propagates from a scalar `loss`: returns the gradients of every leaf
    /// (inputs and parameters) that the loss depends on.
    ///
    /// # Errors
    /// [`NumError::NonScalarLoss`] unless `loss` is (1, 1); a fused op's backward error,
    /// or a gradient of the wrong shape from a fused op.
    pub fn backward(&self, loss: Var) -> Result<Grads<R>, NumError> {
        self.backward_keeping(loss, &[])
    }

    /// [`Tape::backward`] that also returns the gradients of the intermediate vars in
    /// `keep` (e.g. a shared hidden representation whose per-task gradients are
    /// being studied).
    ///
    /// # Errors
    /// As for [`Tape::backward`], plus [`NumError::IndexOutOfRange`] for a foreign var.
    pub fn backward_keeping(&self, loss: Var, keep: &[Var]) -> Result<Grads<R>, NumError> {
        self.check("backward", &[loss])?;
        self.check("backward", keep)?;
        let mut kept = vec![false; self.nodes.len()];
        for v in keep {
            kept[v.index()] = true;
        }
        let shape = self.shape(loss);
        if shape != (1, 1) {
            return Err(NumError::NonScalarLoss {
                shape: vec![shape.0, shape.1],
            });
        }
        let mut grads: Vec<Option<Grad<R>>> = (0..self.nodes.len()).map(|_| None).collect();
        grads[loss.index()] = Some(Grad::Dense(Matrix::ones((1, 1))));
        for i in (0..=loss.index()).rev() {
            let (lo, hi) = grads.split_at_mut(i);
            let Some(g) = hi[0].as_mut() else {
                continue;
            };
            match self.nodes[i].op {
                Op::Input | Op::Param(_) => continue,
                Op::Constant => {}
                _ => self.backward_node(i, g.make_dense(), lo)?,
            }
            // Intermediate gradients are consumed; only leaves (and `keep`) are returned.
            if !kept[i] {
                hi[0] = None;
            }
        }
        Ok(Grads {
            vars: grads,
            param_vars: self.param_vars.clone(),
        })
    }

    /// The backward of one node: adds its inputs' gradient contributions into `lo`.
    fn backward_node(
        &self,
        i: usize,
        d: &Matrix<R>,
        lo: &mut [Option<Grad<R>>],
    ) -> Result<(), NumError> {
        let op = &self.nodes[i].op;
        let y = self.value(Var(i as u32));
        let pool = self.pool;
        let shape = |v: Var| self.shape(v);
        match op {
            Op::Input | Op::Param(_) | Op::Constant => {}
            Op::MatMul { a, b } => {
                let (va, vb) = (self.value(*a), self.value(*b));
                let d_a = dense_slot(&mut lo[a.index()], va.dim());
                matmul::backward(d, va, vb, Some(d_a), None, pool)?;
                let d_b = dense_slot(&mut lo[b.index()], vb.dim());
                matmul::backward(d, va, vb, None, Some(d_b), pool)?;
            }
            Op::Add { a, b } => {
                add_into(&mut lo[a.index()], Grad::Dense(d.clone()))?;
                add_into(&mut lo[b.index()], Grad::Dense(d.clone()))?;
            }
            Op::AddBias { x, bias } => {
                add_into(&mut lo[x.index()], Grad::Dense(d.clone()))?;
                let d_bias = dense_slot(&mut lo[bias.index()], shape(*bias));
                elementwise::add_bias_backward_bias(d, d_bias);
            }
            Op::Mul { a, b } => {
                let d_a = dense_slot(&mut lo[a.index()], shape(*a));
                elementwise::mul_backward(d, self.value(*b), d_a, pool);
                let d_b = dense_slot(&mut lo[b.index()], shape(*b));
                elementwise::mul_backward(d, self.value(*a), d_b, pool);
            }
            Op::Sigmoid { x } => {
                elementwise::sigmoid_backward(d, y, dense_slot(&mut lo[x.index()], shape(*x)));
            }
            Op::Tanh { x } => {
                elementwise::tanh_backward(d, y, dense_slot(&mut lo[x.index()], shape(*x)));
            }
            Op::Scale { x, s } => {
                elementwise::scale_backward(d, *s, dense_slot(&mut lo[x.index()], shape(*x)));
            }
            Op::Concat { xs } => {
                let mut start = 0;
                for x in xs {
                    let w = shape(*x).1;
                    let part = concat::select_cols(d, &[(start, w)])?;
                    add_into(&mut lo[x.index()], Grad::Dense(part))?;
                    start += w;
                }
            }
            Op::SelectCols { x, blocks } => {
                let d_x = dense_slot(&mut lo[x.index()], shape(*x));
                concat::select_cols_backward(d, blocks, d_x);
            }
            Op::Embedding { table, ids } => {
                let rows = embedding::backward(d, ids, shape(*table).0);
                add_into(&mut lo[table.index()], Grad::Rows(rows))?;
            }
            Op::CharConv {
                x,
                kernel,
                bias,
                cache,
            } => {
                let k = self.value(*kernel);
                let (ix, ik, ib) = (x.index(), kernel.index(), bias.index());
                if let Ok([sx, sk, sb]) = lo.get_disjoint_mut([ix, ik, ib]) {
                    // Three distinct inputs (always, in a model): one pass.
                    let d_x = dense_slot(sx, shape(*x));
                    let d_k = dense_slot(sk, k.dim());
                    let d_b = dense_slot(sb, shape(*bias));
                    char_conv::backward(d, k, cache, Some(d_x), Some(d_k), Some(d_b), pool)?;
                } else {
                    // A var given twice shares its gradient slot: one input at a time.
                    let d_x = dense_slot(&mut lo[ix], shape(*x));
                    char_conv::backward(d, k, cache, Some(d_x), None, None, pool)?;
                    let d_k = dense_slot(&mut lo[ik], k.dim());
                    char_conv::backward(d, k, cache, None, Some(d_k), None, pool)?;
                    let d_b = dense_slot(&mut lo[ib], shape(*bias));
                    char_conv::backward(d, k, cache, None, None, Some(d_b), pool)?;
                }
            }
            Op::Dropout { x, mask } => {
                let d_x = dense_slot(&mut lo[x.index()], shape(*x));
                elementwise::mul_backward(d, mask, d_x, pool);
            }
            Op::CrossEntropy { logits, cache } => {
                let d_z = dense_slot(&mut lo[logits.index()], shape(*logits));
                cross_entropy::backward(d, cache, d_z);
            }
            Op::ScalarMix { h, w, gamma, cache } => {
                let (vh, vg) = (self.value(*h), self.value(*gamma));
                let mut d_w = Matrix::zeros(shape(*w));
                let mut d_g = Matrix::zeros((1, 1));
                // Constant features (a frozen encoder's) get no gradient: it would be
                // (N, L·D) of work and memory for nothing.
                let d_h = match self.nodes[h.index()].op {
                    Op::Constant => None,
                    _ => Some(dense_slot(&mut lo[h.index()], vh.dim())),
                };
                scalar_mix::backward(d, vh, vg, cache, d_h, &mut d_w, &mut d_g);
                add_into(&mut lo[w.index()], Grad::Dense(d_w))?;
                add_into(&mut lo[gamma.index()], Grad::Dense(d_g))?;
            }
            Op::Sum { x } => {
                reduce::backward(d, R::one(), dense_slot(&mut lo[x.index()], shape(*x)));
            }
            Op::Mean { x } => {
                let n = R::from_f64(self.value(*x).len() as f64);
                reduce::backward(d, R::one() / n, dense_slot(&mut lo[x.index()], shape(*x)));
            }
            Op::Fused { inputs, op } => {
                let grads = op.backward(d)?;
                if grads.len() != inputs.len() {
                    return Err(NumError::ShapeMismatch {
                        op: op.name(),
                        lhs: vec![inputs.len()],
                        rhs: vec![grads.len()],
                    });
                }
                for (v, g) in inputs.iter().zip(grads) {
                    let Some(g) = g else { continue };
                    if g.dim() != shape(*v) {
                        return Err(crate::ops::mismatch(op.name(), shape(*v), g.dim()));
                    }
                    add_into(&mut lo[v.index()], Grad::Dense(g))?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Grad;
    use ndarray::array;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// y = x² + 5x + 4 per element, so dy/dx = 2x + 5 (by hand).
    #[test]
    fn hand_derived_polynomial_gradient() -> Result<(), NumError> {
        let mut t = Tape::<f64>::new();
        let x = t.leaf(array![[3.0, -1.0]]);
        let four = t.leaf(array![[4.0, 4.0]]);
        let sq = t.mul(x, x)?;
        let five_x = t.scale(x, 5.0)?;
        let s = t.add(sq, five_x)?;
        let y = t.add(s, four)?;
        assert_eq!(t.value(y), &array![[28.0, 0.0]]);
        let loss = t.sum(y)?;
        let g = t.backward(loss)?;
        assert_eq!(g.get(x).map(Grad::to_dense), Some(array![[11.0, 3.0]]));
        Ok(())
    }

    /// Two layers mixed with equal logits: s = (½, ½), so Y = γ (H_0 + H_1) / 2 and, for
    /// loss = Σ Y, dγ = Σ (H_0 + H_1) / 2 and dw = 0 (by symmetry g_0 − g_1 is all that
    /// matters: dw_0 = s_0 s_1 (g_0 − g_1) = ¼ γ Σ (H_0 − H_1)).
    #[test]
    fn hand_derived_scalar_mix_and_constant_features() -> Result<(), NumError> {
        let mut t = Tape::<f64>::new();
        // Columns [H_0 | H_1], D = 2.
        let h = t.constant(array![[1.0, 2.0, 3.0, 6.0], [0.0, -2.0, 1.0, 0.0]]);
        let w = t.leaf(array![[0.0, 0.0]]);
        let gamma = t.leaf(array![[2.0]]);
        let y = t.scalar_mix(h, w, gamma)?;
        assert_eq!(t.value(y), &array![[4.0, 8.0], [1.0, -2.0]]);
        let loss = t.sum(y)?;
        let g = t.backward(loss)?;
        // Σ (H_0 + H_1) / 2 = (1 + 2 + 0 − 2 + 3 + 6 + 1 + 0) / 2 = 5.5.
        assert_eq!(g.get(gamma).map(Grad::to_dense), Some(array![[5.5]]));
        // Σ H_0 = 1, Σ H_1 = 10: dw_0 = ¼ · 2 · (1 − 10) = −4.5, dw_1 = +4.5.
        assert_eq!(g.get(w).map(Grad::to_dense), Some(array![[-4.5, 4.5]]));
        assert!(g.get(h).is_none(), "constant features get no gradient");
        let bad = t.leaf(array![[0.0, 0.0, 0.0]]);
        assert!(matches!(
            t.scalar_mix(h, bad, gamma),
            Err(NumError::ShapeMismatch {
                op: "scalar_mix",
                ..
            })
        ));
        Ok(())
    }

    #[test]
    fn intermediate_gradients_are_kept_on_request() -> Result<(), NumError> {
        let mut t = Tape::<f64>::new();
        let x = t.leaf(array![[1.0, 2.0]]);
        let h = t.scale(x, 3.0)?;
        let y = t.mul(h, h)?;
        let loss = t.sum(y)?;
        assert!(t.backward(loss)?.get(h).is_none());
        let g = t.backward_keeping(loss, &[h])?;
        // d loss / d h = 2h = [6, 12]; d loss / d x = 3 · 2h = [18, 36].
        assert_eq!(g.get(h).map(Grad::to_dense), Some(array![[6.0, 12.0]]));
        assert_eq!(g.get(x).map(Grad::to_dense), Some(array![[18.0, 36.0]]));
        Ok(())
    }

    #[test]
    fn tape_prints_ops_inputs_and_shapes() -> Result<(), NumError> {
        let mut t = Tape::<f32>::new();
        let a = t.leaf(Matrix::zeros((2, 3)));
        let b = t.leaf(Matrix::zeros((3, 4)));
        let c = t.matmul(a, b)?;
        t.sum(c)?;
        let s = format!("{t:?}");
        assert!(s.contains("%2 = matmul(%0, %1) (2, 4)"), "{s}");
        assert!(s.contains("%3 = sum(%2) (1, 1)"), "{s}");
        assert_eq!(t.op(c).inputs(), vec![a, b]);
        Ok(())
    }

    #[test]
    fn bad_shapes_and_losses_are_typed_errors() -> Result<(), NumError> {
        let mut t = Tape::<f64>::new();
        let a = t.leaf(Matrix::zeros((2, 3)));
        assert_eq!(
            t.matmul(a, a),
            Err(NumError::ShapeMismatch {
                op: "matmul",
                lhs: vec![2, 3],
                rhs: vec![2, 3]
            })
        );
        let bias = t.leaf(Matrix::zeros((2, 3)));
        assert!(matches!(
            t.add_bias(a, bias),
            Err(NumError::ShapeMismatch { op: "add_bias", .. })
        ));
        assert!(matches!(
            t.split(a, &[1, 1]),
            Err(NumError::ShapeMismatch { op: "split", .. })
        ));
        assert_eq!(
            t.backward(a).unwrap_err(),
            NumError::NonScalarLoss { shape: vec![2, 3] }
        );
        assert!(matches!(
            t.tanh(Var(99)),
            Err(NumError::IndexOutOfRange {
                op: "tanh",
                index: 99,
                ..
            })
        ));
        assert!(matches!(
            t.param(crate::ParamId(0)),
            Err(NumError::IndexOutOfRange { .. })
        ));
        let e = t.leaf(Matrix::zeros((0, 3)));
        assert!(matches!(t.mean(e), Err(NumError::Empty { op: "mean", .. })));
        Ok(())
    }

    #[test]
    fn cross_entropy_rejects_bad_input_and_grad_rows_sum_to_zero() -> Result<(), NumError> {
        let mut t = Tape::<f64>::new();
        let z = t.leaf(array![[1.0, 2.0, 0.5], [0.1, -0.3, 2.0]]);
        assert!(matches!(
            t.cross_entropy(z, &[0, 1], &[false, false], Reduction::Mean),
            Err(NumError::Empty { .. })
        ));
        assert!(matches!(
            t.cross_entropy(z, &[0, 3], &[true, true], Reduction::Mean),
            Err(NumError::IndexOutOfRange {
                index: 3,
                bound: 3,
                ..
            })
        ));
        assert!(matches!(
            t.cross_entropy(z, &[0], &[true], Reduction::Mean),
            Err(NumError::ShapeMismatch { .. })
        ));
        let bad = t.leaf(array![[1.0, f64::NAN, 0.0]]);
        assert!(matches!(
            t.cross_entropy(bad, &[0], &[true], Reduction::Sum),
            Err(NumError::NonFinite { index: 1, .. })
        ));
        let loss = t.cross_entropy(z, &[2, 1], &[true, true], Reduction::Mean)?;
        // −log softmax([1, 2, .5])[2] and −log softmax([.1, −.3, 2])[1], averaged.
        let l0 = (1f64.exp() + 2f64.exp() + 0.5f64.exp()).ln() - 0.5;
        let l1 = (0.1f64.exp() + (-0.3f64).exp() + 2f64.exp()).ln() + 0.3;
        assert!((t.value(loss)[[0, 0]] - (l0 + l1) / 2.0).abs() < 1e-12);
        let g = t.backward(loss)?.get(z).map(Grad::to_dense).unwrap();
        for row in g.rows() {
            assert!(row.sum().abs() < 1e-12);
        }
        Ok(())
    }

    #[test]
    fn embedding_gradient_of_a_large_table_is_sparse() -> Result<(), NumError> {
        let mut store = ParamStore::<f32>::new();
        let id = store
            .add("emb", Matrix::zeros((400_000, 4)))
            .expect("fresh store");
        let mut t = Tape::with_params(&store);
        let table = t.param(id)?;
        assert_eq!(t.param(id)?, table, "a parameter enters the tape once");
        let e = t.embedding(table, &[7, 399_999, 7])?;
        let loss = t.sum(e)?;
        let grads = t.backward(loss)?.into_param_grads();
        let Some(Grad::Rows(rows)) = grads.get(id) else {
            panic!("embedding gradient must be sparse rows");
        };
        assert_eq!(rows.rows, vec![7, 399_999]);
        assert_eq!(
            rows.values,
            array![[2.0, 2.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0]]
        );
        assert!(matches!(
            t.embedding(table, &[400_000]),
            Err(NumError::IndexOutOfRange { .. })
        ));
        Ok(())
    }

    #[test]
    fn no_grad_tape_records_nothing() -> Result<(), NumError> {
        let mut store = ParamStore::<f64>::new();
        let id = store.add("w", array![[2.0]]).expect("fresh store");
        let mut t = Tape::with_params(&store).no_grad();
        assert!(!t.is_recording());
        let w = t.param(id)?;
        let x = t.leaf(array![[3.0]]);
        let y = t.matmul(x, w)?;
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let rate = DropoutRate::new(0.9).expect("valid");
        let d = t.dropout(y, rate, &mut rng)?;
        assert_eq!(
            t.value(d),
            &array![[6.0]],
            "dropout is the identity in eval"
        );
        for i in 2..t.len() {
            assert!(matches!(t.op(Var(i as u32)), Op::Constant));
        }
        let grads = t.backward(d)?;
        assert!(grads.param(id).is_none());
        Ok(())
    }

    #[test]
    fn char_conv_padding_rows_get_zero_gradient() -> Result<(), NumError> {
        let mut t = Tape::<f64>::new();
        let x = t.leaf(Matrix::from_elem((6, 2), 0.5));
        let k = t.leaf(Matrix::from_elem((6, 3), 0.1));
        let b = t.leaf(Matrix::zeros((1, 3)));
        let y = t.char_conv_maxpool(x, k, b, 3, &[2, 3])?;
        assert_eq!(t.shape(y), (2, 3));
        let loss = t.sum(y)?;
        let g = t.backward(loss)?.get(x).map(Grad::to_dense).unwrap();
        assert_eq!(g.row(2).sum(), 0.0, "row 2 is padding of word 0");
        assert!(g.row(0).sum() != 0.0);
        assert!(matches!(
            t.char_conv_maxpool(x, k, b, 3, &[0, 3]),
            Err(NumError::Empty { .. })
        ));
        assert!(matches!(
            t.char_conv_maxpool(x, k, b, 3, &[4, 1]),
            Err(NumError::IndexOutOfRange { .. })
        ));
        assert!(matches!(
            t.char_conv_maxpool(x, k, b, 2, &[2, 2]),
            Err(NumError::ShapeMismatch { .. })
        ));
        Ok(())
    }

    #[derive(Debug)]
    struct BadShape;

    impl FusedOp<f64> for BadShape {
        fn name(&self) -> &'static str {
            "bad_shape"
        }
        fn backward(&self, _d: &Matrix<f64>) -> Result<Vec<Option<Matrix<f64>>>, NumError> {
            Ok(vec![Some(Matrix::zeros((5, 5)))])
        }
    }

    #[test]
    fn fused_op_with_wrong_gradient_shape_is_an_error() {
        let mut t = Tape::<f64>::new();
        let x = t.leaf(Matrix::zeros((1, 1)));
        let y = t.push_fused(&[x], Matrix::zeros((1, 1)), Box::new(BadShape));
        assert!(format!("{t:?}").contains("bad_shape(%0)"));
        assert!(matches!(
            t.backward(y),
            Err(NumError::ShapeMismatch {
                op: "bad_shape",
                ..
            })
        ));
    }

    #[test]
    fn dropout_is_seeded_and_scaled() -> Result<(), NumError> {
        let run = |seed| -> Result<Matrix<f64>, NumError> {
            let mut t = Tape::<f64>::new();
            let x = t.leaf(Matrix::ones((20, 20)));
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let y = t.dropout(x, DropoutRate::new(0.5).expect("valid"), &mut rng)?;
            Ok(t.value(y).clone())
        };
        let a = run(3)?;
        assert_eq!(a, run(3)?);
        assert_ne!(a, run(4)?);
        assert!(a.iter().all(|&v| v == 0.0 || v == 2.0));
        let kept = a.iter().filter(|&&v| v == 2.0).count();
        assert!((100..300).contains(&kept), "kept {kept} of 400");
        // The drop frequency follows p (odd element count exercises the last draw).
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let ones = Matrix::<f64>::ones((101, 99));
        let (_, m) = dropout::forward(&ones, DropoutRate::new(0.2).expect("valid"), &mut rng, None);
        let dropped = m.iter().filter(|&&v| v == 0.0).count() as f64 / m.len() as f64;
        assert!((dropped - 0.2).abs() < 0.02, "dropped {dropped}");
        assert!(m.iter().all(|&v| v == 0.0 || v == 1.25));
        assert!(DropoutRate::new(1.0).is_err());
        assert!(DropoutRate::new(-0.1).is_err());
        Ok(())
    }
}
