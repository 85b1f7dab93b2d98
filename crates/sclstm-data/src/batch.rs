//! Encoding sentences to ids and cutting them into padded, time-major batches.
//!
//! # Layout
//! A [`Batch`] of `B` sentences padded to `T` tokens is time-major: position `(t, b)` is index `t·B + b`
//! of `word_ids`, `cap_ids`, `tag_ids` and `mask`. Characters add a third axis: char `w` of token `(t, b)`
//! is `char_ids[(t·B + b)·W + w]`, where `W` is the longest word of the batch. Padding is 0 everywhere
//! ([`crate::vocab::PAD`] for words and chars, tag 0 and cap 0 under `mask` 0).
//!
//! # Order
//! The order of one epoch is a pure function of `(seed, epoch, config)`: [`epoch_batches`] seeds a
//! `ChaCha8Rng` from the 32-byte key `seed (LE) ‖ epoch (LE) ‖ 0…`, shuffles the sentence indices with
//! Fisher–Yates (unbiased bounded draws by rejection), optionally sorts pools of `bucket_pool` batches by
//! length, cuts the list into batches and shuffles the batch order. Resuming training exactly therefore
//! only needs a [`BatchCursor`] (seed, epoch, position). Every sentence appears exactly once per epoch;
//! the last batch may be smaller; no sentence is cut or dropped.

use std::num::NonZeroUsize;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::caps::CapFeature;
use crate::conll::Sentence;
use crate::error::{DataError, DataErrorKind};
use crate::vocab::{CharVocab, TagVocab, WordVocab};

/// One sentence as ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedSentence {
    /// Word ids.
    pub words: Vec<u32>,
    /// Capitalization feature ids ([`CapFeature::id`]).
    pub caps: Vec<u32>,
    /// Character ids of each word.
    pub chars: Vec<Vec<u32>>,
    /// Tag ids.
    pub tags: Vec<u32>,
}

impl EncodedSentence {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// True when there is no token.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
}

/// Encodes sentences of one split; a tag missing from `tags` is an error naming `path`, the sentence's
/// first line, the sentence and the token.
pub fn encode_sentences(
    path: &Path,
    sentences: &[Sentence],
    words: &WordVocab,
    chars: &CharVocab,
    tags: &TagVocab,
) -> Result<Vec<EncodedSentence>, DataError> {
    sentences
        .iter()
        .enumerate()
        .map(|(si, s)| {
            let tag_ids = s
                .tags
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    tags.id(t).ok_or_else(|| {
                        DataError::new(
                            path,
                            s.line,
                            DataErrorKind::UnknownTag {
                                tag: t.clone(),
                                token: i,
                            },
                        )
                        .in_sentence(si)
                    })
                })
                .collect::<Result<Vec<u32>, DataError>>()?;
            Ok(EncodedSentence {
                words: s.words.iter().map(|w| words.id(w)).collect(),
                caps: s.words.iter().map(|w| CapFeature::of(w).id()).collect(),
                chars: s
                    .words
                    .iter()
                    .map(|w| w.chars().map(|c| chars.id(c)).collect())
                    .collect(),
                tags: tag_ids,
            })
        })
        .collect()
}

/// A padded, time-major batch (see the module docs for the layout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// `T`: tokens of the longest sentence.
    pub seq_len: usize,
    /// `B`: number of sentences.
    pub batch_size: usize,
    /// `W`: chars of the longest word (≥ 1).
    pub max_word_len: usize,
    /// `(T, B)` word ids.
    pub word_ids: Vec<u32>,
    /// `(T, B)` capitalization ids.
    pub cap_ids: Vec<u32>,
    /// `(T, B)` tag ids.
    pub tag_ids: Vec<u32>,
    /// `(T, B)` 1 for a real token, 0 for padding.
    pub mask: Vec<u8>,
    /// `(B)` sentence lengths.
    pub lens: Vec<usize>,
    /// `(T, B, W)` char ids.
    pub char_ids: Vec<u32>,
    /// `(T, B)` chars per token (0 for padding).
    pub char_lens: Vec<usize>,
    /// `(B)` index of each sentence in the split it came from.
    pub sentence_ids: Vec<usize>,
}

/// Builds the batch holding `data[ids[0]], data[ids[1]], …` in that order.
///
/// # Panics
/// If an id is out of range of `data` (a caller bug, not a data error).
pub fn make_batch(data: &[EncodedSentence], ids: &[usize]) -> Batch {
    let b_n = ids.len();
    let t_n = ids.iter().map(|&i| data[i].len()).max().unwrap_or(0);
    let w_n = ids
        .iter()
        .flat_map(|&i| data[i].chars.iter().map(Vec::len))
        .max()
        .unwrap_or(0)
        .max(1);
    let mut batch = Batch {
        seq_len: t_n,
        batch_size: b_n,
        max_word_len: w_n,
        word_ids: vec![0; t_n * b_n],
        cap_ids: vec![0; t_n * b_n],
        tag_ids: vec![0; t_n * b_n],
        mask: vec![0; t_n * b_n],
        lens: ids.iter().map(|&i| data[i].len()).collect(),
        char_ids: vec![0; t_n * b_n * w_n],
        char_lens: vec![0; t_n * b_n],
        sentence_ids: ids.to_vec(),
    };
    for (b, &i) in ids.iter().enumerate() {
        let s = &data[i];
        for t in 0..s.len() {
            let k = t * b_n + b;
            batch.word_ids[k] = s.words[t];
            batch.cap_ids[k] = s.caps[t];
            batch.tag_ids[k] = s.tags[t];
            batch.mask[k] = 1;
            batch.char_lens[k] = s.chars[t].len();
            batch.char_ids[k * w_n..k * w_n + s.chars[t].len()].copy_from_slice(&s.chars[t]);
        }
    }
    batch
}

/// How an epoch is cut into batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchConfig {
    /// Sentences per batch (the last batch may hold fewer).
    pub batch_size: NonZeroUsize,
    /// Shuffle sentences and batches (training) or keep file order (evaluation).
    pub shuffle: bool,
    /// Length bucketing: sort each pool of `bucket_pool` consecutive batches' worth of sentences by
    /// length before cutting, so batches hold similar lengths. 0 or 1 disables bucketing.
    pub bucket_pool: usize,
}

/// Where training stands in the batch stream; serializable so a run can resume exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchCursor {
    /// The run's seed.
    pub seed: u64,
    /// 0-based epoch.
    pub epoch: u64,
    /// Batches of this epoch already consumed.
    pub position: usize,
}

impl BatchCursor {
    /// A cursor at the start of epoch 0.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            epoch: 0,
            position: 0,
        }
    }

    /// The batches of the cursor's epoch that are not consumed yet (all of them when `position` is 0).
    pub fn remaining(&self, lens: &[usize], config: &BatchConfig) -> Vec<Vec<usize>> {
        let mut all = epoch_batches(lens, config, self.seed, self.epoch);
        all.split_off(self.position.min(all.len()))
    }

    /// Records one consumed batch; after the last of `batches_per_epoch` it moves to the next epoch.
    pub fn advance(&mut self, batches_per_epoch: usize) {
        self.position += 1;
        if self.position >= batches_per_epoch {
            self.epoch += 1;
            self.position = 0;
        }
    }
}

/// The seeded generator for `(seed, stream)`: key = `seed` (LE) ‖ `stream` (LE) ‖ zeros.
pub fn seeded_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&stream.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

/// Uniform integer in `0..n` (n > 0) by rejection, so every value is exactly equally likely.
fn below(rng: &mut ChaCha8Rng, n: usize) -> usize {
    let n = n as u64;
    let threshold = n.wrapping_neg() % n;
    loop {
        let x = rng.next_u64();
        if x >= threshold {
            return (x % n) as usize;
        }
    }
}

/// Fisher–Yates shuffle driven by `rng`.
pub fn shuffle<T>(items: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..items.len()).rev() {
        let j = below(rng, i + 1);
        items.swap(i, j);
    }
}

/// The batches of one epoch, as lists of sentence indices; `lens[i]` is the length of sentence `i`.
pub fn epoch_batches(
    lens: &[usize],
    config: &BatchConfig,
    seed: u64,
    epoch: u64,
) -> Vec<Vec<usize>> {
    let bs = config.batch_size.get();
    let mut rng = seeded_rng(seed, epoch);
    let mut order: Vec<usize> = (0..lens.len()).collect();
    if config.shuffle {
        shuffle(&mut order, &mut rng);
    }
    if config.bucket_pool > 1 {
        for pool in order.chunks_mut(bs * config.bucket_pool) {
            pool.sort_by_key(|&i| lens[i]);
        }
    }
    let mut batches: Vec<Vec<usize>> = order.chunks(bs).map(<[usize]>::to_vec).collect();
    if config.shuffle {
        shuffle(&mut batches, &mut rng);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(bs: usize, shuffle: bool, pool: usize) -> BatchConfig {
        BatchConfig {
            batch_size: NonZeroUsize::new(bs).unwrap(),
            shuffle,
            bucket_pool: pool,
        }
    }

    fn enc(words: &[u32], chars: &[&[u32]]) -> EncodedSentence {
        EncodedSentence {
            words: words.to_vec(),
            caps: words.iter().map(|w| w % 8).collect(),
            chars: chars.iter().map(|c| c.to_vec()).collect(),
            tags: words.iter().map(|w| w + 100).collect(),
        }
    }

    #[test]
    fn batch_is_time_major_and_padded() {
        let data = vec![
            enc(&[5, 6, 7], &[&[1], &[2, 3], &[4]]),
            enc(&[8], &[&[9, 9, 9]]),
        ];
        let b = make_batch(&data, &[1, 0]);
        assert_eq!((b.seq_len, b.batch_size, b.max_word_len), (3, 2, 3));
        assert_eq!(b.word_ids, vec![8, 5, 0, 6, 0, 7]);
        assert_eq!(b.tag_ids, vec![108, 105, 0, 106, 0, 107]);
        assert_eq!(b.mask, vec![1, 1, 0, 1, 0, 1]);
        assert_eq!(b.lens, vec![1, 3]);
        assert_eq!(b.sentence_ids, vec![1, 0]);
        assert_eq!(b.char_lens, vec![3, 1, 0, 2, 0, 1]);
        // token (t=1, b=1) is index 3; its chars start at 3·W = 9.
        assert_eq!(&b.char_ids[9..12], &[2, 3, 0]);
        assert_eq!(&b.char_ids[0..3], &[9, 9, 9]);
        assert_eq!(b.char_ids.len(), 3 * 2 * 3);
    }

    #[test]
    fn every_sentence_once_and_order_depends_on_seed_and_epoch() {
        let lens: Vec<usize> = (0..103).map(|i| 1 + (i * 37) % 50).collect();
        for c in [
            cfg(10, true, 0),
            cfg(10, true, 4),
            cfg(7, false, 0),
            cfg(7, false, 3),
        ] {
            let batches = epoch_batches(&lens, &c, 42, 3);
            let mut all: Vec<usize> = batches.concat();
            all.sort_unstable();
            assert_eq!(all, (0..103).collect::<Vec<_>>());
            assert!(
                batches
                    .iter()
                    .all(|b| !b.is_empty() && b.len() <= c.batch_size.get())
            );
        }
        let c = cfg(10, true, 0);
        assert_eq!(
            epoch_batches(&lens, &c, 42, 3),
            epoch_batches(&lens, &c, 42, 3)
        );
        assert_ne!(
            epoch_batches(&lens, &c, 42, 3),
            epoch_batches(&lens, &c, 42, 4)
        );
        assert_ne!(
            epoch_batches(&lens, &c, 42, 3),
            epoch_batches(&lens, &c, 43, 3)
        );
        assert_eq!(
            epoch_batches(&lens, &cfg(50, false, 0), 1, 0)[0],
            (0..50).collect::<Vec<_>>()
        );
    }

    #[test]
    fn cursor_resumes_exactly() {
        let lens: Vec<usize> = (0..25).map(|i| 1 + i % 6).collect();
        let c = cfg(4, true, 2);
        let per_epoch = epoch_batches(&lens, &c, 9, 0).len();
        assert_eq!(per_epoch, 7);
        let mut straight = Vec::new();
        let mut cursor = BatchCursor::new(9);
        for _ in 0..2 * per_epoch {
            straight.push(cursor.remaining(&lens, &c)[0].clone());
            cursor.advance(per_epoch);
        }
        assert_eq!(
            cursor,
            BatchCursor {
                seed: 9,
                epoch: 2,
                position: 0
            }
        );
        // Stop after 10 batches, serialize, restore, continue.
        let mut resumed = straight[..10].to_vec();
        let saved = serde_json::to_string(&BatchCursor {
            seed: 9,
            epoch: 1,
            position: 3,
        })
        .unwrap();
        let restored: BatchCursor = serde_json::from_str(&saved).unwrap();
        resumed.extend(restored.remaining(&lens, &c));
        assert_eq!(resumed, straight);
    }

    #[test]
    fn bucketing_groups_similar_lengths() {
        let lens: Vec<usize> = (0..400).map(|i| 1 + (i * 7919) % 97).collect();
        let spread = |c: &BatchConfig| -> usize {
            epoch_batches(&lens, c, 7, 0)
                .iter()
                .map(|b| {
                    let l: Vec<usize> = b.iter().map(|&i| lens[i]).collect();
                    l.iter().max().unwrap() - l.iter().min().unwrap()
                })
                .sum()
        };
        assert!(spread(&cfg(16, true, 25)) * 4 < spread(&cfg(16, true, 0)));
    }

    #[test]
    fn unknown_tag_names_sentence_and_token() {
        let s = Sentence {
            words: vec!["a".into(), "b".into()],
            tags: vec!["O".into(), "B-X".into()],
            line: 7,
        };
        let wv = WordVocab::build(["a"], [], None, false);
        let cv = CharVocab::build(["a"]);
        let tv = TagVocab::build(["O"]);
        let e = encode_sentences(Path::new("f"), &[s.clone(), s], &wv, &cv, &tv).unwrap_err();
        assert_eq!((e.line, e.sentence), (7, Some(0)));
        assert!(matches!(e.kind, DataErrorKind::UnknownTag { token: 1, .. }));
        let ok = encode_sentences(Path::new("f"), &[], &wv, &cv, &tv).unwrap();
        assert!(ok.is_empty());
    }

    #[test]
    fn encoding_uses_vocab_ids_caps_and_chars() {
        let s = Sentence {
            words: vec!["Ab".into(), "zz".into()],
            tags: vec!["B-X".into(), "O".into()],
            line: 1,
        };
        let wv = WordVocab::build(["Ab"], [], None, false);
        let cv = CharVocab::build(["Ab"]);
        let tv = TagVocab::build(["O", "B-X"]);
        let e = encode_sentences(Path::new("f"), &[s], &wv, &cv, &tv).unwrap();
        assert_eq!(e[0].words, vec![2, crate::vocab::UNK]);
        assert_eq!(
            e[0].caps,
            vec![CapFeature::InitialUpper.id(), CapFeature::AllLower.id()]
        );
        assert_eq!(
            e[0].chars,
            vec![vec![2, 3], vec![crate::vocab::UNK, crate::vocab::UNK]]
        );
        assert_eq!(e[0].tags, vec![1, 0]);
    }

    #[test]
    fn shuffle_is_portable() {
        // Pinned output: a change in the generator or the draw algorithm breaks resumed runs.
        let mut v: Vec<u32> = (0..10).collect();
        shuffle(&mut v, &mut seeded_rng(1, 0));
        assert_eq!(v, [5, 6, 9, 0, 8, 4, 3, 2, 1, 7]);
    }
}
