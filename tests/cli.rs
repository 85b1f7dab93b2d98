//! The `sclstm` binary on tiny runs of the shipped data.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sclstm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sclstm"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the sclstm binary runs")
}

fn ok(args: &[&str]) -> String {
    let out = sclstm(args);
    assert!(
        out.status.success(),
        "sclstm {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn temp_dir(name: &str) -> PathBuf {
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

fn train(out: &Path, extra: &[&str]) -> Output {
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
    assert!(train(&full, &["--epochs", "2"]).status.success());
    // 20 sentences × 3 tasks / 5 per batch = 12 batches per epoch: stop inside epoch 2.
    let out = train(
        &cut,
        &[
            "--epochs",
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
    ok(&["train", "--resume", cut.to_str().unwrap(), "--quiet"]);
    assert_eq!(scores(&cut), scores(&full));
    assert_eq!(
        std::fs::read(cut.join("best.safetensors")).unwrap(),
        std::fs::read(full.join("best.safetensors")).unwrap()
    );
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
    let out = sclstm(&["train", "--dropout", "1.5", "--out", "/tmp/never"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("dropout"));
    let out = sclstm(&[
        "train",
        "--tasks",
        "ner,srl",
        "--out",
        "/tmp/never",
        "--epochs",
        "1",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("srl"));
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
    for f in ["dev_scores.svg", "train_loss.svg", "grad_conflict.svg"] {
        let svg = std::fs::read_to_string(figs.join(f)).unwrap();
        assert!(svg.contains("<svg") && svg.contains("polyline"), "{f}");
    }
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
