//! Output: the compressed, hashed artifact, its MANIFEST and their names.
//!
//! The stage after the tar writer: [`compress`] turns the tar stream into
//! gzip members or zstd frames in parallel, [`tee`] hashes the compressed
//! bytes ([`digest`]) on their way to the destination — an [`atomic`]
//! temporary file, an upload stream, or both — and [`manifest`] writes the
//! MANIFEST once size and digests are known, under the names [`naming`]
//! resolved. Nothing here may leave a partial file under a final name or
//! read the artifact back.

pub mod atomic;
pub mod compress;
pub mod digest;
pub mod manifest;
pub mod md5;
pub mod naming;
pub mod tee;
