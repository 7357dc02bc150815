#!/usr/bin/env python3
"""treesnap.py ROOT [--skip PATH]... [--indent N]

Print ONE JSON object describing every entry under ROOT (ROOT included), so two
trees can be compared for full-fidelity equality (e.g. a source root and the
result of extracting its archive). Python 3 standard library only.

The walk uses lstat and never follows symlinks (a symlink to a directory is
reported as a symlink and not descended into). It does descend into every
directory under ROOT, including mount points.

Keys are paths relative to ROOT: "." for ROOT itself, otherwise e.g.
"etc/passwd" (no "./" prefix, "/" as separator).

Name / bytes escaping: paths, symlink targets and hardlink_group values are
handled as raw bytes and turned into valid UTF-8 JSON strings like this:
  * every maximal run of bytes that is valid UTF-8 is decoded as UTF-8;
  * every byte that is not part of valid UTF-8 becomes the 4 characters
    "\\xNN" (backslash, 'x', two lowercase hex digits), e.g. b"caf\\xe9\\xff"
    becomes the text  caf\\xe9\\xff ;
  * a literal backslash byte (0x5c) becomes two backslashes, so the mapping is
    reversible and a real "\\xe9" in a name cannot collide with byte 0xe9.
(In the JSON text itself each of those backslashes is, as always, written
as "\\\\".)

Value per entry (a dict; keys always present unless noted):
  type       "file" | "dir" | "symlink" | "char" | "block" | "fifo" | "socket"
  mode       int, stat.S_IMODE(st_mode) (permission bits + setuid/setgid/sticky)
  uid, gid   int
  nlink      int; null for directories (their link count is fs-dependent)
  mtime_ns   int, lstat st_mtime_ns (also for symlinks)
  xattrs     {name: lowercase hex of value}, every namespace (user, trusted,
             security, system.posix_acl_*), read without following symlinks;
             {} when there are none or listing is not supported (ENOTSUP/EPERM)
  hardlink_group  for non-directories with nlink > 1: the smallest (Python
             string order of the escaped form) relative path among the entries
             walked under ROOT that share its (st_dev, st_ino); else null
  files only:
    size     int, st_size
    sha256   hex sha256 of the full logical content (holes hashed as zeros;
             data found with SEEK_DATA/SEEK_HOLE, so big sparse files are fast)
    sparse   bool, st_blocks * 512 < st_size
    alloc    int, st_blocks * 512
  symlinks only:
    target   escaped link target
  char / block only:
    rdev_major, rdev_minor   int

--skip PATH (repeatable) omits the *contents* of the relative path PATH
(e.g. --skip proc --skip sys); the entry PATH itself is still reported.
Output is deterministic: json.dumps(..., sort_keys=True), one line, unless
--indent is given.
"""

import argparse
import errno
import hashlib
import json
import os
import stat
import sys

ZERO_BUF = bytes(1 << 20)  # 1 MiB of zeros, fed to the hash for holes
READ_CHUNK = 1 << 20


def escape_bytes(raw: bytes) -> str:
    """Valid UTF-8 runs decoded, invalid bytes as \\xNN, backslash doubled."""
    out = []
    for ch in raw.decode("utf-8", "surrogateescape"):
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:  # undecodable byte (surrogateescape)
            out.append("\\x%02x" % (code - 0xDC00))
        else:
            out.append(ch)
    return "".join(out)


def file_type(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISCHR(mode):
        return "char"
    if stat.S_ISBLK(mode):
        return "block"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    raise ValueError("unknown file type %o" % mode)


def _feed_zeros(h, count: int) -> None:
    view = memoryview(ZERO_BUF)
    while count > 0:
        n = min(count, len(ZERO_BUF))
        h.update(view[:n])
        count -= n


def _feed_data(h, fd: int, start: int, end: int, path: bytes) -> None:
    pos = start
    while pos < end:
        chunk = os.pread(fd, min(READ_CHUNK, end - pos), pos)
        if not chunk:
            raise OSError(errno.EIO, "file shrank while hashing", path)
        h.update(chunk)
        pos += len(chunk)


def hash_file(path: bytes, size: int) -> str:
    flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_NOATIME", 0))
    except PermissionError:
        fd = os.open(path, flags)
    h = hashlib.sha256()
    try:
        pos = 0
        seek_ok = hasattr(os, "SEEK_DATA")
        while pos < size:
            if seek_ok:
                try:
                    data = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError as e:
                    if e.errno == errno.ENXIO:  # only a hole is left
                        data = size
                    elif e.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                        seek_ok = False
                        continue
                    else:
                        raise
                data = min(data, size)
                _feed_zeros(h, data - pos)
                pos = data
                if pos >= size:
                    break
                hole = min(os.lseek(fd, pos, os.SEEK_HOLE), size)
            else:
                hole = size
            _feed_data(h, fd, pos, hole, path)
            pos = hole
    finally:
        os.close(fd)
    return h.hexdigest()


def read_xattrs(path: bytes) -> dict:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            return {}
        raise
    result = {}
    for name in sorted(names):
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError as e:
            if e.errno == errno.ENODATA:  # removed meanwhile
                continue
            raise
        result[name] = value.hex()
    return result


def normalize_skip(p: str) -> bytes:
    parts = [x for x in os.fsencode(p).split(b"/") if x not in (b"", b".")]
    return b"/".join(parts)


def walk(root: bytes, skips: set):
    """Yield (relative bytes path, absolute bytes path, lstat) for ROOT and below."""
    st = os.lstat(root)
    yield b".", root, st
    if not stat.S_ISDIR(st.st_mode) or b"" in skips:
        return
    stack = [(b"", root)]
    while stack:
        rel_dir, abs_dir = stack.pop()
        with os.scandir(abs_dir) as it:
            entries = sorted(it, key=lambda e: e.name)
        subdirs = []
        for entry in entries:
            rel = entry.name if not rel_dir else rel_dir + b"/" + entry.name
            st = entry.stat(follow_symlinks=False)
            yield rel, entry.path, st
            if stat.S_ISDIR(st.st_mode) and rel not in skips:
                subdirs.append((rel, entry.path))
        stack.extend(reversed(subdirs))


def snapshot(root: bytes, skips: set) -> dict:
    records = list(walk(root, skips))

    # pass 1: hardlink groups among non-directories
    groups = {}
    for rel, _abs, st in records:
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            name = escape_bytes(rel)
            if key not in groups or name < groups[key]:
                groups[key] = name

    # pass 2: metadata
    out = {}
    for rel, abs_path, st in records:
        mode = st.st_mode
        kind = file_type(mode)
        is_dir = kind == "dir"
        info = {
            "type": kind,
            "mode": stat.S_IMODE(mode),
            "uid": st.st_uid,
            "gid": st.st_gid,
            "nlink": None if is_dir else st.st_nlink,
            "mtime_ns": st.st_mtime_ns,
            "xattrs": read_xattrs(abs_path),
            "hardlink_group": None
            if is_dir or st.st_nlink <= 1
            else groups[(st.st_dev, st.st_ino)],
        }
        if kind == "file":
            alloc = st.st_blocks * 512
            info["size"] = st.st_size
            info["alloc"] = alloc
            info["sparse"] = alloc < st.st_size
            info["sha256"] = hash_file(abs_path, st.st_size)
        elif kind == "symlink":
            info["target"] = escape_bytes(os.readlink(abs_path))
        elif kind in ("char", "block"):
            info["rdev_major"] = os.major(st.st_rdev)
            info["rdev_minor"] = os.minor(st.st_rdev)
        out[escape_bytes(rel) if rel != b"." else "."] = info
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Print a JSON metadata snapshot of a directory tree.")
    ap.add_argument("root", help="directory (or file) to snapshot")
    ap.add_argument("--skip", action="append", default=[], metavar="PATH",
                    help="relative path whose contents are omitted (repeatable)")
    ap.add_argument("--indent", type=int, default=None,
                    help="pretty-print with this indent (default: one line)")
    args = ap.parse_args(argv)

    root = os.fsencode(args.root)
    skips = {normalize_skip(s) for s in args.skip}
    snap = snapshot(root, skips)
    # ensure_ascii (default): output is pure ASCII whatever the locale
    json.dump(snap, sys.stdout, sort_keys=True, indent=args.indent)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
