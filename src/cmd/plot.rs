//! `sclstm plot`.

use std::io::Write;
use std::path::PathBuf;

use sclstm_train::figure::{DEFAULT_FORMATS, FigureFormat};
use sclstm_train::plot::plot_runs;

/// Arguments of `sclstm plot`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run directory written by `sclstm train` (repeat to overlay several runs).
    #[arg(long = "run", value_name = "DIR", required = true)]
    pub runs: Vec<PathBuf>,
    /// Folder for the figures (default: the first run directory).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// File formats to write, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = DEFAULT_FORMATS)]
    pub format: Vec<FigureFormat>,
}

/// Runs `sclstm plot`: writes `dev_scores`, `train_loss` and, when a run has `grads.jsonl`,
/// `grad_conflict` in each format asked for, then lists what was written and notes what
/// was skipped or left out.
pub fn run(args: Args) -> anyhow::Result<()> {
    let out = match args.out {
        Some(out) => out,
        None => args.runs[0].clone(),
    };
    // An STL parent directory stands for its single-task runs.
    let runs: Vec<PathBuf> = args
        .runs
        .iter()
        .flat_map(|r| {
            let children = sclstm_train::rundir::stl_children(r);
            if children.is_empty() {
                vec![r.clone()]
            } else {
                children
            }
        })
        .collect();
    let report = plot_runs(&runs, &out, &args.format)?;
    let mut stdout = std::io::stdout().lock();
    for path in &report.written {
        writeln!(stdout, "wrote {}", path.display())?;
    }
    for note in &report.notes {
        writeln!(stdout, "note: {note}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Args, FigureFormat, run};

    #[test]
    fn figures_go_to_the_first_run_by_default() {
        let root = std::env::temp_dir().join(format!("sclstm-cmd-plot-{}", std::process::id()));
        let (first, second) = (root.join("first"), root.join("second"));
        for dir in [&first, &second] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(
                dir.join("metrics.jsonl"),
                "{\"epoch\": 1, \"task\": \"pos\", \"split\": \"dev\", \"metric\": \"accuracy\", \"score\": 95.0}\n",
            )
            .unwrap();
        }
        run(Args {
            runs: vec![first.clone(), second.clone()],
            out: None,
            format: vec![FigureFormat::Svg],
        })
        .unwrap();
        assert!(first.join("dev_scores.svg").is_file());
        assert!(!second.join("dev_scores.svg").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
