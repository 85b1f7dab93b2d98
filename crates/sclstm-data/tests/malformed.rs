//! Every file in `tests/fixtures/malformed/` (workspace root) yields its specific typed error with the
//! right line (and sentence, where one is known). Nothing panics.

use std::path::{Path, PathBuf};

use sclstm_data::conll::{ColumnFormat, read_conll};
use sclstm_data::conllu::{PosColumn, read_conllu};
use sclstm_data::glove::Embeddings;
use sclstm_data::scheme::TagScheme;
use sclstm_data::shipped::validate_sentences;
use sclstm_data::{DataError, DataErrorKind as K};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/malformed")
}

/// How a fixture is read.
#[derive(Clone, Copy)]
enum Reader {
    /// CoNLL-2003 columns, NER tags validated as IOB1.
    Conll03,
    /// CoNLL-2000 columns, chunk tags validated as IOB2.
    Conll00,
    /// Generic word column 0, tag column `.0`.
    WordTag(usize),
    /// CoNLL-U, UPOS.
    Conllu,
    /// GloVe vectors with an optional required dimension.
    Glove(Option<usize>),
}

fn read(path: &Path, reader: Reader) -> Result<(), DataError> {
    match reader {
        Reader::Conll03 => validate_sentences(
            path,
            &read_conll(path, &ColumnFormat::CONLL2003_NER)?,
            TagScheme::Iob1,
        ),
        Reader::Conll00 => validate_sentences(
            path,
            &read_conll(path, &ColumnFormat::CONLL2000_CHUNK)?,
            TagScheme::Iob2,
        ),
        Reader::WordTag(tag) => read_conll(path, &ColumnFormat::word_tag(0, tag)).map(|_| ()),
        Reader::Conllu => read_conllu(path, PosColumn::Upos).map(|_| ()),
        Reader::Glove(dim) => Embeddings::load(path, dim).map(|_| ()),
    }
}

type Check = fn(&K) -> bool;

/// (file, reader, expected line, expected sentence, expected kind).
const CASES: &[(&str, Reader, usize, Option<usize>, Check)] = &[
    (
        "conll03_wrong_column_count.txt",
        Reader::Conll03,
        5,
        Some(0),
        |k| {
            matches!(
                k,
                K::ColumnCount {
                    expected: 4,
                    found: 3
                }
            )
        },
    ),
    ("conll03_empty_tag.txt", Reader::Conll03, 2, Some(0), |k| {
        matches!(k, K::EmptyTag { column: 4 })
    }),
    (
        "conll03_tag_fits_no_scheme.txt",
        Reader::Conll03,
        6,
        Some(1),
        |k| matches!(k, K::InvalidTag { tag, scheme: TagScheme::Iob1, .. } if tag == "X-PER"),
    ),
    (
        "conll03_bioes_tag_in_iob1.txt",
        Reader::Conll03,
        6,
        Some(1),
        |k| matches!(k, K::InvalidTag { tag, .. } if tag == "S-PER"),
    ),
    (
        "conll03_double_space.txt",
        Reader::Conll03,
        5,
        Some(0),
        |k| matches!(k, K::EmptyField { column: 2 }),
    ),
    (
        "conll03_tab_in_space_file.txt",
        Reader::Conll03,
        5,
        Some(0),
        |k| matches!(k, K::MixedSeparators { file_uses: "space" }),
    ),
    (
        "conll03_docstart_inside_sentence.txt",
        Reader::Conll03,
        5,
        Some(0),
        |k| matches!(k, K::DocstartInSentence),
    ),
    ("conll03_not_utf8.txt", Reader::Conll03, 6, None, |k| {
        matches!(k, K::NotUtf8 { byte: 1 })
    }),
    ("conll03_empty.txt", Reader::Conll03, 0, None, |k| {
        matches!(k, K::EmptyFile)
    }),
    ("conll03_only_docstart.txt", Reader::Conll03, 0, None, |k| {
        matches!(k, K::EmptyFile)
    }),
    (
        "conll03_crlf_bad_tag.txt",
        Reader::Conll03,
        7,
        Some(1),
        |k| matches!(k, K::InvalidTag { tag, .. } if tag == "B"),
    ),
    (
        "conll00_i_after_o.txt",
        Reader::Conll00,
        5,
        Some(1),
        |k| matches!(k, K::InvalidTag { tag, scheme: TagScheme::Iob2, .. } if tag == "I-NP"),
    ),
    (
        "conll00_type_change_inside_chunk.txt",
        Reader::Conll00,
        2,
        Some(0),
        |k| matches!(k, K::InvalidTag { tag, .. } if tag == "I-PP"),
    ),
    (
        "conll00_bare_prefix.txt",
        Reader::Conll00,
        2,
        Some(0),
        |k| matches!(k, K::InvalidTag { tag, .. } if tag == "B-"),
    ),
    (
        "wordtag_missing_column.txt",
        Reader::WordTag(2),
        1,
        Some(0),
        |k| {
            matches!(
                k,
                K::MissingColumn {
                    needed: 3,
                    found: 2
                }
            )
        },
    ),
    (
        "wordtag_tab_file_with_space_line.tsv",
        Reader::WordTag(1),
        3,
        Some(0),
        |k| matches!(k, K::MixedSeparators { file_uses: "tab" }),
    ),
    (
        "wordtag_leading_tab.tsv",
        Reader::WordTag(1),
        2,
        Some(0),
        |k| matches!(k, K::EmptyField { column: 1 }),
    ),
    (
        "conllu_nine_fields.conllu",
        Reader::Conllu,
        3,
        Some(0),
        |k| matches!(k, K::ConlluFieldCount { found: 9 }),
    ),
    (
        "conllu_spaces_not_tabs.conllu",
        Reader::Conllu,
        2,
        Some(0),
        |k| matches!(k, K::ConlluFieldCount { found: 1 }),
    ),
    (
        "conllu_bad_range.conllu",
        Reader::Conllu,
        2,
        Some(0),
        |k| matches!(k, K::ConlluBadId { id, .. } if id == "3-2"),
    ),
    (
        "conllu_id_gap.conllu",
        Reader::Conllu,
        2,
        Some(0),
        |k| matches!(k, K::ConlluBadId { id, .. } if id == "3"),
    ),
    (
        "conllu_underscore_upos.conllu",
        Reader::Conllu,
        3,
        Some(1),
        |k| matches!(k, K::EmptyTag { column: 4 }),
    ),
    (
        "conllu_empty_form.conllu",
        Reader::Conllu,
        2,
        Some(0),
        |k| matches!(k, K::EmptyField { column: 2 }),
    ),
    (
        "conllu_comments_only.conllu",
        Reader::Conllu,
        0,
        None,
        |k| matches!(k, K::EmptyFile),
    ),
    ("conllu_not_utf8.conllu", Reader::Conllu, 2, None, |k| {
        matches!(k, K::NotUtf8 { byte: 5 })
    }),
    (
        "glove_word2vec_header.txt",
        Reader::Glove(None),
        1,
        None,
        |k| matches!(k, K::GloveHeader { words: 3, dim: 4 }),
    ),
    ("glove_ragged.txt", Reader::Glove(None), 3, None, |k| {
        matches!(
            k,
            K::RaggedVector {
                expected: 3,
                found: 2
            }
        )
    }),
    (
        "glove_bad_number.txt",
        Reader::Glove(None),
        2,
        None,
        |k| matches!(k, K::BadNumber { value } if value == "0.2x"),
    ),
    (
        "glove_nan.txt",
        Reader::Glove(None),
        2,
        None,
        |k| matches!(k, K::BadNumber { value } if value == "NaN"),
    ),
    (
        "glove_wrong_dim.txt",
        Reader::Glove(Some(50)),
        1,
        None,
        |k| {
            matches!(
                k,
                K::WrongDimension {
                    expected: 50,
                    found: 3
                }
            )
        },
    ),
    (
        "glove_word_without_vector.txt",
        Reader::Glove(None),
        2,
        None,
        |k| matches!(k, K::NoVector),
    ),
    ("glove_ragged.txt.gz", Reader::Glove(None), 2, None, |k| {
        matches!(
            k,
            K::RaggedVector {
                expected: 3,
                found: 2
            }
        )
    }),
    (
        "glove_truncated.txt.gz",
        Reader::Glove(None),
        0,
        None,
        |k| matches!(k, K::Io(_)),
    ),
    ("glove_empty.txt.gz", Reader::Glove(None), 0, None, |k| {
        matches!(k, K::EmptyFile)
    }),
];

#[test]
fn every_malformed_fixture_gives_its_typed_error() {
    let mut failures = Vec::new();
    for &(file, reader, line, sentence, check) in CASES {
        let path = dir().join(file);
        match read(&path, reader) {
            Ok(()) => failures.push(format!("{file}: accepted")),
            Err(e) => {
                if !(check(&e.kind) && e.line == line && e.sentence == sentence && e.path == path) {
                    failures.push(format!(
                        "{file}: got line {} sentence {:?}: {e} ({:?})",
                        e.line, e.sentence, e.kind
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_fixture_file_is_covered() -> std::io::Result<()> {
    let mut files: Vec<String> = std::fs::read_dir(dir())?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    files.retain(|f| f != "README.md");
    files.sort();
    let mut listed: Vec<String> = CASES.iter().map(|c| c.0.to_string()).collect();
    listed.sort();
    assert_eq!(files, listed);
    assert!(files.len() >= 20);
    Ok(())
}

#[test]
fn error_messages_name_file_line_and_sentence() {
    let path = dir().join("conll03_tag_fits_no_scheme.txt");
    let e = read(&path, Reader::Conll03).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("conll03_tag_fits_no_scheme.txt:6 (sentence 2)"),
        "{msg}"
    );
    assert!(msg.contains("\"X-PER\""), "{msg}");
}
