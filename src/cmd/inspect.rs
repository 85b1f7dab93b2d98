//! `sclstm inspect`: dump one batch's ids, activations, losses and parameter gradients
//! as safetensors, to check the engine against an independent implementation or to start
//! a gradient study. Tensor names are documented in the `sclstm-model` crate docs
//! (`input.*`, `act.*`, `grad.<parameter>`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::bail;
use sclstm_core::{Backend, Real};
use sclstm_data::batch::make_batch;

use crate::backend::{BackendJob, with_backend};
use sclstm_train::config::{BackendKind, DataFile, Dtype};
use sclstm_train::data::{read_user_file, training_scheme};
use sclstm_train::runmodel::RunModel;
use sclstm_train::{contextual, model_input};

/// Arguments of `sclstm inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run directory written by `sclstm train`.
    #[arg(long)]
    pub run: PathBuf,
    /// Gold-tagged input, `PATH[:FORMAT]` (conll, conll2003, conll2000, conllu).
    #[arg(long)]
    pub input: String,
    /// Task whose loss is inspected (default: the run's first task).
    #[arg(long)]
    pub task: Option<String>,
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
    /// Sentences in the inspected batch (the first ones of the input).
    #[arg(long, default_value_t = 10)]
    pub batch_size: usize,
    /// Checkpoint to load: `best` or `last`.
    #[arg(long, default_value = "best")]
    pub checkpoint: String,
    /// Compute backend.
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendKind,
    /// Precision of the inspected forward and backward: `f64` widens the checkpoint's
    /// parameters (exactly) and dumps every tensor as F64, for comparisons with an
    /// independent f64 implementation far below f32 rounding (CPU backend only).
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: Dtype,
}

struct InspectJob<'a>(&'a Args);

impl BackendJob for InspectJob<'_> {
    type Output = usize;
    fn run<B: Backend + 'static>(self, b: std::sync::Arc<B>) -> anyhow::Result<usize> {
        let args = self.0;
        let rm = RunModel::load(&args.run, &args.checkpoint, b, 1)?;
        let name = args
            .task
            .clone()
            .unwrap_or_else(|| rm.vocab.tasks[0].name.clone());
        let k = rm.task_index(&name)?;
        let file: DataFile = format!("{name}={}", args.input)
            .parse()
            .map_err(anyhow::Error::msg)?;
        let (sentences, _) = read_user_file(&file, training_scheme(rm.config.scheme))?;
        let n = sentences.len().min(args.batch_size.max(1));
        if n == 0 {
            bail!("{}: no sentence to inspect", file.path.display());
        }
        let tags = rm.vocab.tag_vocab(k);
        let encoded = sclstm_data::batch::encode_sentences(
            &file.path,
            &sentences[..n],
            &rm.words,
            &rm.chars,
            &tags,
        )?;
        let batch = make_batch(&encoded, &(0..n).collect::<Vec<_>>());
        let words: Vec<Vec<&str>> = sentences[..n]
            .iter()
            .map(|s| s.words.iter().map(String::as_str).collect())
            .collect();
        let features = contextual::for_sentences(&rm.config, "input", &words, &mut |line| {
            eprintln!("{line}")
        })?;
        let rows = contextual::batch_rows(&batch, features.as_ref());
        let mut tensors = rm
            .tagger
            .inspect(&model_input(&batch, &rows), k, &batch.tag_ids)?;
        let ids = |name: &str, v: &[u32]| {
            let m = ndarray::Array2::from_shape_vec(
                (v.len(), 1),
                v.iter().map(|&x| B::Elem::from_f64(f64::from(x))).collect(),
            )
            .expect("internal: column vector shape");
            (name.to_string(), m)
        };
        if !tensors.iter().any(|(n, _)| n == "input.char_ids") {
            tensors.push(ids("input.char_ids", &batch.char_ids));
        }
        let meta = BTreeMap::from([
            ("task".to_string(), name.clone()),
            ("steps".to_string(), batch.seq_len.to_string()),
            ("batch".to_string(), batch.batch_size.to_string()),
            ("layout".to_string(), "time-major: row t*B + b".to_string()),
        ]);
        sclstm_model::write_tensors(&args.out, &tensors, &meta)?;
        Ok(tensors.len())
    }
}

/// Runs `sclstm inspect`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let n = with_backend(args.backend, args.dtype, 1, InspectJob(&args))?;
    println!("wrote {n} tensors to {}", args.out.display());
    Ok(())
}
