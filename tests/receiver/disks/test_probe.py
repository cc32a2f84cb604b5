"""The parsers the receiver's probes use (wire.parsers, one parser per
format) on output captured on this machine (tests/data/disks)."""

import os

from receiver.disks.apply import parse_disk_args
from wire import parsers
from wire.errors import UsageError

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "data", "disks")


def read(name):
    with open(os.path.join(DATA, name)) as f:
        return f.read()


def test_parse_sfdisk_json_gpt():
    t = parsers.parse_sfdisk_json(read("sfdisk-gpt.json"))
    assert t["table"] == "gpt" and t["label"] == "gpt"
    assert t["table_id"] == "5E3B0C27-8F4A-4C51-9D8B-2A6F1E0C7B11"
    assert [p["number"] for p in t["partitions"]] == [1, 2, 3, 4]
    assert t["sector_size"] == 512
    assert t["partitions"][0] == {
        "path": "/dev/loop0p1", "number": 1, "start_bytes": 2048 * 512,
        "size_bytes": 2048 * 512, "type": "21686148-6449-6E6F-744E-656564454649",
        "partuuid": "0B1D6E42-4D6B-4C1E-A0C6-5B7B2E9F4A10", "name": "bios",
        "bootable": False, "flags": ["bios_grub"], "attrs": None}


def test_parse_sfdisk_json_dos_with_logical():
    t = parsers.parse_sfdisk_json(read("sfdisk-dos.json"))
    assert t["table"] == "dos" and t["table_id"] == "0x9c4e1d2a"
    assert [(p["number"], p["type"]) for p in t["partitions"]] == [
        (1, "83"), (2, "82"), (3, "5"), (5, "83")]
    assert [p["start_bytes"] // t["sector_size"] for p in t["partitions"]] == [
        2048, 411648, 477184, 479232]
    assert t["partitions"][0]["bootable"] and not t["partitions"][1]["bootable"]


def test_parse_blkid_single_and_all():
    v = parsers.parse_blkid(read("blkid-p-vfat.txt"))
    assert len(v) == 1 and v[0]["TYPE"] == "vfat" and v[0]["UUID"] == "ABCD-1234"
    x = parsers.parse_blkid(read("blkid-p-xfs.txt"))[0]
    assert x["TYPE"] == "xfs" and x["UUID"] == "a1b2c3d4-e5f6-4718-9a0b-c1d2e3f4a5b6"
    d = parsers.parse_blkid(read("blkid-p-disk-gpt.txt"))[0]
    assert d["PTTYPE"] == "gpt" and "TYPE" not in d
    everything = parsers.parse_blkid(read("blkid-all.txt"))
    assert [e["DEVNAME"] for e in everything] == [
        "/dev/loop0p3", "/dev/loop0p1", "/dev/loop0p4", "/dev/loop0p2"]
    assert everything[0]["TYPE"] == "swap"
    assert parsers.parse_blkid("") == []


def test_parse_blkid_splits_on_a_repeated_devname():
    joined = "\n".join(line for line in read("blkid-all.txt").splitlines() if line.strip())
    assert "\n\n" not in joined
    assert [e["DEVNAME"] for e in parsers.parse_blkid(joined)] == [
        "/dev/loop0p3", "/dev/loop0p1", "/dev/loop0p4", "/dev/loop0p2"]


def test_parse_blkid_unescapes_values():
    # mkfs.ext4 -L 'a b"c$\' on a file, then blkid -p -o export: LABEL=a\ b\"c\$\\
    (tags,) = parsers.parse_blkid(read("blkid-p-label-escapes.txt"))
    assert tags["LABEL"] == 'a b"c$\\' and tags["TYPE"] == "ext4"


def test_parse_mountinfo_and_swaps():
    mounts = parsers.parse_mountinfo(read("mountinfo.txt"))
    root = [m for m in mounts if m["mountpoint"] == "/"][0]
    assert root["major_minor"] == "254:0" and root["fstype"] == "ext4"
    assert root["source"] == "/dev/vda" and root["fs_root"] == "/"
    assert parsers.parse_mountinfo(
        "50 27 7:1 / /mnt/with\\040space rw - ext4 /dev/loop1 rw\n")[0]["mountpoint"] == \
        "/mnt/with space"
    assert parsers.parse_proc_swaps(read("swaps.txt")) == []
    assert parsers.parse_proc_swaps(
        "Filename Type Size Used Priority\n/dev/vda2 partition 1 0 -2\n") == [
        {"path": "/dev/vda2", "kind": "partition", "size_bytes": 1024}]


def test_parse_dumpe2fs_and_xfs_info():
    e = parsers.parse_dumpe2fs(read("dumpe2fs-ext4.txt"))
    assert e["uuid"] == "5f3c2a71-8d0e-4b5a-9f4e-1c2d3b4a5e6f" and e["label"] == "root"
    assert "has_journal" in e["features"] and "extent" in e["features"]
    assert e["inode_size"] == 256 and e["block_size"] == 1024  # a 200 MiB fs
    x = parsers.parse_xfs_info(read("xfs_info-nobigtime.txt"))
    f = x["features"]
    assert f["bigtime"] == 0 and f["inobtcount"] == 0 and f["nrext64"] == 0
    assert f["crc"] == 1 and f["ftype"] == 1 and x["block_size"] == 4096
    assert x["inode_size"] == 512


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
