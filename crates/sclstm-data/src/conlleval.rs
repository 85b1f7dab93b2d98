//! Chunk scoring identical to the CoNLL `conlleval` script (version 2004-01-26), and token accuracy.
//!
//! The rules follow the script exactly:
//! - A tag is split at its first `-` into prefix and type (`B-NP` → `B`, `NP`; `O` → `O`, no type).
//! - A chunk **starts** between the previous and the current token when (prev, cur) prefixes are
//!   `B B`, `I B`, `O B`, `O I`, `E E`, `E I`, `O E`, or when the current prefix is not `O`/`.` and the type
//!   changes; `[` and `]` always start one. A chunk **ends** for `B B`, `B O`, `I B`, `I O`, `E E`, `E I`,
//!   `E O`, or when the previous prefix is not `O`/`.` and the type changes; `[`/`]` always end one.
//!   So `I-X` after `O` starts a chunk and IOB1 and IOB2 score the same. BIOES must first go through
//!   [`crate::scheme::bioes_to_conlleval`] ([`score_chunks`] does that).
//! - A sentence boundary acts as a token tagged `O`/`O` that is not counted.
//! - A predicted chunk is correct when it starts and ends at the same tokens as a gold chunk of the same type.
//! - P = 100·correct/found, R = 100·correct/gold, F1 = 2PR/(P+R) (each 0 when undefined), printed with `%6.2f`.
//!
//! - Type names in the report are right-aligned to 17 **bytes** (Perl's `%17s` on byte strings), so a
//!   type with non-ASCII characters such as `LOCÉ` gets one space less per extra byte than a
//!   character count would give.
//!
//! The one deliberate difference: [`score_text`] strips a trailing `\r` from every line, where the
//! Perl script would keep it as part of the predicted tag and mis-score CRLF files.
//!
//! In the script's input a line whose first field is `-X-` ([`BOUNDARY`]) is a document boundary, so
//! writers of prediction files pass every word through [`escape_word`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::scheme::{TagScheme, bioes_to_conlleval};

/// Scoring input that cannot be scored.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScoreError {
    /// Gold and predicted tag sequences of a sentence differ in length.
    #[error("sentence {sentence}: {gold} gold tags but {pred} predicted tags")]
    LengthMismatch {
        /// 0-based sentence index.
        sentence: usize,
        /// Gold length.
        gold: usize,
        /// Predicted length.
        pred: usize,
    },
    /// Gold and predictions hold different numbers of sentences.
    #[error("{gold} gold sentences but {pred} predicted sentences")]
    SentenceCount {
        /// Gold sentences.
        gold: usize,
        /// Predicted sentences.
        pred: usize,
    },
    /// A line of conlleval input has a different number of fields than the first one.
    #[error("line {line}: unexpected number of features: {found} ({expected})")]
    FieldCount {
        /// 1-based line.
        line: usize,
        /// Fields of the first line.
        expected: usize,
        /// Fields of this line.
        found: usize,
    },
    /// A line of conlleval input has fewer than 2 fields.
    #[error("line {line}: fewer than 2 fields")]
    TooFewFields {
        /// 1-based line.
        line: usize,
    },
}

/// Counts for one chunk type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TypeCounts {
    /// Chunks in the gold data.
    pub gold: usize,
    /// Chunks predicted.
    pub found: usize,
    /// Predicted chunks that match a gold chunk exactly.
    pub correct: usize,
}

impl TypeCounts {
    /// Precision, recall and F1 in percent, computed as conlleval does.
    pub fn prf(&self) -> Prf {
        let p = if self.found > 0 {
            100.0 * self.correct as f64 / self.found as f64
        } else {
            0.0
        };
        let r = if self.gold > 0 {
            100.0 * self.correct as f64 / self.gold as f64
        } else {
            0.0
        };
        let f = if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        };
        Prf {
            precision: p,
            recall: r,
            f1: f,
        }
    }
}

/// Precision, recall and F1, in percent.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Prf {
    /// Precision (%).
    pub precision: f64,
    /// Recall (%).
    pub recall: f64,
    /// F1 (%).
    pub f1: f64,
}

#[derive(Clone, Debug)]
struct Prev {
    correct: String,
    correct_type: String,
    guessed: String,
    guessed_type: String,
}

/// Incremental conlleval: feed sentences (or raw lines), then read [`ConllEval::overall`] or
/// [`ConllEval::report`].
#[derive(Clone, Debug)]
pub struct ConllEval {
    // Counts so far, without a correct chunk still open at the last token; read them through
    // `counts` and `type_counts`, which close it as the script does at end of input.
    total: TypeCounts,
    per_type: BTreeMap<String, TypeCounts>,
    /// Tokens scored (boundaries excluded).
    pub tokens: usize,
    /// Tokens whose predicted tag equals the gold tag.
    pub correct_tags: usize,
    prev: Prev,
    in_correct: bool,
}

impl Default for ConllEval {
    fn default() -> Self {
        Self::new()
    }
}

/// Splits a tag like conlleval: at the first `-`; a type that Perl treats as false (`""` or `"0"`) is `""`.
fn split(tag: &str) -> (String, String) {
    match tag.split_once('-') {
        Some((p, t)) => (
            p.to_string(),
            if t == "0" {
                String::new()
            } else {
                t.to_string()
            },
        ),
        None => (tag.to_string(), String::new()),
    }
}

fn end_of_chunk(prev_tag: &str, tag: &str, prev_type: &str, ty: &str) -> bool {
    matches!(
        (prev_tag, tag),
        ("B", "B") | ("B", "O") | ("I", "B") | ("I", "O") | ("E", "E") | ("E", "I") | ("E", "O")
    ) || (prev_tag != "O" && prev_tag != "." && prev_type != ty)
        || prev_tag == "]"
        || prev_tag == "["
}

fn start_of_chunk(prev_tag: &str, tag: &str, prev_type: &str, ty: &str) -> bool {
    matches!(
        (prev_tag, tag),
        ("B", "B") | ("I", "B") | ("O", "B") | ("O", "I") | ("E", "E") | ("E", "I") | ("O", "E")
    ) || (tag != "O" && tag != "." && prev_type != ty)
        || tag == "["
        || tag == "]"
}

impl ConllEval {
    /// A scorer with nothing counted.
    pub fn new() -> Self {
        Self {
            total: TypeCounts::default(),
            per_type: BTreeMap::new(),
            tokens: 0,
            correct_tags: 0,
            prev: Prev {
                correct: "O".into(),
                correct_type: String::new(),
                guessed: "O".into(),
                guessed_type: String::new(),
            },
            in_correct: false,
        }
    }

    /// Processes one token (`boundary` = a sentence break, which is scored as `O`/`O` and not counted).
    fn step(&mut self, gold: &str, pred: &str, boundary: bool) {
        let (correct, correct_type) = if boundary {
            ("O".into(), String::new())
        } else {
            split(gold)
        };
        let (guessed, guessed_type) = if boundary {
            ("O".into(), String::new())
        } else {
            split(pred)
        };
        let p = &self.prev;
        let end_c = end_of_chunk(&p.correct, &correct, &p.correct_type, &correct_type);
        let end_g = end_of_chunk(&p.guessed, &guessed, &p.guessed_type, &guessed_type);
        if self.in_correct {
            if end_c && end_g && p.guessed_type == p.correct_type {
                self.in_correct = false;
                self.total.correct += 1;
                self.per_type
                    .entry(p.correct_type.clone())
                    .or_default()
                    .correct += 1;
            } else if end_c != end_g || guessed_type != correct_type {
                self.in_correct = false;
            }
        }
        let start_c = start_of_chunk(&p.correct, &correct, &p.correct_type, &correct_type);
        let start_g = start_of_chunk(&p.guessed, &guessed, &p.guessed_type, &guessed_type);
        if start_c && start_g && guessed_type == correct_type {
            self.in_correct = true;
        }
        if start_c {
            self.total.gold += 1;
            self.per_type.entry(correct_type.clone()).or_default().gold += 1;
        }
        if start_g {
            self.total.found += 1;
            self.per_type.entry(guessed_type.clone()).or_default().found += 1;
        }
        if !boundary {
            if correct == guessed && guessed_type == correct_type {
                self.correct_tags += 1;
            }
            self.tokens += 1;
        }
        self.prev = Prev {
            correct,
            correct_type,
            guessed,
            guessed_type,
        };
    }

    /// Scores one sentence (gold and predicted tags, IOB1 or IOB2; map BIOES first) followed by a boundary.
    pub fn add_sentence<G: AsRef<str>, P: AsRef<str>>(
        &mut self,
        sentence: usize,
        gold: &[G],
        pred: &[P],
    ) -> Result<(), ScoreError> {
        if gold.len() != pred.len() {
            return Err(ScoreError::LengthMismatch {
                sentence,
                gold: gold.len(),
                pred: pred.len(),
            });
        }
        for (g, p) in gold.iter().zip(pred) {
            self.step(g.as_ref(), p.as_ref(), false);
        }
        self.step("O", "O", true);
        Ok(())
    }

    /// Counts including a chunk still open at the end of input (as the script does after its last line).
    fn finished(&self) -> (TypeCounts, BTreeMap<String, TypeCounts>) {
        let mut total = self.total;
        let mut per_type = self.per_type.clone();
        if self.in_correct {
            total.correct += 1;
            per_type
                .entry(self.prev.correct_type.clone())
                .or_default()
                .correct += 1;
        }
        (total, per_type)
    }

    /// Overall counts.
    pub fn counts(&self) -> TypeCounts {
        self.finished().0
    }

    /// Overall precision, recall and F1 (%).
    pub fn overall(&self) -> Prf {
        self.counts().prf()
    }

    /// Token accuracy over chunk tags (%), 0 when nothing was scored.
    pub fn accuracy(&self) -> f64 {
        if self.tokens == 0 {
            0.0
        } else {
            100.0 * self.correct_tags as f64 / self.tokens as f64
        }
    }

    /// Per-type counts, in conlleval's order (byte order of the type name).
    pub fn type_counts(&self) -> BTreeMap<String, TypeCounts> {
        self.finished().1
    }

    /// The report text, byte-identical to the script's default (non-LaTeX) output.
    pub fn report(&self) -> String {
        let (total, per_type) = self.finished();
        let mut out = String::new();
        let prf = total.prf();
        // The script prints "processed ... correct: N." with interpolated integers.
        let _ = writeln!(
            out,
            "processed {} tokens with {} phrases; found: {} phrases; correct: {}.",
            self.tokens, total.gold, total.found, total.correct
        );
        if self.tokens > 0 {
            let _ = writeln!(
                out,
                "accuracy: {:6.2}%; precision: {:6.2}%; recall: {:6.2}%; FB1: {:6.2}",
                100.0 * self.correct_tags as f64 / self.tokens as f64,
                prf.precision,
                prf.recall,
                prf.f1
            );
        }
        // The script sorts the keys of its gold and found tables together (duplicates included) and
        // skips a name equal to the previous one, unless the previous one is false in Perl ("" or "0").
        let mut names: Vec<&String> = per_type
            .iter()
            .flat_map(|(k, c)| {
                let twice = usize::from(c.gold > 0) + usize::from(c.found > 0);
                std::iter::repeat_n(k, twice)
            })
            .collect();
        names.sort();
        let mut last: Option<&String> = None;
        for name in names {
            let perl_false = last.is_none_or(|l| l.is_empty() || l == "0");
            if perl_false || last != Some(name) {
                let c = per_type[name];
                let prf = c.prf();
                // `%17s` pads by bytes: Perl reads the input as bytes, not characters.
                let pad = " ".repeat(17usize.saturating_sub(name.len()));
                let _ = writeln!(
                    out,
                    "{pad}{name}: precision: {:6.2}%; recall: {:6.2}%; FB1: {:6.2}  {}",
                    prf.precision, prf.recall, prf.f1, c.found
                );
            }
            last = Some(name);
        }
        out
    }
}

/// The first field that makes a line of conlleval input a document boundary.
pub const BOUNDARY: &str = "-X-";

/// A word as it must be written into conlleval input: the boundary marker `-X-` gets a leading
/// backslash (`\-X-`) so that the script scores it as a token instead of a document break; every
/// other word is written as it is.
pub fn escape_word(word: &str) -> Cow<'_, str> {
    if word == BOUNDARY {
        Cow::Owned(format!("\\{word}"))
    } else {
        Cow::Borrowed(word)
    }
}

/// How conlleval input is read: the script's `-d`, `-o` and `-r` options, plus the tag scheme.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputOptions {
    /// Column delimiter (`-d`; default one space). Split on every occurrence, as the script's
    /// `split` does; trailing empty fields are dropped.
    pub delimiter: String,
    /// Outside tag (`-o`; default `O`). As in the script it only matters with `raw`, where it
    /// is read as `O`.
    pub outside: String,
    /// `-r`: tags carry no `B-`/`I-` prefix and every tagged token is a chunk of its own.
    pub raw: bool,
    /// Scheme of the tags: BIOES is mapped with [`bioes_to_conlleval`] token by token; IOB1 and
    /// IOB2 are read as they are (they score the same).
    pub scheme: TagScheme,
}

impl Default for InputOptions {
    fn default() -> Self {
        Self {
            delimiter: " ".into(),
            outside: "O".into(),
            raw: false,
            scheme: TagScheme::Iob2,
        }
    }
}

impl InputOptions {
    /// One tag as the scorer sees it: raw tags get their `B-` prefix (the outside tag becomes
    /// `O`), BIOES tags their conlleval equivalent.
    fn tag<'a>(&self, tag: &'a str) -> Cow<'a, str> {
        if self.raw {
            return if tag == self.outside || tag == "O" {
                Cow::Borrowed("O")
            } else {
                Cow::Owned(format!("B-{tag}"))
            };
        }
        if self.scheme == TagScheme::Bioes {
            Cow::Owned(bioes_to_conlleval(&[tag]).remove(0))
        } else {
            Cow::Borrowed(tag)
        }
    }
}

/// Runs conlleval on text in its input format with the default options: one token per line,
/// fields separated by single spaces, the last two fields = gold and predicted tag; blank lines
/// and lines whose first field is `-X-` are sentence boundaries. Returns the report.
pub fn report_from_text(input: &str) -> Result<String, ScoreError> {
    Ok(score_text(input, &InputOptions::default())?.report())
}

/// Scores text in conlleval's input format read with `options` (see [`report_from_text`]). A
/// byte-order mark at the start of `input` is skipped.
pub fn score_text(input: &str, options: &InputOptions) -> Result<ConllEval, ScoreError> {
    let mut eval = ConllEval::new();
    let mut n_fields: Option<usize> = None;
    for (no, line) in crate::text::lines(input) {
        // Perl's split drops trailing empty fields.
        let mut fields: Vec<&str> = line.split(options.delimiter.as_str()).collect();
        while fields.last() == Some(&"") {
            fields.pop();
        }
        if !fields.is_empty() {
            let expected = *n_fields.get_or_insert(fields.len());
            if fields.len() != expected {
                return Err(ScoreError::FieldCount {
                    line: no,
                    expected,
                    found: fields.len(),
                });
            }
        }
        if fields.is_empty() || fields[0] == BOUNDARY {
            eval.step("O", "O", true);
            continue;
        }
        if fields.len() < 2 {
            return Err(ScoreError::TooFewFields { line: no });
        }
        let n = fields.len();
        eval.step(
            &options.tag(fields[n - 2]),
            &options.tag(fields[n - 1]),
            false,
        );
    }
    Ok(eval)
}

/// Scores whole splits: sentence `i` of `gold` against sentence `i` of `pred`, both in `scheme`
/// (BIOES is mapped with [`bioes_to_conlleval`] first; IOB1 and IOB2 are scored as they are).
pub fn score_chunks<G: AsRef<str>, P: AsRef<str>>(
    scheme: TagScheme,
    gold: &[Vec<G>],
    pred: &[Vec<P>],
) -> Result<ConllEval, ScoreError> {
    if gold.len() != pred.len() {
        return Err(ScoreError::SentenceCount {
            gold: gold.len(),
            pred: pred.len(),
        });
    }
    let mut eval = ConllEval::new();
    for (i, (g, p)) in gold.iter().zip(pred).enumerate() {
        if scheme == TagScheme::Bioes {
            eval.add_sentence(i, &bioes_to_conlleval(g), &bioes_to_conlleval(p))?;
        } else {
            eval.add_sentence(i, g, p)?;
        }
    }
    Ok(eval)
}

/// Token accuracy counts (for POS tagging).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Accuracy {
    /// Tokens whose predicted tag equals the gold tag.
    pub correct: usize,
    /// Tokens scored.
    pub total: usize,
}

impl Accuracy {
    /// Adds one sentence.
    pub fn add_sentence<G: AsRef<str>, P: AsRef<str>>(
        &mut self,
        sentence: usize,
        gold: &[G],
        pred: &[P],
    ) -> Result<(), ScoreError> {
        if gold.len() != pred.len() {
            return Err(ScoreError::LengthMismatch {
                sentence,
                gold: gold.len(),
                pred: pred.len(),
            });
        }
        self.correct += gold
            .iter()
            .zip(pred)
            .filter(|(g, p)| g.as_ref() == p.as_ref())
            .count();
        self.total += gold.len();
        Ok(())
    }

    /// Accuracy in percent (0 when nothing was scored).
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            100.0 * self.correct as f64 / self.total as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_boundary_word_is_scored_as_a_token() {
        let raw = format!("{BOUNDARY} B-LOC B-LOC\nParis I-LOC I-LOC\n");
        let unescaped = report_from_text(&raw).unwrap();
        assert!(unescaped.starts_with("processed 1 tokens"), "{unescaped}");
        let escaped = format!("{} B-LOC B-LOC\nParis I-LOC I-LOC\n", escape_word(BOUNDARY));
        let report = report_from_text(&escaped).unwrap();
        assert!(
            report.starts_with("processed 2 tokens with 1 phrases; found: 1 phrases; correct: 1."),
            "{report}"
        );
        assert_eq!(escape_word("-X-"), "\\-X-");
        assert_eq!(escape_word("-X-y"), "-X-y");
    }

    #[test]
    fn raw_tags_outside_tag_delimiter_and_bioes() {
        let raw = InputOptions {
            raw: true,
            outside: "NONE".into(),
            delimiter: "\t".into(),
            ..InputOptions::default()
        };
        // Raw: every tagged token is a one-token chunk; `NONE` is outside.
        let eval = score_text("a\tNN\tNN\nb\tNN\tNONE\nc\tNONE\tVB\n", &raw).unwrap();
        let c = eval.counts();
        assert_eq!((c.gold, c.found, c.correct), (2, 2, 1));
        let bioes = InputOptions {
            scheme: TagScheme::Bioes,
            ..InputOptions::default()
        };
        let eval = score_text("a B-X B-X\nb E-X E-X\nc S-Y S-Y\n", &bioes).unwrap();
        let c = eval.counts();
        assert_eq!((c.gold, c.found, c.correct), (2, 2, 2));
    }
}
