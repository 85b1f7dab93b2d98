//! The model configuration: family, tasks and heads, input representation, encoder sizes.
//!
//! Field names are stable: the training configuration embeds a [`ModelConfig`] (TOML or
//! JSON) and run directories store it. Every field except `tasks` and `word_vocab` has a
//! default (`#[serde(default)]`), so a minimal configuration names only those two.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Which encoder the tagger uses (paper §2.2, §3, §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Family {
    /// Single-task learning: each task has its own input representation and BiLSTM stack.
    #[serde(rename = "stl")]
    Stl,
    /// One shared BiLSTM stack; every task's head reads the top layer.
    #[serde(rename = "lstm-s")]
    LstmS,
    /// One shared BiLSTM stack; each task's head reads its assigned layer.
    #[serde(rename = "lstm-d")]
    LstmD,
    /// Stacked Bi-SC-LSTM; task `k`'s head reads `s^k = q^k ⊕ h` of the top layer.
    #[default]
    #[serde(rename = "sc-lstm")]
    ScLstm,
}

impl Family {
    /// Every family, in the paper's order of presentation.
    pub const ALL: [Family; 4] = [Family::Stl, Family::LstmS, Family::LstmD, Family::ScLstm];

    /// The name used in configurations and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Family::Stl => "stl",
            Family::LstmS => "lstm-s",
            Family::LstmD => "lstm-d",
            Family::ScLstm => "sc-lstm",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Family {
    type Err = ModelError;

    /// Parses `stl`, `lstm-s`, `lstm-d` or `sc-lstm`.
    fn from_str(s: &str) -> Result<Self, ModelError> {
        Family::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                ModelError::Config(format!(
                    "unknown model family {s:?} (stl, lstm-s, lstm-d, sc-lstm)"
                ))
            })
    }
}

impl FromStr for HeadKind {
    type Err = ModelError;

    /// Parses `softmax` or `crf`.
    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s {
            "softmax" => Ok(HeadKind::Softmax),
            "crf" => Ok(HeadKind::Crf),
            _ => Err(ModelError::Config(format!(
                "unknown head {s:?} (softmax, crf)"
            ))),
        }
    }
}

impl FromStr for TaskInputMode {
    type Err = ModelError;

    /// Parses `shared` or `chained`.
    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s {
            "shared" => Ok(TaskInputMode::Shared),
            "chained" => Ok(TaskInputMode::Chained),
            _ => Err(ModelError::Config(format!(
                "unknown task input {s:?} (shared, chained)"
            ))),
        }
    }
}

/// A task's classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum HeadKind {
    /// Per-token softmax (paper Eq. 5–6).
    #[default]
    #[serde(rename = "softmax")]
    Softmax,
    /// Linear-chain CRF with start / end transitions.
    #[serde(rename = "crf")]
    Crf,
}

/// What an SC-LSTM task gate reads as `x^k_t` above the first layer (the paper leaves it
/// open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum TaskInputMode {
    /// Reading (a): only the top layer has task gates, reading the top layer's shared
    /// input; lower layers are plain BiLSTM layers (their task gates are never computed).
    #[default]
    #[serde(rename = "shared")]
    Shared,
    /// Reading (b): every layer has task gates; layer 1's read the input representation,
    /// layer `l > 1`'s read layer `l−1`'s `[q^k_fwd ⊕ q^k_bwd]`.
    #[serde(rename = "chained")]
    Chained,
}

fn one() -> f64 {
    1.0
}

/// One task: its name, tag set, head and loss weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskConfig {
    /// Task name, used in parameter names (`head.<name>.weight`); e.g. `ner`, `chunk`, `pos`.
    pub name: String,
    /// Tag names indexed by tag id (`O`, `B-PER`, …). Their number fixes the head size.
    pub tags: Vec<String>,
    /// Classifier (default `softmax`).
    #[serde(default)]
    pub head: HeadKind,
    /// Loss weight λ of paper Eq. 4 (default 1).
    #[serde(default = "one")]
    pub lambda: f64,
    /// LSTM-d only: the 1-based layer whose output this task's head reads. Default by
    /// name: `pos` → 1, `chunk` → 2, `ner` → 3; other names must set it.
    #[serde(default)]
    pub layer: Option<usize>,
}

impl TaskConfig {
    /// A softmax task with λ = 1.
    pub fn new(name: &str, tags: &[&str]) -> Self {
        TaskConfig {
            name: name.to_string(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            head: HeadKind::Softmax,
            lambda: 1.0,
            layer: None,
        }
    }
}

fn char_dim() -> usize {
    16
}
fn kernel() -> usize {
    3
}
fn channels() -> usize {
    128
}

/// Contextual word features from a frozen pretrained encoder (the SC-LSTM-LM-CNN
/// variant): `states` hidden states of width `dim` at each word (the encoder's embedding
/// output and each of its layers), mixed by a learned scalar mix and appended to the
/// input representation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextualConfig {
    /// Hidden states per word `L + 1` (7 for MiniLM-L6).
    pub states: usize,
    /// Width of each state `D` (384 for MiniLM-L6), the columns the mix adds.
    pub dim: usize,
}

/// The character CNN of paper Table 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CharCnnConfig {
    /// Characters in the character vocabulary (id 0 = padding).
    pub vocab: usize,
    /// Character embedding size (16), initialised uniform in ±0.1.
    #[serde(default = "char_dim")]
    pub dim: usize,
    /// Convolution width; only 3 (with padding 1, stride 1) is supported.
    #[serde(default = "kernel")]
    pub kernel: usize,
    /// Output channels (128), max-pooled over the characters of each word.
    #[serde(default = "channels")]
    pub channels: usize,
}

impl CharCnnConfig {
    /// Paper settings for a character vocabulary of `vocab` entries.
    pub fn new(vocab: usize) -> Self {
        CharCnnConfig {
            vocab,
            dim: char_dim(),
            kernel: kernel(),
            channels: channels(),
        }
    }
}

fn word_dim() -> usize {
    100
}
fn yes() -> bool {
    true
}
fn hidden() -> usize {
    300
}
fn layers() -> usize {
    3
}
fn dropout() -> f64 {
    0.5
}

/// Tokens of the batch [`ModelConfig::check_memory`] assumes: 10 sentences (the paper's batch)
/// of 128 tokens, longer than almost every CoNLL sentence.
pub const ESTIMATE_BATCH_TOKENS: usize = 10 * 128;

/// Memory this machine can still give the process without swapping, in bytes: `MemAvailable`
/// of `/proc/meminfo` on Linux, `None` where it is not known.
pub fn available_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&text)
}

/// The `MemAvailable:` line of `/proc/meminfo` text, in bytes.
fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// Everything that fixes the shapes and behaviour of a [`crate::Tagger`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Model family (default `sc-lstm`).
    #[serde(default)]
    pub family: Family,
    /// Tasks, in task-index order.
    pub tasks: Vec<TaskConfig>,
    /// Rows of the word embedding table (id 0 = padding).
    pub word_vocab: usize,
    /// Word embedding size (default 100; must match pretrained vectors).
    #[serde(default = "word_dim")]
    pub word_dim: usize,
    /// Append the 8 capitalization classes (default true): a fixed one-hot 8-vector, or a
    /// learned embedding when `caps_dim` is set.
    #[serde(default = "yes")]
    pub caps: bool,
    /// With `caps`: learn an `(8, caps_dim)` capitalization embedding instead of the fixed
    /// one-hot vector (default none: one-hot, as in the paper).
    #[serde(default)]
    pub caps_dim: Option<usize>,
    /// Optional character CNN (default none).
    #[serde(default)]
    pub char_cnn: Option<CharCnnConfig>,
    /// Hidden size `H` of each direction (default 300).
    #[serde(default = "hidden")]
    pub hidden: usize,
    /// Stacked bidirectional layers (default 3).
    #[serde(default = "layers")]
    pub layers: usize,
    /// Dropout probability (default 0.5): on the input representation, between layers and
    /// on the representation each head reads.
    #[serde(default = "dropout")]
    pub dropout: f64,
    /// SC-LSTM: what task gates read (default `shared`).
    #[serde(default)]
    pub task_input: TaskInputMode,
    /// CRF heads: decode under BIO constraints (`I-X` only after `B-X`/`I-X`; default false).
    #[serde(default)]
    pub bio_constrained: bool,
    /// Contextual features from a frozen encoder (default none).
    #[serde(default)]
    pub contextual: Option<ContextualConfig>,
}

impl ModelConfig {
    /// A configuration with the paper's defaults for the given tasks and vocabulary.
    pub fn new(family: Family, tasks: Vec<TaskConfig>, word_vocab: usize) -> Self {
        ModelConfig {
            family,
            tasks,
            word_vocab,
            word_dim: word_dim(),
            caps: true,
            caps_dim: None,
            char_cnn: None,
            hidden: hidden(),
            layers: layers(),
            dropout: dropout(),
            task_input: TaskInputMode::Shared,
            bio_constrained: false,
            contextual: None,
        }
    }

    /// Index of a task by name.
    ///
    /// # Errors
    /// [`ModelError::UnknownTask`] if no task has that name.
    pub fn task_index(&self, name: &str) -> Result<usize, ModelError> {
        self.tasks
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| ModelError::UnknownTask {
                name: name.to_string(),
                known: self.tasks.iter().map(|t| t.name.clone()).collect(),
            })
    }

    /// Width of the capitalization features: 0 without caps, `caps_dim` when learned, else 8.
    pub fn caps_width(&self) -> usize {
        match (self.caps, self.caps_dim) {
            (false, _) => 0,
            (true, Some(d)) => d,
            (true, None) => crate::NUM_CAPS,
        }
    }

    /// Width of the input representation: word dim + caps width + CNN channels +
    /// contextual width.
    pub fn input_dim(&self) -> usize {
        self.word_dim
            + self.caps_width()
            + self.char_cnn.as_ref().map_or(0, |c| c.channels)
            + self.contextual.as_ref().map_or(0, |c| c.dim)
    }

    /// LSTM-d: the 1-based layer task `k`'s head reads (explicit `layer`, else the default
    /// by name).
    ///
    /// # Errors
    /// [`ModelError::Config`] for a task without a layer and no default, or a layer
    /// outside `1..=layers`.
    pub fn supervised_layer(&self, k: usize) -> Result<usize, ModelError> {
        let t = &self.tasks[k];
        let layer = match (t.layer, t.name.as_str()) {
            (Some(l), _) => l,
            (None, "pos") => 1,
            (None, "chunk") => 2,
            (None, "ner") => 3,
            (None, other) => {
                return Err(ModelError::Config(format!(
                    "lstm-d: task {other:?} needs an explicit `layer` (defaults exist only for pos, chunk, ner)"
                )));
            }
        };
        if layer == 0 || layer > self.layers {
            return Err(ModelError::Config(format!(
                "lstm-d: task {:?} is assigned to layer {layer}, but the model has layers 1..={}",
                t.name, self.layers
            )));
        }
        Ok(layer)
    }

    /// Number of scalar parameters of the tagger this configuration builds, or `None` when
    /// the count overflows `u64`.
    pub fn parameter_count(&self) -> Option<u64> {
        let n = |x: usize| u64::try_from(x).ok();
        let h = n(self.hidden)?;
        let tasks = n(self.tasks.len())?;
        let input = n(self.word_dim)?
            .checked_add(n(self.caps_width())?)?
            .checked_add(self.char_cnn.as_ref().map_or(Some(0), |c| n(c.channels))?)?
            .checked_add(self.contextual.as_ref().map_or(Some(0), |c| n(c.dim))?)?;
        let mut encoder = n(self.word_vocab)?.checked_mul(n(self.word_dim)?)?;
        if let (true, Some(d)) = (self.caps, self.caps_dim) {
            encoder = encoder.checked_add(n(crate::NUM_CAPS)?.checked_mul(n(d)?)?)?;
        }
        if let Some(c) = &self.contextual {
            // Mixing weights and γ.
            encoder = encoder.checked_add(n(c.states)?.checked_add(1)?)?;
        }
        if let Some(c) = &self.char_cnn {
            let (v, d, k, ch) = (n(c.vocab)?, n(c.dim)?, n(c.kernel)?, n(c.channels)?);
            let cnn = v
                .checked_mul(d)?
                .checked_add(k.checked_mul(d)?.checked_mul(ch)?)?
                .checked_add(ch)?;
            encoder = encoder.checked_add(cnn)?;
        }
        let h4 = h.checked_mul(4)?;
        let h2 = h.checked_mul(2)?;
        for l in 0..self.layers {
            let d_in = if l == 0 { input } else { h2 };
            let gated = self.family == Family::ScLstm
                && (l + 1 == self.layers || self.task_input == TaskInputMode::Chained);
            let d_k = if self.task_input == TaskInputMode::Chained && l > 0 {
                h2
            } else {
                d_in
            };
            let mut dir = h4
                .checked_mul(d_in)?
                .checked_add(h4.checked_mul(h)?)?
                .checked_add(h4)?;
            if gated {
                let gate = h
                    .checked_mul(d_k)?
                    .checked_add(h.checked_mul(h)?)?
                    .checked_add(h)?;
                dir = dir.checked_add(tasks.checked_mul(gate)?)?;
            }
            encoder = encoder.checked_add(dir.checked_mul(2)?)?;
        }
        let encoders = if self.family == Family::Stl { tasks } else { 1 };
        let mut total = encoder.checked_mul(encoders)?;
        let d_s = if self.family == Family::ScLstm {
            h4
        } else {
            h2
        };
        for t in &self.tasks {
            let tags = n(t.tags.len())?;
            let mut head = d_s.checked_mul(tags)?.checked_add(tags)?;
            if t.head == HeadKind::Crf {
                head =
                    head.checked_add(tags.checked_mul(tags)?.checked_add(tags.checked_mul(2)?)?)?;
            }
            total = total.checked_add(head)?;
        }
        Some(total)
    }

    /// A rough upper estimate of the memory, in bytes, that training this tagger with
    /// `elem_bytes`-byte scalars takes: parameters, gradients and the two Adam moments
    /// (4 copies of every parameter), plus the activations of a batch of `batch_tokens`
    /// tokens kept for the backward pass. `None` when the arithmetic overflows `u64`.
    pub fn estimated_bytes(&self, elem_bytes: usize, batch_tokens: usize) -> Option<u64> {
        let n = |x: usize| u64::try_from(x).ok();
        let h = n(self.hidden)?;
        let tasks = n(self.tasks.len())?;
        let tags: u64 = self
            .tasks
            .iter()
            .try_fold(0u64, |acc, t| acc.checked_add(n(t.tags.len())?))?;
        let input = n(self.word_dim)?
            .checked_add(n(self.caps_width())?)?
            .checked_add(self.char_cnn.as_ref().map_or(Some(0), |c| n(c.channels))?)?
            .checked_add(self.contextual.as_ref().map_or(Some(0), |c| n(c.dim))?)?;
        // Per token and direction of a layer: 4 gates, cell and its tanh, output (8H), and
        // q, s and two gate values per gated task (4H each).
        let gated_tasks = if self.family == Family::ScLstm {
            tasks
        } else {
            0
        };
        let layer = h.checked_mul(8u64.checked_add(gated_tasks.checked_mul(4)?)?)?;
        let encoder = n(self.layers)?
            .checked_mul(2)?
            .checked_mul(layer)?
            .checked_add(input)?;
        let encoders = if self.family == Family::Stl { tasks } else { 1 };
        let d_s = h.checked_mul(4)?;
        let heads = tasks.checked_mul(d_s)?.checked_add(tags.checked_mul(2)?)?;
        // The encoder's states a token brings (a constant input, counted once per encoder).
        let contextual = match &self.contextual {
            Some(c) => n(c.states)?.checked_mul(n(c.dim)?)?,
            None => 0,
        };
        let per_token = encoder
            .checked_add(contextual)?
            .checked_mul(encoders)?
            .checked_add(heads)?;
        // Forward values and their gradients.
        let activations = per_token.checked_mul(n(batch_tokens)?)?.checked_mul(2)?;
        self.parameter_count()?
            .checked_mul(4)?
            .checked_add(activations)?
            .checked_mul(n(elem_bytes)?)
    }

    /// Checks that a tagger of this configuration fits in memory: [`Self::estimated_bytes`]
    /// for a batch of [`ESTIMATE_BATCH_TOKENS`] tokens, against the memory this machine has
    /// available ([`available_memory_bytes`]; skipped where that is unknown).
    ///
    /// # Errors
    /// [`ModelError::SizeOverflow`] when the size overflows 64-bit arithmetic,
    /// [`ModelError::TooLarge`] when it exceeds the available memory.
    pub fn check_memory(&self, elem_bytes: usize) -> Result<(), ModelError> {
        let needed = self
            .estimated_bytes(elem_bytes, ESTIMATE_BATCH_TOKENS)
            .ok_or(ModelError::SizeOverflow {
                word_vocab: self.word_vocab,
                word_dim: self.word_dim,
                hidden: self.hidden,
                layers: self.layers,
            })?;
        match available_memory_bytes() {
            Some(available) if needed > available => {
                Err(ModelError::TooLarge { needed, available })
            }
            _ => Ok(()),
        }
    }

    /// Checks the configuration for consistency.
    ///
    /// # Errors
    /// [`ModelError::Config`] naming the offending field.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::Config(m));
        if self.tasks.is_empty() {
            return bad("at least one task is required".into());
        }
        for (i, t) in self.tasks.iter().enumerate() {
            if t.name.is_empty()
                || t.name.contains(['.', '/'])
                || t.name.contains(char::is_whitespace)
            {
                return bad(format!(
                    "task name {:?} must be non-empty without '.', '/' or spaces",
                    t.name
                ));
            }
            if self.tasks[..i].iter().any(|o| o.name == t.name) {
                return bad(format!("task {:?} listed twice", t.name));
            }
            if t.tags.is_empty() {
                return bad(format!("task {:?} has no tags", t.name));
            }
            if !(t.lambda.is_finite() && t.lambda >= 0.0) {
                return bad(format!(
                    "task {:?}: lambda {} must be finite and ≥ 0",
                    t.name, t.lambda
                ));
            }
        }
        if self.word_vocab == 0 || self.word_dim == 0 {
            return bad("word_vocab and word_dim must be positive".into());
        }
        if self.caps_dim == Some(0) {
            return bad("caps_dim must be positive".into());
        }
        if self.hidden == 0 || self.layers == 0 {
            return bad("hidden and layers must be positive".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} must be in [0, 1)", self.dropout));
        }
        if let Some(c) = &self.char_cnn {
            if c.kernel != 3 {
                return bad(format!(
                    "char_cnn.kernel {} is not supported (only 3)",
                    c.kernel
                ));
            }
            if c.vocab == 0 || c.dim == 0 || c.channels == 0 {
                return bad("char_cnn vocab, dim and channels must be positive".into());
            }
        }
        if let Some(c) = &self.contextual
            && (c.states == 0 || c.dim == 0)
        {
            return bad("contextual states and dim must be positive".into());
        }
        if self.family == Family::LstmD {
            for k in 0..self.tasks.len() {
                self.supervised_layer(k)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contextual_features_widen_the_input_and_add_the_mix_parameters() {
        let mut c = ModelConfig::new(Family::ScLstm, vec![TaskConfig::new("pos", &["A"])], 10);
        let (dim, params, bytes) = (
            c.input_dim(),
            c.parameter_count().unwrap(),
            c.estimated_bytes(4, 100).unwrap(),
        );
        c.contextual = Some(ContextualConfig {
            states: 7,
            dim: 384,
        });
        assert_eq!(c.input_dim(), dim + 384);
        // The first layer's 2 directions × 4H rows read 384 more columns, and the SC-LSTM
        // top layer (the third) is not the first; plus 7 weights and γ.
        assert_eq!(c.parameter_count().unwrap(), params + 2 * 4 * 300 * 384 + 8);
        assert!(c.estimated_bytes(4, 100).unwrap() > bytes + 4 * 100 * 7 * 384);
        let json = serde_json::to_string(&c).unwrap();
        let back: ModelConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        c.contextual = Some(ContextualConfig {
            states: 0,
            dim: 384,
        });
        assert!(c.validate().is_err());
    }

    #[test]
    fn minimal_json_gets_paper_defaults_and_names_are_stable() {
        let json = r#"{"tasks": [{"name": "ner", "tags": ["O", "B-PER", "I-PER"], "head": "crf", "lambda": 3},
                                  {"name": "pos", "tags": ["NOUN"]}],
                       "word_vocab": 50}"#;
        let c: ModelConfig = serde_json::from_str(json).expect("valid config");
        assert_eq!(c.family, Family::ScLstm);
        assert_eq!(
            (c.word_dim, c.hidden, c.layers, c.dropout),
            (100, 300, 3, 0.5)
        );
        assert!(c.caps && c.caps_dim.is_none() && c.char_cnn.is_none() && !c.bio_constrained);
        assert_eq!(c.task_input, TaskInputMode::Shared);
        assert_eq!((c.tasks[0].head, c.tasks[0].lambda), (HeadKind::Crf, 3.0));
        assert_eq!(
            (c.tasks[1].head, c.tasks[1].lambda),
            (HeadKind::Softmax, 1.0)
        );
        assert_eq!(c.input_dim(), 108);
        c.validate().expect("valid");
        let out = serde_json::to_value(&c).expect("serializes");
        assert_eq!(out["family"], "sc-lstm");
        assert_eq!(out["task_input"], "shared");
        assert_eq!(out["tasks"][0]["head"], "crf");
        let back: ModelConfig = serde_json::from_value(out).expect("round trip");
        assert_eq!(back, c);
        let cnn: CharCnnConfig = serde_json::from_str(r#"{"vocab": 80}"#).expect("defaults");
        assert_eq!(cnn, CharCnnConfig::new(80));
    }

    #[test]
    fn size_estimate_counts_parameters_and_rejects_overflow_and_huge_models() {
        let mut c = ModelConfig::new(Family::LstmS, vec![TaskConfig::new("pos", &["N", "V"])], 10);
        (c.word_dim, c.hidden, c.layers, c.caps) = (3, 2, 1, false);
        // Embedding 10·3; one layer, two directions of 4H·d_in + 4H·H + 4H; head 2H·2 + 2.
        assert_eq!(
            c.parameter_count(),
            Some(30 + 2 * (8 * 3 + 8 * 2 + 8) + 4 * 2 + 2)
        );
        let params = c.parameter_count().unwrap();
        assert!(c.estimated_bytes(4, 0) == Some(16 * params));
        assert!(c.estimated_bytes(4, 100).unwrap() > 16 * params);
        c.check_memory(4).expect("a tiny model fits");
        c.hidden = 1 << 62;
        assert_eq!(c.estimated_bytes(4, 1), None);
        assert!(matches!(
            c.check_memory(4),
            Err(ModelError::SizeOverflow { .. })
        ));
        c.hidden = 2;
        c.word_vocab = 20_000;
        c.word_dim = 1 << 32;
        match c.check_memory(4) {
            Err(ModelError::TooLarge { needed, available }) => {
                assert!(needed > 20_000 << 36 && needed > available);
                let msg = c.check_memory(4).unwrap_err().to_string();
                assert!(msg.contains(&needed.to_string()) && msg.contains(&available.to_string()));
            }
            other => assert!(
                available_memory_bytes().is_none() && other.is_ok(),
                "{other:?}"
            ),
        }
    }

    #[test]
    fn mem_available_is_read_in_bytes() {
        let text =
            "MemTotal:       131072000 kB\nMemFree:         1000 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(parse_mem_available(text), Some(2048 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn names_parse_and_bad_configs_are_rejected() {
        for f in Family::ALL {
            assert_eq!(f.name().parse::<Family>().expect("round trip"), f);
        }
        assert!("lstm".parse::<Family>().is_err());
        assert_eq!("crf".parse::<HeadKind>().expect("crf"), HeadKind::Crf);
        assert_eq!(
            "chained".parse::<TaskInputMode>().expect("chained"),
            TaskInputMode::Chained
        );
        let ok = ModelConfig::new(
            Family::LstmD,
            vec![
                TaskConfig::new("pos", &["N"]),
                TaskConfig::new("ner", &["O"]),
            ],
            5,
        );
        ok.validate().expect("pos → 1, ner → 3");
        assert_eq!(ok.supervised_layer(1).expect("default"), 3);
        let mut two_layers = ok.clone();
        two_layers.layers = 2;
        assert!(
            matches!(two_layers.validate(), Err(ModelError::Config(m)) if m.contains("layer 3"))
        );
        let mut explicit = two_layers.clone();
        explicit.tasks[1].layer = Some(2);
        explicit.validate().expect("explicit layer");
        let mut dup = ok.clone();
        dup.tasks[1].name = "pos".into();
        assert!(dup.validate().is_err());
        let mut dotted = ok.clone();
        dotted.tasks[0].name = "a.b".into();
        assert!(dotted.validate().is_err());
        let mut drop = ok;
        drop.dropout = 1.0;
        assert!(drop.validate().is_err());
    }
}
