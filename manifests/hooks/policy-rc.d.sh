#!/bin/sh
# goldcap built-in hook "policy-rc.d": remove the /usr/sbin/policy-rc.d a
# builder installed to stop package scripts from starting services in the
# chroot (debootstrap recipes, image-builder, diskimage-builder do). Left in
# the image, it keeps services from starting on every clone.
set -eu
if [ -e /usr/sbin/policy-rc.d ] || [ -L /usr/sbin/policy-rc.d ]; then
    rm -f /usr/sbin/policy-rc.d
    echo "removed /usr/sbin/policy-rc.d"
else
    echo "no /usr/sbin/policy-rc.d"
fi
