"""Parsers of receiver.disks.probe on output captured on this machine (tests/data/disks)."""

import os

from receiver.disks import probe
from receiver.disks.apply import parse_disk_args
from wire.errors import UsageError

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "data", "disks")


def read(name):
    with open(os.path.join(DATA, name)) as f:
        return f.read()


def test_parse_sfdisk_json_gpt():
    t = probe.parse_sfdisk_json(read("sfdisk-gpt.json"))
    assert t["label"] == "gpt" and t["id"] == "5E3B0C27-8F4A-4C51-9D8B-2A6F1E0C7B11"
    assert [p["number"] for p in t["partitions"]] == [1, 2, 3, 4]
    assert t["partitions"][0] == {
        "node": "/dev/loop0p1", "number": 1, "start": 2048, "size": 2048,
        "type": "21686148-6449-6E6F-744E-656564454649",
        "uuid": "0B1D6E42-4D6B-4C1E-A0C6-5B7B2E9F4A10", "name": "bios", "bootable": False}


def test_parse_sfdisk_json_dos_with_logical():
    t = probe.parse_sfdisk_json(read("sfdisk-dos.json"))
    assert t["label"] == "dos" and t["id"] == "0x9c4e1d2a"
    assert [(p["number"], p["type"]) for p in t["partitions"]] == [
        (1, "83"), (2, "82"), (3, "5"), (5, "83")]
    assert t["partitions"][0]["bootable"] and not t["partitions"][1]["bootable"]


def test_parse_blkid_export_single_and_all():
    v = probe.parse_blkid_export(read("blkid-p-vfat.txt"))
    assert len(v) == 1 and v[0]["TYPE"] == "vfat" and v[0]["UUID"] == "ABCD-1234"
    x = probe.parse_blkid_export(read("blkid-p-xfs.txt"))[0]
    assert x["TYPE"] == "xfs" and x["UUID"] == "a1b2c3d4-e5f6-4718-9a0b-c1d2e3f4a5b6"
    d = probe.parse_blkid_export(read("blkid-p-disk-gpt.txt"))[0]
    assert d["PTTYPE"] == "gpt" and "TYPE" not in d
    everything = probe.parse_blkid_export(read("blkid-all.txt"))
    assert [e["DEVNAME"] for e in everything] == [
        "/dev/loop0p3", "/dev/loop0p1", "/dev/loop0p4", "/dev/loop0p2"]
    assert everything[0]["TYPE"] == "swap"
    assert probe.parse_blkid_export("") == []


def test_parse_mountinfo_and_swaps():
    mounts = probe.parse_mountinfo(read("mountinfo.txt"))
    root = [m for m in mounts if m["mountpoint"] == "/"][0]
    assert root["major_minor"] == "254:0" and root["fstype"] == "ext4"
    assert root["source"] == "/dev/vda"
    assert probe.parse_mountinfo(
        "50 27 7:1 / /mnt/with\\040space rw - ext4 /dev/loop1 rw\n")[0]["mountpoint"] == \
        "/mnt/with space"
    assert probe.parse_swaps(read("swaps.txt")) == []
    assert probe.parse_swaps("Filename Type Size Used Priority\n/dev/vda2 partition 1 0 -2\n") \
        == ["/dev/vda2"]


def test_parse_dumpe2fs_and_xfs_info():
    e = probe.parse_dumpe2fs(read("dumpe2fs-ext4.txt"))
    assert e["uuid"] == "5f3c2a71-8d0e-4b5a-9f4e-1c2d3b4a5e6f" and e["label"] == "root"
    assert "has_journal" in e["features"] and "extent" in e["features"]
    assert e["inode_size"] == 256 and e["block_size"] == 1024  # a 200 MiB fs
    x = probe.parse_xfs_info(read("xfs_info-nobigtime.txt"))
    assert x["bigtime"] == 0 and x["inobtcount"] == 0 and x["nrext64"] == 0
    assert x["crc"] == 1 and x["ftype"] == 1 and x["bsize"] == 4096


def test_parse_disk_args():
    assert parse_disk_args(["system=/dev/vdb", "disk1=/dev/vdc"]) == {
        "system": "/dev/vdb", "disk1": "/dev/vdc"}
    for bad in (["vdb"], ["system=vdb"], ["disk17=/dev/vdc"], ["root=/dev/vdb"],
                ["system=/dev/vdb", "system=/dev/vdc"]):
        try:
            parse_disk_args(bad)
        except UsageError as e:
            assert "--disk" in e.message
        else:
            raise AssertionError("accepted %r" % bad)
