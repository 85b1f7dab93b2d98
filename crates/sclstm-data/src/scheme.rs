//! Chunk tag schemes (IOB1, IOB2 = BIO, BIOES), validation and lossless conversion between them.
//!
//! A tag is `O` or `P-TYPE` with a non-empty `TYPE` (which may itself contain `-`) and a prefix `P` from
//! `{B, I}` (IOB1, IOB2) or `{B, I, E, S}` (BIOES). Sequence rules, checked strictly:
//! - **IOB1**: `I-X` continues a chunk of type X or starts one after anything else; `B-X` always starts a
//!   chunk. Canonical IOB1 writes `B-X` only directly after a token of type X (to separate two adjacent X
//!   chunks), and [`TagScheme::render`] does so; a `B-X` elsewhere is accepted as a chunk start (this is
//!   how conlleval reads it), because CoNLL-2003 train has two such tags (`train.txt` lines 152428 and
//!   175436, `B-MISC` after `O`). Converting those two away from IOB1 and back yields the canonical `I-MISC`.
//! - **IOB2**: every chunk starts with `B-X`; `I-X` only directly after `B-X` or `I-X`.
//! - **BIOES**: a one-token chunk is `S-X`; longer chunks are `B-X (I-X)* E-X`.
//!
//! Conversion goes through [`Span`]s, so every valid sequence converts to any scheme and back to the same
//! chunks, and to the same tags whenever the input was canonical (always for IOB2 and BIOES).

use std::fmt;
use std::str::FromStr;

/// A chunk tagging scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum TagScheme {
    /// IOB1 (CoNLL-2003 files): `B-` only between two adjacent chunks of the same type.
    Iob1,
    /// IOB2, also called BIO (CoNLL-2000 files, the paper's training scheme): `B-` starts every chunk.
    Iob2,
    /// BIOES (IOBES): `S-` single-token chunks, `B-`/`I-`/`E-` for longer ones.
    Bioes,
}

impl fmt::Display for TagScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Iob1 => "IOB1",
            Self::Iob2 => "IOB2",
            Self::Bioes => "BIOES",
        })
    }
}

/// Error for an unknown scheme name.
#[derive(Debug, thiserror::Error)]
#[error("unknown tag scheme {0:?} (expected iob1, iob2, bio, bioes or iobes)")]
pub struct UnknownScheme(pub String);

impl FromStr for TagScheme {
    type Err = UnknownScheme;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "iob1" => Ok(Self::Iob1),
            "iob2" | "bio" => Ok(Self::Iob2),
            "bioes" | "iobes" => Ok(Self::Bioes),
            _ => Err(UnknownScheme(s.to_string())),
        }
    }
}

/// A chunk: tokens `start..end` (end exclusive) of type `label`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    /// First token.
    pub start: usize,
    /// One past the last token.
    pub end: usize,
    /// Chunk type, e.g. `PER` or `NP`.
    pub label: String,
}

/// A tag sequence that breaks a scheme's rules.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("tag {tag:?} at token {position} is not valid {scheme}: {reason}")]
pub struct SchemeError {
    /// 0-based token index of the offending tag.
    pub position: usize,
    /// The offending tag.
    pub tag: String,
    /// The scheme checked against.
    pub scheme: TagScheme,
    /// Why it is rejected.
    pub reason: String,
}

/// Splits a tag into prefix and type: `O` → `('O', "")`, `B-PER` → `('B', "PER")`.
/// Returns `None` when the tag is neither `O` nor a one-letter prefix, `-`, and a non-empty type.
pub fn split_tag(tag: &str) -> Option<(char, &str)> {
    if tag == "O" {
        return Some(('O', ""));
    }
    let (p, t) = tag.split_once('-')?;
    let mut chars = p.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if !t.is_empty() => Some((c, t)),
        _ => None,
    }
}

impl TagScheme {
    /// The prefixes this scheme allows besides `O`.
    fn prefixes(self) -> &'static [char] {
        match self {
            Self::Iob1 | Self::Iob2 => &['B', 'I'],
            Self::Bioes => &['B', 'I', 'E', 'S'],
        }
    }

    /// Checks the form of one tag (`O` or an allowed prefix, `-`, a non-empty type).
    pub fn check_form(self, tag: &str) -> Result<(char, &str), String> {
        match split_tag(tag) {
            Some(('O', "")) => Ok(('O', "")),
            Some((p, t)) if self.prefixes().contains(&p) => Ok((p, t)),
            Some((p, _)) => Err(format!(
                "prefix {p:?} is not one of {:?} or O",
                self.prefixes()
            )),
            None => Err("not O and not PREFIX-TYPE".to_string()),
        }
    }

    /// Decodes a tag sequence into chunks, rejecting anything the scheme does not allow.
    pub fn spans<S: AsRef<str>>(self, tags: &[S]) -> Result<Vec<Span>, SchemeError> {
        let mut spans: Vec<Span> = Vec::new();
        // Type of the chunk that the previous token belongs to, if any; and whether it is still open (BIOES).
        let mut prev: Option<&str> = None;
        let mut open = false;
        for (i, tag) in tags.iter().enumerate() {
            let tag = tag.as_ref();
            let fail = |reason: &str| SchemeError {
                position: i,
                tag: tag.to_string(),
                scheme: self,
                reason: reason.to_string(),
            };
            let (p, t) = self.check_form(tag).map_err(|r| fail(&r))?;
            let continues = prev == Some(t);
            let start = match (self, p) {
                (_, 'O') => None,
                (Self::Iob1, 'I') => (!continues).then_some(t),
                (Self::Iob1, _) => Some(t),
                (Self::Iob2, 'B') => Some(t),
                (Self::Iob2, _) if continues => None,
                (Self::Iob2, _) => {
                    return Err(fail("I- must follow B- or I- of the same type in IOB2"));
                }
                (Self::Bioes, 'B' | 'S') if !open => Some(t),
                (Self::Bioes, 'I' | 'E') if open && continues => None,
                (Self::Bioes, _) => {
                    return Err(fail(if open {
                        "the previous chunk is not closed with E-"
                    } else {
                        "I- and E- must continue a chunk opened with B-"
                    }));
                }
            };
            if p == 'O' && open {
                return Err(fail("the previous chunk is not closed with E-"));
            }
            if let Some(label) = start {
                spans.push(Span {
                    start: i,
                    end: i + 1,
                    label: label.to_string(),
                });
            } else if p != 'O' {
                spans
                    .last_mut()
                    .expect("internal: continued chunk exists")
                    .end = i + 1;
            }
            prev = (p != 'O').then_some(t);
            open = self == Self::Bioes && matches!(p, 'B' | 'I');
        }
        if open {
            let last = tags.len() - 1;
            return Err(SchemeError {
                position: last,
                tag: tags[last].as_ref().to_string(),
                scheme: self,
                reason: "the sentence ends inside a chunk (no E-)".to_string(),
            });
        }
        Ok(spans)
    }

    /// Checks a tag sequence against the scheme.
    pub fn validate<S: AsRef<str>>(self, tags: &[S]) -> Result<(), SchemeError> {
        self.spans(tags).map(|_| ())
    }

    /// Writes chunks as tags of this scheme for a sentence of `len` tokens.
    pub fn render(self, spans: &[Span], len: usize) -> Vec<String> {
        let mut tags = vec!["O".to_string(); len];
        let mut prev: Option<&Span> = None;
        for s in spans {
            let n = s.end - s.start;
            for (k, tag) in tags[s.start..s.end].iter_mut().enumerate() {
                let p = match self {
                    Self::Iob2 => {
                        if k == 0 {
                            'B'
                        } else {
                            'I'
                        }
                    }
                    Self::Iob1 => {
                        let touches = prev.is_some_and(|q| q.end == s.start && q.label == s.label);
                        if k == 0 && touches { 'B' } else { 'I' }
                    }
                    Self::Bioes => match (k, n) {
                        (_, 1) => 'S',
                        (0, _) => 'B',
                        (k, n) if k + 1 == n => 'E',
                        _ => 'I',
                    },
                };
                *tag = format!("{p}-{}", s.label);
            }
            prev = Some(s);
        }
        tags
    }

    /// Converts a valid tag sequence from this scheme to `to`.
    pub fn convert<S: AsRef<str>>(
        self,
        tags: &[S],
        to: TagScheme,
    ) -> Result<Vec<String>, SchemeError> {
        Ok(to.render(&self.spans(tags)?, tags.len()))
    }
}

/// Maps tags of any scheme to the IOB2 prefixes conlleval understands, without validating the sequence:
/// `S-X` → `B-X`, `E-X` → `I-X`, everything else unchanged. Use it on (possibly ill-formed) BIOES
/// predictions before scoring; IOB1 and IOB2 need no mapping because conlleval scores them alike.
pub fn bioes_to_conlleval<S: AsRef<str>>(tags: &[S]) -> Vec<String> {
    tags.iter()
        .map(|t| {
            let t = t.as_ref();
            match split_tag(t) {
                Some(('S', ty)) => format!("B-{ty}"),
                Some(('E', ty)) => format!("I-{ty}"),
                _ => t.to_string(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn iob1_to_iob2_and_bioes() {
        let iob1 = v("I-PER I-PER B-PER O I-LOC I-ORG O I-MISC");
        assert_eq!(
            TagScheme::Iob1.convert(&iob1, TagScheme::Iob2).unwrap(),
            v("B-PER I-PER B-PER O B-LOC B-ORG O B-MISC")
        );
        assert_eq!(
            TagScheme::Iob1.convert(&iob1, TagScheme::Bioes).unwrap(),
            v("B-PER E-PER S-PER O S-LOC S-ORG O S-MISC")
        );
        let back = TagScheme::Bioes
            .convert(
                &TagScheme::Iob1.convert(&iob1, TagScheme::Bioes).unwrap(),
                TagScheme::Iob1,
            )
            .unwrap();
        assert_eq!(back, iob1);
    }

    #[test]
    fn non_canonical_iob1_b_is_a_chunk_start() {
        let tags = v("O B-MISC I-MISC I-LOC B-LOC");
        let spans = TagScheme::Iob1.spans(&tags).unwrap();
        assert_eq!(spans.len(), 3);
        assert_eq!(
            TagScheme::Iob1.render(&spans, 5),
            v("O I-MISC I-MISC I-LOC B-LOC")
        );
    }

    #[test]
    fn types_may_contain_hyphens() {
        let t = v("B-X-Y I-X-Y O");
        let sp = TagScheme::Iob2.spans(&t).unwrap();
        assert_eq!(
            sp,
            vec![Span {
                start: 0,
                end: 2,
                label: "X-Y".into()
            }]
        );
    }

    #[test]
    fn rejects_invalid_sequences() {
        assert_eq!(
            TagScheme::Iob2.validate(&v("O I-NP")).unwrap_err().position,
            1
        );
        assert_eq!(
            TagScheme::Iob2
                .validate(&v("B-NP I-VP"))
                .unwrap_err()
                .position,
            1
        );
        assert_eq!(
            TagScheme::Iob1
                .validate(&v("I-PER E-PER"))
                .unwrap_err()
                .position,
            1
        );
        assert_eq!(
            TagScheme::Bioes.validate(&v("B-A O")).unwrap_err().position,
            1
        );
        assert_eq!(
            TagScheme::Bioes
                .validate(&v("B-A I-A"))
                .unwrap_err()
                .position,
            1
        );
        assert_eq!(
            TagScheme::Bioes.validate(&v("O E-A")).unwrap_err().position,
            1
        );
        assert_eq!(
            TagScheme::Bioes
                .validate(&v("B-A S-A"))
                .unwrap_err()
                .position,
            1
        );
        assert!(TagScheme::Iob2.validate(&v("S-A")).is_err());
        assert!(TagScheme::Iob2.validate(&v("PER")).is_err());
        assert!(TagScheme::Iob2.validate(&v("B-")).is_err());
        assert!(TagScheme::Iob2.validate(&v("BB-PER")).is_err());
        assert!(
            TagScheme::Bioes
                .validate(&v("S-A B-A I-A E-A O S-B"))
                .is_ok()
        );
    }

    #[test]
    fn iob2_round_trips_through_iob1() {
        let iob2 = v("B-NP I-NP B-NP B-VP I-VP O B-PP B-NP");
        let iob1 = TagScheme::Iob2.convert(&iob2, TagScheme::Iob1).unwrap();
        assert_eq!(iob1, v("I-NP I-NP B-NP I-VP I-VP O I-PP I-NP"));
        assert_eq!(
            TagScheme::Iob1.convert(&iob1, TagScheme::Iob2).unwrap(),
            iob2
        );
    }

    #[test]
    fn bioes_prefix_mapping_for_scoring() {
        assert_eq!(
            bioes_to_conlleval(&v("S-A B-B E-B O I-C E-C")),
            v("B-A B-B I-B O I-C I-C")
        );
    }

    #[test]
    fn parses_scheme_names() {
        assert_eq!("BIO".parse::<TagScheme>().unwrap(), TagScheme::Iob2);
        assert_eq!("iobes".parse::<TagScheme>().unwrap(), TagScheme::Bioes);
        assert!("xyz".parse::<TagScheme>().is_err());
    }
}
