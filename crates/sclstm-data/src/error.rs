//! Typed errors for everything that comes from a data file.
//!
//! Every error names the file and the 1-based line it concerns (line 0 means "the whole file", e.g. an
//! empty file or an I/O failure), plus the 0-based sentence index where one is known.

use std::fmt;
use std::path::{Path, PathBuf};

/// An error in a user-supplied data file: which file, which line, which sentence, and what is wrong.
///
/// Displays as `path:line (sentence n): message`, with `n` 1-based and the parts that are unknown left out.
#[derive(Debug, thiserror::Error)]
pub struct DataError {
    /// The file the error is about.
    pub path: PathBuf,
    /// 1-based line number; 0 when the error concerns the whole file.
    pub line: usize,
    /// 0-based index of the sentence the line belongs to, when known.
    pub sentence: Option<usize>,
    /// What is wrong.
    pub kind: DataErrorKind,
}

impl DataError {
    /// Creates an error about `line` of `path` (0 = the whole file).
    pub fn new(path: &Path, line: usize, kind: DataErrorKind) -> Self {
        Self {
            path: path.to_path_buf(),
            line,
            sentence: None,
            kind,
        }
    }

    /// Attaches the 0-based sentence index.
    pub fn in_sentence(mut self, sentence: usize) -> Self {
        self.sentence = Some(sentence);
        self
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if let Some(s) = self.sentence {
            write!(f, " (sentence {})", s + 1)?;
        }
        write!(f, ": {}", self.kind)
    }
}

fn join_paths(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    shown.join(", ")
}

/// What is wrong with a data file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataErrorKind {
    /// The file could not be opened, read or decompressed.
    #[error("cannot read file: {0}")]
    Io(#[source] std::io::Error),
    /// A relative data path found nowhere it was looked for ([`crate::shipped::locate`]).
    #[error("not found; looked in {}", join_paths(looked))]
    NotFound {
        /// Every place looked at, in order.
        looked: Vec<PathBuf>,
    },
    /// The file holds bytes that are not valid UTF-8.
    #[error("invalid UTF-8 at byte {byte} of the line")]
    NotUtf8 {
        /// 0-based byte offset of the first invalid byte within its line.
        byte: usize,
    },
    /// The file holds no data (no sentence, or no vector).
    #[error("file is empty (no data lines)")]
    EmptyFile,
    /// A line has a different number of columns than the file's first data line.
    #[error("expected {expected} columns, found {found}")]
    ColumnCount {
        /// Columns of the file's first data line (or the count the format requires).
        expected: usize,
        /// Columns of this line.
        found: usize,
    },
    /// A line has fewer columns than the word and tag column indices need.
    #[error("line has {found} columns but column {needed} (1-based) is needed")]
    MissingColumn {
        /// 1-based index of the column that is missing.
        needed: usize,
        /// Columns of this line.
        found: usize,
    },
    /// Two separators in a row, or a separator at the start or end of the line.
    #[error("column {column} (1-based) is empty (doubled, leading or trailing separator)")]
    EmptyField {
        /// 1-based column index of the empty field.
        column: usize,
    },
    /// The tag column is empty or the CoNLL-U placeholder `_`.
    #[error("empty tag in column {column} (1-based)")]
    EmptyTag {
        /// 1-based column index of the tag.
        column: usize,
    },
    /// A space-separated file has a tab on this line (or a tab-separated file has no tab).
    #[error("mixed separators: the file is {file_uses}-separated but this line is not")]
    MixedSeparators {
        /// `"space"` or `"tab"`: the separator chosen from the first data line.
        file_uses: &'static str,
    },
    /// A `-DOCSTART-` line inside a sentence (not preceded by a blank line).
    #[error("-DOCSTART- line inside a sentence (a blank line must come before it)")]
    DocstartInSentence,
    /// A tag that fits the expected tag scheme in neither form nor sequence.
    #[error("tag {tag:?} is not valid {scheme}: {reason}")]
    InvalidTag {
        /// The offending tag.
        tag: String,
        /// The scheme the file is declared to use.
        scheme: crate::scheme::TagScheme,
        /// Why it does not fit.
        reason: String,
    },
    /// A CoNLL-U line without exactly 10 tab-separated fields.
    #[error("CoNLL-U line has {found} tab-separated fields, expected 10")]
    ConlluFieldCount {
        /// Fields found.
        found: usize,
    },
    /// A CoNLL-U ID that is neither an integer, a range `a-b`, nor an empty node `a.b`, or is out of order.
    #[error("bad CoNLL-U ID {id:?}: {reason}")]
    ConlluBadId {
        /// The ID field.
        id: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A word-vector file starts with a word2vec-style `count dim` header line.
    #[error(
        "looks like a word2vec header line ({words} words x {dim} dims); GloVe text format has no header"
    )]
    GloveHeader {
        /// First number on the header line.
        words: usize,
        /// Second number on the header line.
        dim: usize,
    },
    /// A vector row whose length differs from the first row's.
    #[error("vector has {found} values but earlier rows have {expected}")]
    RaggedVector {
        /// Dimension of the first row.
        expected: usize,
        /// Dimension of this row.
        found: usize,
    },
    /// The vectors do not have the dimension the caller asked for.
    #[error("vectors have dimension {found} but {expected} was requested")]
    WrongDimension {
        /// Requested dimension.
        expected: usize,
        /// Dimension found in the file.
        found: usize,
    },
    /// A vector component that is not a finite number.
    #[error("vector component {value:?} is not a finite number")]
    BadNumber {
        /// The text that failed to parse.
        value: String,
    },
    /// A vector line with a word but no values.
    #[error("vector line has a word but no values")]
    NoVector,
    /// A `SHA256SUMS` line that is not `<64 hex digits>  <path>`.
    #[error("malformed checksum line")]
    BadChecksumLine,
    /// A file's SHA-256 differs from the one recorded in `SHA256SUMS`.
    #[error("checksum mismatch for {file}: expected {expected}, found {found}")]
    ChecksumMismatch {
        /// The file whose digest differs.
        file: String,
        /// Digest listed in SHA256SUMS.
        expected: String,
        /// Digest of the file on disk.
        found: String,
    },
    /// A dataset file that `SHA256SUMS` does not list.
    #[error("{file} is not listed in SHA256SUMS")]
    UnlistedFile {
        /// Path relative to the datasets root.
        file: String,
    },
    /// A tag that the task's tag vocabulary does not hold.
    #[error("tag {tag:?} of token {token} (0-based) is not in the task's tag set")]
    UnknownTag {
        /// The tag.
        tag: String,
        /// 0-based token index within the sentence.
        token: usize,
    },
    /// Requested more dev sentences than the training file has.
    #[error("cannot carve {wanted} dev sentences out of {available}")]
    DevCarveTooLarge {
        /// Dev sentences wanted.
        wanted: usize,
        /// Training sentences available.
        available: usize,
    },
}
