//! The training loop of Algorithm 1, dev-set model selection, checkpoints and resume.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::ThreadPool;
use sclstm_autodiff::optim::{Adam, AdamConfig, clip_grad_norm};
use sclstm_core::Backend;
use sclstm_data::batch::{Batch, BatchConfig, EncodedSentence, epoch_batches, make_batch};
use sclstm_model::{
    CharCnnConfig, Family, HeadKind, ModelConfig, ModelInput, Tagger, TaskConfig, TaskInputMode,
};
use sclstm_model::{adam_from_extras, adam_to_extras};
use serde::{Deserialize, Serialize};

use super::data::{Prepared, PreparedSplit, PreparedTask, prepare};
use super::grads::{self, GradsLine};
use super::rundir::{self, MetricsLine, RunVocab, TaskVocab};
use super::schedule::epoch_order;
use super::score::{TaskScore, score};
use crate::backend::host_pool;
use crate::config::{self, TrainConfig};
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
    /// Show a progress bar.
    pub progress: bool,
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

/// The model input view of a data batch.
pub fn model_input(batch: &Batch) -> ModelInput<'_> {
    ModelInput {
        steps: batch.seq_len,
        batch: batch.batch_size,
        lens: &batch.lens,
        word_ids: &batch.word_ids,
        cap_ids: &batch.cap_ids,
        char_ids: &batch.char_ids,
        char_lens: &batch.char_lens,
        word_len_max: batch.max_word_len,
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
    let family = match config.model {
        config::Family::Stl => Family::Stl,
        config::Family::LstmS => Family::LstmS,
        config::Family::LstmD => Family::LstmD,
        config::Family::ScLstm => Family::ScLstm,
    };
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
    m.task_input = match config.task_input {
        config::TaskInput::Shared => TaskInputMode::Shared,
        config::TaskInput::Chained => TaskInputMode::Chained,
    };
    m
}

/// Tags `sentences` for every task in `tasks` in one pass per batch (length-sorted
/// batches, see [`tagging_batches`]: little padding). Returns `[task][sentence]` tag ids
/// in input order; empty sentences get no tags.
pub fn tag_sentences<B: Backend + 'static>(
    tagger: &Tagger<B>,
    tasks: &[usize],
    sentences: &[EncodedSentence],
) -> anyhow::Result<Vec<Vec<Vec<u32>>>> {
    let mut order: Vec<usize> = (0..sentences.len())
        .filter(|&i| !sentences[i].is_empty())
        .collect();
    order.sort_by_key(|&i| sentences[i].len());
    let lens: Vec<usize> = order.iter().map(|&i| sentences[i].len()).collect();
    let mut out = vec![vec![Vec::new(); sentences.len()]; tasks.len()];
    for range in tagging_batches(&lens) {
        let batch = make_batch(sentences, &order[range]);
        let pred = tagger.predict(&model_input(&batch), tasks)?;
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
    split: &[EncodedSentence],
) -> anyhow::Result<Vec<Vec<u32>>> {
    Ok(tag_sentences(tagger, &[k], split)?.swap_remove(0))
}

fn score_split<B: Backend + 'static>(
    tagger: &Tagger<B>,
    k: usize,
    task: &PreparedTask,
    split: &PreparedSplit,
) -> anyhow::Result<TaskScore> {
    let pred = evaluate_split(tagger, k, &split.encoded)?;
    score(&task.scorer(), split, &pred)
}

fn save_last<B: Backend<Elem = f32> + 'static>(
    out: &Path,
    tagger: &Tagger<B>,
    adam: &Adam<f32>,
    state: &TrainState,
) -> anyhow::Result<()> {
    let (tensors, mut meta) = adam_to_extras(&adam.export(tagger.params()));
    meta.insert(STATE_KEY.to_string(), serde_json::to_string(state)?);
    tagger.save_with(&out.join(rundir::LAST_FILE), &tensors, &meta)?;
    Ok(())
}

fn load_last<B: Backend<Elem = f32> + 'static>(
    out: &Path,
    tagger: &mut Tagger<B>,
    adam: &mut Adam<f32>,
) -> anyhow::Result<TrainState> {
    let path = out.join(rundir::LAST_FILE);
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

fn progress_bar(len: usize, epoch: usize, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template(
            "epoch {prefix} [{bar:30}] {pos}/{len} batches {msg} ETA {eta}",
        )
        .expect("internal: static progress template")
        .progress_chars("=> "),
    );
    pb.set_prefix(epoch.to_string());
    pb
}

/// Trains a model as configured, writing the run directory `out`. With `resume`, the
/// configuration and state are read back from `out` and training continues exactly where
/// `last.safetensors` left it.
pub fn train<B: Backend<Elem = f32> + 'static>(
    backend: Arc<B>,
    config: &TrainConfig,
    out: &Path,
    resume: bool,
    options: &RunOptions,
) -> anyhow::Result<TrainSummary> {
    config.validate()?;
    rundir::prepare_dir(out)?;
    let prepared = prepare(config)?;
    eprintln!("{}", prepared.coverage);
    for t in &prepared.tasks {
        eprintln!(
            "task {}: {} tags; train {} sentences / {} tokens, dev {}, test {}",
            t.name,
            t.tags.len(),
            t.train.encoded.len(),
            t.train.tokens(),
            t.dev.encoded.len(),
            t.test.encoded.len()
        );
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
    let mut state = if resume {
        load_last(out, &mut tagger, &mut adam)?
    } else {
        write_atomic(&out.join(rundir::CONFIG_FILE), config.to_toml()?.as_bytes())?;
        let vocab = RunVocab::new(
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
        vocab.save(out)?;
        write_atomic(
            &out.join(rundir::COVERAGE_FILE),
            format!("{}\n", prepared.coverage).as_bytes(),
        )?;
        write_dataset_hashes(out, &prepared)?;
        for f in [rundir::METRICS_FILE, rundir::GRADS_FILE] {
            let _ = std::fs::remove_file(out.join(f));
        }
        TrainState {
            loss_sum: vec![0.0; ntasks],
            loss_batches: vec![0; ntasks],
            ..TrainState::default()
        }
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

    let bcfg = BatchConfig {
        batch_size: NonZeroUsize::new(config.batch_size).context("batch_size must be ≥ 1")?,
        shuffle: true,
        bucket_pool: 0,
    };
    let task_names: Vec<String> = prepared.tasks.iter().map(|t| t.name.clone()).collect();
    let probe_batches: Vec<Batch> = prepared
        .tasks
        .iter()
        .map(|t| {
            make_batch(
                &t.train.encoded,
                &(0..t.train.encoded.len().min(config.batch_size)).collect::<Vec<_>>(),
            )
        })
        .collect();
    let mut steps_this_process = 0u64;
    let mut throughput = (0u64, 0f64);
    let mut last_scores: Option<(Vec<TaskScore>, Vec<TaskScore>)> = None;

    while state.epoch < config.epochs {
        let epoch = state.epoch;
        let batches: Vec<Vec<Vec<usize>>> = prepared
            .tasks
            .iter()
            .enumerate()
            .map(|(k, t)| {
                let lens: Vec<usize> = t.train.encoded.iter().map(EncodedSentence::len).collect();
                epoch_batches(&lens, &bcfg, mix(config.seed, k as u64), epoch as u64)
            })
            .collect();
        let order = epoch_order(
            &batches.iter().map(Vec::len).collect::<Vec<_>>(),
            config.seed,
            epoch,
        );
        let mut cursor = vec![0usize; ntasks];
        for &k in &order[..state.position] {
            cursor[k] += 1;
        }
        let pb = progress_bar(order.len(), epoch + 1, options.progress);
        pb.set_position(state.position as u64);
        let started = Instant::now();
        let seconds_before = state.seconds;
        while state.position < order.len() {
            let k = order[state.position];
            let ids = &batches[k][cursor[k]];
            let task = &prepared.tasks[k];
            let batch = make_batch(&task.train.encoded, ids);
            let input = model_input(&batch);
            let (loss_value, mut grads) = {
                let mut tape = tagger.tape();
                let loss = tagger.loss(
                    &mut tape,
                    &input,
                    k,
                    &batch.tag_ids,
                    mix(config.seed ^ 0xD0, state.step),
                )?;
                let value = f64::from(tape.value(loss)[[0, 0]]);
                if !value.is_finite() {
                    pb.abandon();
                    return Err(TrainError::NonFiniteLoss {
                        task: task.name.clone(),
                        step: state.step,
                        epoch: epoch + 1,
                        value,
                    }
                    .into());
                }
                (value, tape.backward(loss)?.into_param_grads())
            };
            clip_grad_norm(&mut grads, config.clip);
            let log_now = options.log_grads > 0 && (state.step + 1) % options.log_grads == 0;
            let before = log_now.then(|| {
                tagger
                    .params()
                    .iter()
                    .map(|(_, _, m)| m.clone())
                    .collect::<Vec<_>>()
            });
            adam.step_with_pool(tagger.params_mut(), &grads, pool.as_deref())?;
            drop(grads);
            state.step += 1;
            state.position += 1;
            cursor[k] += 1;
            state.loss_sum[k] += loss_value;
            state.loss_batches[k] += 1;
            state.tokens += batch.lens.iter().sum::<usize>() as u64;
            steps_this_process += 1;
            if let Some(before) = before {
                let (mut num, mut den) = (0f64, 0f64);
                for (b, (_, _, a)) in before.iter().zip(tagger.params().iter()) {
                    num += b
                        .iter()
                        .zip(a.iter())
                        .map(|(x, y)| f64::from(y - x).powi(2))
                        .sum::<f64>();
                    den += b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>();
                }
                let ratio = if den > 0.0 { (num / den).sqrt() } else { 0.0 };
                let probes: Vec<(ModelInput<'_>, &[u32])> = probe_batches
                    .iter()
                    .map(|b| (model_input(b), b.tag_ids.as_slice()))
                    .collect();
                let line: GradsLine =
                    grads::measure(&tagger, &task_names, &probes, state.step, epoch, ratio)?;
                rundir::append_jsonl(&out.join(rundir::GRADS_FILE), &[line])?;
            }
            let secs = seconds_before + started.elapsed().as_secs_f64();
            pb.set_position(state.position as u64);
            pb.set_message(format!(
                "loss {:.3} | {:.0} tok/s",
                loss_value,
                state.tokens as f64 / secs.max(1e-9)
            ));
            let stop = options
                .stop_after_steps
                .is_some_and(|n| steps_this_process >= n);
            if stop || (options.checkpoint_steps > 0 && state.step % options.checkpoint_steps == 0)
            {
                state.seconds = secs;
                save_last(out, &tagger, &adam, &state)?;
            }
            if stop {
                pb.abandon();
                bail!(
                    "stopped after {steps_this_process} steps as asked; resume with --resume {}",
                    out.display()
                );
            }
        }
        pb.finish_and_clear();
        state.seconds = seconds_before + started.elapsed().as_secs_f64();
        state.elapsed += state.seconds;
        throughput.0 += state.tokens;
        throughput.1 += state.seconds;
        let tok_s = state.tokens as f64 / state.seconds.max(1e-9);

        let mut dev = Vec::new();
        for (k, t) in prepared.tasks.iter().enumerate() {
            dev.push(score_split(&tagger, k, t, &t.dev)?);
        }
        let average = dev.iter().map(|s| s.score).sum::<f64>() / dev.len() as f64;
        let improved = state.best.is_none_or(|(b, _)| average > b);
        let mut lines: Vec<MetricsLine> = Vec::new();
        for (k, s) in dev.iter().enumerate() {
            lines.push(metrics_line(epoch + 1, s, "dev", Some(&state), k, tok_s));
        }
        lines.push(MetricsLine {
            epoch: epoch + 1,
            task: "average".into(),
            split: "dev".into(),
            metric: None,
            score: average,
            precision: None,
            recall: None,
            accuracy: None,
            train_loss: None,
            steps: Some(state.step),
            tokens_per_s: Some(tok_s),
            elapsed_s: Some(state.elapsed),
        });
        let summary_line = dev
            .iter()
            .map(|s| format!("{} {:.2}", s.task, s.score))
            .collect::<Vec<_>>()
            .join(", ");
        eprintln!(
            "epoch {}: dev {summary_line} | average {average:.2}{} | {tok_s:.0} tokens/s, {:.0} s",
            epoch + 1,
            if improved { " (best)" } else { "" },
            state.seconds
        );
        if improved {
            let mut test = Vec::new();
            for (k, t) in prepared.tasks.iter().enumerate() {
                let s = score_split(&tagger, k, t, &t.test)?;
                lines.push(metrics_line(epoch + 1, &s, "test", None, k, tok_s));
                test.push(s);
            }
            tagger.save(&out.join(rundir::BEST_FILE))?;
            state.best = Some((average, epoch + 1));
            state.bad_epochs = 0;
            last_scores = Some((dev, test));
        } else {
            state.bad_epochs += 1;
        }
        rundir::append_jsonl(&out.join(rundir::METRICS_FILE), &lines)?;
        state.epoch += 1;
        state.position = 0;
        state.tokens = 0;
        state.seconds = 0.0;
        state.loss_sum.iter_mut().for_each(|x| *x = 0.0);
        state.loss_batches.iter_mut().for_each(|x| *x = 0);
        save_last(out, &tagger, &adam, &state)?;
        if config.patience > 0 && state.bad_epochs >= config.patience {
            eprintln!(
                "no dev improvement for {} epochs: stopping",
                config.patience
            );
            break;
        }
    }
    let (best_dev, best_epoch) = state.best.unwrap_or((0.0, 0));
    let (dev, test) = match last_scores {
        Some(s) => s,
        None => best_scores(out, &prepared, &tagger, pool.clone())?,
    };
    Ok(TrainSummary {
        epochs: state.epoch,
        steps: state.step,
        best_epoch,
        best_dev_average: best_dev,
        dev,
        test,
        tokens_per_s: if throughput.1 > 0.0 {
            throughput.0 as f64 / throughput.1
        } else {
            0.0
        },
    })
}

/// Scores of `best.safetensors` (used when a resumed run had nothing left to train).
fn best_scores<B: Backend<Elem = f32> + 'static>(
    out: &Path,
    prepared: &Prepared,
    tagger: &Tagger<B>,
    pool: Option<Arc<ThreadPool>>,
) -> anyhow::Result<(Vec<TaskScore>, Vec<TaskScore>)> {
    let (mut best, _) =
        Tagger::from_checkpoint(&out.join(rundir::BEST_FILE), tagger.backend().clone())?;
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
