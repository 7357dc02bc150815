//! goldcap turns a Linux system into a deployable gold image.

pub mod cli;
pub mod cmd;

mod archive;
mod entry;
mod output;
mod report;
mod select;
mod signals;
mod source;
mod testhook;
mod upload;
mod util;
