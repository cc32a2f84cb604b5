"""Source manifests for the disk tests, built on H2's captured Debian 12 manifest
(tests/data/manifests/debian12-bios.json) with ``disks``, ``filesystems``, ``swap``,
``lvm`` and ``firmware`` replaced by each case's layout. Sizes are parameters so the
same layout serves the pure plan tests (GiB) and the loop-device tests (MiB)."""

import copy
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
MiB = 1 << 20
GiB = 1 << 30

EXT4_DEBIAN12 = ["has_journal", "ext_attr", "resize_inode", "dir_index", "filetype",
                 "needs_recovery", "extent", "64bit", "flex_bg", "sparse_super",
                 "large_file", "huge_file", "dir_nlink", "extra_isize", "metadata_csum"]
# CentOS 7 era ext4: no 64bit, no metadata_csum.
EXT4_OLD = ["has_journal", "ext_attr", "resize_inode", "dir_index", "filetype", "extent",
            "flex_bg", "sparse_super", "large_file", "huge_file", "uninit_bg", "dir_nlink",
            "extra_isize"]
XFS_CENTOS7 = {"crc": 1, "ftype": 1, "finobt": 0, "sparse": 0, "rmapbt": 0, "reflink": 0,
               "bigtime": None, "inobtcount": None, "nrext64": None}

UUID_ROOT = "5f3c2a71-8d0e-4b5a-9f4e-1c2d3b4a5e6f"
UUID_BOOT = "2b7d9c41-3e5f-4a6b-8c7d-9e0f1a2b3c4d"
UUID_SWAP = "0d8f3e6a-7b2c-4c1d-8e9f-a0b1c2d3e4f5"
UUID_DATA = "a1b2c3d4-e5f6-4718-9a0b-c1d2e3f4a5b6"
ESP_ID = "7A3C-91DE"
GPT_ID = "5E3B0C27-8F4A-4C51-9D8B-2A6F1E0C7B11"
GPT_ID2 = "9D1F2E3C-4B5A-4968-8776-655443322110"


def base():
    with open(os.path.join(ROOT, "tests", "data", "manifests", "debian12-bios.json")) as f:
        return json.load(f)


def part(disk, number, start, size, ptype, partuuid=None, name=None, flags=(),
         bootable=False):
    return {"number": number, "path": "/dev/%s%d" % (disk, number), "start_bytes": start,
            "size_bytes": size, "type": ptype, "partuuid": partuuid, "name": name,
            "bootable": bootable, "flags": list(flags), "attrs": None}


def disk(name, size, table, table_id, partitions):
    return {"name": name, "path": "/dev/" + name, "size_bytes": size, "table": table,
            "table_id": table_id, "sector_size": 512, "model": "QEMU HARDDISK",
            "boot_code": "grub2", "partitions": partitions}


def fs(device, ftype, uuid, mountpoint, size, used, label=None, ext=None, xfs=None):
    return {"device": device, "type": ftype, "uuid": uuid, "label": label,
            "size_bytes": size, "used_bytes": used, "mountpoint": mountpoint,
            "block_size": 4096, "inode_size": 256 if ftype.startswith("ext") else None,
            "ext_features": ext if ftype.startswith("ext") else None,
            "xfs_features": xfs if ftype == "xfs" else None}


def swap(path, size, uuid=UUID_SWAP, kind="partition"):
    return {"kind": kind, "path": path, "uuid": uuid, "label": None, "size_bytes": size,
            "active": True, "in_fstab": True}


def manifest(disks, filesystems, swaps=(), lvm=None, firmware="bios"):
    m = copy.deepcopy(base())
    m["disks"] = disks
    m["filesystems"] = filesystems
    m["swap"] = list(swaps)
    m["lvm"] = lvm or {"pvs": [], "vgs": [], "lvs": []}
    m["firmware"] = firmware
    return m


def plan(data_disks=()):
    return {"image_name": "img", "platform": "Debian", "architecture": "x86_64",
            "system_disk_size": 20, "bandwidth_limit": 0,
            "data_disks": [{"index": i, "size_gib": 20, "src_path": p}
                           for i, p in data_disks],
            "filters": {"system": []}}


def mbr_boot_root_swap(unit=GiB, root_used=None):
    """Debian-style MBR: /boot (primary), / (primary), swap (logical in an extended)."""
    u = unit
    root_used = 3 * u if root_used is None else root_used
    parts = [
        part("sda", 1, MiB, u // 2, "83", "9c4e1d2a-01", flags=["boot", "linux"],
             bootable=True),
        part("sda", 2, MiB + u // 2, 8 * u, "83", "9c4e1d2a-02", flags=["linux"]),
        part("sda", 3, MiB + u // 2 + 8 * u, u + MiB, "5", "9c4e1d2a-03", flags=["extended"]),
        part("sda", 5, 2 * MiB + u // 2 + 8 * u, u, "82", "9c4e1d2a-05",
             flags=["logical", "swap"]),
    ]
    return manifest(
        [disk("sda", 10 * u, "dos", "0x9c4e1d2a", parts)],
        [fs("/dev/sda1", "ext4", UUID_BOOT, "/boot", u // 2, u // 10, label="boot",
            ext=EXT4_DEBIAN12),
         fs("/dev/sda2", "ext4", UUID_ROOT, "/", 8 * u, root_used, ext=EXT4_DEBIAN12)],
        [swap("/dev/sda5", u)])


def gpt_bios(unit=GiB):
    u = unit
    parts = [
        part("vda", 1, MiB, MiB, "21686148-6449-6E6F-744E-656564454649",
             "1C7A4E52-8B1D-4F2A-9C3E-5D6F7A8B9C01", flags=["bios_grub"]),
        part("vda", 2, 2 * MiB, 8 * u, "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
             "1C7A4E52-8B1D-4F2A-9C3E-5D6F7A8B9C02", name="root", flags=["linux"]),
    ]
    return manifest([disk("vda", 8 * u + 4 * MiB, "gpt", GPT_ID, parts)],
                    [fs("/dev/vda2", "ext4", UUID_ROOT, "/", 8 * u, u, label="root",
                        ext=EXT4_OLD)])


def gpt_esp(unit=GiB, esp_size=100 * MiB):
    u = unit
    parts = [
        part("nvme0n1", 1, MiB, esp_size, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
             "2D8B5F63-9C2E-4A3B-8D4F-6E7A8B9CAD01", name="EFI System Partition",
             flags=["esp"]),
        part("nvme0n1", 2, MiB + esp_size, 8 * u, "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
             "2D8B5F63-9C2E-4A3B-8D4F-6E7A8B9CAD02", flags=["linux"]),
    ]
    m = manifest([disk("nvme0n1", 8 * u + esp_size + 2 * MiB, "gpt", GPT_ID, parts)],
                 [fs("/dev/nvme0n1p1", "vfat", ESP_ID, "/boot/efi", esp_size, MiB),
                  fs("/dev/nvme0n1p2", "ext4", UUID_ROOT, "/", 8 * u, u, ext=EXT4_DEBIAN12)],
                 firmware="uefi")
    for p in m["disks"][0]["partitions"]:
        p["path"] = "/dev/nvme0n1p%d" % p["number"]
    m["filesystems"][0]["vfat_id"] = ESP_ID.replace("-", "")
    return m


def lvm_root(unit=GiB):
    """/boot on sda1, VG "vg0" on sda2 with root, swap and an unused LV, 2 GiB free."""
    u = unit
    parts = [
        part("sda", 1, MiB, u, "83", "0a1b2c3d-01", flags=["boot", "linux"], bootable=True),
        part("sda", 2, MiB + u, 16 * u, "8e", "0a1b2c3d-02", flags=["lvm"]),
    ]
    lvm = {
        "pvs": [{"name": "/dev/sda2", "uuid": "pv-uuid-1", "vg": "vg0",
                 "size_bytes": 16 * u, "free_bytes": 2 * u}],
        "vgs": [{"name": "vg0", "uuid": "vg-uuid-1", "size_bytes": 16 * u,
                 "free_bytes": 2 * u, "extent_size_bytes": 4 * MiB, "pv_count": 1,
                 "lv_count": 3}],
        "lvs": [
            {"name": "root", "vg": "vg0", "uuid": "lv-root", "size_bytes": 10 * u,
             "path": "/dev/vg0/root", "active": True, "segtype": "linear"},
            {"name": "swap_1", "vg": "vg0", "uuid": "lv-swap", "size_bytes": 2 * u,
             "path": "/dev/vg0/swap_1", "active": True, "segtype": "linear"},
            {"name": "scratch", "vg": "vg0", "uuid": "lv-scratch", "size_bytes": 2 * u,
             "path": "/dev/vg0/scratch", "active": True, "segtype": "linear"},
        ],
    }
    return manifest(
        [disk("sda", 17 * u + 2 * MiB, "dos", "0x0a1b2c3d", parts)],
        [fs("/dev/sda1", "ext4", UUID_BOOT, "/boot", u, u // 10, ext=EXT4_DEBIAN12),
         fs("/dev/mapper/vg0-root", "ext4", UUID_ROOT, "/", 10 * u, 3 * u,
            ext=EXT4_DEBIAN12)],
        [swap("/dev/mapper/vg0-swap_1", 2 * u, kind="lv")], lvm=lvm)


def xfs_root(unit=GiB, with_data=True, data_used=None):
    """CentOS 7 style: MBR, xfs / without bigtime/inobtcount (old xfsprogs), and an xfs
    data disk at /data on its own GPT disk."""
    u = unit
    disks = [disk("sda", 10 * u + MiB, "dos", "0x51c3d0a7",
                  [part("sda", 1, MiB, 10 * u, "83", "51c3d0a7-01", flags=["linux"],
                        bootable=True)])]
    fss = [fs("/dev/sda1", "xfs", UUID_ROOT, "/", 10 * u, 2 * u, xfs=XFS_CENTOS7)]
    if with_data:
        disks.append(disk("sdb", 4 * u + 2 * MiB, "gpt", GPT_ID2,
                          [part("sdb", 1, MiB, 4 * u, "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
                                "3E9C6074-AD3F-4B4C-9E50-7F8B9CADBE01", name="data",
                                flags=["linux"])]))
        fss.append(fs("/dev/sdb1", "xfs", UUID_DATA, "/data", 4 * u,
                      u if data_used is None else data_used, label="data",
                      xfs=XFS_CENTOS7))
    return manifest(disks, fss)
