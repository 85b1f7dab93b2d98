//! The three shipped tasks (NER, chunking, POS), the GloVe file, the CoNLL-2000 dev carve, and the
//! `SHA256SUMS` check, all relative to a datasets root (the project's `datasets/`).
//!
//! | task | files | file scheme | training scheme | metric |
//! |---|---|---|---|---|
//! | ner | `conll2003/{train,dev,test}.txt`, column 4 | IOB1 | BIO (default) or BIOES | chunk F1 |
//! | chunk | `conll2000/{train,test}.txt`, column 3; dev carved from train | IOB2 | BIO or BIOES | chunk F1 |
//! | pos | `ud-en-ewt/{train,dev,test}.conllu`, UPOS | — | — | accuracy |
//!
//! **Dev carve (CoNLL-2000).** The training file's sentence indices `0..8936` are shuffled with
//! [`crate::batch::shuffle`] driven by [`crate::batch::seeded_rng`]`(`[`CHUNK_DEV_SEED`]`, 0)`; the first
//! [`CHUNK_DEV_SIZE`] indices form dev and the rest train, each kept in file order.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::batch::{seeded_rng, shuffle};
use crate::conll::{ColumnFormat, Sentence, read_conll};
use crate::conllu::{PosColumn, read_conllu};
use crate::error::{DataError, DataErrorKind};
use crate::glove::Embeddings;
use crate::scheme::TagScheme;
use crate::vocab::{CharVocab, TagVocab, WordVocab};

/// Seed of the CoNLL-2000 dev carve.
pub const CHUNK_DEV_SEED: u64 = 2000;
/// Number of CoNLL-2000 training sentences carved out as dev (paper §4.1).
pub const CHUNK_DEV_SIZE: usize = 1000;
/// The shipped GloVe file, relative to the datasets root.
pub const GLOVE_FILE: &str = "glove/glove.6B.50d.filtered.txt.gz";

/// Environment variable naming the folder of the shipped datasets, for runs outside the repository.
pub const DATA_ENV: &str = "SCLSTM_DATA";

/// The places a data path is looked for, in order. An absolute path, or a relative one that exists
/// from the current directory, is only itself. Otherwise a relative path `datasets/REST` is also looked
/// for as `$SCLSTM_DATA/REST`, and every relative path relative to the executable as
/// `<exe>/../../PATH` (`target/release/sclstm` in a checkout) and `<exe>/../share/sclstm/PATH` (an
/// installed binary).
pub fn data_candidates(path: &Path) -> Vec<PathBuf> {
    let mut out = vec![path.to_path_buf()];
    if path.is_absolute() || path.exists() {
        return out;
    }
    if let Ok(rest) = path.strip_prefix("datasets")
        && let Some(root) = std::env::var_os(DATA_ENV).filter(|v| !v.is_empty())
    {
        out.push(PathBuf::from(root).join(rest));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.push(dir.join("../..").join(path));
        out.push(dir.join("../share/sclstm").join(path));
    }
    out
}

/// The first of [`data_candidates`] that exists; `path` itself when it exists or is absolute (a missing
/// absolute path is then reported by whatever reads it).
///
/// # Errors
/// [`DataErrorKind::NotFound`] about `path`, listing every place looked at.
pub fn locate(path: &Path) -> Result<PathBuf, DataError> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    let candidates = data_candidates(path);
    match candidates.iter().find(|c| c.exists()) {
        Some(found) => Ok(found.clone()),
        None => Err(DataError::new(
            path,
            0,
            DataErrorKind::NotFound { looked: candidates },
        )),
    }
}

/// A shipped task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Task {
    /// CoNLL-2003 English named entities.
    Ner,
    /// CoNLL-2000 chunking.
    Chunk,
    /// UD English EWT v1.3 universal POS tags.
    Pos,
}

/// How a task is scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Metric {
    /// conlleval chunk F1 ([`crate::conlleval`]).
    ChunkF1,
    /// Token accuracy.
    Accuracy,
}

impl Task {
    /// All tasks, in the order used everywhere (ner, chunk, pos).
    pub const ALL: [Task; 3] = [Task::Ner, Task::Chunk, Task::Pos];

    /// Short name: `ner`, `chunk`, `pos`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ner => "ner",
            Self::Chunk => "chunk",
            Self::Pos => "pos",
        }
    }

    /// The task's metric.
    pub fn metric(self) -> Metric {
        match self {
            Self::Ner | Self::Chunk => Metric::ChunkF1,
            Self::Pos => Metric::Accuracy,
        }
    }

    /// The chunk scheme of the shipped files (`None` for POS).
    pub fn file_scheme(self) -> Option<TagScheme> {
        match self {
            Self::Ner => Some(TagScheme::Iob1),
            Self::Chunk => Some(TagScheme::Iob2),
            Self::Pos => None,
        }
    }

    fn files(self) -> [&'static str; 3] {
        match self {
            Self::Ner => [
                "conll2003/train.txt",
                "conll2003/dev.txt",
                "conll2003/test.txt",
            ],
            Self::Chunk => [
                "conll2000/train.txt",
                "conll2000/train.txt",
                "conll2000/test.txt",
            ],
            Self::Pos => [
                "ud-en-ewt/train.conllu",
                "ud-en-ewt/dev.conllu",
                "ud-en-ewt/test.conllu",
            ],
        }
    }
}

impl std::str::FromStr for Task {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Task::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("unknown task {s:?} (expected ner, chunk or pos)"))
    }
}

/// One split of a task.
#[derive(Clone, Debug)]
pub struct Split {
    /// `train`, `dev` or `test`.
    pub name: &'static str,
    /// The file the sentences come from (CoNLL-2000 train and dev share `train.txt`).
    pub path: PathBuf,
    /// The sentences, tags in the task's training scheme; `line` points into `path`.
    pub sentences: Vec<Sentence>,
}

impl Split {
    /// Number of tokens.
    pub fn tokens(&self) -> usize {
        self.sentences.iter().map(Sentence::len).sum()
    }
}

/// A loaded task: its splits with tags converted to the training scheme.
#[derive(Clone, Debug)]
pub struct TaskData {
    /// Which task.
    pub task: Task,
    /// Training scheme of the tags in the splits (`None` for POS).
    pub scheme: Option<TagScheme>,
    /// Training split.
    pub train: Split,
    /// Development split.
    pub dev: Split,
    /// Test split.
    pub test: Split,
}

impl TaskData {
    /// The splits in order train, dev, test.
    pub fn splits(&self) -> [&Split; 3] {
        [&self.train, &self.dev, &self.test]
    }

    /// The task's tag set, from all three splits (tags are a closed set, so no split adds unseen ids).
    pub fn tag_vocab(&self) -> TagVocab {
        TagVocab::build(
            self.splits()
                .into_iter()
                .flat_map(|s| s.sentences.iter())
                .flat_map(|s| s.tags.iter().map(String::as_str)),
        )
    }
}

/// Reads a shipped file with its task's reader and returns its sentences with the file's own tags.
pub fn read_task_file(path: &Path, task: Task) -> Result<Vec<Sentence>, DataError> {
    match task {
        Task::Ner => read_conll(path, &ColumnFormat::CONLL2003_NER),
        Task::Chunk => read_conll(path, &ColumnFormat::CONLL2000_CHUNK),
        Task::Pos => read_conllu(path, PosColumn::Upos),
    }
}

/// Checks every sentence against `scheme`; the error names the line of the offending tag.
pub fn validate_sentences(
    path: &Path,
    sentences: &[Sentence],
    scheme: TagScheme,
) -> Result<(), DataError> {
    convert_sentences(path, sentences.to_vec(), scheme, scheme).map(|_| ())
}

/// Converts every sentence's tags from `from` to `to`, validating them against `from`.
pub fn convert_sentences(
    path: &Path,
    mut sentences: Vec<Sentence>,
    from: TagScheme,
    to: TagScheme,
) -> Result<Vec<Sentence>, DataError> {
    for (i, s) in sentences.iter_mut().enumerate() {
        s.tags = from.convert(&s.tags, to).map_err(|e| {
            DataError::new(
                path,
                s.line + e.position,
                DataErrorKind::InvalidTag {
                    tag: e.tag,
                    scheme: from,
                    reason: e.reason,
                },
            )
            .in_sentence(i)
        })?;
    }
    Ok(sentences)
}

/// Splits `sentences` into (train, dev) with `n` dev sentences chosen by `seed` (see the module docs).
pub fn carve_dev(
    path: &Path,
    sentences: Vec<Sentence>,
    n: usize,
    seed: u64,
) -> Result<(Vec<Sentence>, Vec<Sentence>), DataError> {
    if n > sentences.len() {
        return Err(DataError::new(
            path,
            0,
            DataErrorKind::DevCarveTooLarge {
                wanted: n,
                available: sentences.len(),
            },
        ));
    }
    let mut order: Vec<usize> = (0..sentences.len()).collect();
    shuffle(&mut order, &mut seeded_rng(seed, 0));
    let dev_set: BTreeSet<usize> = order[..n].iter().copied().collect();
    let (mut train, mut dev) = (Vec::new(), Vec::new());
    for (i, s) in sentences.into_iter().enumerate() {
        if dev_set.contains(&i) {
            dev.push(s)
        } else {
            train.push(s)
        }
    }
    Ok((train, dev))
}

/// Loads one shipped task with chunk tags converted to `scheme` (IOB2 = the paper's BIO, or BIOES).
pub fn load_task(root: &Path, task: Task, scheme: TagScheme) -> Result<TaskData, DataError> {
    let [tr, dv, te] = task.files().map(|f| root.join(f));
    let load = |path: &Path| -> Result<Vec<Sentence>, DataError> {
        let s = read_task_file(path, task)?;
        match task.file_scheme() {
            Some(from) => convert_sentences(path, s, from, scheme),
            None => Ok(s),
        }
    };
    let (train, dev) = match task {
        Task::Chunk => carve_dev(&tr, load(&tr)?, CHUNK_DEV_SIZE, CHUNK_DEV_SEED)?,
        _ => (load(&tr)?, load(&dv)?),
    };
    let test = load(&te)?;
    Ok(TaskData {
        task,
        scheme: task.file_scheme().map(|_| scheme),
        train: Split {
            name: "train",
            path: tr,
            sentences: train,
        },
        dev: Split {
            name: "dev",
            path: dv,
            sentences: dev,
        },
        test: Split {
            name: "test",
            path: te,
            sentences: test,
        },
    })
}

/// Loads all three shipped tasks (ner, chunk, pos) with chunk tags in `scheme`.
pub fn load_shipped(root: &Path, scheme: TagScheme) -> Result<Vec<TaskData>, DataError> {
    Task::ALL
        .into_iter()
        .map(|t| load_task(root, t, scheme))
        .collect()
}

/// Loads the shipped GloVe 6B 50d vectors.
pub fn load_shipped_glove(root: &Path) -> Result<Embeddings, DataError> {
    Embeddings::load(&root.join(GLOVE_FILE), Some(50))
}

/// Vocabularies shared by a multi-task model: one word and one char vocabulary, one tag set per task.
#[derive(Clone, Debug)]
pub struct Vocabs {
    /// Words: all training words of all tasks, plus dev/test words that have a GloVe vector.
    pub words: WordVocab,
    /// Characters of all training words.
    pub chars: CharVocab,
    /// One tag set per task, in the order of the `tasks` argument.
    pub tags: Vec<TagVocab>,
}

/// Builds the vocabularies for `tasks` (see [`WordVocab::build`] for which words are included).
pub fn build_vocabs(tasks: &[TaskData], glove: Option<&Embeddings>, lowercase: bool) -> Vocabs {
    let train_words = || {
        tasks
            .iter()
            .flat_map(|t| t.train.sentences.iter())
            .flat_map(|s| s.words.iter().map(String::as_str))
    };
    let other_words = tasks
        .iter()
        .flat_map(|t| [&t.dev, &t.test])
        .flat_map(|sp| sp.sentences.iter())
        .flat_map(|s| s.words.iter().map(String::as_str));
    Vocabs {
        words: WordVocab::build(train_words(), other_words, glove, lowercase),
        chars: CharVocab::build(train_words()),
        tags: tasks.iter().map(TaskData::tag_vocab).collect(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The folder under the data root that holds fetched encoders; not part of the shipped data.
pub const ENCODERS_DIR: &str = "encoders";

/// SHA-256 of bytes, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// SHA-256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::new(path, 0, DataErrorKind::Io(e)))?;
    Ok(sha256_hex(&bytes))
}

/// Verifies `root/SHA256SUMS` (`sha256sum` format) and that it lists every file under `root` except
/// `README.md` and `SHA256SUMS` themselves and the folder `encoders/` (pretrained encoders and
/// their feature caches, fetched by `scripts/fetch-encoder.sh` and git-ignored). Returns the number
/// of files verified.
pub fn verify_checksums(root: &Path) -> Result<usize, DataError> {
    let sums_path = root.join("SHA256SUMS");
    let text = crate::text::read_text(&sums_path)?;
    let mut listed = BTreeSet::new();
    for (no, line) in crate::text::lines(&text) {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || DataError::new(&sums_path, no, DataErrorKind::BadChecksumLine);
        let (digest, name) = line
            .split_once("  ")
            .or_else(|| line.split_once(" *"))
            .ok_or_else(bad)?;
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) || name.is_empty() {
            return Err(bad());
        }
        let name = name.strip_prefix("./").unwrap_or(name);
        let found = sha256_file(&root.join(name))?;
        if found != digest.to_ascii_lowercase() {
            return Err(DataError::new(
                &sums_path,
                no,
                DataErrorKind::ChecksumMismatch {
                    file: name.to_string(),
                    expected: digest.to_string(),
                    found,
                },
            ));
        }
        listed.insert(name.to_string());
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let io = |e| DataError::new(&dir, 0, DataErrorKind::Io(e));
        for entry in std::fs::read_dir(&dir).map_err(io)? {
            let p = entry.map_err(io)?.path();
            if p.is_dir() {
                if p != root.join(ENCODERS_DIR) {
                    stack.push(p);
                }
                continue;
            }
            let rel = p
                .strip_prefix(root)
                .expect("internal: walked path is under root");
            let rel = rel.to_string_lossy().replace('\\', "/");
            if rel != "README.md" && rel != "SHA256SUMS" && !listed.contains(&rel) {
                return Err(DataError::new(
                    &sums_path,
                    0,
                    DataErrorKind::UnlistedFile { file: rel },
                ));
            }
        }
    }
    Ok(listed.len())
}
