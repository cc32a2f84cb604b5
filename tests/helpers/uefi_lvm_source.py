"""A Debian 12 source server that boots with UEFI from an LVM root, as a file tree (the
host's kernel has neither vfat nor device-mapper: the receiver in the appliance VM
builds the disks; here the system only has to exist as files, plus its manifest).

The tree is the debootstrap of the sample server's package list with ``grub-pc``
replaced by ``grub-efi-amd64`` (EFI GRUB, update-grub) and ``lvm2`` added (its
initramfs hook activates the root LV), cached as its own tarball by
:func:`image_build.dev.sample_server.ensure_rootfs`. On top, what Debian's installer
leaves on such a server: fstab with ``/`` and swap on LVs of the VG, the ESP at
``/boot/efi`` by ``UUID=`` (vfat), ``RESUME=`` naming the swap LV, GRUB's EFI image in
``EFI/debian`` of the ESP (made with the tree's own ``grub-mkimage``), and a data disk
at ``/mnt/disk1`` named ``/dev/sdb1`` in fstab (kept as its own folder, pushed to
``disk1``). The manifest's file-derived parts (os, kernels and their virtio drivers,
fstab, grub, initramfs tool, network) are what the inventory reads from the tree
(``source_script.inventory.collect``); the disks, filesystems, swap and LVM are the
layout the tree would sit on (GPT: ESP + LVM PV; MBR data disk), with random ids.
"""

import os
import random
import uuid

from image_build.dev import sample_server
from source_script import inventory
from tests.receiver.disks import layouts as L
from wire import runner
from wire.paths import dm_path, target_path

MiB, GiB = 1 << 20, 1 << 30
PACKAGES = tuple(p for p in sample_server.PACKAGES if p != "grub-pc") + (
    "grub-efi-amd64", "lvm2")
HOSTNAME = "uefi-lvm-server"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LVM_TYPE = "E6D6D379-F507-44C2-A23C-238F2A3DF928"
ESP_SIZE = 100 * MiB
PV_SIZE = 8 * GiB
DATA_DISK_SIZE = GiB
# files the test finds again in the image, each on its own filesystem
MARKS = ("etc/g2a-vm-disks.txt", "boot/efi/EFI/g2a/hello.txt")
DATA_MARK = "app/README.txt"


def _write(tree, path, text, mode=0o644):
    full = target_path(tree, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        f.write(text)
    os.chmod(full, mode)


def _du(path):
    return int(runner.run(["du", "-sxb", path], timeout=300).stdout.split()[0])


class Source(object):
    """The tree (``tree``), the data disk's folder (``data``), the VG name, the ids,
    the marks written and the manifest."""

    def __init__(self, base, vg_name):
        self.base = base
        self.vg = vg_name
        self.tree = os.path.join(base, "tree")
        self.data = os.path.join(base, "disk1")
        esp = "%08X" % random.getrandbits(32)
        self.esp_uuid = "%s-%s" % (esp[:4], esp[4:])
        self.esp_vfat_id = esp
        self.root_uuid = str(uuid.uuid4())
        self.swap_uuid = str(uuid.uuid4())
        self.data_uuid = str(uuid.uuid4())
        self.table_id = str(uuid.uuid4()).upper()
        self.partuuids = [str(uuid.uuid4()).upper() for _ in range(2)]
        self.data_table_id = "0x%08x" % random.getrandbits(32)
        self.marks = {}
        self.manifest = None

    def fstab(self):
        return ("# /etc/fstab: static file system information (Debian installer style).\n"
                "%s / ext4 errors=remount-ro 0 1\n"
                "UUID=%s /boot/efi vfat umask=0077 0 1\n"
                "%s none swap sw 0 0\n"
                "/dev/sdb1 /mnt/disk1 ext4 defaults 0 2\n"
                % (dm_path(self.vg, "root"), self.esp_uuid, dm_path(self.vg, "swap_1")))


def build(base, vg_name, cache_dir=None):
    """Unpack and set up the tree under ``base``; returns a :class:`Source`."""
    src = Source(base, vg_name)
    tarball = sample_server.ensure_rootfs(cache_dir, packages=PACKAGES)
    os.makedirs(src.tree)
    runner.run(["tar", "--numeric-owner", "--xattrs", "--acls", "-C", src.tree, "-xf",
                tarball], timeout=900)
    t = src.tree
    _write(t, "/etc/hostname", HOSTNAME + "\n")
    _write(t, "/etc/hosts", "127.0.0.1 localhost\n127.0.1.1 %s\n" % HOSTNAME)
    _write(t, "/etc/fstab", src.fstab())
    _write(t, "/etc/initramfs-tools/conf.d/resume",
           "RESUME=%s\n" % dm_path(vg_name, "swap_1"))
    os.makedirs(target_path(t, "/mnt/disk1"), exist_ok=True)
    # GRUB's EFI image where grub-install would have put it on the ESP
    os.makedirs(target_path(t, "/boot/efi/EFI/debian"), exist_ok=True)
    runner.run(["chroot", t, "grub-mkimage", "-O", "x86_64-efi", "-p", "/EFI/debian",
                "-o", "/boot/efi/EFI/debian/grubx64.efi", "part_gpt", "fat", "ext2", "lvm",
                "normal", "search", "search_fs_uuid", "linux", "configfile"], timeout=300)
    for path in MARKS:
        src.marks[path] = "%s %s\n" % (path, uuid.uuid4().hex)
        _write(t, "/" + path, src.marks[path])
    os.makedirs(os.path.join(src.data, "app"))
    src.marks[DATA_MARK] = "data disk of the UEFI + LVM source %s\n" % uuid.uuid4().hex
    with open(os.path.join(src.data, DATA_MARK), "w") as f:
        f.write(src.marks[DATA_MARK])
    src.manifest = make_manifest(src)
    return src


def make_manifest(src):
    """The inventory of the tree's files, on the layout described above."""
    m = inventory.collect(src.tree)
    vg = src.vg
    esp = L.part("sda", 1, MiB, ESP_SIZE, ESP_TYPE, src.partuuids[0],
                 name="EFI System Partition", flags=["esp"])
    pv = L.part("sda", 2, MiB + ESP_SIZE, PV_SIZE, LVM_TYPE, src.partuuids[1], flags=["lvm"])
    data = L.part("sdb", 1, MiB, DATA_DISK_SIZE - MiB, "83", src.data_table_id[2:] + "-01",
                  flags=["linux"])
    root_size, swap_size = 6 * GiB, GiB
    m["disks"] = [L.disk("sda", PV_SIZE + ESP_SIZE + 2 * MiB, "gpt", src.table_id, [esp, pv]),
                  L.disk("sdb", DATA_DISK_SIZE, "dos", src.data_table_id, [data])]
    esp_fs = L.fs("/dev/sda1", "vfat", src.esp_uuid, "/boot/efi", ESP_SIZE,
                  _du(os.path.join(src.tree, "boot", "efi")))
    esp_fs["vfat_id"] = src.esp_vfat_id
    m["filesystems"] = [
        esp_fs,
        L.fs(dm_path(vg, "root"), "ext4", src.root_uuid, "/", root_size, _du(src.tree),
             ext=L.EXT4_DEBIAN12),
        L.fs("/dev/sdb1", "ext4", src.data_uuid, "/mnt/disk1", DATA_DISK_SIZE - MiB,
             _du(src.data), ext=L.EXT4_DEBIAN12),
    ]
    m["swap"] = [L.swap(dm_path(vg, "swap_1"), swap_size, uuid=src.swap_uuid, kind="lv")]
    free = PV_SIZE - root_size - swap_size
    m["lvm"] = {
        "pvs": [{"name": "/dev/sda2", "uuid": "pv-uuid-1", "vg": vg, "size_bytes": PV_SIZE,
                 "free_bytes": free}],
        "vgs": [{"name": vg, "uuid": "vg-uuid-1", "size_bytes": PV_SIZE, "free_bytes": free,
                 "extent_size_bytes": 4 * MiB, "pv_count": 1, "lv_count": 2}],
        "lvs": [
            {"name": "root", "vg": vg, "uuid": "lv-root", "size_bytes": root_size,
             "path": "/dev/%s/root" % vg, "active": True, "segtype": "linear"},
            {"name": "swap_1", "vg": vg, "uuid": "lv-swap", "size_bytes": swap_size,
             "path": "/dev/%s/swap_1" % vg, "active": True, "segtype": "linear"},
        ],
    }
    m["firmware"] = "uefi"
    m["hostname"] = HOSTNAME
    return m
