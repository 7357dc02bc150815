//! goldcap turns a Linux system into a deployable gold image.
//!
//! The library is laid out as the data flows. A capture, where every line
//! of data goes:
//!
//! ```text
//!  cli ──▶ cmd::capture (the only place the stages meet)
//!  args    │
//!  config  ▼
//!        prepare: hooks run in the root (chroot, own mount namespace)
//!          │
//!        source ──────────▶ select ─────────▶ archive ─────────▶ output ──────────────▶ upload
//!        walk: lstat,       policy: keep,     tar writer:       compress (gzip/zstd     DRP files API,
//!        sorted, pruned     prune, drop;      ustar + PAX,      blocks in parallel)     S3 multipart,
//!        before opening     scrub plan:       xattrs, ACLs,       → tee: md5 + sha256   presigned PUT
//!        (mounts, fsx,      which rules       hardlinks,          → atomic file and/or  (streamed while
//!        rootfs, facts,     hit which file    sparse, bodies      upload stream         hashed, or the
//!        prefetch)          (pure)            (scrubbed or not)  manifest, naming       finished file)
//!
//!  beside all of them: entry (shared types), report (warnings, ui, escape,
//!  exit codes, errors), signals, testhook, util
//! ```
//!
//! Dependencies point one way: a module imports only from the shared
//! modules on the last line and from stages to its left; `cli` builds each
//! command's configuration from the stages' types, and `cmd` runs it
//! (`tests/layout.rs` enforces this). The other commands reuse the stages:
//! `scrub` walks and plans like a capture but edits the root in place,
//! `verify` reads an artifact back through `output::digest`, `upload` sends
//! a finished capture.
//!
//! Nothing in the library writes to the source root of a capture. Paths are
//! bytes end to end; text output goes through `report::escape`. The binary
//! needs only [`cli::Cli`] and [`cmd::run`].

pub mod cli;
pub mod cmd;

mod archive;
mod entry;
mod input;
mod output;
mod prepare;
mod report;
mod select;
mod signals;
mod source;
mod testhook;
#[cfg(test)]
mod testkit;
mod upload;
mod util;
