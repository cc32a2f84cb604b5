#!/bin/sh
# go2aliyun receiver install (run once by cloud-init): by build-image on the build instance
# (appliance-build.yaml.tmpl), and by the one-step launch on a stock Debian 12 instance
# before the receiver starts (user-data.yaml.tmpl).
# Settings come from /etc/go2aliyun/appliance-build.env (written by build-image):
#   G2A_VERSION   the go2aliyun version to install (also the image name's suffix)
#   G2A_PIP_INDEX the package index pip uses (dependencies, and go2aliyun itself)
#   G2A_WHEEL_URL optional: install go2aliyun from this wheel instead of the index
#   G2A_PACKAGES  the Debian packages the receiver needs
# Ends with exactly one marker line on the console: "ready <version>" or "failed: <reason>".
set -u
. /etc/go2aliyun/appliance-build.env
VENV=/opt/go2aliyun

say() {
    echo "go2aliyun-appliance: $*"
    # the serial console is what GetInstanceConsoleOutput returns
    for tty in /dev/ttyS0 /dev/console; do
        [ -w "$tty" ] && echo "go2aliyun-appliance: $*" > "$tty" 2>/dev/null
    done
    return 0
}
fail() { say "failed: $*"; exit 1; }

export DEBIAN_FRONTEND=noninteractive
apt-get update -q || fail "apt-get update"
# shellcheck disable=SC2086  # a list of package names
apt-get install -y -q --no-install-recommends $G2A_PACKAGES || fail "apt-get install"
python3 -m venv "$VENV" || fail "python3 -m venv $VENV"
if [ -n "$G2A_WHEEL_URL" ]; then
    spec="go2aliyun[receiver,cloud] @ $G2A_WHEEL_URL"
else
    spec="go2aliyun[receiver,cloud]==$G2A_VERSION"
fi
# an http index (Alibaba's VPC-internal mirror) must be named as trusted, or pip refuses it
case "$G2A_PIP_INDEX" in
    http://*) host=${G2A_PIP_INDEX#http://}; set -- --trusted-host "${host%%/*}" ;;
    *) set -- ;;
esac
"$VENV/bin/pip" install -q --disable-pip-version-check --index-url "$G2A_PIP_INDEX" "$@" \
    "$spec" || fail "pip install $spec from $G2A_PIP_INDEX"
ln -sf "$VENV/bin/go2aliyun-receiver" /usr/local/bin/go2aliyun-receiver
systemctl daemon-reload || fail "systemctl daemon-reload"
# enabled, not started: it starts on every boot of an instance of the image (with a
# launch's user-data, or launched by hand from the console with none)
systemctl enable go2aliyun-receiver.service || fail "systemctl enable go2aliyun-receiver"

# self-check
got=$("$VENV/bin/python3" -c 'import importlib.metadata as m; print(m.version("go2aliyun"))') \
    || fail "go2aliyun is not importable in $VENV"
[ "$got" = "$G2A_VERSION" ] || fail "installed go2aliyun $got, expected $G2A_VERSION"
/usr/local/bin/go2aliyun-receiver --help > /dev/null 2>&1 || fail "go2aliyun-receiver --help"
# the receiver makes the image itself with its RAM role: the cloud SDK must be there
"$VENV/bin/python3" -c 'import image_build.cloud.aliyun, alibabacloud_ecs20140526.client' \
    || fail "the Alibaba Cloud SDK is not importable in $VENV"
for tool in rsync sfdisk mkfs.ext4 mkfs.xfs lvm openssl qemu-img cloud-init; do
    command -v "$tool" > /dev/null 2>&1 || fail "$tool is missing"
done
systemctl is-enabled go2aliyun-receiver.service > /dev/null 2>&1 \
    || fail "go2aliyun-receiver.service is not enabled"
say "ready $got"
