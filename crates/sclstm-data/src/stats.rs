//! Corpus statistics of the shipped data, as printed by `sclstm stats`.

use std::fmt;
use std::path::Path;

use crate::conll::Sentence;
use crate::conlleval::ConllEval;
use crate::error::DataError;
use crate::glove::Embeddings;
use crate::scheme::TagScheme;
use crate::shipped::{
    CHUNK_DEV_SEED, CHUNK_DEV_SIZE, GLOVE_FILE, Task, carve_dev, load_shipped_glove, read_task_file,
};
use crate::vocab::Coverage;

/// Counts for one split.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SplitStats {
    /// Task name.
    pub task: &'static str,
    /// `train`, `dev`, `test`, or for chunking also `train-full` (the whole training file).
    pub split: &'static str,
    /// File, relative to the datasets root.
    pub file: &'static str,
    /// Sentences (CoNLL-2003 `-DOCSTART-` lines excluded).
    pub sentences: usize,
    /// Tokens.
    pub tokens: usize,
    /// Distinct tags in the file's own scheme.
    pub tags: usize,
    /// Distinct tags after conversion to BIO (chunk-tagged tasks only).
    pub tags_bio: Option<usize>,
    /// Gold chunks by conlleval's rules (chunk-tagged tasks only).
    pub chunks: Option<usize>,
    /// Embedding coverage of the split's words.
    pub coverage: Coverage,
}

/// Statistics of every shipped split plus the embedding file.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DataStats {
    /// Embedding file, relative to the datasets root.
    pub glove_file: &'static str,
    /// Vectors in it.
    pub glove_words: usize,
    /// Their dimension.
    pub glove_dim: usize,
    /// One entry per split.
    pub splits: Vec<SplitStats>,
}

fn split_stats(
    path: &Path,
    task: Task,
    split: &'static str,
    file: &'static str,
    sentences: &[Sentence],
    glove: &Embeddings,
) -> Result<SplitStats, DataError> {
    let all_tags = sentences
        .iter()
        .flat_map(|s| s.tags.iter().map(String::as_str));
    let tags = all_tags
        .clone()
        .collect::<std::collections::HashSet<_>>()
        .len();
    let (mut tags_bio, mut chunks) = (None, None);
    if let Some(scheme) = task.file_scheme() {
        let mut eval = ConllEval::new();
        let mut bio = std::collections::HashSet::new();
        for (i, s) in sentences.iter().enumerate() {
            eval.add_sentence(i, &s.tags, &s.tags)
                .expect("internal: gold scored against itself");
            let converted = scheme.convert(&s.tags, TagScheme::Iob2).map_err(|e| {
                DataError::new(
                    path,
                    s.line + e.position,
                    crate::error::DataErrorKind::InvalidTag {
                        tag: e.tag,
                        scheme,
                        reason: e.reason,
                    },
                )
                .in_sentence(i)
            })?;
            bio.extend(converted);
        }
        tags_bio = Some(bio.len());
        chunks = Some(eval.counts().gold);
    }
    Ok(SplitStats {
        task: task.name(),
        split,
        file,
        sentences: sentences.len(),
        tokens: sentences.iter().map(Sentence::len).sum(),
        tags,
        tags_bio,
        chunks,
        coverage: Coverage::measure(
            sentences
                .iter()
                .flat_map(|s| s.words.iter().map(String::as_str)),
            glove,
        ),
    })
}

/// Computes [`DataStats`] for the shipped data under `root`.
pub fn shipped_stats(root: &Path) -> Result<DataStats, DataError> {
    let glove = load_shipped_glove(root)?;
    let mut splits = Vec::new();
    let files: [(Task, &'static str, &'static str); 8] = [
        (Task::Ner, "train", "conll2003/train.txt"),
        (Task::Ner, "dev", "conll2003/dev.txt"),
        (Task::Ner, "test", "conll2003/test.txt"),
        (Task::Chunk, "train-full", "conll2000/train.txt"),
        (Task::Chunk, "test", "conll2000/test.txt"),
        (Task::Pos, "train", "ud-en-ewt/train.conllu"),
        (Task::Pos, "dev", "ud-en-ewt/dev.conllu"),
        (Task::Pos, "test", "ud-en-ewt/test.conllu"),
    ];
    for (task, split, file) in files {
        let path = root.join(file);
        let sentences = read_task_file(&path, task)?;
        if split == "train-full" {
            splits.push(split_stats(&path, task, split, file, &sentences, &glove)?);
            let (train, dev) = carve_dev(&path, sentences, CHUNK_DEV_SIZE, CHUNK_DEV_SEED)?;
            splits.push(split_stats(&path, task, "train", file, &train, &glove)?);
            splits.push(split_stats(&path, task, "dev", file, &dev, &glove)?);
        } else {
            splits.push(split_stats(&path, task, split, file, &sentences, &glove)?);
        }
    }
    Ok(DataStats {
        glove_file: GLOVE_FILE,
        glove_words: glove.len(),
        glove_dim: glove.dim,
        splits,
    })
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for DataStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "embeddings: {} ({} vectors x {} dims)",
            self.glove_file,
            thousands(self.glove_words),
            self.glove_dim
        )?;
        writeln!(
            f,
            "{:<6} {:<10} {:>9} {:>9} {:>5} {:>5} {:>7} {:>8} {:>8}",
            "task", "split", "sentences", "tokens", "tags", "BIO", "chunks", "types%", "tokens%"
        )?;
        for s in &self.splits {
            let opt = |v: Option<usize>| v.map_or_else(|| "-".to_string(), thousands);
            writeln!(
                f,
                "{:<6} {:<10} {:>9} {:>9} {:>5} {:>5} {:>7} {:>8.2} {:>8.2}",
                s.task,
                s.split,
                thousands(s.sentences),
                thousands(s.tokens),
                s.tags,
                opt(s.tags_bio),
                opt(s.chunks),
                s.coverage.types.found_percent(),
                s.coverage.tokens.found_percent()
            )?;
        }
        writeln!(
            f,
            "chunk train/dev: {CHUNK_DEV_SIZE} dev sentences carved from conll2000/train.txt with seed {CHUNK_DEV_SEED}"
        )?;
        writeln!(
            f,
            "tags: distinct tags of the split in its file's scheme, O included; BIO: the same after conversion to BIO (training counts the tags of train, dev and test together)"
        )?;
        writeln!(
            f,
            "coverage: words found in the embeddings by exact, lowercase or digits->0 lookup"
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_separators() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1000), "1,000");
        assert_eq!(super::thousands(203621), "203,621");
        assert_eq!(super::thousands(1234567), "1,234,567");
    }
}
