//! `sclstm eval`: score a trained run as the paper does (conlleval F1, POS accuracy).

use std::path::PathBuf;

use anyhow::bail;
use sclstm_core::Backend;
use sclstm_data::conlleval::escape_word;
use sclstm_data::scheme::{TagScheme, bioes_to_conlleval};

use crate::backend::{BackendJob, with_backend};
use sclstm_train::config::{BackendKind, DataFile, Dtype, Precision, TrainConfig};
use sclstm_train::data::{PreparedSplit, load_raw, read_user_file, training_scheme};
use sclstm_train::runmodel::RunModel;
use sclstm_train::score::{Scorer, score, tag_names};
use sclstm_train::{contextual, evaluate_split};

/// Arguments of `sclstm eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Run directory written by `sclstm train`.
    #[arg(long)]
    pub run: PathBuf,
    /// Only this task (default: every task of the run).
    #[arg(long)]
    pub task: Option<String>,
    /// Which split of the run's data to score.
    #[arg(long, default_value = "test", value_parser = ["train", "dev", "test"])]
    pub split: String,
    /// Score this file instead, `PATH[:FORMAT]` (needs `--task` when the run has several).
    #[arg(long, conflicts_with = "split")]
    pub input: Option<String>,
    /// Checkpoint to load: `best` or `last`.
    #[arg(long, default_value = "best")]
    pub checkpoint: String,
    /// Write `word gold pred` lines (conlleval's input format) to this file.
    #[arg(long)]
    pub write_predictions: Option<PathBuf>,
    /// Compute backend.
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendKind,
    /// Worker threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Precision of the recurrent layers' weight products: `f32`, `bf16` (about twice the
    /// product speed on a CPU with AVX512_BF16) or `int8` (weights and layer inputs
    /// quantized: on a CPU with AVX512_VNNI about twice bf16's product speed, with
    /// AVX-VNNI about 2.5× AVX2's, with AVX2 alone about 1.5× f32's, the same results on
    /// all); the packed ones are refused on other CPUs and on wgpu.
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: Precision,
}

struct EvalJob<'a>(&'a Args);

/// The `word gold pred` lines of one task's predictions; BIOES tags are mapped to IOB2
/// and a word `-X-` is escaped ([`escape_word`]) so that the original conlleval script reads
/// them as they were scored.
pub fn prediction_lines(task: &Scorer<'_>, split: &PreparedSplit, pred: &[Vec<u32>]) -> String {
    let mut out = String::new();
    for (s, p) in split.sentences.iter().zip(pred) {
        let mut gold = s.tags.clone();
        let mut guess = tag_names(task, p);
        if task.scheme == Some(TagScheme::Bioes) {
            gold = bioes_to_conlleval(&gold);
            guess = bioes_to_conlleval(&guess);
        }
        for ((w, g), q) in s.words.iter().zip(&gold).zip(&guess) {
            out.push_str(&format!("{} {g} {q}\n", escape_word(w)));
        }
        out.push('\n');
    }
    out
}

impl BackendJob for EvalJob<'_> {
    type Output = ();
    fn run<B: Backend + 'static>(self, b: std::sync::Arc<B>) -> anyhow::Result<()> {
        let args = self.0;
        let mut rm = RunModel::load(&args.run, &args.checkpoint, b, args.threads)?;
        args.precision.apply(&mut rm.tagger, "--precision")?;
        let names: Vec<String> = match &args.task {
            Some(t) => vec![t.clone()],
            None => rm.vocab.tasks.iter().map(|t| t.name.clone()).collect(),
        };
        if args.input.is_some() && names.len() != 1 {
            bail!("--input needs --task: the run has tasks {:?}", names);
        }
        let scheme = training_scheme(rm.config.scheme);
        let mut predictions = String::new();
        for name in &names {
            let k = rm.task_index(name)?;
            let (path, sentences, task_scheme) = match &args.input {
                Some(spec) => {
                    let f: DataFile = format!("{name}={spec}")
                        .parse()
                        .map_err(anyhow::Error::msg)?;
                    let (s, sch) = read_user_file(&f, scheme)?;
                    (f.path, s, sch)
                }
                None => {
                    let cfg = TrainConfig {
                        tasks: vec![name.clone()],
                        max_sentences: None,
                        ..rm.config.clone()
                    };
                    let raw = load_raw(&cfg, scheme)?.remove(0);
                    let i = ["train", "dev", "test"]
                        .iter()
                        .position(|s| *s == args.split)
                        .unwrap_or(2);
                    let [a, b, c] = raw.splits;
                    let (p, s) = [a, b, c]
                        .into_iter()
                        .nth(i)
                        .expect("internal: three splits");
                    (p, s, raw.scheme)
                }
            };
            // Gold tags are scored as strings: a gold tag the model never saw is simply a miss.
            let encoded = sentences
                .iter()
                .map(|s| rm.encode_words(&s.words))
                .collect();
            let tv = &rm.vocab.tasks[k];
            let tags = rm.vocab.tag_vocab(k);
            let task = Scorer {
                name,
                metric: if tv.metric == "f1" {
                    sclstm_data::shipped::Metric::ChunkF1
                } else {
                    sclstm_data::shipped::Metric::Accuracy
                },
                scheme: task_scheme,
                tags: &tags,
            };
            let words: Vec<Vec<&str>> = sentences
                .iter()
                .map(|s| s.words.iter().map(String::as_str).collect())
                .collect();
            let contextual = contextual::for_sentences(&rm.config, name, &words, &mut |line| {
                eprintln!("{line}")
            })?;
            let split = PreparedSplit {
                path: path.clone(),
                sentences,
                encoded,
                contextual,
            };
            let pred = evaluate_split(&rm.tagger, k, &split)?;
            let s = score(&task, &split, &pred)?;
            println!(
                "== {name} ({}, {} sentences): {} {:.2}",
                path.display(),
                split.sentences.len(),
                s.metric,
                s.score
            );
            print!("{}", s.report);
            predictions.push_str(&prediction_lines(&task, &split, &pred));
        }
        if let Some(p) = &args.write_predictions {
            sclstm_model::checkpoint::write_atomic(p, predictions.as_bytes())?;
        }
        Ok(())
    }
}

/// Runs `sclstm eval`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let children = sclstm_train::rundir::stl_children(&args.run);
    if children.is_empty() {
        return with_backend(args.backend, Dtype::F32, args.threads, EvalJob(&args));
    }
    // An STL parent directory: each task's run in turn.
    for child in children {
        println!("== {}", child.display());
        let one = Args {
            run: child,
            ..args.clone()
        };
        with_backend(one.backend, Dtype::F32, one.threads, EvalJob(&one))?;
    }
    Ok(())
}
