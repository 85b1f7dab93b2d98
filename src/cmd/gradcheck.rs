//! `sclstm gradcheck`: finite-difference checks of every backward pass.

use anyhow::bail;
use sclstm_autodiff::gradcheck;

/// Arguments of `sclstm gradcheck`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run only the checks whose name contains this text.
    #[arg(long)]
    pub filter: Option<String>,
}

/// Runs the registered gradient checks in f64 and prints one line per check with its
/// largest error `|analytic − numeric| / (1 + max(|analytic|, |numeric|))`. Fails
/// (non-zero exit) if any check exceeds its tolerance or errors.
pub fn run(args: Args) -> anyhow::Result<()> {
    let checks: Vec<_> = gradcheck::registry()
        .into_iter()
        .filter(|c| args.filter.as_deref().is_none_or(|f| c.name.contains(f)))
        .collect();
    if checks.is_empty() {
        bail!("gradcheck: no check matches the filter");
    }
    let mut failed = Vec::new();
    for c in &checks {
        match (c.run)() {
            Ok(report) => {
                println!("{report}");
                if !report.passed() {
                    failed.push(c.name);
                }
            }
            Err(e) => {
                println!("FAIL {:<28} error: {e}", c.name);
                failed.push(c.name);
            }
        }
    }
    println!(
        "{} checks, {} failed (eps {:e}, tolerance {:e})",
        checks.len(),
        failed.len(),
        gradcheck::EPS,
        gradcheck::TOL
    );
    if !failed.is_empty() {
        bail!("gradcheck failed: {}", failed.join(", "));
    }
    Ok(())
}
