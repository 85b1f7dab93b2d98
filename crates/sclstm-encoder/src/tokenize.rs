//! WordPiece of already-tokenized words, and windows for sentences longer than the
//! encoder's positions.

use std::ops::Range;
use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::EncoderError;

/// A WordPiece tokenizer read from a Hugging Face `tokenizer.json`, applied to words
/// the corpus has already split (the tokenizer's own normalizer and pre-tokenizer still
/// run inside each word, so `U.S.` may become `u . s .`, all owned by that word).
#[derive(Debug, Clone)]
pub struct WordPiece {
    path: PathBuf,
    tokenizer: Tokenizer,
    /// Id of `[CLS]`, put before every window.
    pub cls: u32,
    /// Id of `[SEP]`, put after every window.
    pub sep: u32,
    /// Id of `[UNK]`, given to a word that yields no sub-word (e.g. a control character).
    pub unk: u32,
}

impl WordPiece {
    /// Reads `tokenizer.json`, switching off its truncation and padding (windows are
    /// made here, and sequences are packed, not padded).
    ///
    /// # Errors
    /// [`EncoderError::Missing`] if the file does not exist, [`EncoderError::Tokenizer`]
    /// if it cannot be loaded or lacks `[CLS]`, `[SEP]` or `[UNK]`.
    pub fn read(path: &Path) -> Result<Self, EncoderError> {
        if !path.exists() {
            return Err(EncoderError::Missing {
                path: path.to_path_buf(),
            });
        }
        let err = |message: String| EncoderError::Tokenizer {
            path: path.to_path_buf(),
            message,
        };
        let mut tokenizer = Tokenizer::from_file(path).map_err(|e| err(e.to_string()))?;
        tokenizer
            .with_truncation(None)
            .map_err(|e| err(e.to_string()))?
            .with_padding(None);
        let id = |token: &str| {
            tokenizer
                .token_to_id(token)
                .ok_or_else(|| err(format!("no token {token} in the vocabulary")))
        };
        Ok(WordPiece {
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            unk: id("[UNK]")?,
            tokenizer,
            path: path.to_path_buf(),
        })
    }

    /// The sub-word ids of each word of a sentence, in order; a word that yields none
    /// gets `[UNK]`, so every word has at least one.
    ///
    /// # Errors
    /// [`EncoderError::Tokenizer`] if the tokenizer fails on the sentence.
    pub fn word_pieces(&self, words: &[&str]) -> Result<Vec<Vec<u32>>, EncoderError> {
        let enc = self
            .tokenizer
            .encode(words, false)
            .map_err(|e| EncoderError::Tokenizer {
                path: self.path.clone(),
                message: format!("cannot tokenize {words:?}: {e}"),
            })?;
        let mut pieces = vec![Vec::new(); words.len()];
        for (&id, word) in enc.get_ids().iter().zip(enc.get_word_ids()) {
            if let Some(p) = word.and_then(|w| pieces.get_mut(w as usize)) {
                p.push(id);
            }
        }
        for p in &mut pieces {
            if p.is_empty() {
                p.push(self.unk);
            }
        }
        Ok(pieces)
    }
}

/// One window of a sentence: the words it encodes and the words whose vectors are taken
/// from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Words encoded together (whole words only).
    pub words: Range<usize>,
    /// Words whose features come from this window (a sub-range of `words`); the
    /// `keep` ranges of a sentence's windows partition its words.
    pub keep: Range<usize>,
}

/// Splits a sentence whose words have `counts[i]` sub-words into windows of at most
/// `capacity` sub-words, never cutting a word. A sentence that fits is one window.
/// Otherwise each next window starts where the remaining words of the current one fill
/// at most half a window, so consecutive windows overlap by about half their length,
/// and each word of an overlap is kept from the window in which it lies farther from an
/// edge (the first half of the overlap from the earlier window, the rest from the later).
/// A word of more than `capacity` sub-words (a long run of punctuation, say) is a window
/// by itself, of which the caller encodes the first `capacity` sub-words.
pub fn windows(counts: &[usize], capacity: usize) -> Vec<Window> {
    let n = counts.len();
    let mut out = Vec::new();
    let (mut start, mut keep_start) = (0, 0);
    while start < n {
        let mut end = start;
        let mut used = 0;
        while end < n && used + counts[end] <= capacity {
            used += counts[end];
            end += 1;
        }
        if end == start {
            end += 1;
        }
        if end == n {
            out.push(Window {
                words: start..end,
                keep: keep_start..n,
            });
            break;
        }
        let mut next = end;
        let mut tail = 0;
        while next > start + 1 && tail + counts[next - 1] <= capacity / 2 {
            tail += counts[next - 1];
            next -= 1;
        }
        let mid = (next + end).div_ceil(2).max(keep_start);
        out.push(Window {
            words: start..end,
            keep: keep_start..mid,
        });
        (start, keep_start) = (next, mid);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_partition(counts: &[usize], capacity: usize) -> Vec<Window> {
        let ws = windows(counts, capacity);
        let mut next = 0;
        for w in &ws {
            let used: usize = counts[w.words.clone()]
                .iter()
                .map(|&c| c.min(capacity))
                .sum();
            assert!(used <= capacity, "{w:?} holds {used} > {capacity}");
            assert!(
                w.words.start <= w.keep.start && w.keep.end <= w.words.end,
                "{w:?}"
            );
            assert_eq!(w.keep.start, next, "{ws:?}");
            next = w.keep.end;
        }
        assert_eq!(next, counts.len(), "{ws:?}");
        ws
    }

    #[test]
    fn a_short_sentence_is_one_window() {
        let ws = check_partition(&[1, 2, 1], 510);
        assert_eq!(
            ws,
            vec![Window {
                words: 0..3,
                keep: 0..3
            }]
        );
    }

    #[test]
    fn long_sentences_overlap_and_every_word_is_kept_once() {
        // 10 words of 1 sub-word in windows of 4: [0,4) [2,6) [4,8) [6,10).
        let ws = check_partition(&[1; 10], 4);
        assert_eq!(ws[0].words, 0..4);
        assert_eq!(ws[1].words, 2..6);
        assert_eq!(ws[0].keep, 0..3);
        assert_eq!(ws.last().map(|w| w.words.end), Some(10));
        for counts in [
            vec![3, 1, 2, 5, 1, 1, 4, 2, 2, 1, 3],
            vec![5; 7],
            vec![1, 5, 1, 5],
        ] {
            for capacity in 5..12 {
                check_partition(&counts, capacity);
            }
        }
    }

    #[test]
    fn a_word_longer_than_a_window_is_a_window_alone() {
        let ws = check_partition(&[1, 9, 1], 4);
        let words: Vec<_> = ws.iter().map(|w| w.words.clone()).collect();
        assert_eq!(words, vec![0..1, 1..2, 2..3]);
        check_partition(&[9], 4);
    }
}
