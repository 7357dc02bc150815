//! `goldcap token`: ask a DRP endpoint for a token that can upload given
//! files and nothing else.
//!
//! After the pipeline, beside upload. The token is this command's only
//! output, on stdout, for `RS_TOKEN=$(goldcap token …)`; it must never go
//! anywhere else.

use super::{print_json, print_text};
use crate::cli::config::TokenConfig;
use crate::report::error::Result;
use crate::report::exit::ExitCode;
use crate::signals::Cancel;
use crate::upload::drp;
use anyhow::Context as _;

/// Runs `goldcap token`.
pub(super) fn run(cfg: &TokenConfig) -> Result<ExitCode> {
    let cancel = Cancel::install().context("cannot install signal handlers")?;
    let client = drp::Client::new(cfg.endpoint.as_deref(), &cfg.opts)?;
    let token = client.token(&cfg.user, cfg.ttl, &cfg.paths, &cancel)?;
    if cfg.json {
        print_json(&serde_json::json!({
            "token": token,
            "user": cfg.user,
            "ttl": cfg.ttl,
            "paths": cfg.paths,
        }))?;
    } else {
        print_text(&format!("{token}\n"))?;
    }
    Ok(ExitCode::Success)
}
