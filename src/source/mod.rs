//! Source: the root being captured, read and never written.
//!
//! The first stage. [`walk`] lists the root in archive order, asking the
//! policy (an [`crate::entry::Decide`]) before it opens anything below a
//! directory, with the mount table ([`mounts`]) saying where other
//! filesystems begin; [`prefetch`] keeps the disk busy ahead of the tar
//! writer. Everything is read through descriptors ([`fsx`]) or with the
//! root as `/` ([`rootfs`]), and [`facts`] gathers what the MANIFEST says
//! about the system. Nothing in this stage may write to the root, follow a
//! symlink out of it, or import from a later stage.

pub mod facts;
pub mod fsx;
pub mod mounts;
pub mod precount;
pub mod prefetch;
pub mod rootfs;
pub mod walk;
