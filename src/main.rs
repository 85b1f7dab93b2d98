//! `sclstm`: train and run multi-task sequence taggers (NER, chunking, POS) with SC-LSTM cells.

mod cmd;

use clap::{Parser, Subcommand};

/// Command-line interface of sclstm.
#[derive(Debug, Parser)]
#[command(name = "sclstm", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print sentence, token, tag and chunk counts and embedding coverage of the shipped data.
    Stats(cmd::stats::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Stats(args) => cmd::stats::run(args),
    }
}
