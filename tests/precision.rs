//! `--dtype f64`: training and inspection in double precision, for comparisons with an
//! independent f64 implementation far below f32's rounding.

use std::path::Path;

use ndarray::Array2;
use sclstm_model::checkpoint::read_tensors;

use crate::cli::{fails_with, ok, temp_dir, train};

/// The safetensors dtypes (`"F32"`, `"F64"`) of a file's tensors, read from its header.
fn dtypes(path: &Path) -> std::collections::BTreeSet<String> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(_, v)| v["dtype"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn f64_runs_write_f64_checkpoints_and_resume_exactly() {
    let (full, cut) = (temp_dir("f64-full"), temp_dir("f64-cut"));
    assert!(
        train(&full, &["--epochs", "2", "--dtype", "f64"])
            .status
            .success()
    );
    let config = std::fs::read_to_string(full.join("config.toml")).unwrap();
    assert!(config.contains("dtype = \"f64\""), "{config}");
    for f in ["best.safetensors", "last.safetensors"] {
        assert_eq!(dtypes(&full.join(f)), ["F64".to_string()].into(), "{f}");
    }
    // Parameters and Adam moments must survive the checkpoint at full precision, or the
    // resumed run drifts from the uninterrupted one.
    let out = train(
        &cut,
        &[
            "--epochs",
            "2",
            "--dtype",
            "f64",
            "--stop-after-steps",
            "17",
            "--checkpoint-steps",
            "0",
        ],
    );
    assert!(!out.status.success(), "the interrupted run says it stopped");
    ok(&["train", "--resume", cut.to_str().unwrap(), "--quiet"]);
    assert_eq!(
        std::fs::read(cut.join("best.safetensors")).unwrap(),
        std::fs::read(full.join("best.safetensors")).unwrap()
    );
    // An f64 run evaluates on the default (f32) path too.
    ok(&["eval", "--run", full.to_str().unwrap(), "--split", "dev"]);
}

/// Largest deviation between the dumped gradient of the head bias and the one the dumped
/// logits imply: `Σ_valid (softmax(logits) − onehot(gold)) / B`, and between the dumped
/// loss and `Σ_valid −log softmax(logits)[gold] / B`, both computed here in f64.
fn head_bias_and_loss_error(dump: &Path, task: &str) -> f64 {
    let (tensors, _) = read_tensors(dump).unwrap();
    let get = |name: &str| -> &Array2<f64> {
        &tensors
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} missing from the dump"))
            .1
    };
    let (logits, gold, lens) = (
        get(&format!("act.logits.{task}")),
        get("input.gold"),
        get("input.lens"),
    );
    let batch = lens.nrows();
    let mut grad = vec![0.0f64; logits.ncols()];
    let mut loss = 0.0f64;
    for (row, z) in logits.rows().into_iter().enumerate() {
        let (t, b) = (row / batch, row % batch);
        if t >= lens[[b, 0]] as usize {
            continue;
        }
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
        let y = gold[[row, 0]] as usize;
        loss += -(z[y] - max - sum.ln()) / batch as f64;
        for (j, g) in grad.iter_mut().enumerate() {
            let p = (z[j] - max).exp() / sum;
            *g += (p - f64::from(u8::from(j == y))) / batch as f64;
        }
    }
    let dumped = get(&format!("grad.head.{task}.bias"));
    let grad_err = dumped
        .iter()
        .zip(&grad)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    grad_err.max((get(&format!("act.loss.{task}"))[[0, 0]] - loss).abs())
}

#[test]
fn inspect_in_f64_agrees_with_an_outside_computation_far_below_f32_rounding() {
    let run = temp_dir("inspect-f64");
    assert!(train(&run, &["--epochs", "1"]).status.success());
    let dump = |dtype: &str| {
        let path = run.join(format!("inspect-{dtype}.safetensors"));
        ok(&[
            "inspect",
            "--run",
            run.to_str().unwrap(),
            "--input",
            "datasets/conll2003/dev.txt:conll2003",
            "--task",
            "ner",
            "--batch-size",
            "4",
            "--dtype",
            dtype,
            "--out",
            path.to_str().unwrap(),
        ]);
        path
    };
    let (d32, d64) = (dump("f32"), dump("f64"));
    assert_eq!(dtypes(&d64), ["F64".to_string()].into());
    assert_eq!(dtypes(&d32), ["F32".to_string()].into());
    let (e32, e64) = (
        head_bias_and_loss_error(&d32, "ner"),
        head_bias_and_loss_error(&d64, "ner"),
    );
    assert!(e64 < 1e-12, "f64 dump deviates by {e64:e}");
    assert!(e32 > 1e-10, "f32 dump deviates by only {e32:e}: is it f64?");
    // The same weights (widened exactly) give the same activations up to f32 rounding.
    let (t32, _) = read_tensors(&d32).unwrap();
    let (t64, _) = read_tensors(&d64).unwrap();
    let logits = |t: &[(String, Array2<f64>)]| {
        t.iter()
            .find(|(n, _)| n == "act.logits.ner")
            .unwrap()
            .1
            .clone()
    };
    let gap = (&logits(&t32) - &logits(&t64))
        .mapv(f64::abs)
        .fold(0.0, |m: f64, v| m.max(*v));
    assert!(
        gap > 0.0 && gap < 1e-4,
        "f32 vs f64 logits differ by {gap:e}"
    );
}

#[test]
fn f64_on_the_wgpu_backend_is_refused_naming_the_flag() {
    fails_with(
        &[
            "train",
            "--dtype",
            "f64",
            "--backend",
            "wgpu",
            "--max-sentences",
            "5",
        ],
        &["--dtype", "f64 runs on the CPU backend only"],
    );
    fails_with(
        &[
            "inspect",
            "--run",
            "runs/none",
            "--input",
            "x",
            "--out",
            "y",
            "--dtype",
            "f64",
            "--backend",
            "wgpu",
        ],
        &["--dtype"],
    );
}

/// `sclstm bench --json --precision P` with `SCLSTM_KERNELS` set to `kernels`.
fn bench_json(kernels: &str, precision: &str) -> std::process::Output {
    bench_json_with(kernels, precision, &[])
}

/// [`bench_json`] with further arguments.
fn bench_json_with(kernels: &str, precision: &str, extra: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sclstm"))
        .args([
            "bench",
            "--steps",
            "1",
            "--infer-sentences",
            "4",
            "--threads",
            "1",
            "--precision",
            precision,
            "--json",
        ])
        .args(extra)
        .env("SCLSTM_KERNELS", kernels)
        .output()
        .expect("the sclstm binary runs")
}

#[test]
fn bench_names_the_cpu_and_the_kernels_and_a_forced_set_is_used_or_refused() {
    let out = bench_json("auto", "f32");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let auto: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!auto["cpu"].as_str().unwrap().is_empty());
    // Linux reports the CPUs and the cores under them: at least one core, never more
    // cores than logical CPUs.
    let logical = auto["logical_cpus"]
        .as_u64()
        .expect("logical CPUs on Linux");
    let cores = auto["physical_cores"].as_u64().expect("cores on Linux");
    assert!(
        (1..=logical).contains(&cores),
        "{cores} cores, {logical} CPUs"
    );
    let available: Vec<&str> = auto["kernels_available"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        available.first(),
        auto["kernels"].as_str().as_ref(),
        "auto is the best"
    );
    assert_eq!(available.last(), Some(&"portable"));
    let products = auto["products"].as_array().unwrap();
    assert_eq!(products.len(), 5, "four kinds and the ragged per-step line");
    assert!(products.iter().all(|p| p["gflops"].as_f64().unwrap() > 0.0));
    // The peak is at least every f32 product's rate, so the fraction is never flattered.
    let peak = auto["peak_gflops"].as_f64().unwrap();
    assert!(
        products
            .iter()
            .all(|p| p["precision"] == "f32" && p["gflops"].as_f64().unwrap() <= peak),
        "{auto}"
    );
    // The phases cover the timed steps: their sum gives back the training throughput.
    let phases = &auto["phases"];
    let ms: Vec<f64> = ["forward_ms", "backward_ms", "optimizer_ms"]
        .iter()
        .map(|k| phases[k].as_f64().unwrap())
        .collect();
    assert!(ms.iter().all(|&t| t > 0.0), "{auto}");
    let seconds = ms.iter().sum::<f64>() / 1e3 * auto["steps"].as_f64().unwrap();
    let rate = auto["train_tokens"].as_f64().unwrap() / seconds;
    let reported = auto["train_tokens_per_s"].as_f64().unwrap();
    assert!((rate - reported).abs() <= 1e-9 * reported, "{auto}");
    assert!(
        auto["grad_elems_per_step"].as_f64().unwrap() > 0.0,
        "{auto}"
    );
    let fraction = auto["gflops"].as_f64().unwrap() / peak;
    assert!(
        (auto["fraction_of_peak"].as_f64().unwrap() - fraction).abs() < 1e-12,
        "{auto}"
    );
    // Forcing the portable set runs matrixmultiply everywhere and says so.
    let out = bench_json("portable", "f32");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let portable: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(portable["kernels"], "portable");
    assert!(
        portable["backend"]
            .as_str()
            .unwrap()
            .contains("portable kernels")
    );
    for p in portable["products"].as_array().unwrap() {
        assert_eq!(p["kernel"], "matrixmultiply", "{p}");
    }
    let out = bench_json("sse9", "f32");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("SCLSTM_KERNELS") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn bench_in_situ_times_the_calls_of_the_timed_steps_and_of_inference() {
    let out = bench_json_with("auto", "f32", &["--in-situ"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let groups = |key: &str| r[key].as_array().unwrap().clone();
    let (train, infer) = (groups("in_situ"), groups("in_situ_inference"));
    let kind = |g: &serde_json::Value| g["kind"].as_str().unwrap().to_string();
    let seconds = |gs: &[serde_json::Value]| -> f64 {
        gs.iter()
            .map(|g| g["totals"]["seconds"].as_f64().unwrap())
            .sum()
    };
    // Training runs per-step products, products over all tokens and weight gradients,
    // each with work counted; inference runs no weight gradient.
    for role in ["per-step", "all tokens", "weight gradient"] {
        let g = train.iter().find(|g| kind(g).starts_with(role));
        let g = g.unwrap_or_else(|| panic!("no {role} group in {train:?}"));
        assert!(g["totals"]["calls"].as_u64().unwrap() > 0);
        assert!(g["totals"]["flops"].as_u64().unwrap() > 0);
    }
    assert!(infer.iter().any(|g| kind(g).starts_with("per-step")));
    assert!(!infer.iter().any(|g| kind(g).starts_with("weight gradient")));
    // On one thread the calls fit inside the timed steps (the warm-up steps are not in
    // the window).
    let phases = &r["phases"];
    let step_ms: f64 = ["forward_ms", "backward_ms", "optimizer_ms"]
        .iter()
        .map(|k| phases[k].as_f64().unwrap())
        .sum();
    let timed = step_ms / 1e3 * r["steps"].as_f64().unwrap();
    assert!(
        seconds(&train) <= timed * 1.001,
        "{} > {timed}",
        seconds(&train)
    );
    // One thread makes no two-sided joins (the directions run in turn), so every
    // backend call is made outside a join.
    for (key, groups) in [("joins", &train), ("joins_inference", &infer)] {
        let joins = &r[key];
        assert_eq!(joins["calls"].as_u64(), Some(0), "{key}: {joins}");
        let outside = joins["outside_call_seconds"].as_f64().unwrap();
        assert!(
            (outside - seconds(groups)).abs() <= 1e-9 + 1e-6 * outside,
            "{key}: {outside} vs {}",
            seconds(groups)
        );
    }
    // Without the flag nothing is timed per call.
    let plain = bench_json("auto", "f32");
    let plain: serde_json::Value = serde_json::from_slice(&plain.stdout).unwrap();
    assert_eq!(plain["in_situ"].as_array().map(Vec::len), Some(0));
    assert!(plain["joins"].is_null());
}

/// The predicted tags (third column) of a `--write-predictions` file.
fn predicted_tags(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(2).map(str::to_string))
        .collect()
}

#[test]
fn packed_products_tag_like_f32_or_are_refused_naming_the_flag() {
    let run = temp_dir("packed");
    assert!(
        train(&run, &["--epochs", "1", "--tasks", "ner,pos"])
            .status
            .success()
    );
    let r = run.to_str().unwrap();
    let eval_in = |env: &[(&str, &str)], precision: &str, preds: &Path| {
        crate::cli::sclstm_in(
            Path::new(env!("CARGO_MANIFEST_DIR")),
            env,
            &[
                "eval",
                "--run",
                r,
                "--split",
                "dev",
                "--threads",
                "2",
                "--precision",
                precision,
                "--write-predictions",
                preds.to_str().unwrap(),
            ],
        )
    };
    let eval_with = |kernels: &str, precision: &str, preds: &Path| {
        eval_in(&[("SCLSTM_KERNELS", kernels)], precision, preds)
    };
    let eval = |precision: &str, preds: &Path| eval_with("auto", precision, preds);
    let f32_preds = run.join("f32.txt");
    assert!(eval("f32", &f32_preds).status.success());
    for (precision, feature) in [("bf16", "AVX512_BF16"), ("int8", "AVX2")] {
        let flag = format!("--precision {precision}");
        let preds = run.join(format!("{precision}.txt"));
        let out = eval(precision, &preds);
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            let (a, b) = (predicted_tags(&f32_preds), predicted_tags(&preds));
            assert_eq!(a.len(), b.len());
            assert!(a.len() > 50_000, "every dev token of both tasks");
            let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
            assert!(
                same as f64 >= 0.98 * a.len() as f64,
                "{precision} changes {} of {} tags",
                a.len() - same,
                a.len()
            );
            assert!(
                same < a.len() || precision == "bf16",
                "the int8 products ran"
            );
            if precision == "int8" {
                // Every int8 kernel sums the same integers: with the AVX2 kernels forced
                // the tags are the same.
                let avx2 = run.join("int8-avx2.txt");
                let out = eval_with("avx2", precision, &avx2);
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(predicted_tags(&avx2), b, "int8 on AVX2 tags alike");
                // The same with AVX-VNNI's kernels, where the CPU has them.
                #[cfg(target_arch = "x86_64")]
                if std::is_x86_feature_detected!("avxvnni") {
                    let vnni256 = run.join("int8-avxvnni.txt");
                    let out = eval_with("avxvnni", precision, &vnni256);
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    assert_eq!(predicted_tags(&vnni256), b, "int8 on AVX-VNNI tags alike");
                }
                // And without AMX tiles (the CPU may have none: then the same run).
                let vnni = run.join("int8-no-amx.txt");
                let out = eval_in(&[("SCLSTM_AMX", "off")], precision, &vnni);
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(predicted_tags(&vnni), b, "int8 without AMX tags alike");
                // An unknown setting is refused, naming the variable.
                let out = eval_in(&[("SCLSTM_AMX", "yes")], precision, &vnni);
                assert!(!out.status.success());
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(
                    err.contains("SCLSTM_AMX") && !err.contains("panicked"),
                    "{err}"
                );
            }
        } else {
            assert!(err.contains(&flag) && err.contains(feature), "{err}");
            assert!(!err.contains("panicked"), "{err}");
        }
        // The bench measures inference in the precision asked for, or refuses it alike.
        let out = bench_json("auto", precision);
        if out.status.success() {
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(report["infer_precision"], precision);
            let products = report["products"].as_array().unwrap();
            assert_eq!(products.len(), 7, "the two forward products again, packed");
            assert!(products.iter().all(|p| p["gflops"].as_f64().unwrap() > 0.0));
            let precisions: Vec<&str> = products
                .iter()
                .map(|p| p["precision"].as_str().unwrap())
                .collect();
            assert_eq!(
                precisions,
                ["f32", "f32", "f32", "f32", "f32", precision, precision]
            );
            // The packed products do not count towards the f32 peak.
            let peak = report["peak_gflops"].as_f64().unwrap();
            assert!(
                products[..5]
                    .iter()
                    .all(|p| p["gflops"].as_f64().unwrap() <= peak)
            );
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(&flag), "{err}");
        }
        // With the portable kernel set (forced here) packed products are refused alike.
        let preds = run.join(format!("{precision}-portable.txt"));
        let out = eval_with("portable", precision, &preds);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{precision} with the portable kernels ran"
        );
        assert!(
            err.contains(&flag) && err.contains(feature) && err.contains("portable"),
            "{err}"
        );
        // bf16 needs the avx512 set: with avx2 forced it is refused, blaming the CPU's
        // instructions only where it lacks them.
        #[cfg(target_arch = "x86_64")]
        if precision == "bf16" && std::is_x86_feature_detected!("avx2") {
            let out = eval_with("avx2", precision, &preds);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && err.contains("runs the avx2 set"),
                "{err}"
            );
            let lacks = !std::is_x86_feature_detected!("avx512bf16")
                || !std::is_x86_feature_detected!("avx512f");
            assert_eq!(err.contains("has no AVX512_BF16"), lacks, "{err}");
        }
        // wgpu has no packed products.
        let refused = format!("no {precision} products");
        fails_with(
            &[
                "eval",
                "--run",
                r,
                "--backend",
                "wgpu",
                "--precision",
                precision,
            ],
            &[flag.as_str(), refused.as_str()],
        );
    }
}
