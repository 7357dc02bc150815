//! Scrubbed files in the stream: a regular file transformed by identity
//! scrub rules, and the other names of an inode the scrub acts on.
//!
//! Part of the tar writer. The policy names the rules ([`Decision::Scrub`]
//! hits); this module reads the file's content when a rule needs it (up to
//! [`EDIT_LIMIT`]), asks [`scrub::decide()`] what the file becomes, and
//! writes that — the source is never touched and removed data never
//! enters the archive. A later name of an inode whose content was left out
//! is left out too; one whose content was edited links to the edited body.
//!
//! [`Decision::Scrub`]: crate::entry::Decision::Scrub

use super::header::{HeaderBuilder, Meta};
use super::xattrs::XSource;
use super::{Ctx, Kind, TarWriter, archive_name, meta_of, write_err};
use crate::entry::{FileKind, SourceEntry, Stat};
use crate::report::error::Error;
use crate::report::{Effect, WarningKind};
use crate::select::scrub::{self, Outcome, Plan};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read as _, Write};
use tar::EntryType;

/// Largest file a line-editing scrub action reads into memory.
const EDIT_LIMIT: u64 = 16 << 20;

impl<W: Write> TarWriter<W> {
    /// Whether this inode's content is scrubbed under another name: one
    /// dropped earlier, or (with `prescanned`) one the prescan found. This
    /// name is then left out too: it holds the same secret.
    pub(super) fn is_dropped_secret(
        &mut self,
        st: &Stat,
        rel: &[u8],
        prescanned: bool,
        ctx: &mut Ctx<'_, '_>,
    ) -> bool {
        let key = (st.dev, st.ino);
        if st.nlink < 2
            || !(self.dropped.contains(&key) || (prescanned && self.scrubbed.contains_key(&key)))
        {
            return false;
        }
        let effect = Effect {
            op: "hardlink".into(),
            action: "drop",
            bytes_removed: st.size,
        };
        ctx.report.scrubbed(rel, std::slice::from_ref(&effect));
        true
    }

    /// Sets the result of [`Plan::prescan`].
    pub fn set_prescanned(&mut self, scrubbed: HashMap<(u64, u64), bool>) {
        self.scrubbed = scrubbed;
    }

    /// Remembers an inode whose content the scrub left out.
    pub fn forbid(&mut self, st: &Stat) {
        if st.nlink > 1 && st.kind != FileKind::Dir {
            self.dropped.insert((st.dev, st.ino));
        }
    }

    /// Appends a regular file transformed by scrub rules `hits` of `plan`.
    pub fn append_scrubbed(
        &mut self,
        e: &SourceEntry,
        hits: &[usize],
        plan: &Plan,
        ctx: &mut Ctx<'_, '_>,
    ) -> Result<Option<Kind>, Error> {
        let name = archive_name(&e.rel, false);
        if self.is_dropped_secret(&e.stat, &e.rel, false, ctx) {
            return Ok(None);
        }
        let Some((file, before, same_inode)) = self.open_checked(e, ctx) else {
            return Ok(None);
        };
        let content = if scrub::needs_content(plan, hits) {
            if before.size > EDIT_LIMIT {
                let msg = format!("too large to edit ({} bytes); left out", before.size);
                ctx.report.warn(&e.rel, WarningKind::Unreadable, msg);
                self.forbid(&before);
                return Ok(None);
            }
            let mut buf = Vec::with_capacity(before.size as usize);
            if let Err(err) = (&file).take(EDIT_LIMIT).read_to_end(&mut buf) {
                self.forbid(&before);
                let why = crate::util::io_reason(&err);
                ctx.report.warn(
                    &e.rel,
                    WarningKind::Unreadable,
                    format!("cannot read: {why}; left out"),
                );
                return Ok(None);
            }
            Some(buf)
        } else {
            None
        };
        let (outcome, effects) = scrub::decide(plan, hits, before.size, content.as_deref());
        ctx.report.scrubbed(&e.rel, &effects);
        let meta = meta_of(&before);
        match outcome {
            Outcome::Drop => {
                self.forbid(&before);
                Ok(None)
            }
            Outcome::Unchanged => match content {
                Some(bytes) => {
                    self.write_bytes(&e.rel, name, &file, &before, same_inode, &bytes, ctx)
                }
                None => self.write_file(e, name, &file, &before, same_inode, ctx),
            },
            Outcome::Content(bytes) => {
                self.write_bytes(&e.rel, name, &file, &before, same_inode, &bytes, ctx)
            }
            Outcome::Symlink(target) => {
                // Other names of the inode would still hold the old content.
                self.forbid(&before);
                let mut b = HeaderBuilder::new(
                    EntryType::Symlink,
                    &name,
                    &Meta {
                        mode: 0o777,
                        ..meta
                    },
                );
                b.set_link(&target);
                self.emit(b, &meta).map_err(write_err)?;
                Ok(Some(Kind::Symlink))
            }
        }
    }

    /// Writes a regular file whose body is `bytes` (a scrubbed version):
    /// metadata and xattrs from the open file.
    #[allow(clippy::too_many_arguments)]
    fn write_bytes(
        &mut self,
        rel: &[u8],
        name: Vec<u8>,
        file: &File,
        before: &Stat,
        same_inode: bool,
        bytes: &[u8],
        ctx: &mut Ctx<'_, '_>,
    ) -> Result<Option<Kind>, Error> {
        let meta = meta_of(before);
        let mut b = HeaderBuilder::new(EntryType::Regular, &name, &meta);
        b.set_size(bytes.len() as u64);
        self.add_xattrs(&mut b, XSource::Fd(file), rel, ctx);
        self.emit(b, &meta).map_err(write_err)?;
        self.begin_body();
        self.put(bytes).map_err(write_err)?;
        self.end_body();
        self.pad(bytes.len() as u64).map_err(write_err)?;
        ctx.report.stats.content_bytes += before.size;
        ctx.ui.add_bytes(before.size);
        // Later names of this inode link to the scrubbed body.
        if same_inode {
            self.register_link(before, name);
        }
        Ok(Some(Kind::File { sparse: false }))
    }
}
