//! Turning the configured corpora into encoded splits and vocabularies.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sclstm_data::Sentence;
use sclstm_data::batch::{EncodedSentence, encode_sentences};
use sclstm_data::conll::{ColumnFormat, read_conll};
use sclstm_data::conllu::{PosColumn, read_conllu};
use sclstm_data::glove::Embeddings;
use sclstm_data::scheme::TagScheme;
use sclstm_data::shipped::{self, Metric, Task, TaskData};
use sclstm_data::vocab::{CharVocab, Coverage, TagVocab, WordVocab};

use crate::config::{DataFile, FileFormat, SchemeChoice, TrainConfig, parse_format};

/// One split of one task, as text (for reports) and as ids (for the model).
#[derive(Debug, Clone)]
pub struct PreparedSplit {
    /// The file it was read from.
    pub path: PathBuf,
    /// Sentences with tags in the training scheme.
    pub sentences: Vec<Sentence>,
    /// The same sentences as ids.
    pub encoded: Vec<EncodedSentence>,
    /// Their contextual features (with an encoder, see [`crate::contextual`]).
    pub contextual: Option<sclstm_encoder::Features>,
}

impl PreparedSplit {
    /// Number of tokens.
    pub fn tokens(&self) -> usize {
        self.encoded.iter().map(EncodedSentence::len).sum()
    }
}

/// One task ready for training: its tag set, metric, scheme and three splits.
#[derive(Debug, Clone)]
pub struct PreparedTask {
    /// Task name as configured.
    pub name: String,
    /// How it is scored.
    pub metric: Metric,
    /// Chunk scheme of its tags (`None`: plain labels such as POS).
    pub scheme: Option<TagScheme>,
    /// Its tag set.
    pub tags: TagVocab,
    /// Training split.
    pub train: PreparedSplit,
    /// Development split (model selection).
    pub dev: PreparedSplit,
    /// Test split.
    pub test: PreparedSplit,
}

/// Everything the trainer needs from the data side.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Tasks in configuration order.
    pub tasks: Vec<PreparedTask>,
    /// Shared word vocabulary.
    pub words: WordVocab,
    /// Shared character vocabulary.
    pub chars: CharVocab,
    /// Pretrained rows (row-major, `words.len() × dim`) and which ids were found.
    pub pretrained: (Vec<f32>, Vec<bool>),
    /// Embedding dimension.
    pub embedding_dim: usize,
    /// Coverage of the training words by the embedding file.
    pub coverage: Coverage,
    /// Shape of the contextual features (with an encoder, set by
    /// [`crate::contextual::attach`]).
    pub contextual: Option<sclstm_model::ContextualConfig>,
}

/// The tag scheme a `scheme` setting trains with.
pub fn training_scheme(c: SchemeChoice) -> TagScheme {
    match c {
        SchemeChoice::Bio => TagScheme::Iob2,
        SchemeChoice::Bioes => TagScheme::Bioes,
    }
}

/// Raw sentences of one task before encoding.
pub struct RawTask {
    /// Task name.
    pub name: String,
    /// How it is scored.
    pub metric: Metric,
    /// Chunk scheme of its tags after conversion, if any.
    pub scheme: Option<TagScheme>,
    /// (file, sentences) of train, dev and test.
    pub splits: [(PathBuf, Vec<Sentence>); 3],
}

/// Reads a user file in the given format, converting chunk tags to `scheme`; returns the
/// sentences and the scheme of their tags (`None`: plain labels).
pub fn read_user_file(
    f: &DataFile,
    scheme: TagScheme,
) -> anyhow::Result<(Vec<Sentence>, Option<TagScheme>)> {
    let path = f.path.as_path();
    let format = parse_format(&f.format)
        .map_err(|e| anyhow::anyhow!("{}: format `{}`: {e}", path.display(), f.format))?;
    let (sentences, file_scheme) = match format {
        FileFormat::Conll2003 => (
            read_conll(path, &ColumnFormat::CONLL2003_NER)?,
            Some(TagScheme::Iob1),
        ),
        FileFormat::Conll2000 => (
            read_conll(path, &ColumnFormat::CONLL2000_CHUNK)?,
            Some(TagScheme::Iob2),
        ),
        FileFormat::Conllu => (read_conllu(path, PosColumn::Upos)?, None),
        FileFormat::Conll(options) => {
            let s = read_generic(path, options.tag_column)?;
            let scheme = options.scheme.unwrap_or_else(|| {
                let chunky = s
                    .iter()
                    .flat_map(|s| s.tags.iter())
                    .all(|t| t == "O" || sclstm_data::scheme::split_tag(t).is_some());
                // Chunk-style tags are taken as IOB2 unless declared; anything else as labels.
                chunky.then_some(TagScheme::Iob2)
            });
            (s, scheme)
        }
    };
    let sentences = match file_scheme {
        Some(from) => shipped::convert_sentences(path, sentences, from, scheme)?,
        None => sentences,
    };
    Ok((sentences, file_scheme.map(|_| scheme)))
}

/// Reads a whitespace-separated file with the word in the first column and the tag in
/// the last (or the 1-based `tag_column`).
fn read_generic(path: &Path, tag_column: Option<usize>) -> anyhow::Result<Vec<Sentence>> {
    let text = sclstm_data::text::read_text(path)?;
    let first = sclstm_data::text::lines(&text)
        .find(|(_, l)| !sclstm_data::text::is_blank(l))
        .map(|(_, l)| l.split_whitespace().count());
    let Some(columns) = first else {
        bail!("{}: file holds no sentence", path.display());
    };
    if columns < 2 {
        bail!(
            "{}: expected at least a word column and a tag column",
            path.display()
        );
    }
    let tag = match tag_column {
        Some(n) if n > columns => bail!(
            "{}: tag column {n} asked for, but the first line has {columns} columns",
            path.display()
        ),
        Some(n) => n - 1,
        None => columns - 1,
    };
    Ok(read_conll(path, &ColumnFormat::word_tag(0, tag))?)
}

/// Reads the configured tasks' splits (shipped files, or the user's where given). A relative
/// `datasets` folder that does not exist here is looked for elsewhere ([`shipped::locate`]); the
/// configuration itself keeps the path as given.
pub fn load_raw(config: &TrainConfig, scheme: TagScheme) -> anyhow::Result<Vec<RawTask>> {
    let mut out = Vec::new();
    for name in &config.tasks {
        let user = |files: &[DataFile]| files.iter().find(|f| &f.task == name).cloned();
        let (tr, dv, te) = (user(&config.train), user(&config.dev), user(&config.test));
        let shipped_task: Option<Task> = name.parse().ok();
        let shipped_data: Option<TaskData> = match shipped_task {
            Some(t) if tr.is_none() || dv.is_none() || te.is_none() => Some(
                shipped::load_task(&shipped::locate(&config.datasets)?, t, scheme)
                    .with_context(|| format!("loading shipped task `{name}`"))?,
            ),
            _ => None,
        };
        let mut scheme_of_task = shipped_data.as_ref().and_then(|d| d.scheme);
        let mut metric = shipped_task.map(Task::metric);
        let mut pick = |file: Option<DataFile>,
                        split: usize,
                        what: &str|
         -> anyhow::Result<(PathBuf, Vec<Sentence>)> {
            if let Some(f) = file {
                let (s, sch) = read_user_file(&f, scheme)?;
                scheme_of_task = sch;
                metric.get_or_insert(if sch.is_some() {
                    Metric::ChunkF1
                } else {
                    Metric::Accuracy
                });
                return Ok((f.path, s));
            }
            match &shipped_data {
                Some(d) => {
                    let sp = d.splits()[split];
                    Ok((sp.path.clone(), sp.sentences.clone()))
                }
                None => bail!("task `{name}` is not shipped: give --{what} {name}=PATH[:FORMAT]"),
            }
        };
        let splits = [
            pick(tr, 0, "train")?,
            pick(dv, 1, "dev")?,
            pick(te, 2, "test")?,
        ];
        let mut splits = splits;
        if let Some(n) = config.max_sentences {
            for (_, s) in &mut splits {
                s.truncate(n);
            }
        }
        for (path, s) in &splits {
            if s.is_empty() {
                bail!("{}: no sentence to use for task `{name}`", path.display());
            }
        }
        out.push(RawTask {
            name: name.clone(),
            metric: metric.unwrap_or(Metric::Accuracy),
            scheme: scheme_of_task,
            splits,
        });
    }
    Ok(out)
}

/// Loads the configured tasks, builds the vocabularies and encodes every split (the embeddings
/// file is found as the datasets folder is, see [`load_raw`]).
pub fn prepare(config: &TrainConfig) -> anyhow::Result<Prepared> {
    let scheme = training_scheme(config.scheme);
    let raw = load_raw(config, scheme)?;
    let glove = shipped::locate(&config.embeddings)
        .and_then(|path| Embeddings::load(&path, None))
        .with_context(|| format!("loading embeddings {}", config.embeddings.display()))?;
    let train_words = || {
        raw.iter()
            .flat_map(|t| t.splits[0].1.iter())
            .flat_map(|s| s.words.iter().map(String::as_str))
    };
    let other_words = raw
        .iter()
        .flat_map(|t| t.splits[1..].iter())
        .flat_map(|(_, s)| s.iter())
        .flat_map(|s| s.words.iter().map(String::as_str));
    let words = WordVocab::build(train_words(), other_words, Some(&glove), true);
    let chars = CharVocab::build(train_words());
    let coverage = Coverage::measure(train_words(), &glove);
    let pretrained = words.pretrained(&glove);
    let mut tasks = Vec::new();
    for t in raw {
        let tags = TagVocab::build(
            t.splits
                .iter()
                .flat_map(|(_, s)| s.iter())
                .flat_map(|s| s.tags.iter().map(String::as_str)),
        );
        let [tr, dv, te] = t.splits;
        let enc = |(path, sentences): (PathBuf, Vec<Sentence>)| -> anyhow::Result<PreparedSplit> {
            let encoded = encode_sentences(&path, &sentences, &words, &chars, &tags)?;
            Ok(PreparedSplit {
                path,
                sentences,
                encoded,
                contextual: None,
            })
        };
        tasks.push(PreparedTask {
            name: t.name,
            metric: t.metric,
            scheme: t.scheme,
            train: enc(tr)?,
            dev: enc(dv)?,
            test: enc(te)?,
            tags,
        });
    }
    Ok(Prepared {
        tasks,
        words,
        chars,
        pretrained,
        embedding_dim: glove.dim,
        coverage,
        contextual: None,
    })
}
