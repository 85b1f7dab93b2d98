//! `sclstm gradcheck`: finite-difference checks of every backward pass — the tape's
//! primitive ops, the fused LSTM / SC-LSTM layers, the CRF, and whole small models.

use anyhow::bail;
use sclstm_autodiff::gradcheck::{self, Report};

/// Arguments of `sclstm gradcheck`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run only the checks whose name contains this text.
    #[arg(long)]
    pub filter: Option<String>,
}

/// Runs the checks in f64 and prints one line per check with its largest error
/// `|analytic − numeric| / (1 + max(|analytic|, |numeric|))`. Fails (non-zero exit) if
/// any check exceeds its tolerance or errors.
pub fn run(args: Args) -> anyhow::Result<()> {
    let wanted = |name: &str| args.filter.as_deref().is_none_or(|f| name.contains(f));
    let mut results: Vec<(String, Result<Report, String>)> = Vec::new();
    for c in gradcheck::registry()
        .into_iter()
        .chain(sclstm_model::layer_checks::checks())
        .filter(|c| wanted(c.name))
    {
        results.push((c.name.to_string(), (c.run)().map_err(|e| e.to_string())));
    }
    if wanted("model") {
        for r in sclstm_model::gradcheck::run_all() {
            results.push(("model".to_string(), r.map_err(|e| e.to_string())));
        }
    }
    if results.is_empty() {
        bail!("gradcheck: no check matches the filter");
    }
    let mut failed = Vec::new();
    for (name, r) in &results {
        match r {
            Ok(report) => {
                println!("{report}");
                if !report.passed() {
                    failed.push(report.name.clone());
                }
            }
            Err(e) => {
                println!("FAIL {name:<28} error: {e}");
                failed.push(name.clone());
            }
        }
    }
    println!(
        "{} checks, {} failed (central differences, eps {:e}, tolerance {:e})",
        results.len(),
        failed.len(),
        gradcheck::EPS,
        gradcheck::TOL
    );
    if !failed.is_empty() {
        bail!("gradcheck failed: {}", failed.join(", "));
    }
    Ok(())
}
