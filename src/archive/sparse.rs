//! Sparse files: where the data is, and the PAX 1.0 sparse map.
//!
//! Used by the tar writer for a regular file whose allocated blocks are
//! fewer than its size. The data map comes from `lseek(SEEK_DATA /
//! SEEK_HOLE)` on the open file, so holes are never read: a 1 GiB file with
//! 2 MiB of data costs 2 MiB of reads. The archive uses GNU's PAX format 1.0
//! (`GNU.sparse.major=1`, `minor=0`, `name`, `realsize`; the map as decimal
//! lines at the start of the body), which GNU tar and bsdtar both restore
//! as sparse files. This module must never read file content.

use std::fs::File;
use std::io;

/// Data segments `(offset, length)` of an open file, ascending. `Ok(None)`
/// when the file is dense (one segment covering it) or the filesystem
/// cannot tell.
pub fn data_segments(file: &File, size: u64) -> io::Result<Option<Vec<(u64, u64)>>> {
    use rustix::fs::SeekFrom;
    use rustix::io::Errno;
    let mut segs = Vec::new();
    let mut pos: u64 = 0;
    while pos < size {
        let data = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(d) => d,
            // ENXIO: no data at or after `pos`.
            Err(Errno::NXIO) => break,
            // EINVAL: SEEK_DATA unsupported here; treat as dense.
            Err(Errno::INVAL) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if data >= size {
            break;
        }
        let hole = rustix::fs::seek(file, SeekFrom::Hole(data))?.min(size);
        segs.push((data, hole - data));
        pos = hole;
    }
    if segs.len() == 1 && segs[0] == (0, size) {
        return Ok(None);
    }
    Ok(Some(segs))
}

/// The map as stored at the start of the body: the number of entries, then
/// offset and length per entry, one decimal per line, padded with NULs to a
/// 512-byte boundary. A trailing zero-length entry at `size` records a final
/// hole, as GNU tar writes it.
pub fn map_block(segs: &[(u64, u64)], size: u64) -> Vec<u8> {
    let mut entries: Vec<(u64, u64)> = segs.to_vec();
    if entries.last().is_none_or(|&(o, l)| o + l < size) {
        entries.push((size, 0));
    }
    let mut text = format!("{}\n", entries.len());
    for (o, l) in entries {
        text.push_str(&format!("{o}\n{l}\n"));
    }
    let mut block = text.into_bytes();
    block.resize(block.len().div_ceil(512) * 512, 0);
    block
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn map_table() {
        let b = map_block(&[(0, 4096), (1 << 20, 4096)], 2 << 20);
        let text = String::from_utf8(b.iter().copied().take_while(|&c| c != 0).collect()).unwrap();
        assert_eq!(text, "3\n0\n4096\n1048576\n4096\n2097152\n0\n");
        assert_eq!(b.len(), 512);
        // Data up to the end: no trailing entry.
        let b = map_block(&[(4096, 4096)], 8192);
        assert!(b.starts_with(b"1\n4096\n4096\n\0"));
        // All hole.
        assert!(map_block(&[], 1 << 30).starts_with(b"1\n1073741824\n0\n\0"));
    }

    #[test]
    fn finds_segments_of_a_real_sparse_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("s");
        let mut f = File::create(&p).unwrap();
        f.set_len(64 << 20).unwrap();
        f.seek(SeekFrom::Start(8 << 20)).unwrap();
        f.write_all(&[1u8; 4096]).unwrap();
        f.sync_all().unwrap();
        let f = File::open(&p).unwrap();
        match data_segments(&f, 64 << 20).unwrap() {
            Some(segs) => {
                assert_eq!(segs.len(), 1, "{segs:?}");
                assert!(
                    segs[0].0 <= 8 << 20 && segs[0].0 + segs[0].1 >= (8 << 20) + 4096,
                    "{segs:?}"
                );
            }
            None => eprintln!("filesystem without SEEK_DATA; skipped"),
        }
        // A dense file.
        let d = t.path().join("d");
        std::fs::write(&d, vec![7u8; 10000]).unwrap();
        assert_eq!(
            data_segments(&File::open(&d).unwrap(), 10000).unwrap(),
            None
        );
    }
}
