//! The training loop of Algorithm 1, dev-set model selection, checkpoints and resume.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use rayon::ThreadPool;
use sclstm_autodiff::optim::{Adam, AdamConfig};
use sclstm_core::{Backend, NumError, Real};
use sclstm_data::batch::{Batch, BatchConfig, EncodedSentence, epoch_batches, make_batch};
use sclstm_model::{CharCnnConfig, HeadKind, ModelConfig, ModelInput, Tagger, TaskConfig};
use sclstm_model::{ModelError, adam_from_extras, adam_to_extras};
use serde::{Deserialize, Serialize};

use super::data::{Prepared, PreparedSplit, PreparedTask, prepare};
use super::grads::{self, GradsLine};
use super::rundir::{
    self, MetricsLine, Replacement, RunFiles, RunLock, RunLog, RunVocab, TaskVocab,
};
use super::schedule::epoch_order;
use super::score::{TaskScore, score};
use crate::config::TrainConfig;
use crate::contextual::{self, batch_rows};
use crate::pool::host_pool;
use sclstm_encoder::Features;
use sclstm_model::checkpoint::write_atomic;

/// Metadata key of the trainer state inside `last.safetensors`.
const STATE_KEY: &str = "sclstm.train_state";

/// Most sentences in one batch when tagging (evaluation, prediction, `sclstm bench`).
pub const EVAL_BATCH: usize = 64;

/// Most padded tokens (longest sentence × sentences) in one tagging batch: batches of
/// long sentences get fewer of them, so that the layer caches of one batch stay near
/// 100 MB instead of growing with the longest sentence of the split.
pub const EVAL_TOKENS: usize = 2048;

/// Cuts sentences sorted by ascending `len` into consecutive tagging batches of at most
/// [`EVAL_BATCH`] sentences and [`EVAL_TOKENS`] padded tokens (at least one sentence
/// each). Returns `(start, end)` index ranges into the sorted order.
pub fn tagging_batches(sorted_lens: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < sorted_lens.len() {
        let mut end = start + 1;
        while end < sorted_lens.len()
            && end - start < EVAL_BATCH
            && sorted_lens[end] * (end + 1 - start) <= EVAL_TOKENS
        {
            end += 1;
        }
        out.push(start..end);
        start = end;
    }
    out
}

/// Failures of the training loop that callers may want to match on.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The loss became NaN or infinite; nothing was written for this step.
    #[error(
        "non-finite loss {value} for task `{task}` at step {step} (epoch {epoch}); training stopped, best checkpoint left untouched"
    )]
    NonFiniteLoss {
        /// Task of the batch.
        task: String,
        /// Optimizer step (0-based) that produced it.
        step: u64,
        /// 1-based epoch.
        epoch: usize,
        /// The value.
        value: f64,
    },
    /// The gradient of a batch has a NaN or infinite norm; no update was made.
    #[error(
        "non-finite gradient (norm {norm}) for task `{task}` at step {step} (epoch {epoch}); training stopped before updating, the last checkpoint is kept"
    )]
    NonFiniteGradient {
        /// Task of the batch.
        task: String,
        /// Optimizer step (0-based) that produced it.
        step: u64,
        /// 1-based epoch.
        epoch: usize,
        /// The global gradient norm.
        norm: f64,
    },
    /// Training was asked to stop ([`RunOptions::interrupt`]) and saved where it stands.
    #[error(
        "interrupted at epoch {epoch}, step {step}: saved {dir}/last.safetensors; continue with `sclstm train --resume {dir}`"
    )]
    Interrupted {
        /// 1-based epoch in progress.
        epoch: usize,
        /// Optimizer steps taken.
        step: u64,
        /// The run directory.
        dir: String,
    },
    /// The parameters became non-finite (the updates diverged): nothing was written, so the
    /// last checkpoint on disk is the last good one.
    #[error(
        "the parameters diverged by step {step} (epoch {epoch}): {detail}; nothing was written, the last good checkpoint in {dir} is kept (try a smaller --lr or --clip)"
    )]
    Diverged {
        /// Optimizer steps taken.
        step: u64,
        /// 1-based epoch.
        epoch: usize,
        /// Which tensor went non-finite.
        detail: String,
        /// The run directory.
        dir: String,
    },
}

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    /// Epochs completed.
    pub epochs: usize,
    /// Optimizer steps taken.
    pub steps: u64,
    /// 1-based epoch of the best dev average.
    pub best_epoch: usize,
    /// Best dev average (%).
    pub best_dev_average: f64,
    /// Dev scores of the best epoch.
    pub dev: Vec<TaskScore>,
    /// Test scores of the best epoch.
    pub test: Vec<TaskScore>,
    /// Mean training throughput (tokens/s) of the epochs run in this process.
    pub tokens_per_s: f64,
    /// Where the run this one replaced was moved ([`RunOptions::replace`]).
    pub replaced: Option<PathBuf>,
}

/// Knobs of a run that do not change the model or its results.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Record gradient statistics every N steps (0: never).
    pub log_grads: u64,
    /// Write `last.safetensors` every N steps inside an epoch (0: only at epoch ends).
    pub checkpoint_steps: u64,
    /// Stop after this many optimizer steps in this process (for tests of resume).
    pub stop_after_steps: Option<u64>,
    /// Replace a run already in the run directory (`--force`) instead of refusing to start:
    /// the new run is built in a sibling directory and swapped in at its first checkpoint
    /// (see [`rundir::Replacement`]).
    pub replace: bool,
    /// Set (e.g. by a Ctrl-C handler) to stop after the current step: training then writes
    /// `last.safetensors` and stops with [`TrainError::Interrupted`].
    pub interrupt: Option<Arc<AtomicBool>>,
}

/// Where training stands; saved inside `last.safetensors` so a run resumes exactly.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct TrainState {
    /// 0-based epoch in progress.
    epoch: usize,
    /// Batches of this epoch already trained on.
    position: usize,
    /// Optimizer steps so far.
    step: u64,
    /// Best dev average so far and its 1-based epoch.
    best: Option<(f64, usize)>,
    /// Epochs since the best one.
    bad_epochs: usize,
    /// Per task: loss sum and batches of the current epoch.
    loss_sum: Vec<f64>,
    loss_batches: Vec<usize>,
    /// Training tokens and seconds of the current epoch.
    tokens: u64,
    seconds: f64,
    /// Seconds of training over the whole run.
    elapsed: f64,
}

/// The model input view of a data batch and its contextual features (the
/// [`crate::contextual::batch_rows`] of the batch; empty without an encoder).
pub fn model_input<'a>(batch: &'a Batch, contextual: &'a [f32]) -> ModelInput<'a> {
    ModelInput {
        steps: batch.seq_len,
        batch: batch.batch_size,
        lens: &batch.lens,
        word_ids: &batch.word_ids,
        cap_ids: &batch.cap_ids,
        char_ids: &batch.char_ids,
        char_lens: &batch.char_lens,
        word_len_max: batch.max_word_len,
        contextual,
    }
}

/// SplitMix64: turns (seed, counter) into well-mixed, independent-looking seeds.
fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The model configuration a training configuration asks for.
pub fn model_config(config: &TrainConfig, prepared: &Prepared) -> ModelConfig {
    let family = config.model;
    let tasks = prepared
        .tasks
        .iter()
        .map(|t| TaskConfig {
            name: t.name.clone(),
            tags: t.tags.tags().to_vec(),
            head: if config.crf {
                HeadKind::Crf
            } else {
                HeadKind::Softmax
            },
            lambda: config.lambda_of(&t.name),
            layer: config.lstm_d_layer.get(&t.name).copied(),
        })
        .collect();
    let mut m = ModelConfig::new(family, tasks, prepared.words.len());
    m.word_dim = prepared.embedding_dim;
    m.caps = config.caps;
    m.char_cnn = config
        .char_cnn
        .then(|| CharCnnConfig::new(prepared.chars.len()));
    m.hidden = config.hidden;
    m.layers = config.layers;
    m.dropout = config.dropout;
    m.task_input = config.task_input;
    m.contextual = prepared.contextual.clone();
    m
}

/// Tags `sentences` for every task in `tasks` in one pass per batch (length-sorted
/// batches, see [`tagging_batches`]: little padding). Returns `[task][sentence]` tag ids
/// in input order; empty sentences get no tags. `features` are the sentences'
/// contextual features (required by a tagger with contextual input).
pub fn tag_sentences<B: Backend + 'static>(
    tagger: &Tagger<B>,
    tasks: &[usize],
    sentences: &[EncodedSentence],
    features: Option<&Features>,
) -> anyhow::Result<Vec<Vec<Vec<u32>>>> {
    in_batches(sentences, features, tasks.len(), |input| {
        Ok(tagger.predict(input, tasks)?)
    })
}

/// [`tag_sentences`] with each token's probability of its tag ([`Tagger::predict_scored`]):
/// `[task][sentence]` of (tag ids, probabilities).
pub fn tag_sentences_scored<B: Backend + 'static>(
    tagger: &Tagger<B>,
    tasks: &[usize],
    sentences: &[EncodedSentence],
    features: Option<&Features>,
) -> anyhow::Result<Vec<Vec<sclstm_model::ScoredTags>>> {
    in_batches(sentences, features, tasks.len(), |input| {
        Ok(tagger.predict_scored(input, tasks)?)
    })
}

/// Runs `per_batch` on length-sorted tagging batches of `sentences` and puts its
/// `[task][sentence in batch]` results back in input order (`T::default()` for empty
/// sentences).
fn in_batches<T: Clone + Default>(
    sentences: &[EncodedSentence],
    features: Option<&Features>,
    ntasks: usize,
    mut per_batch: impl FnMut(&ModelInput<'_>) -> anyhow::Result<Vec<Vec<T>>>,
) -> anyhow::Result<Vec<Vec<T>>> {
    let mut order: Vec<usize> = (0..sentences.len())
        .filter(|&i| !sentences[i].is_empty())
        .collect();
    order.sort_by_key(|&i| sentences[i].len());
    let lens: Vec<usize> = order.iter().map(|&i| sentences[i].len()).collect();
    let mut out = vec![vec![T::default(); sentences.len()]; ntasks];
    for range in tagging_batches(&lens) {
        let batch = make_batch(sentences, &order[range]);
        let rows = batch_rows(&batch, features);
        let pred = per_batch(&model_input(&batch, &rows))?;
        for (per_task, out_k) in pred.into_iter().zip(&mut out) {
            for (b, tags) in per_task.into_iter().enumerate() {
                out_k[batch.sentence_ids[b]] = tags;
            }
        }
    }
    Ok(out)
}

/// Tags every sentence of a split for task `k`; predictions come back in split order.
pub fn evaluate_split<B: Backend + 'static>(
    tagger: &Tagger<B>,
    k: usize,
    split: &PreparedSplit,
) -> anyhow::Result<Vec<Vec<u32>>> {
    Ok(tag_sentences(tagger, &[k], &split.encoded, split.contextual.as_ref())?.swap_remove(0))
}

fn score_split<B: Backend + 'static>(
    tagger: &Tagger<B>,
    k: usize,
    task: &PreparedTask,
    split: &PreparedSplit,
) -> anyhow::Result<TaskScore> {
    let pred = evaluate_split(tagger, k, split)?;
    score(&task.scorer(), split, &pred)
}

fn save_last<B: Backend + 'static>(
    out: &Path,
    tagger: &Tagger<B>,
    adam: &Adam<B::Elem>,
    state: &TrainState,
    run_files: &RunFiles,
) -> anyhow::Result<()> {
    let (tensors, mut meta) = adam_to_extras(&adam.export(tagger.params()));
    meta.insert(STATE_KEY.to_string(), serde_json::to_string(state)?);
    meta.extend(run_files.metadata());
    tagger.save_with(&out.join(rundir::LAST_FILE), &tensors, &meta)?;
    Ok(())
}

fn load_last<B: Backend + 'static>(
    out: &Path,
    tagger: &mut Tagger<B>,
    adam: &mut Adam<B::Elem>,
) -> anyhow::Result<TrainState> {
    let path = out.join(rundir::LAST_FILE);
    let metadata = sclstm_model::read_metadata(&path)
        .with_context(|| format!("resuming from {}", path.display()))?;
    RunFiles::check(out, rundir::LAST_FILE, &metadata)?;
    let extras = tagger
        .load(&path)
        .with_context(|| format!("resuming from {}", path.display()))?;
    let state: TrainState = match extras.metadata.get(STATE_KEY) {
        Some(json) => serde_json::from_str(json)
            .with_context(|| format!("{}: corrupt trainer state", path.display()))?,
        None => bail!(
            "{}: no trainer state (is this a best.safetensors?)",
            path.display()
        ),
    };
    let imported = adam_from_extras(&extras)
        .with_context(|| format!("{}: optimizer state", path.display()))?;
    adam.import(tagger.params(), imported)?;
    Ok(state)
}

/// What a caller sees of a run while it trains: log lines and per-step progress (the CLI
/// draws its progress bar from these). Every method does nothing by default.
pub trait TrainObserver {
    /// A line for the log: data summary, epoch results, early stopping.
    fn message(&mut self, _line: &str) {}
    /// Epoch `epoch` (1-based) of `batches` batches starts, or resumes at `position`.
    fn epoch_started(&mut self, _epoch: usize, _batches: usize, _position: usize) {}
    /// One optimizer step finished.
    fn step_done(&mut self, _step: &StepReport) {}
    /// The epoch's batches are over: `completed` is false when training stopped inside it.
    fn epoch_finished(&mut self, _completed: bool) {}
}

/// An observer that ignores everything.
pub struct Silent;

impl TrainObserver for Silent {}

/// What one optimizer step did.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// 1-based epoch.
    pub epoch: usize,
    /// Batches of this epoch done, this one included.
    pub position: usize,
    /// Batches in this epoch.
    pub batches: usize,
    /// Index of the batch's task.
    pub task: usize,
    /// The batch's λ-weighted loss.
    pub loss: f64,
    /// Per task (name, mean loss of its batches so far this epoch), for tasks that had one.
    pub running_losses: Vec<(String, f64)>,
    /// Training tokens per second so far this epoch.
    pub tokens_per_s: f64,
}

/// What the end of an epoch found.
#[derive(Debug, Clone)]
pub struct EpochReport {
    /// 1-based epoch.
    pub epoch: usize,
    /// Dev scores, in task order.
    pub dev: Vec<TaskScore>,
    /// Mean of the dev scores (Figure 3's measure).
    pub dev_average: f64,
    /// Test scores, computed only when the dev average improved.
    pub test: Option<Vec<TaskScore>>,
    /// Training tokens per second over the epoch.
    pub tokens_per_s: f64,
}

/// One epoch in progress: its batches in Algorithm 1's order and where it stands.
pub struct Epoch {
    /// Per task, the epoch's batches as sentence indices.
    batches: Vec<Vec<Vec<usize>>>,
    /// Task of each batch, in training order.
    order: Vec<usize>,
    /// Per task, batches already used.
    cursor: Vec<usize>,
    started: Instant,
    seconds_before: f64,
}

impl Epoch {
    /// Batches in this epoch.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the epoch has no batches.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// A run being trained: data, model, optimizer and trainer state, advanced by named steps
/// ([`Trainer::begin_epoch`], [`Trainer::step`], [`Trainer::end_epoch`]) that [`train`]
/// strings together.
pub struct Trainer<B: Backend + 'static> {
    config: TrainConfig,
    out: PathBuf,
    options: RunOptions,
    prepared: Prepared,
    tagger: Tagger<B>,
    adam: Adam<B::Elem>,
    pool: Option<Arc<ThreadPool>>,
    state: TrainState,
    bcfg: BatchConfig,
    task_names: Vec<String>,
    /// One batch per task for gradient logging, with its contextual features.
    probe_batches: Vec<(Batch, Vec<f32>)>,
    steps_this_process: u64,
    throughput: (u64, f64),
    last_scores: Option<(Vec<TaskScore>, Vec<TaskScore>)>,
    /// Hashes of this run's `config.toml` and `vocab.json`, recorded in its checkpoints.
    run_files: RunFiles,
    /// The run directory this run replaces at its first checkpoint (`out` is then its
    /// staging directory).
    replacement: Option<Replacement>,
    /// Where the replaced run went.
    replaced: Option<PathBuf>,
    /// This process's hold on the run directory.
    lock: RunLock,
    /// `train.log` and `steps.csv`.
    log: RunLog,
}

impl<B: Backend + 'static> Trainer<B> {
    /// Prepares the data and the model of `config` in run directory `out`. A new run writes
    /// its configuration, vocabularies, coverage report and dataset hashes; it refuses a
    /// directory that already holds files ([`rundir::RunDirError::Occupied`]) unless
    /// [`RunOptions::replace`], in which case it is built aside and swapped in at its first
    /// checkpoint. With `resume`, parameters, optimizer and trainer state are read back from
    /// `last.safetensors`, once its recorded hashes match `config.toml` and `vocab.json`.
    pub fn open(
        backend: Arc<B>,
        config: &TrainConfig,
        out: &Path,
        resume: bool,
        options: &RunOptions,
        observer: &mut dyn TrainObserver,
    ) -> anyhow::Result<Self> {
        config.validate()?;
        let mut early = Vec::new();
        let replacement = if !resume && rundir::check_new_run(out, options.replace)? {
            let r = Replacement::begin(out)?;
            early.push(format!(
                "replacing the run in {}: the new run is built in {} and takes its place at its \
                 first checkpoint; the old run then moves to {}.old-<UTC time>",
                out.display(),
                r.staging().display(),
                out.display()
            ));
            Some(r)
        } else {
            None
        };
        let dir = replacement
            .as_ref()
            .map_or(out, |r| r.staging())
            .to_path_buf();
        let out = dir.as_path();
        rundir::prepare_dir(out)?;
        let lock = RunLock::acquire(out)?;
        let stale = rundir::remove_stale_temps(out);
        if !stale.is_empty() {
            early.push(format!(
                "removed temporary files an interrupted process left in {}: {}",
                out.display(),
                stale.join(", ")
            ));
        }
        for line in &early {
            observer.message(line);
        }
        let mut prepared = prepare(config)?;
        contextual::attach(config, &mut prepared, &mut |line: &str| {
            observer.message(line);
            early.push(line.to_string());
        })?;
        // Lines printed before the run writes its first file; they open train.log.
        early.push(prepared.coverage.to_string());
        observer.message(&prepared.coverage.to_string());
        for t in &prepared.tasks {
            let line = format!(
                "task {}: {} tags (O included, over train, dev and test); train {} sentences / {} tokens, dev {}, test {}",
                t.name,
                t.tags.len(),
                t.train.encoded.len(),
                t.train.tokens(),
                t.dev.encoded.len(),
                t.test.encoded.len()
            );
            observer.message(&line);
            early.push(line);
        }
        let mconfig = model_config(config, &prepared);
        let (matrix, found) = &prepared.pretrained;
        let dim = prepared.embedding_dim;
        let pretrained: Vec<(usize, Vec<f32>)> = found
            .iter()
            .enumerate()
            .filter(|(_, f)| **f)
            .map(|(i, _)| (i, matrix[i * dim..(i + 1) * dim].to_vec()))
            .collect();
        let mut tagger = Tagger::new(mconfig, backend, config.seed, Some(&pretrained))?;
        let pool = host_pool(config.threads)?;
        tagger.set_thread_pool(pool.clone());
        let mut adam = Adam::new(AdamConfig {
            lr: config.lr,
            ..AdamConfig::default()
        });
        let ntasks = prepared.tasks.len();
        let (state, log) = if resume {
            let state = load_last(out, &mut tagger, &mut adam)?;
            RunLog::truncate_steps(out, state.step)?;
            rundir::truncate_grads(&out.join(rundir::GRADS_FILE), state.step)?;
            let mut log = open_log(out, &early)?;
            say(
                &mut log,
                observer,
                &format!(
                    "resuming {} at epoch {}, batch {} of the epoch (step {})",
                    out.display(),
                    state.epoch + 1,
                    state.position,
                    state.step
                ),
            )?;
            (state, log)
        } else {
            write_new_run_files(out, config, &prepared)?;
            let log = open_log(out, &early)?;
            let state = TrainState {
                loss_sum: vec![0.0; ntasks],
                loss_batches: vec![0; ntasks],
                ..TrainState::default()
            };
            (state, log)
        };
        if state.loss_sum.len() != ntasks {
            bail!(
                "{}: trainer state has {} tasks, the config {}",
                out.display(),
                state.loss_sum.len(),
                ntasks
            );
        }
        rundir::truncate_metrics(&out.join(rundir::METRICS_FILE), state.epoch + 1)?;
        let run_files = RunFiles::read(out)?;
        let bcfg = BatchConfig {
            batch_size: NonZeroUsize::new(config.batch_size).context("batch_size must be ≥ 1")?,
            shuffle: true,
            bucket_pool: 0,
        };
        let task_names: Vec<String> = prepared.tasks.iter().map(|t| t.name.clone()).collect();
        let probe_batches: Vec<(Batch, Vec<f32>)> = prepared
            .tasks
            .iter()
            .map(|t| {
                let batch = make_batch(
                    &t.train.encoded,
                    &(0..t.train.encoded.len().min(config.batch_size)).collect::<Vec<_>>(),
                );
                let rows = batch_rows(&batch, t.train.contextual.as_ref());
                (batch, rows)
            })
            .collect();
        Ok(Trainer {
            config: config.clone(),
            out: out.to_path_buf(),
            options: options.clone(),
            prepared,
            tagger,
            adam,
            pool,
            state,
            bcfg,
            task_names,
            probe_batches,
            steps_this_process: 0,
            throughput: (0, 0.0),
            last_scores: None,
            run_files,
            replacement,
            replaced: None,
            lock,
            log,
        })
    }

    /// The model being trained.
    pub fn tagger(&self) -> &Tagger<B> {
        &self.tagger
    }

    /// 0-based epoch in progress (equal to the epochs done between epochs).
    pub fn epoch(&self) -> usize {
        self.state.epoch
    }

    /// Optimizer steps taken so far.
    pub fn steps(&self) -> u64 {
        self.state.step
    }

    /// Whether every configured epoch is done.
    pub fn epochs_done(&self) -> bool {
        self.state.epoch >= self.config.epochs
    }

    /// Whether the dev average has not improved for `patience` epochs (never with patience 0).
    pub fn out_of_patience(&self) -> bool {
        self.config.patience > 0 && self.state.bad_epochs >= self.config.patience
    }

    /// The current epoch's batches in Algorithm 1's order, positioned where training stands
    /// (inside the epoch after a resume).
    pub fn begin_epoch(&self) -> Epoch {
        let epoch = self.state.epoch;
        let batches: Vec<Vec<Vec<usize>>> = self
            .prepared
            .tasks
            .iter()
            .enumerate()
            .map(|(k, t)| {
                let lens: Vec<usize> = t.train.encoded.iter().map(EncodedSentence::len).collect();
                epoch_batches(
                    &lens,
                    &self.bcfg,
                    mix(self.config.seed, k as u64),
                    epoch as u64,
                )
            })
            .collect();
        let order = epoch_order(
            &batches.iter().map(Vec::len).collect::<Vec<_>>(),
            self.config.seed,
            epoch,
        );
        let mut cursor = vec![0usize; batches.len()];
        for &k in &order[..self.state.position] {
            cursor[k] += 1;
        }
        Epoch {
            batches,
            order,
            cursor,
            started: Instant::now(),
            seconds_before: self.state.seconds,
        }
    }

    /// Whether `epoch` has batches left.
    pub fn epoch_has_steps(&self, epoch: &Epoch) -> bool {
        self.state.position < epoch.order.len()
    }

    /// One optimizer step on the epoch's next batch: loss, backward, clipping, Adam; then
    /// the gradient statistics and the step checkpoint when they are due. A non-finite loss
    /// stops before any update ([`TrainError::NonFiniteLoss`]).
    pub fn step(&mut self, epoch: &mut Epoch) -> anyhow::Result<StepReport> {
        let k = epoch.order[self.state.position];
        let ids = &epoch.batches[k][epoch.cursor[k]];
        let task = &self.prepared.tasks[k];
        let batch = make_batch(&task.train.encoded, ids);
        let rows = batch_rows(&batch, task.train.contextual.as_ref());
        let input = model_input(&batch, &rows);
        let (loss_value, grads) = {
            let mut tape = self.tagger.tape();
            let loss = self
                .tagger
                .loss(
                    &mut tape,
                    &input,
                    k,
                    &batch.tag_ids,
                    mix(self.config.seed ^ 0xD0, self.state.step),
                )
                .map_err(|e| match e {
                    // A NaN caught inside the loss (e.g. by cross-entropy) is the same event
                    // as a NaN loss: say it in the run's terms.
                    ModelError::Num(NumError::NonFinite { value, .. }) => {
                        anyhow::Error::from(TrainError::NonFiniteLoss {
                            task: task.name.clone(),
                            step: self.state.step,
                            epoch: self.state.epoch + 1,
                            value,
                        })
                    }
                    other => other.into(),
                })?;
            let value = tape.value(loss)[[0, 0]].to_f64();
            if !value.is_finite() {
                return Err(TrainError::NonFiniteLoss {
                    task: task.name.clone(),
                    step: self.state.step,
                    epoch: self.state.epoch + 1,
                    value,
                }
                .into());
            }
            (value, tape.backward(loss)?.into_param_grads())
        };
        let log_now = self.options.log_grads > 0
            && (self.state.step + 1).is_multiple_of(self.options.log_grads);
        let before = log_now.then(|| {
            self.tagger
                .params()
                .iter()
                .map(|(_, _, m)| m.clone())
                .collect::<Vec<_>>()
        });
        // A non-finite norm updates nothing: the parameters stay as they were.
        let norm = self.adam.step_clipped(
            self.tagger.params_mut(),
            &grads,
            self.config.clip,
            self.pool.as_deref(),
        )?;
        if !norm.is_finite() {
            return Err(TrainError::NonFiniteGradient {
                task: task.name.clone(),
                step: self.state.step,
                epoch: self.state.epoch + 1,
                norm,
            }
            .into());
        }
        drop(grads);
        let state = &mut self.state;
        state.step += 1;
        state.position += 1;
        epoch.cursor[k] += 1;
        state.loss_sum[k] += loss_value;
        state.loss_batches[k] += 1;
        state.tokens += batch.lens.iter().sum::<usize>() as u64;
        self.steps_this_process += 1;
        if let Some(before) = before {
            self.log_grads(&before)?;
        }
        let secs = epoch.seconds_before + epoch.started.elapsed().as_secs_f64();
        let report = StepReport {
            epoch: self.state.epoch + 1,
            position: self.state.position,
            batches: epoch.order.len(),
            task: k,
            loss: loss_value,
            running_losses: self
                .task_names
                .iter()
                .zip(self.state.loss_sum.iter().zip(&self.state.loss_batches))
                .filter(|(_, (_, n))| **n > 0)
                .map(|(t, (sum, n))| (t.clone(), sum / *n as f64))
                .collect(),
            tokens_per_s: self.state.tokens as f64 / secs.max(1e-9),
        };
        self.log.step(
            self.state.step,
            report.epoch,
            &self.task_names[k],
            loss_value,
            report.tokens_per_s,
        )?;
        let stop = self
            .options
            .stop_after_steps
            .is_some_and(|n| self.steps_this_process >= n);
        let every = self.options.checkpoint_steps;
        if stop || (every > 0 && self.state.step.is_multiple_of(every)) {
            self.state.seconds = secs;
            self.checkpoint()?;
        }
        if stop {
            bail!(
                "stopped after {} steps as asked; resume with --resume {}",
                self.steps_this_process,
                self.out.display()
            );
        }
        Ok(report)
    }

    /// Appends one `grads.jsonl` line: the probe batches' per-task gradients on the current
    /// parameters and the relative size of the update from `before`.
    fn log_grads(&self, before: &[ndarray::Array2<B::Elem>]) -> anyhow::Result<()> {
        let (mut num, mut den) = (0f64, 0f64);
        for (b, (_, _, a)) in before.iter().zip(self.tagger.params().iter()) {
            num += b
                .iter()
                .zip(a.iter())
                .map(|(x, y)| Real::to_f64(*y - *x).powi(2))
                .sum::<f64>();
            den += b.iter().map(|x| Real::to_f64(*x).powi(2)).sum::<f64>();
        }
        let ratio = if den > 0.0 { (num / den).sqrt() } else { 0.0 };
        let probes: Vec<(ModelInput<'_>, &[u32])> = self
            .probe_batches
            .iter()
            .map(|(b, rows)| (model_input(b, rows), b.tag_ids.as_slice()))
            .collect();
        let line: GradsLine = grads::measure(
            &self.tagger,
            &self.task_names,
            &probes,
            self.state.step,
            self.state.epoch,
            ratio,
        )?;
        rundir::append_jsonl(&self.out.join(rundir::GRADS_FILE), &[line])
    }

    /// Scores the current parameters on a split (`dev` or `test`) of every task.
    pub fn evaluate(&self, split: Split) -> anyhow::Result<Vec<TaskScore>> {
        self.prepared
            .tasks
            .iter()
            .enumerate()
            .map(|(k, t)| {
                let s = match split {
                    Split::Dev => &t.dev,
                    Split::Test => &t.test,
                };
                score_split(&self.tagger, k, t, s)
            })
            .collect()
    }

    /// Closes an epoch whose batches are all done: dev scores, model selection on their
    /// average (`best.safetensors` when it improved), test scores when the average or some
    /// task's own dev score improved (so that `sclstm report` can also score each task at
    /// its own best dev epoch), the epoch's `metrics.jsonl` lines and the epoch-end
    /// checkpoint.
    pub fn end_epoch(
        &mut self,
        epoch: Epoch,
        observer: &mut dyn TrainObserver,
    ) -> anyhow::Result<EpochReport> {
        let e = self.state.epoch + 1;
        self.state.seconds = epoch.seconds_before + epoch.started.elapsed().as_secs_f64();
        self.state.elapsed += self.state.seconds;
        self.throughput.0 += self.state.tokens;
        self.throughput.1 += self.state.seconds;
        let tok_s = self.state.tokens as f64 / self.state.seconds.max(1e-9);

        self.check_finite()?;
        let dev = self.evaluate(Split::Dev)?;
        let average = dev.iter().map(|s| s.score).sum::<f64>() / dev.len() as f64;
        let improved = self.state.best.is_none_or(|(b, _)| average > b);
        let task_improved = self.some_task_improved(e, &dev)?;
        let mut lines: Vec<MetricsLine> = Vec::new();
        for (k, s) in dev.iter().enumerate() {
            lines.push(metrics_line(e, s, "dev", Some(&self.state), k, tok_s));
        }
        lines.push(MetricsLine {
            epoch: e,
            task: "average".into(),
            split: "dev".into(),
            metric: None,
            score: average,
            precision: None,
            recall: None,
            accuracy: None,
            train_loss: None,
            steps: Some(self.state.step),
            tokens_per_s: Some(tok_s),
            elapsed_s: Some(self.state.elapsed),
        });
        let summary_line = dev
            .iter()
            .map(|s| format!("{} {:.2}", s.task, s.score))
            .collect::<Vec<_>>()
            .join(", ");
        let line = format!(
            "epoch {e}: dev {summary_line} | average {average:.2}{} | {tok_s:.0} tokens/s, {:.0} s",
            if improved { " (best)" } else { "" },
            self.state.seconds
        );
        say(&mut self.log, observer, &line)?;
        let test = if improved || task_improved {
            Some(self.evaluate(Split::Test)?)
        } else {
            None
        };
        for (k, s) in test.iter().flatten().enumerate() {
            lines.push(metrics_line(e, s, "test", None, k, tok_s));
        }
        let test_scores = match test {
            Some(test) if improved => {
                self.tagger.save_with(
                    &self.out.join(rundir::BEST_FILE),
                    &[],
                    &self.run_files.metadata(),
                )?;
                self.state.best = Some((average, e));
                self.state.bad_epochs = 0;
                self.last_scores = Some((dev.clone(), test.clone()));
                Some(test)
            }
            _ => {
                self.state.bad_epochs += 1;
                None
            }
        };
        rundir::append_jsonl(&self.out.join(rundir::METRICS_FILE), &lines)?;
        let state = &mut self.state;
        state.epoch += 1;
        state.position = 0;
        state.tokens = 0;
        state.seconds = 0.0;
        state.loss_sum.iter_mut().for_each(|x| *x = 0.0);
        state.loss_batches.iter_mut().for_each(|x| *x = 0);
        self.checkpoint()?;
        Ok(EpochReport {
            epoch: e,
            dev,
            dev_average: average,
            test: test_scores,
            tokens_per_s: tok_s,
        })
    }

    /// Whether some task's dev score in epoch `epoch` beats that task's best dev score of
    /// the earlier epochs, as `metrics.jsonl` records them.
    fn some_task_improved(&self, epoch: usize, dev: &[TaskScore]) -> anyhow::Result<bool> {
        let path = self.out.join(rundir::METRICS_FILE);
        let lines = if path.is_file() {
            rundir::read_metrics(&path)?
        } else {
            Vec::new()
        };
        let dev: Vec<(&str, f64)> = dev.iter().map(|s| (s.task.as_str(), s.score)).collect();
        Ok(rundir::improves_some_task(&lines, epoch, &dev))
    }

    /// Writes `last.safetensors`: parameters, Adam's moments and the trainer state. Refuses
    /// ([`TrainError::Diverged`]) when a parameter is non-finite, so the file on disk stays
    /// the last good one. The
    /// first checkpoint of a run that replaces another one then swaps it into place.
    pub fn checkpoint(&mut self) -> anyhow::Result<()> {
        self.check_finite()?;
        self.log.flush()?;
        save_last(
            &self.out,
            &self.tagger,
            &self.adam,
            &self.state,
            &self.run_files,
        )?;
        if let Some(r) = self.replacement.take() {
            let target = r.target().to_path_buf();
            self.replaced = r.commit()?;
            self.lock.moved_to(&target);
            self.out = target;
        }
        Ok(())
    }

    /// [`TrainError::Diverged`] naming the first parameter that holds NaN or an infinity.
    fn check_finite(&self) -> anyhow::Result<()> {
        for (_, name, m) in self.tagger.params().iter() {
            if let Some(i) = m.iter().position(|x| !Real::to_f64(*x).is_finite()) {
                return Err(TrainError::Diverged {
                    step: self.state.step,
                    epoch: self.state.epoch + 1,
                    detail: format!(
                        "parameter `{name}` holds {} at index {i}",
                        m.iter().nth(i).map_or(f64::NAN, |x| Real::to_f64(*x))
                    ),
                    dir: self.out.display().to_string(),
                }
                .into());
            }
        }
        Ok(())
    }

    /// Trains the current epoch to its end (from where it stands) and closes it.
    pub fn run_epoch(&mut self, observer: &mut dyn TrainObserver) -> anyhow::Result<EpochReport> {
        let mut epoch = self.begin_epoch();
        observer.epoch_started(self.state.epoch + 1, epoch.len(), self.state.position);
        while self.epoch_has_steps(&epoch) {
            match self.step(&mut epoch) {
                Ok(report) => observer.step_done(&report),
                Err(e) => {
                    observer.epoch_finished(false);
                    return Err(e);
                }
            }
            let asked = self.options.interrupt.as_ref();
            if asked.is_some_and(|f| f.load(Ordering::SeqCst)) {
                observer.epoch_finished(false);
                self.state.seconds = epoch.seconds_before + epoch.started.elapsed().as_secs_f64();
                self.checkpoint()?;
                let e = TrainError::Interrupted {
                    epoch: self.state.epoch + 1,
                    step: self.state.step,
                    dir: self.out.display().to_string(),
                };
                say(&mut self.log, observer, &e.to_string())?;
                return Err(e.into());
            }
        }
        observer.epoch_finished(true);
        self.end_epoch(epoch, observer)
    }

    /// What the run reports when training ends: the best epoch and its scores.
    pub fn finish(self) -> anyhow::Result<TrainSummary> {
        let (best_dev, best_epoch) = self.state.best.unwrap_or((0.0, 0));
        let (dev, test) = match self.last_scores {
            Some(s) => s,
            None => best_scores(&self.out, &self.prepared, &self.tagger, self.pool.clone())?,
        };
        Ok(TrainSummary {
            epochs: self.state.epoch,
            steps: self.state.step,
            best_epoch,
            best_dev_average: best_dev,
            dev,
            test,
            tokens_per_s: if self.throughput.1 > 0.0 {
                self.throughput.0 as f64 / self.throughput.1
            } else {
                0.0
            },
            replaced: self.replaced,
        })
    }
}

/// Which evaluation split to score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The development set (model selection).
    Dev,
    /// The test set (reported at the best dev epoch).
    Test,
}

/// Writes the files of a new run (config, vocabularies recording the config's hash,
/// coverage, dataset hashes) and removes the metrics and gradient logs an earlier run may
/// have left (only an empty directory or a `--force` staging one gets here, so none should).
fn write_new_run_files(
    out: &Path,
    config: &TrainConfig,
    prepared: &Prepared,
) -> anyhow::Result<()> {
    let config_toml = config.to_toml()?;
    write_atomic(&out.join(rundir::CONFIG_FILE), config_toml.as_bytes())?;
    let mut vocab = RunVocab::new(
        &prepared.words,
        &prepared.chars,
        prepared
            .tasks
            .iter()
            .map(|t| TaskVocab {
                name: t.name.clone(),
                tags: t.tags.tags().to_vec(),
                metric: rundir::metric_name(t.metric).to_string(),
                scheme: t.scheme.map(|s| s.to_string()),
            })
            .collect(),
    );
    vocab.config_sha256 = Some(sclstm_data::shipped::sha256_hex(config_toml.as_bytes()));
    vocab.save(out)?;
    write_atomic(
        &out.join(rundir::COVERAGE_FILE),
        format!("{}\n", prepared.coverage).as_bytes(),
    )?;
    write_dataset_hashes(out, prepared)?;
    for f in [rundir::METRICS_FILE, rundir::GRADS_FILE] {
        let _ = std::fs::remove_file(out.join(f));
    }
    Ok(())
}

/// Opens the run's logs, starting `train.log` with the lines already printed.
fn open_log(out: &Path, early: &[String]) -> anyhow::Result<RunLog> {
    let mut log = RunLog::open(out)?;
    for line in early {
        log.line(line)?;
    }
    Ok(log)
}

/// A line for the observer and for `train.log`.
fn say(log: &mut RunLog, observer: &mut dyn TrainObserver, line: &str) -> anyhow::Result<()> {
    observer.message(line);
    log.line(line)
}

/// Trains a model as configured, writing the run directory `out`. With `resume`, the
/// configuration and state are read back from `out` and training continues exactly where
/// `last.safetensors` left it.
pub fn train<B: Backend + 'static>(
    backend: Arc<B>,
    config: &TrainConfig,
    out: &Path,
    resume: bool,
    options: &RunOptions,
    observer: &mut dyn TrainObserver,
) -> anyhow::Result<TrainSummary> {
    let mut trainer = Trainer::open(backend, config, out, resume, options, observer)?;
    while !trainer.epochs_done() {
        trainer.run_epoch(observer)?;
        if trainer.out_of_patience() {
            let line = format!(
                "no dev improvement for {} epochs: stopping",
                config.patience
            );
            say(&mut trainer.log, observer, &line)?;
            break;
        }
    }
    trainer.finish()
}

/// Scores of `best.safetensors` (used when a resumed run had nothing left to train).
fn best_scores<B: Backend + 'static>(
    out: &Path,
    prepared: &Prepared,
    tagger: &Tagger<B>,
    pool: Option<Arc<ThreadPool>>,
) -> anyhow::Result<(Vec<TaskScore>, Vec<TaskScore>)> {
    let path = out.join(rundir::BEST_FILE);
    RunFiles::check(out, rundir::BEST_FILE, &sclstm_model::read_metadata(&path)?)?;
    let (mut best, _) = Tagger::from_checkpoint(&path, tagger.backend().clone())?;
    best.set_thread_pool(pool);
    let mut dev = Vec::new();
    let mut test = Vec::new();
    for (k, t) in prepared.tasks.iter().enumerate() {
        dev.push(score_split(&best, k, t, &t.dev)?);
        test.push(score_split(&best, k, t, &t.test)?);
    }
    Ok((dev, test))
}

fn metrics_line(
    epoch: usize,
    s: &TaskScore,
    split: &str,
    state: Option<&TrainState>,
    k: usize,
    tok_s: f64,
) -> MetricsLine {
    MetricsLine {
        epoch,
        task: s.task.clone(),
        split: split.to_string(),
        metric: Some(s.metric.to_string()),
        score: s.score,
        precision: s.precision,
        recall: s.recall,
        accuracy: Some(s.accuracy),
        train_loss: state.map(|st| st.loss_sum[k] / st.loss_batches[k].max(1) as f64),
        steps: state.map(|st| st.step),
        tokens_per_s: state.map(|_| tok_s),
        elapsed_s: state.map(|st| st.elapsed),
    }
}

fn write_dataset_hashes(out: &Path, prepared: &Prepared) -> anyhow::Result<()> {
    let mut hashes = BTreeMap::new();
    for t in &prepared.tasks {
        for sp in [&t.train, &t.dev, &t.test] {
            let key = sp.path.display().to_string();
            if let std::collections::btree_map::Entry::Vacant(e) = hashes.entry(key) {
                e.insert(sclstm_data::shipped::sha256_file(&sp.path)?);
            }
        }
    }
    write_atomic(
        &out.join(rundir::DATASETS_FILE),
        serde_json::to_string_pretty(&hashes)?.as_bytes(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{EVAL_BATCH, EVAL_TOKENS, tagging_batches};

    #[test]
    fn tagging_batches_respect_both_caps_and_cover_everything() {
        let mut lens: Vec<usize> = (0..300).map(|i| 1 + i % 97).collect();
        lens.push(3 * EVAL_TOKENS);
        lens.sort_unstable();
        let batches = tagging_batches(&lens);
        let mut next = 0;
        for r in &batches {
            assert_eq!(r.start, next, "batches are consecutive");
            assert!(!r.is_empty() && r.len() <= EVAL_BATCH);
            let padded = lens[r.end - 1] * r.len();
            assert!(
                padded <= EVAL_TOKENS || r.len() == 1,
                "{r:?} pads to {padded}"
            );
            next = r.end;
        }
        assert_eq!(next, lens.len());
        // Short sentences fill whole batches; a sentence over the cap goes alone.
        assert_eq!(batches[0].len(), EVAL_BATCH);
        assert_eq!(batches.last().map(|r| r.len()), Some(1));
        assert!(tagging_batches(&[]).is_empty());
    }
}
