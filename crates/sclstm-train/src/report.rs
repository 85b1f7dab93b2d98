//! Reports of finished (and partial) runs against the paper (`sclstm report`).
//!
//! For each run directory: the test scores of the epoch with the best dev average (the
//! epoch `best.safetensors` holds), the epochs trained, the dev average per epoch and the
//! gradient statistics. Runs are grouped into the plan's table rows; each row × task gives
//! the mean ± sample standard deviation over seeds, the best seed, the paper's value and the
//! difference. Multi-task rows are also scored with each task at its own best dev epoch
//! ([`PerTaskLine`], the paper's reading for its LSTM-s and LSTM-d lines). Rows the plan
//! compares get Welch's t-test over seeds; rows with gradient logs
//! get the distribution of the cosine similarity between task gradients on the shared
//! parameters (the paper's "optimisation conflicts", §2.2 and §6.1, measured).
//!
//! Figures: dev average per epoch (Figure 3: mean line and min–max band over seeds, one
//! panel per task combination, the families overlaid) and test score per task group
//! (Figure 4: one panel per task, single-task scores as horizontal lines).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use plotters::style::RGBColor;
use serde::{Deserialize, Serialize};

use crate::claims::{self, Claim};

use crate::config::{Family, TrainConfig};
use crate::figure::{self, Figure, FigureFormat, HLine, Panel, Series, Stroke};
use crate::plan::{Plan, RunSpec, config_differences};
use crate::rundir::{self, CONFIG_FILE, GRADS_FILE, METRICS_FILE};
use crate::sweep::epochs_done;

/// Where a run came from: written beside the logs when a run is committed under `results/`.
pub const PROVENANCE_FILE: &str = "provenance.json";

/// The commit and machine that trained a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Commit of the code that trained it.
    pub commit: String,
    /// CPU model name of the machine.
    pub cpu: String,
    /// Threads it trained with.
    #[serde(default)]
    pub threads: Option<usize>,
    /// How to continue it when it is partial.
    #[serde(default)]
    pub resume: Option<String>,
}

/// The `step` and `cosine` fields of a `grads.jsonl` line (see
/// [`crate::grads::GradsLine`]).
#[derive(Deserialize)]
struct CosineRecord {
    step: u64,
    cosine: BTreeMap<String, Option<f64>>,
}

/// What one run directory holds.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Table row.
    pub row: String,
    /// Run name.
    pub run: String,
    /// Seed.
    pub seed: u64,
    /// The directory.
    pub dir: PathBuf,
    /// Model family (`config.toml` `model`).
    pub family: Family,
    /// Tasks trained together.
    pub tasks: Vec<String>,
    /// Epochs finished.
    pub epochs: usize,
    /// Epochs the configuration asks for.
    pub planned_epochs: usize,
    /// Whether the run is over (all epochs, or stopped by patience).
    pub done: bool,
    /// 1-based epoch of the best dev average.
    pub best_epoch: usize,
    /// Test score per task at the best epoch.
    pub test: BTreeMap<String, f64>,
    /// Dev score per task at the best epoch.
    pub dev: BTreeMap<String, f64>,
    /// Per task: the epoch of that task's own best dev score, and the scores there (the
    /// per-task reading of model selection, [`PerTaskLine`]).
    pub per_task: BTreeMap<String, TaskBest>,
    /// Dev average per finished epoch.
    pub curve: Vec<f64>,
    /// Hours of training (excluding evaluation).
    pub hours: f64,
    /// Cosine similarities of task-gradient pairs on the shared parameters, per pair.
    #[serde(skip)]
    pub cosines: BTreeMap<String, Vec<f64>>,
    /// Commit and CPU, when recorded.
    pub provenance: Option<Provenance>,
}

/// One task's own best dev epoch in a run: the first epoch with that task's highest dev
/// score, and its dev and test scores there.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TaskBest {
    /// 1-based epoch.
    pub epoch: usize,
    /// The task's dev score there.
    pub dev: f64,
    /// The task's test score there.
    pub test: f64,
}

/// Each task's [`TaskBest`] in a run's metrics lines (tasks without a test score at their
/// best dev epoch are left out).
fn task_bests(lines: &[rundir::MetricsLine], tasks: &[String]) -> BTreeMap<String, TaskBest> {
    tasks
        .iter()
        .filter_map(|task| {
            let dev = rundir::scores(lines, task, "dev");
            let epoch = rundir::best_epoch(&dev)?;
            let test = *rundir::scores(lines, task, "test").get(epoch - 1)?;
            let best = TaskBest {
                epoch,
                dev: dev[epoch - 1],
                test,
            };
            (best.dev.is_finite() && test.is_finite()).then(|| (task.clone(), best))
        })
        .collect()
}

/// Reads one run directory. `None` when it holds no finished epoch yet.
pub fn read_run(dir: &Path, row: &str, run: &str, seed: u64) -> anyhow::Result<Option<RunResult>> {
    let metrics_path = dir.join(METRICS_FILE);
    if !metrics_path.is_file() {
        return Ok(None);
    }
    let config = TrainConfig::from_toml_file(&dir.join(CONFIG_FILE))?;
    let lines = rundir::read_metrics(&metrics_path)?;
    let curve = rundir::dev_averages(&lines);
    let Some(best_epoch) = rundir::best_epoch(&curve) else {
        return Ok(None);
    };
    let at_best = |split: &str| -> BTreeMap<String, f64> {
        lines
            .iter()
            .filter(|l| l.epoch == best_epoch && l.split == split && l.task != "average")
            .map(|l| (l.task.clone(), l.score))
            .collect()
    };
    let (test, dev) = (at_best("test"), at_best("dev"));
    if test.len() != config.tasks.len() {
        bail!(
            "{}: epoch {best_epoch} is the best but has test scores for {} of {} tasks",
            metrics_path.display(),
            test.len(),
            config.tasks.len()
        );
    }
    let hours = lines
        .iter()
        .filter(|l| l.task == "average")
        .filter_map(|l| l.elapsed_s)
        .fold(0.0, f64::max)
        / 3600.0;
    let (epochs, done) = epochs_done(dir, &config)?;
    let mut cosines: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let grads_path = dir.join(GRADS_FILE);
    if grads_path.is_file() {
        let text = std::fs::read_to_string(&grads_path)
            .with_context(|| format!("reading {}", grads_path.display()))?;
        let records = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str::<CosineRecord>(l).with_context(|| {
                    format!("{}:{}: not a gradient line", grads_path.display(), i + 1)
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        for g in rundir::last_per_step(records, |g| g.step) {
            for (pair, c) in g.cosine {
                // A non-finite cosine is logged as null and left out.
                if let Some(c) = c.filter(|c| c.is_finite()) {
                    cosines.entry(pair).or_default().push(c);
                }
            }
        }
    }
    let provenance_path = dir.join(PROVENANCE_FILE);
    let provenance = if provenance_path.is_file() {
        let text = std::fs::read_to_string(&provenance_path)
            .with_context(|| format!("reading {}", provenance_path.display()))?;
        Some(
            serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", provenance_path.display()))?,
        )
    } else {
        None
    };
    Ok(Some(RunResult {
        row: row.to_string(),
        run: run.to_string(),
        seed,
        dir: dir.to_path_buf(),
        family: config.model,
        tasks: config.tasks.clone(),
        epochs,
        planned_epochs: config.epochs,
        done,
        best_epoch,
        test,
        dev,
        per_task: task_bests(&lines, &config.tasks),
        curve,
        hours,
        cosines,
        provenance,
    }))
}

/// The results of a plan's run directories under `root` (those with a finished epoch).
/// A directory trained with another configuration than the plan's is refused, naming the
/// key.
pub fn plan_results(specs: &[RunSpec]) -> anyhow::Result<Vec<RunResult>> {
    let mut out = Vec::new();
    for spec in specs {
        let config_path = spec.dir.join(CONFIG_FILE);
        if !config_path.is_file() {
            continue;
        }
        let found = TrainConfig::from_toml_file(&config_path)?;
        let differences = config_differences(&spec.config, &found);
        if !differences.is_empty() {
            bail!(
                "{}: trained with another configuration than plan `{}` asks for ({})",
                spec.dir.display(),
                spec.plan,
                differences.join("; ")
            );
        }
        if let Some(r) = read_run(&spec.dir, &spec.row, &spec.run, spec.seed)? {
            out.push(r);
        }
    }
    Ok(out)
}

/// Results of run directories given by hand. Directories whose configurations differ
/// only in `seed` (and the machine keys `threads`, `backend`) are seeds of one row, named
/// after the model as the paper names its variants plus the tasks
/// (`SC-LSTM-LM-CNN-CRF [ner+chunk+pos]`); rows that would share a name get the keys that
/// tell them apart (`… (hidden = 100)`).
pub fn dir_results(dirs: &[PathBuf]) -> anyhow::Result<Vec<RunResult>> {
    let mut configs = Vec::new();
    for dir in dirs {
        let config = TrainConfig::from_toml_file(&dir.join(CONFIG_FILE))
            .with_context(|| format!("{} is not a run directory", dir.display()))?;
        configs.push(config);
    }
    // The configuration that makes a row: everything but the seed and the machine.
    let row_key = |c: &TrainConfig| -> toml::Table {
        let neutral = TrainConfig {
            seed: 0,
            threads: 0,
            backend: crate::config::BackendKind::Cpu,
            ..c.clone()
        };
        toml::Table::try_from(&neutral).expect("internal: a config serializes to TOML")
    };
    let keys: Vec<toml::Table> = configs.iter().map(row_key).collect();
    let names: Vec<String> = configs
        .iter()
        .map(|c| format!("{} [{}]", model_label(c), c.tasks.join("+")))
        .collect();
    let mut out = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        // Keys on which this row differs from another row of the same name.
        let mut differing: Vec<String> = Vec::new();
        for (j, other) in keys.iter().enumerate() {
            if names[j] != names[i] || other == &keys[i] {
                continue;
            }
            for (k, v) in &keys[i] {
                if other.get(k) != Some(v) && !differing.iter().any(|d| d.starts_with(k.as_str())) {
                    differing.push(format!("{k} = {v}"));
                }
            }
        }
        let row = if differing.is_empty() {
            names[i].clone()
        } else {
            format!("{} ({})", names[i], differing.join(", "))
        };
        match read_run(dir, &row, &row, configs[i].seed)? {
            Some(r) => out.push(r),
            None => bail!("{}: no finished epoch yet", dir.display()),
        }
    }
    Ok(out)
}

/// The paper's name of a trained variant: the family with `-LM` (contextual encoder),
/// `-CNN` (character CNN) and `-CRF` (CRF heads), e.g. `SC-LSTM-LM-CNN-CRF`,
/// `LSTM-CNN-CRF (STL)`.
pub fn model_label(c: &TrainConfig) -> String {
    let mut suffix = String::new();
    for (on, part) in [
        (c.encoder.is_some(), "-LM"),
        (c.char_cnn, "-CNN"),
        (c.crf, "-CRF"),
    ] {
        if on {
            suffix.push_str(part);
        }
    }
    match c.model {
        Family::Stl => format!("LSTM{suffix} (STL)"),
        f => format!("{}{suffix}", family_label(f)),
    }
}

/// The paper's name of a family.
pub fn family_label(f: Family) -> &'static str {
    match f {
        Family::Stl => "LSTM (STL)",
        Family::LstmS => "LSTM-s",
        Family::LstmD => "LSTM-d",
        Family::ScLstm => "SC-LSTM",
    }
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Mean, smallest and largest value of a non-empty sample (a figure's line and band).
fn mean_min_max(xs: &[f64]) -> (f64, f64, f64) {
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (mean_sd(xs).0, lo, hi)
}

/// Two-sided p-value of Welch's t-test (unequal variances) between two samples; `None`
/// with fewer than two values in either, or no variance in both.
pub fn welch_p(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let ((ma, sa), (mb, sb)) = (mean_sd(a), mean_sd(b));
    let (va, vb) = (sa * sa / a.len() as f64, sb * sb / b.len() as f64);
    if va + vb == 0.0 {
        return None;
    }
    let t = (ma - mb) / (va + vb).sqrt();
    let df =
        (va + vb).powi(2) / (va * va / (a.len() as f64 - 1.0) + vb * vb / (b.len() as f64 - 1.0));
    Some(incomplete_beta(df / 2.0, 0.5, df / (df + t * t)))
}

/// ln Γ(x) for x > 0 (Lanczos approximation, g = 7, 9 terms; relative error < 1e-13).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    let t = x + 7.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The regularized incomplete beta function I_x(a, b), by its continued fraction (modified
/// Lentz), using the symmetry I_x(a, b) = 1 − I_{1−x}(b, a) where that converges faster.
fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_fraction(b, a, 1.0 - x) / b
    }
}

fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let clamp = |v: f64| if v.abs() < TINY { TINY } else { v };
    let mut c = 1.0;
    let mut d = 1.0 / clamp(1.0 - (a + b) * x / (a + 1.0));
    let mut h = d;
    for m in 1..=300 {
        let m = f64::from(m);
        let even = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        d = 1.0 / clamp(1.0 + even * d);
        c = clamp(1.0 + even / c);
        h *= d * c;
        let odd = -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
        d = 1.0 / clamp(1.0 + odd * d);
        c = clamp(1.0 + odd / c);
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// One line of the results table: a row of the plan on one task.
#[derive(Debug, Clone, Serialize)]
pub struct TableLine {
    /// Plan row.
    pub row: String,
    /// Task.
    pub task: String,
    /// Test score of each seed at its best dev epoch.
    pub scores: Vec<f64>,
    /// Seeds, in the order of `scores`.
    pub seeds: Vec<u64>,
    /// Mean over seeds.
    pub mean: f64,
    /// Sample standard deviation over seeds (0 for one seed).
    pub sd: f64,
    /// The best seed and its score.
    pub best: (u64, f64),
    /// Epochs each seed trained.
    pub epochs: Vec<usize>,
    /// Each seed's epoch with the best dev average (the one scored).
    pub best_epochs: Vec<usize>,
    /// Epochs the plan asks for.
    pub planned_epochs: usize,
    /// Whether some seed is still partial.
    pub partial: bool,
    /// The paper's value and where it is from.
    pub paper: Option<(f64, String)>,
}

/// A multi-task row's task with each seed's test score taken at that task's own best dev
/// epoch ([`TaskBest`]) instead of the one epoch with the best dev average: the reading
/// behind the paper's LSTM-s and LSTM-d lines of Table 3 ("the best performance we could
/// obtain for each task", §5.1).
#[derive(Debug, Clone, Serialize)]
pub struct PerTaskLine {
    /// Plan row.
    pub row: String,
    /// Task.
    pub task: String,
    /// Test score of each seed at the task's best dev epoch.
    pub scores: Vec<f64>,
    /// Seeds, in the order of `scores`.
    pub seeds: Vec<u64>,
    /// The epoch chosen for each seed.
    pub epochs: Vec<usize>,
    /// Mean over seeds.
    pub mean: f64,
    /// Sample standard deviation over seeds (0 for one seed).
    pub sd: f64,
    /// The row's mean with one epoch for all tasks (the [`TableLine`]'s).
    pub one_epoch: f64,
    /// The paper's value and where it is from.
    pub paper: Option<(f64, String)>,
}

/// A significance test between two rows on one task.
#[derive(Debug, Clone, Serialize)]
pub struct ComparisonLine {
    /// Task.
    pub task: String,
    /// The row under test.
    pub row: String,
    /// The other row.
    pub against: String,
    /// Mean difference `row − against`.
    pub difference: f64,
    /// Seeds on each side.
    pub n: (usize, usize),
    /// Welch's two-sided p-value, when both sides have two seeds or more.
    pub p: Option<f64>,
}

/// Distribution of the cosine between two tasks' gradients on the shared parameters.
#[derive(Debug, Clone, Serialize)]
pub struct ConflictLine {
    /// Plan row.
    pub row: String,
    /// `a/b`.
    pub pair: String,
    /// Measurements (all seeds).
    pub n: usize,
    /// Mean cosine.
    pub mean: f64,
    /// 10th percentile, median and 90th percentile.
    pub quantiles: (f64, f64, f64),
    /// Share of measurements below zero (conflicting directions).
    pub negative: f64,
}

/// Everything `sclstm report` prints for one plan (or set of run directories).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The plan's name (or `runs`).
    pub name: String,
    /// The plan's title.
    pub title: String,
    /// Each run directory read.
    pub runs: Vec<RunResult>,
    /// Row × task lines.
    pub table: Vec<TableLine>,
    /// The multi-task rows' lines with each task selected at its own best dev epoch.
    pub per_task: Vec<PerTaskLine>,
    /// Significance tests.
    pub comparisons: Vec<ComparisonLine>,
    /// Gradient-conflict distributions.
    pub conflicts: Vec<ConflictLine>,
    /// Seeds the plan asks for per run.
    pub seeds: usize,
    /// The paper's claims and their verdicts on these runs.
    pub claims: Vec<Claim>,
}

/// Builds a report from results, with the plan's rows, paper values and comparisons when
/// there is a plan.
pub fn build(plan: Option<&Plan>, mut runs: Vec<RunResult>) -> Report {
    runs.sort_by_key(|r| {
        let order = plan
            .map(|p| {
                p.runs
                    .iter()
                    .position(|x| x.name == r.run)
                    .unwrap_or(usize::MAX)
            })
            .unwrap_or(0);
        (order, r.run.clone(), r.seed)
    });
    let rows: Vec<String> = match plan {
        Some(p) => p.rows(),
        None => {
            let mut rows: Vec<String> = Vec::new();
            for r in &runs {
                if !rows.contains(&r.row) {
                    rows.push(r.row.clone());
                }
            }
            rows
        }
    };
    let mut table = Vec::new();
    for row in &rows {
        let mine: Vec<&RunResult> = runs.iter().filter(|r| &r.row == row).collect();
        let mut tasks: Vec<String> = Vec::new();
        for r in &mine {
            for t in &r.tasks {
                if !tasks.contains(t) {
                    tasks.push(t.clone());
                }
            }
        }
        for task in task_sort(tasks) {
            let with: Vec<&&RunResult> =
                mine.iter().filter(|r| r.test.contains_key(&task)).collect();
            let scores: Vec<f64> = with.iter().map(|r| r.test[&task]).collect();
            let seeds: Vec<u64> = with.iter().map(|r| r.seed).collect();
            let (mean, sd) = mean_sd(&scores);
            let best = with
                .iter()
                .map(|r| (r.seed, r.test[&task]))
                .fold((0, f64::NEG_INFINITY), |b, x| if x.1 > b.1 { x } else { b });
            let paper = plan.and_then(|p| {
                p.runs
                    .iter()
                    .filter(|x| x.row() == row)
                    .filter_map(|x| x.paper.as_ref())
                    .find_map(|pv| pv.scores.get(&task).map(|v| (*v, pv.source.clone())))
            });
            table.push(TableLine {
                row: row.clone(),
                task,
                mean,
                sd,
                best,
                epochs: with.iter().map(|r| r.epochs).collect(),
                best_epochs: with.iter().map(|r| r.best_epoch).collect(),
                planned_epochs: with.iter().map(|r| r.planned_epochs).max().unwrap_or(0),
                partial: with.iter().any(|r| !r.done),
                scores,
                seeds,
                paper,
            });
        }
    }
    let per_task = per_task_lines(&runs, &table);
    let mut comparisons = Vec::new();
    for c in plan.map(|p| p.compare.as_slice()).unwrap_or(&[]) {
        for other in &c.against {
            for line in table.iter().filter(|l| l.row == c.row) {
                if let Some(o) = table
                    .iter()
                    .find(|l| &l.row == other && l.task == line.task)
                {
                    comparisons.push(ComparisonLine {
                        task: line.task.clone(),
                        row: c.row.clone(),
                        against: other.clone(),
                        difference: line.mean - o.mean,
                        n: (line.scores.len(), o.scores.len()),
                        p: welch_p(&line.scores, &o.scores),
                    });
                }
            }
        }
    }
    let mut conflicts = Vec::new();
    for row in &rows {
        let mut pairs: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for r in runs.iter().filter(|r| &r.row == row) {
            for (pair, v) in &r.cosines {
                pairs.entry(pair.clone()).or_default().extend(v);
            }
        }
        for (pair, mut v) in pairs {
            v.sort_by(f64::total_cmp);
            let q = |f: f64| v[((v.len() - 1) as f64 * f).round() as usize];
            conflicts.push(ConflictLine {
                row: row.clone(),
                pair,
                n: v.len(),
                mean: v.iter().sum::<f64>() / v.len() as f64,
                quantiles: (q(0.1), q(0.5), q(0.9)),
                negative: v.iter().filter(|x| **x < 0.0).count() as f64 / v.len() as f64,
            });
        }
    }
    let mut report = Report {
        name: plan.map_or("runs".into(), |p| p.name.clone()),
        title: plan.map_or("Run directories".into(), |p| p.title.clone()),
        runs,
        table,
        per_task,
        comparisons,
        conflicts,
        seeds: plan.map_or(1, |p| p.seeds),
        claims: Vec::new(),
    };
    let compared: Vec<(String, String)> = plan
        .map(|p| {
            p.compare
                .iter()
                .flat_map(|c| c.against.iter().map(|a| (c.row.clone(), a.clone())))
                .collect()
        })
        .unwrap_or_default();
    report.claims = claims::claims(&report, &compared);
    report
}

/// [`PerTaskLine`]s for the table's lines whose runs trained several tasks together.
fn per_task_lines(runs: &[RunResult], table: &[TableLine]) -> Vec<PerTaskLine> {
    table
        .iter()
        .filter_map(|l| {
            let with: Vec<(u64, TaskBest)> = runs
                .iter()
                .filter(|r| r.row == l.row && r.tasks.len() > 1)
                .filter_map(|r| Some((r.seed, *r.per_task.get(&l.task)?)))
                .collect();
            if with.is_empty() {
                return None;
            }
            let scores: Vec<f64> = with.iter().map(|(_, b)| b.test).collect();
            let (mean, sd) = mean_sd(&scores);
            Some(PerTaskLine {
                row: l.row.clone(),
                task: l.task.clone(),
                seeds: with.iter().map(|(seed, _)| *seed).collect(),
                epochs: with.iter().map(|(_, b)| b.epoch).collect(),
                scores,
                mean,
                sd,
                one_epoch: l.mean,
                paper: l.paper.clone(),
            })
        })
        .collect()
}

/// A mean with its sample standard deviation when there are several seeds.
fn mean_cell(mean: f64, sd: f64, n: usize) -> String {
    if n > 1 {
        format!("{mean:.2} ± {sd:.2}")
    } else {
        format!("{mean:.2}")
    }
}

/// NER, chunk, POS first (the paper's order in the text), then any other task by name.
fn task_sort(mut tasks: Vec<String>) -> Vec<String> {
    let rank = |t: &str| {
        ["ner", "chunk", "pos"]
            .iter()
            .position(|x| *x == t)
            .unwrap_or(3)
    };
    tasks.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    tasks
}

fn epochs_cell(l: &TableLine) -> String {
    let lo = l.epochs.iter().min().copied().unwrap_or(0);
    let hi = l.epochs.iter().max().copied().unwrap_or(0);
    let span = if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}–{hi}")
    };
    if l.partial {
        format!("{span} of {} (partial)", l.planned_epochs)
    } else {
        span
    }
}

fn p_cell(p: Option<f64>) -> String {
    match p {
        None => "n/a (needs 2 seeds each)".into(),
        Some(p) if p < 0.001 => "< 0.001".into(),
        Some(p) => format!("{p:.3}"),
    }
}

impl Report {
    /// The report as Markdown: results table, comparisons, gradient conflicts and runs.
    pub fn markdown(&self, heading: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{heading} {}\n", self.title);
        if self.table.is_empty() {
            let _ = writeln!(s, "No run of this plan has finished an epoch yet.\n");
            return s;
        }
        let _ = writeln!(
            s,
            "Test score (F1 for NER and chunking, accuracy for POS) at the epoch with the best dev average, \
             mean ± sample standard deviation over seeds.\n"
        );
        let _ = writeln!(
            s,
            "| model | task | ours | seeds | best seed | epochs | paper | Δ | paper source |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
        for l in &self.table {
            let ours = mean_cell(l.mean, l.sd, l.scores.len());
            let (paper, delta, source) = match &l.paper {
                Some((v, src)) => (
                    format!("{v:.2}"),
                    format!("{:+.2}", l.mean - v),
                    src.clone(),
                ),
                None => ("–".into(), "–".into(), "–".into()),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {ours} | {} of {} | {:.2} (seed {}) | {} | {paper} | {delta} | {source} |",
                l.row,
                l.task,
                l.scores.len(),
                self.seeds,
                l.best.1,
                l.best.0,
                epochs_cell(l),
            );
        }
        if !self.per_task.is_empty() {
            let _ = writeln!(
                s,
                "\nThe multi-task rows again, each task's test score taken at that task's own best dev epoch \
                 instead of one epoch for all tasks. The paper reports its LSTM-s and LSTM-d lines this way \
                 (\"the best performance we could obtain for each task\", §5.1, from one run per main task; \
                 ours come from the one joint run); a deployed multi-task model is one epoch, as above.\n"
            );
            let _ = writeln!(
                s,
                "| model | task | ours, per task | best dev epoch | Δ vs one epoch | paper | Δ |"
            );
            let _ = writeln!(s, "|---|---|---|---|---|---|---|");
            for l in &self.per_task {
                let epochs: Vec<String> = l.epochs.iter().map(usize::to_string).collect();
                let (paper, delta) = match &l.paper {
                    Some((v, _)) => (format!("{v:.2}"), format!("{:+.2}", l.mean - v)),
                    None => ("–".into(), "–".into()),
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {:+.2} | {paper} | {delta} |",
                    l.row,
                    l.task,
                    mean_cell(l.mean, l.sd, l.scores.len()),
                    epochs.join(", "),
                    l.mean - l.one_epoch,
                );
            }
        }
        if !self.comparisons.is_empty() {
            let _ = writeln!(
                s,
                "\nDifferences of means and Welch's t-test over seeds (two-sided):\n"
            );
            let _ = writeln!(s, "| task | model | vs | Δ mean | seeds | p |");
            let _ = writeln!(s, "|---|---|---|---|---|---|");
            for c in &self.comparisons {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:+.2} | {} vs {} | {} |",
                    c.task,
                    c.row,
                    c.against,
                    c.difference,
                    c.n.0,
                    c.n.1,
                    p_cell(c.p)
                );
            }
        }
        s.push_str(&claims::markdown(&self.claims));
        if !self.conflicts.is_empty() {
            let _ = writeln!(
                s,
                "\nCosine similarity of two tasks' gradients on the shared parameters (fixed probe batches, \
                 every logged step, all seeds): below zero the tasks pull the shared layers apart.\n"
            );
            let _ = writeln!(
                s,
                "| model | tasks | measurements | mean | 10% | median | 90% | share < 0 |"
            );
            let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
            for c in &self.conflicts {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0}% |",
                    c.row,
                    c.pair,
                    c.n,
                    c.mean,
                    c.quantiles.0,
                    c.quantiles.1,
                    c.quantiles.2,
                    100.0 * c.negative
                );
            }
        }
        let _ = writeln!(s, "\nRuns:\n");
        let _ = writeln!(
            s,
            "| run | seed | epochs | best epoch | dev average there | training hours | state | commit | CPU |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
        for r in &self.runs {
            let (commit, cpu) = match &r.provenance {
                Some(p) => (format!("`{}`", p.commit), p.cpu.clone()),
                None => ("–".into(), "–".into()),
            };
            let state = if r.done { "done" } else { "partial" };
            let _ = writeln!(
                s,
                "| {} | {} | {} of {} | {} | {:.2} | {:.1} | {state} | {commit} | {cpu} |",
                r.run,
                r.seed,
                r.epochs,
                r.planned_epochs,
                r.best_epoch,
                r.curve[r.best_epoch - 1],
                r.hours,
            );
        }
        s
    }

    /// The results as CSV, one line per row × task × seed × selection: `dev-average` (the
    /// table's one epoch for all tasks) or `per-task` (each task at its own best dev epoch,
    /// multi-task rows only); `epoch` is the epoch scored.
    pub fn csv(&self) -> String {
        let mut s = String::from(
            "model,task,seed,selection,epoch,test,epochs,planned_epochs,partial,paper,paper_source\n",
        );
        let mut line = |l: &TableLine, selection: &str, i: usize, epoch: usize, score: f64| {
            let (paper, src) = match &l.paper {
                Some((v, src)) => (format!("{v}"), src.replace('"', "\"\"")),
                None => (String::new(), String::new()),
            };
            let _ = writeln!(
                s,
                "\"{}\",{},{},{selection},{epoch},{score},{},{},{},{paper},\"{src}\"",
                l.row.replace('"', "\"\""),
                l.task,
                l.seeds[i],
                l.epochs[i],
                l.planned_epochs,
                l.partial
            );
        };
        for l in &self.table {
            for (i, score) in l.scores.iter().enumerate() {
                line(l, "dev-average", i, l.best_epochs[i], *score);
            }
            let per_task = self
                .per_task
                .iter()
                .find(|p| p.row == l.row && p.task == l.task);
            if let Some(p) = per_task {
                for (seed, (epoch, score)) in p.seeds.iter().zip(p.epochs.iter().zip(&p.scores)) {
                    if let Some(i) = l.seeds.iter().position(|x| x == seed) {
                        line(l, "per-task", i, *epoch, *score);
                    }
                }
            }
        }
        s
    }

    /// Draws the report's figures into `dir` in each of `formats`: `<name>-dev-curves`
    /// (Figure 3 style) and, when some task was trained in two or more task groups,
    /// `<name>-task-groups` (Figure 4 style). Returns the files written.
    pub fn figures(
        &self,
        plan: Option<&Plan>,
        dir: &Path,
        formats: &[FigureFormat],
    ) -> anyhow::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut written = Vec::new();
        for (suffix, panels) in [
            ("dev-curves", self.curve_panels()),
            ("task-groups", self.group_panels(plan)),
        ] {
            if !panels.is_empty() {
                let stem = dir.join(format!("{}-{suffix}", self.name));
                let figure = Figure::legend_from_series(panels);
                written.extend(figure::render(&stem, &figure, formats)?);
            }
        }
        Ok(written)
    }

    /// Figure 3: one panel per multi-task combination, one series per row (mean over seeds
    /// per epoch, min–max band), strokes as in the paper.
    fn curve_panels(&self) -> Vec<Panel> {
        let mut combos: Vec<Vec<String>> = Vec::new();
        for r in self.runs.iter().filter(|r| r.tasks.len() > 1) {
            if !combos.contains(&r.tasks) {
                combos.push(r.tasks.clone());
            }
        }
        combos
            .into_iter()
            .map(|tasks| {
                let mut rows: Vec<(String, Family)> = Vec::new();
                for r in self.runs.iter().filter(|r| r.tasks == tasks) {
                    if !rows.iter().any(|(x, _)| x == &r.row) {
                        rows.push((r.row.clone(), r.family));
                    }
                }
                let series = rows
                    .into_iter()
                    .map(|(row, family)| {
                        let curves: Vec<&Vec<f64>> = self
                            .runs
                            .iter()
                            .filter(|r| r.tasks == tasks && r.row == row)
                            .map(|r| &r.curve)
                            .collect();
                        let longest = curves.iter().map(|c| c.len()).max().unwrap_or(0);
                        let mut points = Vec::new();
                        let mut band = Vec::new();
                        for e in 0..longest {
                            let at: Vec<f64> =
                                curves.iter().filter_map(|c| c.get(e)).copied().collect();
                            let x = (e + 1) as f64;
                            let (mean, lo, hi) = mean_min_max(&at);
                            points.push((x, mean));
                            band.push((x, lo, hi));
                        }
                        let n = curves.len();
                        let (color, stroke) = family_style(family);
                        let label = format!("{row} ({n} seed{})", if n == 1 { "" } else { "s" });
                        Series {
                            stroke,
                            band: if n > 1 { band } else { Vec::new() },
                            dots: true,
                            ..Series::line(label, color, points)
                        }
                    })
                    .collect();
                Panel {
                    integer_x: true,
                    ..Panel::lines(
                        format!("dev average: {}", tasks.join(" + ")),
                        "epoch",
                        "dev score (%)".into(),
                        series,
                    )
                }
            })
            .collect()
    }

    /// Figure 4: per task, the test score of every task group that contains it, per family
    /// (mean with a min–max whisker over seeds); single-task scores as horizontal lines
    /// (ours solid, the paper's dashed).
    fn group_panels(&self, plan: Option<&Plan>) -> Vec<Panel> {
        let mut panels = Vec::new();
        let tasks = task_sort(self.runs.iter().flat_map(|r| r.tasks.iter().cloned()).fold(
            Vec::new(),
            |mut v, t| {
                if !v.contains(&t) {
                    v.push(t);
                }
                v
            },
        ));
        for task in tasks {
            let mut groups: Vec<Vec<String>> = Vec::new();
            for r in self
                .runs
                .iter()
                .filter(|r| r.tasks.len() > 1 && r.tasks.contains(&task))
            {
                let g = task_sort(r.tasks.clone());
                if !groups.contains(&g) {
                    groups.push(g);
                }
            }
            if groups.len() < 2 {
                continue;
            }
            groups.sort_by_key(|g| (g.len(), g.clone()));
            let families = [Family::LstmS, Family::LstmD, Family::ScLstm];
            let width = 0.22;
            let mut series = Vec::new();
            for (fi, family) in families.iter().enumerate() {
                let mut points = Vec::new();
                let mut band = Vec::new();
                for (gi, g) in groups.iter().enumerate() {
                    let at: Vec<f64> = self
                        .runs
                        .iter()
                        .filter(|r| r.family == *family && task_sort(r.tasks.clone()) == *g)
                        .filter_map(|r| r.test.get(&task).copied())
                        .collect();
                    if at.is_empty() {
                        continue;
                    }
                    let x = (gi + 1) as f64 + (fi as f64 - 1.0) * width;
                    let (mean, lo, hi) = mean_min_max(&at);
                    points.push((x, mean));
                    band.push((x, lo, hi));
                }
                if !points.is_empty() {
                    series.push(Series {
                        stroke: Stroke::Markers,
                        band,
                        ..Series::line(
                            family_label(*family).into(),
                            family_style(*family).0,
                            points,
                        )
                    });
                }
            }
            let mut hlines = Vec::new();
            let stl: Vec<f64> = self
                .runs
                .iter()
                .filter(|r| r.family == Family::Stl && r.tasks == [task.clone()])
                .filter_map(|r| r.test.get(&task).copied())
                .collect();
            if !stl.is_empty() {
                hlines.push(HLine {
                    y: stl.iter().sum::<f64>() / stl.len() as f64,
                    label: "STL (ours)".into(),
                    color: RGBColor(90, 90, 90),
                    dashed: false,
                });
            }
            if let Some(v) = plan
                .and_then(|p| p.reference.as_ref())
                .and_then(|r| r.scores.get(&task))
            {
                hlines.push(HLine {
                    y: *v,
                    label: "STL (paper)".into(),
                    color: RGBColor(90, 90, 90),
                    dashed: true,
                });
            }
            panels.push(Panel {
                hlines,
                categories: Some(groups.iter().map(|g| g.join("+")).collect()),
                ..Panel::lines(
                    format!("{task}: test"),
                    "task group",
                    "test score (%)".into(),
                    series,
                )
            });
        }
        panels
    }
}

/// The paper's Figure 3 styles: SC-LSTM red solid, LSTM-s blue dotted, LSTM-d green dashed.
fn family_style(f: Family) -> (RGBColor, Stroke) {
    match f {
        Family::ScLstm => (RGBColor(214, 39, 40), Stroke::Solid),
        Family::LstmS => (RGBColor(31, 119, 180), Stroke::Dotted),
        Family::LstmD => (RGBColor(44, 160, 44), Stroke::Dashed),
        Family::Stl => (RGBColor(90, 90, 90), Stroke::Solid),
    }
}

/// Marker lines around the generated README section.
pub const README_BEGIN: &str =
    "<!-- results:begin (generated by `sclstm report --readme`; do not edit) -->";
/// End marker of the generated README section.
pub const README_END: &str = "<!-- results:end -->";

/// The README section "Results against the paper" for `plans` read from `root`, with links
/// to the figures in `figures` (a path relative to the README).
pub fn readme_section(plans: &[(Plan, Vec<RunResult>)], figures: &Path) -> String {
    let mut s = String::new();
    for (plan, runs) in plans {
        let report = build(Some(plan), runs.clone());
        s.push_str(&report.markdown("###"));
        for suffix in ["dev-curves", "task-groups"] {
            let has = match suffix {
                "dev-curves" => !report.curve_panels().is_empty(),
                _ => !report.group_panels(Some(plan)).is_empty(),
            };
            if has {
                let _ = writeln!(
                    s,
                    "\n![{} {suffix}]({}/{}-{suffix}.svg)",
                    plan.name,
                    figures.display(),
                    plan.name
                );
            }
        }
        s.push('\n');
    }
    s
}

/// Replaces the text between [`README_BEGIN`] and [`README_END`] in `readme` with
/// `section`.
pub fn splice_readme(readme: &str, section: &str) -> anyhow::Result<String> {
    let (Some(a), Some(b)) = (readme.find(README_BEGIN), readme.find(README_END)) else {
        bail!("the README has no `{README_BEGIN}` … `{README_END}` markers");
    };
    if b < a {
        bail!("the README's results markers are in the wrong order");
    }
    Ok(format!(
        "{}{README_BEGIN}\n{section}{}",
        &readme[..a],
        &readme[b..]
    ))
}

/// The generated section currently in `readme` (between the markers).
pub fn readme_current(readme: &str) -> Option<&str> {
    let a = readme.find(README_BEGIN)? + README_BEGIN.len() + 1;
    let b = readme.find(README_END)?;
    readme.get(a..b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welch_p_values_match_scipy() {
        let text = include_str!("../tests/fixtures/welch.json");
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        let cases = v["cases"].as_array().unwrap();
        assert!(cases.len() >= 10);
        for c in cases {
            let get = |k: &str| -> Vec<f64> {
                c[k].as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect()
            };
            let (a, b) = (get("a"), get("b"));
            let want = c["p"].as_f64().unwrap();
            let got = welch_p(&a, &b).unwrap();
            assert!(
                (got - want).abs() <= 1e-9 * want.max(1e-3),
                "{a:?} vs {b:?}: {got} (scipy {want})"
            );
        }
        assert_eq!(welch_p(&[1.0], &[2.0, 3.0]), None, "one seed: no test");
        assert_eq!(
            welch_p(&[1.0, 1.0], &[1.0, 1.0]),
            None,
            "no variance: no test"
        );
    }

    #[test]
    fn mean_and_sample_sd() {
        assert_eq!(mean_sd(&[5.0]), (5.0, 0.0));
        let (m, s) = mean_sd(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m, 2.5);
        assert!(
            (s - (5.0f64 / 3.0).sqrt()).abs() < 1e-12,
            "n − 1 in the denominator"
        );
    }

    fn result(
        row: &str,
        run: &str,
        seed: u64,
        family: Family,
        tasks: &[&str],
        test: &[f64],
    ) -> RunResult {
        RunResult {
            row: row.into(),
            run: run.into(),
            seed,
            dir: PathBuf::from(format!("{run}/seed-{seed}")),
            family,
            tasks: tasks.iter().map(|t| t.to_string()).collect(),
            epochs: 3,
            planned_epochs: if seed == 2 { 5 } else { 3 },
            done: seed != 2,
            best_epoch: 2,
            test: tasks
                .iter()
                .zip(test)
                .map(|(t, v)| (t.to_string(), *v))
                .collect(),
            dev: BTreeMap::new(),
            per_task: BTreeMap::new(),
            curve: vec![50.0, 60.0 + seed as f64, 55.0],
            hours: 0.5,
            cosines: BTreeMap::from([("ner/pos".to_string(), vec![-0.5, 0.1, 0.2, 0.3])]),
            provenance: None,
        }
    }

    const PLAN: &str = r#"
name = "p"
title = "a plan"
seeds = 2
[[run]]
name = "stl-ner"
row = "STL"
config = { model = "stl", tasks = ["ner"] }
paper = { source = "T3 l1", ner = 80.0 }
[[run]]
name = "sc"
row = "SC-LSTM"
config = { model = "sc-lstm", tasks = ["ner", "pos"] }
paper = { source = "T3 l4", ner = 82.0, pos = 90.0 }
[[compare]]
row = "SC-LSTM"
against = ["STL"]
"#;

    #[test]
    fn rows_aggregate_seeds_against_the_paper_with_a_welch_test() {
        let plan: Plan = toml::from_str(PLAN).unwrap();
        let runs = vec![
            result(
                "SC-LSTM",
                "sc",
                2,
                Family::ScLstm,
                &["ner", "pos"],
                &[83.0, 91.0],
            ),
            result("STL", "stl-ner", 1, Family::Stl, &["ner"], &[79.0]),
            result(
                "SC-LSTM",
                "sc",
                1,
                Family::ScLstm,
                &["ner", "pos"],
                &[81.0, 92.0],
            ),
            result("STL", "stl-ner", 2, Family::Stl, &["ner"], &[80.0]),
        ];
        let r = build(Some(&plan), runs);
        let keys: Vec<(&str, &str)> = r
            .table
            .iter()
            .map(|l| (l.row.as_str(), l.task.as_str()))
            .collect();
        assert_eq!(
            keys,
            [("STL", "ner"), ("SC-LSTM", "ner"), ("SC-LSTM", "pos")]
        );
        let sc_ner = &r.table[1];
        assert_eq!((sc_ner.mean, sc_ner.seeds.clone()), (82.0, vec![1, 2]));
        assert_eq!(sc_ner.best, (2, 83.0));
        assert!(sc_ner.partial, "seed 2 is partial");
        assert_eq!(sc_ner.paper, Some((82.0, "T3 l4".to_string())));
        assert_eq!(r.comparisons.len(), 1, "only the shared task is compared");
        let c = &r.comparisons[0];
        assert_eq!((c.task.as_str(), c.difference, c.n), ("ner", 2.5, (2, 2)));
        assert_eq!(c.p, welch_p(&[81.0, 83.0], &[79.0, 80.0]));
        let conflict = r.conflicts.iter().find(|x| x.row == "SC-LSTM").unwrap();
        assert_eq!((conflict.n, conflict.negative), (8, 0.25));
        let md = r.markdown("##");
        assert!(md.contains("| SC-LSTM | ner | 82.00 ± 1.41 | 2 of 2 | 83.00 (seed 2) | 3 of 5 (partial) | 82.00 | +0.00 | T3 l4 |"), "{md}");
        assert!(
            md.contains("| ner | SC-LSTM | STL | +2.50 | 2 vs 2 |"),
            "{md}"
        );
        let csv = r.csv();
        assert_eq!(csv.lines().count(), 1 + 2 + 2 + 2);
        assert!(
            r.per_task.is_empty(),
            "these results carry no per-task epochs"
        );
        // Figures: the SC-LSTM curve panel (two seeds, band) and no task-group panel (one group).
        let curves = r.curve_panels();
        assert_eq!(curves.len(), 1);
        assert_eq!(curves[0].series[0].points[1], (2.0, 61.5));
        assert_eq!(curves[0].series[0].band[1], (2.0, 61.0, 62.0));
        assert!(r.group_panels(Some(&plan)).is_empty());
    }

    #[test]
    fn task_group_panels_put_single_task_scores_as_lines() {
        let mut plan: Plan = toml::from_str(PLAN).unwrap();
        plan.reference = Some(crate::plan::PaperValues {
            source: "fig 4".into(),
            scores: BTreeMap::from([("ner".into(), 89.39)]),
        });
        let runs = vec![
            result(
                "SC-LSTM",
                "sc",
                1,
                Family::ScLstm,
                &["ner", "pos"],
                &[81.0, 92.0],
            ),
            result(
                "SC-LSTM nc",
                "sc-nc",
                1,
                Family::ScLstm,
                &["ner", "chunk"],
                &[84.0, 93.0],
            ),
            result(
                "LSTM-s nc",
                "s-nc",
                1,
                Family::LstmS,
                &["ner", "chunk"],
                &[82.0, 93.0],
            ),
            result("STL", "stl-ner", 1, Family::Stl, &["ner"], &[79.0]),
        ];
        let r = build(Some(&plan), runs);
        let panels = r.group_panels(Some(&plan));
        assert_eq!(panels.len(), 1, "only NER is in two groups");
        let p = &panels[0];
        assert_eq!(
            p.categories.as_deref(),
            Some(&["ner+chunk".to_string(), "ner+pos".to_string()][..])
        );
        assert_eq!(p.hlines.len(), 2);
        assert_eq!((p.hlines[0].y, p.hlines[1].y), (79.0, 89.39));
        let labels: Vec<&str> = p.series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["LSTM-s", "SC-LSTM"]);
        assert_eq!(p.series[1].points.len(), 2, "SC-LSTM in both groups");
        let dir = std::env::temp_dir().join(format!("sclstm-report-fig-{}", std::process::id()));
        let written = r
            .figures(Some(&plan), &dir, &[FigureFormat::Svg, FigureFormat::Png])
            .unwrap();
        assert_eq!(written.len(), 4);
        assert!(written[3].ends_with("p-task-groups.png"), "{written:?}");
        let png = resvg::tiny_skia::Pixmap::load_png(&written[3]).unwrap();
        assert_eq!(png.width(), figure::WIDTH);
        let svg = std::fs::read_to_string(&written[2]).unwrap();
        assert!(
            svg.contains("STL (paper)") && svg.contains("ner+pos"),
            "{svg}"
        );
    }

    #[test]
    fn readme_splice_replaces_only_the_marked_section() {
        let readme = format!("# T\nintro\n{README_BEGIN}\nold\n{README_END}\ntail\n");
        let new = splice_readme(&readme, "new table\n").unwrap();
        assert_eq!(
            new,
            format!("# T\nintro\n{README_BEGIN}\nnew table\n{README_END}\ntail\n")
        );
        assert_eq!(readme_current(&new), Some("new table\n"));
        assert!(splice_readme("no markers", "x").is_err());
    }

    /// A copy of a committed run's logs in `dir`, with `config.toml` edited by `edit`.
    fn copy_run(from: &str, dir: &Path, edit: impl Fn(String) -> String) {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../results/quick")
            .join(from);
        std::fs::create_dir_all(dir).unwrap();
        for f in ["metrics.jsonl", "config.toml"] {
            let text = std::fs::read_to_string(src.join(f)).unwrap();
            let text = if f == "config.toml" { edit(text) } else { text };
            std::fs::write(dir.join(f), text).unwrap();
        }
    }

    #[test]
    fn run_directories_are_seeds_of_one_row_only_when_their_configs_agree() {
        let tmp = std::env::temp_dir().join(format!("sclstm-dir-rows-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let plain = "sc-lstm-cnn-crf/seed-1";
        let dirs: Vec<PathBuf> = ["a", "b", "lm", "small"]
            .iter()
            .map(|d| tmp.join(d))
            .collect();
        copy_run(plain, &dirs[0], |t| t);
        copy_run(plain, &dirs[1], |t| {
            t.replace("seed = 1", "seed = 2")
                .replace("threads = 1", "threads = 2")
        });
        copy_run("sc-lstm-lm-cnn-crf/seed-1", &dirs[2], |t| t);
        copy_run(plain, &dirs[3], |t| {
            t.replace("hidden = 300", "hidden = 100")
        });
        let r = build(None, dir_results(&dirs).unwrap());
        let rows: Vec<(&str, usize)> = r
            .table
            .iter()
            .filter(|l| l.task == "ner")
            .map(|l| (l.row.as_str(), l.scores.len()))
            .collect();
        assert_eq!(
            rows,
            [
                ("SC-LSTM-CNN-CRF [ner+chunk+pos] (hidden = 100)", 1),
                ("SC-LSTM-CNN-CRF [ner+chunk+pos] (hidden = 300)", 2),
                ("SC-LSTM-LM-CNN-CRF [ner+chunk+pos]", 1),
            ]
        );
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn each_task_can_be_scored_at_its_own_best_dev_epoch() {
        let tmp = std::env::temp_dir().join(format!("sclstm-per-task-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        copy_run("sc-lstm-cnn-crf/seed-1", &tmp, |t| t);
        // (task, dev per epoch, test per epoch): NER peaks on dev at epoch 2, chunking at
        // 3, POS ties at 2 and 3 (the first counts); the dev average peaks at epoch 3.
        let scores = [
            ("ner", [80.0, 85.0, 84.0], [70.0, 75.0, 79.0]),
            ("chunk", [90.0, 89.0, 91.0], [88.0, 87.0, 90.0]),
            ("pos", [95.0, 96.0, 96.0], [94.0, 95.0, 97.0]),
        ];
        let mut metrics = String::new();
        for e in 0..3 {
            let mut sum = 0.0;
            for (task, dev, test) in &scores {
                sum += dev[e];
                for (split, v) in [("dev", dev[e]), ("test", test[e])] {
                    let _ = writeln!(
                        metrics,
                        r#"{{"epoch":{},"task":"{task}","split":"{split}","score":{v}}}"#,
                        e + 1
                    );
                }
            }
            let _ = writeln!(
                metrics,
                r#"{{"epoch":{},"task":"average","split":"dev","score":{}}}"#,
                e + 1,
                sum / 3.0
            );
        }
        std::fs::write(tmp.join("metrics.jsonl"), metrics).unwrap();
        let run = read_run(&tmp, "SC", "sc", 1).unwrap().unwrap();
        assert_eq!(run.best_epoch, 3);
        let bests: Vec<(&str, usize, f64, f64)> = ["ner", "chunk", "pos"]
            .iter()
            .map(|t| {
                let b = run.per_task[*t];
                (*t, b.epoch, b.dev, b.test)
            })
            .collect();
        assert_eq!(
            bests,
            [
                ("ner", 2, 85.0, 75.0),
                ("chunk", 3, 91.0, 90.0),
                ("pos", 2, 96.0, 95.0)
            ]
        );
        let r = build(None, vec![run]);
        let ner = r.per_task.iter().find(|l| l.task == "ner").unwrap();
        assert_eq!(
            (ner.mean, ner.one_epoch, ner.epochs.clone()),
            (75.0, 79.0, vec![2])
        );
        let md = r.markdown("##");
        assert!(
            md.contains("| SC | ner | 75.00 | 2 | -4.00 | – | – |"),
            "{md}"
        );
        let csv = r.csv();
        assert!(csv.contains("\"SC\",pos,1,dev-average,3,97,"), "{csv}");
        assert!(csv.contains("\"SC\",pos,1,per-task,2,95,"), "{csv}");
        assert_eq!(csv.lines().count(), 1 + 3 * 2);
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
