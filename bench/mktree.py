#!/usr/bin/env python3
"""Builds the synthetic many-small-files benchmark tree.

    mktree.py DIR N

Creates N regular files of 100-2000 bytes under DIR, 1000 files per
directory, in two levels of directories (DIR/TTT/MM/fNNNNNNN, 100 leaf
directories per top directory). Content and sizes are deterministic (a fixed
seed), text-like (words from a small vocabulary), so they compress roughly
like configuration files and scripts do. DIR must not exist yet.
"""

import os
import random
import sys

PER_DIR = 1000
DIRS_PER_TOP = 100
MIN_SIZE, MAX_SIZE = 100, 2000

WORDS = (
    "the of and to in is for on with as by at from this that be are or an it "
    "config value path file root user group mode time size data system service "
    "network device kernel module package install update enable disable start "
    "stop default option error warning info debug local remote server client "
    "0 1 2 3 4 5 6 7 8 9 10 42 100 255 1024 4096 true false yes no none auto "
    "/etc /usr /var /lib /bin /sbin /opt /srv # = : ; { } [ ] ( ) < > \" ' -- ="
).split()


def text_pool(size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    out = []
    n = 0
    line = []
    while n < size:
        w = rng.choice(WORDS)
        line.append(w)
        if len(line) >= rng.randint(4, 14):
            s = " ".join(line) + "\n"
            out.append(s)
            n += len(s)
            line = []
    return "".join(out).encode()[:size]


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    root, count = sys.argv[1], int(sys.argv[2])
    os.makedirs(root)
    pool = text_pool(8 << 20, seed=20261122)
    span = len(pool) - MAX_SIZE
    rng = random.Random(count)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    total = 0
    d = None
    for i in range(count):
        if i % PER_DIR == 0:
            top, leaf = divmod(i // PER_DIR, DIRS_PER_TOP)
            d = os.path.join(root, f"{top:03d}", f"{leaf:02d}")
            os.makedirs(d)
        size = rng.randint(MIN_SIZE, MAX_SIZE)
        off = rng.randrange(span)
        fd = os.open(os.path.join(d, f"f{i:07d}"), flags, 0o644)
        try:
            os.write(fd, pool[off:off + size])
        finally:
            os.close(fd)
        total += size
    print(f"{count} files, {total} bytes under {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
