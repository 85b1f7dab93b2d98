//! Corpus readers (CoNLL, CoNLL-U), tag schemes, vocabularies, GloVe loading, batching and conlleval scoring.
//!
//! One module per job:
//! - [`error`]: [`DataError`] `{ path, line, sentence, kind }` for everything read from a file.
//! - [`text`]: file → UTF-8 text (gzip, CRLF); [`conll`] and [`conllu`]: readers producing [`Sentence`]s.
//! - [`scheme`]: IOB1 / IOB2 (BIO) / BIOES validation and lossless conversion.
//! - [`caps`]: the 8 capitalization features; [`glove`]: GloVe-format vectors;
//!   [`vocab`]: word / char / tag vocabularies and the GloVe lookup order with its coverage report.
//! - [`batch`]: ids, padded time-major batches, seeded epoch order.
//! - [`conlleval`]: chunk P/R/F1 identical to the CoNLL script, and token accuracy.
//! - [`shipped`]: the three shipped tasks, the CoNLL-2000 dev carve, `SHA256SUMS`; [`stats`]: `sclstm stats`.
//!
//! ```
//! use std::path::Path;
//! use sclstm_data::conll::{ColumnFormat, parse_conll};
//! use sclstm_data::conlleval::ConllEval;
//! use sclstm_data::scheme::TagScheme;
//!
//! let text = "EU NNP I-NP I-ORG\nrejects VBZ I-VP O\nGerman JJ I-NP I-MISC\n";
//! let sents = parse_conll(text, Path::new("example.txt"), &ColumnFormat::CONLL2003_NER).unwrap();
//! let bio = TagScheme::Iob1.convert(&sents[0].tags, TagScheme::Iob2).unwrap();
//! assert_eq!(bio, ["B-ORG", "O", "B-MISC"]);
//! let mut eval = ConllEval::new();
//! eval.add_sentence(0, &sents[0].tags, &bio).unwrap();
//! assert_eq!(eval.overall().f1, 100.0);
//! ```

#![warn(missing_docs)]

pub mod batch;
pub mod caps;
pub mod conll;
pub mod conlleval;
pub mod conllu;
pub mod error;
pub mod glove;
pub mod scheme;
pub mod shipped;
pub mod stats;
pub mod text;
pub mod tokenize;
pub mod vocab;

pub use conll::Sentence;
pub use error::{DataError, DataErrorKind};
