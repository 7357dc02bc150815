//! Prepare: what the user adds before and into a capture — hooks run in
//! the root before it is read.
//!
//! The step before the first stage. It may change the root only by running
//! the user's own hooks there (a gold build's finishing work, asked for by
//! name); it never reads or writes the root otherwise, and imports only the
//! shared modules.

pub mod firstboot;
pub mod hooks;
pub mod inject;
pub mod machine;
