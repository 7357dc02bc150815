//! Man pages, generated from the clap definition with `clap_mangen`.
//!
//! Beside the pipeline: `goldcap man --output-dir man` writes `goldcap.1`
//! and one `goldcap-<command>.1` per visible subcommand; a test checks the
//! committed pages in `man/` match the code. Must never hand-edit output.

use crate::cli::args::Cli;
use crate::cli::docs::{self, Page};
use anyhow::Context as _;
use clap::CommandFactory;
use roff::{Roff, bold, roman};
use std::path::Path;

/// Every page: (file name, roff bytes).
pub fn pages() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    // No `help` subcommand: it has no page of its own to point to.
    let cmd = Cli::command().disable_help_subcommand(true);
    let mut out = vec![("goldcap.1".to_owned(), render(cmd.clone(), "")?)];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("goldcap-{}", sub.get_name());
        let page = sub
            .clone()
            .name(name.clone())
            .bin_name(format!("goldcap {}", sub.get_name()));
        out.push((format!("{name}.1"), render(page, sub.get_name())?));
    }
    Ok(out)
}

/// One page: clap's NAME, SYNOPSIS, DESCRIPTION, OPTIONS (and
/// SUBCOMMANDS), then the sections of `docs` for `command`, then VERSION.
fn render(cmd: clap::Command, command: &str) -> anyhow::Result<Vec<u8>> {
    let has_subcommands = cmd.get_subcommands().any(|s| !s.is_hide_set());
    let has_version = cmd.get_version().is_some();
    let man = clap_mangen::Man::new(cmd);
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    man.render_options_section(&mut buf)?;
    if has_subcommands {
        man.render_subcommands_section(&mut buf)?;
    }
    if let Some(page) = docs::page(command) {
        sections(page).to_writer(&mut buf)?;
    }
    if has_version {
        man.render_version_section(&mut buf)?;
    }
    Ok(buf)
}

/// EXAMPLES, ENVIRONMENT, EXIT STATUS, FILES and SEE ALSO.
fn sections(page: &Page) -> Roff {
    let mut r = Roff::new();
    let list = |r: &mut Roff, title: &str, items: &[(&str, &str)]| {
        if items.is_empty() {
            return;
        }
        r.control("SH", [title]);
        for (term, text) in items {
            r.control("TP", []);
            r.text([bold(*term)]);
            r.text([roman(*text)]);
        }
    };
    if !page.examples.is_empty() {
        r.control("SH", ["EXAMPLES"]);
        for (what, line) in page.examples {
            r.control("PP", []);
            r.text([roman(*what)]);
            r.control("RS", ["4"]);
            r.control("nf", []);
            r.text([bold(*line)]);
            r.control("fi", []);
            r.control("RE", []);
        }
    }
    list(&mut r, "ENVIRONMENT", &docs::environment(page));
    list(&mut r, "EXIT STATUS", page.exit);
    list(&mut r, "FILES", page.files);
    if !page.see_also.is_empty() {
        r.control("SH", ["SEE ALSO"]);
        let mut inl = Vec::new();
        for (i, s) in page.see_also.iter().enumerate() {
            let (name, sect) = s.split_once('(').unwrap_or((s, ""));
            if i > 0 {
                inl.push(roman(", "));
            }
            inl.push(bold(name));
            inl.push(roman(format!("({sect}")));
        }
        r.text(inl);
    }
    r
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
