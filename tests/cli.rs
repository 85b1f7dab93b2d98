//! The `sclstm` binary on tiny runs of the shipped data.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the binary in the repository root.
pub(crate) fn sclstm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sclstm"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the sclstm binary runs")
}

/// Runs the binary and returns its stdout, failing the test (with both outputs) on error.
pub(crate) fn ok(args: &[&str]) -> String {
    let out = sclstm(args);
    assert!(
        out.status.success(),
        "sclstm {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sclstm-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Flags of a run small enough for a debug build: 20 sentences per split, tiny layers.
const TINY: &[&str] = &[
    "--max-sentences",
    "20",
    "--hidden",
    "8",
    "--layers",
    "2",
    "--batch-size",
    "5",
    "--threads",
    "1",
    "--quiet",
];

pub(crate) fn train(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--out", out.to_str().unwrap()];
    args.extend_from_slice(TINY);
    if !extra.contains(&"--lr") {
        args.extend_from_slice(&["--lr", "0.01"]);
    }
    args.extend_from_slice(extra);
    sclstm(&args)
}

/// Score fields of `metrics.jsonl` (timings dropped: they differ run to run).
fn scores(run: &Path) -> Vec<(u64, String, String, String)> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["epoch"].as_u64().unwrap(),
                v["task"].as_str().unwrap().to_string(),
                v["split"].as_str().unwrap().to_string(),
                format!("{} {} {}", v["score"], v["train_loss"], v["steps"]),
            )
        })
        .collect()
}

#[test]
fn same_seed_and_threads_give_identical_metrics() {
    let (a, b) = (temp_dir("det-a"), temp_dir("det-b"));
    for d in [&a, &b] {
        let out = train(d, &["--epochs", "2"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let sa = scores(&a);
    let dev = sa.iter().filter(|l| l.2 == "dev").count();
    let test = sa.iter().filter(|l| l.2 == "test").count();
    assert_eq!(dev, 2 * 4, "2 epochs × (3 tasks + average): {sa:?}");
    assert!(
        test >= 3 && test % 3 == 0,
        "3 test lines per improving epoch: {sa:?}"
    );
    // Every task's own best dev epoch has test scores (`sclstm report`'s per-task reading).
    for task in ["ner", "chunk", "pos"] {
        let dev_score = |l: &(u64, String, String, String)| -> f64 {
            l.3.split(' ').next().unwrap().parse().unwrap()
        };
        let best = sa
            .iter()
            .filter(|l| l.1 == task && l.2 == "dev")
            .fold(None::<(u64, f64)>, |b, l| match b {
                Some((_, s)) if dev_score(l) <= s => b,
                _ => Some((l.0, dev_score(l))),
            })
            .unwrap();
        assert!(
            sa.iter()
                .any(|l| l.0 == best.0 && l.1 == task && l.2 == "test"),
            "{task}: no test score at its best dev epoch {}: {sa:?}",
            best.0
        );
    }
    assert_eq!(sa, scores(&b));
    assert_eq!(
        std::fs::read(a.join("best.safetensors")).unwrap(),
        std::fs::read(b.join("best.safetensors")).unwrap()
    );
    let c = temp_dir("det-c");
    assert!(
        train(&c, &["--epochs", "2", "--seed", "7"])
            .status
            .success()
    );
    assert_ne!(scores(&c), sa, "another seed trains another model");
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let (full, cut) = (temp_dir("resume-full"), temp_dir("resume-cut"));
    assert!(
        train(&full, &["--epochs", "2", "--log-grads", "2"])
            .status
            .success()
    );
    // 20 sentences × 3 tasks / 5 per batch = 12 batches per epoch: stop inside epoch 2.
    let out = train(
        &cut,
        &[
            "--epochs",
            "2",
            "--log-grads",
            "2",
            "--stop-after-steps",
            "17",
            "--checkpoint-steps",
            "0",
        ],
    );
    assert!(
        !out.status.success(),
        "the interrupted run reports that it stopped"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));
    // A run killed after its checkpoint had logged the next steps' gradients too (as
    // this one would have, steps 18 and 20): the resume logs them once.
    let grads = |dir: &Path| std::fs::read_to_string(dir.join("grads.jsonl")).unwrap();
    let mut logged = grads(&cut);
    let full_grads = grads(&full);
    let past: Vec<&str> = full_grads.lines().skip(8).take(2).collect();
    assert!(past[0].starts_with("{\"step\":18,"), "{past:?}");
    logged.extend(past.iter().flat_map(|l| [*l, "\n"]));
    std::fs::write(cut.join("grads.jsonl"), logged).unwrap();
    let cut_dir = cut.to_str().unwrap();
    ok(&["train", "--resume", cut_dir, "--quiet", "--log-grads", "2"]);
    assert_eq!(scores(&cut), scores(&full));
    assert_eq!(
        std::fs::read(cut.join("best.safetensors")).unwrap(),
        std::fs::read(full.join("best.safetensors")).unwrap()
    );
    assert_eq!(grads(&cut), grads(&full));
}

#[test]
fn run_directory_holds_every_documented_file() {
    let run = temp_dir("files");
    let out = train(&run, &["--epochs", "1", "--log-grads", "4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "config.toml",
        "vocab.json",
        "best.safetensors",
        "last.safetensors",
        "metrics.jsonl",
        "coverage.txt",
        "datasets.json",
        "grads.jsonl",
    ] {
        assert!(run.join(f).is_file(), "missing {f}");
    }
    let grads = std::fs::read_to_string(run.join("grads.jsonl")).unwrap();
    assert_eq!(grads.lines().count(), 3, "12 steps, one line every 4");
    let g: serde_json::Value = serde_json::from_str(grads.lines().next().unwrap()).unwrap();
    for pair in ["ner/chunk", "ner/pos", "chunk/pos"] {
        let c = g["cosine"][pair].as_f64().unwrap();
        assert!((-1.0..=1.0).contains(&c), "{pair}: {c}");
    }
    assert!(g["shared_norm"]["ner"].as_f64().unwrap() > 0.0);
    assert!(g["update_ratio"].as_f64().unwrap() > 0.0);
    let leftovers: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn eval_predictions_score_the_same_through_conlleval_format() {
    let run = temp_dir("eval");
    assert!(
        train(&run, &["--epochs", "1", "--tasks", "ner,pos"])
            .status
            .success()
    );
    let preds = run.join("preds.txt");
    let report = ok(&[
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--task",
        "ner",
        "--split",
        "dev",
        "--write-predictions",
        preds.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&preds).unwrap();
    let again = sclstm_data::conlleval::report_from_text(&text).unwrap();
    assert!(
        report.contains(&again),
        "eval report:\n{report}\nconlleval on the written file:\n{again}"
    );
    assert_eq!(
        text.lines().filter(|l| !l.is_empty()).count(),
        51362,
        "every dev token of CoNLL-2003"
    );
}

#[test]
fn non_finite_loss_stops_with_a_typed_error() {
    let run = temp_dir("nan");
    let out = train(&run, &["--epochs", "1", "--lr", "1e30", "--clip", "1e30"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("non-finite"), "{err}");
    assert!(
        !run.join("best.safetensors").exists(),
        "no checkpoint from a diverged run"
    );
}

#[test]
fn unwritable_run_directory_fails_before_training() {
    let out = train(
        Path::new("/proc/sclstm-cannot-exist/run"),
        &["--epochs", "1"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("run directory"), "{err}");
    assert!(!err.contains("epoch 1"), "no training happened: {err}");
}

#[test]
fn bad_flags_are_errors_naming_the_key() {
    // A user's RUST_BACKTRACE does not turn an input error into a stack dump.
    let out = sclstm_in(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &[("RUST_BACKTRACE", "1")],
        &["train", "--dropout", "1.5", "--out", "/tmp/never"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("dropout"),
        "{err}"
    );
    assert!(!err.to_lowercase().contains("backtrace"), "{err}");
    let dir = temp_dir("bad-task");
    let out = sclstm(&[
        "train",
        "--tasks",
        "ner,srl",
        "--out",
        dir.to_str().unwrap(),
        "--epochs",
        "1",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("srl"));
    // A start that fails before writing anything leaves nothing that blocks the next one.
    let left: Vec<_> = std::fs::read_dir(&dir).map_or(Vec::new(), |d| d.flatten().collect());
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn stats_prints_the_readme_counts() {
    let out = ok(&["stats"]);
    for n in ["14,041", "203,621", "8,936", "211,727", "12,543", "204,586"] {
        assert!(out.contains(n), "missing {n} in\n{out}");
    }
}

#[test]
fn predict_tags_every_task_and_plot_draws_the_run() {
    let run = temp_dir("predict");
    assert!(
        train(
            &run,
            &[
                "--epochs",
                "2",
                "--tasks",
                "ner,chunk,pos",
                "--log-grads",
                "6"
            ]
        )
        .status
        .success()
    );
    let input = run.join("input.txt");
    std::fs::write(
        &input,
        "EU rejects German call to boycott British lamb.\nPeter Blackburn isn't here.\n",
    )
    .unwrap();
    let out = ok(&[
        "predict",
        "--run",
        run.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--format",
        "text",
    ]);
    let sentences: Vec<&str> = out.split("\n\n").filter(|s| !s.trim().is_empty()).collect();
    assert_eq!(sentences.len(), 2, "{out}");
    let first: Vec<Vec<&str>> = sentences[0]
        .lines()
        .map(|l| l.split('\t').collect())
        .collect();
    assert_eq!(first.len(), 9, "8 words and the period: {out}");
    assert!(
        first.iter().all(|cols| cols.len() == 4),
        "word + ner, chunk, pos columns: {out}"
    );
    assert_eq!(first[8][0], ".");
    assert!(
        sentences[1].lines().any(|l| l.starts_with("n't\t")),
        "clitics are split: {out}"
    );
    let vocab = std::fs::read_to_string(run.join("vocab.json")).unwrap();
    for cols in &first {
        for tag in &cols[1..] {
            assert!(
                vocab.contains(&format!("\"{tag}\"")),
                "`{tag}` is a tag of the run"
            );
        }
    }
    let conll = run.join("input.conll");
    std::fs::write(
        &conll,
        "-DOCSTART- -X- O O\n\nEU NNP\nrejects VBZ\n\nLamb NN\n",
    )
    .unwrap();
    let out = ok(&[
        "predict",
        "--run",
        run.to_str().unwrap(),
        "--input",
        conll.to_str().unwrap(),
    ]);
    assert_eq!(out.lines().filter(|l| !l.is_empty()).count(), 3, "{out}");

    let figs = run.join("figs");
    ok(&[
        "plot",
        "--run",
        run.to_str().unwrap(),
        "--out",
        figs.to_str().unwrap(),
    ]);
    for f in ["dev_scores", "train_loss", "grad_conflict"] {
        let svg = std::fs::read_to_string(figs.join(format!("{f}.svg"))).unwrap();
        assert!(svg.contains("<svg") && svg.contains("polyline"), "{f}");
        let png = std::fs::read(figs.join(format!("{f}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{f}");
    }
    let pdfs = run.join("pdfs");
    ok(&[
        "plot",
        "--run",
        run.to_str().unwrap(),
        "--out",
        pdfs.to_str().unwrap(),
        "--format",
        "pdf",
    ]);
    let mut names: Vec<String> = std::fs::read_dir(&pdfs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["dev_scores.pdf", "grad_conflict.pdf", "train_loss.pdf"]
    );
}

#[test]
fn gradcheck_passes_every_op_layer_and_model() {
    let out = ok(&["gradcheck"]);
    for name in [
        "matmul",
        "char_conv_maxpool",
        "bilstm_layer",
        "bi_sc_lstm_layer (chained)",
        "crf_nll",
        "model sc-lstm",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with("ok") && l.contains(name)),
            "{name} missing:\n{out}"
        );
    }
    assert!(!out.lines().any(|l| l.starts_with("FAIL")), "{out}");
    assert!(
        !sclstm(&["gradcheck", "--filter", "no-such-check"])
            .status
            .success()
    );
}

/// Whether this CPU runs a kernel set of `SCLSTM_KERNELS`.
fn cpu_runs(kernels: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match kernels {
            "avx512" => std::is_x86_feature_detected!("avx512f"),
            "avx2" => std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"),
            _ => true,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        kernels == "portable"
    }
}

#[test]
fn gradcheck_passes_with_every_kernel_set_this_cpu_runs() {
    // Each set has its own register tiles and weight layout (strips with AVX-512 and
    // AVX2, row-major with the portable set); the layers' gradients are exact on each.
    for kernels in ["avx512", "avx2", "portable"] {
        let out = Command::new(env!("CARGO_BIN_EXE_sclstm"))
            .args(["gradcheck"])
            .env("SCLSTM_KERNELS", kernels)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if cpu_runs(kernels) {
            assert!(out.status.success(), "{kernels}: {text}{}", stderr(&out));
            assert!(text.contains("model sc-lstm"), "{kernels}: {text}");
            assert!(
                !text.lines().any(|l| l.starts_with("FAIL")),
                "{kernels}: {text}"
            );
        } else {
            assert!(
                !out.status.success(),
                "{kernels} is not on this CPU: {text}"
            );
            assert!(stderr(&out).contains("SCLSTM_KERNELS"), "{}", stderr(&out));
        }
    }
}

#[test]
fn every_kernel_set_trains_the_same_model_to_rounding() {
    // 4H = 80 gate columns: three strips, the last one partial, so the register tiles
    // (AVX-512 and AVX2, weights in strips) meet whole, inner and masked column tiles.
    let losses = |kernels: &str| -> Vec<f64> {
        let dir = temp_dir(&format!("kernels-{kernels}"));
        // TINY with wider layers.
        let mut args = vec!["train", "--out", dir.to_str().unwrap()];
        for pair in TINY.chunks(2) {
            args.extend_from_slice(if pair[0] == "--hidden" {
                &["--hidden", "20"]
            } else {
                pair
            });
        }
        args.extend_from_slice(&["--epochs", "1", "--lr", "0.01"]);
        let out = Command::new(env!("CARGO_BIN_EXE_sclstm"))
            .args(&args)
            .env("SCLSTM_KERNELS", kernels)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{kernels}: {}", stderr(&out));
        let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        text.lines()
            .filter_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["train_loss"].as_f64()
            })
            .collect()
    };
    let reference = losses("portable");
    assert!(reference.len() >= 3, "{reference:?}");
    for kernels in ["avx512", "avx2"].into_iter().filter(|k| cpu_runs(k)) {
        let got = losses(kernels);
        assert_eq!(got.len(), reference.len(), "{kernels}");
        for (x, y) in reference.iter().zip(&got) {
            assert!(
                (x - y).abs() <= 1e-4 * x.abs(),
                "{kernels}: {got:?} vs portable {reference:?}"
            );
        }
    }
}

/// Every file of a run directory with its bytes.
fn files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Directories next to `dir` whose names extend its name (`<dir>.old-…`, `<dir>.new-…`).
fn siblings(dir: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}.", dir.file_name().unwrap().to_string_lossy());
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .collect();
    out.sort();
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn eval_dev(run: &Path) -> Output {
    let run = run.to_str().unwrap();
    sclstm(&[
        "eval",
        "--run",
        run,
        "--split",
        "dev",
        "--task",
        "ner",
        "--threads",
        "1",
    ])
}

#[test]
fn a_second_train_into_a_finished_run_changes_nothing() {
    let run = temp_dir("keep");
    assert!(
        train(&run, &["--epochs", "1", "--tasks", "ner"])
            .status
            .success()
    );
    let before = files(&run);

    // The same command with other data: refused before anything is read or written.
    let out = train(&run, &["--epochs", "1", "--tasks", "ner,pos"]);
    assert!(!out.status.success(), "a second run into a finished one");
    let err = stderr(&out);
    let name = run.to_str().unwrap();
    assert!(err.contains(name), "names the directory: {err}");
    assert!(
        err.contains(&format!("--resume {name}")) && err.contains("--force"),
        "names both ways on: {err}"
    );
    assert!(!err.contains("task ner:"), "no data was loaded: {err}");
    assert_eq!(files(&run), before, "the run directory is untouched");
    assert!(siblings(&run).is_empty());
}

#[test]
fn a_directory_mixing_two_runs_is_refused_naming_the_files() {
    let (run, other) = (temp_dir("mixed"), temp_dir("mixed-other"));
    assert!(
        train(&run, &["--epochs", "1", "--tasks", "ner"])
            .status
            .success()
    );
    let before = files(&run);
    let name = run.to_str().unwrap();
    let scored = eval_dev(&run);
    assert!(scored.status.success(), "{}", stderr(&scored));

    // A directory whose vocabulary or configuration comes from another run is refused by
    // eval, predict, inspect and --resume, naming the files (it used to be scored, exit 0).
    let mut args: Vec<&str> = vec!["train", "--out", other.to_str().unwrap()];
    args.extend(TINY.iter().map(|a| if *a == "20" { "10" } else { a }));
    args.extend(["--lr", "0.01", "--epochs", "1", "--tasks", "ner"]);
    ok(&args);
    for file in ["vocab.json", "config.toml"] {
        std::fs::copy(other.join(file), run.join(file)).unwrap();
        let out = eval_dev(&run);
        assert!(!out.status.success(), "eval of a mixed directory ({file})");
        let err = stderr(&out);
        assert!(
            err.contains("mixes files of different runs")
                && err.contains(&format!("best.safetensors was trained with another {file}")),
            "{err}"
        );
        let input = other.join("input.txt");
        std::fs::write(&input, "EU rejects German call.\n").unwrap();
        let out = sclstm(&[
            "predict",
            "--run",
            name,
            "--input",
            input.to_str().unwrap(),
            "--format",
            "text",
        ]);
        assert!(!out.status.success() && stderr(&out).contains(file));
        let gold = other.join("gold.conll");
        std::fs::write(&gold, "EU B-ORG\nrejects O\n").unwrap();
        let dump = other.join("dump.safetensors");
        let out = sclstm(&[
            "inspect",
            "--run",
            name,
            "--input",
            &format!("{}:conll", gold.display()),
            "--out",
            dump.to_str().unwrap(),
        ]);
        assert!(!out.status.success() && stderr(&out).contains(file));
        assert!(!dump.exists());
        let out = sclstm(&["train", "--resume", name, "--quiet"]);
        assert!(!out.status.success(), "resume of a mixed directory");
        assert!(
            stderr(&out).contains(&format!("last.safetensors was trained with another {file}")),
            "{}",
            stderr(&out)
        );
        std::fs::write(run.join(file), &before[file]).unwrap();
    }
    std::fs::copy(other.join("best.safetensors"), run.join("best.safetensors")).unwrap();
    let err = stderr(&eval_dev(&run));
    assert!(
        err.contains("best.safetensors was trained with another vocab.json"),
        "{err}"
    );
    std::fs::write(run.join("best.safetensors"), &before["best.safetensors"]).unwrap();
    let again = eval_dev(&run);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(
        again.stdout, scored.stdout,
        "the restored run scores as before"
    );
}

#[test]
fn force_swaps_the_new_run_in_at_its_first_checkpoint() {
    let run = temp_dir("force");
    assert!(
        train(&run, &["--epochs", "1", "--tasks", "ner"])
            .status
            .success()
    );
    let before = files(&run);

    // Replacements that stop before their first checkpoint leave the run as it was.
    let diverges = train(
        &run,
        &[
            "--epochs",
            "1",
            "--tasks",
            "ner",
            "--force",
            "--lambda",
            "ner=1e308",
        ],
    );
    assert!(!diverges.status.success());
    assert!(
        stderr(&diverges).contains("non-finite"),
        "{}",
        stderr(&diverges)
    );
    let no_data = train(&run, &["--force", "--embeddings", "/no/such/vectors.txt"]);
    assert!(!no_data.status.success());
    assert!(stderr(&no_data).contains("/no/such/vectors.txt"));
    assert_eq!(files(&run), before, "the run directory is untouched");
    assert!(siblings(&run).is_empty(), "nothing left beside it");

    // One stopped right after its first (step) checkpoint has replaced the old run, which
    // is kept whole beside it, and resumes from the new place.
    let out = train(
        &run,
        &[
            "--epochs",
            "1",
            "--tasks",
            "ner,pos",
            "--force",
            "--stop-after-steps",
            "2",
            "--checkpoint-steps",
            "0",
        ],
    );
    assert!(!out.status.success(), "stopped as asked");
    assert!(
        stderr(&out).contains(&format!("--resume {}", run.display())),
        "{}",
        stderr(&out)
    );
    let aside = siblings(&run);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(aside[0].to_string_lossy().contains(".old-"), "{aside:?}");
    assert_eq!(files(&aside[0]), before, "the old run, whole");
    assert!(run.join("last.safetensors").is_file() && !run.join("best.safetensors").exists());
    ok(&["train", "--resume", run.to_str().unwrap(), "--quiet"]);
    let vocab = std::fs::read_to_string(run.join("vocab.json")).unwrap();
    assert!(vocab.contains("\"pos\""), "the new run's tasks");
    assert!(eval_dev(&run).status.success());

    // A second replacement, swapped in at its epoch end, keeps the first one too.
    let resumed = files(&run);
    let out = train(&run, &["--epochs", "1", "--tasks", "ner", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("the run it replaced"));
    let aside2 = siblings(&run);
    assert_eq!(aside2.len(), 2, "{aside2:?}");
    let newest = aside2.iter().find(|p| !aside.contains(p)).unwrap();
    assert_eq!(files(newest), resumed);
    assert!(eval_dev(&run).status.success());
    for d in aside2 {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn runs_written_without_hashes_still_evaluate_and_resume() {
    use sclstm_model::checkpoint::{read_tensors, write_tensors};
    let run = temp_dir("legacy");
    let out = train(
        &run,
        &[
            "--epochs",
            "2",
            "--tasks",
            "ner",
            "--stop-after-steps",
            "6",
            "--checkpoint-steps",
            "0",
        ],
    );
    assert!(!out.status.success(), "stopped inside epoch 2");
    let scored = eval_dev(&run);
    assert!(scored.status.success(), "{}", stderr(&scored));
    // The layout of earlier versions: no hash in vocab.json nor in the checkpoints.
    let path = run.join("vocab.json");
    let mut vocab: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(
        vocab
            .as_object_mut()
            .unwrap()
            .remove("config_sha256")
            .is_some()
    );
    std::fs::write(&path, vocab.to_string()).unwrap();
    for f in ["best.safetensors", "last.safetensors"] {
        let (tensors, mut meta) = read_tensors(&run.join(f)).unwrap();
        for k in ["sclstm.config_sha256", "sclstm.vocab_sha256"] {
            assert!(meta.remove(k).is_some(), "{f} records {k}");
        }
        // Read widened to f64; written back as the f32 tensors they were.
        let tensors: Vec<_> = tensors
            .into_iter()
            .map(|(n, m)| (n, m.mapv(|x| x as f32)))
            .collect();
        write_tensors(&run.join(f), &tensors, &meta).unwrap();
    }
    let legacy = eval_dev(&run);
    assert!(legacy.status.success(), "{}", stderr(&legacy));
    assert_eq!(legacy.stdout, scored.stdout);
    ok(&["train", "--resume", run.to_str().unwrap(), "--quiet"]);
    assert_eq!(scores(&run).iter().filter(|l| l.1 == "average").count(), 2);
    assert!(eval_dev(&run).status.success());
}

#[test]
fn stl_refuses_before_training_any_task() {
    let run = temp_dir("stl-keep");
    std::fs::create_dir_all(run.join("stl-chunk")).unwrap();
    std::fs::write(run.join("stl-chunk/config.toml"), "kept").unwrap();
    let out = train(
        &run,
        &["--model", "stl", "--tasks", "ner,chunk", "--epochs", "1"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("stl-chunk"), "{}", stderr(&out));
    assert!(!run.join("stl-ner").exists(), "no task was trained");
    assert_eq!(
        std::fs::read_to_string(run.join("stl-chunk/config.toml")).unwrap(),
        "kept"
    );
}

/// Every tensor of the checkpoints in `run` that exist is finite (reading refuses others).
fn checkpoints_are_finite(run: &Path) {
    for f in ["last.safetensors", "best.safetensors"] {
        let p = run.join(f);
        if p.exists() {
            sclstm_model::checkpoint::read_tensors(&p)
                .unwrap_or_else(|e| panic!("{f} is not a good checkpoint: {e}"));
        }
    }
}

#[test]
fn a_diverging_update_writes_no_checkpoint_and_says_which_parameter() {
    // lr 1e39 is infinite in f32: the first update makes the parameters non-finite.
    let run = temp_dir("diverge");
    let out = train(
        &run,
        &["--epochs", "1", "--lr", "1e39", "--checkpoint-steps", "1"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the parameters diverged by step 1") && err.contains("parameter `"),
        "{err}"
    );
    assert!(!run.join("last.safetensors").exists(), "{err}");
    checkpoints_are_finite(&run);

    // Between checkpoints the parameters go non-finite unnoticed until the next loss: a
    // NaN caught inside the loss is reported in the run's terms, not the tape's.
    let run = temp_dir("diverge-loss");
    let out = train(&run, &["--epochs", "1", "--lr", "1e30", "--clip", "1e30"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("non-finite loss") && err.contains("for task `"),
        "{err}"
    );
    assert!(!err.contains("cross_entropy:"), "{err}");
    checkpoints_are_finite(&run);
}

#[test]
fn a_live_train_holds_its_directory_and_dead_processes_leave_nothing_behind() {
    let run = temp_dir("lock");
    let cut = train(&run, &["--epochs", "1", "--stop-after-steps", "2"]);
    assert!(!cut.status.success(), "stopped as asked");
    assert!(
        !run.join("train.lock").exists(),
        "the lock goes with its process"
    );
    // A lock naming a live process (this test) refuses a second train.
    std::fs::write(run.join("train.lock"), format!("{}\n", std::process::id())).unwrap();
    let out = sclstm(&["train", "--resume", run.to_str().unwrap(), "--quiet"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("in use by another"),
        "{err}"
    );
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    // A lock and a temporary file of dead processes (pids above Linux's pid_max) are
    // taken over and cleaned.
    std::fs::write(run.join("train.lock"), "4194305\n").unwrap();
    let stale = run.join(".last.safetensors.tmp-4194305");
    std::fs::write(&stale, b"half a checkpoint").unwrap();
    let out = sclstm(&["train", "--resume", run.to_str().unwrap(), "--quiet"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("removed temporary files") && !stale.exists(),
        "{err}"
    );
    assert!(!run.join("train.lock").exists());
}

/// Runs sclstm in `dir` with extra environment variables.
pub(crate) fn sclstm_in(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sclstm"))
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .expect("the sclstm binary runs")
}

/// Runs sclstm with its standard output closed before it writes anything; returns its stderr
/// after checking that it ended quietly (success, or killed by SIGPIPE as other Unix tools are).
fn with_closed_stdout(args: &[&str]) -> String {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sclstm"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the sclstm binary runs");
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut err)
        .expect("stderr is text");
    let status = child.wait().expect("sclstm ends");
    assert!(
        !err.contains("panicked"),
        "sclstm {args:?} panicked:\n{err}"
    );
    assert!(!err.contains("Broken pipe"), "sclstm {args:?}:\n{err}");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert!(
            status.success() || status.signal() == Some(libc::SIGPIPE),
            "sclstm {args:?} ended with {status:?}:\n{err}"
        );
    }
    #[cfg(not(unix))]
    assert_ne!(status.code(), Some(101), "{err}");
    err
}

pub(crate) fn fails_with(args: &[&str], needles: &[&str]) {
    let out = sclstm(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "sclstm {args:?} succeeded");
    assert!(
        !err.contains("panicked"),
        "sclstm {args:?} panicked:\n{err}"
    );
    for n in needles {
        assert!(err.contains(n), "sclstm {args:?}: `{n}` missing in\n{err}");
    }
}

#[test]
fn closed_stdout_ends_commands_quietly() {
    with_closed_stdout(&["stats"]);
    with_closed_stdout(&["gradcheck", "--filter", "matmul"]);
}

#[test]
fn numeric_flags_and_toml_keys_are_range_checked() {
    let out = ["--out", "/tmp/sclstm-never"];
    for (flag, key) in [
        ("--clip=-1", "`clip` (--clip)"),
        ("--clip=nan", "`clip` (--clip)"),
        ("--epochs=0", "`epochs` (--epochs)"),
        ("--lr=inf", "`lr` (--lr)"),
        ("--batch-size=0", "`batch_size` (--batch-size)"),
        ("--max-sentences=0", "`max_sentences` (--max-sentences)"),
        ("--hidden=4611686018427387904", "`hidden` (--hidden)"),
        ("--hidden=1000000", "`hidden` (--hidden)"),
        ("--layers=0", "`layers` (--layers)"),
        ("--threads=100000", "cores of this machine"),
    ] {
        fails_with(&["train", flag, out[0], out[1]], &[key]);
    }
    let dir = temp_dir("toml-clip");
    std::fs::create_dir_all(&dir).unwrap();
    let toml = dir.join("bad.toml");
    std::fs::write(&toml, "clip = -1\n").unwrap();
    fails_with(
        &["train", "--config", toml.to_str().unwrap(), out[0], out[1]],
        &["bad.toml", "`clip`"],
    );
    fails_with(
        &["eval", "--run", "/tmp/sclstm-never", "--threads", "100000"],
        &["--threads", "cores"],
    );
    let help = ok(&["bench", "--help"]);
    assert!(
        help.contains("[default: 0]") && !help.contains("[default: 2]"),
        "{help}"
    );
}

#[test]
fn score_reads_conlleval_input_with_its_options() {
    let dir = temp_dir("score");
    std::fs::create_dir_all(&dir).unwrap();
    let spaced = "EU B-ORG B-ORG\nrejects O O\nGerman B-MISC B-LOC\n\n-X- -X- -X-\nPeter B-PER B-PER\nBlackburn I-PER O\n";
    let file = dir.join("preds.txt");
    std::fs::write(&file, format!("\u{feff}{spaced}")).unwrap();
    let report = ok(&["score", file.to_str().unwrap()]);
    assert_eq!(
        report,
        sclstm_data::conlleval::report_from_text(spaced).unwrap()
    );
    assert!(report.starts_with("processed 5 tokens with 3 phrases; found: 3 phrases; correct: 1."));
    let tabbed = dir.join("preds.tsv");
    std::fs::write(&tabbed, spaced.replace(' ', "\t")).unwrap();
    assert_eq!(
        ok(&["score", "-d", "\\t", tabbed.to_str().unwrap()]),
        report
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["score", "--json", file.to_str().unwrap()])).unwrap();
    assert_eq!(
        (json["gold"].as_u64(), json["correct"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(json["types"]["PER"]["found"].as_u64(), Some(1));
    let raw = dir.join("raw.txt");
    std::fs::write(&raw, "a NN NN\nb NN NONE\nc NONE VB\n").unwrap();
    let r = ok(&["score", "-r", "-o", "NONE", raw.to_str().unwrap()]);
    assert!(
        r.starts_with("processed 3 tokens with 2 phrases; found: 2 phrases; correct: 1."),
        "{r}"
    );
    let bioes = dir.join("bioes.txt");
    std::fs::write(&bioes, "a B-X B-X\nb E-X E-X\nc S-Y S-Y\n").unwrap();
    let r = ok(&["score", "--scheme", "bioes", bioes.to_str().unwrap()]);
    assert!(
        r.starts_with("processed 3 tokens with 2 phrases; found: 2 phrases; correct: 2."),
        "{r}"
    );
    let bad = dir.join("bad.txt");
    std::fs::write(&bad, "a O O\nb O O O\n").unwrap();
    fails_with(&["score", bad.to_str().unwrap()], &["bad.txt", "line 2"]);
    let missing = dir.join("missing.txt");
    fails_with(&["score", missing.to_str().unwrap()], &["missing.txt"]);
}

#[test]
fn shipped_data_is_found_from_another_directory() {
    let elsewhere = temp_dir("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let out = sclstm_in(&elsewhere, &[("SCLSTM_DATA", "")], &["stats"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("14,041"));
    let out = sclstm_in(
        &elsewhere,
        &[("SCLSTM_DATA", "/sclstm-no-such-root")],
        &["stats", "--datasets", "datasets/none"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for place in [
        "looked in",
        "/sclstm-no-such-root/none",
        "share/sclstm/datasets/none",
    ] {
        assert!(err.contains(place), "`{place}` missing in\n{err}");
    }
    // The same tiny run from the repository and from elsewhere: same config.toml, same scores.
    let (here, there) = (temp_dir("found-here"), temp_dir("found-there"));
    let flags = ["--epochs", "1", "--tasks", "ner", "--lr", "0.01"];
    assert!(train(&here, &flags).status.success());
    let mut args = vec!["train", "--out", there.to_str().unwrap()];
    args.extend_from_slice(TINY);
    args.extend_from_slice(&flags);
    let out = sclstm_in(&elsewhere, &[("SCLSTM_DATA", "")], &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = std::fs::read(here.join("config.toml")).unwrap();
    assert_eq!(config, std::fs::read(there.join("config.toml")).unwrap());
    assert!(String::from_utf8_lossy(&config).contains("datasets = \"datasets\""));
    assert_eq!(scores(&here), scores(&there));
}

#[test]
fn eval_and_predict_write_boundary_words_escaped_and_survive_a_closed_stdout() {
    let run = temp_dir("boundary");
    assert!(
        train(&run, &["--epochs", "1", "--tasks", "ner"])
            .status
            .success()
    );
    let r = run.to_str().unwrap();
    with_closed_stdout(&["eval", "--run", r, "--split", "dev"]);
    let input = run.join("input.txt");
    std::fs::write(
        &input,
        "EU NNP I-NP I-ORG\n-X- NN I-NP O\nrejects VBZ I-VP O\n\nPeter NNP I-NP I-PER\n",
    )
    .unwrap();
    let spec = format!("{}:conll2003", input.display());
    let preds = run.join("preds.txt");
    let report = ok(&[
        "eval",
        "--run",
        r,
        "--input",
        &spec,
        "--write-predictions",
        preds.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&preds).unwrap();
    assert!(text.contains("\n\\-X- O "), "{text}");
    let again = sclstm_data::conlleval::report_from_text(&text).unwrap();
    assert!(again.starts_with("processed 4 tokens"), "{again}");
    assert!(
        report.contains(&again),
        "eval:\n{report}\nconlleval:\n{again}"
    );
    let tagged = ok(&["predict", "--run", r, "--input", input.to_str().unwrap()]);
    assert!(tagged.lines().any(|l| l.starts_with("\\-X-\t")), "{tagged}");
}

#[test]
fn without_a_terminal_progress_comes_as_lines_and_ctrl_c_saves_and_says_how_to_resume() {
    use std::io::{BufRead, BufReader};
    let run = temp_dir("sigint");
    let mut args: Vec<String> = ["train", "--out", run.to_str().unwrap(), "--epochs", "50"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(
        TINY.iter()
            .filter(|a| **a != "--quiet")
            .map(|s| s.to_string()),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_sclstm"))
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    let mut lines = stderr.lines();
    // stderr is a pipe: the first step of an epoch prints a progress line.
    for line in lines.by_ref() {
        let line = line.unwrap();
        let progress = line.starts_with("epoch 1: 1/") && line.contains("tokens/s");
        seen.push(line);
        if progress {
            break;
        }
    }
    assert!(
        seen.last()
            .is_some_and(|l| l.contains("ner ") && l.contains("ETA")),
        "{seen:?}"
    );
    // SAFETY: sends SIGINT to the child this test started.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    seen.extend(lines.map(|l| l.unwrap()));
    let status = child.wait().unwrap();
    let err = seen.join("\n");
    assert_eq!(
        status.code(),
        Some(130),
        "the shell's status for SIGINT: {err}"
    );
    assert_eq!(
        err.matches("interrupted at epoch").count(),
        1,
        "said once, not again as an error: {err}"
    );
    assert!(
        err.contains("interrupted at epoch")
            && err.contains(&format!("sclstm train --resume {}", run.display())),
        "{err}"
    );
    assert!(run.join("last.safetensors").exists());
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(log.contains("interrupted at epoch"), "{log}");
    let resumed = ok(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--epochs",
        "1",
        "--quiet",
    ]);
    assert!(resumed.contains("best epoch 1 of 1"), "{resumed}");
}

#[test]
fn eval_and_plot_take_the_single_task_runs_of_an_stl_parent() {
    let parent = temp_dir("stl-parent");
    let out = train(
        &parent,
        &["--model", "stl", "--tasks", "ner,pos", "--epochs", "1"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = parent.to_str().unwrap();
    let report = ok(&["eval", "--run", p, "--split", "dev"]);
    let ner = parent.join("stl-ner");
    let pos = parent.join("stl-pos");
    assert!(
        report.contains(&format!("== {}", ner.display()))
            && report.contains(&format!("== {}", pos.display())),
        "{report}"
    );
    let figs = parent.join("figs");
    ok(&["plot", "--run", p, "--out", figs.to_str().unwrap()]);
    assert!(figs.join("dev_scores.svg").is_file());
}

#[test]
fn predict_reads_raw_text_on_stdin_whole_and_writes_json_for_chosen_tasks() {
    use std::io::Write as _;
    let run = temp_dir("predict-auto");
    assert!(train(&run, &["--epochs", "1"]).status.success());
    let predict = |extra: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sclstm"))
            .args(["predict", "--run", run.to_str().unwrap()])
            .args(extra)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"Barack Obama met Angela Merkel in Berlin .\nIt rained.\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    // The default reads space-separated text as text: every word is tagged.
    let (conll, err) = predict(&[]);
    assert!(err.contains("input read as `text`"), "{err}");
    let words: Vec<&str> = conll
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(
        words,
        [
            "Barack", "Obama", "met", "Angela", "Merkel", "in", "Berlin", ".", "It", "rained", "."
        ]
    );
    assert_eq!(
        conll.lines().next().unwrap().split('\t').count(),
        4,
        "word + 3 tasks"
    );
    // JSON: one object per sentence with the chosen tasks' tags and chunk spans.
    let (json, _) = predict(&["--output", "json", "--tasks", "ner,pos"]);
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["tokens"], serde_json::json!(["It", "rained", "."]));
    let tags = lines[0]["tags"].as_object().unwrap();
    assert_eq!(tags.keys().collect::<Vec<_>>(), ["ner", "pos"]);
    assert_eq!(tags["pos"].as_array().unwrap().len(), 8);
    assert!(lines[0]["spans"]["ner"].is_array(), "{}", lines[0]);
    let probs = lines[0]["probabilities"]["ner"].as_array().unwrap();
    assert_eq!(probs.len(), 8, "{}", lines[0]);
    assert!(
        probs
            .iter()
            .all(|p| p.as_f64().is_some_and(|p| p > 0.0 && p <= 1.0)),
        "{}",
        lines[0]
    );
    assert!(lines[0]["spans"].get("pos").is_none(), "POS has no chunks");
    let bad = sclstm(&[
        "predict",
        "--run",
        run.to_str().unwrap(),
        "--tasks",
        "xyz",
        "--input",
        "Cargo.toml",
        "--format",
        "text",
    ]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no task `xyz`"));
}

#[test]
fn predict_names_the_malformed_conllu_file() {
    let run = temp_dir("predict-conllu");
    assert!(train(&run, &["--epochs", "1"]).status.success());
    let bad = run.join("bad.conllu");
    std::fs::write(&bad, "# sent\n1\tonly two\n").unwrap();
    let out = sclstm(&[
        "predict",
        "--run",
        run.to_str().unwrap(),
        "--input",
        bad.to_str().unwrap(),
        "--format",
        "conllu",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("reading {} as CoNLL-U", bad.display())) && err.contains("line 2"),
        "{err}"
    );
}

#[test]
fn generic_files_declare_their_scheme_and_tag_column() {
    // IOB1 tags in the third of four columns: `I-LOC` opens a chunk, as in CoNLL-2003.
    let dir = temp_dir("formats");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ner.txt");
    let mut text = String::new();
    for _ in 0..6 {
        text.push_str("Paris NNP I-LOC x\nis VBZ O x\nnice JJ O x\n\n");
    }
    std::fs::write(&file, &text).unwrap();
    let spec = |fmt: &str| format!("ner={}:{fmt}", file.display());
    let run = dir.join("run");
    let f = spec("conll:iob1:tag=3");
    let out = sclstm(&[
        "train",
        "--tasks",
        "ner",
        "--train",
        &f,
        "--dev",
        &f,
        "--test",
        &f,
        "--out",
        run.to_str().unwrap(),
        "--epochs",
        "1",
        "--hidden",
        "4",
        "--layers",
        "1",
        "--threads",
        "1",
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vocab = std::fs::read_to_string(run.join("vocab.json")).unwrap();
    assert!(
        vocab.contains("\"B-LOC\""),
        "IOB1 `I-LOC` became IOB2 `B-LOC`: {vocab}"
    );
    // Read as IOB2 (the default for chunk-style tags) the same tags are refused: an
    // IOB2 chunk never starts with I-.
    let out = sclstm(&[
        "train",
        "--tasks",
        "ner",
        "--train",
        &spec("conll:tag=3"),
        "--dev",
        &f,
        "--test",
        &f,
        "--out",
        dir.join("run2").to_str().unwrap(),
        "--epochs",
        "1",
        "--quiet",
    ]);
    assert!(!out.status.success());
    let bad = sclstm(&[
        "train",
        "--tasks",
        "ner",
        "--train",
        &spec("conll:tag=9"),
        "--dev",
        &f,
        "--test",
        &f,
        "--out",
        dir.join("run3").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("tag column 9"), "{err}");
}
