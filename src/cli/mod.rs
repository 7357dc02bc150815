//! The command line: clap definitions, and the validated configuration
//! each command runs with.

pub mod args;
pub mod config;
pub mod man;

pub use args::Cli;
