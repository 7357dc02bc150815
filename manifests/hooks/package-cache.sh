#!/bin/sh
# goldcap built-in hook "package-cache": the package manager's own clean, so
# the image carries no downloaded packages or repository metadata caches.
# (The scrub drops /var/cache/apt/archives/*.deb and the like in the stream
# anyway; this also clears what only the package manager knows about.)
set -eu
did=
if command -v apt-get >/dev/null 2>&1; then
    apt-get clean
    did="$did apt"
fi
if command -v dnf >/dev/null 2>&1; then
    dnf clean all
    did="$did dnf"
elif command -v yum >/dev/null 2>&1; then
    yum clean all
    did="$did yum"
fi
if command -v zypper >/dev/null 2>&1; then
    zypper --non-interactive clean --all
    did="$did zypper"
fi
if command -v apk >/dev/null 2>&1; then
    rm -rf /var/cache/apk/*
    did="$did apk"
fi
if command -v pacman >/dev/null 2>&1; then
    pacman -Scc --noconfirm >/dev/null
    did="$did pacman"
fi
echo "package caches cleaned:${did:- no package manager found}"
