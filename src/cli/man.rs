//! Man pages, generated from the clap definition with `clap_mangen`.
//!
//! Beside the pipeline: `goldcap man --output-dir man` writes `goldcap.1`
//! and one `goldcap-<command>.1` per visible subcommand; a test checks the
//! committed pages in `man/` match the code. Must never hand-edit output.

use crate::cli::args::Cli;
use anyhow::Context as _;
use clap::CommandFactory;
use std::path::Path;

/// Every page: (file name, roff bytes).
pub fn pages() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let cmd = Cli::command();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    out.push(("goldcap.1".to_owned(), buf));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("goldcap-{}", sub.get_name());
        let sub = sub
            .clone()
            .name(name.clone())
            .bin_name(format!("goldcap {}", sub.get_name()));
        let mut buf = Vec::new();
        clap_mangen::Man::new(sub).render(&mut buf)?;
        out.push((format!("{name}.1"), buf));
    }
    Ok(out)
}

/// Writes every page into `dir`.
pub fn write_all(dir: &Path) -> crate::report::error::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, bytes) in pages()? {
        let p = dir.join(name);
        std::fs::write(&p, bytes).with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}
