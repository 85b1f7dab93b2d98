//! One module per subcommand.

pub mod eval;
pub mod stats;
pub mod train;
