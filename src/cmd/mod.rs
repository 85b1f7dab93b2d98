//! One module per subcommand.

pub mod eval;
pub mod inspect;
pub mod stats;
pub mod train;
