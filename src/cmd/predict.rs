//! `sclstm predict`: tag text for every task of a run with one model and one pass.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use sclstm_core::Backend;
use sclstm_data::conlleval::escape_word;
use sclstm_data::scheme::TagScheme;

use crate::backend::{BackendJob, with_backend};
use sclstm_train::config::{BackendKind, Dtype, Precision};
use sclstm_train::runmodel::RunModel;
use sclstm_train::{contextual, tag_sentences, tag_sentences_scored};

/// Arguments of `sclstm predict`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run directory written by `sclstm train`.
    #[arg(long)]
    pub run: PathBuf,
    /// Input file, or `-` for standard input.
    #[arg(long, default_value = "-")]
    pub input: String,
    /// Input format: `auto` (from the input itself: a CoNLL-U file, a column file with a
    /// token per line, or else raw text), `conll` (word in the first column, blank line
    /// between sentences), `conllu` (FORM column) or `text` (raw text, tokenized).
    #[arg(long, default_value = "auto", value_parser = ["auto", "conll", "conllu", "text"])]
    pub format: String,
    /// Output: `conll` (a token per line: word, then one tag column per task) or `json`
    /// (one object per sentence: tokens, and per task the tags, each tag's probability —
    /// the softmax probability, or the CRF marginal for a CRF head — and the chunk spans).
    #[arg(long, default_value = "conll", value_parser = ["conll", "json"])]
    pub output: String,
    /// Only these tasks, in this order (default: every task of the run).
    #[arg(long, value_delimiter = ',')]
    pub tasks: Vec<String>,
    /// Checkpoint to load: `best` or `last`.
    #[arg(long, default_value = "best")]
    pub checkpoint: String,
    /// Compute backend.
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendKind,
    /// Worker threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Precision of the recurrent layers' weight products: `f32`, `bf16` (about twice the
    /// product speed on a CPU with AVX512_BF16) or `int8` (weights and layer inputs
    /// quantized: on a CPU with AVX512_VNNI about twice bf16's product speed, with
    /// AVX-VNNI about 2.5× AVX2's, with AVX2 alone about 1.5× f32's, the same results on
    /// all); the packed ones are refused on other CPUs and on wgpu.
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: Precision,
}

/// Sentences (as words) of a CoNLL-style column file: first column, `-DOCSTART-` skipped.
pub fn read_conll_words(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        match line.split_whitespace().next() {
            None => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            Some("-DOCSTART-") => {}
            Some(w) => cur.push(w.to_string()),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// What `--format auto` reads `text` as: `conllu` when its token lines have CoNLL-U's 10
/// tab-separated fields, `conll` when some sentence spans several lines that all have the
/// same number of columns (a token per line), otherwise `text` (raw text: a sentence or a
/// paragraph per line), so that space-separated text is never cut to its first word.
pub fn detect_format(text: &str) -> &'static str {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty() && !l.starts_with("-DOCSTART-"))
        .collect();
    let tokens: Vec<&&str> = lines.iter().filter(|l| !l.starts_with('#')).collect();
    if !tokens.is_empty() && tokens.iter().all(|l| l.split('\t').count() == 10) {
        return "conllu";
    }
    let widths: std::collections::BTreeSet<usize> =
        lines.iter().map(|l| l.split_whitespace().count()).collect();
    let mut block = 0;
    let mut longest = 0;
    for line in text.lines() {
        if line.trim().is_empty() {
            block = 0;
        } else {
            block += 1;
            longest = longest.max(block);
        }
    }
    if widths.len() == 1 && longest > 1 {
        "conll"
    } else {
        "text"
    }
}

/// Sentences of a CoNLL-U file (FORM column; comments, ranges and empty nodes skipped).
pub fn read_conllu_words(text: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let mut out = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != 10 {
            bail!(
                "line {}: a CoNLL-U line has 10 tab-separated fields, found {}",
                i + 1,
                fields.len()
            );
        }
        if fields[0].contains(['-', '.']) {
            continue;
        }
        cur.push(fields[1].to_string());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

struct PredictJob<'a> {
    args: &'a Args,
    sentences: Vec<Vec<String>>,
}

impl BackendJob for PredictJob<'_> {
    type Output = ();
    fn run<B: Backend + 'static>(self, b: std::sync::Arc<B>) -> anyhow::Result<()> {
        let mut rm = RunModel::load(&self.args.run, &self.args.checkpoint, b, self.args.threads)?;
        self.args.precision.apply(&mut rm.tagger, "--precision")?;
        let encoded: Vec<_> = self.sentences.iter().map(|s| rm.encode_words(s)).collect();
        let words: Vec<Vec<&str>> = self
            .sentences
            .iter()
            .map(|s| s.iter().map(String::as_str).collect())
            .collect();
        let features = contextual::for_sentences(&rm.config, "input", &words, &mut |line| {
            eprintln!("{line}")
        })?;
        let known: Vec<&str> = rm.vocab.tasks.iter().map(|t| t.name.as_str()).collect();
        let tasks: Vec<usize> = if self.args.tasks.is_empty() {
            (0..known.len()).collect()
        } else {
            self.args
                .tasks
                .iter()
                .map(|t| {
                    known.iter().position(|k| k == t).with_context(|| {
                        format!("--tasks: the run has no task `{t}` (it has {known:?})")
                    })
                })
                .collect::<anyhow::Result<_>>()?
        };
        // JSON carries each token's probability of its tag; the columns need only the tags.
        // [task][sentence][token]
        type PerToken<T> = Vec<Vec<Vec<T>>>;
        let (tags, probs): (PerToken<u32>, Option<PerToken<f64>>) = if self.args.output == "json" {
            let scored = tag_sentences_scored(&rm.tagger, &tasks, &encoded, features.as_ref())?;
            let tags = scored
                .iter()
                .map(|t| t.iter().map(|(tags, _)| tags.clone()).collect())
                .collect();
            let probs = scored
                .into_iter()
                .map(|t| t.into_iter().map(|(_, p)| p).collect())
                .collect();
            (tags, Some(probs))
        } else {
            (
                tag_sentences(&rm.tagger, &tasks, &encoded, features.as_ref())?,
                None,
            )
        };
        // tags[j][s][i]: task tasks[j], sentence s, token i, as tag names.
        let named: Vec<Vec<Vec<&str>>> = tags
            .iter()
            .zip(&tasks)
            .map(|(per_task, &k)| {
                per_task
                    .iter()
                    .map(|ids| {
                        ids.iter()
                            .map(|&id| rm.vocab.tasks[k].tags[id as usize].as_str())
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let stdout = std::io::stdout();
        let mut w = std::io::BufWriter::new(stdout.lock());
        if self.args.output == "json" {
            for (s, words) in self.sentences.iter().enumerate() {
                let mut tag_map = serde_json::Map::new();
                let mut span_map = serde_json::Map::new();
                let mut prob_map = serde_json::Map::new();
                for (j, &k) in tasks.iter().enumerate() {
                    let task = &rm.vocab.tasks[k];
                    tag_map.insert(task.name.clone(), serde_json::json!(named[j][s]));
                    if let Some(p) = &probs {
                        let rounded: Vec<f64> =
                            p[j][s].iter().map(|x| (x * 1e4).round() / 1e4).collect();
                        prob_map.insert(task.name.clone(), serde_json::json!(rounded));
                    }
                    let scheme = task
                        .scheme
                        .as_deref()
                        .and_then(|x| x.parse::<TagScheme>().ok());
                    if let Some(scheme) = scheme {
                        let spans = scheme.spans(&named[j][s]).unwrap_or_default();
                        let spans: Vec<serde_json::Value> = spans
                            .iter()
                            .map(|sp| {
                                serde_json::json!({
                                    "start": sp.start,
                                    "end": sp.end,
                                    "type": sp.label,
                                    "text": words[sp.start..sp.end].join(" "),
                                })
                            })
                            .collect();
                        span_map.insert(task.name.clone(), serde_json::Value::Array(spans));
                    }
                }
                let line = serde_json::json!({
                    "tokens": words,
                    "tags": tag_map,
                    "probabilities": prob_map,
                    "spans": span_map,
                });
                writeln!(w, "{line}")?;
            }
        } else {
            let names: Vec<&str> = tasks.iter().map(|&k| known[k]).collect();
            eprintln!("columns: word {}", names.join(" "));
            for (s, words) in self.sentences.iter().enumerate() {
                for (i, word) in words.iter().enumerate() {
                    write!(w, "{}", escape_word(word))?;
                    for per_task in &named {
                        write!(w, "\t{}", per_task[s][i])?;
                    }
                    writeln!(w)?;
                }
                writeln!(w)?;
            }
        }
        w.flush()?;
        Ok(())
    }
}

/// Runs `sclstm predict`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut text = String::new();
    if args.input == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
    } else {
        let path = PathBuf::from(&args.input);
        text = sclstm_data::text::read_text(&path)?;
    }
    let text = sclstm_data::text::strip_bom(&text);
    let format = match args.format.as_str() {
        "auto" => {
            let f = detect_format(text);
            eprintln!("input read as `{f}` (--format auto; give --format to choose)");
            f
        }
        f => f,
    };
    let sentences = match format {
        "conllu" => read_conllu_words(text).with_context(|| {
            let name = if args.input == "-" {
                "standard input"
            } else {
                args.input.as_str()
            };
            format!("reading {name} as CoNLL-U")
        })?,
        "text" => sclstm_data::tokenize::tokenize(text),
        _ => read_conll_words(text),
    };
    if sentences.is_empty() {
        bail!("{}: no sentence to tag", args.input);
    }
    with_backend(
        args.backend,
        Dtype::F32,
        args.threads,
        PredictJob {
            args: &args,
            sentences,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_format_tells_column_files_from_raw_text() {
        assert_eq!(
            detect_format("Barack Obama met Angela Merkel in Berlin .\n"),
            "text"
        );
        assert_eq!(
            detect_format("EU rejects German call .\nPeter Blackburn\n\nBrussels 1996-08-22\n"),
            "text"
        );
        assert_eq!(
            detect_format("EU NNP\nrejects VBZ\n\nGerman JJ\ncall NN\n"),
            "conll"
        );
        assert_eq!(
            detect_format("-DOCSTART- -X- O O\n\nEU\nrejects\n"),
            "conll"
        );
        let conllu = "# text = Hi\n1\tHi\thi\tINTJ\t_\t_\t0\troot\t_\t_\n\n";
        assert_eq!(detect_format(conllu), "conllu");
    }

    #[test]
    fn conll_words_skip_docstart_and_split_on_blank_lines() {
        let s = read_conll_words("-DOCSTART- -X- O O\n\nEU NNP\nrejects VBZ\r\n\n\nGerman\n");
        assert_eq!(s, vec![vec!["EU", "rejects"], vec!["German"]]);
    }

    #[test]
    fn conllu_words_skip_comments_ranges_and_empty_nodes() {
        let line = |id: &str, w: &str| format!("{id}\t{w}\t_\tX\t_\t_\t_\t_\t_\t_\n");
        let text = format!(
            "# c\n{}{}{}{}\n",
            line("1-2", "dont"),
            line("1", "do"),
            line("1.1", "x"),
            line("2", "n't")
        );
        assert_eq!(read_conllu_words(&text).unwrap(), vec![vec!["do", "n't"]]);
        assert!(read_conllu_words("1\tonly\n").is_err());
        assert!(
            read_conllu_words("# c\n1\tonly\n")
                .unwrap_err()
                .to_string()
                .starts_with("line 2:")
        );
    }
}
