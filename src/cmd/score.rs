//! `sclstm score`: conlleval on an existing prediction file.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use sclstm_data::conlleval::{ConllEval, InputOptions, score_text};
use sclstm_data::scheme::TagScheme;

/// Arguments of `sclstm score`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// File in conlleval's input format (one token per line, `… gold guess`, blank line or
    /// `-X-` line between sentences), plain or gzipped; `-` for standard input.
    pub file: PathBuf,
    /// Column delimiter (conlleval's `-d`; default one space). `\t` stands for a tab.
    #[arg(short = 'd', long, default_value = " ")]
    pub delimiter: String,
    /// Outside tag (conlleval's `-o`); as in conlleval it only matters with `-r`.
    #[arg(short = 'o', long, default_value = "O")]
    pub outside: String,
    /// Raw tags without `B-`/`I-` prefixes: every tagged token is a chunk (conlleval's `-r`).
    #[arg(short = 'r', long)]
    pub raw: bool,
    /// Tag scheme of the file: iob1 and iob2 score the same; bioes is mapped to conlleval's tags.
    #[arg(long, default_value = "iob2")]
    pub scheme: TagScheme,
    /// Print the counts and scores as JSON instead of the conlleval report.
    #[arg(long)]
    pub json: bool,
}

/// The scores of one file as JSON: overall counts and P/R/F1, and the same per chunk type.
fn to_json(eval: &ConllEval) -> serde_json::Value {
    let c = eval.counts();
    let types: serde_json::Map<String, serde_json::Value> = eval
        .type_counts()
        .into_iter()
        .map(|(name, t)| {
            let prf = t.prf();
            let v = serde_json::json!({
                "gold": t.gold, "found": t.found, "correct": t.correct,
                "precision": prf.precision, "recall": prf.recall, "f1": prf.f1,
            });
            (name, v)
        })
        .collect();
    let prf = c.prf();
    serde_json::json!({
        "tokens": eval.tokens,
        "correct_tags": eval.correct_tags,
        "accuracy": eval.accuracy(),
        "gold": c.gold,
        "found": c.found,
        "correct": c.correct,
        "precision": prf.precision,
        "recall": prf.recall,
        "f1": prf.f1,
        "types": types,
    })
}

/// Runs `sclstm score`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let delimiter = args.delimiter.replace("\\t", "\t");
    if delimiter.is_empty() {
        bail!("-d/--delimiter must not be empty");
    }
    let text = if args.file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        text
    } else {
        sclstm_data::text::read_text(&args.file)?
    };
    let options = InputOptions {
        delimiter,
        outside: args.outside,
        raw: args.raw,
        scheme: args.scheme,
    };
    let eval =
        score_text(&text, &options).map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&to_json(&eval))?)?;
    } else {
        write!(out, "{}", eval.report())?;
    }
    Ok(())
}
