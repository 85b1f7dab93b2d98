//! conlleval reimplementation: a hand-computed report compared byte for byte, chunk rules, IOB1 = IOB2,
//! BIOES mapping, CRLF input, a property test against span-set intersection, and seqeval's scores
//! of nasty IOB tag files.

use sclstm_data::batch::seeded_rng;
use sclstm_data::conlleval::{Accuracy, ConllEval, ScoreError, TypeCounts, report_from_text};
use sclstm_data::scheme::{Span, TagScheme, bioes_to_conlleval};

const EDGE: &str = include_str!("fixtures/conlleval/edge_cases.txt");
const EDGE_REPORT: &str = include_str!("fixtures/conlleval/edge_cases.expected");

#[test]
fn edge_case_report_is_byte_identical() -> Result<(), ScoreError> {
    assert_eq!(report_from_text(EDGE)?, EDGE_REPORT);
    Ok(())
}

#[test]
fn crlf_input_scores_like_lf() -> Result<(), ScoreError> {
    assert_eq!(report_from_text(&EDGE.replace('\n', "\r\n"))?, EDGE_REPORT);
    Ok(())
}

#[test]
fn boundary_marker_lines_split_sentences() -> Result<(), ScoreError> {
    // Without the boundary the two NP tokens would form one chunk.
    let with = report_from_text("a B-NP B-NP\n-X- -X- -X-\nb I-NP I-NP\n")?;
    assert!(
        with.starts_with("processed 2 tokens with 2 phrases; found: 2 phrases; correct: 2.\n"),
        "{with}"
    );
    let without = report_from_text("a B-NP B-NP\nb I-NP I-NP\n")?;
    assert!(
        without.starts_with("processed 2 tokens with 1 phrases; found: 1 phrases; correct: 1.\n")
    );
    Ok(())
}

#[test]
fn sentence_api_matches_text_api() -> Result<(), ScoreError> {
    let mut eval = ConllEval::new();
    let mut gold = Vec::new();
    let mut pred = Vec::new();
    let mut sentence = 0;
    for line in EDGE.lines().chain(std::iter::once("")) {
        if line.is_empty() {
            if !gold.is_empty() {
                eval.add_sentence(sentence, &gold, &pred)?;
                sentence += 1;
            }
            gold.clear();
            pred.clear();
        } else {
            let f: Vec<&str> = line.split(' ').collect();
            gold.push(f[1].to_string());
            pred.push(f[2].to_string());
        }
    }
    assert_eq!(eval.report(), EDGE_REPORT);
    let c = eval.counts();
    assert_eq!(
        (c.gold, c.found, c.correct, eval.tokens, eval.correct_tags),
        (7, 6, 2, 18, 10)
    );
    assert!((eval.overall().f1 - 400.0 / 13.0).abs() < 1e-12);
    assert_eq!(eval.type_counts()["NP"].correct, 1);
    Ok(())
}

#[test]
fn empty_input_prints_only_the_first_line() -> Result<(), ScoreError> {
    assert_eq!(
        report_from_text("")?,
        "processed 0 tokens with 0 phrases; found: 0 phrases; correct: 0.\n"
    );
    Ok(())
}

#[test]
fn all_o_predictions_score_zero() -> Result<(), ScoreError> {
    let mut eval = ConllEval::new();
    eval.add_sentence(0, &["B-PER", "I-PER", "O"], &["O", "O", "O"])?;
    let want = concat!(
        "processed 3 tokens with 1 phrases; found: 0 phrases; correct: 0.\n",
        "accuracy:  33.33%; precision:   0.00%; recall:   0.00%; FB1:   0.00\n",
        "              PER: precision:   0.00%; recall:   0.00%; FB1:   0.00  0\n",
    );
    assert_eq!(eval.report(), want);
    Ok(())
}

#[test]
fn field_count_and_length_errors() {
    assert_eq!(
        report_from_text("a B-NP B-NP\nb I-NP\n"),
        Err(ScoreError::FieldCount {
            line: 2,
            expected: 3,
            found: 2
        })
    );
    assert_eq!(
        report_from_text("a\n"),
        Err(ScoreError::TooFewFields { line: 1 })
    );
    let mut eval = ConllEval::new();
    assert_eq!(
        eval.add_sentence(4, &["O"], &["O", "O"]),
        Err(ScoreError::LengthMismatch {
            sentence: 4,
            gold: 1,
            pred: 2
        })
    );
}

#[test]
fn pos_accuracy() -> Result<(), ScoreError> {
    let mut acc = Accuracy::default();
    acc.add_sentence(0, &["NOUN", "VERB", "DET"], &["NOUN", "NOUN", "DET"])?;
    acc.add_sentence(1, &["X"], &["X"])?;
    assert_eq!((acc.correct, acc.total), (3, 4));
    assert_eq!(acc.percent(), 75.0);
    assert!(acc.add_sentence(2, &["X"], &[] as &[&str]).is_err());
    Ok(())
}

/// Random non-overlapping spans over `len` tokens with types from `types`.
fn random_spans(rng: &mut rand_chacha::ChaCha8Rng, len: usize, types: &[&str]) -> Vec<Span> {
    use rand::Rng;
    let mut spans = Vec::new();
    let mut i = 0;
    while i < len {
        let r = rng.next_u32() as usize;
        if r.is_multiple_of(3) {
            i += 1;
            continue;
        }
        let n = 1 + (r / 3) % 3.min(len - i);
        spans.push(Span {
            start: i,
            end: i + n,
            label: types[(r / 9) % types.len()].to_string(),
        });
        i += n;
    }
    spans
}

#[test]
fn iob1_iob2_and_bioes_score_the_same_as_span_intersection() -> Result<(), ScoreError> {
    let mut rng = seeded_rng(11, 0);
    let types = ["PER", "LOC", "B-X"];
    let (mut e1, mut e2, mut e3) = (ConllEval::new(), ConllEval::new(), ConllEval::new());
    let (mut gold_n, mut pred_n, mut correct_n) = (0, 0, 0);
    for s in 0..400 {
        let len = 1 + s % 9;
        let gold = random_spans(&mut rng, len, &types);
        // Predictions: half copy gold spans, half random, so both matches and misses occur.
        let pred = if s % 2 == 0 {
            gold.clone()
        } else {
            random_spans(&mut rng, len, &types)
        };
        gold_n += gold.len();
        pred_n += pred.len();
        correct_n += pred.iter().filter(|p| gold.contains(p)).count();
        let r = |sch: TagScheme, sp: &[Span]| sch.render(sp, len);
        e1.add_sentence(s, &r(TagScheme::Iob1, &gold), &r(TagScheme::Iob1, &pred))?;
        e2.add_sentence(s, &r(TagScheme::Iob2, &gold), &r(TagScheme::Iob2, &pred))?;
        e3.add_sentence(
            s,
            &bioes_to_conlleval(&r(TagScheme::Bioes, &gold)),
            &bioes_to_conlleval(&r(TagScheme::Bioes, &pred)),
        )?;
    }
    for e in [&e1, &e2, &e3] {
        let c = e.counts();
        assert_eq!((c.gold, c.found, c.correct), (gold_n, pred_n, correct_n));
        assert_eq!(e.type_counts(), e2.type_counts());
    }
    assert!(correct_n > 0 && correct_n < pred_n);
    Ok(())
}

#[test]
fn score_chunks_maps_bioes_and_checks_sentence_counts() -> Result<(), ScoreError> {
    // Two adjacent one-token chunks: conlleval has no rule for `S S`, so unmapped it sees one chunk.
    let gold = vec![vec!["O", "S-LOC", "S-LOC", "B-PER", "E-PER"]];
    let pred = vec![vec!["O", "S-LOC", "S-LOC", "B-PER", "I-PER"]];
    let e = sclstm_data::conlleval::score_chunks(TagScheme::Bioes, &gold, &pred)?;
    let c = e.counts();
    assert_eq!((c.gold, c.found, c.correct), (3, 3, 3));
    let e = sclstm_data::conlleval::score_chunks(TagScheme::Iob2, &gold, &pred)?;
    let c = e.counts();
    assert_eq!(
        (c.gold, c.found, c.correct),
        (2, 2, 2),
        "unmapped, the LOC chunks merge"
    );
    assert_eq!(
        sclstm_data::conlleval::score_chunks(TagScheme::Iob2, &gold, &[] as &[Vec<&str>])
            .unwrap_err(),
        ScoreError::SentenceCount { gold: 1, pred: 0 }
    );
    Ok(())
}

#[test]
fn non_ascii_type_names_are_padded_by_bytes_like_perl() -> Result<(), ScoreError> {
    // `LOCÉ` is 4 characters but 5 bytes: Perl's `%17s` (byte strings) pads it with 12 spaces.
    let report = report_from_text("Paris B-LOCÉ B-LOCÉ\nis O O\n")?;
    let expected = "processed 2 tokens with 1 phrases; found: 1 phrases; correct: 1.\n\
accuracy: 100.00%; precision: 100.00%; recall: 100.00%; FB1: 100.00\n            \
LOCÉ: precision: 100.00%; recall: 100.00%; FB1: 100.00  1\n";
    assert_eq!(report, expected);
    let line = report.lines().nth(2).unwrap_or_default();
    assert_eq!(line.find("LOC"), Some(12), "12 spaces, not 13");
    Ok(())
}

/// Scores of `fixtures/conlleval/seqeval.json`: tag files (IOB1/IOB2 mixes, `I-` after
/// `O`, type changes, `B-` splits, single-token chunks, empty and `O`-only sentences,
/// chunks at sentence boundaries, spurious and missed chunks) scored by seqeval 1.2.2 in
/// its default, conlleval-compatible mode (`benches/reference/oracle_conlleval.py`).
///
/// The conventions agree on every count and score here. They differ elsewhere, so the
/// fixture leaves out: BIOES tags (seqeval reads `S-`/`E-` itself, the script and this
/// scorer only after `bioes_to_conlleval`), tags without a `-` other than `O`, and
/// conlleval's `[`, `]` and `.` chunk markers. seqeval's fractions are compared ×100
/// with this scorer's percentages.
#[test]
fn scores_match_seqeval_on_iob_tag_files() -> Result<(), ScoreError> {
    let fx: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/conlleval/seqeval.json")).expect("JSON");
    let cases = fx["cases"].as_array().expect("cases");
    assert!(cases.len() >= 10, "{} cases", cases.len());
    let num = |v: &serde_json::Value, k: &str| {
        v[k].as_f64()
            .unwrap_or_else(|| panic!("fixture field {k} is missing"))
    };
    let close = |what: String, got: f64, want: f64| {
        assert!(
            (got - want).abs() <= 1e-12 * want.abs().max(1.0),
            "{what}: scorer {got}, seqeval {want}"
        );
    };
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let mut eval = ConllEval::new();
        for (i, pair) in case["sentences"]
            .as_array()
            .expect("sentences")
            .iter()
            .enumerate()
        {
            let tags = |k: usize| -> Vec<String> {
                pair[k]
                    .as_str()
                    .expect("tags")
                    .split_whitespace()
                    .map(String::from)
                    .collect()
            };
            eval.add_sentence(i, &tags(0), &tags(1))?;
        }
        let check = |what: String, counts: TypeCounts, want: &serde_json::Value| {
            let got = (counts.gold, counts.found, counts.correct);
            let expected = ["gold", "found", "correct"].map(|k| num(want, k) as usize);
            assert_eq!(got, expected.into(), "{what}: gold, found, correct");
            let prf = counts.prf();
            close(
                format!("{what} precision"),
                prf.precision,
                100.0 * num(want, "precision"),
            );
            close(
                format!("{what} recall"),
                prf.recall,
                100.0 * num(want, "recall"),
            );
            close(format!("{what} F1"), prf.f1, 100.0 * num(want, "f1"));
        };
        let overall = &case["overall"];
        check(format!("{name} overall"), eval.counts(), overall);
        assert_eq!(
            eval.tokens,
            num(overall, "tokens") as usize,
            "{name} tokens"
        );
        close(
            format!("{name} accuracy"),
            eval.accuracy(),
            100.0 * num(overall, "accuracy"),
        );
        let want_types = case["per_type"].as_object().expect("per_type");
        let got_types = eval.type_counts();
        let names: Vec<&String> = got_types.keys().collect();
        assert_eq!(names, want_types.keys().collect::<Vec<_>>(), "{name} types");
        for (t, counts) in got_types {
            check(format!("{name} {t}"), counts, &want_types[&t]);
        }
    }
    Ok(())
}
