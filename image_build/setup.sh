#!/usr/bin/env bash
# Install everything go2aliyun and its tests use on a Debian 12 machine (as root):
# the Debian packages (only the missing ones), then the project with all its extras in
# its own virtual environment, .venv in this checkout, made from Debian's python3 (the
# system Python is "externally managed", PEP 668: pip may not install into it), and the
# three commands linked into /usr/local/bin, so a new shell finds them.
# Used by the demo (image_build/dev/demo.sh) and by CI (.ci/run); the tests run with
# .venv/bin/python3 (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

# Keep in sync with docs/testing.md.
APT_PACKAGES=(
  python3 python3-venv
  rsync fdisk parted util-linux e2fsprogs xfsprogs btrfs-progs dosfstools mtools lvm2
  acl attr iproute2 openssl kmod cpio procps psmisc netcat-openbsd bubblewrap
  debootstrap qemu-system-x86 qemu-utils ovmf grub-pc-bin grub-efi-amd64-bin grub2-common
  cloud-init genisoimage
  docker.io docker-compose
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's python3 by its path: another python3 first on PATH (pyenv) must not decide
# which interpreter the venv, and so the tests and the commands, run on.
VENV="$PWD/.venv"
if ! "$VENV/bin/python3" -c "import sys; sys.exit(sys.base_prefix != '/usr')" 2>/dev/null; then
  echo "setup: making the virtual environment $VENV"
  /usr/bin/python3 -m venv --clear "$VENV"
fi
"$VENV/bin/python3" -m pip install -q --disable-pip-version-check -e '.[all]'
for cmd in go2aliyun go2aliyun-cloud go2aliyun-receiver; do
  ln -sfn "$VENV/bin/$cmd" "/usr/local/bin/$cmd"
done
echo "setup: go2aliyun is installed in $VENV; its commands are in /usr/local/bin"
