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
# initrd: the name of a kernel's initramfs in /boot where the family's boot loader
# scripts look for it (dracut on Debian writes initrd.img-<k> too)
OSFamily = collections.namedtuple("OSFamily", "name ids initrd grub_dir grub_install "
                                  "grub_mkconfig efi_signed_flag install")
DEBIAN = OSFamily("debian", ("debian", "ubuntu", "linuxmint", "raspbian", "kali", "devuan",
                             "deepin", "uos"),
                  "initrd.img-%s", "/boot/grub", "grub-install", "grub-mkconfig",
                  "--uefi-secure-boot", "apt-get install %s -y")
RHEL = OSFamily("rhel", ("rhel", "centos", "fedora", "rocky", "almalinux", "ol", "amzn",
                         "alinux", "anolis", "openeuler", "kylin", "euleros", "scientific",
                         "cloudlinux"), "initramfs-%s.img", "/boot/grub2", "grub2-install",
                "grub2-mkconfig", None, "yum install %s -y")
SUSE = OSFamily("suse", ("sles", "sled", "suse", "opensuse*"), "initramfs-%s.img", "/boot/grub2",
                "grub2-install", "grub2-mkconfig", "--suse-force-signed", "zypper install %s")
FAMILIES = (DEBIAN, RHEL, SUSE)
OTHER = "other"  # the manifest's family when no row takes the system: not converted

# os-release ID -> its folder on the ESP (EFI/<name>/) where that is not the ID itself
EFI_DIRS = {"rhel": "redhat", "ol": "redhat", "opensuse-leap": "opensuse"}
# UEFI: the first major release whose EFI/<id>/grub.cfg only loads /boot/grub2/grub.cfg
EFI_WRAPPER_SINCE = {"rhel": 9, "fedora": 34}  # (another id of the family: as rhel)

# The initramfs tools, each known by the programs it needs (any one path of each group,
# an executable file), never by its configuration folders: /etc/initramfs-tools
# survives a switch to dracut (Debian 13 supports both), and a conversion that ran the
# tool of the leftover folder failed after the whole copy (issue 18). The first row
# whose programs are all there wins.
InitramfsTool = collections.namedtuple("InitramfsTool", "name programs")
INITRAMFS_TOOLS = (
    InitramfsTool("initramfs-tools", (("/usr/sbin/update-initramfs", "/sbin/update-initramfs"),
                                      ("/usr/sbin/mkinitramfs", "/sbin/mkinitramfs"))),
    InitramfsTool("dracut", (("/usr/bin/dracut", "/usr/sbin/dracut", "/sbin/dracut"),)),
    InitramfsTool("mkinitcpio", (("/usr/bin/mkinitcpio", "/usr/sbin/mkinitcpio"),)),
    InitramfsTool("mkinitrd", (("/sbin/mkinitrd", "/usr/sbin/mkinitrd", "/usr/bin/mkinitrd"),)),
)
# The tools the receiver's conversion runs (receiver/convert/distro.py); any other is
# refused by the source's preflight, and by the conversion if it gets that far.
CONVERTED_INITRAMFS_TOOLS = ("initramfs-tools", "dracut")

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


def initramfs_tool_of(is_program):
    """The name of the initramfs tool whose programs ``is_program(path)`` (an executable
    file of the system, path absolute in it) all finds, or None (pure)."""
    for tool in INITRAMFS_TOOLS:
        if all(any(is_program(p) for p in group) for group in tool.programs):
            return tool.name
    return None


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
