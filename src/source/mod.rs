//! Source: the root being captured, read and never written.

pub mod facts;
pub mod fsx;
pub mod mounts;
pub mod prefetch;
pub mod rootfs;
pub mod walk;
