//! `sclstm`: train and run multi-task sequence taggers (NER, chunking, POS) with SC-LSTM cells.

mod alloc;
mod backend;
mod cmd;
mod timed;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sclstm_train::TrainError;

/// Command-line interface of sclstm.
#[derive(Debug, Parser)]
#[command(name = "sclstm", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a tagger (default: the paper's SC-LSTM on NER + chunking + POS).
    Train(Box<cmd::train::Args>),
    /// Measure training and inference throughput of the paper configuration on synthetic batches.
    Bench(cmd::bench::Args),
    /// Score a trained run on a split or a file (conlleval report, POS accuracy).
    Eval(cmd::eval::Args),
    /// Check every op and fused layer against central finite differences in f64.
    Gradcheck(cmd::gradcheck::Args),
    /// Dump one batch's activations, losses and gradients of a trained run as safetensors.
    Inspect(cmd::inspect::Args),
    /// Tag text for every task of a trained run in one pass.
    Predict(cmd::predict::Args),
    /// Draw figures of training runs (SVG, PNG, PDF): dev scores, training loss, gradients.
    Plot(cmd::plot::Args),
    /// Expand an experiment plan into runs: status, GNU parallel / Slurm job lists, or run here.
    Sweep(cmd::sweep::Args),
    /// Tabulate runs against the paper: mean ± sd over seeds, t-tests, gradient conflicts, figures.
    Report(cmd::report::Args),
    /// Score a prediction file in conlleval's input format (conlleval's options -d, -o, -r).
    Score(cmd::score::Args),
    /// Print sentence, token, tag and chunk counts and embedding coverage of the shipped data.
    Stats(cmd::stats::Args),
}

/// Restores the default action of `SIGPIPE` (Rust ignores it), so that a closed standard output
/// (`sclstm eval … | head`) ends the process quietly, as it ends other Unix tools, instead of
/// turning every later `println!` into a panic.
fn die_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called once at start-up, before any other thread exists; SIG_DFL is always a
    // valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    die_quietly_on_closed_pipe();
    alloc::keep_freed_blocks();
    let cli = Cli::parse();
    let done = match cli.command {
        Command::Train(args) => cmd::train::run(*args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::Gradcheck(args) => cmd::gradcheck::run(args),
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::Predict(args) => cmd::predict::run(args),
        Command::Plot(args) => cmd::plot::run(args),
        Command::Score(args) => cmd::score::run(args),
        Command::Stats(args) => cmd::stats::run(args),
        Command::Sweep(args) => cmd::sweep::run(args),
        Command::Report(args) => cmd::report::run(args),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit_with(&e),
    }
}

/// Prints a failed command's error and its causes, one per line, and picks the exit status:
/// 130 (the shell's status for SIGINT) for training stopped by Ctrl-C, whose message the
/// trainer already printed and logged, and 1 for everything else.
fn exit_with(e: &anyhow::Error) -> ExitCode {
    if let Some(TrainError::Interrupted { .. }) = e.downcast_ref::<TrainError>() {
        return ExitCode::from(130);
    }
    eprintln!("error: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    ExitCode::FAILURE
}
