//! The training configuration: defaults are the paper's settings (§4.2–4.3, Table 3 line 4),
//! a TOML file may override them, and command-line flags override the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::pool::check_threads;
pub use sclstm_encoder::Pool;

/// Which multi-task architecture to train (paper §2.2 and §3): the model crate's.
pub use sclstm_model::Family;
/// What the task gates of SC-LSTM layers above the first read (the paper leaves it open):
/// the model crate's.
pub use sclstm_model::TaskInputMode as TaskInput;

/// Which compute backend runs the recurrent layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// matrixmultiply + rayon on the host.
    Cpu,
    /// WGSL compute shaders through wgpu (f32).
    Wgpu,
}

/// Floating-point precision of parameters, activations, gradients and optimizer state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Dtype {
    /// Single precision: every backend, the default.
    #[default]
    F32,
    /// Double precision (CPU backend only): for comparing gradients and activations with an
    /// independent f64 implementation far below f32's rounding (≈1e-10 instead of ≈1e-6).
    F64,
}

/// Precision of the recurrent layers' weight products when tagging (`predict`, `eval`,
/// `bench`'s inference). Training always runs in the model's [`Dtype`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// f32 products, the default: the scores `train` reports.
    #[default]
    F32,
    /// bf16 products (weights and layer inputs rounded to bf16, sums in f32) on the CPU
    /// backend of a CPU with AVX512_BF16: about twice the product speed on AMD Zen 4, none
    /// on Intel cores with two 512-bit multiply-add units (use int8 there); refused elsewhere.
    Bf16,
    /// int8 products (weights quantized per output column, layer inputs per row as each
    /// product starts, exact integer sums) on the CPU backend of a CPU with AVX2 (about
    /// 1.5× f32's product speed), AVX-VNNI (about 2.5× AVX2's) or AVX512_VNNI (about
    /// twice bf16's), with AMX tiles for the large products where the CPU has AMX-INT8:
    /// the same results on all; refused elsewhere.
    Int8,
}

impl Precision {
    /// The packed products of this precision (`None` for f32).
    pub fn packed(self) -> Option<sclstm_core::Packed> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(sclstm_core::Packed::Bf16),
            Precision::Int8 => Some(sclstm_core::Packed::Int8),
        }
    }

    /// The name users give it (`f32`, `bf16`, `int8`).
    pub fn name(self) -> &'static str {
        self.packed().map_or("f32", sclstm_core::Packed::name)
    }

    /// Sets `tagger`'s products to this precision, naming `flag` in the error of a
    /// backend or CPU without such products.
    pub fn apply<B: sclstm_core::Backend + 'static>(
        self,
        tagger: &mut sclstm_model::Tagger<B>,
        flag: &str,
    ) -> anyhow::Result<()> {
        tagger
            .set_packed_products(self.packed())
            .with_context(|| format!("{flag} {}", self.name()))
    }
}

/// Tagging scheme used for training NER and chunking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SchemeChoice {
    /// IOB2 (the paper's choice).
    Bio,
    /// BIOES.
    Bioes,
}

/// A user-supplied data file for one task and split: `TASK=PATH[:FORMAT]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    /// Task name (`ner`, `chunk`, `pos` or a new name).
    pub task: String,
    /// File path.
    pub path: PathBuf,
    /// `conll2003`, `conll2000`, `conllu`, or `conll` (word in column 1, tag in the last column).
    pub format: String,
}

impl std::str::FromStr for DataFile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (task, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("expected TASK=PATH[:FORMAT], got `{s}`"))?;
        // The format is the longest tail of `:`-separated parts that reads as one
        // (`conll2003`, `conllu`, `conll:iob1:tag=3`, …); a path may hold colons itself.
        let parts: Vec<&str> = rest.split(':').collect();
        let split = (1..parts.len()).find(|&i| parse_format(&parts[i..].join(":")).is_ok());
        let (path, format) = match split {
            Some(i) => (parts[..i].join(":"), parts[i..].join(":")),
            None => (rest.to_string(), "conll".to_string()),
        };
        if task.is_empty() || path.is_empty() {
            return Err(format!("expected TASK=PATH[:FORMAT], got `{s}`"));
        }
        Ok(DataFile {
            task: task.to_string(),
            path: PathBuf::from(path),
            format,
        })
    }
}

/// How the generic `conll` format reads a file's tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConllOptions {
    /// The tags' scheme: `None` decides from the tags (chunk-style → IOB2, else labels);
    /// `Some(None)` reads plain labels; `Some(Some(s))` reads scheme `s`.
    pub scheme: Option<Option<sclstm_data::scheme::TagScheme>>,
    /// 1-based column of the tag (default: the last).
    pub tag_column: Option<usize>,
}

/// A data-file format: one of the fixed corpus layouts, or the generic `conll` with its
/// options (`conll:iob1`, `conll:iob2`, `conll:bioes`, `conll:labels`, `conll:tag=N`,
/// combined as `conll:iob1:tag=4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// CoNLL-2003 NER (4 columns, IOB1).
    Conll2003,
    /// CoNLL-2000 chunking (3 columns, IOB2).
    Conll2000,
    /// CoNLL-U (UPOS).
    Conllu,
    /// Word in the first column, tag in the last (or the given) column.
    Conll(ConllOptions),
}

/// Parses a `FORMAT` of `TASK=PATH:FORMAT`.
///
/// # Errors
/// A message naming the part that is not a format or an option.
pub fn parse_format(s: &str) -> Result<FileFormat, String> {
    use sclstm_data::scheme::TagScheme;
    let mut parts = s.split(':');
    let head = parts.next().unwrap_or_default();
    let fixed = match head {
        "conll2003" => Some(FileFormat::Conll2003),
        "conll2000" => Some(FileFormat::Conll2000),
        "conllu" => Some(FileFormat::Conllu),
        "conll" => None,
        _ => return Err(format!("unknown format `{head}` (one of {FORMATS:?})")),
    };
    if let Some(f) = fixed {
        return match parts.next() {
            None => Ok(f),
            Some(o) => Err(format!("format `{head}` takes no option (got `{o}`)")),
        };
    }
    let mut o = ConllOptions::default();
    for part in parts {
        match part {
            "iob1" => o.scheme = Some(Some(TagScheme::Iob1)),
            "iob2" | "bio" => o.scheme = Some(Some(TagScheme::Iob2)),
            "bioes" | "iobes" => o.scheme = Some(Some(TagScheme::Bioes)),
            "labels" => o.scheme = Some(None),
            _ => match part.strip_prefix("tag=").map(str::parse::<usize>) {
                Some(Ok(n)) if n >= 2 => o.tag_column = Some(n),
                _ => {
                    return Err(format!(
                        "unknown conll option `{part}` (iob1, iob2, bioes, labels, tag=N with N ≥ 2)"
                    ));
                }
            },
        }
    }
    Ok(FileFormat::Conll(o))
}

/// Largest `hidden` a configuration may ask for (the memory check of the model comes on top).
pub const MAX_HIDDEN: usize = 1 << 16;

/// Largest `layers` a configuration may ask for.
pub const MAX_LAYERS: usize = 256;

/// Formats accepted after the colon of `TASK=PATH:FORMAT` (`conll` takes options, see
/// [`parse_format`]).
pub const FORMATS: [&str; 4] = ["conll", "conll2003", "conll2000", "conllu"];

/// Everything that defines a training run. Saved as `config.toml` in the run directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Architecture.
    pub model: Family,
    /// Tasks trained jointly, in this order.
    pub tasks: Vec<String>,
    /// Hidden size of each LSTM direction (paper: 300).
    pub hidden: usize,
    /// Stacked bidirectional layers (paper: 3).
    pub layers: usize,
    /// Add the character CNN (char dim 16, kernel 3, 128 channels).
    pub char_cnn: bool,
    /// Use a CRF output layer instead of softmax.
    pub crf: bool,
    /// Append the 8 capitalization features to the word embedding.
    pub caps: bool,
    /// Dropout rate on inputs, between layers and before the heads.
    pub dropout: f64,
    /// Loss weight λ of each task (Eq. 4); missing tasks weigh 1.
    pub lambda: BTreeMap<String, f64>,
    /// LSTM-d: the (1-based) layer whose output feeds each task's classifier.
    pub lstm_d_layer: BTreeMap<String, usize>,
    /// SC-LSTM task gate input above layer 1.
    pub task_input: TaskInput,
    /// Tagging scheme for NER and chunking.
    pub scheme: SchemeChoice,
    /// Sentences per batch (paper: 10).
    pub batch_size: usize,
    /// Adam learning rate (PyTorch default 1e-3).
    pub lr: f64,
    /// Global gradient-norm clipping threshold (paper: 5).
    pub clip: f64,
    /// Maximum epochs.
    pub epochs: usize,
    /// Stop after this many epochs without a better dev average (0: never).
    pub patience: usize,
    /// Seed of every random choice (initialisation, shuffling, dropout, task order).
    pub seed: u64,
    /// Worker threads (0: all cores).
    pub threads: usize,
    /// Compute backend.
    pub backend: BackendKind,
    /// Precision of the whole model (f64 needs the CPU backend; for small runs and checks).
    pub dtype: Dtype,
    /// Use only the first N sentences of each split (quick runs); none: all.
    pub max_sentences: Option<usize>,
    /// Folder holding the shipped corpora.
    pub datasets: PathBuf,
    /// GloVe-format word vectors (text, optionally gzipped); any dimension.
    pub embeddings: PathBuf,
    /// User training files replacing the shipped ones, per task.
    pub train: Vec<DataFile>,
    /// User dev files, per task.
    pub dev: Vec<DataFile>,
    /// User test files, per task.
    pub test: Vec<DataFile>,
    /// Folder of a frozen BERT-architecture encoder (`config.json`, `model.safetensors`,
    /// `tokenizer.json`) whose hidden states join the input through a scalar mix (the
    /// SC-LSTM-LM-CNN variant); none: no contextual features.
    pub encoder: Option<PathBuf>,
    /// How a word's encoder vector is pooled from its sub-words.
    pub encoder_pool: Pool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: Family::ScLstm,
            tasks: vec!["ner".into(), "chunk".into(), "pos".into()],
            hidden: 300,
            layers: 3,
            char_cnn: false,
            crf: false,
            caps: true,
            dropout: 0.5,
            lambda: BTreeMap::new(),
            lstm_d_layer: BTreeMap::from([
                ("pos".into(), 1),
                ("chunk".into(), 2),
                ("ner".into(), 3),
            ]),
            task_input: TaskInput::Shared,
            scheme: SchemeChoice::Bio,
            batch_size: 10,
            lr: 1e-3,
            clip: 5.0,
            epochs: 30,
            patience: 0,
            seed: 1,
            threads: 0,
            backend: BackendKind::Cpu,
            dtype: Dtype::F32,
            max_sentences: None,
            datasets: PathBuf::from("datasets"),
            embeddings: PathBuf::from("datasets/glove/glove.6B.50d.filtered.txt.gz"),
            train: Vec::new(),
            dev: Vec::new(),
            test: Vec::new(),
            encoder: None,
            encoder_pool: Pool::First,
        }
    }
}

impl TrainConfig {
    /// Reads a TOML configuration; keys missing from the file keep their defaults.
    ///
    /// Every value is checked on its own ([`TrainConfig::check_values`]); an error names the
    /// file. Checks that involve several keys or this machine (tasks named by `lambda`,
    /// `lstm_d_layer`, `threads`) are left to [`TrainConfig::validate`], since command-line
    /// flags may still change those keys.
    pub fn from_toml_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let config: Self =
            toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?;
        config
            .check_values()
            .with_context(|| format!("invalid config {}", path.display()))?;
        Ok(config)
    }

    /// The configuration as TOML text.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }

    /// The λ of a task (1 when not given).
    pub fn lambda_of(&self, task: &str) -> f64 {
        self.lambda.get(task).copied().unwrap_or(1.0)
    }

    /// Rejects numeric values no run can use, each key on its own, naming the key and its
    /// command-line flag: `hidden` in `1..=MAX_HIDDEN`, `layers` in `1..=MAX_LAYERS`,
    /// `batch_size`, `epochs` and `max_sentences` (when given) at least 1, `lr` and `clip`
    /// finite and positive, `dropout` in `[0, 1)`, every `lambda` finite and `≥ 0`.
    /// `patience` and `seed` take any value.
    pub fn check_values(&self) -> anyhow::Result<()> {
        let at_least_one = [
            ("hidden", "--hidden", self.hidden),
            ("layers", "--layers", self.layers),
            ("batch_size", "--batch-size", self.batch_size),
            ("epochs", "--epochs", self.epochs),
        ];
        for (key, flag, v) in at_least_one {
            if v == 0 {
                bail!("config: `{key}` ({flag}) must be at least 1, got 0");
            }
        }
        if self.hidden > MAX_HIDDEN {
            bail!(
                "config: `hidden` (--hidden) must be at most {MAX_HIDDEN}, got {}",
                self.hidden
            );
        }
        if self.layers > MAX_LAYERS {
            bail!(
                "config: `layers` (--layers) must be at most {MAX_LAYERS}, got {}",
                self.layers
            );
        }
        if self.max_sentences == Some(0) {
            bail!("config: `max_sentences` (--max-sentences) must be at least 1, got 0");
        }
        for (key, flag, v) in [("lr", "--lr", self.lr), ("clip", "--clip", self.clip)] {
            if !(v.is_finite() && v > 0.0) {
                bail!("config: `{key}` ({flag}) must be finite and positive, got {v}");
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!(
                "config: `dropout` (--dropout) must be in [0, 1), got {}",
                self.dropout
            );
        }
        for (task, &w) in &self.lambda {
            if !(w.is_finite() && w >= 0.0) {
                bail!(
                    "config: `lambda.{task}` (--lambda {task}=W) must be finite and ≥ 0, got {w}"
                );
            }
        }
        Ok(())
    }

    /// Rejects values no run can use, naming the offending key: [`TrainConfig::check_values`],
    /// then the checks between keys and `threads` against this machine's cores.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.check_values()?;
        check_threads(self.threads, "`threads` (--threads)")?;
        check_dtype(self.backend, self.dtype, "`dtype` (--dtype)")?;
        if self.tasks.is_empty() {
            bail!("config: `tasks` is empty");
        }
        for (i, t) in self.tasks.iter().enumerate() {
            if self.tasks[..i].contains(t) {
                bail!("config: task `{t}` is listed twice");
            }
        }
        for key in self.lambda.keys() {
            if !self.tasks.contains(key) {
                bail!(
                    "config: `lambda` names `{key}`, which is not among the tasks {:?}",
                    self.tasks
                );
            }
        }
        if self.model == Family::LstmD {
            for t in &self.tasks {
                match self.lstm_d_layer.get(t) {
                    Some(&l) if (1..=self.layers).contains(&l) => {}
                    Some(&l) => bail!(
                        "config: `lstm_d_layer.{t}` = {l} is outside 1..={} layers",
                        self.layers
                    ),
                    None => bail!(
                        "config: LSTM-d needs `lstm_d_layer.{t}` (the layer feeding task {t})"
                    ),
                }
            }
        }
        Ok(())
    }
}

/// Refuses a precision the backend does not run (wgpu is f32 only), naming `what`.
pub fn check_dtype(backend: BackendKind, dtype: Dtype, what: &str) -> anyhow::Result<()> {
    if backend == BackendKind::Wgpu && dtype == Dtype::F64 {
        bail!(
            "{what}: f64 runs on the CPU backend only (the wgpu shaders are f32); use --backend cpu"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_papers_settings() {
        let c = TrainConfig::default();
        assert_eq!(c.model, Family::ScLstm);
        assert_eq!((c.hidden, c.layers, c.batch_size), (300, 3, 10));
        assert_eq!((c.dropout, c.lr, c.clip), (0.5, 1e-3, 5.0));
        assert!(c.caps && !c.char_cnn && !c.crf);
        assert_eq!(c.scheme, SchemeChoice::Bio);
        c.validate().unwrap();
    }

    #[test]
    fn toml_round_trip_and_partial_files() {
        let c = TrainConfig {
            hidden: 17,
            lambda: BTreeMap::from([("ner".into(), 3.0)]),
            ..Default::default()
        };
        let back: TrainConfig = toml::from_str(&c.to_toml().unwrap()).unwrap();
        assert_eq!(back, c);
        let partial: TrainConfig = toml::from_str("model = \"lstm-s\"\nepochs = 2\n").unwrap();
        assert_eq!(
            (partial.model, partial.epochs, partial.hidden),
            (Family::LstmS, 2, 300)
        );
        assert!(
            toml::from_str::<TrainConfig>("hiden = 3\n").is_err(),
            "unknown keys are rejected"
        );
    }

    #[test]
    fn data_file_flags_parse() {
        let d: DataFile = "ner=/data/x.txt:conll2003".parse().unwrap();
        assert_eq!((d.task.as_str(), d.format.as_str()), ("ner", "conll2003"));
        let d: DataFile = "pos=C:/weird:name.conllu".parse().unwrap();
        assert_eq!(
            (d.path.to_str().unwrap(), d.format.as_str()),
            ("C:/weird:name.conllu", "conll")
        );
        assert!("nopath".parse::<DataFile>().is_err());
        let d: DataFile = "ner=x:y.txt:conll:iob1:tag=3".parse().unwrap();
        assert_eq!(
            (d.path.to_str().unwrap(), d.format.as_str()),
            ("x:y.txt", "conll:iob1:tag=3")
        );
        assert_eq!(
            parse_format(&d.format),
            Ok(FileFormat::Conll(ConllOptions {
                scheme: Some(Some(sclstm_data::scheme::TagScheme::Iob1)),
                tag_column: Some(3),
            }))
        );
        assert!(parse_format("conll:iob3").unwrap_err().contains("iob3"));
        assert!(parse_format("conllu:iob1").is_err());
        assert_eq!(
            parse_format("conll:labels").unwrap(),
            FileFormat::Conll(ConllOptions {
                scheme: Some(None),
                tag_column: None
            })
        );
        assert!("=x".parse::<DataFile>().is_err());
    }

    #[test]
    fn every_numeric_key_is_range_checked_and_named() {
        let bad: Vec<(&str, TrainConfig)> = vec![
            (
                "`clip` (--clip)",
                TrainConfig {
                    clip: -1.0,
                    ..Default::default()
                },
            ),
            (
                "`clip` (--clip)",
                TrainConfig {
                    clip: f64::NAN,
                    ..Default::default()
                },
            ),
            (
                "`clip` (--clip)",
                TrainConfig {
                    clip: 0.0,
                    ..Default::default()
                },
            ),
            (
                "`lr` (--lr)",
                TrainConfig {
                    lr: f64::INFINITY,
                    ..Default::default()
                },
            ),
            (
                "`lr` (--lr)",
                TrainConfig {
                    lr: -1e-3,
                    ..Default::default()
                },
            ),
            (
                "`epochs` (--epochs)",
                TrainConfig {
                    epochs: 0,
                    ..Default::default()
                },
            ),
            (
                "`batch_size` (--batch-size)",
                TrainConfig {
                    batch_size: 0,
                    ..Default::default()
                },
            ),
            (
                "`hidden` (--hidden)",
                TrainConfig {
                    hidden: 0,
                    ..Default::default()
                },
            ),
            (
                "`hidden` (--hidden)",
                TrainConfig {
                    hidden: MAX_HIDDEN + 1,
                    ..Default::default()
                },
            ),
            (
                "`layers` (--layers)",
                TrainConfig {
                    layers: 0,
                    ..Default::default()
                },
            ),
            (
                "`layers` (--layers)",
                TrainConfig {
                    layers: MAX_LAYERS + 1,
                    ..Default::default()
                },
            ),
            (
                "`dropout` (--dropout)",
                TrainConfig {
                    dropout: f64::NAN,
                    ..Default::default()
                },
            ),
            (
                "`dropout` (--dropout)",
                TrainConfig {
                    dropout: 1.0,
                    ..Default::default()
                },
            ),
            (
                "`max_sentences` (--max-sentences)",
                TrainConfig {
                    max_sentences: Some(0),
                    ..Default::default()
                },
            ),
            (
                "`lambda.ner`",
                TrainConfig {
                    lambda: BTreeMap::from([("ner".into(), f64::NAN)]),
                    ..Default::default()
                },
            ),
            (
                "`threads` (--threads)",
                TrainConfig {
                    threads: crate::pool::cores() + 1,
                    ..Default::default()
                },
            ),
        ];
        for (key, c) in bad {
            let msg = c.validate().unwrap_err().to_string();
            assert!(msg.contains(key), "{key}: {msg}");
        }
        let fine = TrainConfig {
            patience: usize::MAX,
            seed: u64::MAX,
            threads: 0,
            max_sentences: Some(1),
            hidden: MAX_HIDDEN,
            dropout: 0.0,
            ..Default::default()
        };
        fine.validate().unwrap();
        let msg = TrainConfig {
            threads: 100_000,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains(&format!("{} cores", crate::pool::cores())),
            "{msg}"
        );
    }

    #[test]
    fn toml_values_are_checked_with_the_file_named() {
        let dir = std::env::temp_dir().join(format!("sclstm-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad-clip.toml");
        std::fs::write(&path, "clip = -1\n").unwrap();
        let msg = format!("{:#}", TrainConfig::from_toml_file(&path).unwrap_err());
        assert!(
            msg.contains("bad-clip.toml") && msg.contains("`clip`"),
            "{msg}"
        );
        std::fs::write(&path, "epochs = 0\n").unwrap();
        let msg = format!("{:#}", TrainConfig::from_toml_file(&path).unwrap_err());
        assert!(
            msg.contains("bad-clip.toml") && msg.contains("`epochs`"),
            "{msg}"
        );
        // Keys that flags may still fix are checked by `validate`, not by the reader.
        std::fs::write(&path, "threads = 100000\nmodel = \"lstm-d\"\nlayers = 2\n").unwrap();
        let c = TrainConfig::from_toml_file(&path).unwrap();
        assert!(c.validate().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn invalid_values_name_the_key() {
        let c = TrainConfig {
            dropout: 1.5,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("dropout"));
        let c = TrainConfig {
            model: Family::LstmD,
            layers: 2,
            ..Default::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("lstm_d_layer.ner")
        );
        let c = TrainConfig {
            lambda: BTreeMap::from([("xyz".into(), 2.0)]),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("xyz"));
    }
}
