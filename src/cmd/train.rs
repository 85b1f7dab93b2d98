//! `sclstm train`: Algorithm 1 on the shipped corpora (or the user's), paper settings by default.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};

use crate::backend::{BackendJob, with_backend};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressStyle};
use sclstm_train::config::{
    BackendKind, DataFile, Dtype, Family, Pool, SchemeChoice, TaskInput, TrainConfig,
};
use sclstm_train::rundir::{self, CONFIG_FILE};
use sclstm_train::{self as train, RunOptions, StepReport, TrainObserver, TrainSummary};

/// Arguments of `sclstm train`. Every flag overrides the same key of `--config`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML file with training keys (see README); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Model family: stl, lstm-s, lstm-d or sc-lstm.
    #[arg(long)]
    pub model: Option<Family>,
    /// Comma-separated tasks trained jointly, e.g. `ner,chunk,pos`.
    #[arg(long, value_delimiter = ',')]
    pub tasks: Option<Vec<String>>,
    /// Hidden size of each LSTM direction.
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Stacked bidirectional layers.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Add the character CNN.
    #[arg(long)]
    pub char_cnn: bool,
    /// CRF output layers instead of softmax.
    #[arg(long)]
    pub crf: bool,
    /// Leave out the 8 capitalization features.
    #[arg(long)]
    pub no_caps: bool,
    /// Dropout rate.
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Loss weight of a task, e.g. `--lambda ner=3` (repeatable).
    #[arg(long, value_parser = parse_lambda)]
    pub lambda: Vec<(String, f64)>,
    /// SC-LSTM task gate input above layer 1: shared or chained (see README).
    #[arg(long)]
    pub task_input: Option<TaskInput>,
    /// Tagging scheme for NER and chunking.
    #[arg(long, value_enum)]
    pub scheme: Option<SchemeChoice>,
    /// Sentences per batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Adam learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Gradient-norm clipping threshold.
    #[arg(long)]
    pub clip: Option<f64>,
    /// Maximum epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Stop after N epochs without dev improvement (0: never).
    #[arg(long)]
    pub patience: Option<usize>,
    /// Random seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Worker threads (0: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Compute backend.
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// Precision of the whole model: f32 (default) or f64 (CPU backend only; slower, for
    /// small runs compared with an independent f64 implementation).
    #[arg(long, value_enum)]
    pub dtype: Option<Dtype>,
    /// Use only the first N sentences of each split.
    #[arg(long)]
    pub max_sentences: Option<usize>,
    /// Folder of the shipped corpora.
    #[arg(long)]
    pub datasets: Option<PathBuf>,
    /// GloVe-format word vectors (any dimension, optionally gzipped).
    #[arg(long)]
    pub embeddings: Option<PathBuf>,
    /// Training file of a task: `TASK=PATH[:FORMAT]` (conll, conll2003, conll2000, conllu).
    #[arg(long)]
    pub train: Vec<DataFile>,
    /// Dev file of a task: `TASK=PATH[:FORMAT]`.
    #[arg(long)]
    pub dev: Vec<DataFile>,
    /// Test file of a task: `TASK=PATH[:FORMAT]`.
    #[arg(long)]
    pub test: Vec<DataFile>,
    /// Folder of a frozen BERT-architecture encoder whose hidden states join the input
    /// through a learned scalar mix (SC-LSTM-LM-CNN), e.g.
    /// `datasets/encoders/all-MiniLM-L6-v2` (fetched by `scripts/fetch-encoder.sh`).
    #[arg(long)]
    pub encoder: Option<PathBuf>,
    /// How a word's encoder vector is made from its sub-words': first or mean.
    #[arg(long, value_parser = parse_pool)]
    pub encoder_pool: Option<Pool>,
    /// Run directory. It must be empty or missing, unless `--force`. Default:
    /// `runs/<model>[-lm][-cnn][-crf][-<tasks>]` (`-lm` with an encoder, tasks named when not all three), e.g.
    /// `runs/sc-lstm`, `runs/lstm-s-ner-chunk`, `runs/sc-lstm-cnn-crf`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace the run already in `--out`: the new run is built next to it
    /// (`<out>.new-<pid>`) and takes its place at its first checkpoint, when the old run
    /// moves to `<out>.old-<UTC time>`; if it stops before, `--out` is left as it was.
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    /// Continue the run in this directory from its `last.safetensors` (other flags ignored,
    /// except `--epochs`, `--threads` and `--backend`).
    #[arg(long, conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    /// Record per-task gradient statistics to `grads.jsonl` every N steps.
    #[arg(long, default_value_t = 0)]
    pub log_grads: u64,
    /// Also write `last.safetensors` every N steps inside an epoch (0: epoch ends only).
    #[arg(long, default_value_t = 1000)]
    pub checkpoint_steps: u64,
    /// Stop (as if killed) after N optimizer steps, leaving a resumable `last.safetensors`.
    #[arg(long, hide = true)]
    pub stop_after_steps: Option<u64>,
    /// Hide the progress bar (and the progress lines).
    #[arg(long)]
    pub quiet: bool,
    /// When stderr is not a terminal: seconds between progress lines.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub progress_every: u64,
}

/// Parses `--encoder-pool`.
fn parse_pool(s: &str) -> Result<Pool, String> {
    Pool::parse(s).ok_or_else(|| format!("`{s}` is not a pooling: use first or mean"))
}

fn parse_lambda(s: &str) -> Result<(String, f64), String> {
    let (task, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected TASK=WEIGHT, got `{s}`"))?;
    let w: f64 = value
        .parse()
        .map_err(|_| format!("`{value}` is not a number"))?;
    if !(w.is_finite() && w >= 0.0) {
        return Err(format!("weight of `{task}` must be finite and ≥ 0"));
    }
    Ok((task.to_string(), w))
}

impl Args {
    /// The configuration these flags describe (file, then flags).
    pub fn resolve(&self) -> anyhow::Result<TrainConfig> {
        let mut c = match &self.config {
            Some(p) => TrainConfig::from_toml_file(p)?,
            None => TrainConfig::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field.clone() { c.$field = v; } )* };
        }
        set!(
            model,
            tasks,
            hidden,
            layers,
            dropout,
            task_input,
            scheme,
            batch_size,
            lr,
            clip,
            epochs,
            patience,
            seed,
            threads,
            backend,
            dtype,
            datasets,
            embeddings,
            encoder_pool
        );
        if self.encoder.is_some() {
            c.encoder = self.encoder.clone();
        }
        if self.max_sentences.is_some() {
            c.max_sentences = self.max_sentences;
        }
        c.char_cnn |= self.char_cnn;
        c.crf |= self.crf;
        if self.no_caps {
            c.caps = false;
        }
        let lambda: BTreeMap<String, f64> = self.lambda.iter().cloned().collect();
        c.lambda.extend(lambda);
        c.train.extend(self.train.iter().cloned());
        c.dev.extend(self.dev.iter().cloned());
        c.test.extend(self.test.iter().cloned());
        c.validate()?;
        Ok(c)
    }
}

/// One training run as a backend job.
struct TrainJob<'a> {
    config: &'a TrainConfig,
    out: &'a std::path::Path,
    resume: bool,
    options: &'a RunOptions,
    show_progress: bool,
    progress_every: u64,
}

impl BackendJob for TrainJob<'_> {
    type Output = TrainSummary;
    fn run<B: sclstm_core::Backend + 'static>(
        self,
        b: std::sync::Arc<B>,
    ) -> anyhow::Result<TrainSummary> {
        let mut progress = Progress::new(self.show_progress, self.progress_every);
        train::train(
            b,
            self.config,
            self.out,
            self.resume,
            self.options,
            &mut progress,
        )
    }
}

/// The terminal side of training: log lines on stderr, and per epoch a progress bar on a
/// terminal or, when stderr is not one (a pipe, a log file), a progress line every
/// `every` seconds.
struct Progress {
    show: bool,
    every: std::time::Duration,
    bar: ProgressBar,
    terminal: bool,
    /// Epoch, its batches, the position it started from and when, and the last line's time
    /// (none yet: the epoch's first step prints one).
    epoch: Option<(
        usize,
        usize,
        usize,
        std::time::Instant,
        Option<std::time::Instant>,
    )>,
}

impl Progress {
    fn new(show: bool, every_s: u64) -> Self {
        use std::io::IsTerminal;
        Progress {
            show,
            every: std::time::Duration::from_secs(every_s.max(1)),
            bar: ProgressBar::hidden(),
            terminal: std::io::stderr().is_terminal(),
            epoch: None,
        }
    }
}

/// `ner 1.234 chunk 0.456 pos 0.321`: the epoch's running mean loss per task.
fn running_losses(s: &StepReport) -> String {
    s.running_losses
        .iter()
        .map(|(t, l)| format!("{t} {l:.3}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `1h02m`, `4m05s`, `12s`.
fn duration_text(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

impl TrainObserver for Progress {
    fn message(&mut self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    fn epoch_started(&mut self, epoch: usize, batches: usize, position: usize) {
        self.epoch = Some((epoch, batches, position, std::time::Instant::now(), None));
        if !self.show || !self.terminal {
            return;
        }
        self.bar = ProgressBar::new(batches as u64);
        self.bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} batches {msg} ETA {eta}",
            )
            .expect("internal: static progress template")
            .progress_chars("=> "),
        );
        self.bar.set_prefix(epoch.to_string());
        self.bar.set_position(position as u64);
        // A resumed epoch starts part-way: the rate (and ETA) counts from here.
        self.bar.reset_eta();
    }

    fn step_done(&mut self, s: &StepReport) {
        if self.terminal {
            self.bar.set_position(s.position as u64);
            self.bar.set_message(format!(
                "{} | {:.0} tok/s",
                running_losses(s),
                s.tokens_per_s
            ));
            return;
        }
        let Some((epoch, batches, from, started, last)) = self.epoch.as_mut() else {
            return;
        };
        if !self.show || last.is_some_and(|t| t.elapsed() < self.every) {
            return;
        }
        *last = Some(std::time::Instant::now());
        let done = s.position.saturating_sub(*from).max(1) as f64;
        let eta = started.elapsed().as_secs_f64() / done * (*batches - s.position) as f64;
        eprintln!(
            "epoch {epoch}: {}/{batches} batches ({:.0}%) | {} | {:.0} tokens/s | epoch ETA {}",
            s.position,
            100.0 * s.position as f64 / *batches as f64,
            running_losses(s),
            s.tokens_per_s,
            duration_text(eta)
        );
    }

    fn epoch_finished(&mut self, completed: bool) {
        if completed {
            self.bar.finish_and_clear();
        } else {
            self.bar.abandon();
        }
    }
}

/// Set by the first Ctrl-C: training saves after the current step and stops.
static INTERRUPTED: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();

/// The flag a first SIGINT sets; a second SIGINT exits at once (status 130).
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = INTERRUPTED.get_or_init(|| Arc::new(AtomicBool::new(false)));
    #[cfg(unix)]
    {
        extern "C" fn on_sigint(_: libc::c_int) {
            if let Some(f) = INTERRUPTED.get() {
                if f.swap(true, Ordering::SeqCst) {
                    // SAFETY: _exit is async-signal-safe.
                    unsafe { libc::_exit(130) };
                }
                const NOTE: &[u8] =
                    b"\ninterrupt: saving after the current step (Ctrl-C again to quit now)\n";
                // SAFETY: write(2) is async-signal-safe; the buffer is a static.
                unsafe {
                    libc::write(2, NOTE.as_ptr().cast(), NOTE.len());
                }
            }
        }
        // SAFETY: installs a handler that only touches an atomic and async-signal-safe calls.
        unsafe {
            let handler: extern "C" fn(libc::c_int) = on_sigint;
            libc::signal(libc::SIGINT, handler as *const () as libc::sighandler_t);
        }
    }
    Arc::clone(flag)
}

fn print_summary(s: &TrainSummary, out: &std::path::Path) {
    println!(
        "best epoch {} of {}: dev average {:.2}; {} steps, {:.0} tokens/s{}",
        s.best_epoch,
        s.epochs,
        s.best_dev_average,
        s.steps,
        s.tokens_per_s,
        crate::alloc::peak_rss_note()
    );
    for (d, t) in s.dev.iter().zip(&s.test) {
        println!(
            "  {:<6} {:<8} dev {:6.2}  test {:6.2}",
            d.task, d.metric, d.score, t.score
        );
    }
    println!("run directory: {}", out.display());
    if let Some(old) = &s.replaced {
        println!("the run it replaced: {}", old.display());
    }
}

/// The default run directory of a configuration: `runs/<model>[-lm][-cnn][-crf][-<tasks>]`
/// (`-lm` with an encoder),
/// the tasks named when they are not the paper's three.
pub fn default_out(c: &TrainConfig) -> PathBuf {
    let model = match c.model {
        Family::Stl => "stl",
        Family::LstmS => "lstm-s",
        Family::LstmD => "lstm-d",
        Family::ScLstm => "sc-lstm",
    };
    let mut name = model.to_string();
    if c.encoder.is_some() {
        name.push_str("-lm");
    }
    if c.char_cnn {
        name.push_str("-cnn");
    }
    if c.crf {
        name.push_str("-crf");
    }
    if c.tasks != TrainConfig::default().tasks {
        name.push('-');
        name.push_str(&c.tasks.join("-"));
    }
    PathBuf::from("runs").join(name)
}

/// Runs `sclstm train`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let options = RunOptions {
        log_grads: args.log_grads,
        checkpoint_steps: args.checkpoint_steps,
        stop_after_steps: args.stop_after_steps,
        replace: args.force,
        interrupt: Some(interrupt_flag()),
    };
    let (config, out, resume) = match &args.resume {
        Some(dir) => {
            let mut c = TrainConfig::from_toml_file(&dir.join(CONFIG_FILE))
                .with_context(|| format!("{} is not a run directory", dir.display()))?;
            if let Some(e) = args.epochs {
                c.epochs = e;
            }
            if let Some(t) = args.threads {
                c.threads = t;
            }
            if let Some(b) = args.backend {
                c.backend = b;
            }
            (c, dir.clone(), true)
        }
        None => {
            let c = args.resolve()?;
            let out = args.out.clone().unwrap_or_else(|| default_out(&c));
            (c, out, false)
        }
    };
    if config.model == Family::Stl && config.tasks.len() > 1 {
        if resume {
            bail!(
                "an STL run trains one directory per task: resume each of {}/stl-<task>",
                out.display()
            );
        }
        // Refuse before training anything if any of the task directories holds a run.
        for task in &config.tasks {
            rundir::check_new_run(&out.join(format!("stl-{task}")), args.force)?;
        }
        // Single-task learning: each task's model is trained on its own, in its own directory.
        for task in &config.tasks {
            let c = TrainConfig {
                tasks: vec![task.clone()],
                ..config.clone()
            };
            let dir = out.join(format!("stl-{task}"));
            eprintln!(
                "training the single-task model of `{task}` into {}",
                dir.display()
            );
            let job = TrainJob {
                config: &c,
                out: &dir,
                resume: false,
                options: &options,
                show_progress: !args.quiet,
                progress_every: args.progress_every,
            };
            let s = with_backend(c.backend, c.dtype, c.threads, job)?;
            print_summary(&s, &dir);
        }
        return Ok(());
    }
    if !resume {
        rundir::check_new_run(&out, args.force)?;
    }
    let job = TrainJob {
        config: &config,
        out: &out,
        resume,
        options: &options,
        show_progress: !args.quiet,
        progress_every: args.progress_every,
    };
    let s = with_backend(config.backend, config.dtype, config.threads, job)?;
    print_summary(&s, &out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_run_directories_name_model_features_and_tasks() {
        let c = |f: &dyn Fn(&mut TrainConfig)| {
            let mut c = TrainConfig::default();
            f(&mut c);
            default_out(&c)
        };
        assert_eq!(c(&|_| {}), PathBuf::from("runs/sc-lstm"));
        assert_eq!(
            c(&|c| {
                c.model = Family::LstmS;
                c.tasks = vec!["ner".into(), "chunk".into()];
            }),
            PathBuf::from("runs/lstm-s-ner-chunk")
        );
        assert_eq!(
            c(&|c| {
                c.char_cnn = true;
                c.crf = true;
            }),
            PathBuf::from("runs/sc-lstm-cnn-crf")
        );
        assert_eq!(c(&|c| c.model = Family::Stl), PathBuf::from("runs/stl"));
        assert_eq!(
            c(&|c| {
                c.encoder = Some(PathBuf::from("datasets/encoders/all-MiniLM-L6-v2"));
                c.char_cnn = true;
                c.crf = true;
            }),
            PathBuf::from("runs/sc-lstm-lm-cnn-crf")
        );
    }

    #[test]
    fn durations_read_as_a_person_writes_them() {
        assert_eq!(duration_text(12.4), "12s");
        assert_eq!(duration_text(245.0), "4m05s");
        assert_eq!(duration_text(3720.0), "1h02m");
    }
}
