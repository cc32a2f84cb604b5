"""The Linux families go2aliyun migrates: one table both ends read, so they agree.

The source's manifest names the family (``os.family``, from :func:`family_of`); the
receiver's conversion has one class per row (:mod:`receiver.convert.distro`). A family
is chosen from os-release: ``ID``, then each ``ID_LIKE`` word in order.
"""

import collections
import fnmatch

# ids: os-release ID / ID_LIKE values (lower case, fnmatch patterns); efi_signed_flag:
# grub-install's flag that keeps shim's chain (None: no grub-install on UEFI, the
# distro's signed binaries stay as they are); install: the package manager's install
OSFamily = collections.namedtuple("OSFamily", "name ids initramfs_tool grub_dir grub_install "
                                  "grub_mkconfig efi_signed_flag install")
DEBIAN = OSFamily("debian", ("debian", "ubuntu", "linuxmint", "raspbian", "kali", "devuan",
                             "deepin", "uos"),
                  "initramfs-tools", "/boot/grub", "grub-install", "grub-mkconfig",
                  "--uefi-secure-boot", "apt-get install %s -y")
RHEL = OSFamily("rhel", ("rhel", "centos", "fedora", "rocky", "almalinux", "ol", "amzn",
                         "alinux", "anolis", "openeuler", "kylin", "euleros", "scientific",
                         "cloudlinux"), "dracut", "/boot/grub2", "grub2-install",
                "grub2-mkconfig", None, "yum install %s -y")
SUSE = OSFamily("suse", ("sles", "sled", "suse", "opensuse*"), "dracut", "/boot/grub2",
                "grub2-install", "grub2-mkconfig", "--suse-force-signed", "zypper install %s")
FAMILIES = (DEBIAN, RHEL, SUSE)
OTHER = "other"  # the manifest's family when no row takes the system: not converted

# os-release ID -> its folder on the ESP (EFI/<name>/) where that is not the ID itself
EFI_DIRS = {"rhel": "redhat", "ol": "redhat", "opensuse-leap": "opensuse"}
# UEFI: the first major release whose EFI/<id>/grub.cfg only loads /boot/grub2/grub.cfg
EFI_WRAPPER_SINCE = {"rhel": 9, "fedora": 34}  # (another id of the family: as rhel)

VIRTIO_DRIVERS = ("virtio", "virtio_ring", "virtio_pci", "virtio_blk", "virtio_scsi",
                  "virtio_net")
DRIVERS = VIRTIO_DRIVERS + ("nvme",)  # probed per kernel, put into every initramfs
# Without these a kernel cannot reach its root disk on ECS: conversion refuses it.
REQUIRED_DRIVERS = ("virtio_pci", "virtio_blk")
# The source's check also wants the NIC's (an instance without network is no server).
CHECKED_DRIVERS = ("virtio_blk", "virtio_pci", "virtio_net")

# Filesystem types with no disk of their own: never copied, never rewritten in fstab.
PSEUDO_FSTYPES = frozenset((
    "proc", "sysfs", "devtmpfs", "devpts", "tmpfs", "ramfs", "cgroup", "cgroup2",
    "securityfs", "pstore", "debugfs", "tracefs", "configfs", "fusectl", "mqueue",
    "hugetlbfs", "bpf", "autofs", "binfmt_misc", "efivarfs", "selinuxfs", "rpc_pipefs",
    "nfsd", "nsfs", "overlay", "aufs", "squashfs", "fuse", "fuse.lxcfs", "fuse.gvfsd-fuse",
    "fuse.portal", "sockfs", "pipefs", "rootfs", "none", "iso9660", "udf",
))
# Optical media are not copied either, but their fstab entries are disabled on ECS
# (there is no such drive there: systemd would wait for it).
MEDIA_FSTYPES = frozenset(("iso9660", "udf"))


def by_name(name):
    """The row of a manifest's ``os.family``, or None (``other``)."""
    return next((fam for fam in FAMILIES if fam.name == name), None)


def family_of(osid, id_like=()):
    """The row for an os-release ``ID`` and its ``ID_LIKE`` words, or None."""
    for candidate in [osid] + list(id_like):
        c = (candidate or "").lower()
        for fam in FAMILIES:
            if c and any(fnmatch.fnmatchcase(c, pattern) for pattern in fam.ids):
                return fam
    return None
