//! Select: what goes into the image, and in what form.

pub mod policy;
pub mod scrub;
