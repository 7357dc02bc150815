#!/bin/sh
# goldcap built-in hook "initramfs": rebuild every initramfs so it matches
# the kernels and configuration in the image — generic, not host-only, so a
# clone boots on other hardware: update-initramfs on Debian and Ubuntu
# (whose default MODULES=most is generic; MODULES=dep is refused), dracut
# --no-hostonly elsewhere.
set -eu
if command -v update-initramfs >/dev/null 2>&1; then
    conf=/etc/initramfs-tools/initramfs.conf
    if [ -f "$conf" ] && grep -q '^MODULES=dep' "$conf"; then
        echo "$conf has MODULES=dep: the initramfs would hold only this machine's drivers" >&2
        exit 1
    fi
    update-initramfs -u -k all
elif command -v dracut >/dev/null 2>&1; then
    dracut --regenerate-all --force --no-hostonly
else
    echo "neither update-initramfs nor dracut found" >&2
    exit 1
fi
