//! Loader for word vectors in GloVe text format: `word v1 v2 … vd` per line, no header, any dimension,
//! plain or gzipped.
//!
//! Fields are separated by runs of ASCII whitespace, so words containing spaces are not supported. Blank
//! lines are ignored, and so is a UTF-8 byte-order mark at the start of the file. When a word occurs twice the first vector is kept (GloVe 840B has such duplicates).
//! A first line of exactly two integers is a word2vec header and is rejected, as are rows whose length
//! differs from the first row's and components that are not finite numbers.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{DataError, DataErrorKind};
use crate::text::{lines, read_text};

/// Word vectors: `words[i]` owns row `i` of the row-major `len() × dim` matrix `data`.
#[derive(Clone, Debug)]
pub struct Embeddings {
    /// The words, in file order (first occurrence of each).
    pub words: Vec<String>,
    /// Vector dimension.
    pub dim: usize,
    /// Row-major `words.len() × dim` matrix.
    pub data: Vec<f32>,
    index: HashMap<String, usize>,
}

impl Embeddings {
    /// Loads a GloVe-format file (`.gz` or plain). `expected_dim`, when given, must match the file.
    pub fn load(path: &Path, expected_dim: Option<usize>) -> Result<Self, DataError> {
        Self::parse(&read_text(path)?, path, expected_dim)
    }

    /// Parses GloVe-format text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path, expected_dim: Option<usize>) -> Result<Self, DataError> {
        let mut words = Vec::new();
        let mut data = Vec::new();
        let mut index = HashMap::new();
        let mut dim = None;
        for (no, line) in lines(text) {
            let err = |kind| DataError::new(path, no, kind);
            let mut fields = line.split_ascii_whitespace();
            let Some(word) = fields.next() else { continue };
            let values: Vec<&str> = fields.collect();
            if dim.is_none()
                && values.len() == 1
                && let (Ok(w), Ok(d)) = (word.parse::<usize>(), values[0].parse::<usize>())
            {
                return Err(err(DataErrorKind::GloveHeader { words: w, dim: d }));
            }
            if values.is_empty() {
                return Err(err(DataErrorKind::NoVector));
            }
            let d = *dim.get_or_insert(values.len());
            if let Some(want) = expected_dim.filter(|&w| w != d) {
                return Err(err(DataErrorKind::WrongDimension {
                    expected: want,
                    found: d,
                }));
            }
            if values.len() != d {
                return Err(err(DataErrorKind::RaggedVector {
                    expected: d,
                    found: values.len(),
                }));
            }
            if index.contains_key(word) {
                continue;
            }
            for v in values {
                match v.parse::<f32>() {
                    Ok(x) if x.is_finite() => data.push(x),
                    _ => {
                        return Err(err(DataErrorKind::BadNumber {
                            value: v.to_string(),
                        }));
                    }
                }
            }
            index.insert(word.to_string(), words.len());
            words.push(word.to_string());
        }
        let Some(dim) = dim else {
            return Err(DataError::new(path, 0, DataErrorKind::EmptyFile));
        };
        Ok(Self {
            words,
            dim,
            data,
            index,
        })
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// True when there is no vector (never the case for a loaded file).
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Row index of `word` (exact match).
    pub fn get(&self, word: &str) -> Option<usize> {
        self.index.get(word).copied()
    }

    /// The vector in row `row`.
    pub fn row(&self, row: usize) -> &[f32] {
        &self.data[row * self.dim..(row + 1) * self.dim]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rows_and_keeps_first_duplicate() {
        let e = Embeddings::parse("the 1 2 3\r\nof 4 5 6\nthe 7 8 9\n\n", Path::new("v"), None)
            .unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e.dim, 3);
        assert_eq!(e.row(e.get("of").unwrap()), &[4.0, 5.0, 6.0]);
        assert_eq!(e.row(e.get("the").unwrap()), &[1.0, 2.0, 3.0]);
    }

    #[test]
    fn byte_order_mark_does_not_hide_the_first_vector() {
        let e = Embeddings::parse("\u{feff}the 1 2\nof 3 4\n", Path::new("v"), None).unwrap();
        assert_eq!(e.words, ["the", "of"]);
        assert_eq!(e.row(e.get("the").unwrap()), &[1.0, 2.0]);
        let header = Embeddings::parse("\u{feff}2 3\n", Path::new("v"), None).unwrap_err();
        assert!(matches!(header.kind, DataErrorKind::GloveHeader { .. }));
    }

    #[test]
    fn detects_header_and_ragged_rows() {
        let e = Embeddings::parse("2 3\nthe 1 2 3\n", Path::new("v"), None).unwrap_err();
        assert!(matches!(
            e.kind,
            DataErrorKind::GloveHeader { words: 2, dim: 3 }
        ));
        let e = Embeddings::parse("a 1 2\nb 1\n", Path::new("v"), None).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(matches!(
            e.kind,
            DataErrorKind::RaggedVector {
                expected: 2,
                found: 1
            }
        ));
        let e = Embeddings::parse("a 1 2\n", Path::new("v"), Some(50)).unwrap_err();
        assert!(matches!(
            e.kind,
            DataErrorKind::WrongDimension {
                expected: 50,
                found: 2
            }
        ));
    }

    #[test]
    fn one_dimensional_vectors_with_numeric_words_are_not_headers_after_the_first_line() {
        let e = Embeddings::parse("a 0.5\n7 1\n", Path::new("v"), None).unwrap();
        assert_eq!(e.row(e.get("7").unwrap()), &[1.0]);
    }
}
