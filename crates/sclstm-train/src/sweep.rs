//! Sweeps: where each run directory of a plan stands, and the commands that finish the
//! plan — as a GNU parallel job list, a Slurm array script, or run here N at a time.
//!
//! Sweeps are idempotent: a finished run is skipped, a run with a `last.safetensors` is
//! resumed from it, a missing one is started (with `--force` when an earlier start left files
//! but no checkpoint), and a run directory whose configuration differs from the plan stops
//! the sweep, naming the key. sclstm schedules nothing beyond one machine: a cluster gets
//! the job list or the array script.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::config::TrainConfig;
use crate::plan::{RunSpec, config_differences};
use crate::rundir::{self, CONFIG_FILE, LAST_FILE, METRICS_FILE};

/// Where one run directory stands.
#[derive(Debug, Clone, PartialEq)]
pub enum RunStatus {
    /// Nothing there yet.
    Missing,
    /// Files of a start that never reached a checkpoint: restarted with `--force`.
    Leftovers,
    /// Interrupted: `last.safetensors` holds `epochs` finished epochs.
    Partial {
        /// Epochs finished.
        epochs: usize,
    },
    /// Every epoch done, or stopped by `--patience`.
    Done {
        /// Epochs finished.
        epochs: usize,
    },
    /// The directory's `config.toml` is not what the plan asks for.
    Conflict {
        /// One `key: plan … ≠ run …` per differing key.
        differences: Vec<String>,
    },
}

impl RunStatus {
    /// One word for `--status`.
    pub fn word(&self) -> &'static str {
        match self {
            RunStatus::Missing | RunStatus::Leftovers => "missing",
            RunStatus::Partial { .. } => "partial",
            RunStatus::Done { .. } => "done",
            RunStatus::Conflict { .. } => "conflict",
        }
    }
}

/// Epochs finished in a run directory (dev-average lines of `metrics.jsonl`) and whether
/// `config` counts it as done: every epoch, or `patience` epochs without a better average.
pub fn epochs_done(dir: &Path, config: &TrainConfig) -> anyhow::Result<(usize, bool)> {
    let path = dir.join(METRICS_FILE);
    if !path.is_file() {
        return Ok((0, false));
    }
    let averages = rundir::dev_averages(&rundir::read_metrics(&path)?);
    let epochs = averages.len();
    let best = rundir::best_epoch(&averages);
    let stopped =
        config.patience > 0 && best.is_some_and(|b| epochs.saturating_sub(b) >= config.patience);
    Ok((epochs, epochs >= config.epochs || stopped))
}

/// Where `spec`'s run directory stands.
pub fn status(spec: &RunSpec) -> anyhow::Result<RunStatus> {
    let dir = &spec.dir;
    let has_files = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
    if !has_files {
        return Ok(RunStatus::Missing);
    }
    let config_path = dir.join(CONFIG_FILE);
    if config_path.is_file() {
        let found = TrainConfig::from_toml_file(&config_path)?;
        let differences = config_differences(&spec.config, &found);
        if !differences.is_empty() {
            return Ok(RunStatus::Conflict { differences });
        }
    }
    let (epochs, done) = epochs_done(dir, &spec.config)?;
    Ok(if done {
        RunStatus::Done { epochs }
    } else if dir.join(LAST_FILE).is_file() {
        RunStatus::Partial { epochs }
    } else {
        RunStatus::Leftovers
    })
}

/// Statuses of every spec, refusing the sweep when a directory conflicts with the plan.
pub fn statuses(specs: &[RunSpec]) -> anyhow::Result<Vec<RunStatus>> {
    let all = specs
        .iter()
        .map(|s| status(s).with_context(|| format!("{}", s.dir.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (s, st) in specs.iter().zip(&all) {
        if let RunStatus::Conflict { differences } = st {
            bail!(
                "{} was trained with another configuration than the plan's ({}): move it away or fix the plan",
                s.dir.display(),
                differences.join("; ")
            );
        }
    }
    Ok(all)
}

/// How the emitted commands call sclstm and how many threads each run gets.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// The sclstm executable.
    pub bin: PathBuf,
    /// `--threads` of each run.
    pub threads: usize,
}

/// Writes the configuration file a fresh start of `spec` reads (`seed-<k>.toml`).
pub fn write_start_config(spec: &RunSpec) -> anyhow::Result<()> {
    let path = spec.config_path();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    sclstm_model::checkpoint::write_atomic(&path, spec.config.to_toml()?.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// The `sclstm train` arguments that advance `spec` from `status` (none when done).
pub fn train_args(spec: &RunSpec, status: &RunStatus, threads: usize) -> Option<Vec<String>> {
    let dir = spec.dir.display().to_string();
    let mut args: Vec<String> = match status {
        RunStatus::Done { .. } | RunStatus::Conflict { .. } => return None,
        RunStatus::Partial { .. } => vec!["train".into(), "--resume".into(), dir],
        RunStatus::Missing | RunStatus::Leftovers => {
            let mut a = vec![
                "train".into(),
                "--config".into(),
                spec.config_path().display().to_string(),
                "--out".into(),
                dir,
            ];
            if *status == RunStatus::Leftovers {
                a.push("--force".into());
            }
            a
        }
    };
    args.extend(run_flags(spec, threads));
    Some(args)
}

/// Flags every `sclstm train` of `spec` gets, start or resume: threads, quiet, logging.
fn run_flags(spec: &RunSpec, threads: usize) -> Vec<String> {
    let mut flags = vec!["--threads".into(), threads.to_string(), "--quiet".into()];
    if let Some(n) = spec.logging.log_grads {
        flags.extend(["--log-grads".into(), n.to_string()]);
    }
    if let Some(n) = spec.logging.checkpoint_steps {
        flags.extend(["--checkpoint-steps".into(), n.to_string()]);
    }
    flags
}

/// Quotes `s` for a POSIX shell when it needs it.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn command_line(bin: &Path, args: &[String]) -> String {
    std::iter::once(bin.display().to_string())
        .chain(args.iter().cloned())
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One shell command per run still to do, for `parallel -j N --joblog LOG < jobs.txt`.
/// Writes the start configurations the commands read.
pub fn emit_parallel(
    specs: &[RunSpec],
    statuses: &[RunStatus],
    job: &JobSettings,
) -> anyhow::Result<String> {
    let mut out = String::new();
    for (spec, st) in specs.iter().zip(statuses) {
        if let Some(args) = train_args(spec, st, job.threads) {
            if !matches!(st, RunStatus::Partial { .. }) {
                write_start_config(spec)?;
            }
            out.push_str(&command_line(&job.bin, &args));
            out.push('\n');
        }
    }
    Ok(out)
}

/// A Slurm array script with one task per run still to do. Each task decides at run time
/// whether to start or resume (so a requeued task resumes from its checkpoint); logs go to
/// `<root>/<plan>/logs/`. Writes the start configurations the tasks read.
pub fn emit_slurm(
    specs: &[RunSpec],
    statuses: &[RunStatus],
    job: &JobSettings,
    logs: &Path,
) -> anyhow::Result<String> {
    let todo: Vec<&RunSpec> = specs
        .iter()
        .zip(statuses)
        .filter(|(_, st)| !matches!(st, RunStatus::Done { .. }))
        .map(|(s, _)| s)
        .collect();
    let plan = specs.first().map_or("sclstm", |s| s.plan.as_str());
    let mut s = String::new();
    let _ = writeln!(s, "#!/usr/bin/env bash");
    let _ = writeln!(s, "#SBATCH --job-name=sclstm-{plan}");
    if todo.is_empty() {
        let _ = writeln!(
            s,
            "# nothing left to train: every run this plan trains is done"
        );
        let _ = writeln!(s, "exit 0");
        return Ok(s);
    }
    let _ = writeln!(s, "#SBATCH --array=0-{}", todo.len() - 1);
    let _ = writeln!(s, "#SBATCH --cpus-per-task={}", job.threads);
    let _ = writeln!(s, "#SBATCH --ntasks=1");
    let _ = writeln!(
        s,
        "#SBATCH --output={}",
        shell_quote(&logs.join("%x-%a.log").display().to_string())
    );
    let _ = writeln!(s, "#SBATCH --open-mode=append");
    let _ = writeln!(s, "#SBATCH --requeue");
    let _ = writeln!(s, "set -euo pipefail");
    let _ = writeln!(s, "BIN={}", shell_quote(&job.bin.display().to_string()));
    let _ = writeln!(s, "case \"${{SLURM_ARRAY_TASK_ID:?}}\" in");
    for (i, spec) in todo.iter().enumerate() {
        write_start_config(spec)?;
        let opts: Vec<String> = run_flags(spec, job.threads)
            .iter()
            .map(|o| shell_quote(o))
            .collect();
        let _ = writeln!(
            s,
            "  {i}) DIR={}; OPTS=({}) ;;",
            shell_quote(&spec.dir.display().to_string()),
            opts.join(" ")
        );
    }
    let _ = writeln!(
        s,
        "  *) echo \"no run for array task $SLURM_ARRAY_TASK_ID\" >&2; exit 2 ;;"
    );
    let _ = writeln!(s, "esac");
    let _ = writeln!(s, "CONFIG=\"$DIR.toml\"");
    let _ = writeln!(s, "if [ -f \"$DIR/last.safetensors\" ]; then");
    let _ = writeln!(
        s,
        "  exec \"$BIN\" train --resume \"$DIR\" \"${{OPTS[@]}}\""
    );
    let _ = writeln!(
        s,
        "elif [ -d \"$DIR\" ] && [ -n \"$(ls -A \"$DIR\")\" ]; then"
    );
    let _ = writeln!(
        s,
        "  exec \"$BIN\" train --config \"$CONFIG\" --out \"$DIR\" --force \"${{OPTS[@]}}\""
    );
    let _ = writeln!(s, "else");
    let _ = writeln!(
        s,
        "  exec \"$BIN\" train --config \"$CONFIG\" --out \"$DIR\" \"${{OPTS[@]}}\""
    );
    let _ = writeln!(s, "fi");
    Ok(s)
}

/// One finished child of [`run_here`].
#[derive(Debug, Clone)]
pub struct JobOutcome {
    /// `<run>/seed-<k>`.
    pub id: String,
    /// Whether `sclstm train` exited 0.
    pub success: bool,
    /// Its log file.
    pub log: PathBuf,
}

/// Runs the runs still to do on this machine, `jobs` at a time, each child's output in
/// its [`RunSpec::log_path`]; `on_event` hears each start and end. Returns every outcome.
pub fn run_here(
    specs: &[RunSpec],
    statuses: &[RunStatus],
    job: &JobSettings,
    jobs: usize,
    on_event: &mut dyn FnMut(&str),
) -> anyhow::Result<Vec<JobOutcome>> {
    let mut queue: Vec<(&RunSpec, Vec<String>)> = Vec::new();
    for (spec, st) in specs.iter().zip(statuses) {
        if let Some(args) = train_args(spec, st, job.threads) {
            if !matches!(st, RunStatus::Partial { .. }) {
                write_start_config(spec)?;
            }
            queue.push((spec, args));
        }
    }
    queue.reverse();
    let mut running: Vec<(String, PathBuf, Child)> = Vec::new();
    let mut done = Vec::new();
    while !queue.is_empty() || !running.is_empty() {
        while running.len() < jobs.max(1) {
            let Some((spec, args)) = queue.pop() else {
                break;
            };
            let log = spec.log_path();
            if let Some(dir) = log.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .with_context(|| format!("opening {}", log.display()))?;
            let child = Command::new(&job.bin)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(file.try_clone()?)
                .stderr(file)
                .spawn()
                .with_context(|| format!("starting {}", job.bin.display()))?;
            on_event(&format!("started {} (log {})", spec.id(), log.display()));
            running.push((spec.id(), log, child));
        }
        let mut i = 0;
        while i < running.len() {
            if let Some(exit) = running[i].2.try_wait()? {
                let (id, log, _) = running.swap_remove(i);
                on_event(&format!(
                    "{} {id}{}",
                    if exit.success() { "finished" } else { "failed" },
                    if exit.success() {
                        String::new()
                    } else {
                        format!(" ({exit}; see {})", log.display())
                    }
                ));
                done.push(JobOutcome {
                    id,
                    success: exit.success(),
                    log,
                });
            } else {
                i += 1;
            }
        }
        if !running.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(done)
}
