//! Files of a run directory: vocabularies, metrics lines, dataset hashes.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sclstm_data::shipped::Metric;
use sclstm_data::vocab::{CharVocab, TagVocab, Vocab, WordVocab};
use serde::{Deserialize, Serialize};

use sclstm_model::checkpoint::write_atomic;

/// Names of the files inside a run directory.
pub const CONFIG_FILE: &str = "config.toml";
/// Vocabularies.
pub const VOCAB_FILE: &str = "vocab.json";
/// Parameters of the best epoch.
pub const BEST_FILE: &str = "best.safetensors";
/// Latest parameters, optimizer moments and trainer state.
pub const LAST_FILE: &str = "last.safetensors";
/// Per-epoch scores.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// Gradient statistics.
pub const GRADS_FILE: &str = "grads.jsonl";
/// Embedding coverage report.
pub const COVERAGE_FILE: &str = "coverage.txt";
/// Dataset hashes.
pub const DATASETS_FILE: &str = "datasets.json";

/// One task's entry in `vocab.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskVocab {
    /// Task name.
    pub name: String,
    /// Tag names in id order.
    pub tags: Vec<String>,
    /// `f1` (chunk scoring) or `accuracy`.
    pub metric: String,
    /// Chunk scheme of the tags (`IOB2`, `BIOES`) or none.
    pub scheme: Option<String>,
}

/// The vocabularies a trained model needs to read new text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunVocab {
    /// Word ids (index = id; 0 and 1 are `<pad>` and `<unk>`).
    pub words: Vec<String>,
    /// Whether words are lowercased before lookup.
    pub lowercase: bool,
    /// Character ids (index = id).
    pub chars: Vec<String>,
    /// Tasks in model order.
    pub tasks: Vec<TaskVocab>,
}

impl RunVocab {
    /// Captures the vocabularies of a prepared run.
    pub fn new(words: &WordVocab, chars: &CharVocab, tasks: Vec<TaskVocab>) -> Self {
        RunVocab {
            words: (0..words.len())
                .map(|i| words.vocab.token(i as u32).to_string())
                .collect(),
            lowercase: words.lowercase,
            chars: (0..chars.len())
                .map(|i| chars.vocab.token(i as u32).to_string())
                .collect(),
            tasks,
        }
    }

    /// The word vocabulary (without GloVe rows: a trained model has its own embeddings).
    pub fn word_vocab(&self) -> WordVocab {
        WordVocab {
            vocab: vocab_from(&self.words),
            lowercase: self.lowercase,
            glove_rows: vec![None; self.words.len()],
        }
    }

    /// The character vocabulary.
    pub fn char_vocab(&self) -> CharVocab {
        CharVocab {
            vocab: vocab_from(&self.chars),
        }
    }

    /// Task `k`'s tag vocabulary.
    pub fn tag_vocab(&self, k: usize) -> TagVocab {
        TagVocab::build(self.tasks[k].tags.iter().map(String::as_str))
    }

    /// Reads `vocab.json` of a run directory.
    pub fn load(run: &Path) -> anyhow::Result<Self> {
        let path = run.join(VOCAB_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes `vocab.json` into a run directory.
    pub fn save(&self, run: &Path) -> anyhow::Result<()> {
        let path = run.join(VOCAB_FILE);
        write_atomic(&path, serde_json::to_string(self)?.as_bytes())
            .with_context(|| format!("writing {}", path.display()))
    }
}

fn vocab_from(tokens: &[String]) -> Vocab {
    let mut v = Vocab::new();
    for t in tokens.iter().skip(2) {
        v.insert(t);
    }
    v
}

/// Metric name as written in `metrics.jsonl`.
pub fn metric_name(m: Metric) -> &'static str {
    match m {
        Metric::ChunkF1 => "f1",
        Metric::Accuracy => "accuracy",
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetricsLine {
    /// 1-based epoch.
    pub epoch: usize,
    /// Task name, or `average` for the mean over tasks of the dev scores.
    pub task: String,
    /// `dev` or `test`.
    pub split: String,
    /// `f1` or `accuracy` (absent for the average).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub metric: Option<String>,
    /// The headline number (%).
    pub score: f64,
    /// Chunk precision (%).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub precision: Option<f64>,
    /// Chunk recall (%).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub recall: Option<f64>,
    /// Token accuracy (%).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub accuracy: Option<f64>,
    /// Mean training loss of the task's batches this epoch.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub train_loss: Option<f64>,
    /// Optimizer steps so far.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub steps: Option<u64>,
    /// Training tokens per second this epoch.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tokens_per_s: Option<f64>,
    /// Seconds of training so far.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub elapsed_s: Option<f64>,
}

/// Appends lines to a JSON Lines file atomically (the file is rewritten whole).
pub fn append_jsonl<T: Serialize>(path: &Path, lines: &[T]) -> anyhow::Result<()> {
    let mut text = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    for l in lines {
        serde_json::to_writer(&mut text, l)?;
        text.push(b'\n');
    }
    write_atomic(path, &text).with_context(|| format!("writing {}", path.display()))
}

/// Keeps only the metrics lines of epochs before `epoch` (used when resuming, so that an
/// interrupted epoch's lines are not written twice).
pub fn truncate_metrics(path: &Path, epoch: usize) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let mut kept = String::new();
    for (i, line) in text.lines().enumerate() {
        let m: MetricsLine = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a metrics line", path.display(), i + 1))?;
        if m.epoch < epoch {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    write_atomic(path, kept.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// Creates the run directory and proves it is writable before any training starts.
pub fn prepare_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating run directory {}", dir.display()))?;
    let probe = dir.join(".write-test");
    write_atomic(&probe, b"ok")
        .with_context(|| format!("run directory {} is not writable", dir.display()))?;
    std::fs::remove_file(&probe).ok();
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    Ok(dir.to_path_buf())
}

/// Reads `metrics.jsonl`; a malformed line is an error naming the file and line.
pub fn read_metrics(path: &Path) -> anyhow::Result<Vec<MetricsLine>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a metrics line", path.display(), i + 1))
        })
        .collect()
}

/// Task name of the per-epoch dev average lines.
pub const AVERAGE_TASK: &str = "average";

/// The dev average of each finished epoch, in epoch order (index 0 = epoch 1); a resumed
/// run that logged an epoch twice keeps the last line.
pub fn dev_averages(lines: &[MetricsLine]) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    for l in lines {
        if l.task == AVERAGE_TASK && l.split == "dev" && l.epoch >= 1 {
            if out.len() < l.epoch {
                out.resize(l.epoch, f64::NAN);
            }
            out[l.epoch - 1] = l.score;
        }
    }
    out
}

/// The 1-based epoch the trainer keeps as best: the first with the highest dev average
/// (a later epoch must be strictly better). `None` before any epoch.
pub fn best_epoch(averages: &[f64]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, &a) in averages.iter().enumerate() {
        if best.is_none_or(|(_, b)| a > b) {
            best = Some((i + 1, a));
        }
    }
    best.map(|(e, _)| e)
}
