//! Vocabularies (words, characters, tags) and the GloVe lookup with its coverage report.
//!
//! Word and character vocabularies reserve id [`PAD`] = 0 for padding and [`UNK`] = 1 for unknown
//! entries. Tag vocabularies reserve nothing: ids `0..len()` are exactly the model's output classes, and
//! padded positions carry tag id 0 under mask 0.
//!
//! **GloVe lookup order** for a word `w`: (1) `w` exactly, (2) `lowercase(w)`, (3) `lowercase(w)` with
//! every ASCII digit replaced by `0`. The first form present in the embedding file wins.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::glove::Embeddings;

/// Padding id in word and character vocabularies.
pub const PAD: u32 = 0;
/// Unknown-entry id in word and character vocabularies.
pub const UNK: u32 = 1;

/// A string ↔ id map with `<pad>` = 0 and `<unk>` = 1 reserved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vocab {
    tokens: Vec<String>,
    index: HashMap<String, u32>,
}

impl Default for Vocab {
    fn default() -> Self {
        Self::new()
    }
}

impl Vocab {
    /// An empty vocabulary holding only `<pad>` and `<unk>`.
    pub fn new() -> Self {
        let mut v = Self {
            tokens: Vec::new(),
            index: HashMap::new(),
        };
        v.insert("<pad>");
        v.insert("<unk>");
        v
    }

    /// Adds `token` if absent and returns its id.
    pub fn insert(&mut self, token: &str) -> u32 {
        if let Some(&id) = self.index.get(token) {
            return id;
        }
        let id = u32::try_from(self.tokens.len()).expect("internal: vocabulary exceeds u32 ids");
        self.tokens.push(token.to_string());
        self.index.insert(token.to_string(), id);
        id
    }

    /// The id of `token`, if present.
    pub fn get(&self, token: &str) -> Option<u32> {
        self.index.get(token).copied()
    }

    /// The id of `token`, or [`UNK`].
    pub fn id(&self, token: &str) -> u32 {
        self.get(token).unwrap_or(UNK)
    }

    /// The token with id `id`.
    pub fn token(&self, id: u32) -> &str {
        &self.tokens[id as usize]
    }

    /// Number of ids, reserved ones included.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Always false: the reserved entries are always present.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Which rule of the lookup order found a word's vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LookupRule {
    /// The word itself.
    Exact,
    /// Its lowercase form.
    Lowercase,
    /// Its lowercase form with ASCII digits replaced by `0`.
    DigitsToZero,
}

/// Finds `word` in `glove` by the documented lookup order; returns the row and the rule that matched.
pub fn glove_lookup(glove: &Embeddings, word: &str) -> Option<(usize, LookupRule)> {
    if let Some(r) = glove.get(word) {
        return Some((r, LookupRule::Exact));
    }
    let lower = word.to_lowercase();
    if let Some(r) = glove.get(&lower) {
        return Some((r, LookupRule::Lowercase));
    }
    let zeroed: String = lower
        .chars()
        .map(|c| if c.is_ascii_digit() { '0' } else { c })
        .collect();
    glove.get(&zeroed).map(|r| (r, LookupRule::DigitsToZero))
}

/// How many items each lookup rule matched, and how many none did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RuleCounts {
    /// Found as written.
    pub exact: usize,
    /// Found after lowercasing.
    pub lowercase: usize,
    /// Found after lowercasing and replacing digits by 0.
    pub digits_to_zero: usize,
    /// Not found.
    pub missing: usize,
}

impl RuleCounts {
    /// All items counted.
    pub fn total(&self) -> usize {
        self.exact + self.lowercase + self.digits_to_zero + self.missing
    }

    /// Items found by any rule.
    pub fn found(&self) -> usize {
        self.total() - self.missing
    }

    /// Percentage found (0 when nothing was counted).
    pub fn found_percent(&self) -> f64 {
        if self.total() == 0 {
            0.0
        } else {
            100.0 * self.found() as f64 / self.total() as f64
        }
    }

    fn add(&mut self, rule: Option<LookupRule>, n: usize) {
        match rule {
            Some(LookupRule::Exact) => self.exact += n,
            Some(LookupRule::Lowercase) => self.lowercase += n,
            Some(LookupRule::DigitsToZero) => self.digits_to_zero += n,
            None => self.missing += n,
        }
    }
}

/// Embedding coverage of a word list, by types (distinct words) and by tokens, per lookup rule.
/// Its `Display` is the one-line report printed when embeddings are loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Coverage {
    /// Counts over distinct words.
    pub types: RuleCounts,
    /// Counts over running words.
    pub tokens: RuleCounts,
}

impl Coverage {
    /// Measures how `words` (running text, repeats included) are covered by `glove`.
    pub fn measure<'a>(words: impl IntoIterator<Item = &'a str>, glove: &Embeddings) -> Self {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for w in words {
            *counts.entry(w).or_default() += 1;
        }
        let mut c = Self::default();
        for (w, n) in counts {
            let rule = glove_lookup(glove, w).map(|(_, r)| r);
            c.types.add(rule, 1);
            c.tokens.add(rule, n);
        }
        c
    }
}

impl fmt::Display for RuleCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} found ({:.2}%): exact {}, lowercase {}, digits->0 {}; missing {}",
            self.found(),
            self.found_percent(),
            self.exact,
            self.lowercase,
            self.digits_to_zero,
            self.missing
        )
    }
}

impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "embedding coverage: {} types, {}; {} tokens, {}",
            self.types.total(),
            self.types,
            self.tokens.total(),
            self.tokens
        )
    }
}

/// The word vocabulary plus, per word id, the GloVe row that initializes its embedding.
#[derive(Clone, Debug)]
pub struct WordVocab {
    /// The ids (`<pad>` = 0, `<unk>` = 1).
    pub vocab: Vocab,
    /// When true, words are lowercased before lookup in `vocab` (case is left to the capitalization feature).
    pub lowercase: bool,
    /// For each id, the GloVe row found by the lookup order, if any (always `None` for the reserved ids).
    pub glove_rows: Vec<Option<usize>>,
}

impl WordVocab {
    /// Builds the vocabulary: every training word, plus every `extra` word (e.g. dev and test words) that
    /// has a GloVe vector, so that words never seen in training still get their pretrained embedding.
    /// Words are inserted in first-seen order, training words first.
    pub fn build<'a>(
        train: impl IntoIterator<Item = &'a str>,
        extra: impl IntoIterator<Item = &'a str>,
        glove: Option<&Embeddings>,
        lowercase: bool,
    ) -> Self {
        let mut wv = Self {
            vocab: Vocab::new(),
            lowercase,
            glove_rows: vec![None, None],
        };
        for w in train {
            wv.add(w, glove);
        }
        if let Some(g) = glove {
            for w in extra {
                if wv.vocab.get(&wv.key(w)).is_none() && glove_lookup(g, w).is_some() {
                    wv.add(w, glove);
                }
            }
        }
        wv
    }

    fn key(&self, word: &str) -> String {
        if self.lowercase {
            word.to_lowercase()
        } else {
            word.to_string()
        }
    }

    fn add(&mut self, word: &str, glove: Option<&Embeddings>) {
        let key = self.key(word);
        if self.vocab.get(&key).is_none() {
            self.vocab.insert(&key);
            self.glove_rows
                .push(glove.and_then(|g| glove_lookup(g, &key)).map(|(r, _)| r));
        }
    }

    /// The id of `word` (lowercased first when `lowercase`), or [`UNK`].
    pub fn id(&self, word: &str) -> u32 {
        self.vocab.id(&self.key(word))
    }

    /// Number of ids, reserved ones included.
    pub fn len(&self) -> usize {
        self.vocab.len()
    }

    /// Always false.
    pub fn is_empty(&self) -> bool {
        self.vocab.is_empty()
    }

    /// Row-major `len() × glove.dim` initial embedding matrix: GloVe rows where found, zeros elsewhere,
    /// plus a flag per id telling whether it was found (callers initialize the others randomly).
    pub fn pretrained(&self, glove: &Embeddings) -> (Vec<f32>, Vec<bool>) {
        let mut m = vec![0.0; self.len() * glove.dim];
        let mut found = vec![false; self.len()];
        for (id, row) in self.glove_rows.iter().enumerate() {
            if let Some(r) = row {
                m[id * glove.dim..(id + 1) * glove.dim].copy_from_slice(glove.row(*r));
                found[id] = true;
            }
        }
        (m, found)
    }
}

/// Character vocabulary (`<pad>` = 0, `<unk>` = 1), built from training words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CharVocab {
    /// The ids; each entry is a one-char string.
    pub vocab: Vocab,
}

impl CharVocab {
    /// Collects every char of the given words, in first-seen order.
    pub fn build<'a>(words: impl IntoIterator<Item = &'a str>) -> Self {
        let mut vocab = Vocab::new();
        let mut seen = HashSet::new();
        let mut buf = [0u8; 4];
        for w in words {
            for c in w.chars() {
                if seen.insert(c) {
                    vocab.insert(c.encode_utf8(&mut buf));
                }
            }
        }
        Self { vocab }
    }

    /// The id of `c`, or [`UNK`].
    pub fn id(&self, c: char) -> u32 {
        let mut buf = [0u8; 4];
        self.vocab.id(c.encode_utf8(&mut buf))
    }

    /// Number of ids, reserved ones included.
    pub fn len(&self) -> usize {
        self.vocab.len()
    }

    /// Always false.
    pub fn is_empty(&self) -> bool {
        self.vocab.is_empty()
    }
}

/// One task's tag set, ids `0..len()` with no reserved entries. `O` (when present) is id 0, the other
/// tags follow in byte order, so ids do not depend on file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagVocab {
    tags: Vec<String>,
    index: HashMap<String, u32>,
}

impl TagVocab {
    /// Collects the distinct tags.
    pub fn build<'a>(tags: impl IntoIterator<Item = &'a str>) -> Self {
        let set: HashSet<&str> = tags.into_iter().collect();
        let mut sorted: Vec<&str> = set.into_iter().collect();
        sorted.sort_unstable_by_key(|t| (*t != "O", *t));
        let tags: Vec<String> = sorted.into_iter().map(str::to_string).collect();
        let index = tags
            .iter()
            .enumerate()
            .map(|(i, t)| {
                (
                    t.clone(),
                    u32::try_from(i).expect("internal: tag set exceeds u32 ids"),
                )
            })
            .collect();
        Self { tags, index }
    }

    /// The id of `tag`, if it is in the set.
    pub fn id(&self, tag: &str) -> Option<u32> {
        self.index.get(tag).copied()
    }

    /// The tag with id `id`.
    pub fn tag(&self, id: u32) -> &str {
        &self.tags[id as usize]
    }

    /// All tags in id order.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    /// Number of tags.
    pub fn len(&self) -> usize {
        self.tags.len()
    }

    /// True when there is no tag.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn glove() -> Embeddings {
        Embeddings::parse(
            "the 1 0\nparis 0 1\n0.0 2 2\n00 3 3\n",
            Path::new("g"),
            None,
        )
        .unwrap()
    }

    #[test]
    fn lookup_order_is_exact_lower_digits() {
        let g = glove();
        assert_eq!(glove_lookup(&g, "the"), Some((0, LookupRule::Exact)));
        assert_eq!(glove_lookup(&g, "Paris"), Some((1, LookupRule::Lowercase)));
        assert_eq!(glove_lookup(&g, "3.5"), Some((2, LookupRule::DigitsToZero)));
        assert_eq!(glove_lookup(&g, "00"), Some((3, LookupRule::Exact)));
        assert_eq!(glove_lookup(&g, "London"), None);
    }

    #[test]
    fn coverage_counts_types_and_tokens_per_rule() {
        let g = glove();
        let c = Coverage::measure(["the", "the", "Paris", "12", "1.5", "x", "x", "x"], &g);
        assert_eq!(
            c.types,
            RuleCounts {
                exact: 1,
                lowercase: 1,
                digits_to_zero: 2,
                missing: 1
            }
        );
        assert_eq!(
            c.tokens,
            RuleCounts {
                exact: 2,
                lowercase: 1,
                digits_to_zero: 2,
                missing: 3
            }
        );
        let text = c.to_string();
        assert!(
            text.starts_with("embedding coverage: 5 types, 4 found (80.00%)"),
            "{text}"
        );
    }

    #[test]
    fn reserved_ids_and_unknowns() {
        let g = glove();
        let wv = WordVocab::build(["The", "cat"], ["Paris", "London"], Some(&g), false);
        assert_eq!(wv.vocab.token(PAD), "<pad>");
        assert_eq!(wv.vocab.token(UNK), "<unk>");
        assert_eq!(wv.id("The"), 2);
        assert_eq!(wv.id("cat"), 3);
        assert_eq!(
            wv.id("Paris"),
            4,
            "dev word with a vector joins the vocabulary"
        );
        assert_eq!(
            wv.id("London"),
            UNK,
            "dev word without a vector stays unknown"
        );
        assert_eq!(wv.glove_rows, vec![None, None, Some(0), None, Some(1)]);
        let (m, found) = wv.pretrained(&g);
        assert_eq!(&m[4..6], &[1.0, 0.0]);
        assert_eq!(found, vec![false, false, true, false, true]);
        let lower = WordVocab::build(["The", "the"], [], Some(&g), true);
        assert_eq!(lower.len(), 3);
        assert_eq!(lower.id("THE"), 2);
    }

    #[test]
    fn char_and_tag_vocabs() {
        let cv = CharVocab::build(["ab", "ba", "é"]);
        assert_eq!(
            (cv.id('a'), cv.id('b'), cv.id('é'), cv.id('z')),
            (2, 3, 4, UNK)
        );
        let tv = TagVocab::build(["I-PER", "O", "B-LOC", "O"]);
        assert_eq!(tv.tags(), ["O", "B-LOC", "I-PER"]);
        assert_eq!(tv.id("I-PER"), Some(2));
        assert_eq!(tv.id("X"), None);
    }
}
