//! The paper's claims, checked on a report's runs: the compared model is at least as good as
//! each baseline on each task (Table 3, §5.1; against a multi-task baseline also with the
//! baseline's tasks each at its own best dev epoch, as the paper's table reports them), the
//! task that gains most from it is the
//! paper's (chunking, §5.1), and it converges faster and more smoothly than the other
//! multi-task models (Figure 3, §6.1). Each claim gets a verdict computed from the runs,
//! never typed by hand, and is marked provisional while a run it rests on is partial or
//! has fewer seeds than the plan asks for.

use std::fmt::Write;

use serde::Serialize;

use crate::config::Family;
use crate::report::{ComparisonLine, Report, RunResult, TableLine};

/// A claim's verdict on our runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Our runs agree with the paper.
    Holds,
    /// Our runs contradict it.
    Fails,
    /// Some run the claim needs is missing (or too short).
    Open,
}

/// One claim of the paper and what our runs say about it.
#[derive(Debug, Clone, Serialize)]
pub struct Claim {
    /// The claim, in the paper's terms.
    pub claim: String,
    /// Our figures behind the verdict.
    pub ours: String,
    /// Holds, fails or open.
    pub verdict: Verdict,
    /// Whether a run it rests on is partial or has fewer seeds than planned.
    pub provisional: bool,
}

/// Epoch (1-based) after which convergence is judged smooth or not (the paper's Figure 3
/// discussion: "after about ten epochs").
pub const SMOOTH_FROM_EPOCH: usize = 10;

/// Dev-average points within which an epoch counts as having reached the run's best.
pub const NEAR_BEST: f64 = 0.5;

/// The claims a report's runs can speak to: one per compared pair `(row, against)` (the
/// plan's `[[compare]]` entries), and Figure 3's when several multi-task rows share tasks.
pub fn claims(report: &Report, compared: &[(String, String)]) -> Vec<Claim> {
    let mut out = Vec::new();
    let line = |row: &str, task: &str| -> Option<&TableLine> {
        report.table.iter().find(|l| l.row == row && l.task == task)
    };
    let unsettled = |l: &TableLine| l.partial || l.scores.len() < report.seeds;
    for (row, against) in compared {
        let (row, against) = (row.as_str(), against.as_str());
        let lines: Vec<&ComparisonLine> = report
            .comparisons
            .iter()
            .filter(|c| c.row == row && c.against == against)
            .collect();
        let provisional = lines.iter().any(|c| {
            [&c.row, &c.against]
                .iter()
                .filter_map(|r| line(r, &c.task))
                .any(unsettled)
        });
        let differences: Vec<(&str, f64)> = lines
            .iter()
            .map(|c| (c.task.as_str(), c.difference))
            .collect();
        out.push(every_task(
            report,
            format!("{row} ≥ {against} on every task"),
            row,
            &differences,
            &format!("no {against} run yet"),
            provisional,
        ));
        if let Some(c) = largest_gain(report, row, against, &lines) {
            out.push(Claim { provisional, ..c });
        }
        // The paper's own Table 3 comparison when the baseline is multi-task: its lines
        // take each task at its best, ours one epoch for all tasks.
        let per_task: Vec<(&str, f64)> = report
            .per_task
            .iter()
            .filter(|p| p.row == against)
            .filter_map(|p| Some((p.task.as_str(), line(row, &p.task)?.mean - p.mean)))
            .collect();
        if !per_task.is_empty() {
            out.push(every_task(
                report,
                format!(
                    "{row} (one epoch for all tasks) ≥ {against} (each task at its own best dev epoch) \
                     on every task (Table 3's comparison)"
                ),
                row,
                &per_task,
                &format!("no {against} test score at its best dev epoch"),
                provisional,
            ));
        }
    }
    out.extend(convergence(report));
    out
}

/// "`row` ≥ the baseline on every task" from the differences `row − baseline` per task:
/// fails when one is negative, holds when every task of `row` has one, open otherwise
/// (each task without one is listed as `task: missing`).
fn every_task(
    report: &Report,
    claim: String,
    row: &str,
    differences: &[(&str, f64)],
    missing_text: &str,
    provisional: bool,
) -> Claim {
    let missing: Vec<&str> = report
        .table
        .iter()
        .filter(|l| l.row == row && !differences.iter().any(|(t, _)| *t == l.task))
        .map(|l| l.task.as_str())
        .collect();
    let mut ours: Vec<String> = differences
        .iter()
        .map(|(t, d)| format!("{t} {d:+.2}"))
        .collect();
    ours.extend(missing.iter().map(|t| format!("{t}: {missing_text}")));
    Claim {
        claim,
        ours: ours.join(", "),
        verdict: if differences.iter().any(|(_, d)| *d < 0.0) {
            Verdict::Fails
        } else if missing.is_empty() {
            Verdict::Holds
        } else {
            Verdict::Open
        },
        provisional,
    }
}

/// The task where `row` gains most over `against`, in the paper (from the plan's values)
/// and in our runs; `None` unless both are known on at least two tasks.
fn largest_gain(
    report: &Report,
    row: &str,
    against: &str,
    lines: &[&ComparisonLine],
) -> Option<Claim> {
    let paper = |r: &str, task: &str| {
        report
            .table
            .iter()
            .find(|l| l.row == r && l.task == task)
            .and_then(|l| l.paper.as_ref().map(|p| p.0))
    };
    let gains: Vec<(&str, f64, f64)> = lines
        .iter()
        .filter_map(|c| {
            let p = paper(row, &c.task)? - paper(against, &c.task)?;
            Some((c.task.as_str(), p, c.difference))
        })
        .collect();
    if gains.len() < 2 {
        return None;
    }
    let argmax = |f: fn(&(&str, f64, f64)) -> f64| {
        gains
            .iter()
            .max_by(|a, b| f(a).total_cmp(&f(b)))
            .map(|g| g.0)
            .expect("at least two gains")
    };
    let (theirs, mine) = (argmax(|g| g.1), argmax(|g| g.2));
    let paper_gain = gains.iter().find(|g| g.0 == theirs).map_or(0.0, |g| g.1);
    Some(Claim {
        claim: format!("{theirs} gains most from {row} over {against} (paper: {paper_gain:+.2})"),
        ours: format!(
            "largest gain on {mine} ({})",
            gains
                .iter()
                .map(|g| format!("{} {:+.2}", g.0, g.2))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        verdict: if theirs == mine {
            Verdict::Holds
        } else {
            Verdict::Fails
        },
        provisional: false,
    })
}

/// Per multi-task row (same tasks as the SC-LSTM row): the mean over seeds of the first
/// epoch within [`NEAR_BEST`] of the run's best dev average, and of the mean absolute
/// epoch-to-epoch change of the dev average after [`SMOOTH_FROM_EPOCH`].
#[derive(Debug, Clone, PartialEq)]
struct Convergence {
    row: String,
    near_best_epoch: f64,
    fluctuation: Option<f64>,
    unsettled: bool,
}

fn convergence_of(row: &str, runs: &[&RunResult], seeds: usize) -> Convergence {
    let n = runs.len() as f64;
    let near_best_epoch = runs
        .iter()
        .map(|r| {
            let best = r.curve.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let first = r.curve.iter().position(|v| *v >= best - NEAR_BEST);
            first.map_or(r.curve.len(), |i| i + 1) as f64
        })
        .sum::<f64>()
        / n;
    let fluctuations: Option<Vec<f64>> = runs
        .iter()
        .map(|r| {
            let tail = r.curve.get(SMOOTH_FROM_EPOCH - 1..)?;
            (tail.len() >= 2).then(|| {
                tail.windows(2).map(|w| (w[1] - w[0]).abs()).sum::<f64>() / (tail.len() - 1) as f64
            })
        })
        .collect();
    Convergence {
        row: row.to_string(),
        near_best_epoch,
        fluctuation: fluctuations.map(|f| f.iter().sum::<f64>() / n),
        unsettled: runs.len() < seeds || runs.iter().any(|r| !r.done),
    }
}

/// Figure 3's claims: the SC-LSTM row reaches its best sooner and fluctuates less after
/// [`SMOOTH_FROM_EPOCH`] than every other multi-task row trained on the same tasks.
fn convergence(report: &Report) -> Vec<Claim> {
    let Some(sc) = report
        .runs
        .iter()
        .find(|r| r.family == Family::ScLstm && r.tasks.len() > 1)
    else {
        return Vec::new();
    };
    let mut rows: Vec<&str> = Vec::new();
    for r in &report.runs {
        if r.family != Family::Stl && r.tasks == sc.tasks && !rows.contains(&r.row.as_str()) {
            rows.push(&r.row);
        }
    }
    if rows.len() < 2 {
        return Vec::new();
    }
    let stats: Vec<Convergence> = rows
        .iter()
        .map(|row| {
            let runs: Vec<&RunResult> = report
                .runs
                .iter()
                .filter(|r| r.row == *row && r.tasks == sc.tasks)
                .collect();
            convergence_of(row, &runs, report.seeds)
        })
        .collect();
    let provisional = stats.iter().any(|c| c.unsettled);
    let mine = stats
        .iter()
        .find(|c| c.row == sc.row)
        .expect("the SC-LSTM row is among the rows");
    let others: Vec<&Convergence> = stats.iter().filter(|c| c.row != sc.row).collect();
    let listed = |f: &dyn Fn(&Convergence) -> String| {
        stats
            .iter()
            .map(|c| format!("{} {}", c.row, f(c)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sooner = Claim {
        claim: format!(
            "{} reaches its best dev average sooner than the other multi-task models (Figure 3)",
            sc.row
        ),
        ours: format!(
            "first epoch within {NEAR_BEST} of the best: {}",
            listed(&|c| format!("{:.1}", c.near_best_epoch))
        ),
        verdict: if others
            .iter()
            .all(|o| mine.near_best_epoch <= o.near_best_epoch)
        {
            Verdict::Holds
        } else {
            Verdict::Fails
        },
        provisional,
    };
    let fluctuation_cell = |c: &Convergence| match c.fluctuation {
        Some(f) => format!("{f:.2}"),
        None => "–".to_string(),
    };
    let smoother = Claim {
        claim: format!(
            "{} is smoother after epoch {SMOOTH_FROM_EPOCH} than the other multi-task models (Figure 3)",
            sc.row
        ),
        ours: format!(
            "mean |Δ dev average| per epoch after epoch {SMOOTH_FROM_EPOCH}: {}",
            listed(&fluctuation_cell)
        ),
        verdict: match (
            mine.fluctuation,
            others
                .iter()
                .map(|o| o.fluctuation)
                .collect::<Option<Vec<_>>>(),
        ) {
            (Some(m), Some(o)) if o.iter().all(|x| m <= *x) => Verdict::Holds,
            (Some(_), Some(_)) => Verdict::Fails,
            _ => Verdict::Open,
        },
        provisional,
    };
    vec![sooner, smoother]
}

/// The claims as a Markdown table (empty when there is none).
pub fn markdown(claims: &[Claim]) -> String {
    let mut s = String::new();
    if claims.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "\nThe paper's claims on these runs (provisional: a run behind it is partial or has fewer seeds than planned):\n"
    );
    let _ = writeln!(s, "| claim | ours | verdict |");
    let _ = writeln!(s, "|---|---|---|");
    for c in claims {
        let verdict = match c.verdict {
            Verdict::Holds => "holds",
            Verdict::Fails => "fails",
            Verdict::Open => "open",
        };
        let mark = if c.provisional && c.verdict != Verdict::Open {
            " (provisional)"
        } else {
            ""
        };
        let _ = writeln!(s, "| {} | {} | {verdict}{mark} |", c.claim, c.ours);
    }
    s
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::plan::Plan;
    use crate::report::{TaskBest, build};

    const PLAN: &str = r#"
name = "t3"
title = "table 3"
seeds = 1
[[run]]
name = "stl-ner"
row = "STL"
config = { model = "stl", tasks = ["ner"] }
paper = { source = "l1", ner = 89.39 }
[[run]]
name = "stl-chunk"
row = "STL"
config = { model = "stl", tasks = ["chunk"] }
paper = { source = "l1", chunk = 94.44 }
[[run]]
name = "lstm-s"
row = "LSTM-s"
config = { model = "lstm-s", tasks = ["ner", "chunk"] }
[[run]]
name = "sc"
row = "SC-LSTM"
config = { model = "sc-lstm", tasks = ["ner", "chunk"] }
paper = { source = "l4", ner = 89.96, chunk = 96.04 }
[[compare]]
row = "SC-LSTM"
against = ["STL", "LSTM-s"]
"#;

    fn run(
        row: &str,
        name: &str,
        family: Family,
        test: &[(&str, f64)],
        curve: &[f64],
    ) -> RunResult {
        RunResult {
            row: row.into(),
            run: name.into(),
            seed: 1,
            dir: PathBuf::from(name),
            family,
            tasks: test.iter().map(|(t, _)| t.to_string()).collect(),
            epochs: curve.len(),
            planned_epochs: curve.len(),
            done: true,
            best_epoch: 1,
            test: test.iter().map(|(t, v)| (t.to_string(), *v)).collect(),
            dev: BTreeMap::new(),
            per_task: BTreeMap::new(),
            curve: curve.to_vec(),
            hours: 1.0,
            cosines: BTreeMap::new(),
            provenance: None,
        }
    }

    /// A 12-epoch dev curve that first reaches `near` at epoch `at` and then alternates by `wiggle`.
    fn curve(at: usize, wiggle: f64) -> Vec<f64> {
        (1..=12)
            .map(|e| {
                if e < at {
                    80.0
                } else {
                    90.0 + if e % 2 == 0 { wiggle } else { 0.0 }
                }
            })
            .collect()
    }

    fn verdicts(claims: &[Claim]) -> Vec<(String, Verdict, bool)> {
        claims
            .iter()
            .map(|c| (c.claim.clone(), c.verdict, c.provisional))
            .collect()
    }

    #[test]
    fn verdicts_follow_the_runs_and_missing_baselines_stay_open() {
        let plan: Plan = toml::from_str(PLAN).unwrap();
        let runs = vec![
            run("STL", "stl-ner", Family::Stl, &[("ner", 89.0)], &[1.0]),
            run("STL", "stl-chunk", Family::Stl, &[("chunk", 94.0)], &[1.0]),
            run(
                "SC-LSTM",
                "sc",
                Family::ScLstm,
                &[("ner", 89.5), ("chunk", 95.5)],
                &curve(3, 0.1),
            ),
        ];
        let r = build(Some(&plan), runs);
        let v = verdicts(&r.claims);
        assert_eq!(
            v,
            [
                (
                    "SC-LSTM ≥ STL on every task".to_string(),
                    Verdict::Holds,
                    false
                ),
                (
                    "chunk gains most from SC-LSTM over STL (paper: +1.60)".to_string(),
                    Verdict::Holds,
                    false
                ),
                (
                    "SC-LSTM ≥ LSTM-s on every task".to_string(),
                    Verdict::Open,
                    false
                ),
            ]
        );
        assert_eq!(
            r.claims[1].ours,
            "largest gain on chunk (ner +0.50, chunk +1.50)"
        );
        let md = markdown(&r.claims);
        assert!(md.contains("| SC-LSTM ≥ LSTM-s on every task | ner: no LSTM-s run yet, chunk: no LSTM-s run yet | open |"), "{md}");
    }

    #[test]
    fn a_worse_task_fails_and_convergence_is_compared_across_multi_task_rows() {
        let plan: Plan = toml::from_str(PLAN).unwrap();
        let mut partial = run("STL", "stl-chunk", Family::Stl, &[("chunk", 94.0)], &[1.0]);
        partial.done = false;
        let runs = vec![
            run("STL", "stl-ner", Family::Stl, &[("ner", 90.0)], &[1.0]),
            partial,
            run(
                "LSTM-s",
                "lstm-s",
                Family::LstmS,
                &[("ner", 89.0), ("chunk", 95.0)],
                &curve(6, 1.0),
            ),
            run(
                "SC-LSTM",
                "sc",
                Family::ScLstm,
                &[("ner", 89.5), ("chunk", 95.5)],
                &curve(3, 0.2),
            ),
        ];
        let r = build(Some(&plan), runs);
        let v = verdicts(&r.claims);
        // NER is worse than STL: fails, provisional since STL chunk is partial.
        assert_eq!(
            v[0],
            (
                "SC-LSTM ≥ STL on every task".to_string(),
                Verdict::Fails,
                true
            )
        );
        assert_eq!(v[2].1, Verdict::Holds, "better than LSTM-s on both tasks");
        let find = |w: &str| r.claims.iter().find(|c| c.claim.contains(w)).unwrap();
        let sooner = find("sooner");
        assert_eq!(sooner.verdict, Verdict::Holds, "{}", sooner.ours);
        assert!(
            sooner.ours.contains("LSTM-s 6.0, SC-LSTM 3.0"),
            "{}",
            sooner.ours
        );
        let smoother = find("smoother");
        assert_eq!(smoother.verdict, Verdict::Holds, "{}", smoother.ours);
        assert!(
            smoother.ours.contains("LSTM-s 1.00, SC-LSTM 0.20"),
            "{}",
            smoother.ours
        );
    }

    #[test]
    fn convergence_is_open_before_the_smooth_phase() {
        let plan: Plan = toml::from_str(PLAN).unwrap();
        let short = [80.0, 85.0, 86.0];
        let runs = vec![
            run(
                "LSTM-s",
                "lstm-s",
                Family::LstmS,
                &[("ner", 89.0), ("chunk", 95.0)],
                &short,
            ),
            run(
                "SC-LSTM",
                "sc",
                Family::ScLstm,
                &[("ner", 88.0), ("chunk", 94.0)],
                &short,
            ),
        ];
        let r = build(Some(&plan), runs);
        let smoother = r
            .claims
            .iter()
            .find(|c| c.claim.contains("smoother"))
            .unwrap();
        assert_eq!(smoother.verdict, Verdict::Open);
        assert!(
            smoother.ours.contains("LSTM-s –, SC-LSTM –"),
            "{}",
            smoother.ours
        );
    }

    #[test]
    fn a_multi_task_baseline_is_also_compared_at_each_task_s_own_best_epoch() {
        let plan: Plan = toml::from_str(PLAN).unwrap();
        let mut lstm_s = run(
            "LSTM-s",
            "lstm-s",
            Family::LstmS,
            &[("ner", 89.0), ("chunk", 95.0)],
            &curve(6, 1.0),
        );
        // Selected per task, LSTM-s does better on NER than the SC-LSTM's one epoch.
        lstm_s.per_task = BTreeMap::from([
            (
                "ner".to_string(),
                TaskBest {
                    epoch: 4,
                    dev: 91.0,
                    test: 89.8,
                },
            ),
            (
                "chunk".to_string(),
                TaskBest {
                    epoch: 7,
                    dev: 96.0,
                    test: 95.2,
                },
            ),
        ]);
        let sc = run(
            "SC-LSTM",
            "sc",
            Family::ScLstm,
            &[("ner", 89.5), ("chunk", 95.5)],
            &curve(3, 0.2),
        );
        let r = build(Some(&plan), vec![lstm_s, sc]);
        let find = |w: &str| r.claims.iter().find(|c| c.claim.starts_with(w)).unwrap();
        assert_eq!(find("SC-LSTM ≥ LSTM-s").verdict, Verdict::Holds);
        let strict = find("SC-LSTM (one epoch for all tasks) ≥ LSTM-s (each task");
        assert_eq!(strict.verdict, Verdict::Fails, "{}", strict.ours);
        assert_eq!(strict.ours, "ner -0.30, chunk +0.30");
        assert!(
            !r.claims
                .iter()
                .any(|c| c.claim.contains("≥ STL (each task")),
            "single-task baselines have no per-task reading"
        );
    }
}
