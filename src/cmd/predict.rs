//! `sclstm predict`: tag text for every task of a run with one model and one pass.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use sclstm_core::Backend;
use sclstm_data::conlleval::escape_word;

use crate::backend::{BackendJob, with_backend};
use sclstm_train::config::BackendKind;
use sclstm_train::runmodel::RunModel;
use sclstm_train::tag_sentences;

/// Arguments of `sclstm predict`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run directory written by `sclstm train`.
    #[arg(long)]
    pub run: PathBuf,
    /// Input file, or `-` for standard input.
    #[arg(long, default_value = "-")]
    pub input: String,
    /// Input format: `conll` (word in the first column, blank line between sentences),
    /// `conllu` (FORM column) or `text` (raw text, tokenized).
    #[arg(long, default_value = "conll", value_parser = ["conll", "conllu", "text"])]
    pub format: String,
    /// Checkpoint to load: `best` or `last`.
    #[arg(long, default_value = "best")]
    pub checkpoint: String,
    /// Compute backend.
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendKind,
    /// Worker threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
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
    fn run<B: Backend<Elem = f32> + 'static>(self, b: std::sync::Arc<B>) -> anyhow::Result<()> {
        let rm = RunModel::load(&self.args.run, &self.args.checkpoint, b, self.args.threads)?;
        let encoded: Vec<_> = self.sentences.iter().map(|s| rm.encode_words(s)).collect();
        let tasks: Vec<usize> = (0..rm.vocab.tasks.len()).collect();
        let tags = tag_sentences(&rm.tagger, &tasks, &encoded)?;
        let names: Vec<&str> = rm.vocab.tasks.iter().map(|t| t.name.as_str()).collect();
        eprintln!("columns: word {}", names.join(" "));
        let stdout = std::io::stdout();
        let mut w = std::io::BufWriter::new(stdout.lock());
        for (s, words) in self.sentences.iter().enumerate() {
            for (i, word) in words.iter().enumerate() {
                write!(w, "{}", escape_word(word))?;
                for (k, per_sentence) in tags.iter().enumerate() {
                    write!(
                        w,
                        "\t{}",
                        rm.vocab.tasks[k].tags[per_sentence[s][i] as usize]
                    )?;
                }
                writeln!(w)?;
            }
            writeln!(w)?;
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
    let sentences = match args.format.as_str() {
        "conllu" => read_conllu_words(text)?,
        "text" => sclstm_data::tokenize::tokenize(text),
        _ => read_conll_words(text),
    };
    if sentences.is_empty() {
        bail!("{}: no sentence to tag", args.input);
    }
    with_backend(
        args.backend,
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
    }
}
