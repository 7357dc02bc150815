//! goldcap's integration tests: one binary (as ripgrep's `tests/tests.rs`),
//! one module per topic. They run the debug binary as a user would, on
//! roots built at test time (root needed: mknod, chown, setcap, mounts),
//! and read the results back with independent tools.

mod common;

mod apply;
mod boot;
mod cli;
mod config;
mod drp_pack;
mod fidelity;
mod gzip_compat;
mod hooks;
mod layout;
mod manifest;
mod mounts;
mod safety;
mod scrub;
mod upload;
mod verify;
mod zstd_compat;
