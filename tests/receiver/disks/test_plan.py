"""Pure plan tests: golden sfdisk scripts and mkfs/LVM argv for each layout, scaling,
and every refusal (no command runs here)."""

import json

import pytest

from receiver.disks.layout import Layout
from receiver.disks.plan import GiB, MiB, needed_bytes, plan_layout, render_review
from receiver.disks.render import render_commands
from tests.receiver.disks import layouts as L
from wire.errors import DiskError

DEVS = {"system": "/dev/vdb", "disk1": "/dev/vdc"}

EXT4_DEB12_O = ("none,has_journal,ext_attr,resize_inode,dir_index,filetype,extent,64bit,"
                "flex_bg,sparse_super,large_file,huge_file,dir_nlink,extra_isize,"
                "metadata_csum,^metadata_csum_seed,^orphan_file")


def planned(*args, **kwargs):
    """plan_layout's Layout as saved in the state folder (JSON), which reads back as
    the same Layout."""
    layout = plan_layout(*args, **kwargs)
    saved = json.loads(json.dumps(layout.to_json()))
    assert Layout.from_json(saved) == layout
    return saved


def steps(layout):
    """render_commands flattened: sfdisk scripts as text, argv as lists."""
    out = []
    for s in render_commands(Layout.from_json(layout), DEVS):
        out.append(s[2] if s[0] == "sfdisk" else s[1])
    return out


def test_mbr_boot_root_swap_golden():
    layout = planned(L.mbr_boot_root_swap(), L.plan(), {"system": 20 * GiB})
    assert steps(layout) == [
        "label: dos\nlabel-id: 0x9c4e1d2a\nunit: sectors\n\n"
        "start=2048, size=1048576, type=83, bootable\n"
        "start=1050624, size=38795264, type=83\n"
        "start=39845888, size=2097152, type=82\n",
        ["mkfs.ext4", "-F", "-q", "-E", "nodiscard", "-O", EXT4_DEB12_O, "-b", "4096",
         "-I", "256", "-U", L.UUID_ROOT, "/dev/vdb2"],
        ["mkfs.ext4", "-F", "-q", "-E", "nodiscard", "-O", EXT4_DEB12_O, "-b", "4096",
         "-I", "256", "-U", L.UUID_BOOT, "-L", "boot", "/dev/vdb1"],
        ["mkswap", "-f", "-U", L.UUID_SWAP, "/dev/vdb3"],
    ]
    # /boot and swap keep their size; / takes the rest; root before /boot in mounts.
    assert [m["mountpoint"] for m in layout["mounts"]] == ["/", "/boot"]
    # the logical swap partition sda5 is now partition 3: conversion renames it.
    assert layout["device_map"]["/dev/sda5"] == {"module": "system", "partition": 3}
    assert layout["device_map"]["/dev/sda2"] == {"module": "system", "partition": 2}
    assert layout["id_changes"] == []
    json.dumps(layout)  # saved in the state folder: must be JSON


def test_mbr_with_more_than_four_partitions_uses_an_extended_partition():
    m = L.mbr_boot_root_swap()
    d = m["disks"][0]
    d["partitions"].append(L.part("sda", 6, 10 * GiB, GiB, "83", flags=["logical"]))
    d["partitions"].append(L.part("sda", 7, 11 * GiB, GiB, "83", flags=["logical"]))
    m["filesystems"].append(L.fs("/dev/sda6", "ext4", "11111111-1111-4111-8111-111111111111",
                                 "/var", GiB, 100 * MiB, ext=L.EXT4_DEBIAN12))
    m["filesystems"].append(L.fs("/dev/sda7", "ext4", "22222222-2222-4222-8222-222222222222",
                                 "/home", GiB, 100 * MiB, ext=L.EXT4_DEBIAN12))
    layout = planned(m, L.plan(), {"system": 20 * GiB})
    script = steps(layout)[0]
    lines = [x for x in script.splitlines() if x.startswith("start=")]
    assert len(lines) == 6 and lines[3].endswith("type=5")
    disk = layout["disks"][0]
    assert [p["number"] for p in disk["partitions"]] == [1, 2, 3, 5, 6]
    ext = disk["extended"]
    for p in disk["partitions"][3:]:
        assert p["logical"]
        assert ext["start_bytes"] < p["start_bytes"]
        assert p["start_bytes"] + p["size_bytes"] <= ext["start_bytes"] + ext["size_bytes"]


def test_gpt_bios_boot_golden():
    layout = planned(L.gpt_bios(), L.plan(), {"system": 20 * GiB})
    assert steps(layout) == [
        "label: gpt\nlabel-id: %s\nunit: sectors\nfirst-lba: 2048\n\n"
        "start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, "
        "uuid=1C7A4E52-8B1D-4F2A-9C3E-5D6F7A8B9C01\n"
        "start=4096, size=41936896, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, "
        "uuid=1C7A4E52-8B1D-4F2A-9C3E-5D6F7A8B9C02, name=\"root\"\n" % L.GPT_ID,
        ["mkfs.ext4", "-F", "-q", "-E", "nodiscard", "-O",
         "none,has_journal,ext_attr,resize_inode,dir_index,filetype,extent,flex_bg,"
         "sparse_super,large_file,huge_file,uninit_bg,dir_nlink,extra_isize,"
         "^metadata_csum_seed,^orphan_file", "-b", "4096", "-I", "256",
         "-U", L.UUID_ROOT, "-L", "root", "/dev/vdb2"],
    ]
    # The GPT backup header keeps the last MiB free.
    p = layout["disks"][0]["partitions"][-1]
    assert p["start_bytes"] + p["size_bytes"] == 20 * GiB - MiB


def test_gpt_bios_source_without_bios_boot_partition_gets_one():
    m = L.gpt_bios()
    del m["disks"][0]["partitions"][0]
    layout = planned(m, L.plan(), {"system": 20 * GiB})
    first = layout["disks"][0]["partitions"][0]
    assert first["role"] == "bios_boot" and first["size_bytes"] == MiB
    assert any("BIOS boot partition is added" in n for n in layout["notes"])


def test_gpt_esp_golden():
    layout = planned(L.gpt_esp(), L.plan(), {"system": 20 * GiB})
    s = steps(layout)
    assert s[0] == (
        "label: gpt\nlabel-id: %s\nunit: sectors\nfirst-lba: 2048\n\n"
        "start=2048, size=204800, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, "
        "uuid=2D8B5F63-9C2E-4A3B-8D4F-6E7A8B9CAD01, name=\"EFI System Partition\"\n"
        "start=206848, size=41734144, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, "
        "uuid=2D8B5F63-9C2E-4A3B-8D4F-6E7A8B9CAD02\n" % L.GPT_ID)
    assert ["mkfs.vfat", "-i", "7A3C91DE", "/dev/vdb1"] in s
    assert [m["mountpoint"] for m in layout["mounts"]] == ["/", "/boot/efi"]


def test_uefi_source_without_esp_gets_a_new_one():
    m = L.gpt_esp()
    del m["disks"][0]["partitions"][0]
    del m["filesystems"][0]
    layout = planned(m, L.plan(), {"system": 20 * GiB})
    first = layout["disks"][0]["partitions"][0]
    assert first["role"] == "esp" and first["size_bytes"] == 256 * MiB
    esp = next(f for f in layout["filesystems"] if f["id"] == first["fs"])
    assert esp["type"] == "vfat" and esp["mountpoint"] == "/boot/efi"
    assert ["mkfs.vfat", "/dev/vdb1"] in steps(layout)


def test_lvm_root_golden_with_receiver_vg_of_the_same_name():
    layout = planned(L.lvm_root(), L.plan(), {"system": 40 * GiB},
                         taken_vg_names=["vg0"])
    s = steps(layout)
    assert s[0] == ("label: dos\nlabel-id: 0x0a1b2c3d\nunit: sectors\n\n"
                    "start=2048, size=2097152, type=83, bootable\n"
                    "start=2099200, size=81786880, type=8e\n")
    assert s[1:5] == [
        ["pvcreate", "-ff", "-y", "--devices", "/dev/vdb2", "/dev/vdb2"],
        ["vgcreate", "-y", "--devices", "/dev/vdb2", "-s", "4096k", "g2a-vg0", "/dev/vdb2"],
        ["lvcreate", "-y", "-Wy", "-Zy", "--devices", "/dev/vdb2", "-n", "root",
         "-L", "31564m", "g2a-vg0"],
        ["lvcreate", "-y", "-Wy", "-Zy", "--devices", "/dev/vdb2", "-n", "swap_1",
         "-L", "2048m", "g2a-vg0"],
    ]
    assert s[5][-1] == "/dev/g2a-vg0/root" and s[5][-3:-1] == ["-U", L.UUID_ROOT]
    assert s[7] == ["mkswap", "-f", "-U", L.UUID_SWAP, "/dev/g2a-vg0/swap_1"]
    vg = layout["vgs"][0]
    assert vg["name"] == "vg0" and vg["create_name"] == "g2a-vg0"
    # root + swap + proportional free space fit in the PV.
    assert sum(lv["size_bytes"] for lv in vg["lvs"]) <= vg["size_bytes"]
    assert layout["device_map"]["/dev/mapper/vg0-root"] == {"module": "system",
                                                           "lv": "vg0/root"}
    assert any("vg0/scratch" in n for n in layout["notes"])


def test_lvm_root_without_name_clash_keeps_the_vg_name():
    layout = planned(L.lvm_root(), L.plan(), {"system": 40 * GiB})
    assert layout["vgs"][0]["create_name"] == "vg0"
    assert ["vgcreate", "-y", "--devices", "/dev/vdb2", "-s", "4096k", "vg0",
            "/dev/vdb2"] in steps(layout)


def test_xfs_without_bigtime_golden_and_data_disk():
    layout = planned(L.xfs_root(), L.plan([(1, "/data")]),
                         {"system": 20 * GiB, "disk1": 20 * GiB})
    s = steps(layout)
    assert s == [
        "label: dos\nlabel-id: 0x51c3d0a7\nunit: sectors\n\n"
        "start=2048, size=41940992, type=83, bootable\n",
        "label: gpt\nlabel-id: %s\nunit: sectors\nfirst-lba: 2048\n\n"
        "start=2048, size=41938944, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, "
        "uuid=3E9C6074-AD3F-4B4C-9E50-7F8B9CADBE01, name=\"data\"\n" % L.GPT_ID2,
        ["mkfs.xfs", "-f", "-q", "-K", "-m",
         "uuid=%s,crc=1,finobt=0,rmapbt=0,reflink=0,bigtime=0,inobtcount=0" % L.UUID_ROOT,
         "-i", "sparse=0,nrext64=0", "-n", "ftype=1", "/dev/vdb1"],
        ["mkfs.xfs", "-f", "-q", "-K", "-m",
         "uuid=%s,crc=1,finobt=0,rmapbt=0,reflink=0,bigtime=0,inobtcount=0" % L.UUID_DATA,
         "-i", "sparse=0,nrext64=0", "-n", "ftype=1", "-L", "data", "/dev/vdc1"],
    ]
    assert layout["mounts"] == [
        {"module": "system", "mountpoint": "/", "fs": "fs1", "type": "xfs"},
        {"module": "disk1", "mountpoint": "/", "fs": "fs2", "type": "xfs"},
    ]
    data = next(f for f in layout["filesystems"] if f["module"] == "disk1")
    assert data["system_mountpoint"] == "/data"


def test_data_disk_scaled_up():
    # source data partition: 4 GiB; target disk1: 50 GiB -> one partition filling it.
    layout = planned(L.xfs_root(), L.plan([(1, "/data")]),
                         {"system": 20 * GiB, "disk1": 50 * GiB})
    d1 = layout["disks"][1]
    assert len(d1["partitions"]) == 1
    assert d1["partitions"][0]["size_bytes"] == 50 * GiB - 2 * MiB


def test_shrink_that_still_fits():
    # source / is 8 GiB with 3 GiB used; a 5 GiB disk holds /boot, swap and / (>= need).
    m = L.mbr_boot_root_swap()
    layout = planned(m, L.plan(), {"system": 5 * GiB})
    root = next(f for f in layout["filesystems"] if f["system_mountpoint"] == "/")
    assert root["size_bytes"] < 8 * GiB
    assert root["size_bytes"] >= needed_bytes("ext4", 3 * GiB, 8 * GiB)
    sizes = {p["role"]: p["size_bytes"] for p in layout["disks"][0]["partitions"]}
    assert sizes["swap"] == GiB  # swap never shrinks


def test_shrink_that_does_not_fit_is_refused_with_numbers():
    with pytest.raises(DiskError) as e:
        plan_layout(L.mbr_boot_root_swap(), L.plan(), {"system": 4 * GiB})
    err = e.value
    assert err.code == "disk.too_small"
    assert "'system'" in err.message
    assert str(4 * GiB) in err.message
    need = err.details["needed_bytes"]
    assert need > 4 * GiB and str(need) in err.message
    assert err.details["available_bytes"] == 4 * GiB
    assert "/ needs" in err.message and "used 3.00 GiB" in err.message
    assert "at least 5 GiB" in err.hint


def test_data_disk_too_small_is_refused():
    with pytest.raises(DiskError) as e:
        plan_layout(L.xfs_root(data_used=3 * GiB), L.plan([(1, "/data")]),
                    {"system": 20 * GiB, "disk1": 3 * GiB})
    assert e.value.code == "disk.too_small" and e.value.details["disk"] == "disk1"


def test_missing_target_disk_is_refused():
    with pytest.raises(DiskError) as e:
        plan_layout(L.xfs_root(), L.plan([(1, "/data")]), {"system": 20 * GiB})
    assert e.value.code == "disk.missing" and "disk1" in e.value.message


def test_target_disk_not_in_plan_is_refused():
    with pytest.raises(DiskError) as e:
        plan_layout(L.gpt_bios(), L.plan(), {"system": 20 * GiB, "disk2": 20 * GiB})
    assert e.value.code == "disk.unexpected" and "disk2" in e.value.message


def test_manifest_without_root_is_refused():
    m = L.gpt_bios()
    m["filesystems"][0]["mountpoint"] = "/srv"
    with pytest.raises(DiskError) as e:
        plan_layout(m, L.plan(), {"system": 20 * GiB})
    assert e.value.code == "disk.no_root"


def test_unsupported_root_filesystem_is_refused():
    m = L.gpt_bios()
    m["filesystems"][0]["type"] = "btrfs"
    with pytest.raises(DiskError) as e:
        plan_layout(m, L.plan(), {"system": 20 * GiB})
    assert e.value.code == "disk.unsupported_filesystem" and "btrfs" in e.value.message


def test_uuid_collision_with_receiver_gets_a_new_stable_uuid():
    taken = [L.UUID_ROOT, "0x9c4e1d2a"]
    a = planned(L.mbr_boot_root_swap(), L.plan(), {"system": 20 * GiB}, taken_ids=taken)
    b = planned(L.mbr_boot_root_swap(), L.plan(), {"system": 20 * GiB}, taken_ids=taken)
    root = next(f for f in a["filesystems"] if f["system_mountpoint"] == "/")
    assert root["uuid"] != L.UUID_ROOT and root["source_uuid"] == L.UUID_ROOT
    assert a["id_changes"] == b["id_changes"]  # same on resume
    kinds = {c["kind"]: c for c in a["id_changes"]}
    assert kinds["filesystem"]["old"] == L.UUID_ROOT
    assert kinds["filesystem"]["new"] == root["uuid"]
    assert kinds["table_id"]["new"] != "0x9c4e1d2a"
    assert a["disks"][0]["partitions"][0]["partuuid"].startswith(kinds["table_id"]["new"][2:])
    assert "-U %s" % root["uuid"] in " ".join(" ".join(x) for x in steps(a)[1:])
    # untouched filesystems keep theirs
    boot = next(f for f in a["filesystems"] if f["system_mountpoint"] == "/boot")
    assert boot["uuid"] == L.UUID_BOOT


def test_data_disk_path_that_is_a_folder_gets_a_new_ext4():
    layout = planned(L.gpt_bios(), L.plan([(1, "/srv/files")]),
                         {"system": 20 * GiB, "disk1": 20 * GiB})
    f = next(f for f in layout["filesystems"] if f["module"] == "disk1")
    assert f["type"] == "ext4" and f["uuid"] is None and f["system_mountpoint"] == "/srv/files"
    assert ["mkfs.ext4", "-F", "-q", "-E", "nodiscard", "-O",
            "^metadata_csum_seed,^orphan_file", "/dev/vdc1"] in steps(layout)


def test_debian12_manifest_from_h2_plans_and_renders_for_review():
    m = L.base()
    layout = planned(m, L.plan([(1, "/srv/data")]),
                         {"system": 40 * GiB, "disk1": 100 * GiB})
    text = render_review(Layout.from_json(layout))
    assert "system: 40.00 GiB, MBR (from /dev/sda)" in text
    assert "disk1: 100.00 GiB, GPT (from /dev/sdb)" in text
    assert "swap UUID=0d8f3e6a-7b2c-4c1d-8e9f-a0b1c2d3e4f5" in text
    # needs_recovery is runtime state, never replayed
    mk = [x for x in steps(layout) if isinstance(x, list) and x[0] == "mkfs.ext4"][0]
    assert "needs_recovery" not in mk[mk.index("-O") + 1]


def test_same_device_mounted_twice_is_made_once():
    m = L.gpt_bios()
    twice = dict(m["filesystems"][0], mountpoint="/srv/again")
    m["filesystems"].append(twice)
    layout = planned(m, L.plan(), {"system": 20 * GiB})
    assert len(layout["filesystems"]) == 1
    assert len(layout["disks"][0]["partitions"]) == 2

