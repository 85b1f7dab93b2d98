//! Reader for CoNLL column files (CoNLL-2003, CoNLL-2000, and any "word column + tag column" file).
//!
//! # Format rules
//! - One token per line; a blank line (empty, or only spaces/tabs) ends a sentence. The last sentence may
//!   end at end of file without a blank line. LF and CRLF line endings are both accepted, and a UTF-8
//!   byte-order mark at the start of the file is skipped (it is not part of the first word).
//! - **Separators.** The first data line decides the separator of the whole file: if it contains a tab the
//!   file is tab-separated, otherwise space-separated. Lines are split on every single separator character,
//!   so doubled, leading or trailing separators produce an empty field, which is an error
//!   ([`DataErrorKind::EmptyField`], or [`DataErrorKind::EmptyTag`] for the tag column). A tab inside a
//!   space-separated file is an error ([`DataErrorKind::MixedSeparators`]); in a tab-separated file spaces
//!   belong to the field text.
//! - Every data line must have the same number of columns: the format's fixed count when it has one, else
//!   the count of the file's first data line.
//! - A line whose first field is `-DOCSTART-` is a document separator, not a sentence; it must not occur
//!   inside a sentence.
//! - A file with no sentence at all is an error ([`DataErrorKind::EmptyFile`]).

use std::path::Path;

use crate::error::{DataError, DataErrorKind};
use crate::text::{is_blank, lines, read_text};

/// One sentence: its words, one tag per word, and the line where it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sentence {
    /// The words, in order.
    pub words: Vec<String>,
    /// One tag per word.
    pub tags: Vec<String>,
    /// 1-based line number of the sentence's first token in its file.
    pub line: usize,
}

impl Sentence {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// True when the sentence has no token (readers never produce one).
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
}

/// Which columns of a CoNLL column file hold the word and the tag (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColumnFormat {
    /// 0-based column of the word.
    pub word: usize,
    /// 0-based column of the tag.
    pub tag: usize,
    /// Required number of columns; `None` takes the count of the first data line.
    pub columns: Option<usize>,
}

impl ColumnFormat {
    /// CoNLL-2003: `word POS chunk NER`, tag = NER (column 4).
    pub const CONLL2003_NER: Self = Self {
        word: 0,
        tag: 3,
        columns: Some(4),
    };
    /// CoNLL-2000: `word POS chunk`, tag = chunk (column 3).
    pub const CONLL2000_CHUNK: Self = Self {
        word: 0,
        tag: 2,
        columns: Some(3),
    };

    /// A user file: word in column `word`, tag in column `tag` (0-based), column count from the first line.
    pub fn word_tag(word: usize, tag: usize) -> Self {
        Self {
            word,
            tag,
            columns: None,
        }
    }
}

/// Reads a CoNLL column file (optionally gzipped). See the module docs for the rules.
pub fn read_conll(path: &Path, format: &ColumnFormat) -> Result<Vec<Sentence>, DataError> {
    parse_conll(&read_text(path)?, path, format)
}

#[derive(Clone, Copy)]
enum Sep {
    Space,
    Tab,
}

/// Parses the text of a CoNLL column file; `path` is only used in errors.
pub fn parse_conll(
    text: &str,
    path: &Path,
    format: &ColumnFormat,
) -> Result<Vec<Sentence>, DataError> {
    let mut sentences = Vec::new();
    let mut current = Sentence {
        words: Vec::new(),
        tags: Vec::new(),
        line: 0,
    };
    let mut sep = None;
    let mut expected = format.columns;
    for (no, line) in lines(text) {
        let err = |kind| DataError::new(path, no, kind).in_sentence(sentences.len());
        if is_blank(line) {
            if !current.words.is_empty() {
                sentences.push(std::mem::replace(
                    &mut current,
                    Sentence {
                        words: Vec::new(),
                        tags: Vec::new(),
                        line: 0,
                    },
                ));
            }
            continue;
        }
        let sep = *sep.get_or_insert(if line.contains('\t') {
            Sep::Tab
        } else {
            Sep::Space
        });
        let fields: Vec<&str> = match sep {
            Sep::Space => {
                if line.contains('\t') {
                    return Err(err(DataErrorKind::MixedSeparators { file_uses: "space" }));
                }
                line.split(' ').collect()
            }
            Sep::Tab => line.split('\t').collect(),
        };
        if fields[0] == "-DOCSTART-" {
            if !current.words.is_empty() {
                return Err(err(DataErrorKind::DocstartInSentence));
            }
            continue;
        }
        if let Some(i) = fields.iter().position(|f| f.is_empty()) {
            return Err(err(if i == format.tag {
                DataErrorKind::EmptyTag { column: i + 1 }
            } else {
                DataErrorKind::EmptyField { column: i + 1 }
            }));
        }
        let want = *expected.get_or_insert(fields.len());
        if fields.len() != want {
            if matches!(sep, Sep::Tab) && fields.len() == 1 && line.contains(' ') {
                return Err(err(DataErrorKind::MixedSeparators { file_uses: "tab" }));
            }
            return Err(err(DataErrorKind::ColumnCount {
                expected: want,
                found: fields.len(),
            }));
        }
        let needed = format.word.max(format.tag);
        if needed >= fields.len() {
            return Err(err(DataErrorKind::MissingColumn {
                needed: needed + 1,
                found: fields.len(),
            }));
        }
        if current.words.is_empty() {
            current.line = no;
        }
        current.words.push(fields[format.word].to_string());
        current.tags.push(fields[format.tag].to_string());
    }
    if !current.words.is_empty() {
        sentences.push(current);
    }
    if sentences.is_empty() {
        return Err(DataError::new(path, 0, DataErrorKind::EmptyFile));
    }
    Ok(sentences)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, f: &ColumnFormat) -> Result<Vec<Sentence>, DataError> {
        parse_conll(text, Path::new("t.txt"), f)
    }

    #[test]
    fn docstart_lines_are_not_sentences() {
        let text = "-DOCSTART- -X- O O\n\nEU NNP I-NP I-ORG\nrejects VBZ I-VP O\n\n-DOCSTART- -X- O O\n\nPeter NNP I-NP I-PER\n";
        let s = parse(text, &ColumnFormat::CONLL2003_NER).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].words, ["EU", "rejects"]);
        assert_eq!(s[0].tags, ["I-ORG", "O"]);
        assert_eq!(s[0].line, 3);
        assert_eq!(s[1].line, 8);
    }

    #[test]
    fn crlf_file_reads_like_lf_file() {
        let lf = "a DT B-NP\nb NN I-NP\n\nc VB B-VP\n";
        let crlf = lf.replace('\n', "\r\n");
        let f = ColumnFormat::CONLL2000_CHUNK;
        assert_eq!(parse(lf, &f).unwrap(), parse(&crlf, &f).unwrap());
        assert_eq!(parse(&crlf, &f).unwrap()[0].tags[1], "I-NP");
    }

    #[test]
    fn byte_order_mark_is_not_part_of_the_first_word() {
        for f in [
            ColumnFormat::CONLL2003_NER,
            ColumnFormat::CONLL2000_CHUNK,
            ColumnFormat::word_tag(0, 1),
        ] {
            let cols = f.columns.unwrap_or(2);
            let line = |w: &str| {
                let mut v = vec![w; cols];
                v[f.tag] = "O";
                v.join(" ")
            };
            let text = format!("{}\n{}\n", line("EU"), line("rejects"));
            let with_bom = format!("\u{feff}{text}");
            assert_eq!(parse(&with_bom, &f).unwrap(), parse(&text, &f).unwrap());
            assert_eq!(parse(&with_bom, &f).unwrap()[0].words[0], "EU");
        }
        let docstart = "\u{feff}-DOCSTART- -X- O O\n\nEU NNP I-NP I-ORG\n";
        assert_eq!(
            parse(docstart, &ColumnFormat::CONLL2003_NER).unwrap().len(),
            1
        );
    }

    #[test]
    fn tab_separated_file_keeps_spaces_in_fields() {
        let s = parse("New York\tB-LOC\nis\tO\n", &ColumnFormat::word_tag(0, 1)).unwrap();
        assert_eq!(s[0].words, ["New York", "is"]);
    }

    #[test]
    fn whitespace_only_line_ends_a_sentence() {
        let s = parse("a O\n  \t\nb O\n", &ColumnFormat::word_tag(0, 1)).unwrap();
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn generic_format_takes_column_count_from_first_line() {
        let err = parse("a X O\nb X Y O\n", &ColumnFormat::word_tag(0, 2)).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(matches!(
            err.kind,
            DataErrorKind::ColumnCount {
                expected: 3,
                found: 4
            }
        ));
    }

    #[test]
    fn trailing_space_is_an_empty_tag() {
        let err = parse("a DT \n", &ColumnFormat::CONLL2000_CHUNK).unwrap_err();
        assert!(matches!(err.kind, DataErrorKind::EmptyTag { column: 3 }));
    }
}
