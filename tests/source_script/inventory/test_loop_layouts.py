"""The inventory on real layouts: loop devices, sfdisk, mkfs, mounts under a temporary
root, then ``collect(root=that)`` (see layouts.py for what this kernel cannot do:
no device-mapper, no vfat mounts)."""

import pytest

from source_script.inventory import collect

from . import layouts
from .conftest import validate

MiB = 1024 * 1024
pytestmark = pytest.mark.root


def by(items, key):
    return {x[key]: x for x in items}


def test_mbr_boot_root_swap():
    with layouts.mbr_boot_root_swap() as lay:
        m = collect(lay.root)
        validate(m)
        (disk,) = m["disks"]
        assert disk["path"] == lay.loop and disk["table"] == "dos"
        assert disk["size_bytes"] == 128 * MiB
        parts = by(disk["partitions"], "number")
        assert sorted(parts) == [1, 2, 5, 6]
        assert parts[1]["bootable"] and parts[1]["path"] == lay.part(1)
        assert parts[2]["flags"] == ["extended"] and parts[6]["type"] == "82"
        assert parts[5]["start_bytes"] == 69632 * 512 and parts[5]["size_bytes"] == 64 * MiB
        fs = by(m["filesystems"], "mountpoint")
        assert set(fs) == {"/", "/boot"}  # the extended and swap partitions hold none
        boot, root = fs["/boot"], fs["/"]
        assert (boot["device"], boot["type"], boot["label"]) == (lay.part(1), "ext4", "boot")
        assert boot["uuid"] == "3c1f7a52-2b0d-4a8e-9d61-0f4e8b7c2a11"
        assert boot["used_bytes"] >= 3 * MiB  # the payload written there
        assert root["label"] == "rootfs" and root["block_size"] == 1024
        assert "metadata_csum" not in root["ext_features"]
        assert "64bit" not in root["ext_features"] and "extent" in root["ext_features"]
        (swap,) = m["swap"]
        assert (swap["kind"], swap["path"], swap["label"]) == ("partition", lay.part(6), "swap0")
        assert swap["in_fstab"] and not swap["active"] and swap["size_bytes"] == 28 * MiB
        assert {x["mountpoint"] for x in m["mounts"]} == {"/", "/boot"}
        assert [e["file"] for e in m["fstab"]] == ["/", "/boot", "none"]
        assert m["lvm"] == {"pvs": [], "vgs": [], "lvs": []}
        assert not [w for w in m["warnings"] if w["probe"] in ("disks", "filesystems")]


def test_gpt_esp_unmounted_and_xfs_root():
    with layouts.gpt_esp_xfs() as lay:
        m = collect(lay.root)
        validate(m)
        (disk,) = m["disks"]
        assert disk["table"] == "gpt"
        p1, p2, p3 = disk["partitions"]
        assert p1["flags"] == ["bios_grub"] and p2["flags"] == ["esp"]
        assert p2["name"] == "EFI System" and p3["bootable"]
        fs = by(m["filesystems"], "device")
        esp = fs[lay.part(2)]
        assert (esp["type"], esp["uuid"], esp["label"], esp["mountpoint"]) == \
            ("vfat", "1234-ABCD", "ESP", None)
        assert esp["vfat_id"] == "1234ABCD"
        assert 60 * MiB < esp["size_bytes"] <= 64 * MiB  # read by fsck.fat -n, unmounted
        assert 0 < esp["used_bytes"] < MiB
        root = fs[lay.part(3)]
        assert (root["type"], root["mountpoint"], root["label"]) == ("xfs", "/", "root")
        assert root["uuid"] == "6b1e2c3d-4f5a-4b6c-8d7e-9f0a1b2c3d4e"
        x = root["xfs_features"]
        assert (x["crc"], x["ftype"], x["bigtime"], x["inobtcount"]) == (1, 1, 0, 0)
        assert root["used_bytes"] > 0 and root["block_size"] == 4096
        (swap,) = m["swap"]
        assert swap == {"kind": "file", "path": "/swapfile", "uuid": None, "label": None,
                        "size_bytes": 8 * MiB, "active": False, "in_fstab": True}
        assert m["firmware"] == "uefi"  # an ESP in fstab and no BIOS GRUB


def test_btrfs_subvolumes_default_snapshot_and_quota():
    with layouts.btrfs_subvolumes() as lay:
        m = collect(lay.root)
        validate(m)
        fs = by(m["filesystems"], "mountpoint")
        root = fs["/"]
        assert (root["type"], root["uuid"]) == ("btrfs", "0b7e2f1a-9c3d-4e5f-a6b7-c8d9e0f1a2b3")
        assert len(m["filesystems"]) == 1  # one filesystem, however many mounts
        b = root["btrfs"]
        subs = by(b["subvolumes"], "path")
        assert sorted(subs) == ["@", "@/var/lib/machines", "@home", "@snap-1"]
        assert (subs["@"]["mountpoint"], subs["@home"]["mountpoint"]) == ("/", "/home")
        assert subs["@snap-1"]["mountpoint"] is None
        assert subs["@snap-1"]["snapshot_of"] == subs["@"]["uuid"]
        assert subs["@home"]["snapshot_of"] is None
        assert subs["@/var/lib/machines"]["parent"] == subs["@"]["id"]
        assert b["default_id"] == subs["@"]["id"] and b["quota"] is True
        assert not [w for w in m["warnings"] if w["probe"] == "filesystems"]


def test_lvm_root_metadata():
    # No device-mapper here: the LVs exist in the metadata only (never activated), so
    # PV, VG and LV names, UUIDs and sizes are read; the LVs' filesystems cannot be.
    with layouts.lvm_root() as lay:
        m = collect(lay.root)
        validate(m)
        (disk,) = m["disks"]
        assert [p["flags"] for p in disk["partitions"]] == [["boot", "linux"], ["lvm"]]
        (pv,) = m["lvm"]["pvs"]
        assert pv["name"] == lay.part(2) and pv["vg"] == lay.vg
        (vg,) = m["lvm"]["vgs"]
        assert vg["name"] == lay.vg and vg["lv_count"] == 2 and vg["pv_count"] == 1
        lvs = by(m["lvm"]["lvs"], "name")
        assert lvs["root"]["size_bytes"] == 60 * MiB and lvs["swap"]["size_bytes"] == 16 * MiB
        assert lvs["root"]["path"] == "/dev/%s/root" % lay.vg and not lvs["root"]["active"]
        assert len(lvs["root"]["uuid"]) == 38
        (swap,) = m["swap"]
        assert (swap["kind"], swap["path"], swap["in_fstab"]) == \
            ("lv", "/dev/%s/swap" % lay.vg, True)
        assert [f["device"] for f in m["filesystems"]] == [lay.part(1)]
        # a PV on this machine that is not ours is not reported
        assert all(p["name"].startswith(lay.loop) for p in m["lvm"]["pvs"])


def test_this_host_never_raises():
    m = collect("/")
    validate(m)
    assert m["root"] == "/" and m["arch"] and m["mounts"]
    assert any(x["mountpoint"] == "/" for x in m["mounts"])
