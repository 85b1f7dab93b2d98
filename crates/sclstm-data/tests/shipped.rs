//! Tests on the shipped corpora: counts from datasets/README.md, checksums, lossless scheme round trips,
//! the dev carve, vocabularies and batches built from real data.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use sclstm_data::DataError;
use sclstm_data::batch::{BatchConfig, encode_sentences, epoch_batches, make_batch};
use sclstm_data::conlleval::ConllEval;
use sclstm_data::scheme::TagScheme;
use sclstm_data::shipped::{
    CHUNK_DEV_SIZE, Task, build_vocabs, load_shipped, load_shipped_glove, read_task_file,
    verify_checksums,
};
use sclstm_data::stats::shipped_stats;
use sclstm_data::vocab::{Coverage, PAD, UNK};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../datasets")
}

#[test]
fn checksums_cover_and_match_every_shipped_file() -> Result<(), DataError> {
    let n = verify_checksums(&root())?;
    assert_eq!(n, 13);
    Ok(())
}

#[test]
fn checksums_skip_fetched_encoders_but_refuse_other_unlisted_files() -> Result<(), DataError> {
    let dir = std::env::temp_dir().join(format!("sclstm-data-sums-{}", std::process::id()));
    let io = |e| DataError::new(&dir, 0, sclstm_data::DataErrorKind::Io(e));
    std::fs::create_dir_all(dir.join("encoders/some-model")).map_err(io)?;
    std::fs::write(dir.join("a.txt"), "a\n").map_err(io)?;
    std::fs::write(dir.join("encoders/some-model/model.safetensors"), "w").map_err(io)?;
    let sums = format!("{}  a.txt\n", sclstm_data::shipped::sha256_hex(b"a\n"));
    std::fs::write(dir.join("SHA256SUMS"), sums).map_err(io)?;
    assert_eq!(verify_checksums(&dir)?, 1);
    std::fs::write(dir.join("b.txt"), "b").map_err(io)?;
    let err = verify_checksums(&dir).unwrap_err();
    assert!(err.to_string().contains("b.txt"), "{err}");
    std::fs::remove_dir_all(&dir).map_err(io)?;
    Ok(())
}

/// (task, split, sentences, tokens, tags, chunks).
type Row<'a> = (&'a str, &'a str, usize, usize, usize, Option<usize>);

#[test]
fn stats_match_the_datasets_readme() -> Result<(), DataError> {
    let stats = shipped_stats(&root())?;
    assert_eq!((stats.glove_words, stats.glove_dim), (37_899, 50));
    let got: Vec<Row> = stats
        .splits
        .iter()
        .map(|s| (s.task, s.split, s.sentences, s.tokens, s.tags, s.chunks))
        .collect();
    let want = vec![
        ("ner", "train", 14_041, 203_621, 8, Some(23_499)),
        ("ner", "dev", 3_250, 51_362, 6, Some(5_942)),
        ("ner", "test", 3_453, 46_435, 8, Some(5_648)),
        ("chunk", "train-full", 8_936, 211_727, 22, Some(106_978)),
        // The carve's counts as `benches/reference/oracle_chunk_carve.py` computes them
        // without the project's code (its own ChaCha8, shuffle and chunk rule).
        ("chunk", "train", 7_936, 187_274, 22, Some(94_633)),
        ("chunk", "dev", 1_000, 24_453, 19, Some(12_345)),
        ("chunk", "test", 2_012, 47_377, 19, Some(23_852)),
        ("pos", "train", 12_543, 204_586, 17, None),
        ("pos", "dev", 2_002, 25_148, 17, None),
        ("pos", "test", 2_077, 25_096, 17, None),
    ];
    assert_eq!(got, want);
    assert_eq!(
        stats.splits[4].chunks.unwrap() + stats.splits[5].chunks.unwrap(),
        106_978
    );
    for s in &stats.splits {
        let cov = s.coverage.tokens.found_percent();
        assert!(
            cov > 97.0 && cov < 100.0,
            "{} {} token coverage {cov}",
            s.task,
            s.split
        );
        assert_eq!(s.coverage.tokens.total(), s.tokens);
    }
    Ok(())
}

#[test]
fn scheme_round_trips_are_lossless_on_all_shipped_files() -> Result<(), DataError> {
    let files = [
        (Task::Ner, "conll2003/train.txt"),
        (Task::Ner, "conll2003/dev.txt"),
        (Task::Ner, "conll2003/test.txt"),
        (Task::Chunk, "conll2000/train.txt"),
        (Task::Chunk, "conll2000/test.txt"),
    ];
    let all = [TagScheme::Iob1, TagScheme::Iob2, TagScheme::Bioes];
    // Tokens whose tag comes back different: only the two non-canonical IOB1 `B-MISC` after `O`.
    let mut changed = Vec::new();
    for (task, file) in files {
        let from = task.file_scheme().expect("chunk-tagged task");
        for s in read_task_file(&root().join(file), task)? {
            let spans = from.spans(&s.tags).expect("shipped tags are valid");
            for to in all {
                let there = from.convert(&s.tags, to).expect("shipped tags are valid");
                assert_eq!(
                    to.spans(&there).unwrap(),
                    spans,
                    "{file}:{} via {to}",
                    s.line
                );
                for via in all {
                    let again = to.convert(&there, via).expect("converted tags are valid");
                    let back = via.convert(&again, from).unwrap();
                    for (i, (a, b)) in back.iter().zip(&s.tags).enumerate() {
                        if a != b && to != from {
                            changed.push((file, s.line + i, b.clone(), a.clone()));
                        }
                    }
                }
            }
        }
    }
    changed.sort();
    changed.dedup();
    let want = [152_428, 175_436].map(|l| {
        (
            "conll2003/train.txt",
            l,
            "B-MISC".to_string(),
            "I-MISC".to_string(),
        )
    });
    assert_eq!(changed, want);
    Ok(())
}

#[test]
fn loaded_tasks_score_the_same_chunks_in_every_scheme() -> Result<(), DataError> {
    let bio = load_shipped(&root(), TagScheme::Iob2)?;
    let bioes = load_shipped(&root(), TagScheme::Bioes)?;
    assert_eq!(bio.iter().map(|t| t.task).collect::<Vec<_>>(), Task::ALL);
    for (a, b) in bio.iter().zip(&bioes).take(2) {
        for (sa, sb) in a.splits().into_iter().zip(b.splits()) {
            let raw = read_task_file(&sa.path, a.task)?;
            let mut eval = ConllEval::new();
            for (i, (x, y)) in sa.sentences.iter().zip(&sb.sentences).enumerate() {
                let mapped = sclstm_data::scheme::bioes_to_conlleval(&y.tags);
                eval.add_sentence(i, &x.tags, &mapped).unwrap();
            }
            assert_eq!(eval.overall().f1, 100.0, "{} {}", a.task.name(), sa.name);
            if a.task != Task::Chunk {
                assert_eq!(raw.len(), sa.sentences.len());
            }
        }
    }
    let ner = &bio[0];
    let tv = ner.tag_vocab();
    assert_eq!(
        tv.tags(),
        [
            "O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-MISC", "I-ORG", "I-PER"
        ]
    );
    assert_eq!(bioes[0].tag_vocab().len(), 17);
    Ok(())
}

#[test]
fn chunk_dev_carve_is_deterministic_and_disjoint() -> Result<(), DataError> {
    let a = load_shipped(&root(), TagScheme::Iob2)?;
    let chunk = &a[1];
    assert_eq!(chunk.dev.sentences.len(), CHUNK_DEV_SIZE);
    assert_eq!(
        chunk.train.sentences.len() + chunk.dev.sentences.len(),
        8_936
    );
    let train_lines: HashSet<usize> = chunk.train.sentences.iter().map(|s| s.line).collect();
    assert!(
        chunk
            .dev
            .sentences
            .iter()
            .all(|s| !train_lines.contains(&s.line))
    );
    assert!(
        chunk
            .dev
            .sentences
            .windows(2)
            .all(|w| w[0].line < w[1].line),
        "dev keeps file order"
    );
    // Pinned: the first carved dev sentences. A change here changes every reported chunking result.
    let first: Vec<usize> = chunk.dev.sentences.iter().take(3).map(|s| s.line).collect();
    assert_eq!(first, PINNED_DEV_LINES);
    let b = load_shipped(&root(), TagScheme::Iob2)?;
    let lines = |t: &sclstm_data::shipped::TaskData| {
        t.dev.sentences.iter().map(|s| s.line).collect::<Vec<_>>()
    };
    assert_eq!(lines(&b[1]), lines(chunk));
    Ok(())
}

const PINNED_DEV_LINES: [usize; 3] = [166, 571, 752];

#[test]
fn vocabularies_and_batches_from_shipped_data() -> Result<(), DataError> {
    let tasks = load_shipped(&root(), TagScheme::Iob2)?;
    let glove = load_shipped_glove(&root())?;
    let vocabs = build_vocabs(&tasks, Some(&glove), false);
    let coverage = Coverage::measure(
        tasks
            .iter()
            .flat_map(|t| t.train.sentences.iter())
            .flat_map(|s| s.words.iter().map(String::as_str)),
        &glove,
    );
    assert!(coverage.to_string().starts_with("embedding coverage: "));
    assert!(
        coverage.types.exact > 0
            && coverage.types.lowercase > 0
            && coverage.types.digits_to_zero > 0
    );
    assert_eq!(
        vocabs.tags.iter().map(|t| t.len()).collect::<Vec<_>>(),
        [9, 23, 17]
    );
    let ner = &tasks[0];
    let enc = encode_sentences(
        &ner.test.path,
        &ner.test.sentences,
        &vocabs.words,
        &vocabs.chars,
        &vocabs.tags[0],
    )?;
    let lens: Vec<usize> = enc.iter().map(|e| e.len()).collect();
    let cfg = BatchConfig {
        batch_size: NonZeroUsize::new(32).unwrap(),
        shuffle: true,
        bucket_pool: 8,
    };
    let batches = epoch_batches(&lens, &cfg, 1, 0);
    let mut seen = 0;
    for ids in &batches {
        let b = make_batch(&enc, ids);
        assert_eq!(
            b.mask.iter().map(|&m| m as usize).sum::<usize>(),
            b.lens.iter().sum::<usize>()
        );
        assert!(
            b.word_ids
                .iter()
                .zip(&b.mask)
                .all(|(&w, &m)| (m == 0) == (w == PAD))
        );
        seen += b.batch_size;
    }
    assert_eq!(seen, ner.test.sentences.len());
    let unknown = enc
        .iter()
        .flat_map(|e| &e.words)
        .filter(|&&w| w == UNK)
        .count();
    assert!(unknown > 0 && unknown < ner.test.tokens() / 10);
    Ok(())
}
