//! Reader for CoNLL-U files (Universal Dependencies).
//!
//! Rules: lines starting with `#` are comments; a blank line ends a sentence; every other line has exactly
//! 10 tab-separated fields (spaces inside a field are part of it). Multiword-token ranges (`1-2`) and empty
//! nodes (`1.1`) are skipped; the remaining word IDs must run 1, 2, 3, … within each sentence. The tag is
//! UPOS (column 4) by default or XPOS (column 5); a tag of `_` or an empty tag is an error. LF and CRLF
//! endings are both accepted, and a UTF-8 byte-order mark at the start of the file is skipped (so a first
//! line `\u{feff}# sent_id` is still a comment). A file without sentences is an error.

use std::path::Path;

use crate::conll::Sentence;
use crate::error::{DataError, DataErrorKind};
use crate::text::{is_blank, lines, read_text};

/// Which CoNLL-U column supplies the tag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PosColumn {
    /// Universal POS tag (column 4).
    #[default]
    Upos,
    /// Language-specific POS tag (column 5).
    Xpos,
}

/// Reads a CoNLL-U file (optionally gzipped) into sentences of (FORM, UPOS or XPOS).
pub fn read_conllu(path: &Path, column: PosColumn) -> Result<Vec<Sentence>, DataError> {
    parse_conllu(&read_text(path)?, path, column)
}

/// Parses CoNLL-U text; `path` is only used in errors.
pub fn parse_conllu(
    text: &str,
    path: &Path,
    column: PosColumn,
) -> Result<Vec<Sentence>, DataError> {
    let tag_col = match column {
        PosColumn::Upos => 3,
        PosColumn::Xpos => 4,
    };
    let mut sentences = Vec::new();
    let mut current = Sentence {
        words: Vec::new(),
        tags: Vec::new(),
        line: 0,
    };
    // `lines` drops a leading byte-order mark; said here because a BOM before the first `#` or
    // word ID would otherwise turn a comment into a bad ID.
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
        if line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != 10 {
            return Err(err(DataErrorKind::ConlluFieldCount {
                found: fields.len(),
            }));
        }
        let id = fields[0];
        let bad_id = |reason| {
            err(DataErrorKind::ConlluBadId {
                id: id.to_string(),
                reason,
            })
        };
        if let Some((a, b)) = id.split_once('-') {
            match (a.parse::<u32>(), b.parse::<u32>()) {
                (Ok(a), Ok(b)) if a >= 1 && a < b => continue,
                _ => return Err(bad_id("a range must be a-b with 1 <= a < b")),
            }
        }
        if let Some((a, b)) = id.split_once('.') {
            match (a.parse::<u32>(), b.parse::<u32>()) {
                (Ok(_), Ok(b)) if b >= 1 => continue,
                _ => return Err(bad_id("an empty node must be a.b with b >= 1")),
            }
        }
        match id.parse::<usize>() {
            Ok(n) if n == current.words.len() + 1 => {}
            Ok(_) => return Err(bad_id("word IDs must run 1, 2, 3, ... within a sentence")),
            Err(_) => return Err(bad_id("not an integer, range or empty node")),
        }
        if fields[1].is_empty() {
            return Err(err(DataErrorKind::EmptyField { column: 2 }));
        }
        let tag = fields[tag_col];
        if tag.is_empty() || tag == "_" {
            return Err(err(DataErrorKind::EmptyTag {
                column: tag_col + 1,
            }));
        }
        if current.words.is_empty() {
            current.line = no;
        }
        current.words.push(fields[1].to_string());
        current.tags.push(tag.to_string());
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

    const DOC: &str = "# sent_id = 1\n# text = Don't go\n1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_\n\
1\tDo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_\n2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_\n\
2.1\tgone\tgo\tVERB\tVBN\t_\t_\t_\t3:x\t_\n3\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_\n\n";

    #[test]
    fn skips_comments_ranges_and_empty_nodes() {
        let s = parse_conllu(DOC, Path::new("t"), PosColumn::Upos).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].words, ["Do", "n't", "go"]);
        assert_eq!(s[0].tags, ["AUX", "PART", "VERB"]);
        assert_eq!(s[0].line, 4);
    }

    #[test]
    fn byte_order_mark_before_a_comment_or_an_id_is_skipped() {
        let plain = parse_conllu(DOC, Path::new("t"), PosColumn::Upos).unwrap();
        let bom = format!("\u{feff}{DOC}");
        assert_eq!(
            parse_conllu(&bom, Path::new("t"), PosColumn::Upos).unwrap(),
            plain
        );
        let first_word = "\u{feff}1\tDo\tdo\tAUX\tVBP\t_\t0\troot\t_\t_\n";
        let s = parse_conllu(first_word, Path::new("t"), PosColumn::Upos).unwrap();
        assert_eq!(s[0].words, ["Do"]);
    }

    #[test]
    fn xpos_on_request() {
        let s = parse_conllu(DOC, Path::new("t"), PosColumn::Xpos).unwrap();
        assert_eq!(s[0].tags, ["VBP", "RB", "VB"]);
    }

    #[test]
    fn crlf_is_accepted() {
        let crlf = DOC.replace('\n', "\r\n");
        let s = parse_conllu(&crlf, Path::new("t"), PosColumn::Upos).unwrap();
        assert_eq!(s[0].tags, ["AUX", "PART", "VERB"]);
        assert_eq!(s[0].words[2], "go");
    }

    #[test]
    fn word_ids_must_be_consecutive() {
        let text = "1\ta\ta\tDET\tDT\t_\t0\troot\t_\t_\n3\tb\tb\tNOUN\tNN\t_\t1\tdep\t_\t_\n";
        let err = parse_conllu(text, Path::new("t"), PosColumn::Upos).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(matches!(err.kind, DataErrorKind::ConlluBadId { .. }));
    }
}
