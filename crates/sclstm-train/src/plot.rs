//! Figures of training runs (`sclstm plot`).
//!
//! Reads the logs the trainer writes into a run directory and draws three figures, each in
//! the formats asked for (SVG and PNG by default, PDF on request; the layout, sized for a
//! paper column, is [`crate::figure`]'s):
//! - `dev_scores`: dev score per epoch, one panel per task (F1 for chunk-scored tasks,
//!   accuracy for POS) plus the dev average over tasks (the paper's Figure 3 measure). A
//!   ring marks each run's best epoch: the first with the highest dev average, the one the
//!   trainer keeps as `best.safetensors`;
//! - `train_loss`: training loss (log scale) against the optimizer step, one panel per
//!   task. From `steps.csv`, the loss of every step is a faint line and its centred moving
//!   mean over 2% of the task's steps is drawn on top; a run without `steps.csv` is drawn
//!   from the per-epoch mean loss of `metrics.jsonl`, at the step where each epoch ended;
//! - `grad_conflict` (only when a run has `grads.jsonl`): pairwise cosine similarity of
//!   the tasks' gradients on the shared parameters, each task's shared-gradient norm and,
//!   when logged, the update ratio ‖Δθ‖/‖θ‖ on a log scale, against the optimizer step.
//!
//! Colour names the task (or task pair), line style the run: solid, dashed, dotted, long
//! dashes, in the order the runs were given. The legend names each run by the `model` of
//! its `config.toml` (or its directory name).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::style::RGBColor;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::figure::{
    self, Figure, FigureError, FigureFormat, KEY_COLORS, Key, LegendEntry, NEUTRAL, Panel,
    RUN_STROKES, Series,
};
use crate::rundir::{self, GRADS_FILE, METRICS_FILE, STEPS_FILE, STEPS_HEADER};

/// Resolved training configuration (source of the legend label).
const CONFIG_FILE: &str = "config.toml";
/// Task name of the per-epoch dev average lines.
const AVERAGE_TASK: &str = "average";
/// Split the score and loss figures are drawn from.
const PLOT_SPLIT: &str = "dev";

/// X-axis title of the per-epoch panels.
const EPOCH: &str = "epoch";
/// X-axis title of the per-step panels.
const STEP: &str = "optimizer step";

/// Half-width of the moving mean of per-step losses, as a share of the task's steps
/// (the window spans 2% of them).
const SMOOTHING_HALF_WIDTH: f64 = 0.01;
/// Per-step lines are thinned to at most twice this many points: a figure is 990 px wide.
const LINE_BUCKETS: usize = 600;

/// What can go wrong while reading run directories or drawing figures.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The run directory has no `metrics.jsonl`.
    #[error("{run}: not a run directory (no {METRICS_FILE} in it)")]
    MissingMetrics {
        /// The run directory given with `--run`.
        run: PathBuf,
    },
    /// A log line is not of the expected shape.
    #[error("{path}:{line}: malformed line: {message}")]
    BadLine {
        /// The log file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What the parser reported.
        message: String,
    },
    /// `config.toml` exists but is not valid TOML.
    #[error("{path}: invalid TOML: {message}")]
    BadConfig {
        /// The configuration file.
        path: PathBuf,
        /// What the TOML parser reported.
        message: String,
    },
    /// A file could not be read, or the output folder created.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A figure could not be drawn or written.
    #[error(transparent)]
    Figure(#[from] FigureError),
}

/// The outcome of [`plot_runs`]: files written and notes for the user.
#[derive(Debug, Default)]
pub struct PlotReport {
    /// Paths of the figure files written.
    pub written: Vec<PathBuf>,
    /// One note per figure that had nothing to draw, saying why, and per run left out of a
    /// figure.
    pub notes: Vec<String>,
}

/// One line of `metrics.jsonl` (fields the figures do not use are ignored).
#[derive(Debug, Clone, Deserialize)]
struct MetricsRecord {
    epoch: u32,
    task: String,
    split: String,
    #[serde(default)]
    metric: Option<String>,
    /// `null` when the trainer logged a non-finite score; such points are left out.
    #[serde(default)]
    score: Option<f64>,
    #[serde(default)]
    train_loss: Option<f64>,
    /// Optimizer steps taken when the epoch ended.
    #[serde(default)]
    steps: Option<u64>,
}

/// One line of `grads.jsonl` (fields the figures do not use are ignored).
#[derive(Debug, Clone, Deserialize)]
struct GradsRecord {
    step: u64,
    /// Values may be `null` (a non-finite norm); such points are left out.
    #[serde(default)]
    shared_norm: BTreeMap<String, Option<f64>>,
    #[serde(default)]
    cosine: BTreeMap<String, Option<f64>>,
    /// Absent from logs written before it was recorded; `null` when non-finite.
    #[serde(default)]
    update_ratio: Option<f64>,
}

/// One line of `steps.csv` (the tokens per second are not drawn).
#[derive(Debug, Clone, PartialEq)]
struct StepRecord {
    step: u64,
    task: String,
    loss: f64,
}

/// Everything the figures need from one run directory.
#[derive(Debug)]
struct Run {
    label: String,
    metrics: Vec<MetricsRecord>,
    grads: Option<Vec<GradsRecord>>,
    steps: Option<Vec<StepRecord>>,
}

/// Reads every run directory in `runs` and writes `dev_scores`, `train_loss` and (when
/// some run logged gradients) `grad_conflict` into `out` in each of `formats`, creating
/// `out` if needed. A figure with nothing to draw is skipped and noted in the report.
pub fn plot_runs(
    runs: &[PathBuf],
    out: &Path,
    formats: &[FigureFormat],
) -> Result<PlotReport, PlotError> {
    let mut loaded = runs
        .iter()
        .map(|dir| load_run(dir))
        .collect::<Result<Vec<_>, _>>()?;
    disambiguate_labels(&mut loaded, runs);
    std::fs::create_dir_all(out).map_err(|source| PlotError::Io {
        path: out.to_path_buf(),
        source,
    })?;

    let mut report = PlotReport::default();
    if loaded.len() > RUN_STROKES.len() {
        report.notes.push(format!(
            "{} runs but {} line styles: runs {} on repeat them",
            loaded.len(),
            RUN_STROKES.len(),
            RUN_STROKES.len() + 1
        ));
    }
    let colors = Colors::new(&loaded);
    let figures = [
        (
            "dev_scores",
            dev_score_figure(&loaded, &colors),
            "no run has dev scores in metrics.jsonl",
        ),
        (
            "train_loss",
            train_loss_figure(&loaded, &colors, &mut report.notes),
            "no run has steps.csv or train_loss in metrics.jsonl",
        ),
        (
            "grad_conflict",
            grad_figure(&loaded, &colors),
            "no run has grads.jsonl (train with --log-grads N)",
        ),
    ];
    for (name, figure, why_empty) in figures {
        if figure.panels.is_empty() {
            report.notes.push(format!("{name} skipped: {why_empty}"));
            continue;
        }
        let written = figure::render(&out.join(name), &figure, formats)?;
        report.written.extend(written);
    }
    Ok(report)
}

/// Loads `metrics.jsonl`, the optional `grads.jsonl` and `steps.csv`, and the legend label
/// of one run.
fn load_run(dir: &Path) -> Result<Run, PlotError> {
    let metrics_path = dir.join(METRICS_FILE);
    if !metrics_path.is_file() {
        return Err(PlotError::MissingMetrics {
            run: dir.to_path_buf(),
        });
    }
    let metrics = read_jsonl(&metrics_path)?;
    let grads_path = dir.join(GRADS_FILE);
    let grads = if grads_path.is_file() {
        let records: Vec<GradsRecord> = read_jsonl(&grads_path)?;
        Some(rundir::last_per_step(records, |g| g.step))
    } else {
        None
    };
    let steps_path = dir.join(STEPS_FILE);
    let steps = if steps_path.is_file() {
        Some(read_steps(&steps_path)?)
    } else {
        None
    };
    let label = match config_model(dir)? {
        Some(model) => model,
        None => dir_name(dir),
    };
    Ok(Run {
        label,
        metrics,
        grads,
        steps,
    })
}

/// Reads a file whole.
fn read_text(path: &Path) -> Result<String, PlotError> {
    std::fs::read_to_string(path).map_err(|source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses a JSON Lines file; blank lines are skipped, anything else must parse as `T`.
fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, PlotError> {
    let text = read_text(path)?;
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(line).map_err(|e| PlotError::BadLine {
            path: path.to_path_buf(),
            line: i + 1,
            message: e.to_string(),
        })?;
        records.push(record);
    }
    Ok(records)
}

/// Parses `steps.csv`: its header, then `step,epoch,task,loss,tokens_per_s` lines. Steps
/// with a non-finite loss are left out. A run still training may have its last line half
/// written: a last line without its newline is left out too.
fn read_steps(path: &Path) -> Result<Vec<StepRecord>, PlotError> {
    let text = read_text(path)?;
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    let mut steps = Vec::new();
    for (i, line) in complete.lines().enumerate() {
        if line.trim().is_empty() || (i == 0 && line == STEPS_HEADER) {
            continue;
        }
        let bad = |message: String| PlotError::BadLine {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let fields: Vec<&str> = line.split(',').collect();
        let [step, _epoch, task, loss, _tokens_per_s] = fields[..] else {
            return Err(bad(format!(
                "expected the 5 fields {STEPS_HEADER}, found {}",
                fields.len()
            )));
        };
        let step = step
            .parse::<u64>()
            .map_err(|e| bad(format!("step `{step}`: {e}")))?;
        let loss = loss
            .parse::<f64>()
            .map_err(|e| bad(format!("loss `{loss}`: {e}")))?;
        if loss.is_finite() {
            steps.push(StepRecord {
                step,
                task: task.to_string(),
                loss,
            });
        }
    }
    Ok(steps)
}

/// The top-level `model` key of the run's `config.toml`, if the file and key exist.
fn config_model(dir: &Path) -> Result<Option<String>, PlotError> {
    let path = dir.join(CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PlotError::Io { path, source }),
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| PlotError::BadConfig {
            path: path.clone(),
            message: e.to_string(),
        })?;
    Ok(table
        .get("model")
        .and_then(|v| v.as_str())
        .map(str::to_string))
}

/// The last component of a run directory's path, for legends.
fn dir_name(dir: &Path) -> String {
    // `canonicalize` turns `.` or `run/` into a real name; fall back to the path as given.
    let resolved = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    match resolved.file_name() {
        Some(name) => name.to_string_lossy().into_owned(),
        None => dir.display().to_string(),
    }
}

/// Appends the directory name to labels that two runs share (e.g. two `sc-lstm` runs with
/// different seeds), so that every legend entry names one run.
fn disambiguate_labels(runs: &mut [Run], dirs: &[PathBuf]) {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for run in runs.iter() {
        *counts.entry(run.label.clone()).or_default() += 1;
    }
    for (run, dir) in runs.iter_mut().zip(dirs) {
        let name = dir_name(dir);
        if counts[&run.label] > 1 && run.label != name {
            run.label = format!("{} ({name})", run.label);
        }
    }
}

/// Names in order of first appearance (for tasks: the trainer's task order).
fn task_order<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    for name in names {
        if !order.iter().any(|t| t == name) {
            order.push(name.to_string());
        }
    }
    order
}

/// Sorts by x and keeps the last value logged for each x (a resumed run may repeat an epoch).
fn clean_points(mut points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(points.len());
    for p in points {
        match out.last_mut() {
            Some(last) if last.0 == p.0 => *last = p,
            _ => out.push(p),
        }
    }
    out
}

/// Centred moving mean: `out[i]` is the mean of `values[i - half ..= i + half]`, the
/// window cut short at both ends.
fn moving_mean(values: &[f64], half: usize) -> Vec<f64> {
    let mut prefix = Vec::with_capacity(values.len() + 1);
    prefix.push(0.0);
    for v in values {
        prefix.push(prefix[prefix.len() - 1] + v);
    }
    (0..values.len())
        .map(|i| {
            let (lo, hi) = (i.saturating_sub(half), (i + half + 1).min(values.len()));
            (prefix[hi] - prefix[lo]) / (hi - lo) as f64
        })
        .collect()
}

/// At most `2 * buckets` of `points`: from each run of consecutive points, its lowest and
/// highest (in x order), so that a thinned line keeps its spikes.
fn envelope(points: &[(f64, f64)], buckets: usize) -> Vec<(f64, f64)> {
    if points.len() <= 2 * buckets {
        return points.to_vec();
    }
    let size = points.len().div_ceil(buckets);
    let mut out = Vec::with_capacity(2 * buckets);
    for chunk in points.chunks(size) {
        let by_y = |a: &(usize, &(f64, f64)), b: &(usize, &(f64, f64))| a.1.1.total_cmp(&b.1.1);
        let lo = chunk.iter().enumerate().min_by(by_y).map_or(0, |(i, _)| i);
        let hi = chunk.iter().enumerate().max_by(by_y).map_or(0, |(i, _)| i);
        out.push(chunk[lo.min(hi)]);
        if lo != hi {
            out.push(chunk[lo.max(hi)]);
        }
    }
    out
}

/// The colour of each task and task pair: tasks in the trainer's order, then pairs in the
/// order of their tasks, each taking the next of [`KEY_COLORS`].
#[derive(Debug)]
struct Colors {
    keys: Vec<String>,
}

impl Colors {
    fn new(runs: &[Run]) -> Self {
        let metrics = runs
            .iter()
            .flat_map(|r| &r.metrics)
            .filter(|r| r.task != AVERAGE_TASK)
            .map(|r| r.task.as_str());
        let steps = runs
            .iter()
            .flat_map(|r| r.steps.iter().flatten())
            .map(|s| s.task.as_str());
        let grads = || runs.iter().flat_map(|r| r.grads.iter().flatten());
        let norms = grads()
            .flat_map(|g| g.shared_norm.keys())
            .map(String::as_str);
        let tasks = task_order(metrics.chain(steps).chain(norms));
        let rank = |task: &str| tasks.iter().position(|t| t == task).unwrap_or(tasks.len());
        let mut pairs = task_order(grads().flat_map(|g| g.cosine.keys()).map(String::as_str));
        pairs.sort_by_key(|pair| match pair.split_once('/') {
            Some((a, b)) => (rank(a), rank(b)),
            None => (tasks.len(), tasks.len()),
        });
        Colors {
            keys: tasks.into_iter().chain(pairs).collect(),
        }
    }

    /// The colour of a task or task pair.
    fn of(&self, key: &str) -> RGBColor {
        match self.keys.iter().position(|k| k == key) {
            Some(i) => KEY_COLORS[i % KEY_COLORS.len()],
            None => NEUTRAL,
        }
    }

    /// `keys` without repeats, in colour order.
    fn sorted<'a>(&self, keys: impl Iterator<Item = &'a str>) -> Vec<String> {
        let mut keys = task_order(keys);
        keys.sort_by_key(|k| self.keys.iter().position(|x| x == k));
        keys
    }

    /// A legend entry per key: a solid line in its colour.
    fn legend(&self, keys: &[String]) -> Vec<LegendEntry> {
        keys.iter()
            .map(|k| LegendEntry {
                label: k.clone(),
                color: self.of(k),
                key: Key::Line(figure::Stroke::Solid),
            })
            .collect()
    }
}

/// A legend entry per run that has a series in `panels`: its line style in dark grey.
fn run_legend(runs: &[Run], panels: &[Panel]) -> Vec<LegendEntry> {
    runs.iter()
        .enumerate()
        .filter(|(_, run)| {
            panels
                .iter()
                .flat_map(|p| &p.series)
                .any(|s| s.label == run.label)
        })
        .map(|(i, run)| LegendEntry {
            label: run.label.clone(),
            color: NEUTRAL,
            key: Key::Line(RUN_STROKES[i % RUN_STROKES.len()]),
        })
        .collect()
}

/// A series of run `i` (its label and line style) in `color`.
fn run_series(runs: &[Run], i: usize, color: RGBColor, points: Vec<(f64, f64)>) -> Series {
    Series {
        stroke: RUN_STROKES[i % RUN_STROKES.len()],
        ..Series::line(runs[i].label.clone(), color, points)
    }
}

/// `(epoch, score)` of a run's dev lines for `task`.
fn dev_points(run: &Run, task: &str) -> Vec<(f64, f64)> {
    clean_points(
        run.metrics
            .iter()
            .filter(|r| r.split == PLOT_SPLIT && r.task == task)
            .filter_map(|r| r.score.map(|s| (f64::from(r.epoch), s)))
            .collect(),
    )
}

/// The run's best epoch: the first with the highest dev average (as the trainer picks it).
fn best_epoch(run: &Run) -> Option<f64> {
    let averages = dev_points(run, AVERAGE_TASK);
    let values: Vec<f64> = averages.iter().map(|p| p.1).collect();
    rundir::best_epoch(&values).map(|i| averages[i - 1].0)
}

/// `dev_scores`: one panel per task, then the average; each run's best epoch ringed.
fn dev_score_figure(runs: &[Run], colors: &Colors) -> Figure {
    let tasks = task_order(
        runs.iter()
            .flat_map(|r| &r.metrics)
            .filter(|r| r.split == PLOT_SPLIT && r.task != AVERAGE_TASK)
            .map(|r| r.task.as_str()),
    );
    let best: Vec<Option<f64>> = runs.iter().map(best_epoch).collect();
    let panel = |title: String, y_desc: String, task: &str, color: RGBColor| {
        let series = (0..runs.len())
            .filter_map(|i| {
                let points = dev_points(&runs[i], task);
                let ring = best[i].and_then(|e| points.iter().find(|p| p.0 == e).copied());
                (!points.is_empty()).then(|| Series {
                    dots: true,
                    ring,
                    ..run_series(runs, i, color, points)
                })
            })
            .collect();
        Panel {
            integer_x: true,
            ..Panel::lines(title, EPOCH, y_desc, series)
        }
    };
    let mut panels: Vec<Panel> = tasks
        .iter()
        .map(|task| {
            let metric = runs.iter().flat_map(|r| &r.metrics).find_map(|r| {
                if r.split == PLOT_SPLIT && &r.task == task {
                    r.metric.clone()
                } else {
                    None
                }
            });
            let measure = match metric.as_deref() {
                Some("f1") => "F1".to_string(),
                Some(other) => other.to_string(),
                None => "score".to_string(),
            };
            panel(
                format!("{task}: dev {measure}"),
                format!("{measure} (%)"),
                task,
                colors.of(task),
            )
        })
        .collect();
    panels.push(panel(
        "average over tasks: dev".to_string(),
        "score (%)".to_string(),
        AVERAGE_TASK,
        NEUTRAL,
    ));
    panels.retain(|p| !p.series.is_empty());
    let mut legend = run_legend(runs, &panels);
    if panels
        .iter()
        .flat_map(|p| &p.series)
        .any(|s| s.ring.is_some())
    {
        legend.push(LegendEntry {
            label: "best dev average".to_string(),
            color: NEUTRAL,
            key: Key::Ring,
        });
    }
    Figure { panels, legend }
}

/// The loss series of run `i` for `task`: per step (raw and smoothed) from `steps.csv`,
/// else per epoch from `metrics.jsonl` at the step each epoch ended. `None` when the run
/// has neither for the task.
fn loss_series(runs: &[Run], i: usize, task: &str, color: RGBColor) -> Option<Series> {
    let run = &runs[i];
    if let Some(steps) = &run.steps {
        let raw = clean_points(
            steps
                .iter()
                .filter(|s| s.task == task)
                .map(|s| (s.step as f64, s.loss))
                .collect(),
        );
        if raw.is_empty() {
            return None;
        }
        let values: Vec<f64> = raw.iter().map(|p| p.1).collect();
        let half = (values.len() as f64 * SMOOTHING_HALF_WIDTH) as usize;
        let smooth: Vec<(f64, f64)> = raw
            .iter()
            .zip(moving_mean(&values, half))
            .map(|(p, m)| (p.0, m))
            .collect();
        return Some(Series {
            raw: envelope(&raw, LINE_BUCKETS),
            ..run_series(runs, i, color, envelope(&smooth, LINE_BUCKETS))
        });
    }
    let points = clean_points(
        run.metrics
            .iter()
            .filter(|r| r.split == PLOT_SPLIT && r.task == task)
            .filter_map(|r| Some((r.steps? as f64, r.train_loss?)))
            .collect(),
    );
    (!points.is_empty()).then(|| Series {
        dots: true,
        ..run_series(runs, i, color, points)
    })
}

/// `train_loss`: one panel per task. Runs with per-epoch losses but no step counts (and
/// no `steps.csv`) cannot be placed on the step axis; they are noted in `notes`.
fn train_loss_figure(runs: &[Run], colors: &Colors, notes: &mut Vec<String>) -> Figure {
    let tasks = task_order(
        runs.iter()
            .flat_map(|r| {
                let per_epoch = r
                    .metrics
                    .iter()
                    .filter(|m| m.train_loss.is_some())
                    .map(|m| m.task.as_str());
                let per_step = r.steps.iter().flatten().map(|s| s.task.as_str());
                per_epoch.chain(per_step)
            })
            .filter(|t| *t != AVERAGE_TASK),
    );
    let mut panels: Vec<Panel> = tasks
        .iter()
        .map(|task| {
            let series = (0..runs.len())
                .filter_map(|i| loss_series(runs, i, task, colors.of(task)))
                .collect();
            // Losses fall by orders of magnitude, and per-step noise is multiplicative.
            Panel {
                log_y: true,
                ..Panel::lines(
                    format!("{task}: training loss"),
                    STEP,
                    "loss".to_string(),
                    series,
                )
            }
        })
        .collect();
    panels.retain(|p| !p.series.is_empty());
    for run in runs {
        let has_loss = run.metrics.iter().any(|m| m.train_loss.is_some());
        let drawn = panels
            .iter()
            .flat_map(|p| &p.series)
            .any(|s| s.label == run.label);
        if has_loss && !drawn {
            notes.push(format!(
                "train_loss: {} left out (no {STEPS_FILE}, and {METRICS_FILE} has no step counts)",
                run.label
            ));
        }
    }
    let mut legend = run_legend(runs, &panels);
    if panels
        .iter()
        .flat_map(|p| &p.series)
        .any(|s| !s.raw.is_empty())
    {
        legend.push(LegendEntry {
            label: "loss of each step".to_string(),
            color: NEUTRAL,
            key: Key::Faint,
        });
    }
    Figure { panels, legend }
}

/// `grad_conflict`: cosine similarities, shared-gradient norms and, when logged, the
/// update ratio.
fn grad_figure(runs: &[Run], colors: &Colors) -> Figure {
    let logged: Vec<(usize, &[GradsRecord])> = runs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.grads.as_deref().map(|g| (i, g)))
        .collect();
    let keyed = |pick: fn(&GradsRecord) -> &BTreeMap<String, Option<f64>>| -> Vec<Series> {
        let mut series = Vec::new();
        for &(i, grads) in &logged {
            let keys = colors.sorted(
                grads
                    .iter()
                    .flat_map(|g| pick(g).keys())
                    .map(String::as_str),
            );
            for key in keys {
                let points = grads
                    .iter()
                    .filter_map(|g| {
                        let v = pick(g).get(&key).copied().flatten()?;
                        Some((g.step as f64, v))
                    })
                    .collect();
                series.push(run_series(runs, i, colors.of(&key), clean_points(points)));
            }
        }
        series.retain(|s| !s.points.is_empty());
        series
    };
    let cosine = keyed(|g| &g.cosine);
    let norms = keyed(|g| &g.shared_norm);
    let ratio: Vec<Series> = logged
        .iter()
        .map(|&(i, grads)| {
            let points = grads
                .iter()
                .filter_map(|g| Some((g.step as f64, g.update_ratio?)))
                .collect();
            run_series(runs, i, NEUTRAL, clean_points(points))
        })
        .filter(|s| !s.points.is_empty())
        .collect();

    let key_names = |pick: fn(&GradsRecord) -> &BTreeMap<String, Option<f64>>| {
        colors.sorted(
            logged
                .iter()
                .flat_map(|(_, g)| g.iter())
                .flat_map(|g| pick(g).keys())
                .map(String::as_str),
        )
    };
    let mut legend = colors.legend(&key_names(|g| &g.cosine));
    legend.extend(colors.legend(&key_names(|g| &g.shared_norm)));

    let mut panels = Vec::new();
    if !cosine.is_empty() {
        panels.push(Panel {
            zero_line: true,
            ..Panel::lines(
                "cosine of task gradients".to_string(),
                STEP,
                "cosine".to_string(),
                cosine,
            )
        });
    }
    if !norms.is_empty() {
        panels.push(Panel::lines(
            "shared-gradient norm".to_string(),
            STEP,
            "L2 norm".to_string(),
            norms,
        ));
    }
    if !ratio.is_empty() {
        panels.push(Panel {
            log_y: true,
            ..Panel::lines(
                "update ratio ‖Δθ‖/‖θ‖".to_string(),
                STEP,
                "ratio".to_string(),
                ratio,
            )
        });
    }
    // Colour tells the tasks apart; line style the runs, once there are several.
    if logged.len() > 1 {
        legend.extend(run_legend(runs, &panels));
    }
    Figure { panels, legend }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;
    use crate::figure::tests::{attrs, printed_font_points};
    use crate::figure::{DEFAULT_FORMATS, Stroke, WIDTH};

    const SVG: &[FigureFormat] = &[FigureFormat::Svg];

    /// A fresh, empty folder under the system temp dir.
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sclstm-plot-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Writes a run directory with `epochs` epochs of metrics for ner, chunk and pos; each
    /// epoch is 10 steps and the dev average rises every epoch.
    fn write_run(dir: &Path, epochs: u32, offset: f64, model: Option<&str>) {
        write_run_with_averages(
            dir,
            &(1..=epochs)
                .map(|e| 88.0 + f64::from(e))
                .collect::<Vec<_>>(),
            offset,
            model,
        );
    }

    /// [`write_run`] with the given dev average of each epoch.
    fn write_run_with_averages(dir: &Path, averages: &[f64], offset: f64, model: Option<&str>) {
        std::fs::create_dir_all(dir).unwrap();
        let mut text = String::new();
        for (e, average) in (1..).zip(averages) {
            let x = f64::from(e);
            for (task, metric, base) in [
                ("ner", "f1", 80.0),
                ("chunk", "f1", 90.0),
                ("pos", "accuracy", 95.0),
            ] {
                for split in ["dev", "test"] {
                    let score = base + x + offset;
                    writeln!(
                        text,
                        r#"{{"epoch": {e}, "task": "{task}", "split": "{split}", "metric": "{metric}", "score": {score}, "precision": 1.0, "train_loss": {loss}, "steps": {steps}, "tokens_per_s": 2.5, "elapsed_s": 1.0, "future_field": [1, 2]}}"#,
                        loss = 1.0 / x,
                        steps = 10 * e,
                    )
                    .unwrap();
                }
            }
            writeln!(
                text,
                r#"{{"epoch": {e}, "task": "average", "split": "dev", "score": {average}, "steps": {}}}"#,
                10 * e
            )
            .unwrap();
        }
        std::fs::write(dir.join(METRICS_FILE), text).unwrap();
        if let Some(model) = model {
            std::fs::write(
                dir.join(CONFIG_FILE),
                format!("model = \"{model}\"\nhidden = 300\n\n[lambda]\nner = 1.0\n"),
            )
            .unwrap();
        }
    }

    fn write_grads(dir: &Path, steps: u64, update_ratio: bool) {
        let mut text = String::new();
        for s in 1..=steps {
            let ratio = if update_ratio {
                format!(r#", "update_ratio": {}"#, 0.001 * s as f64)
            } else {
                String::new()
            };
            writeln!(
                text,
                r#"{{"step": {}, "epoch": 0, "shared_norm": {{"ner": 1.2, "chunk": 0.8, "pos": 0.5}}, "specific_norm": {{"ner": 0.3}}, "cosine": {{"ner/chunk": 0.12, "ner/pos": -0.05, "chunk/pos": {}}}{ratio}}}"#,
                s * 100,
                if s == 2 { "null".to_string() } else { format!("{}", 0.1 * s as f64) },
            )
            .unwrap();
        }
        std::fs::write(dir.join(GRADS_FILE), text).unwrap();
    }

    /// Writes `steps.csv` with `n` steps alternating pos and ner: ner has the even steps
    /// 2, 4, 6, … with losses 3, 1, 3, …; pos has the odd ones, all with loss 10.
    fn write_steps(dir: &Path, n: u64) {
        let mut text = format!("{STEPS_HEADER}\n");
        for s in 1..=n {
            let (task, loss) = if s % 2 == 0 {
                ("ner", 1.0 + ((s / 2) % 2) as f64 * 2.0)
            } else {
                ("pos", 10.0)
            };
            writeln!(text, "{s},1,{task},{loss},1000.0").unwrap();
        }
        std::fs::write(dir.join(STEPS_FILE), text).unwrap();
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn stroke_attr(c: RGBColor) -> String {
        format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
    }

    /// Polylines drawn in a task or pair colour: the data lines (a broken line counts once
    /// per dash) and legend samples of colour keys. Axes, grid, run samples and the
    /// average are black or grey and so are not counted.
    fn colored_polylines(svg: &str) -> usize {
        let colors: Vec<String> = KEY_COLORS.iter().map(|&c| stroke_attr(c)).collect();
        attrs(svg, "polyline", "stroke")
            .iter()
            .filter(|s| colors.contains(s))
            .count()
    }

    /// `(cx, cy)` of the filled circles (dots) or of the rings.
    fn circles(svg: &str, rings: bool) -> Vec<(i32, i32)> {
        let cx = attrs(svg, "circle", "cx");
        let cy = attrs(svg, "circle", "cy");
        let fill = attrs(svg, "circle", "fill");
        (0..cx.len())
            .filter(|&i| (fill[i] == "none") == rings)
            .map(|i| (cx[i].parse().unwrap(), cy[i].parse().unwrap()))
            .collect()
    }

    /// Contents of the `<text>` elements, unescaped enough for the labels used here.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .map(|el| {
                let start = el.find('>').unwrap() + 1;
                let end = el.find("</text>").unwrap();
                el[start..end].trim().to_string()
            })
            .collect()
    }

    fn assert_contains_all(labels: &[String], needles: &[&str]) {
        for needle in needles {
            assert!(
                labels.iter().any(|t| t == needle),
                "missing {needle:?} in {labels:?}"
            );
        }
    }

    #[test]
    fn two_runs_overlay_in_every_panel() {
        let root = temp_dir("overlay");
        let (a, b) = (root.join("run-a"), root.join("stl-run"));
        write_run(&a, 3, 0.0, Some("sc-lstm"));
        write_run(&b, 2, -1.0, None);
        write_grads(&a, 4, true);
        let out = root.join("figures");
        let report = plot_runs(&[a.clone(), b.clone()], &out, SVG).unwrap();
        assert_eq!(
            report.written,
            vec![
                out.join("dev_scores.svg"),
                out.join("train_loss.svg"),
                out.join("grad_conflict.svg")
            ]
        );
        assert!(report.notes.is_empty(), "{:?}", report.notes);

        let dev = read(&out.join("dev_scores.svg"));
        assert!(dev.starts_with("<svg"), "{}", &dev[..40]);
        assert!(dev.trim_end().ends_with("</svg>"));
        let labels = texts(&dev);
        assert_contains_all(
            &labels,
            &[
                "ner: dev F1",
                "chunk: dev F1",
                "pos: dev accuracy",
                "average over tasks: dev",
                "epoch",
                "best dev average",
            ],
        );
        // One legend for the figure: the config's model for run-a, the directory name for the other.
        for run in ["sc-lstm", "stl-run"] {
            assert_eq!(labels.iter().filter(|t| *t == run).count(), 1, "{labels:?}");
        }
        // Epoch ticks are whole numbers.
        assert!(
            labels.iter().any(|t| t == "3") && !labels.iter().any(|t| t == "1.5"),
            "{labels:?}"
        );
        // One dot per point: run-a has 3 epochs, the other 2, in 4 panels; a ring on each
        // run's best epoch in every panel, and one in the legend.
        assert_eq!(circles(&dev, false).len(), 4 * (3 + 2));
        assert_eq!(circles(&dev, true).len(), 4 * 2 + 1);

        // Without steps.csv the loss is drawn per epoch, at the step each epoch ended.
        let loss = read(&out.join("train_loss.svg"));
        let labels = texts(&loss);
        assert_contains_all(
            &labels,
            &[
                "ner: training loss",
                "chunk: training loss",
                "pos: training loss",
                "optimizer step",
            ],
        );
        assert!(
            !labels.iter().any(|t| t.starts_with("average")),
            "{labels:?}"
        );
        assert_eq!(circles(&loss, false).len(), 3 * (3 + 2));

        let grads = read(&out.join("grad_conflict.svg"));
        let labels = texts(&grads);
        assert_contains_all(
            &labels,
            &[
                "ner/chunk",
                "ner/pos",
                "chunk/pos",
                "ner",
                "chunk",
                "pos",
                "optimizer step",
                "update ratio ‖Δθ‖/‖θ‖",
            ],
        );
        // Only run-a logged gradients, so the legend names colours only; its line is solid:
        // 3 cosine and 3 norm lines, and a sample for each of the 6 keys.
        assert!(!labels.iter().any(|t| t == "sc-lstm"), "{labels:?}");
        assert_eq!(colored_polylines(&grads), (3 + 3) * 2);

        for svg in [&dev, &loss, &grads] {
            assert_eq!(attrs(svg, "svg", "width"), [WIDTH.to_string()]);
            let small = printed_font_points(svg)
                .into_iter()
                .fold(f64::INFINITY, f64::min);
            assert!(small >= 7.0 - 1e-9, "{small} pt");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn default_formats_write_svg_and_a_png_of_the_same_size() {
        let root = temp_dir("png");
        let run = root.join("run");
        write_run(&run, 2, 0.0, None);
        let report = plot_runs(std::slice::from_ref(&run), &run, &DEFAULT_FORMATS).unwrap();
        let names: Vec<String> = report
            .written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "dev_scores.svg",
                "dev_scores.png",
                "train_loss.svg",
                "train_loss.png"
            ]
        );
        let svg = read(&run.join("dev_scores.svg"));
        let height: u32 = attrs(&svg, "svg", "height")[0].parse().unwrap();
        let png = resvg::tiny_skia::Pixmap::load_png(run.join("dev_scores.png")).unwrap();
        assert_eq!((png.width(), png.height()), (WIDTH, height));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_best_epoch_ring_sits_on_the_epoch_with_the_best_dev_average() {
        let root = temp_dir("best");
        let run = root.join("run");
        // Dev average peaks at epoch 2 and is only matched, not beaten, at epoch 3.
        write_run_with_averages(&run, &[85.0, 90.0, 90.0], 0.0, None);
        std::fs::write(
            run.join(METRICS_FILE),
            read(&run.join(METRICS_FILE))
                .lines()
                .filter(|l| l.contains("\"ner\"") || l.contains("average"))
                .map(|l| format!("{l}\n"))
                .collect::<String>(),
        )
        .unwrap();
        let loaded = load_run(&run).unwrap();
        assert_eq!(best_epoch(&loaded), Some(2.0));
        plot_runs(std::slice::from_ref(&run), &root, SVG).unwrap();
        let dev = read(&root.join("dev_scores.svg"));
        // Two panels side by side (ner, average), three dots each.
        let mut dots = circles(&dev, false);
        assert_eq!(dots.len(), 6);
        dots.sort();
        let mut rings = circles(&dev, true);
        // The lowest ring is the legend's sample, under the panels.
        rings.sort_by_key(|r| r.1);
        let legend = rings.pop().unwrap();
        assert!(dots.iter().all(|d| d.1 < legend.1));
        rings.sort();
        let middles: Vec<i32> = vec![dots[1].0, dots[4].0];
        assert_eq!(rings.iter().map(|r| r.0).collect::<Vec<_>>(), middles);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn each_run_has_its_own_line_style_and_each_task_its_colour() {
        let root = temp_dir("styles");
        let (a, b) = (root.join("a"), root.join("b"));
        write_run(&a, 3, 0.0, Some("sc-lstm"));
        write_run(&b, 3, -1.0, Some("lstm-s"));
        let runs = [load_run(&a).unwrap(), load_run(&b).unwrap()];
        let colors = Colors::new(&runs);
        let fig = dev_score_figure(&runs, &colors);
        for p in &fig.panels {
            let strokes: Vec<Stroke> = p.series.iter().map(|s| s.stroke).collect();
            assert_eq!(strokes, [Stroke::Solid, Stroke::Dashed], "{}", p.title);
            assert_eq!(p.series[0].color, p.series[1].color, "{}", p.title);
        }
        let task_colors: Vec<RGBColor> = fig.panels.iter().map(|p| p.series[0].color).collect();
        assert_eq!(
            task_colors,
            [KEY_COLORS[0], KEY_COLORS[1], KEY_COLORS[2], NEUTRAL]
        );
        let keys: Vec<Key> = fig.legend.iter().map(|e| e.key).collect();
        assert_eq!(
            keys,
            [
                Key::Line(Stroke::Solid),
                Key::Line(Stroke::Dashed),
                Key::Ring
            ]
        );
        // In the SVG the solid run is one polyline across the panel and the dashed one is
        // broken into dashes at most 5 pt long.
        plot_runs(&[a, b], &root, SVG).unwrap();
        let dev = read(&root.join("dev_scores.svg"));
        let ner = stroke_attr(KEY_COLORS[0]);
        let extents: Vec<f64> = dev
            .split("<polyline")
            .skip(1)
            .filter(|el| el[..el.find('>').unwrap()].contains(&format!("stroke=\"{ner}\"")))
            .map(|el| {
                let points = &attrs(&format!("<polyline{el}"), "polyline", "points")[0];
                let xs: Vec<f64> = points
                    .split_whitespace()
                    .map(|p| p.split(',').next().unwrap().parse().unwrap())
                    .collect();
                xs.iter().copied().fold(f64::MIN, f64::max)
                    - xs.iter().copied().fold(f64::MAX, f64::min)
            })
            .collect();
        assert_eq!(
            extents.iter().filter(|&&w| w > 200.0).count(),
            1,
            "{extents:?}"
        );
        let dashes = extents
            .iter()
            .filter(|&&w| w <= figure::pt(5.0) + 1.0)
            .count();
        assert!(dashes >= 5 && dashes + 1 == extents.len(), "{extents:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn task_pairs_take_colours_after_the_tasks_in_task_order() {
        let root = temp_dir("colors");
        let run = root.join("run");
        write_run(&run, 1, 0.0, None);
        write_grads(&run, 3, false);
        let runs = [load_run(&run).unwrap()];
        let colors = Colors::new(&runs);
        // Tasks in the trainer's order, pairs in the order of their tasks (not the
        // alphabetical order of grads.jsonl's keys).
        assert_eq!(
            colors.keys,
            ["ner", "chunk", "pos", "ner/chunk", "ner/pos", "chunk/pos"]
        );
        assert_eq!(colors.of("chunk/pos"), KEY_COLORS[5]);
        assert_eq!(colors.of("unknown"), NEUTRAL);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn update_ratio_panel_is_log_scale_and_only_there_when_logged() {
        let root = temp_dir("ratio");
        let (with, without) = (root.join("with"), root.join("without"));
        for (dir, ratio) in [(&with, true), (&without, false)] {
            write_run(dir, 1, 0.0, None);
            write_grads(dir, 3, ratio);
        }
        let runs = [load_run(&with).unwrap()];
        let fig = grad_figure(&runs, &Colors::new(&runs));
        let titles: Vec<&str> = fig.panels.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "cosine of task gradients",
                "shared-gradient norm",
                "update ratio ‖Δθ‖/‖θ‖"
            ]
        );
        let ratio = &fig.panels[2];
        assert!(ratio.log_y && !fig.panels[0].log_y);
        assert_eq!(
            ratio.series[0].points,
            [(100.0, 0.001), (200.0, 0.002), (300.0, 0.003)]
        );
        let runs = [load_run(&without).unwrap()];
        let fig = grad_figure(&runs, &Colors::new(&runs));
        assert_eq!(fig.panels.len(), 2);
        // On the log axis the ticks name values, such as 2e-3.
        plot_runs(std::slice::from_ref(&with), &with, SVG).unwrap();
        let labels = texts(&read(&with.join("grad_conflict.svg")));
        assert!(labels.iter().any(|t| t.ends_with("e-3")), "{labels:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn steps_csv_gives_a_smoothed_loss_over_a_faint_raw_line() {
        let root = temp_dir("steps");
        let run = root.join("run");
        write_run(&run, 1, 0.0, None);
        write_steps(&run, 400);
        // A line half written by a run still training is left out.
        let path = run.join(STEPS_FILE);
        std::fs::write(&path, format!("{}401,1,ne", read(&path))).unwrap();
        let runs = [load_run(&run).unwrap()];
        assert_eq!(runs[0].steps.as_ref().unwrap().len(), 400);
        let mut notes = Vec::new();
        let fig = train_loss_figure(&runs, &Colors::new(&runs), &mut notes);
        assert!(notes.is_empty(), "{notes:?}");
        let titles: Vec<&str> = fig.panels.iter().map(|p| p.title.as_str()).collect();
        // chunk has a per-epoch loss in metrics.jsonl but no steps: the run's steps.csv is
        // what is drawn for it, so chunk has no panel.
        assert_eq!(titles, ["ner: training loss", "pos: training loss"]);
        let ner = &fig.panels[0].series[0];
        // 200 ner steps: the window spans 2 + 1 + 2 of them, and ner's loss alternates
        // 3, 1, 3, … (steps 2, 4, 6, …), so inside the run the mean is 11/5 or 9/5.
        assert_eq!(ner.raw.len(), 200);
        assert_eq!(ner.raw[0], (2.0, 3.0));
        assert!(
            (ner.points[10].1 - 11.0 / 5.0).abs() < 1e-12,
            "{:?}",
            ner.points[10]
        );
        assert!(
            (ner.points[11].1 - 9.0 / 5.0).abs() < 1e-12,
            "{:?}",
            ner.points[11]
        );
        // At the start the window is cut short: steps 2, 4, 6 are 3, 1, 3.
        assert!((ner.points[0].1 - 7.0 / 3.0).abs() < 1e-12);
        assert!(!ner.dots && fig.panels[1].series[0].points.iter().all(|p| p.1 == 10.0));
        assert_eq!(fig.legend.last().unwrap().key, Key::Faint);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn malformed_steps_line_names_file_and_line() {
        let root = temp_dir("badsteps");
        let run = root.join("run");
        write_run(&run, 1, 0.0, None);
        write_steps(&run, 3);
        let path = run.join(STEPS_FILE);
        std::fs::write(&path, format!("{}4,1,ner,lots,1.0\n", read(&path))).unwrap();
        let err = plot_runs(std::slice::from_ref(&run), &root, SVG).unwrap_err();
        // The header is line 1, so step 4 is on line 5.
        assert!(matches!(err, PlotError::BadLine { line: 5, .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("{}:5:", path.display())) && msg.contains("lots"),
            "{msg}"
        );
        std::fs::write(&path, format!("{STEPS_HEADER}\n1,1,ner\n")).unwrap();
        let err = plot_runs(std::slice::from_ref(&run), &root, SVG).unwrap_err();
        assert!(err.to_string().contains("found 3"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_run_without_step_counts_is_noted_not_drawn_in_the_loss_figure() {
        let root = temp_dir("nosteps");
        let run = root.join("old-run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(
            run.join(METRICS_FILE),
            "{\"epoch\": 1, \"task\": \"ner\", \"split\": \"dev\", \"metric\": \"f1\", \"score\": 70.0, \"train_loss\": 2.0}\n",
        )
        .unwrap();
        let report = plot_runs(std::slice::from_ref(&run), &root, SVG).unwrap();
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.starts_with("train_loss: old-run left out")),
            "{:?}",
            report.notes
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_fifth_run_repeats_the_first_line_style_and_says_so() {
        let root = temp_dir("fiveruns");
        let dirs: Vec<PathBuf> = (0..5).map(|i| root.join(format!("r{i}"))).collect();
        for dir in &dirs {
            write_run(dir, 1, 0.0, None);
        }
        let report = plot_runs(&dirs, &root, SVG).unwrap();
        assert!(
            report
                .notes
                .iter()
                .any(|n| n == "5 runs but 4 line styles: runs 5 on repeat them"),
            "{:?}",
            report.notes
        );
        let runs: Vec<Run> = dirs.iter().map(|d| load_run(d).unwrap()).collect();
        let fig = dev_score_figure(&runs, &Colors::new(&runs));
        let strokes: Vec<Stroke> = fig.panels[0].series.iter().map(|s| s.stroke).collect();
        assert_eq!(
            strokes,
            [
                Stroke::Solid,
                Stroke::Dashed,
                Stroke::Dotted,
                Stroke::LongDash,
                Stroke::Solid
            ]
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn moving_mean_matches_hand_computed_values() {
        // Window of 3, cut at the ends: (1+2)/2, (1+2+3)/3, (2+3+10)/3, (3+10)/2.
        assert_eq!(moving_mean(&[1.0, 2.0, 3.0, 10.0], 1), [1.5, 2.0, 5.0, 6.5]);
        assert_eq!(moving_mean(&[4.0, 8.0], 0), [4.0, 8.0]);
        assert_eq!(moving_mean(&[1.0, 2.0, 6.0], 5), [3.0, 3.0, 3.0]);
        assert!(moving_mean(&[], 3).is_empty());
    }

    #[test]
    fn envelope_keeps_each_buckets_extremes_in_order() {
        let pts: Vec<(f64, f64)> = [5.0, 1.0, 9.0, 2.0, 2.0, 7.0, 0.0, 3.0]
            .iter()
            .enumerate()
            .map(|(i, &y)| (i as f64, y))
            .collect();
        assert_eq!(envelope(&pts, 4), pts, "short lines are kept whole");
        // Two buckets of 4: (1 at x=1, 9 at x=2) and (7 at x=5, 0 at x=6).
        assert_eq!(
            envelope(&pts, 2)[..],
            [(1.0, 1.0), (2.0, 9.0), (5.0, 7.0), (6.0, 0.0)]
        );
        // On a flat stretch the first lowest and the last highest point are kept.
        let flat: Vec<(f64, f64)> = (0..10).map(|i| (f64::from(i), 1.0)).collect();
        assert_eq!(
            envelope(&flat, 2),
            [(0.0, 1.0), (4.0, 1.0), (5.0, 1.0), (9.0, 1.0)]
        );
    }

    #[test]
    fn grad_figure_is_skipped_without_grads_and_out_defaults_apply() {
        let root = temp_dir("nograds");
        let run = root.join("run");
        write_run(&run, 1, 0.0, Some("lstm-s"));
        let report = plot_runs(std::slice::from_ref(&run), &run, SVG).unwrap();
        assert_eq!(report.written.len(), 2, "{report:?}");
        assert_eq!(report.notes.len(), 1);
        assert!(
            report.notes[0].starts_with("grad_conflict skipped"),
            "{:?}",
            report.notes
        );
        assert!(!run.join("grad_conflict.svg").exists());
        // A single epoch still gives one dot and one ring per panel.
        let dev = read(&run.join("dev_scores.svg"));
        assert_eq!(circles(&dev, false).len(), 4);
        assert_eq!(circles(&dev, true).len(), 4 + 1);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn runs_with_the_same_model_get_distinct_labels() {
        let root = temp_dir("samemodel");
        let (a, b) = (root.join("seed1"), root.join("seed2"));
        write_run(&a, 2, 0.0, Some("sc-lstm"));
        write_run(&b, 2, 0.5, Some("sc-lstm"));
        plot_runs(&[a, b], &root, SVG).unwrap();
        let labels = texts(&read(&root.join("dev_scores.svg")));
        assert!(labels.iter().any(|t| t == "sc-lstm (seed1)"), "{labels:?}");
        assert!(labels.iter().any(|t| t == "sc-lstm (seed2)"), "{labels:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn every_run_is_named_once_even_when_missing_from_some_panels() {
        let root = temp_dir("partial");
        let (a, b) = (root.join("full"), root.join("ner-only"));
        write_run(&a, 2, 0.0, None);
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(
            b.join(METRICS_FILE),
            "{\"epoch\": 1, \"task\": \"ner\", \"split\": \"dev\", \"metric\": \"f1\", \"score\": 70.0}\n",
        )
        .unwrap();
        let runs = [load_run(&a).unwrap(), load_run(&b).unwrap()];
        let fig = dev_score_figure(&runs, &Colors::new(&runs));
        let counts: Vec<usize> = fig.panels.iter().map(|p| p.series.len()).collect();
        assert_eq!(counts, [2, 1, 1, 1]);
        assert_eq!(fig.panels[0].series[1].stroke, Stroke::Dashed);
        plot_runs(&[a, b], &root, SVG).unwrap();
        let labels = texts(&read(&root.join("dev_scores.svg")));
        for run in ["full", "ner-only"] {
            assert_eq!(labels.iter().filter(|t| *t == run).count(), 1, "{labels:?}");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn malformed_metrics_line_names_file_and_line() {
        let root = temp_dir("badline");
        let run = root.join("run");
        write_run(&run, 1, 0.0, None);
        let path = run.join(METRICS_FILE);
        let mut text = read(&path);
        text.push_str("\n{\"epoch\": 2, \"task\": \"ner\", \"split\": \"dev\", \"score\": 1.0\n");
        std::fs::write(&path, text).unwrap();
        let err = plot_runs(std::slice::from_ref(&run), &root, SVG).unwrap_err();
        // 7 lines from write_run, one blank line, then the truncated object on line 9.
        assert!(matches!(err, PlotError::BadLine { line: 9, .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("{}:9:", path.display())), "{msg}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn metrics_line_missing_a_field_is_an_error() {
        let root = temp_dir("missingfield");
        let run = root.join("run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(
            run.join(METRICS_FILE),
            "{\"epoch\": 1, \"split\": \"dev\", \"score\": 1.0}\n",
        )
        .unwrap();
        let err = plot_runs(std::slice::from_ref(&run), &root, SVG).unwrap_err();
        assert!(matches!(err, PlotError::BadLine { line: 1, .. }), "{err:?}");
        assert!(err.to_string().contains("task"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn malformed_grads_line_names_file_and_line() {
        let root = temp_dir("badgrads");
        let run = root.join("run");
        write_run(&run, 1, 0.0, None);
        write_grads(&run, 2, true);
        let path = run.join(GRADS_FILE);
        let mut text = read(&path);
        text.push_str("{\"step\": \"three hundred\"}\n");
        std::fs::write(&path, text).unwrap();
        let err = plot_runs(std::slice::from_ref(&run), &root, SVG).unwrap_err();
        assert!(matches!(err, PlotError::BadLine { line: 3, .. }), "{err:?}");
        assert!(
            err.to_string().contains(&format!("{}:3:", path.display())),
            "{err}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn missing_metrics_names_the_run_dir() {
        let root = temp_dir("nometrics");
        let good = root.join("good");
        write_run(&good, 1, 0.0, None);
        let empty = root.join("empty-run");
        std::fs::create_dir_all(&empty).unwrap();
        let err = plot_runs(&[good, empty.clone()], &root, SVG).unwrap_err();
        assert!(
            matches!(&err, PlotError::MissingMetrics { run } if *run == empty),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("empty-run") && msg.contains("metrics.jsonl"),
            "{msg}"
        );
        assert!(
            !root.join("dev_scores.svg").exists(),
            "nothing is drawn when a run is unreadable"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn invalid_config_is_an_error_naming_the_file() {
        let root = temp_dir("badconfig");
        let run = root.join("run");
        write_run(&run, 1, 0.0, None);
        std::fs::write(run.join(CONFIG_FILE), "model = \n").unwrap();
        let err = plot_runs(std::slice::from_ref(&run), &root, SVG).unwrap_err();
        assert!(matches!(err, PlotError::BadConfig { .. }), "{err:?}");
        assert!(err.to_string().contains("config.toml"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn test_split_lines_are_not_plotted() {
        let root = temp_dir("testsplit");
        let run = root.join("run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(
            run.join(METRICS_FILE),
            "{\"epoch\": 1, \"task\": \"ner\", \"split\": \"test\", \"metric\": \"f1\", \"score\": 50.0}\n",
        )
        .unwrap();
        let report = plot_runs(std::slice::from_ref(&run), &root, SVG).unwrap();
        assert!(report.written.is_empty(), "{report:?}");
        assert_eq!(report.notes.len(), 3, "{report:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn clean_points_sorts_and_keeps_the_last_repeat() {
        let pts = clean_points(vec![(2.0, 5.0), (1.0, 1.0), (2.0, 7.0), (3.0, 0.5)]);
        assert_eq!(pts, vec![(1.0, 1.0), (2.0, 7.0), (3.0, 0.5)]);
    }
}
