//! Output: the compressed, hashed artifact, its MANIFEST and their names.

pub mod atomic;
pub mod compress;
pub mod digest;
pub mod manifest;
pub mod naming;
pub mod tee;
