//! `sclstm sweep PLAN`: where a plan's runs stand, and the commands that finish them.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use sclstm_train::plan::{Overrides, Plan, RunSpec};
use sclstm_train::sweep::{self, JobSettings, RunStatus};

/// How `--emit` writes the runs still to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Emit {
    /// One `sclstm train …` command per line, for `parallel -j N --joblog LOG < jobs.txt`.
    Parallel,
    /// An `sbatch` array script, one task per run, resuming on requeue.
    Slurm,
}

/// Arguments of `sclstm sweep`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("action").required(true).args(["status", "emit", "run"])))]
pub struct Args {
    /// Experiment plan (`experiments/*.toml`).
    pub plan: PathBuf,
    /// Folder holding the plans' run directories (`<root>/<plan>/<run>/seed-<k>`).
    #[arg(long, default_value = "runs")]
    pub root: PathBuf,
    /// Seeds per run (default: the plan's).
    #[arg(long)]
    pub seeds: Option<usize>,
    /// Only these runs of the plan, in this order (comma-separated names), e.g. to train
    /// one model's further seeds first.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Only these seeds of each run (comma-separated, 1-based), e.g. `--only-seeds 3` to
    /// train the third seed where the first two were trained elsewhere.
    #[arg(long, value_delimiter = ',')]
    pub only_seeds: Vec<u64>,
    /// Train every run on the first N sentences of each split (a quick look at a plan).
    #[arg(long)]
    pub max_sentences: Option<usize>,
    /// Print done / partial / missing for every run, with the epochs done.
    #[arg(long)]
    pub status: bool,
    /// Print the commands of the runs still to do.
    #[arg(long, value_enum)]
    pub emit: Option<Emit>,
    /// With `--emit slurm`: write the script to `<root>/<plan>/sweep.sbatch` and submit it
    /// with `sbatch`.
    #[arg(long, requires = "emit")]
    pub submit: bool,
    /// Run the runs still to do on this machine.
    #[arg(long)]
    pub run: bool,
    /// With `--run`: runs at a time.
    #[arg(short = 'j', long, default_value_t = 1, requires = "run")]
    pub jobs: usize,
    /// Threads of each run (default: 1 for emitted commands; the cores split between the
    /// `--jobs` for `--run`).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The sclstm executable the commands call (default: this one).
    #[arg(long)]
    pub bin: Option<PathBuf>,
}

/// Runs `sclstm sweep`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let plan = Plan::load(&args.plan)?;
    let overrides = Overrides {
        max_sentences: args.max_sentences,
    };
    let specs = plan.only(plan.expand(&args.root, args.seeds, &overrides)?, &args.only)?;
    let specs = plan.only_seeds(specs, &args.only_seeds)?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if args.jobs == 0 || args.jobs > cores * 4 {
        bail!("--jobs must be between 1 and {} (4 per core)", cores * 4);
    }
    let threads = args.threads.unwrap_or(if args.run {
        (cores / args.jobs).max(1)
    } else {
        1
    });
    if threads == 0 || threads > 4096 {
        bail!("--threads must be between 1 and 4096");
    }
    let job = JobSettings {
        bin: match &args.bin {
            Some(b) => b.clone(),
            None => std::env::current_exe().context("finding the sclstm executable")?,
        },
        threads,
    };
    let mut out = std::io::stdout().lock();
    if args.status {
        let mut counts = [0usize; 3];
        for spec in &specs {
            let st = sweep::status(spec).with_context(|| format!("{}", spec.dir.display()))?;
            let detail = match &st {
                RunStatus::Missing => String::new(),
                RunStatus::Leftovers => " (files of a start without checkpoint)".into(),
                RunStatus::Partial { epochs } | RunStatus::Done { epochs } => {
                    format!(" ({epochs} of {} epochs)", spec.config.epochs)
                }
                RunStatus::Conflict { differences } => format!(" ({})", differences.join("; ")),
            };
            match st {
                RunStatus::Done { .. } => counts[0] += 1,
                RunStatus::Partial { .. } => counts[1] += 1,
                _ => counts[2] += 1,
            }
            let owner = spec.same_as.as_ref().map_or_else(String::new, |o| {
                format!(" [same as {o}: its own plan's sweep trains it]")
            });
            writeln!(
                out,
                "{:<8} {}{detail}{owner}",
                st.word(),
                spec.dir.display()
            )?;
        }
        writeln!(
            out,
            "{}: {} done, {} partial, {} missing of {} runs",
            plan.name,
            counts[0],
            counts[1],
            counts[2],
            specs.len()
        )?;
        return Ok(());
    }
    // Runs of other plans (`same_as`) are trained by their own plans' sweeps.
    let (shared, specs): (Vec<RunSpec>, Vec<RunSpec>) =
        specs.into_iter().partition(|s| s.same_as.is_some());
    let statuses = sweep::statuses(&specs)?;
    let waiting: Vec<String> = shared
        .iter()
        .zip(sweep::statuses(&shared)?)
        .filter(|(_, st)| !matches!(st, RunStatus::Done { .. }))
        .map(|(s, _)| s.dir.display().to_string())
        .collect();
    if !waiting.is_empty() {
        eprintln!(
            "sweep: {} run(s) of this plan belong to other plans (`same_as`) and are not done; \
             their plans' sweeps train them: {}",
            waiting.len(),
            waiting.join(", ")
        );
    }
    match args.emit {
        Some(Emit::Parallel) => {
            if args.submit {
                bail!("--submit goes with --emit slurm");
            }
            out.write_all(sweep::emit_parallel(&specs, &statuses, &job)?.as_bytes())?;
        }
        Some(Emit::Slurm) => {
            let logs = args.root.join(&plan.name).join("logs");
            let script = sweep::emit_slurm(&specs, &statuses, &job, &logs)?;
            if args.submit {
                std::fs::create_dir_all(&logs)
                    .with_context(|| format!("creating {}", logs.display()))?;
                let path = args.root.join(&plan.name).join("sweep.sbatch");
                std::fs::write(&path, &script)
                    .with_context(|| format!("writing {}", path.display()))?;
                let status = std::process::Command::new("sbatch")
                    .arg(&path)
                    .status()
                    .context("running sbatch (is Slurm installed here?)")?;
                if !status.success() {
                    bail!("sbatch {} failed ({status})", path.display());
                }
                writeln!(out, "submitted {}", path.display())?;
            } else {
                out.write_all(script.as_bytes())?;
            }
        }
        None => {
            drop(out);
            let outcomes = sweep::run_here(&specs, &statuses, &job, args.jobs, &mut |line| {
                eprintln!("{line}")
            })?;
            let failed: Vec<&str> = outcomes
                .iter()
                .filter(|o| !o.success)
                .map(|o| o.id.as_str())
                .collect();
            if !failed.is_empty() {
                bail!("{} run(s) failed: {}", failed.len(), failed.join(", "));
            }
            eprintln!(
                "{}: {} run(s) trained; `sclstm report --plan {}` tabulates them",
                plan.name,
                outcomes.len(),
                args.plan.display()
            );
        }
    }
    Ok(())
}
