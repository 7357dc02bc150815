//! The `goldcap` binary: parse, run, exit. Everything else is in the library.

use clap::Parser;

fn main() {
    let cli = goldcap::cli::Cli::parse();
    goldcap::cmd::run(cli).exit()
}
