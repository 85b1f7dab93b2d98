//! `sclstm sweep` and `sclstm report` on a tiny plan: the GNU parallel list run through
//! `parallel`, the Slurm script through `bash -n`, a fake `sbatch` and a simulated array
//! task, local runs resuming a partial run, and the report's tables, tests and figures.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cli::{ok, sclstm};

const TINY_PLAN: &str = r#"
name = "tiny"
title = "tiny plan"
seeds = 2

[config]
hidden = 8
layers = 1
epochs = 2
batch_size = 5
lr = 0.01

[options]
checkpoint_steps = 3

[[run]]
name = "stl-ner"
row = "STL"
config = { model = "stl", tasks = ["ner"] }
paper = { source = "made-up line", ner = 50.0 }

[[run]]
name = "sc"
row = "SC-LSTM"
config = { model = "sc-lstm", tasks = ["ner", "chunk"] }
options = { log_grads = 2 }

[[compare]]
row = "SC-LSTM"
against = ["STL"]
"#;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh folder holding `plan.toml` (the tiny plan) and an empty runs root `runs/`.
fn setup(name: &str) -> (PathBuf, String, String) {
    let d = std::env::temp_dir().join(format!("sclstm-sweep-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let plan = d.join("plan.toml");
    std::fs::write(&plan, TINY_PLAN).unwrap();
    let root = d.join("runs");
    (
        d.clone(),
        plan.display().to_string(),
        root.display().to_string(),
    )
}

fn status(plan: &str, root: &str) -> String {
    ok(&[
        "sweep",
        plan,
        "--root",
        root,
        "--status",
        "--max-sentences",
        "20",
    ])
}

#[test]
fn parallel_job_list_runs_through_gnu_parallel_and_a_second_sweep_has_nothing_left() {
    let (d, plan, root) = setup("parallel");
    let before = status(&plan, &root);
    assert!(
        before.contains("0 done, 0 partial, 4 missing of 4 runs"),
        "{before}"
    );
    let emit = |extra: &[&str]| {
        let mut args = vec![
            "sweep",
            plan.as_str(),
            "--root",
            root.as_str(),
            "--emit",
            "parallel",
            "--max-sentences",
            "20",
        ];
        args.extend_from_slice(extra);
        sclstm(&args)
    };
    let out = emit(&[]);
    assert!(out.status.success(), "{out:?}");
    let jobs = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = jobs.lines().collect();
    assert_eq!(lines.len(), 4, "{jobs}");
    // `--only` keeps the named runs, in the order given.
    let only = |names: &str| emit(&["--only", names]);
    let out = only("sc,stl-ner");
    let reordered = String::from_utf8_lossy(&out.stdout);
    let dirs: Vec<&str> = reordered
        .lines()
        .map(|l| {
            l.split(" --out ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
        })
        .collect();
    assert!(
        dirs.len() == 4 && dirs[0].ends_with("sc/seed-1") && dirs[3].ends_with("stl-ner/seed-2"),
        "{reordered}"
    );
    // `--only-seeds` keeps the named seeds of each run; a seed the plan lacks is refused.
    let out = emit(&["--only", "sc,stl-ner", "--only-seeds", "2"]);
    let seed_two = String::from_utf8_lossy(&out.stdout);
    let outs: Vec<&str> = seed_two
        .lines()
        .map(|l| l.split(" --out ").nth(1).unwrap())
        .collect();
    assert!(
        outs.len() == 2 && outs.iter().all(|o| o.contains("/seed-2 ")),
        "{seed_two}"
    );
    let out = emit(&["--only-seeds", "3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--only-seeds") && err.contains("seeds 1 to 2"),
        "{err}"
    );
    let out = only("sc,lstm-x");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("--only")
            && err.contains("`lstm-x`")
            && err.contains("stl-ner, sc"),
        "{err}"
    );
    assert!(lines[0].contains(" train --config ") && lines[0].contains("stl-ner/seed-1.toml"));
    assert!(
        lines[2].contains("--log-grads 2"),
        "run options reach the command: {jobs}"
    );
    assert!(!lines[0].contains("--log-grads"), "{jobs}");
    let joblog = d.join("joblog");
    let out = Command::new("parallel")
        .args(["-j", "2", "--joblog"])
        .arg(&joblog)
        .current_dir(repo())
        .stdin(
            std::fs::File::open({
                let p = d.join("jobs.txt");
                std::fs::write(&p, &jobs).unwrap();
                p
            })
            .unwrap(),
        )
        .output()
        .expect("GNU parallel is installed (Debian package `parallel`)");
    assert!(
        out.status.success(),
        "parallel failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(&joblog).unwrap();
    assert_eq!(log.lines().count(), 5, "a header and four jobs: {log}");
    let after = status(&plan, &root);
    assert!(after.contains("4 done, 0 partial, 0 missing"), "{after}");
    assert!(
        after.contains("done     ") && after.contains("(2 of 2 epochs)"),
        "{after}"
    );
    let again = ok(&[
        "sweep",
        &plan,
        "--root",
        &root,
        "--emit",
        "parallel",
        "--max-sentences",
        "20",
    ]);
    assert!(again.is_empty(), "finished runs are skipped: {again}");

    // The report: rows, seeds, paper value and difference, the t-test, gradient conflicts.
    let md = ok(&[
        "report",
        "--plan",
        &plan,
        "--root",
        &root,
        "--max-sentences",
        "20",
    ]);
    assert!(md.contains("| STL | ner |"), "{md}");
    assert!(md.contains("| SC-LSTM | chunk |"), "{md}");
    assert!(md.contains("2 of 2"), "seed counts: {md}");
    assert!(md.contains("made-up line"), "{md}");
    assert!(
        md.contains("| ner | SC-LSTM | STL |"),
        "the compared rows get a test: {md}"
    );
    assert!(
        md.contains("| SC-LSTM | ner/chunk |"),
        "gradient conflicts: {md}"
    );
    let csv = ok(&[
        "report",
        "--plan",
        &plan,
        "--root",
        &root,
        "--max-sentences",
        "20",
        "--format",
        "csv",
    ]);
    assert_eq!(
        csv.lines().count(),
        1 + 2 + 2 * 2 * 2,
        "header, STL ner × 2 seeds, SC ner/chunk × 2 seeds × 2 selections: {csv}"
    );
    let json = ok(&[
        "report",
        "--plan",
        &plan,
        "--root",
        &root,
        "--max-sentences",
        "20",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["runs"].as_array().unwrap().len(), 4);
    let figs = d.join("figs");
    let out = sclstm(&[
        "report",
        "--plan",
        &plan,
        "--root",
        &root,
        "--max-sentences",
        "20",
        "--figures",
        figs.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let svg = std::fs::read_to_string(figs.join("tiny-dev-curves.svg")).unwrap();
    assert!(svg.contains("dev average: ner + chunk") && svg.contains("SC-LSTM (2 seeds)"));

    // A run directory trained with another configuration is refused, naming the key.
    let config = Path::new(&root).join("tiny/sc/seed-2/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("hidden = 8", "hidden = 9")).unwrap();
    for args in [
        vec![
            "report",
            "--plan",
            &plan,
            "--root",
            &root,
            "--max-sentences",
            "20",
        ],
        vec![
            "sweep",
            &plan,
            "--root",
            &root,
            "--max-sentences",
            "20",
            "--emit",
            "parallel",
        ],
    ] {
        let out = sclstm(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("hidden: plan 8 ≠ run 9"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn slurm_script_is_valid_bash_submits_through_sbatch_and_its_tasks_start_then_resume() {
    let (d, plan, root) = setup("slurm");
    let script = ok(&[
        "sweep",
        &plan,
        "--root",
        &root,
        "--emit",
        "slurm",
        "--max-sentences",
        "20",
        "--threads",
        "1",
    ]);
    assert!(script.contains("#SBATCH --array=0-3"), "{script}");
    assert!(script.contains("#SBATCH --cpus-per-task=1"), "{script}");
    assert!(script.contains("#SBATCH --requeue"), "{script}");
    let path = d.join("sweep.sbatch");
    std::fs::write(&path, &script).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );

    // --submit hands the script to sbatch: a fake one on PATH records its arguments.
    let bin = d.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let record = d.join("sbatch-args");
    let fake = bin.join("sbatch");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$@\" > '{}'\necho 'Submitted batch job 42'\n",
            record.display()
        ),
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
    let path_var = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sclstm"))
        .args([
            "sweep",
            &plan,
            "--root",
            &root,
            "--emit",
            "slurm",
            "--submit",
            "--max-sentences",
            "20",
        ])
        .env("PATH", &path_var)
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let submitted = Path::new(&root).join("tiny/sweep.sbatch");
    assert_eq!(
        std::fs::read_to_string(&record).unwrap().trim(),
        submitted.display().to_string()
    );

    // Array task 2 (sc/seed-1) as Slurm would run it: a fresh start, then a requeue.
    let task = |id: &str| {
        Command::new("bash")
            .arg(&submitted)
            .env("SLURM_ARRAY_TASK_ID", id)
            .current_dir(repo())
            .output()
            .unwrap()
    };
    let first = task("2");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let st = status(&plan, &root);
    assert!(
        st.contains("done     ") && st.contains("tiny/sc/seed-1 (2 of 2 epochs)"),
        "{st}"
    );
    let metrics = Path::new(&root).join("tiny/sc/seed-1/metrics.jsonl");
    let before = std::fs::read(&metrics).unwrap();
    let requeued = task("2");
    assert!(
        requeued.status.success(),
        "{}",
        String::from_utf8_lossy(&requeued.stderr)
    );
    assert_eq!(
        std::fs::read(&metrics).unwrap(),
        before,
        "a requeued finished task changes nothing"
    );
    assert!(
        !task("9").status.success(),
        "an unknown array task is an error"
    );
}

#[test]
fn local_sweep_resumes_a_partial_run_and_starts_the_missing_ones() {
    let (_d, plan, root) = setup("local");
    ok(&[
        "sweep",
        &plan,
        "--root",
        &root,
        "--emit",
        "parallel",
        "--max-sentences",
        "20",
        "--seeds",
        "1",
    ]);
    // Interrupt sc/seed-1 inside its first epoch.
    let dir = Path::new(&root).join("tiny/sc/seed-1");
    let cfg = Path::new(&root).join("tiny/sc/seed-1.toml");
    let out = sclstm(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "--quiet",
        "--stop-after-steps",
        "3",
    ]);
    assert!(!out.status.success(), "the run stops as asked");
    let st = status(&plan, &root);
    assert!(
        st.contains("partial  ") && st.contains("tiny/sc/seed-1 (0 of 2 epochs)"),
        "{st}"
    );
    // A start of stl-ner/seed-1 that left files but no checkpoint: restarted with --force.
    let stl = Path::new(&root).join("tiny/stl-ner/seed-1");
    std::fs::create_dir_all(&stl).unwrap();
    std::fs::copy(stl.with_extension("toml"), stl.join("config.toml")).unwrap();
    let st = status(&plan, &root);
    assert!(st.contains("files of a start without checkpoint"), "{st}");
    let jobs = ok(&[
        "sweep",
        &plan,
        "--root",
        &root,
        "--emit",
        "parallel",
        "--max-sentences",
        "20",
        "--seeds",
        "1",
    ]);
    let lines: Vec<&str> = jobs.lines().collect();
    assert!(lines[0].contains("stl-ner/seed-1 --force"), "{jobs}");
    assert!(
        lines[1].contains(" train --resume ") && lines[1].contains("sc/seed-1"),
        "{jobs}"
    );
    let out = sclstm(&[
        "sweep",
        &plan,
        "--root",
        &root,
        "--max-sentences",
        "20",
        "--seeds",
        "1",
        "--run",
        "-j",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("started sc/seed-1") && err.contains("finished stl-ner/seed-1"),
        "{err}"
    );
    let log = std::fs::read_to_string(Path::new(&root).join("tiny/logs/sc-seed-1.log")).unwrap();
    assert!(log.contains("epoch 2:"), "the resumed run's log: {log}");
    let st = ok(&[
        "sweep",
        &plan,
        "--root",
        &root,
        "--status",
        "--max-sentences",
        "20",
        "--seeds",
        "1",
    ]);
    assert!(
        st.contains("2 done, 0 partial, 0 missing of 2 runs"),
        "{st}"
    );
}

/// A plan sharing `tiny`'s SC-LSTM run (`same_as`) beside a run of its own; `hidden` set
/// to anything but 8 makes the shared run's configuration differ from the directory's.
fn pair_plan(hidden: usize) -> String {
    format!(
        r#"
name = "pair"
title = "a plan sharing a run"
seeds = 1
[config]
hidden = {hidden}
layers = 1
epochs = 2
batch_size = 5
lr = 0.01
[[run]]
name = "sc-ner-chunk"
config = {{ model = "sc-lstm", tasks = ["ner", "chunk"] }}
same_as = "tiny/sc"
[[run]]
name = "stl-pos"
config = {{ model = "stl", tasks = ["pos"] }}
"#
    )
}

#[test]
fn a_run_shared_with_another_plan_is_trained_by_its_own_plan_and_read_by_both() {
    let (d, tiny, root) = setup("shared");
    let pair = d.join("pair.toml");
    std::fs::write(&pair, pair_plan(8)).unwrap();
    let pair = pair.display().to_string();
    let flags = ["--root", &root, "--max-sentences", "20", "--seeds", "1"];
    let sweep = |plan: &str, more: &[&str]| {
        let mut args = vec!["sweep", plan];
        args.extend(flags);
        args.extend(more);
        sclstm(&args)
    };
    // The pair plan's own sweep lists only its own run and says who trains the other.
    let out = sweep(&pair, &["--emit", "parallel"]);
    let (jobs, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{err}");
    assert_eq!(jobs.lines().count(), 1, "{jobs}");
    assert!(jobs.contains("pair/stl-pos/seed-1"), "{jobs}");
    assert!(
        err.contains("belong to other plans") && err.contains("tiny/sc/seed-1"),
        "{err}"
    );
    // tiny's sweep trains it, its log in tiny's logs; then the pair plan finds it done.
    let out = sweep(&tiny, &["--run", "--only", "sc", "-j", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = Path::new(&root).join("tiny/logs/sc-seed-1.log");
    assert!(std::fs::read_to_string(&log).unwrap().contains("epoch 2:"));
    let st = String::from_utf8_lossy(&sweep(&pair, &["--status"]).stdout).into_owned();
    assert!(
        st.contains(
            "tiny/sc/seed-1 (2 of 2 epochs) [same as tiny/sc: its own plan's sweep trains it]"
        ),
        "{st}"
    );
    assert!(
        st.contains("pair: 1 done, 0 partial, 1 missing of 2 runs"),
        "{st}"
    );
    // A shared directory trained with another configuration stops the pair plan's sweep.
    std::fs::write(d.join("pair.toml"), pair_plan(16)).unwrap();
    let out = sweep(&pair, &["--emit", "parallel"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("hidden: plan 16"),
        "{err}"
    );
}

#[test]
fn the_readme_results_section_is_what_report_renders_from_results() {
    ok(&[
        "report",
        "--plan",
        "experiments/table3.toml",
        "--plan",
        "experiments/sota.toml",
        "--root",
        "results",
        "--check-readme",
        "README.md",
    ]);
}

/// A `metrics.jsonl` with `epochs` dev-average lines.
fn metrics_lines(epochs: usize) -> String {
    (1..=epochs)
        .map(|e| {
            format!(
                "{{\"epoch\":{e},\"task\":\"average\",\"split\":\"dev\",\"score\":{}.0,\"steps\":1}}\n",
                50 + e
            )
        })
        .collect()
}

/// The `config.toml` lines `collect-results.sh` reads, for a run planned for `epochs`.
fn finished_config(epochs: usize) -> String {
    format!("epochs = {epochs}\npatience = 0\nthreads = 1\n")
}

/// Runs `scripts/collect-results.sh RUNS p RESULTS` with `COMMIT` and extra variables;
/// returns its standard output.
fn collect(runs: &Path, results: &Path, commit: &str, env: &[(&str, &str)]) -> String {
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/collect-results.sh"))
        .args([runs.to_str().unwrap(), "p", results.to_str().unwrap()])
        .env("COMMIT", commit)
        .envs(env.iter().copied())
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn collect_results_copies_finished_runs_once_and_partial_ones_on_request() {
    let tmp = std::env::temp_dir().join(format!("sclstm-collect-done-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let (runs, results) = (tmp.join("runs"), tmp.join("results"));
    // (run, dev averages logged, config): 2 of 5 epochs; 5 of 5; 4 of 30 stopped by
    // patience 2 (metrics_lines rises every epoch, so a flat tail is appended).
    let stopped = format!(
        "{}{}",
        metrics_lines(2),
        "{\"epoch\":3,\"task\":\"average\",\"split\":\"dev\",\"score\":51.0}\n\
         {\"epoch\":4,\"task\":\"average\",\"split\":\"dev\",\"score\":52.0}\n"
    );
    let cases = [
        ("partial", metrics_lines(2), finished_config(5)),
        ("done", metrics_lines(5), finished_config(5)),
        (
            "stopped",
            stopped,
            "epochs = 30\npatience = 2\nthreads = 1\n".to_string(),
        ),
    ];
    for (run, metrics, config) in &cases {
        let dir = runs.join("p").join(run).join("seed-1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("metrics.jsonl"), metrics).unwrap();
        std::fs::write(dir.join("config.toml"), config).unwrap();
    }
    let provenance = |run: &str| {
        std::fs::read_to_string(results.join("p").join(run).join("seed-1/provenance.json"))
            .unwrap_or_default()
    };
    let first = collect(&runs, &results, "aaa1111", &[]);
    assert!(
        first.contains("skipped") && first.contains("partial (2 of 5 epochs"),
        "{first}"
    );
    assert!(
        provenance("partial").is_empty(),
        "a partial run is not copied"
    );
    assert!(provenance("done").contains("aaa1111"), "{first}");
    assert!(
        provenance("stopped").contains("aaa1111"),
        "patience ended it: {first}"
    );
    // Collecting again under another commit leaves the unchanged copies as they are.
    let again = collect(&runs, &results, "bbb2222", &[]);
    assert!(again.contains("unchanged"), "{again}");
    assert!(
        provenance("done").contains("aaa1111"),
        "{}",
        provenance("done")
    );
    let partial = collect(&runs, &results, "ccc3333", &[("PARTIAL", "1")]);
    assert!(provenance("partial").contains("ccc3333"), "{partial}");
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn collect_results_never_replaces_a_longer_run_with_a_shorter_one() {
    let tmp = std::env::temp_dir().join(format!("sclstm-collect-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let (runs, results) = (tmp.join("runs"), tmp.join("results"));
    for (run, here, there) in [("longer-there", 3, 17), ("longer-here", 5, 2)] {
        let dir = runs.join("p").join(run).join("seed-1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("metrics.jsonl"), metrics_lines(here)).unwrap();
        std::fs::write(dir.join("config.toml"), finished_config(here)).unwrap();
        let kept = results.join("p").join(run).join("seed-1");
        std::fs::create_dir_all(&kept).unwrap();
        std::fs::write(kept.join("metrics.jsonl"), metrics_lines(there)).unwrap();
    }
    let stdout = collect(&runs, &results, "abc1234", &[]);
    let epochs = |run: &str| {
        let p = results.join("p").join(run).join("seed-1/metrics.jsonl");
        std::fs::read_to_string(p).unwrap().lines().count()
    };
    assert_eq!(epochs("longer-there"), 17, "the 17-epoch copy is kept");
    assert!(
        stdout.contains("kept") && stdout.contains("longer-there"),
        "{stdout}"
    );
    assert_eq!(
        epochs("longer-here"),
        5,
        "the longer run replaces the shorter copy"
    );
    let provenance =
        std::fs::read_to_string(results.join("p/longer-here/seed-1/provenance.json")).unwrap();
    assert!(provenance.contains("abc1234"), "{provenance}");
    assert!(
        !results
            .join("p/longer-there/seed-1/provenance.json")
            .exists()
    );
}

#[test]
fn collect_results_copies_only_the_runs_named_in_runs() {
    let tmp = std::env::temp_dir().join(format!("sclstm-collect-runs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let (runs, results) = (tmp.join("runs"), tmp.join("results"));
    for run in ["lstm-s", "lstm-d", "sc-lstm"] {
        let dir = runs.join("p").join(run).join("seed-1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("metrics.jsonl"), metrics_lines(2)).unwrap();
        std::fs::write(dir.join("config.toml"), finished_config(2)).unwrap();
    }
    collect(&runs, &results, "def5678", &[("RUNS", "sc-lstm lstm-s")]);
    let copied = |run: &str| results.join("p").join(run).join("seed-1/provenance.json");
    assert!(copied("sc-lstm").exists() && copied("lstm-s").exists());
    assert!(!copied("lstm-d").exists(), "lstm-d is not in RUNS");
    let _ = std::fs::remove_dir_all(&tmp);
}
