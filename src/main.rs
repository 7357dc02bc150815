//! The `goldcap` binary: parse, run, exit. Everything else is in the library.

fn main() {
    let cli = goldcap::cli::parse();
    goldcap::cmd::run(cli).exit()
}
