//! `sclstm report`: tables and figures of finished runs against the paper.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use sclstm_train::figure::{DEFAULT_FORMATS, FigureFormat};
use sclstm_train::plan::{Overrides, Plan};
use sclstm_train::report::{self, Report};

/// Output format of the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Markdown tables (as in the README).
    Markdown,
    /// One line per model × task × seed.
    Csv,
    /// Everything, machine-readable.
    Json,
}

/// Arguments of `sclstm report`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run directories to tabulate (rows by model and tasks) instead of a plan.
    #[arg(conflicts_with = "plans")]
    pub runs: Vec<PathBuf>,
    /// Experiment plan whose runs to tabulate against the paper (repeatable).
    #[arg(long = "plan", value_name = "PLAN")]
    pub plans: Vec<PathBuf>,
    /// Folder holding the plans' run directories.
    #[arg(long, default_value = "runs")]
    pub root: PathBuf,
    /// Seeds per run to look for (default: the plan's).
    #[arg(long)]
    pub seeds: Option<usize>,
    /// The `--max-sentences` the runs were swept with.
    #[arg(long)]
    pub max_sentences: Option<usize>,
    /// Table format.
    #[arg(long, value_enum, default_value_t = Format::Markdown)]
    pub format: Format,
    /// Write the figures into this folder.
    #[arg(long)]
    pub figures: Option<PathBuf>,
    /// File formats of the figures, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = DEFAULT_FORMATS)]
    pub figure_format: Vec<FigureFormat>,
    /// Rewrite the README's generated "Results against the paper" section (with `--plan`).
    #[arg(long, requires = "plans")]
    pub readme: Option<PathBuf>,
    /// Fail when the README's generated section is not what the runs give (with `--plan`).
    #[arg(long, requires = "plans", conflicts_with = "readme")]
    pub check_readme: Option<PathBuf>,
}

/// Runs `sclstm report`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.runs.is_empty() && args.plans.is_empty() {
        bail!("give run directories or --plan PLAN");
    }
    let overrides = Overrides {
        max_sentences: args.max_sentences,
    };
    let mut reports: Vec<(Option<Plan>, Report)> = Vec::new();
    let mut plan_runs = Vec::new();
    if args.plans.is_empty() {
        let runs = report::dir_results(&args.runs)?;
        reports.push((None, report::build(None, runs)));
    } else {
        for path in &args.plans {
            let plan = Plan::load(path)?;
            let specs = plan.expand(&args.root, args.seeds, &overrides)?;
            let runs = report::plan_results(&specs)
                .with_context(|| format!("reading the runs of {}", path.display()))?;
            reports.push((Some(plan.clone()), report::build(Some(&plan), runs.clone())));
            plan_runs.push((plan, runs));
        }
    }
    if let Some(dir) = &args.figures {
        for (plan, r) in &reports {
            for path in r.figures(plan.as_ref(), dir, &args.figure_format)? {
                eprintln!("wrote {}", path.display());
            }
        }
    }
    let figure_links = args
        .figures
        .clone()
        .unwrap_or_else(|| PathBuf::from("results/figures"));
    let readme_target = args.readme.as_ref().or(args.check_readme.as_ref());
    if let Some(path) = readme_target {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let section = report::readme_section(&plan_runs, &figure_links);
        if args.check_readme.is_some() {
            if report::readme_current(&text) != Some(section.as_str()) {
                bail!(
                    "{}: the results section differs from what `sclstm report` renders from {}; rerun with --readme",
                    path.display(),
                    args.root.display()
                );
            }
            eprintln!("{}: results section is up to date", path.display());
            return Ok(());
        }
        let new = report::splice_readme(&text, &section)
            .with_context(|| format!("updating {}", path.display()))?;
        sclstm_model::checkpoint::write_atomic(path, new.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("updated {}", path.display());
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for (_, r) in &reports {
        match args.format {
            Format::Markdown => writeln!(out, "{}", r.markdown("##"))?,
            Format::Csv => write!(out, "{}", r.csv())?,
            Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(r)?)?,
        }
    }
    Ok(())
}
