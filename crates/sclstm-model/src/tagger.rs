//! The [`Tagger`]: parameters, initialisation, the training forward ([`Tagger::loss`]) and
//! one-call multi-task prediction ([`Tagger::predict`]).

use std::sync::Arc;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::ThreadPool;
use sclstm_autodiff::{DropoutRate, ParamId, ParamStore, Reduction, Tape, Var};
use sclstm_core::{Backend, Matrix, Real};
use sclstm_layers::{
    BioConstraint, CrfReduction, CrfWeights, DirectionWeights, LayerWorkspace, LstmWeights,
    ScLstmArgs, TaskGateWeights, TaskInput, WeightsId, crf_marginals, crf_nll, sc_lstm_forward,
    viterbi_decode,
};

use crate::{Family, HeadKind, ModelConfig, ModelError, ModelInput, NUM_CAPS, TaskInputMode};

/// Ids of one task gate (one direction).
#[derive(Debug, Clone, Copy)]
struct GateIds {
    u: ParamId,
    w: ParamId,
    bias: ParamId,
}

/// Ids of one direction of one layer; `tasks[k]` is task `k`'s gate where the layer has one.
#[derive(Debug, Clone)]
struct DirIds {
    w_ih: ParamId,
    w_hh: ParamId,
    bias: ParamId,
    tasks: Vec<Option<GateIds>>,
}

/// Ids of one bidirectional layer: `[forward, reverse]`.
#[derive(Debug, Clone)]
struct LayerIds {
    dirs: [DirIds; 2],
}

/// Ids of the character CNN.
#[derive(Debug, Clone, Copy)]
struct CharIds {
    table: ParamId,
    kernel: ParamId,
    bias: ParamId,
}

/// Ids of one input representation plus encoder stack (one shared, or one per STL task).
#[derive(Debug, Clone)]
struct EncoderIds {
    word: ParamId,
    /// Learned capitalization embedding (`caps_dim` set).
    caps: Option<ParamId>,
    chars: Option<CharIds>,
    /// Scalar mix of contextual features: `(weights (1, S), γ (1, 1))`.
    mix: Option<(ParamId, ParamId)>,
    layers: Vec<LayerIds>,
}

/// Ids of one task's head.
#[derive(Debug, Clone, Copy)]
struct HeadIds {
    weight: ParamId,
    bias: ParamId,
    /// `(transitions, start, end)` of a CRF head.
    crf: Option<(ParamId, ParamId, ParamId)>,
}

/// Which layer's output a trace entry reads, and which columns.
struct TraceEntry {
    name: String,
    var: Var,
    cols: Option<(usize, usize)>,
}

/// Named intermediate values collected by [`Tagger::inspect`].
type Trace = Vec<TraceEntry>;

/// Dropout state of a training forward: the rate and the seeded mask generator.
struct Dropout {
    rate: DropoutRate,
    rng: ChaCha8Rng,
}

/// One sentence's tag ids and, per token, the probability the model gives its tag.
pub type ScoredTags = (Vec<u32>, Vec<f64>);

/// A multi-task sequence tagger: configuration, named parameters and the backend its
/// recurrent layers run on. See the crate docs for parameter names, initialisation,
/// the families and the loss.
pub struct Tagger<B: Backend> {
    config: ModelConfig,
    params: ParamStore<B::Elem>,
    /// Per parameter: the task that owns it (`None`: shared by all tasks).
    owners: Vec<Option<usize>>,
    encoders: Vec<EncoderIds>,
    heads: Vec<HeadIds>,
    bio: Vec<Option<BioConstraint>>,
    ws: LayerWorkspace<B>,
    pool: Option<Arc<ThreadPool>>,
}

impl<B: Backend> std::fmt::Debug for Tagger<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tagger")
            .field("family", &self.config.family)
            .field("tasks", &self.config.tasks.len())
            .field("parameters", &self.params.len())
            .field("scalars", &self.params.num_scalars())
            .field("backend", &self.ws.backend().name())
            .field("concurrent_directions", &self.ws.has_join())
            .finish()
    }
}

/// Draws a `shape` matrix uniform in `[-a, a)`.
fn uniform<R: Real>(rng: &mut ChaCha8Rng, shape: (usize, usize), a: f64) -> Matrix<R> {
    Matrix::from_shape_simple_fn(shape, || R::from_f64(rng.random_range(-a..a)))
}

/// Builds the store in a fixed order, drawing every initial value from one generator.
struct Builder<R: Real> {
    store: ParamStore<R>,
    owners: Vec<Option<usize>>,
    rng: ChaCha8Rng,
}

impl<R: Real> Builder<R> {
    fn add(&mut self, name: String, value: Matrix<R>, owner: Option<usize>) -> ParamId {
        self.owners.push(owner);
        self.store
            .add(&name, value)
            .expect("internal: parameter names are unique by construction")
    }

    fn uniform(
        &mut self,
        name: String,
        shape: (usize, usize),
        a: f64,
        owner: Option<usize>,
    ) -> ParamId {
        let v = uniform(&mut self.rng, shape, a);
        self.add(name, v, owner)
    }

    /// An input representation and encoder stack under `prefix`.
    fn encoder(&mut self, cfg: &ModelConfig, prefix: &str, owner: Option<usize>) -> EncoderIds {
        let dw = cfg.word_dim;
        let mut table = uniform::<R>(
            &mut self.rng,
            (cfg.word_vocab, dw),
            (3.0 / dw as f64).sqrt(),
        );
        table.row_mut(0).fill(R::zero());
        let word = self.add(format!("{prefix}embed.word"), table, owner);
        let caps = match (cfg.caps, cfg.caps_dim) {
            (true, Some(d)) => {
                let a = (3.0 / d as f64).sqrt();
                Some(self.uniform(format!("{prefix}embed.caps"), (NUM_CAPS, d), a, owner))
            }
            _ => None,
        };
        let chars = cfg.char_cnn.as_ref().map(|c| {
            let table = self.uniform(format!("{prefix}embed.char"), (c.vocab, c.dim), 0.1, owner);
            let a = 1.0 / ((c.kernel * c.dim) as f64).sqrt();
            let kernel = self.uniform(
                format!("{prefix}char_cnn.weight"),
                (c.kernel * c.dim, c.channels),
                a,
                owner,
            );
            let bias = self.uniform(format!("{prefix}char_cnn.bias"), (1, c.channels), a, owner);
            CharIds {
                table,
                kernel,
                bias,
            }
        });
        // Constants, not draws: uniform mixing (w = 0) and γ = 1, as ELMo starts, so
        // adding the mix leaves every other parameter's initial value unchanged.
        let mix = cfg.contextual.as_ref().map(|c| {
            let w = self.add(
                format!("{prefix}embed.mix.weights"),
                Matrix::zeros((1, c.states)),
                owner,
            );
            let g = self.add(
                format!("{prefix}embed.mix.gamma"),
                Matrix::ones((1, 1)),
                owner,
            );
            (w, g)
        });
        let h = cfg.hidden;
        let a = 1.0 / (h as f64).sqrt();
        let top = cfg.layers - 1;
        let mut layers = Vec::with_capacity(cfg.layers);
        for l in 0..cfg.layers {
            let d_in = if l == 0 { cfg.input_dim() } else { 2 * h };
            let gated = cfg.family == Family::ScLstm
                && (l == top || cfg.task_input == TaskInputMode::Chained);
            let d_k = if cfg.task_input == TaskInputMode::Chained && l > 0 {
                2 * h
            } else {
                d_in
            };
            let mut dir = |d: &str| {
                let base = format!("{prefix}encoder.layer{l}.{d}");
                let w_ih = self.uniform(format!("{base}.w_ih"), (4 * h, d_in), a, owner);
                let w_hh = self.uniform(format!("{base}.w_hh"), (4 * h, h), a, owner);
                let bias = self.uniform(format!("{base}.bias"), (1, 4 * h), a, owner);
                let tasks = cfg
                    .tasks
                    .iter()
                    .enumerate()
                    .map(|(k, t)| {
                        gated.then(|| {
                            let tb = format!("{base}.task.{}", t.name);
                            GateIds {
                                u: self.uniform(format!("{tb}.u"), (h, d_k), a, Some(k)),
                                w: self.uniform(format!("{tb}.w"), (h, h), a, Some(k)),
                                bias: self.uniform(format!("{tb}.bias"), (1, h), a, Some(k)),
                            }
                        })
                    })
                    .collect();
                DirIds {
                    w_ih,
                    w_hh,
                    bias,
                    tasks,
                }
            };
            let fwd = dir("fwd");
            let bwd = dir("bwd");
            layers.push(LayerIds { dirs: [fwd, bwd] });
        }
        EncoderIds {
            word,
            caps,
            chars,
            mix,
            layers,
        }
    }
}

/// Row-wise softmax (max-shifted, so it never overflows).
fn softmax_rows<R: Real>(z: &Matrix<R>) -> Matrix<R> {
    let mut out = z.clone();
    for mut row in out.rows_mut() {
        let max = row.iter().copied().fold(R::neg_infinity(), R::max);
        row.mapv_inplace(|v| (v - max).exp());
        let sum: R = row.iter().copied().sum();
        row.mapv_inplace(|v| v / sum);
    }
    out
}

/// Index of the largest entry of a row (ties go to the lowest index).
fn argmax<R: Real>(row: ndarray::ArrayView1<'_, R>) -> u32 {
    let mut best = 0;
    for (j, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = j;
        }
    }
    best as u32
}

impl<B: Backend + 'static> Tagger<B> {
    /// Builds a tagger with freshly initialised parameters.
    ///
    /// All random values come from one `ChaCha8Rng` seeded with `seed`, drawn in parameter
    /// order, so the same config and seed give the same model. `pretrained` rows (row id,
    /// vector of `word_dim` values) overwrite the word embedding's random rows (every STL
    /// copy gets them).
    ///
    /// # Errors
    /// [`ModelError::Config`] for an invalid config, [`ModelError::SizeOverflow`] or
    /// [`ModelError::TooLarge`] for a model that does not fit in memory
    /// ([`ModelConfig::check_memory`], checked before anything is allocated),
    /// [`ModelError::EmbeddingDim`] for a pretrained vector of the wrong length or an
    /// out-of-range row.
    pub fn new(
        config: ModelConfig,
        backend: Arc<B>,
        seed: u64,
        pretrained: Option<&[(usize, Vec<f32>)]>,
    ) -> Result<Self, ModelError> {
        config.validate()?;
        config.check_memory(std::mem::size_of::<B::Elem>())?;
        let mut b = Builder {
            store: ParamStore::new(),
            owners: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
        };
        let encoders = if config.family == Family::Stl {
            (0..config.tasks.len())
                .map(|k| b.encoder(&config, &format!("stl.{}.", config.tasks[k].name), Some(k)))
                .collect()
        } else {
            vec![b.encoder(&config, "", None)]
        };
        let h = config.hidden;
        let d_s = if config.family == Family::ScLstm {
            4 * h
        } else {
            2 * h
        };
        let a = 1.0 / (d_s as f64).sqrt();
        let mut heads = Vec::with_capacity(config.tasks.len());
        for (k, t) in config.tasks.iter().enumerate() {
            let n = t.tags.len();
            let base = format!("head.{}", t.name);
            let weight = b.uniform(format!("{base}.weight"), (d_s, n), a, Some(k));
            let bias = b.uniform(format!("{base}.bias"), (1, n), a, Some(k));
            let crf = (t.head == HeadKind::Crf).then(|| {
                (
                    b.add(
                        format!("{base}.crf.transitions"),
                        Matrix::zeros((n, n)),
                        Some(k),
                    ),
                    b.add(format!("{base}.crf.start"), Matrix::zeros((1, n)), Some(k)),
                    b.add(format!("{base}.crf.end"), Matrix::zeros((1, n)), Some(k)),
                )
            });
            heads.push(HeadIds { weight, bias, crf });
        }
        if let Some(rows) = pretrained {
            for enc in &encoders {
                let table = b.store.get_mut(enc.word);
                let (v, dim) = table.dim();
                for (row, vec) in rows {
                    if *row >= v || vec.len() != dim {
                        return Err(ModelError::EmbeddingDim {
                            row: *row,
                            expected: dim,
                            found: vec.len(),
                            rows: v,
                        });
                    }
                    for (dst, &x) in table.row_mut(*row).iter_mut().zip(vec) {
                        *dst = B::Elem::from_f64(f64::from(x));
                    }
                }
            }
        }
        let bio = config
            .tasks
            .iter()
            .map(|t| {
                (t.head == HeadKind::Crf && config.bio_constrained)
                    .then(|| BioConstraint::from_tags(&t.tags))
            })
            .collect();
        Ok(Tagger {
            config,
            params: b.store,
            owners: b.owners,
            encoders,
            heads,
            bio,
            ws: LayerWorkspace::new(backend),
            pool: None,
        })
    }

    /// Runs the tape's large host products (head matmuls, char convolution) on `pool`.
    pub fn set_thread_pool(&mut self, pool: Option<Arc<ThreadPool>>) {
        self.pool = pool;
    }

    /// Runs the recurrent layers' weight products packed as `p` says (bf16 or int8) when
    /// tagging (calls that do not record a backward; training stays in the model's
    /// precision), or in f32 again with `None`. See
    /// [`LayerWorkspace::set_packed_products`].
    ///
    /// # Errors
    /// [`ModelError::Num`] when the backend has no such products.
    pub fn set_packed_products(
        &mut self,
        p: Option<sclstm_core::Packed>,
    ) -> Result<(), ModelError> {
        Ok(self.ws.set_packed_products(p)?)
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The parameters.
    pub fn params(&self) -> &ParamStore<B::Elem> {
        &self.params
    }

    /// The parameters, mutably (optimizer steps).
    pub fn params_mut(&mut self) -> &mut ParamStore<B::Elem> {
        &mut self.params
    }

    /// The backend the recurrent layers run on.
    pub fn backend(&self) -> &Arc<B> {
        self.ws.backend()
    }

    /// The task that owns a parameter (its head, its SC-LSTM gates, its STL model), or
    /// `None` for parameters shared by every task.
    pub fn param_owner(&self, id: ParamId) -> Option<usize> {
        self.owners.get(id.index()).copied().flatten()
    }

    /// A recording tape over this tagger's parameters, for [`Tagger::loss`].
    pub fn tape(&self) -> Tape<'_, B::Elem> {
        Tape::with_params(&self.params).with_pool(self.pool.as_deref())
    }

    /// Checks that `tags` are exactly task `task`'s tag names in id order.
    ///
    /// # Errors
    /// [`ModelError::TaskIndex`] or [`ModelError::TagSetMismatch`].
    pub fn check_tags<S: AsRef<str>>(&self, task: usize, tags: &[S]) -> Result<(), ModelError> {
        let t = self.task(task)?;
        if t.tags.len() != tags.len() || t.tags.iter().zip(tags).any(|(a, b)| a != b.as_ref()) {
            return Err(ModelError::TagSetMismatch {
                task: t.name.clone(),
                expected: t.tags.clone(),
                found: tags.iter().map(|s| s.as_ref().to_string()).collect(),
            });
        }
        Ok(())
    }

    fn task(&self, task: usize) -> Result<&crate::TaskConfig, ModelError> {
        self.config.tasks.get(task).ok_or(ModelError::TaskIndex {
            index: task,
            count: self.config.tasks.len(),
        })
    }

    fn encoder(&self, task: usize) -> &EncoderIds {
        &self.encoders[if self.config.family == Family::Stl {
            task
        } else {
            0
        }]
    }

    /// The training loss of one batch of task `task`: `λ_task · L_task`, where `L_task`
    /// is the sum over the batch's sentences of each sentence's loss (token
    /// cross-entropies summed, or the CRF negative log-likelihood), divided by `B`.
    /// Dropout masks are drawn from `ChaCha8Rng::seed_from_u64(dropout_seed)`. Only the
    /// parameters task `task` uses enter the tape. The tape must come from
    /// [`Tagger::tape`] (fused layers read the weights from this tagger's store); on a
    /// no-grad tape (`tagger.tape().no_grad()`) it evaluates without dropout or recording.
    /// Gold tags are time-major (`T·B`); padding entries are ignored.
    ///
    /// # Errors
    /// Bad task index, malformed input, gold tags out of range, ids outside their tables,
    /// non-finite logits.
    pub fn loss(
        &self,
        tape: &mut Tape<'_, B::Elem>,
        input: &ModelInput<'_>,
        task: usize,
        gold: &[u32],
        dropout_seed: u64,
    ) -> Result<Var, ModelError> {
        let dropout = if self.config.dropout > 0.0 {
            Some(Dropout {
                rate: DropoutRate::new(self.config.dropout)?,
                rng: ChaCha8Rng::seed_from_u64(dropout_seed),
            })
        } else {
            None
        };
        self.loss_inner(tape, input, task, gold, dropout, None)
    }

    fn loss_inner(
        &self,
        tape: &mut Tape<'_, B::Elem>,
        input: &ModelInput<'_>,
        task: usize,
        gold: &[u32],
        mut dropout: Option<Dropout>,
        mut trace: Option<&mut Trace>,
    ) -> Result<Var, ModelError> {
        let t = self.task(task)?;
        self.validate_input(input)?;
        let n = input.positions();
        if gold.len() != n {
            return Err(ModelError::Input(format!(
                "{} gold tags for T·B = {n}",
                gold.len()
            )));
        }
        let mask = input.mask();
        let num_tags = t.tags.len();
        let mut labels = Vec::with_capacity(n);
        for (p, (&g, &real)) in gold.iter().zip(&mask).enumerate() {
            if real && g as usize >= num_tags {
                return Err(ModelError::TagOutOfRange {
                    task: t.name.clone(),
                    tag: g,
                    position: p,
                    num_tags,
                });
            }
            labels.push(if real { g as usize } else { 0 });
        }
        let reprs =
            self.task_reprs(tape, input, &[task], dropout.as_mut(), trace.as_deref_mut())?;
        let logits = self.logits(tape, task, reprs[0])?;
        let head = self.heads[task];
        let total = match head.crf {
            None => tape.cross_entropy(logits, &labels, &mask, Reduction::Sum)?,
            Some((ta, st, en)) => {
                let vars = [logits, tape.param(ta)?, tape.param(st)?, tape.param(en)?];
                let w = CrfWeights {
                    transitions: self.params.get(ta),
                    start: self.params.get(st),
                    end: self.params.get(en),
                };
                let (value, node) = crf_nll(
                    tape.value(logits),
                    &labels,
                    input.lens,
                    w,
                    CrfReduction::Sum,
                    tape.is_recording(),
                )?;
                match node {
                    Some(op) => tape.push_fused(&vars, value, op),
                    None => tape.leaf(value),
                }
            }
        };
        let scale = B::Elem::from_f64(t.lambda / input.batch as f64);
        let loss = tape.scale(total, scale)?;
        if let Some(tr) = trace {
            tr.push(TraceEntry {
                name: format!("act.logits.{}", t.name),
                var: logits,
                cols: None,
            });
            tr.push(TraceEntry {
                name: format!("act.loss.{}", t.name),
                var: loss,
                cols: None,
            });
        }
        Ok(loss)
    }

    /// Tags the batch for every task in `tasks` in one call: shared computation runs once
    /// (an SC-LSTM computes all requested task gates in one top-layer pass), nothing is
    /// recorded and dropout is off. Softmax heads take the per-token argmax (ties to the
    /// lowest tag id), CRF heads Viterbi (BIO-constrained when the config says so).
    /// Returns, per requested task, per sentence, the tag ids of its real length.
    ///
    /// # Errors
    /// Bad task index, malformed input, ids outside their tables.
    pub fn predict(
        &self,
        input: &ModelInput<'_>,
        tasks: &[usize],
    ) -> Result<Vec<Vec<Vec<u32>>>, ModelError> {
        let decoded = self.decode(input, tasks, false)?;
        Ok(decoded
            .into_iter()
            .map(|per_task| per_task.into_iter().map(|(tags, _)| tags).collect())
            .collect())
    }

    /// [`Tagger::predict`] with, for every token, the probability the model gives the tag
    /// it chose: the softmax probability for a softmax head, the CRF's marginal
    /// `p(y_t = tag | x)` (forward–backward) for a CRF head.
    ///
    /// # Errors
    /// As [`Tagger::predict`].
    pub fn predict_scored(
        &self,
        input: &ModelInput<'_>,
        tasks: &[usize],
    ) -> Result<Vec<Vec<ScoredTags>>, ModelError> {
        Ok(self
            .decode(input, tasks, true)?
            .into_iter()
            .map(|per_task| {
                per_task
                    .into_iter()
                    .map(|(tags, p)| (tags, p.unwrap_or_default()))
                    .collect()
            })
            .collect())
    }

    /// The decoding of [`Tagger::predict`], with the chosen tags' probabilities when
    /// `scored`.
    #[allow(clippy::type_complexity)]
    fn decode(
        &self,
        input: &ModelInput<'_>,
        tasks: &[usize],
        scored: bool,
    ) -> Result<Vec<Vec<(Vec<u32>, Option<Vec<f64>>)>>, ModelError> {
        for &k in tasks {
            self.task(k)?;
        }
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        self.validate_input(input)?;
        let mut tape = Tape::with_params(&self.params)
            .with_pool(self.pool.as_deref())
            .no_grad();
        let reprs = self.task_reprs(&mut tape, input, tasks, None, None)?;
        let bsz = input.batch;
        let mut out = Vec::with_capacity(tasks.len());
        for (&k, &repr) in tasks.iter().zip(&reprs) {
            let logits = self.logits(&mut tape, k, repr)?;
            let z = tape.value(logits);
            // Per position (t·B + b), the probability of each tag, when asked.
            let (paths, probs): (Vec<Vec<u32>>, Option<Matrix<B::Elem>>) = match self.heads[k].crf {
                None => {
                    let paths = (0..bsz)
                        .map(|b| {
                            (0..input.lens[b])
                                .map(|t| argmax(z.row(t * bsz + b)))
                                .collect()
                        })
                        .collect();
                    (paths, scored.then(|| softmax_rows(z)))
                }
                Some((ta, st, en)) => {
                    let w = CrfWeights {
                        transitions: self.params.get(ta),
                        start: self.params.get(st),
                        end: self.params.get(en),
                    };
                    let paths = viterbi_decode(z, input.lens, w, self.bio[k].as_ref())?
                        .into_iter()
                        .map(|p| p.into_iter().map(|y| y as u32).collect())
                        .collect();
                    let marginals = if scored {
                        Some(crf_marginals(z, input.lens, w)?)
                    } else {
                        None
                    };
                    (paths, marginals)
                }
            };
            out.push(
                paths
                    .into_iter()
                    .enumerate()
                    .map(|(b, tags): (usize, Vec<u32>)| {
                        let p = probs.as_ref().map(|m| {
                            tags.iter()
                                .enumerate()
                                .map(|(t, &y)| m[[t * bsz + b, y as usize]].to_f64())
                                .collect()
                        });
                        (tags, p)
                    })
                    .collect(),
            );
        }
        Ok(out)
    }

    fn validate_input(&self, input: &ModelInput<'_>) -> Result<(), ModelError> {
        input.validate(
            self.config.caps,
            self.config.char_cnn.is_some(),
            self.config.contextual.as_ref().map(|c| c.states * c.dim),
        )
    }

    /// `logits = repr · W + b` of task `k`'s head.
    fn logits(&self, tape: &mut Tape<'_, B::Elem>, k: usize, repr: Var) -> Result<Var, ModelError> {
        let h = self.heads[k];
        let w = tape.param(h.weight)?;
        let b = tape.param(h.bias)?;
        let z = tape.matmul(repr, w)?;
        Ok(tape.add_bias(z, b)?)
    }

    /// Applies dropout when training with a non-zero rate; otherwise returns `x`.
    fn drop(
        tape: &mut Tape<'_, B::Elem>,
        x: Var,
        dropout: &mut Option<&mut Dropout>,
    ) -> Result<Var, ModelError> {
        match dropout {
            Some(d) => Ok(tape.dropout(x, d.rate, &mut d.rng)?),
            None => Ok(x),
        }
    }

    /// The input representation `[word ⊕ caps ⊕ char-CNN ⊕ contextual]` (before
    /// dropout), (T·B, D).
    fn embed(
        &self,
        tape: &mut Tape<'_, B::Elem>,
        enc: &EncoderIds,
        input: &ModelInput<'_>,
        trace: &mut Option<&mut Trace>,
    ) -> Result<Var, ModelError> {
        let n = input.positions();
        let mut parts = Vec::with_capacity(3);
        let table = tape.param(enc.word)?;
        let ids: Vec<usize> = input.word_ids.iter().map(|&i| i as usize).collect();
        let word = tape.embedding(table, &ids)?;
        parts.push(("act.embed.word", word));
        if let Some(caps) = enc.caps {
            let ids: Vec<usize> = (0..n)
                .map(|p| {
                    if input.is_real(p) {
                        input.cap_ids[p] as usize
                    } else {
                        0
                    }
                })
                .collect();
            let table = tape.param(caps)?;
            parts.push(("act.embed.caps", tape.embedding(table, &ids)?));
        } else if self.config.caps {
            let mut onehot = Matrix::<B::Elem>::zeros((n, NUM_CAPS));
            for p in (0..n).filter(|&p| input.is_real(p)) {
                onehot[(p, input.cap_ids[p] as usize)] = <B::Elem as num_traits::One>::one();
            }
            parts.push(("act.embed.caps", tape.leaf(onehot)));
        }
        if let Some(c) = enc.chars {
            let w = input.word_len_max;
            let chars: Vec<usize> = input.char_ids.iter().map(|&i| i as usize).collect();
            // Padding tokens (and empty words) are convolved as one character (their slot 0,
            // normally the padding character): the conv op rejects empty words, and the
            // features of padding rows never reach the loss.
            let lens: Vec<usize> = input.char_lens.iter().map(|&l| l.max(1)).collect();
            let table = tape.param(c.table)?;
            let x = tape.embedding(table, &chars)?;
            let kernel = tape.param(c.kernel)?;
            let bias = tape.param(c.bias)?;
            let y = tape.char_conv_maxpool(x, kernel, bias, w, &lens)?;
            parts.push(("act.embed.char", y));
        }
        if let Some((w, g)) = enc.mix {
            let width = input.contextual.len() / n.max(1);
            let h = Matrix::<B::Elem>::from_shape_fn((n, width), |(p, j)| {
                <B::Elem as Real>::from_f64(f64::from(input.contextual[p * width + j]))
            });
            // The encoder is frozen: its features are a constant, with no gradient.
            let h = tape.constant(h);
            let (w, g) = (tape.param(w)?, tape.param(g)?);
            parts.push(("act.embed.contextual", tape.scalar_mix(h, w, g)?));
        }
        let vars: Vec<Var> = parts.iter().map(|&(_, v)| v).collect();
        let x0 = if vars.len() == 1 {
            vars[0]
        } else {
            tape.concat(&vars)?
        };
        if let Some(tr) = trace {
            for (name, var) in parts {
                tr.push(TraceEntry {
                    name: name.to_string(),
                    var,
                    cols: None,
                });
            }
            tr.push(TraceEntry {
                name: "act.input".into(),
                var: x0,
                cols: None,
            });
        }
        Ok(x0)
    }

    /// One bidirectional (SC-)LSTM layer. `gates` lists `(task, separate input)` for each
    /// task gate to compute (`None`: the gate reads `x`). Output columns:
    /// `[h_fwd ⊕ h_bwd ⊕ q^{k1}_fwd ⊕ q^{k1}_bwd ⊕ …]`.
    fn layer(
        &self,
        tape: &mut Tape<'_, B::Elem>,
        ids: &LayerIds,
        x: Var,
        lens: &[usize],
        gates: &[(usize, Option<Var>)],
    ) -> Result<Var, ModelError> {
        let gate = |d: &DirIds, k: usize| {
            d.tasks[k].expect("internal: the layer has a gate for every task it is asked for")
        };
        let mut inputs = vec![x];
        inputs.extend(gates.iter().filter_map(|&(_, s)| s));
        for d in &ids.dirs {
            for id in [d.w_ih, d.w_hh, d.bias] {
                inputs.push(tape.param(id)?);
            }
        }
        for &(k, _) in gates {
            for d in &ids.dirs {
                let g = gate(d, k);
                for id in [g.u, g.w, g.bias] {
                    inputs.push(tape.param(id)?);
                }
            }
        }
        let p = &self.params;
        let (out, node) = {
            let directions = ids
                .dirs
                .iter()
                .map(|d| DirectionWeights {
                    cell: LstmWeights {
                        w_ih: p.get(d.w_ih),
                        w_hh: p.get(d.w_hh),
                        b: p.get(d.bias),
                    },
                    tasks: gates
                        .iter()
                        .map(|&(k, _)| {
                            let g = gate(d, k);
                            TaskGateWeights {
                                u: p.get(g.u),
                                w: p.get(g.w),
                                b: p.get(g.bias),
                            }
                        })
                        .collect(),
                })
                .collect();
            let task_inputs = gates
                .iter()
                .map(|&(_, s)| match s {
                    Some(v) => TaskInput::Separate(tape.value(v)),
                    None => TaskInput::Shared,
                })
                .collect();
            // Tagging reuses the weights on the device until the parameters change.
            let weights_id = (!tape.is_recording()).then(|| WeightsId {
                store: p.store_id(),
                version: p.version(),
                directions: ids
                    .dirs
                    .iter()
                    .map(|d| {
                        let mut ids = vec![d.w_ih.0, d.w_hh.0, d.bias.0];
                        for &(k, _) in gates {
                            let g = gate(d, k);
                            ids.extend([g.u.0, g.w.0, g.bias.0]);
                        }
                        ids
                    })
                    .collect(),
            });
            let args = ScLstmArgs {
                x: tape.value(x),
                lens,
                task_inputs,
                directions,
                weights_id,
            };
            sc_lstm_forward(&self.ws, &args, tape.is_recording())?
        };
        Ok(match node {
            Some(op) => tape.push_fused(&inputs, out, op),
            None => tape.leaf(out),
        })
    }

    /// The representation each task in `tasks` hands its head (after dropout), computing
    /// shared parts once.
    fn task_reprs(
        &self,
        tape: &mut Tape<'_, B::Elem>,
        input: &ModelInput<'_>,
        tasks: &[usize],
        mut dropout: Option<&mut Dropout>,
        mut trace: Option<&mut Trace>,
    ) -> Result<Vec<Var>, ModelError> {
        let h2 = 2 * self.config.hidden;
        let lens = input.lens;
        let record = |trace: &mut Option<&mut Trace>, name: String, var: Var, cols| {
            if let Some(tr) = trace {
                tr.push(TraceEntry { name, var, cols });
            }
        };
        match self.config.family {
            Family::Stl | Family::LstmS => {
                let groups: Vec<(usize, Vec<usize>)> = if self.config.family == Family::Stl {
                    tasks.iter().map(|&k| (k, vec![k])).collect()
                } else {
                    vec![(tasks[0], tasks.to_vec())]
                };
                let mut reprs = vec![None; tasks.len()];
                for (enc_task, members) in groups {
                    let enc = self.encoder(enc_task);
                    let x0 = self.embed(tape, enc, input, &mut trace)?;
                    let mut x = Self::drop(tape, x0, &mut dropout)?;
                    for (l, ids) in enc.layers.iter().enumerate() {
                        let out = self.layer(tape, ids, x, lens, &[])?;
                        record(&mut trace, format!("act.layer{l}.h"), out, None);
                        x = Self::drop(tape, out, &mut dropout)?;
                    }
                    for (slot, &k) in reprs.iter_mut().zip(tasks) {
                        if members.contains(&k) {
                            *slot = Some(x);
                        }
                    }
                }
                Ok(reprs
                    .into_iter()
                    .map(|r| r.expect("internal: every task belongs to a group"))
                    .collect())
            }
            Family::LstmD => {
                let assigned = tasks
                    .iter()
                    .map(|&k| self.config.supervised_layer(k))
                    .collect::<Result<Vec<_>, _>>()?;
                let need = assigned.iter().copied().max().unwrap_or(1);
                let enc = self.encoder(tasks[0]);
                let x0 = self.embed(tape, enc, input, &mut trace)?;
                let mut x = Self::drop(tape, x0, &mut dropout)?;
                let mut outs = Vec::with_capacity(need);
                for (l, ids) in enc.layers[..need].iter().enumerate() {
                    let out = self.layer(tape, ids, x, lens, &[])?;
                    record(&mut trace, format!("act.layer{l}.h"), out, None);
                    x = Self::drop(tape, out, &mut dropout)?;
                    outs.push(x);
                }
                Ok(assigned.iter().map(|&l| outs[l - 1]).collect())
            }
            Family::ScLstm => {
                let enc = self.encoder(tasks[0]);
                let names: Vec<&str> = tasks
                    .iter()
                    .map(|&k| self.config.tasks[k].name.as_str())
                    .collect();
                let x0 = self.embed(tape, enc, input, &mut trace)?;
                let mut x = Self::drop(tape, x0, &mut dropout)?;
                let chained = self.config.task_input == TaskInputMode::Chained;
                let top = enc.layers.len() - 1;
                // Chained reading: each task's `[q_fwd ⊕ q_bwd]` from the layer below.
                let mut q_in: Vec<Option<Var>> = vec![None; tasks.len()];
                let mut out = x;
                for (l, ids) in enc.layers.iter().enumerate() {
                    let gated = l == top || chained;
                    let gates: Vec<(usize, Option<Var>)> = if gated {
                        tasks.iter().copied().zip(q_in.iter().copied()).collect()
                    } else {
                        Vec::new()
                    };
                    let raw = self.layer(tape, ids, x, lens, &gates)?;
                    record(&mut trace, format!("act.layer{l}.h"), raw, Some((0, h2)));
                    for (j, name) in names.iter().enumerate() {
                        if gated {
                            let cols = Some((h2 * (1 + j), h2));
                            record(&mut trace, format!("act.layer{l}.q.{name}"), raw, cols);
                        }
                    }
                    out = Self::drop(tape, raw, &mut dropout)?;
                    if l < top {
                        if gated {
                            x = tape.slice_cols(out, 0, h2)?;
                            for (j, q) in q_in.iter_mut().enumerate() {
                                *q = Some(tape.slice_cols(out, h2 * (1 + j), h2)?);
                            }
                        } else {
                            x = out;
                        }
                    }
                }
                // s^k = [h_fwd ⊕ h_bwd ⊕ q^k_fwd ⊕ q^k_bwd]: with one task that is the
                // whole top output; with several, h plus task k's block.
                if tasks.len() == 1 {
                    return Ok(vec![out]);
                }
                (0..tasks.len())
                    .map(|j| Ok(tape.select_cols(out, &[(0, h2), (h2 * (1 + j), h2)])?))
                    .collect()
            }
        }
    }

    /// Named tensors of the first-batch forward and backward of task `task` with dropout
    /// off, in the model's precision; see the crate docs for the names.
    ///
    /// # Errors
    /// As [`Tagger::loss`].
    pub fn inspect(
        &self,
        input: &ModelInput<'_>,
        task: usize,
        gold: &[u32],
    ) -> Result<crate::checkpoint::NamedMatrices<B::Elem>, ModelError> {
        let mut trace = Trace::new();
        let mut tape = self.tape();
        let loss = self.loss_inner(&mut tape, input, task, gold, None, Some(&mut trace))?;
        let n = input.positions();
        let as_elem = |v: Vec<f64>, rows: usize, cols: usize| {
            Matrix::from_shape_vec((rows, cols), v.into_iter().map(B::Elem::from_f64).collect())
                .expect("internal: length matches shape")
        };
        let mut out = vec![
            (
                "input.word_ids".to_string(),
                as_elem(input.word_ids.iter().map(|&x| f64::from(x)).collect(), n, 1),
            ),
            (
                "input.lens".to_string(),
                as_elem(
                    input.lens.iter().map(|&x| x as f64).collect(),
                    input.batch,
                    1,
                ),
            ),
            (
                "input.gold".to_string(),
                as_elem(gold.iter().map(|&x| f64::from(x)).collect(), n, 1),
            ),
        ];
        if self.config.caps {
            let caps = input.cap_ids.iter().map(|&x| f64::from(x)).collect();
            out.push(("input.cap_ids".into(), as_elem(caps, n, 1)));
        }
        if self.config.char_cnn.is_some() {
            let w = input.word_len_max;
            let ids = input.char_ids.iter().map(|&x| f64::from(x)).collect();
            out.push(("input.char_ids".into(), as_elem(ids, n, w)));
            let lens = input.char_lens.iter().map(|&x| x as f64).collect();
            out.push(("input.char_lens".into(), as_elem(lens, n, 1)));
        }
        for e in &trace {
            let v = tape.value(e.var);
            let m = match e.cols {
                Some((start, width)) => v.slice(ndarray::s![.., start..start + width]).to_owned(),
                None => v.clone(),
            };
            out.push((e.name.clone(), m));
        }
        let grads = tape.backward(loss)?;
        // Parameters the task's loss does not use (other tasks' heads and gates, other STL
        // models) have no gradient and no entry.
        for (id, name, _) in self.params.iter() {
            if let Some(g) = grads.param(id) {
                out.push((format!("grad.{name}"), g.to_dense()));
            }
        }
        Ok(out)
    }
}
