# The go2aliyun receiver as a container image (docs/docker.md).
#
# Build it with the project's build command, which makes the base image and the context:
#     python3 -m image_build.dev.docker build
# The context it passes holds only wheels/: the project's wheel and its receiver
# dependencies, built on the host (pip inside a build may not reach PyPI).
#
# BASE defaults to go2aliyun/debian:bookworm, a `docker import` of a debootstrap tree that
# already holds the tools below (no registry, no network for apt). With a registry at
# hand, --build-arg BASE=debian:bookworm works too: apt then installs the tools.
ARG BASE=go2aliyun/debian:bookworm
FROM ${BASE}

# The receiver's system tools: rsync (rsyncd), sfdisk/partx/wipefs/losetup, mkfs for each
# supported filesystem (ext*, xfs, vfat), LVM, GRUB for BIOS and EFI, qemu + OVMF for the
# VERIFYING boot, openssl, kmod. Keep in sync with image_build/dev/docker.py BASE_PACKAGES.
# LVM inside a container has no udev: lvm.conf is told not to wait for it.
ARG TOOLS="python3 python3-venv ca-certificates rsync fdisk util-linux mount e2fsprogs \
xfsprogs dosfstools mtools lvm2 grub-pc-bin grub-efi-amd64-bin grub2-common qemu-system-x86 \
qemu-utils ovmf openssl kmod procps bubblewrap"
RUN set -e; missing=""; \
    for p in $TOOLS; do \
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $p"; \
    done; \
    if [ -n "$missing" ]; then \
      apt-get update -qq && \
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing; \
    fi; \
    apt-get clean; rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb; \
    sed -i 's/^\(\s*\)# udev_sync = 1/\1udev_sync = 0/; s/^\(\s*\)# udev_rules = 1/\1udev_rules = 0/' \
      /etc/lvm/lvm.conf

# The project, offline from the wheels in the build context.
COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/go2aliyun \
    && /opt/go2aliyun/bin/pip install -q --disable-pip-version-check --no-index \
       --find-links /tmp/wheels "go2aliyun[receiver]" \
    && rm -rf /tmp/wheels /root/.cache \
    && ln -s /opt/go2aliyun/bin/go2aliyun-receiver /usr/local/bin/go2aliyun-receiver \
    && ln -s /opt/go2aliyun/bin/go2aliyun /usr/local/bin/go2aliyun \
    && mkdir -p -m 0700 /var/lib/go2aliyun /var/lib/go2aliyun/tls \
    && mkdir -p /var/lib/go2aliyun-output

# State (migration, tokens, logs, mounts of the target disks) and its TLS key and
# certificate (keep them: the source pins the fingerprint); the local provider's images.
VOLUME ["/var/lib/go2aliyun", "/var/lib/go2aliyun/tls", "/var/lib/go2aliyun-output"]
# 8080: control API (HTTPS); 8703: data channel (TLS in front of rsyncd on loopback).
EXPOSE 8080 8703

HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/opt/go2aliyun/bin/python", "-m", "receiver.container", "healthcheck"]

# `serve` runs `go2aliyun-receiver serve` with these arguments; a --disk NAME=FILE whose
# FILE is a regular file is attached as a loop device first (docs/docker.md).
ENTRYPOINT ["/opt/go2aliyun/bin/python", "-m", "receiver.container"]
CMD ["serve", "--state", "/var/lib/go2aliyun", "--provider", "local", \
     "--output", "/var/lib/go2aliyun-output"]
