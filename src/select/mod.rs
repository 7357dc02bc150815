//! Select: what goes into the image, and in what form.
//!
//! The second stage, asked by the walk about every entry. The [`policy`]
//! keeps, prunes or drops entries (excludes, sockets, mounts, volatile
//! directories, goldcap's own output) and hands files the identity
//! [`scrub`] acts on to the tar writer with the rules that match. Pure
//! decisions, table-tested; the only I/O is reading a root's small
//! configuration files while a scrub plan is made.

pub mod policy;
pub mod scrub;
