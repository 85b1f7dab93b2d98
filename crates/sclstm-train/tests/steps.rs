//! The training loop's named steps, called directly: they compose to exactly what `train`
//! does, resume in-process, and stop on a non-finite loss before any update.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sclstm_cpu::CpuBackend;
use sclstm_train::config::TrainConfig;
use sclstm_train::rundir::{BEST_FILE, LAST_FILE, METRICS_FILE};
use sclstm_train::{RunOptions, Silent, Split, TrainError, Trainer, train};

fn tiny_config() -> TrainConfig {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    TrainConfig {
        hidden: 8,
        layers: 2,
        epochs: 2,
        threads: 1,
        max_sentences: Some(40),
        datasets: root.join("datasets"),
        embeddings: root.join("datasets/glove/glove.6B.50d.filtered.txt.gz"),
        ..TrainConfig::default()
    }
}

fn options() -> RunOptions {
    RunOptions {
        log_grads: 3,
        checkpoint_steps: 5,
        stop_after_steps: None,
        replace: false,
        interrupt: None,
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sclstm-steps-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn backend() -> Arc<CpuBackend<f32>> {
    Arc::new(CpuBackend::new(1).unwrap())
}

fn read(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).unwrap()
}

#[test]
fn named_steps_compose_to_exactly_what_train_does() {
    let config = tiny_config();
    let whole = temp_dir("whole");
    let summary = train(backend(), &config, &whole, false, &options(), &mut Silent).unwrap();
    assert_eq!(summary.epochs, 2);

    let by_steps = temp_dir("by-steps");
    let mut t = Trainer::open(
        backend(),
        &config,
        &by_steps,
        false,
        &options(),
        &mut Silent,
    )
    .unwrap();
    let mut reports = Vec::new();
    while !t.epochs_done() {
        let mut epoch = t.begin_epoch();
        let mut n = 0;
        while t.epoch_has_steps(&epoch) {
            let r = t.step(&mut epoch).unwrap();
            n += 1;
            assert_eq!(r.position, n, "a step advances the epoch by one batch");
            assert_eq!(r.batches, epoch.len());
        }
        reports.push(t.end_epoch(epoch, &mut Silent).unwrap());
    }
    assert_eq!(t.steps(), summary.steps);
    assert_eq!(reports[0].epoch, 1);
    assert!(
        reports[0].test.is_some(),
        "the first epoch is always the best so far"
    );
    let best_dev = reports
        .iter()
        .map(|r| r.dev_average)
        .fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(best_dev, summary.best_dev_average);
    // Scoring the final parameters directly agrees with the last epoch's report.
    let dev_now = t.evaluate(Split::Dev).unwrap();
    assert_eq!(
        dev_now.iter().map(|s| s.score).collect::<Vec<_>>(),
        reports[1].dev.iter().map(|s| s.score).collect::<Vec<_>>()
    );
    let stepped = t.finish().unwrap();
    assert_eq!(stepped.best_epoch, summary.best_epoch);
    for f in [METRICS_FILE, BEST_FILE] {
        if f == METRICS_FILE {
            // Same lines except wall-clock fields.
            let strip = |b: Vec<u8>| {
                String::from_utf8(b)
                    .unwrap()
                    .lines()
                    .map(|l| {
                        let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                        for k in ["tokens_per_s", "elapsed_s"] {
                            v.as_object_mut().unwrap().remove(k);
                        }
                        v.to_string()
                    })
                    .collect::<Vec<_>>()
            };
            assert_eq!(strip(read(&whole, f)), strip(read(&by_steps, f)));
        } else {
            assert_eq!(read(&whole, f), read(&by_steps, f), "{f} differs");
        }
    }
}

#[test]
fn a_checkpoint_inside_an_epoch_resumes_to_the_same_parameters() {
    let config = TrainConfig {
        epochs: 1,
        ..tiny_config()
    };
    let whole = temp_dir("resume-whole");
    train(backend(), &config, &whole, false, &options(), &mut Silent).unwrap();

    let split = temp_dir("resume-split");
    let mut t = Trainer::open(backend(), &config, &split, false, &options(), &mut Silent).unwrap();
    let mut epoch = t.begin_epoch();
    for _ in 0..7 {
        t.step(&mut epoch).unwrap();
    }
    t.checkpoint().unwrap();
    drop(t);
    let mut t = Trainer::open(backend(), &config, &split, true, &options(), &mut Silent).unwrap();
    assert_eq!(
        (t.epoch(), t.steps()),
        (0, 7),
        "resumes at the step it saved"
    );
    let report = t.run_epoch(&mut Silent).unwrap();
    assert_eq!(report.epoch, 1);
    assert!(t.epochs_done());
    assert_eq!(read(&whole, BEST_FILE), read(&split, BEST_FILE));
    assert!(split.join(LAST_FILE).is_file());
}

#[test]
fn a_non_finite_loss_stops_the_step_before_any_update() {
    let mut config = tiny_config();
    config.lambda.insert("ner".into(), 1e308);
    config.lambda.insert("chunk".into(), 1e308);
    config.lambda.insert("pos".into(), 1e308);
    let dir = temp_dir("nan");
    let mut t = Trainer::open(backend(), &config, &dir, false, &options(), &mut Silent).unwrap();
    let mut epoch = t.begin_epoch();
    let mut steps_ok = 0;
    let err = loop {
        match t.step(&mut epoch) {
            Ok(_) => steps_ok += 1,
            Err(e) => break e,
        }
        assert!(steps_ok < 50, "the loss never became non-finite");
    };
    match err.downcast_ref::<TrainError>() {
        Some(TrainError::NonFiniteLoss { step, epoch, .. }) => {
            assert_eq!((*step, *epoch), (steps_ok, 1));
        }
        other => panic!("expected NonFiniteLoss, got {other:?} ({err})"),
    }
    assert_eq!(t.steps(), steps_ok, "the failed step took no update");
}

#[test]
fn an_interrupt_saves_after_the_current_step_and_the_logs_record_the_run() {
    use std::sync::Arc as StdArc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let config = TrainConfig {
        epochs: 1,
        ..tiny_config()
    };
    let flag = StdArc::new(AtomicBool::new(false));
    let opts = RunOptions {
        interrupt: Some(StdArc::clone(&flag)),
        ..options()
    };
    let dir = temp_dir("interrupt");
    let mut t = Trainer::open(backend(), &config, &dir, false, &opts, &mut Silent).unwrap();
    let mut epoch = t.begin_epoch();
    t.step(&mut epoch).unwrap();
    t.step(&mut epoch).unwrap();
    drop(epoch);
    flag.store(true, Ordering::SeqCst);
    let err = t.run_epoch(&mut Silent).unwrap_err();
    match err.downcast_ref::<TrainError>() {
        Some(TrainError::Interrupted { epoch, step, .. }) => assert_eq!((*epoch, *step), (1, 3)),
        other => panic!("expected Interrupted, got {other:?}"),
    }
    drop(t);
    let steps = std::fs::read_to_string(dir.join("steps.csv")).unwrap();
    assert_eq!(
        steps.lines().count(),
        1 + 3,
        "header and one line per step: {steps}"
    );
    assert!(
        steps.starts_with("step,epoch,task,loss,tokens_per_s\n1,1,"),
        "{steps}"
    );
    let log = std::fs::read_to_string(dir.join("train.log")).unwrap();
    assert!(
        log.contains("task ner:") && log.contains("interrupted at epoch 1, step 3"),
        "{log}"
    );
    // Resuming redoes nothing it saved and appends to the same logs.
    let mut t = Trainer::open(backend(), &config, &dir, true, &options(), &mut Silent).unwrap();
    assert_eq!(t.steps(), 3);
    t.run_epoch(&mut Silent).unwrap();
    let n = t.steps();
    drop(t);
    let steps = std::fs::read_to_string(dir.join("steps.csv")).unwrap();
    assert_eq!(steps.lines().count() as u64, 1 + n, "{steps}");
    let log = std::fs::read_to_string(dir.join("train.log")).unwrap();
    assert!(
        log.contains("resuming") && log.contains("epoch 1: dev"),
        "{log}"
    );
}
