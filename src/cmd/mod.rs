//! One module per subcommand.

pub mod bench;
pub mod eval;
pub mod gradcheck;
pub mod inspect;
pub mod plot;
pub mod predict;
pub mod report;
pub mod score;
pub mod stats;
pub mod sweep;
pub mod train;
