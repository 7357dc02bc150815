#!/bin/sh
# Runs inside the Packer VM as root (goldcap.pkr.hcl's shell provisioner).
# RS_ENDPOINT and RS_TOKEN come from Packer's env-var file; goldcap reads
# them from the environment, never from its arguments.
set -eu
chmod 0755 /tmp/goldcap

# The VM is a build machine, not a server anyone relies on, so hooks may run
# on its live root (--live-hooks): apt/dnf caches cleaned by the package
# manager itself before the capture. The capture streams straight to DRP
# (no local copy on the VM's disk) and is read back (HEAD) before it is
# reported done.
/tmp/goldcap capture --root / --output-dir /var/tmp/goldcap \
    --live-hooks --hook builtin:package-cache \
    --format tgz --upload-path images \
    --upload drp --ca-cert /tmp/drp-ca.pem

# The MANIFEST (.txt and .json) stays on the Packer host's log and in DRP;
# the VM is discarded after the build.
cat /var/tmp/goldcap/*.json
