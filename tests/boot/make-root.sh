#!/usr/bin/env bash
# Builds the boot test's source root: a bootable Debian 12 made with
# debootstrap, as a template machine would be (its own machine-id and SSH
# host keys, hostname gold-template, a kernel and initrd, DHCP on the virtio
# NIC). Cached: CACHE/root is rebuilt only when this script changes (CACHE/stamp
# holds its sha256). Prints "cached CACHE/root" or "built CACHE/root".
#
#   tests/boot/make-root.sh CACHE        (as root; needs debootstrap)
set -euo pipefail
cache=${1:?usage: make-root.sh CACHE}
mirror=http://deb.debian.org/debian
hash=$(sha256sum "$0" | cut -d' ' -f1)

mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
exec 9>"$cache/lock"
flock 9
if [ -d "$cache/root" ] && [ "$(cat "$cache/stamp" 2>/dev/null)" = "$hash" ]; then
    echo "cached $cache/root"
    exit 0
fi

new=$cache/root.new
unmount_all() {
    # debootstrap mounts /proc and /sys in the target; a failed run can leave them.
    local m
    for m in $(findmnt -rn -o TARGET | grep -F "$new/" | sort -r); do
        umount -l "$m" || true
    done
}
trap unmount_all EXIT
unmount_all
rm -rf "$new" "$cache/root" "$cache/stamp"

log=$cache/debootstrap.log
echo "make-root: building the boot test's Debian 12 root in $cache/root with debootstrap" \
     "(several minutes; once per change of tests/boot/make-root.sh; log: $log)" >&2
start=$(date +%s)
if ! debootstrap \
        --include=linux-image-amd64,systemd-sysv,openssh-server,udev,dbus,ifupdown,isc-dhcp-client,iproute2 \
        bookworm "$new" "$mirror" >"$log" 2>&1; then
    echo "make-root: debootstrap failed; the end of $log:" >&2
    tail -n 30 "$log" >&2
    exit 1
fi

echo gold-template >"$new/etc/hostname"
cat >"$new/etc/hosts" <<'HOSTS'
127.0.0.1	localhost
127.0.1.1	gold-template
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
HOSTS
echo '/dev/vda / ext4 errors=remount-ro 0 1' >"$new/etc/fstab"
cat >"$new/etc/network/interfaces" <<'IFACES'
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

# The virtio NIC of qemu-system-x86_64 -nic user,model=virtio-net-pci.
allow-hotplug ens3
iface ens3 inet dhcp
IFACES
rm -f "$new"/var/cache/apt/archives/*.deb

# What the test relies on: one kernel and initrd, an identity to scrub.
kernels=("$new"/boot/vmlinuz-*)
initrds=("$new"/boot/initrd.img-*)
[ "${#kernels[@]}" -eq 1 ] && [ -f "${kernels[0]}" ] || { echo "make-root: kernels: ${kernels[*]}" >&2; exit 1; }
[ "${#initrds[@]}" -eq 1 ] && [ -f "${initrds[0]}" ] || { echo "make-root: initrds: ${initrds[*]}" >&2; exit 1; }
[ -s "$new/etc/machine-id" ] || { echo "make-root: no machine-id" >&2; exit 1; }
for t in rsa ecdsa ed25519; do
    [ -s "$new/etc/ssh/ssh_host_${t}_key.pub" ] || { echo "make-root: no $t host key" >&2; exit 1; }
done

unmount_all
mv "$new" "$cache/root"
echo "$hash" >"$cache/stamp"
echo "make-root: built in $(( $(date +%s) - start )) s" >&2
echo "built $cache/root"
