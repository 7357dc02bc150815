//! A quick count of the content bytes a capture will read: the progress
//! bar's total and ETA when the filesystem's usage cannot give one (a
//! chroot directory), or gave too much (a live `/` whose `/tmp` holds
//! gigabytes that are never archived).
//!
//! Part of the source stage, beside the walk, on a thread of its own while
//! the capture runs. It asks the same [`Decide`] as the walk, so what the
//! capture leaves out (volatile directories, excludes, the output
//! directory) is not counted; it stays on the root's filesystem (mounts
//! the walk crosses, such as `/boot`, are small and not counted). It only
//! stats: it must never open a file, never follow a symlink (directories
//! are opened through their parent's descriptor, `O_NOFOLLOW`), and stop
//! as soon as it is told to.

use crate::entry::{Candidate, Decide, Decision, FileKind};
use crate::source::fsx;
use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Content bytes below `root` that the walk would read (regular files,
/// each hard-linked inode once, holes not counted); `None` when stopped or
/// the root cannot be opened.
pub fn content_bytes(root: &Path, decide: &(dyn Decide + Sync), stop: &AtomicBool) -> Option<u64> {
    let top = fsx::open_root(root).ok()?;
    let dev = fsx::fstat(&top).ok()?.dev;
    let mut total = 0u64;
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut stack: Vec<(OwnedFd, Vec<u8>)> = vec![(top, Vec::new())];
    while let Some((dir, rel)) = stack.pop() {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        let Ok(names) = fsx::list_dir(dir.as_fd()) else {
            continue;
        };
        for name in names {
            let Ok(st) = fsx::stat_at(dir.as_fd(), &name) else {
                continue;
            };
            let mut child = rel.clone();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(name.to_bytes());
            let decision = decide.decide(&Candidate {
                rel: &child,
                kind: st.kind,
                mount: None,
                in_output_dir: false,
            });
            if matches!(decision, Decision::Drop(_)) {
                continue;
            }
            if st.is_dir() {
                let inside = decision == Decision::Keep && st.dev == dev;
                if let Some(fd) = inside
                    .then(|| fsx::open_dir_at(dir.as_fd(), &name).ok())
                    .flatten()
                {
                    stack.push((fd, child));
                }
            } else if st.kind == FileKind::File && (st.nlink < 2 || seen.insert((st.dev, st.ino))) {
                total += st.size.min(st.blocks * 512);
            }
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Reason;

    /// Leaves out `tmp/*` content and anything named `skip`.
    struct Rules;
    impl Decide for Rules {
        fn decide(&self, c: &Candidate<'_>) -> Decision {
            match c.rel {
                b"tmp" => Decision::KeepDirOnly(Reason::Volatile),
                r if r.ends_with(b"skip") => Decision::Drop(Reason::Socket),
                _ => Decision::Keep,
            }
        }
    }

    #[test]
    fn counts_what_the_walk_would_read_once() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("etc/deep")).unwrap();
        std::fs::create_dir_all(r.join("tmp")).unwrap();
        std::fs::write(r.join("etc/a"), vec![1u8; 10_000]).unwrap();
        std::fs::write(r.join("etc/deep/b"), vec![2u8; 5_000]).unwrap();
        std::fs::hard_link(r.join("etc/a"), r.join("etc/a-link")).unwrap();
        std::fs::write(r.join("tmp/huge"), vec![3u8; 1 << 20]).unwrap();
        std::fs::write(r.join("etc/skip"), vec![4u8; 7_000]).unwrap();
        std::os::unix::fs::symlink("/usr", r.join("usr")).unwrap();
        // Sparse: only what is allocated counts.
        let f = std::fs::File::create(r.join("etc/sparse")).unwrap();
        f.set_len(100 << 20).unwrap();
        let stop = AtomicBool::new(false);
        assert_eq!(content_bytes(r, &Rules, &stop), Some(15_000));
        stop.store(true, Ordering::Relaxed);
        assert_eq!(content_bytes(r, &Rules, &stop), None);
    }
}
