//! Files of a run directory: vocabularies, metrics lines, dataset hashes, the hashes that
//! tie a run's files together, and the refusal to overwrite a run (or its replacement).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sclstm_data::shipped::{Metric, sha256_hex};
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
    /// SHA-256 of the run's `config.toml` (absent in run directories of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_sha256: Option<String>,
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
            config_sha256: None,
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

/// Of records logged for one step more than once, the last; the others in their order.
/// A run killed past its last checkpoint logged the steps after it, and a resume from
/// the checkpoint logs them again (the same lines: training resumes bit for bit); runs
/// resumed before [`truncate_grads`] existed keep both.
pub fn last_per_step<T>(records: Vec<T>, step: impl Fn(&T) -> u64) -> Vec<T> {
    let last: std::collections::HashMap<u64, usize> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (step(r), i))
        .collect();
    records
        .into_iter()
        .enumerate()
        .filter(|(i, r)| last[&step(r)] == *i)
        .map(|(_, r)| r)
        .collect()
}

/// The step of a `grads.jsonl` line.
#[derive(Deserialize)]
struct GradsStep {
    step: u64,
}

/// Keeps the `grads.jsonl` lines of steps up to `step`, each step once (used when
/// resuming from the checkpoint of that step, so that the steps logged after it are not
/// written twice); a malformed line is an error naming the file and line.
pub fn truncate_grads(path: &Path, step: u64) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let g: GradsStep = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a gradient line", path.display(), i + 1))?;
        if g.step <= step {
            lines.push((g.step, line));
        }
    }
    let kept: String = last_per_step(lines, |&(s, _)| s)
        .into_iter()
        .flat_map(|(_, l)| [l, "\n"])
        .collect();
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
    scores(lines, AVERAGE_TASK, "dev")
}

/// One task's (or the average's) score on `split` per epoch, in epoch order (index 0 =
/// epoch 1; NaN for an epoch without that line); a resumed run that logged an epoch twice
/// keeps the last line.
pub fn scores(lines: &[MetricsLine], task: &str, split: &str) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    for l in lines {
        if l.task == task && l.split == split && l.epoch >= 1 {
            if out.len() < l.epoch {
                out.resize(l.epoch, f64::NAN);
            }
            out[l.epoch - 1] = l.score;
        }
    }
    out
}

/// Whether some task's dev score in `epoch` (`dev`: task and score) beats that task's best
/// dev score of the earlier epochs in `lines` (lines of `epoch` or later are ignored, so a
/// resumed run that logs an epoch again decides as it did the first time).
pub fn improves_some_task(lines: &[MetricsLine], epoch: usize, dev: &[(&str, f64)]) -> bool {
    dev.iter().any(|&(task, score)| {
        let best = lines
            .iter()
            .filter(|l| l.epoch < epoch && l.task == task && l.split == "dev")
            .map(|l| l.score)
            .filter(|x| x.is_finite())
            .fold(f64::NEG_INFINITY, f64::max);
        score > best
    })
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

/// Metadata key of a checkpoint: SHA-256 of the `config.toml` it was trained with.
pub const CONFIG_SHA256_KEY: &str = "sclstm.config_sha256";
/// Metadata key of a checkpoint: SHA-256 of the `vocab.json` it was trained with.
pub const VOCAB_SHA256_KEY: &str = "sclstm.vocab_sha256";

/// Why a run directory cannot be used as asked.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    /// A new run was asked for in a directory that already holds files.
    #[error(
        "run directory {} is not empty (it holds {}); nothing was changed. Continue that run with \
         `sclstm train --resume {}`, or replace it with `--force` (the new run is built next to \
         it and swapped in at its first checkpoint; the old one is kept as {}.old-<UTC time>)",
        .dir.display(), .entries.join(", "), .dir.display(), .dir.display()
    )]
    Occupied {
        /// The directory.
        dir: PathBuf,
        /// Some of its entries (the first few, sorted).
        entries: Vec<String>,
    },
    /// The files of a run directory come from different runs.
    #[error(
        "run directory {} mixes files of different runs: {}. Refusing to use it: its scores would \
         pair one run's weights with another run's vocabulary or configuration",
        .dir.display(), .problems.join("; ")
    )]
    Mixed {
        /// The directory.
        dir: PathBuf,
        /// Each disagreement, naming the two files.
        problems: Vec<String>,
    },
}

/// What ties the files of one run together: the SHA-256 of its `config.toml` and
/// `vocab.json`. Every checkpoint records both (metadata [`CONFIG_SHA256_KEY`] and
/// [`VOCAB_SHA256_KEY`]) and `vocab.json` records the first, so a file from another run
/// shows up as a hash that disagrees.
///
/// A fingerprint of the content rather than a random id: two runs of one configuration on
/// the same data still write byte-identical checkpoints (what the determinism and resume
/// checks compare), and files that agree byte for byte cannot be mismatched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFiles {
    /// SHA-256 of `config.toml`, lowercase hex.
    pub config_sha256: String,
    /// SHA-256 of `vocab.json`, lowercase hex.
    pub vocab_sha256: String,
}

fn read_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

impl RunFiles {
    /// Hashes `config.toml` and `vocab.json` of run directory `dir`.
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        Ok(RunFiles {
            config_sha256: sha256_hex(&read_file(&dir.join(CONFIG_FILE))?),
            vocab_sha256: sha256_hex(&read_file(&dir.join(VOCAB_FILE))?),
        })
    }

    /// The checkpoint metadata that records these hashes.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (CONFIG_SHA256_KEY.to_string(), self.config_sha256.clone()),
            (VOCAB_SHA256_KEY.to_string(), self.vocab_sha256.clone()),
        ])
    }

    /// Checks that `config.toml`, `vocab.json` and the checkpoint `checkpoint` (a file name
    /// inside `dir`, whose metadata is `metadata`) belong to one run. A hash that is
    /// recorded and disagrees is a [`RunDirError::Mixed`] naming both files; so is a
    /// checkpoint without hashes next to a `vocab.json` with one. Directories written
    /// before the hashes existed have none anywhere and pass unchecked.
    pub fn check(
        dir: &Path,
        checkpoint: &str,
        metadata: &BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        /// The one field of `vocab.json` this check reads.
        #[derive(Deserialize)]
        struct VocabHash {
            #[serde(default)]
            config_sha256: Option<String>,
        }
        let found = RunFiles::read(dir)?;
        let vocab_path = dir.join(VOCAB_FILE);
        let vocab: VocabHash = serde_json::from_slice(&read_file(&vocab_path)?)
            .with_context(|| format!("parsing {}", vocab_path.display()))?;
        let mut problems = Vec::new();
        if vocab
            .config_sha256
            .as_ref()
            .is_some_and(|h| *h != found.config_sha256)
        {
            problems.push(format!(
                "{VOCAB_FILE} was written for another {CONFIG_FILE}"
            ));
        }
        let recorded_config = metadata.get(CONFIG_SHA256_KEY);
        let recorded_vocab = metadata.get(VOCAB_SHA256_KEY);
        if recorded_config.is_some_and(|h| *h != found.config_sha256) {
            problems.push(format!(
                "{checkpoint} was trained with another {CONFIG_FILE}"
            ));
        }
        if recorded_vocab.is_some_and(|h| *h != found.vocab_sha256) {
            problems.push(format!(
                "{checkpoint} was trained with another {VOCAB_FILE}"
            ));
        }
        if recorded_config.is_none() && recorded_vocab.is_none() && vocab.config_sha256.is_some() {
            problems.push(format!(
                "{checkpoint} records no {CONFIG_FILE} or {VOCAB_FILE} hash, as only an \
                 earlier version writes, while {VOCAB_FILE} does"
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(RunDirError::Mixed {
                dir: dir.to_path_buf(),
                problems,
            }
            .into())
        }
    }
}

/// Refuses a new run in a directory that already holds files, unless `replace`: a
/// finished (or interrupted) run is never overwritten by accident. Returns whether `dir`
/// holds files (which a run with `replace` then replaces); a missing directory is empty.
pub fn check_new_run(dir: &Path, replace: bool) -> anyhow::Result<bool> {
    let mut entries: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()
            .with_context(|| format!("reading run directory {}", dir.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            return Err(e).with_context(|| format!("reading run directory {}", dir.display()));
        }
    };
    if entries.is_empty() {
        return Ok(false);
    }
    if !replace {
        entries.sort();
        if entries.len() > 4 {
            let more = entries.len() - 3;
            entries.truncate(3);
            entries.push(format!("{more} more"));
        }
        return Err(RunDirError::Occupied {
            dir: dir.to_path_buf(),
            entries,
        }
        .into());
    }
    Ok(true)
}

/// A new run built in a sibling directory `<dir>.new-<pid>` and swapped into `dir` at its
/// first checkpoint, the old run moving to `<dir>.old-<UTC time>` (`train --force`).
///
/// Why build aside and swap, rather than move the old run away first and build in place:
/// until the new run has weights, `dir` stays exactly the old run, so a new run that stops
/// early (an error, Ctrl-C, a loss that diverges in the first epoch) changes nothing, and
/// at no moment does `dir` hold a new configuration or vocabulary next to old weights. The
/// swap is two renames in one parent folder; between them `dir` is briefly absent, never
/// mixed. A replacement dropped before [`Replacement::commit`] deletes its directory.
#[derive(Debug)]
pub struct Replacement {
    target: PathBuf,
    staging: PathBuf,
    committed: bool,
}

/// `dir` with `suffix` appended to its last component.
fn sibling(dir: &Path, suffix: &str) -> anyhow::Result<PathBuf> {
    let name = dir.file_name().with_context(|| {
        format!(
            "cannot replace {}: name the run directory itself (not `.` or `..`)",
            dir.display()
        )
    })?;
    Ok(dir.with_file_name(format!("{}{suffix}", name.to_string_lossy())))
}

impl Replacement {
    /// Creates the empty staging directory next to `target` (removing a stale one of the
    /// same name, left by a killed process of the same id).
    pub fn begin(target: &Path) -> anyhow::Result<Self> {
        let staging = sibling(target, &format!(".new-{}", std::process::id()))?;
        if staging.exists() {
            std::fs::remove_dir_all(&staging)
                .with_context(|| format!("removing stale {}", staging.display()))?;
        }
        prepare_dir(&staging)?;
        Ok(Replacement {
            target: target.to_path_buf(),
            staging,
            committed: false,
        })
    }

    /// The directory replaced at commit.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Where the new run is written until commit.
    pub fn staging(&self) -> &Path {
        &self.staging
    }

    /// Moves the old run (if `target` still exists) to `<target>.old-<UTC time>` and the
    /// new run into `target`. Returns where the old run went. On failure the new run is
    /// left in its staging directory, which the error names.
    pub fn commit(mut self) -> anyhow::Result<Option<PathBuf>> {
        self.committed = true;
        let old = if self.target.exists() {
            let stamp = utc_stamp(std::time::SystemTime::now());
            let mut old = sibling(&self.target, &format!(".old-{stamp}"))?;
            let mut n = 1;
            while old.exists() {
                n += 1;
                old = sibling(&self.target, &format!(".old-{stamp}-{n}"))?;
            }
            std::fs::rename(&self.target, &old).with_context(|| {
                format!(
                    "moving the old run {} to {} (the new run is in {})",
                    self.target.display(),
                    old.display(),
                    self.staging.display()
                )
            })?;
            Some(old)
        } else {
            None
        };
        if let Err(e) = std::fs::rename(&self.staging, &self.target) {
            if let Some(old) = &old {
                // Put the old run back rather than leave no run at `target`.
                let _ = std::fs::rename(old, &self.target);
            }
            return Err(e).with_context(|| {
                format!(
                    "moving the new run {} to {}",
                    self.staging.display(),
                    self.target.display()
                )
            });
        }
        Ok(old)
    }
}

impl Drop for Replacement {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

/// `YYYYMMDDTHHMMSSZ` of a time, in UTC.
pub fn utc_stamp(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a civil date (H. Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn a_task_improves_only_on_its_own_earlier_dev_scores() {
        let line = |epoch: usize, task: &str, split: &str, score: f64| MetricsLine {
            epoch,
            task: task.into(),
            split: split.into(),
            metric: None,
            score,
            precision: None,
            recall: None,
            accuracy: None,
            train_loss: None,
            steps: None,
            tokens_per_s: None,
            elapsed_s: None,
        };
        let lines = vec![
            line(1, "ner", "dev", 80.0),
            line(1, "pos", "dev", 90.0),
            line(1, "ner", "test", 99.0),
            line(2, "ner", "dev", 85.0),
            line(2, "pos", "dev", f64::NAN),
            // A line of the epoch being decided (logged before a resume) is ignored.
            line(3, "pos", "dev", 95.0),
        ];
        assert!(improves_some_task(&[], 1, &[("ner", 1.0)]), "a first epoch");
        assert!(!improves_some_task(
            &lines,
            3,
            &[("ner", 85.0), ("pos", 90.0)]
        ));
        assert!(improves_some_task(
            &lines,
            3,
            &[("ner", 84.0), ("pos", 90.5)]
        ));
        assert!(
            improves_some_task(&lines, 3, &[("chunk", 1.0)]),
            "a task never logged"
        );
        assert!(
            !improves_some_task(&lines, 2, &[("ner", 80.0)]),
            "test lines do not count"
        );
    }

    #[test]
    fn utc_stamps_of_known_times() {
        let at = |s: u64| utc_stamp(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(951_782_400 + 3_723), "20000229T010203Z");
        assert_eq!(at(1_709_251_199), "20240229T235959Z");
        assert_eq!(at(1_735_689_600), "20250101T000000Z");
    }

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sclstm-rundir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_new_run_needs_an_empty_directory_or_replace() {
        let d = temp("occupied");
        assert!(!check_new_run(&d, false).unwrap(), "missing is empty");
        std::fs::create_dir_all(&d).unwrap();
        assert!(!check_new_run(&d, false).unwrap(), "empty is empty");
        std::fs::write(d.join(CONFIG_FILE), "x").unwrap();
        let err = check_new_run(&d, false).unwrap_err().to_string();
        assert!(
            err.contains(&*d.to_string_lossy()) && err.contains(CONFIG_FILE),
            "{err}"
        );
        assert!(err.contains("--resume") && err.contains("--force"), "{err}");
        assert!(check_new_run(&d, true).unwrap());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_resume_keeps_the_gradient_lines_up_to_its_checkpoint_each_step_once() {
        assert_eq!(
            last_per_step(
                vec![(2, 'a'), (4, 'b'), (6, 'c'), (4, 'd'), (6, 'e'), (8, 'f')],
                |r| r.0
            ),
            [(2, 'a'), (4, 'd'), (6, 'e'), (8, 'f')]
        );
        let d = temp("grads");
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join(GRADS_FILE);
        let line =
            |step: u64, x: u32| format!("{{\"step\":{step},\"cosine\":{{\"a/b\":0.{x}}}}}\n");
        // Steps 2–8, a resume from step 4 that logged 6 again, then a kill after step 10.
        let logged: String = [(2, 1), (4, 2), (6, 3), (8, 4), (6, 5), (8, 6), (10, 7)]
            .into_iter()
            .map(|(s, x)| line(s, x))
            .collect();
        std::fs::write(&path, &logged).unwrap();
        truncate_grads(&path, 8).unwrap();
        let want: String = [(2, 1), (4, 2), (6, 5), (8, 6)]
            .into_iter()
            .map(|(s, x)| line(s, x))
            .collect();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), want);
        // No file: nothing to do; a malformed line: an error naming the file and line.
        truncate_grads(&d.join("absent.jsonl"), 8).unwrap();
        std::fs::write(&path, format!("{}\nnot json\n", line(2, 1))).unwrap();
        let err = format!("{:#}", truncate_grads(&path, 8).unwrap_err());
        assert!(
            err.contains(&*path.to_string_lossy()) && err.contains(":3:"),
            "{err}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_replacement_swaps_at_commit_and_vanishes_when_dropped() {
        let d = temp("swap");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("old"), "1").unwrap();
        let r = Replacement::begin(&d).unwrap();
        let staging = r.staging().to_path_buf();
        std::fs::write(staging.join("new"), "2").unwrap();
        drop(r);
        assert!(
            !staging.exists(),
            "an uncommitted replacement leaves nothing"
        );
        assert!(d.join("old").is_file());

        let r = Replacement::begin(&d).unwrap();
        std::fs::write(r.staging().join("new"), "2").unwrap();
        let old = r.commit().unwrap().expect("the old run was moved aside");
        assert!(d.join("new").is_file() && !d.join("old").exists());
        assert!(old.join("old").is_file());
        let name = old.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.contains(".old-") && name.ends_with('Z'), "{name}");
        std::fs::remove_dir_all(&d).unwrap();
        std::fs::remove_dir_all(&old).unwrap();
    }
}

/// The lock file of a run directory: it names the pid of the `sclstm train` using it.
pub const LOCK_FILE: &str = "train.lock";

/// Whether process `pid` is alive (Linux: `/proc/<pid>` exists; elsewhere assumed alive,
/// so that a lock is never broken by mistake).
fn pid_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

/// Holds a run directory for one `sclstm train` process: created with the process's pid,
/// refused while another live process holds it, taken over from a dead one, removed when
/// dropped.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `dir`.
    ///
    /// # Errors
    /// When another live process holds it (naming its pid and the lock file), or the file
    /// cannot be written.
    pub fn acquire(dir: &Path) -> anyhow::Result<RunLock> {
        let path = dir.join(LOCK_FILE);
        let me = std::process::id();
        if let Ok(text) = std::fs::read_to_string(&path) {
            let holder = text.trim().parse::<u32>().ok();
            if let Some(pid) = holder.filter(|&p| p != me && pid_alive(p)) {
                bail!(
                    "{} is in use by another `sclstm train` (pid {pid}, see {}); wait for it to finish or stop it",
                    dir.display(),
                    path.display()
                );
            }
        }
        write_atomic(&path, format!("{me}\n").as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(RunLock { path })
    }

    /// The lock moved with its directory to `dir` (a replacement swapped into place).
    pub fn moved_to(&mut self, dir: &Path) {
        self.path = dir.join(LOCK_FILE);
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes the temporary files (`.<name>.tmp-<pid>`) that atomic writes of processes no
/// longer alive left in `dir` (a kill -9 between write and rename); returns their names.
pub fn remove_stale_temps(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix('.')
            .and_then(|n| n.rsplit_once(".tmp-"))
            .and_then(|(_, pid)| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !pid_alive(pid)
            && std::fs::remove_file(e.path()).is_ok()
        {
            removed.push(name);
        }
    }
    removed.sort();
    removed
}

/// The log of a run, as printed: every line of the trainer's messages.
pub const LOG_FILE: &str = "train.log";
/// One line per optimizer step: `step,epoch,task,loss,tokens_per_s`.
pub const STEPS_FILE: &str = "steps.csv";
/// Header line of [`STEPS_FILE`].
pub const STEPS_HEADER: &str = "step,epoch,task,loss,tokens_per_s";

/// The run's own log files, appended as training goes (`train.log`, `steps.csv`). They
/// are written whether or not a terminal shows the progress, and survive the directory
/// being renamed (a `--force` replacement) since they stay open.
#[derive(Debug)]
pub struct RunLog {
    log: std::fs::File,
    steps: std::io::BufWriter<std::fs::File>,
}

impl RunLog {
    /// Opens (appending) the log files of `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<RunLog> {
        let append = |name: &str| {
            let path = dir.join(name);
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))
        };
        let steps_path = dir.join(STEPS_FILE);
        let fresh = std::fs::metadata(&steps_path).map_or(true, |m| m.len() == 0);
        let mut steps = std::io::BufWriter::new(append(STEPS_FILE)?);
        if fresh {
            writeln!(steps, "{STEPS_HEADER}")
                .with_context(|| format!("writing {}", steps_path.display()))?;
        }
        Ok(RunLog {
            log: append(LOG_FILE)?,
            steps,
        })
    }

    /// Keeps only the lines of steps up to `step` in `dir`'s `steps.csv` (a resumed run
    /// redoes the steps after its checkpoint). Call before [`RunLog::open`].
    pub fn truncate_steps(dir: &Path, step: u64) -> anyhow::Result<()> {
        let path = dir.join(STEPS_FILE);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let kept: String = text
            .lines()
            .filter(|l| {
                l.split(',')
                    .next()
                    .and_then(|s| s.parse::<u64>().ok())
                    .is_none_or(|s| s <= step)
            })
            .flat_map(|l| [l, "\n"])
            .collect();
        write_atomic(&path, kept.as_bytes()).with_context(|| format!("writing {}", path.display()))
    }

    /// Appends a line to `train.log`.
    pub fn line(&mut self, text: &str) -> anyhow::Result<()> {
        writeln!(self.log, "{text}").context("writing train.log")
    }

    /// Appends a step's line to `steps.csv` (buffered; see [`RunLog::flush`]).
    pub fn step(
        &mut self,
        step: u64,
        epoch: usize,
        task: &str,
        loss: f64,
        tokens_per_s: f64,
    ) -> anyhow::Result<()> {
        writeln!(self.steps, "{step},{epoch},{task},{loss},{tokens_per_s:.1}")
            .context("writing steps.csv")
    }

    /// Writes out buffered step lines.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.steps.flush().context("writing steps.csv")
    }
}

/// The single-task runs an STL parent directory holds (`<dir>/stl-<task>` with a
/// `config.toml`, sorted), or none when `dir` is itself a run directory.
pub fn stl_children(dir: &Path) -> Vec<PathBuf> {
    if dir.join(CONFIG_FILE).is_file() {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("stl-"))
                && p.join(CONFIG_FILE).is_file()
        })
        .collect();
    out.sort();
    out
}
