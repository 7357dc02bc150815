//! goldcap turns a Linux system into a deployable gold image.
//!
//! The capture pipeline, one module per stage, in data-flow order:
//!
//! ```text
//! cli → config ─┐
//!               ▼
//!   walk → policy → archive (tar writer) → sink: compressor → hash tee → atomic file
//!     │                 │                                                  │
//!   mounts, rootfs    report/ui (warnings, progress)              manifest (MANIFEST .txt/.json)
//! ```
//!
//! * [`walk`] lists the root in sorted order and asks [`policy`] what to
//!   keep (mounts from [`mounts`]);
//! * [`archive`] turns each entry into ustar + PAX blocks (xattrs, ACLs,
//!   sparse, hardlinks);
//! * [`sink`] compresses (blocks in parallel on the [`parblock`] pool: 1 MiB
//!   gzip members via [`pgzip`], 2 MiB zstd frames via [`pzstd`]), hashes the compressed bytes (md5 and sha256 on
//!   their own threads, in the same pass) and writes under a temporary name;
//! * [`manifest`] writes the MANIFEST with [`facts`] about the source;
//! * [`capture`] is the only module that connects them; [`app`] runs
//!   commands and maps outcomes to [`exit`] codes.
//!
//! Nothing in the library writes to the source root. Paths are bytes end to
//! end; text output goes through [`escape`].

pub mod app;
pub mod archive;
pub mod capture;
pub mod cli;
pub mod config;
pub mod error;
pub mod escape;
pub mod exit;
pub mod facts;
pub mod fsx;
pub mod man;
pub mod manifest;
pub mod mounts;
pub mod naming;
pub mod parblock;
pub mod pgzip;
pub mod policy;
pub mod prefetch;
pub mod profile;
pub mod pzstd;
pub mod report;
pub mod rootfs;
pub mod scrub;
pub mod signals;
pub mod sink;
pub mod testhook;
pub mod ui;
pub mod upload;
pub mod util;
pub mod verify;
pub mod walk;
