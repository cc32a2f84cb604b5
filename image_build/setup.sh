#!/usr/bin/env bash
# Install everything go2aliyun and its tests use on a Debian 12 machine (as root):
# the Debian packages (only the missing ones) and the project with all its extras.
# Used by the demo (image_build/dev/demo.sh) and by CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

# Keep in sync with docs/testing.md.
APT_PACKAGES=(
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

python3 -m pip install -q --disable-pip-version-check -e '.[all]'
