//! `sclstm stats`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

/// Arguments of `sclstm stats`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Root of the shipped datasets (a relative path that does not exist here is also looked for
    /// under `$SCLSTM_DATA` and next to the executable).
    #[arg(long, default_value = "datasets")]
    pub datasets: PathBuf,
}

/// Runs `sclstm stats`: counts and embedding coverage of every shipped split.
pub fn run(args: Args) -> anyhow::Result<()> {
    let root = sclstm_data::shipped::locate(&args.datasets)?;
    let stats = sclstm_data::stats::shipped_stats(&root)
        .with_context(|| format!("reading the datasets under {}", args.datasets.display()))?;
    // Write through a handle so a closed pipe (`sclstm stats | head`) is an error, not a panic.
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&stats)?)?;
    } else {
        write!(out, "{stats}")?;
    }
    Ok(())
}
