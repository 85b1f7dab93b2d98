//! Seeded mutation tests of every reader: thousands of damaged CoNLL-2003, CoNLL-2000, generic
//! word/tag, CoNLL-U, GloVe and TOML configuration files (flipped bytes, truncations, inserted tabs,
//! newlines, byte-order marks and invalid UTF-8, duplicated and deleted pieces). No input may
//! panic, and every error must name the file it is about.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use rand::{Rng, RngExt};
use sclstm_data::batch::seeded_rng;
use sclstm_data::glove::Embeddings;
use sclstm_data::scheme::TagScheme;
use sclstm_train::config::{DataFile, TrainConfig};
use sclstm_train::data::read_user_file;

/// Mutated inputs per format.
const CASES: usize = 2500;

const CONLL2003: &str = "-DOCSTART- -X- O O\n\nEU NNP I-NP I-ORG\nrejects VBZ I-VP O\n\
German JJ I-NP I-MISC\ncall NN I-NP O\n. . O O\n\nPeter NNP I-NP I-PER\nBlackburn NNP I-NP I-PER\n\n\
BRUSSELS NNP I-NP I-LOC\n1996-08-22 CD I-NP O\n";
const CONLL2000: &str = "Confidence NN B-NP\nin IN B-PP\nthe DT B-NP\npound NN I-NP\nis VBZ B-VP\n\
widely RB I-VP\n\nChancellor NNP O\nof IN B-PP\nthe DT B-NP\nExchequer NNP I-NP\n";
const GENERIC: &str = "New\tB-LOC\nYork\tI-LOC\nis\tO\nbig\tO\n\nParis\tB-LOC\n";
const CONLLU: &str = "# sent_id = 1\n# text = Don't go\n1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_\n\
1\tDo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_\n2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_\n\
2.1\tgone\tgo\tVERB\tVBN\t_\t_\t_\t3:x\t_\n3\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_\n\n\
1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_\n";
const GLOVE: &str = "the 0.418 0.24968 -0.41242\n, 0.013441 0.23682 -0.16899\n\
. 0.15164 0.30177 -0.16763\nof 0.70853 0.57088 -0.4716\n7 1e-3 -2.5 3\n";
const TOML: &str = "model = \"sc-lstm\"\ntasks = [\"ner\", \"chunk\", \"pos\"]\nhidden = 300\n\
layers = 3\ndropout = 0.5\nbatch_size = 10\nlr = 0.001\nclip = 5.0\nepochs = 30\npatience = 0\n\
threads = 0\nmax_sentences = 100\nscheme = \"bio\"\n\n[lambda]\nner = 1.0\n\n[lstm_d_layer]\npos = 1\n";

/// Pieces inserted at random places.
const INSERTS: &[&[u8]] = &[
    b"\t",
    b"\n",
    b"\r\n",
    b"\n\n",
    b" ",
    "\u{feff}".as_bytes(),
    b"\xff",
    b"\xc3",
    b"\xe2\x82",
    b"-DOCSTART-",
    b"-X-",
    b"_",
    b"1-2",
    b"3.1",
    b"nan",
    b"1e999",
    b"=",
    b"[",
    b"\"",
    b"B-",
    b"I-",
    b"E-",
    b"S-",
    b"0",
];

/// One random change of `bytes`.
fn mutate_once(rng: &mut impl Rng, bytes: &mut Vec<u8>) {
    let len = bytes.len();
    let at = if len == 0 {
        0
    } else {
        rng.random_range(0..=len)
    };
    match rng.random_range(0..6) {
        0 if len > 0 => {
            let i = rng.random_range(0..len);
            bytes[i] ^= 1 << rng.random_range(0..8);
        }
        1 => bytes.truncate(at),
        2 => {
            let piece = INSERTS[rng.random_range(0..INSERTS.len())];
            bytes.splice(at..at, piece.iter().copied());
        }
        3 if at < len => {
            // Duplicate a field or a line: the bytes up to the next separator.
            let end = bytes[at..]
                .iter()
                .position(|&b| b == b' ' || b == b'\t' || b == b'\n')
                .map_or(len, |p| at + p + 1);
            let piece: Vec<u8> = bytes[at..end].to_vec();
            bytes.splice(at..at, piece);
        }
        4 if at < len => {
            let end = (at + rng.random_range(1..8)).min(len);
            bytes.drain(at..end);
        }
        _ => {
            let i = if len == 0 {
                0
            } else {
                rng.random_range(0..len)
            };
            if let Some(b) = bytes.get_mut(i) {
                *b = rng.random_range(0..=255u8);
            }
        }
    }
}

/// Runs `read` on `CASES` mutations of `seed` written to `path`: it must not panic, and its
/// errors must name `path`.
fn fuzz(name: &str, seed: &str, stream: u64, read: impl Fn(&Path) -> Result<(), String>) {
    let dir = std::env::temp_dir().join(format!("sclstm-mutation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path: PathBuf = dir.join(format!("{name}.txt"));
    let shown = path.display().to_string();
    let mut rng = seeded_rng(14, stream);
    let mut errors = 0;
    for case in 0..CASES {
        let mut bytes = seed.as_bytes().to_vec();
        for _ in 0..rng.random_range(1..=4) {
            mutate_once(&mut rng, &mut bytes);
        }
        std::fs::write(&path, &bytes).expect("write the mutated file");
        let outcome = catch_unwind(AssertUnwindSafe(|| read(&path)));
        match outcome {
            Err(_) => panic!(
                "{name} case {case} panicked on {:?}",
                String::from_utf8_lossy(&bytes)
            ),
            Ok(Err(msg)) => {
                errors += 1;
                assert!(
                    msg.contains(&shown),
                    "{name} case {case}: error does not name the file: {msg}\ninput: {:?}",
                    String::from_utf8_lossy(&bytes)
                );
            }
            Ok(Ok(())) => {}
        }
    }
    assert!(
        errors > CASES / 10,
        "{name}: mutations rarely fail ({errors})"
    );
    let _ = std::fs::remove_file(&path);
}

fn user_file(format: &str, scheme: TagScheme) -> impl Fn(&Path) -> Result<(), String> {
    move |path| {
        let f = DataFile {
            task: "t".into(),
            path: path.to_path_buf(),
            format: format.into(),
        };
        read_user_file(&f, scheme)
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
    }
}

#[test]
fn conll2003_reader_survives_mutations() {
    fuzz(
        "conll2003",
        CONLL2003,
        1,
        user_file("conll2003", TagScheme::Iob2),
    );
}

#[test]
fn conll2000_reader_survives_mutations() {
    fuzz(
        "conll2000",
        CONLL2000,
        2,
        user_file("conll2000", TagScheme::Bioes),
    );
}

#[test]
fn generic_reader_survives_mutations() {
    fuzz("generic", GENERIC, 3, user_file("conll", TagScheme::Iob2));
}

#[test]
fn conllu_reader_survives_mutations() {
    fuzz("conllu", CONLLU, 4, user_file("conllu", TagScheme::Iob2));
}

#[test]
fn glove_reader_survives_mutations() {
    fuzz("glove", GLOVE, 5, |path| {
        Embeddings::load(path, None)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
}

#[test]
fn toml_config_reader_survives_mutations() {
    fuzz("config", TOML, 6, |path| {
        let c = TrainConfig::from_toml_file(path).map_err(|e| format!("{e:#}"))?;
        // Checks between keys come later and may fail on their own; they must not panic.
        let _ = c.validate();
        Ok(())
    });
}
