//! One module per subcommand.

pub mod stats;
pub mod train;
