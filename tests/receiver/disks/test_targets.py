"""Which disks a receiver launched by hand takes (receiver.disks.targets), on lsblk and
``blkid -p`` output of an ECS-like instance (tests/data/disks/lsblk-receiver.txt,
blkid-p-receiver.txt): its own disk, the NoCloud/cidata CD, a floppy drive (qemu), a blank
disk of 20 and one of 100 GiB, a disk holding an LVM PV with an active LV, an ext4 on a
whole disk, a partitioned disk, a read-only disk, a small blank disk, a zram swap; then
the plan's modules matched to the blank ones by size."""

import os

import pytest

from receiver import blockdev
from receiver.disks import targets
from receiver.disks.plan import plan_layout
from tests.receiver.disks import layouts as L
from wire import parsers, runner
from wire.errors import DiskError

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "data", "disks")
GiB = 1 << 30


def read(name):
    with open(os.path.join(DATA, name)) as f:
        return f.read()


def captured():
    rows = parsers.parse_lsblk(read("lsblk-receiver.txt"))
    sigs = {t["DEVNAME"]: t for t in parsers.parse_blkid(read("blkid-p-receiver.txt"))}
    for r in rows:  # blkid -p said nothing (exit 2) for the others
        if not r.get("pkname") and r["name"] not in sigs:
            sigs[r["name"]] = {}
    return rows, sigs


def test_only_blank_disks_nothing_uses_are_targets():
    rows, sigs = captured()
    found, refused = targets.blank_disks(rows, sigs, swaps=["/dev/zram0"])
    assert found == [
        {"path": "/dev/vdb", "size": 20 * GiB, "forced": False},
        {"path": "/dev/vdc", "size": 100 * GiB, "forced": False},
        {"path": "/dev/vdh", "size": 5 * GiB, "forced": False},
        {"path": "/dev/vdaa", "size": 20 * GiB, "forced": False},  # after vdh: kernel order
    ]
    why = {r["path"]: r["reason"] for r in refused}
    assert set(why) == {"/dev/fd0", "/dev/vda", "/dev/vdd", "/dev/vde", "/dev/vdf",
                        "/dev/vdg", "/dev/zram0"}  # sr0 is no disk
    assert why["/dev/fd0"] == "removable"  # qemu's floppy drive, seen in the appliance VM
    assert why["/dev/vda"] == "in use by this machine (/dev/vda1 at /)"
    assert why["/dev/vdd"].startswith("not blank: holds a LVM2_member signature, "
                                      "/dev/mapper/held-lv on it; name it with "
                                      "--force-wipe /dev/vdd")
    assert why["/dev/vde"].startswith("not blank: holds a ext4 signature;")
    assert why["/dev/vdf"].startswith("not blank: holds a gpt partition table, /dev/vdf1 "
                                      "on it;")
    assert why["/dev/vdg"] == "read-only"
    assert why["/dev/zram0"].startswith("in use by this machine (")


def test_force_wipe_lets_a_disk_with_data_in_but_never_one_in_use():
    rows, sigs = captured()
    found, refused = targets.blank_disks(rows, sigs, force_wipe=["vde", "/dev/vdf", "vda",
                                                                 "/dev/vdg"])
    got = {d["path"]: d["forced"] for d in found}
    assert got["/dev/vde"] is True and got["/dev/vdf"] is True and got["/dev/vdb"] is False
    why = {r["path"]: r["reason"] for r in refused}
    assert why["/dev/vda"].startswith("in use")  # the receiver's own disk: never
    assert why["/dev/vdg"] == "read-only"


def test_a_disk_mounted_through_a_volume_on_it_is_in_use():
    rows = parsers.parse_lsblk(
        'NAME="/dev/vdb" TYPE="disk" SIZE="1073741824" RO="0" PKNAME="" MOUNTPOINT=""\n'
        'NAME="/dev/vdb1" TYPE="part" SIZE="1072693248" RO="0" PKNAME="/dev/vdb" '
        'MOUNTPOINT=""\n'
        'NAME="/dev/mapper/vg-lv" TYPE="lvm" SIZE="1069547520" RO="0" PKNAME="/dev/vdb1" '
        'MOUNTPOINT="/srv"\n')
    found, refused = targets.blank_disks(rows, {"/dev/vdb": {"PTTYPE": "dos"}},
                                         force_wipe=["/dev/vdb"])
    assert found == [] and refused == [
        {"path": "/dev/vdb", "reason": "in use by this machine (/dev/mapper/vg-lv at /srv)"}]


def test_loop_devices_count_only_when_asked():
    rows = parsers.parse_lsblk(
        'NAME="/dev/loop7" TYPE="loop" SIZE="1073741824" RO="0" PKNAME="" MOUNTPOINT=""\n')
    assert targets.blank_disks(rows, {"/dev/loop7": {}}) == ([], [])
    assert targets.blank_disks(rows, {"/dev/loop7": {}}, types=("disk", "loop"))[0] == [
        {"path": "/dev/loop7", "size": GiB, "forced": False}]


def test_min_bytes_asks_the_layout_planner():
    manifest, plan = L.xfs_root(), L.plan(data_disks=[(1, "/data")])
    need = targets.min_bytes(manifest, plan)
    assert set(need) == {"system", "disk1"} and 0 < need["disk1"] < need["system"] < 3 * GiB
    # exactly the least the planner takes
    plan_layout(manifest, plan, {"system": need["system"], "disk1": need["disk1"]})
    with pytest.raises(DiskError) as e:
        plan_layout(manifest, plan, {"system": need["system"] - 512 * 2048,
                                     "disk1": need["disk1"]})
    assert e.value.code == "disk.too_small"


def disks(*sizes_gib):
    return [{"path": "/dev/vd%s" % chr(ord("b") + n), "size": int(s * GiB)}
            for n, s in enumerate(sizes_gib)]


def test_match_in_device_order_when_that_fits():
    assert targets.match_disks({"system": 3 * GiB, "disk1": 1 * GiB}, disks(20, 20)) == {
        "system": "/dev/vdb", "disk1": "/dev/vdc"}
    # more blank disks than modules: the first ones
    assert targets.match_disks({"system": 3 * GiB}, disks(20, 20, 40)) == {
        "system": "/dev/vdb"}


def test_match_by_size_when_device_order_does_not_fit():
    # the operator made the data disk first: system needs 30, disk1 needs 8
    got = targets.match_disks({"system": 30 * GiB, "disk1": 8 * GiB}, disks(10, 40))
    assert got == {"system": "/dev/vdc", "disk1": "/dev/vdb"}
    # smallest need first, smallest disk that holds it: all three placed
    got = targets.match_disks({"system": 15 * GiB, "disk1": 5 * GiB, "disk2": 25 * GiB},
                              disks(30, 6, 20))
    assert got == {"system": "/dev/vdd", "disk1": "/dev/vdc", "disk2": "/dev/vdb"}


@pytest.mark.parametrize("blank,needs", [
    ((20,), {"system": 3 * GiB, "disk1": GiB}),          # one disk short
    ((2, 20), {"system": 3 * GiB, "disk1": 30 * GiB}),  # too small
    ((), {"system": 3 * GiB}),                           # none at all
])
def test_a_clear_refusal_when_the_blank_disks_do_not_fit(blank, needs):
    with pytest.raises(DiskError) as e:
        targets.match_disks(needs, disks(*blank))
    err = e.value
    assert err.code == "disk.no_fit" and err.exit_code == 11
    assert "it needs %d disk(s) (system >= 3.0 GiB" % len(needs) in err.message
    assert ("this receiver has %d blank disk(s): " % len(blank)) in err.message
    if blank:
        assert "/dev/vdb %.1f GiB" % blank[0] in err.message
    assert "attach empty disks" in err.hint and "--disk" in err.hint


# ------------------------------------------------------- real loop devices (root)

@pytest.mark.root
def test_real_loop_devices_blank_partitioned_filesystem_and_mounted(tmp_path):
    """The probe (lsblk + blkid -p, no udev) on loop devices made here: only the blank
    one is taken; --force-wipe lets the partitioned one and the ext4 one in, never the
    mounted one. Detached and unmounted even on failure."""
    mib = 1 << 20
    sizes = {"a-blank": 64 * mib, "b-table": 64 * mib, "c-ext4": 64 * mib, "d-mounted": 64 * mib}
    mnt = str(tmp_path / "mnt")
    os.makedirs(mnt)
    with blockdev.blank_disks(str(tmp_path), sizes) as devs:
        runner.run(["sfdisk", "-q", devs["b-table"]], input="label: dos\n,,83\n")
        runner.run(["mkfs.ext4", "-q", "-F", devs["c-ext4"]])
        runner.run(["mkfs.ext4", "-q", "-F", devs["d-mounted"]])
        runner.run(["mount", devs["d-mounted"], mnt])
        try:
            only = list(devs.values())
            found, refused = targets.probe_blank_disks(types=("loop",), only=only)
            assert found == [{"path": devs["a-blank"], "size": 64 * mib, "forced": False}]
            why = {r["path"]: r["reason"] for r in refused}
            assert why[devs["b-table"]].startswith("not blank: holds a dos partition table")
            assert why[devs["c-ext4"]].startswith("not blank: holds a ext4 signature")
            assert why[devs["d-mounted"]] == "in use by this machine (%s at %s)" % (
                devs["d-mounted"], mnt)
            found, refused = targets.probe_blank_disks(
                types=("loop",), only=only,
                force_wipe=[devs["b-table"], os.path.basename(devs["c-ext4"]),
                            devs["d-mounted"]])
            assert sorted((d["path"], d["forced"]) for d in found) == sorted([
                (devs["a-blank"], False), (devs["b-table"], True), (devs["c-ext4"], True)])
            assert [r["path"] for r in refused] == [devs["d-mounted"]]
        finally:
            runner.run(["umount", mnt])
