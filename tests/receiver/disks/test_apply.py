"""prepare() on real loop devices (sparse image files), checked with sfdisk --json, blkid,
dumpe2fs -h, xfs_info and minfo. Every loop device and mount is removed in finally.

UUIDs and table ids are made random per test: other engineers' loop devices on this
machine must not collide with ours (a collision would, correctly, change the UUID)."""

import contextlib
import hashlib
import os
import random
import stat
import uuid

import pytest

from receiver import blockdev
from receiver.disks import probe
from receiver.disks.apply import LVM_ENV, prepare, release, rename_vg, review
from receiver.disks.plan import GiB, plan_layout
from receiver.disks.render import pv_devices, render_lvm
from tests.receiver.conftest import unmount_under
from tests.receiver.disks import layouts as L
from wire import parsers, runner
from wire.errors import DiskError

pytestmark = pytest.mark.root
MiB = 1 << 20
U = 64 * MiB  # the layouts' unit: sizes scaled down for loop devices


def randomize(m):
    """Fresh UUIDs, PARTUUIDs and table ids in manifest ``m`` (in place)."""
    for d in m["disks"]:
        if d["table"] == "gpt":
            d["table_id"] = str(uuid.uuid4()).upper()
            for p in d["partitions"]:
                p["partuuid"] = str(uuid.uuid4()).upper()
        elif d["table"] == "dos":
            d["table_id"] = "0x%08x" % random.getrandbits(32)
    for f in m["filesystems"]:
        if f["type"] == "vfat":
            h = "%08X" % random.getrandbits(32)
            f["uuid"], f["vfat_id"] = "%s-%s" % (h[:4], h[4:]), h
        else:
            f["uuid"] = str(uuid.uuid4())
    for s in m["swap"]:
        s["uuid"] = str(uuid.uuid4())
    return m


def uuid_of(m, mountpoint):
    return next(f["uuid"] for f in m["filesystems"] if f["mountpoint"] == mountpoint)


class Loops(object):
    def __init__(self, tmp):
        self.tmp = tmp
        self.devices = []
        self.files = {}

    def new(self, size):
        path = os.path.join(self.tmp, "disk%d.img" % len(self.devices))
        with open(path, "wb") as f:
            f.truncate(size)
        dev = blockdev.attach(path, partitions=())
        self.devices.append(dev)
        self.files[dev] = path
        return dev


@pytest.fixture
def loops(tmp_path):
    lp = Loops(str(tmp_path))
    try:
        yield lp
    finally:
        unmount_under(str(tmp_path))
        for dev in lp.devices:
            blockdev.detach(dev)  # also the nodes a test made by hand


@pytest.fixture
def mnt(tmp_path):
    d = tmp_path / "mnt"
    d.mkdir()
    return str(d)


def sfdisk_json(dev):
    return parsers.parse_sfdisk_json(runner.run(["sfdisk", "--json", dev]).stdout)


def blkid(dev):
    return probe.probe_signature(dev)


def dumpe2fs(dev):
    return parsers.parse_dumpe2fs(runner.run(["dumpe2fs", "-h", dev]).stdout)


def mounted(path):
    return any(m["mountpoint"] == os.path.realpath(path) for m in probe.read_mountinfo())


def test_mbr_boot_root_swap(loops, mnt):
    m = randomize(L.mbr_boot_root_swap(unit=U))
    dev = loops.new(600 * MiB)  # the source disk is 640 MiB: a small shrink
    res = prepare(m, L.plan(), {"system": dev}, mnt)
    try:
        t = sfdisk_json(dev)
        assert t["table"] == "dos" and t["table_id"] == m["disks"][0]["table_id"]
        assert [(p["number"], p["type"], p["bootable"]) for p in t["partitions"]] == [
            (1, "83", True), (2, "83", False), (3, "82", False)]
        assert t["partitions"][0]["size_bytes"] == U // 2  # /boot keeps its size
        assert t["partitions"][2]["size_bytes"] == U  # swap keeps its size
        boot, root, swap = (blkid(dev + "p%d" % n) for n in (1, 2, 3))
        assert (boot["TYPE"], boot["UUID"], boot["LABEL"]) == ("ext4", uuid_of(m, "/boot"),
                                                               "boot")
        assert (root["TYPE"], root["UUID"]) == ("ext4", uuid_of(m, "/"))
        assert (swap["TYPE"], swap["UUID"]) == ("swap", m["swap"][0]["uuid"])
        feats = set(dumpe2fs(dev + "p2")["features"])
        want = set(L.EXT4_DEBIAN12) - {"needs_recovery"}
        assert want <= feats
        assert not feats & {"metadata_csum_seed", "orphan_file"}
        sysroot = os.path.join(mnt, "system")
        assert res["modules"] == {"system": sysroot}
        assert [x["path"] for x in res["mounts"]] == [sysroot, os.path.join(sysroot, "boot")]
        assert mounted(sysroot) and mounted(os.path.join(sysroot, "boot"))
        assert res["device_map"]["/dev/sda5"] == {"module": "system", "partition": 3}
    finally:
        release(res)
    assert not mounted(os.path.join(mnt, "system"))


def test_gpt_bios_boot_shrink_that_fits(loops, mnt):
    m = randomize(L.gpt_bios(unit=U))  # / is 512 MiB with 64 MiB used
    dev = loops.new(300 * MiB)
    res = prepare(m, L.plan(), {"system": dev}, mnt)
    try:
        t = sfdisk_json(dev)
        src = m["disks"][0]
        assert t["table"] == "gpt" and t["table_id"] == src["table_id"]
        p1, p2 = t["partitions"]
        assert p1["type"] == "21686148-6449-6E6F-744E-656564454649"
        assert p1["size_bytes"] == 2048 * 512
        assert p2["partuuid"] == src["partitions"][1]["partuuid"] and p2["name"] == "root"
        assert p2["start_bytes"] + p2["size_bytes"] == 299 * MiB
        e = dumpe2fs(dev + "p2")
        assert e["uuid"] == uuid_of(m, "/") and e["label"] == "root"
        # an old source: no 64bit, no metadata_csum, even though this mke2fs defaults to them
        assert not set(e["features"]) & {"64bit", "metadata_csum", "metadata_csum_seed",
                                         "orphan_file"}
        assert "uninit_bg" in e["features"]
        assert blkid(dev + "p1").get("TYPE") is None
        assert mounted(os.path.join(mnt, "system"))
    finally:
        release(res)


def test_gpt_esp_made_not_mounted(loops, mnt):
    m = randomize(L.gpt_esp(unit=U, esp_size=64 * MiB))
    dev = loops.new(400 * MiB)
    res = prepare(m, L.plan(), {"system": dev}, mnt, skip_mount_types=("vfat",))
    try:
        t = sfdisk_json(dev)
        assert t["partitions"][0]["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
        assert t["partitions"][0]["size_bytes"] == 64 * MiB
        esp = blkid(dev + "p1")
        assert esp["TYPE"] == "vfat" and esp["UUID"] == uuid_of(m, "/boot/efi")
        info = runner.run(["minfo", "-i", dev + "p1", "::"]).stdout
        assert "serial number: %s" % uuid_of(m, "/boot/efi").replace("-", "") in info
        assert [u["mountpoint"] for u in res["unmounted"]] == ["/boot/efi"]
        assert not mounted(os.path.join(mnt, "system", "boot", "efi"))
        assert mounted(os.path.join(mnt, "system"))
    finally:
        release(res)


def test_xfs_without_bigtime_and_data_disk_scaled_up(loops, mnt):
    m = randomize(L.xfs_root(unit=U))  # data partition: 256 MiB on the source
    sysdev, datadev = loops.new(400 * MiB), loops.new(700 * MiB)
    res = prepare(m, L.plan([(1, "/data")]), {"system": sysdev, "disk1": datadev}, mnt)
    try:
        for dev, mp in ((sysdev + "p1", "/"), (datadev + "p1", "/data")):
            sig = blkid(dev)
            assert (sig["TYPE"], sig["UUID"]) == ("xfs", uuid_of(m, mp))
            x = parsers.parse_xfs_info(runner.run(["xfs_info", dev]).stdout)["features"]
            assert x["bigtime"] == 0 and x["inobtcount"] == 0 and x["nrext64"] == 0
            assert x["finobt"] == 0 and x["crc"] == 1 and x["ftype"] == 1
        assert blkid(datadev + "p1")["LABEL"] == "data"
        t = sfdisk_json(datadev)
        assert t["table"] == "gpt" and len(t["partitions"]) == 1
        assert t["partitions"][0]["size_bytes"] == 700 * MiB - 2 * MiB
        d1 = os.path.join(mnt, "disk1")
        assert res["modules"] == {"system": os.path.join(mnt, "system"), "disk1": d1}
        assert mounted(d1)
        st = os.statvfs(d1)
        assert st.f_blocks * st.f_frsize > 600 * MiB
    finally:
        release(res)


def _digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def test_shrink_that_does_not_fit_writes_nothing(loops, mnt):
    m = randomize(L.mbr_boot_root_swap(unit=U))  # needs about 390 MiB
    dev = loops.new(300 * MiB)
    with open(loops.files[dev], "r+b") as f:  # something recognisable, not a layout
        f.seek(5 * MiB)
        f.write(os.urandom(4096))
    before = _digest(loops.files[dev])
    with pytest.raises(DiskError) as e:
        prepare(m, L.plan(), {"system": dev}, mnt)
    assert e.value.code == "disk.too_small"
    assert str(300 * MiB) in e.value.message
    assert _digest(loops.files[dev]) == before
    assert probe.probe_table(dev) is None and os.listdir(mnt) == []


def test_resume_keeps_data_and_foreign_disk_needs_force_wipe(loops, mnt):
    m = randomize(L.gpt_bios(unit=U))
    dev = loops.new(300 * MiB)
    res = prepare(m, L.plan(), {"system": dev}, mnt)
    marker = os.path.join(res["modules"]["system"], "etc", "marker")
    try:
        os.makedirs(os.path.dirname(marker))
        with open(marker, "w") as f:
            f.write("synced data")
        # resume while still mounted (the receiver restarted)
        again = prepare(m, L.plan(), {"system": dev}, mnt)
        assert again["made"] == [] and "partitioned" not in " ".join(again["actions"])
        release(again)
        assert not os.path.exists(marker)
        # resume after an unmount: mounts the same filesystems, data still there
        third = prepare(m, L.plan(), {"system": dev}, mnt)
        assert third["made"] == []
        with open(marker) as f:
            assert f.read() == "synced data"
        release(third)
        # another plan (a different root UUID) meets this disk: refused, not wiped
        other = randomize(L.gpt_bios(unit=U))
        with pytest.raises(DiskError) as e:
            prepare(other, L.plan(), {"system": dev}, mnt)
        assert e.value.code == "disk.not_empty" and "force_wipe system" in e.value.hint
        assert blkid(dev + "p2")["UUID"] == uuid_of(m, "/")
        # asked by name: wiped and rebuilt (even while our old layout is still mounted)
        prepare(m, L.plan(), {"system": dev}, mnt)
        forced = prepare(other, L.plan(), {"system": dev}, mnt, force_wipe=["system"])
        assert mounted(os.path.join(mnt, "system"))
        assert blkid(dev + "p2")["UUID"] == uuid_of(other, "/")
        assert not os.path.exists(marker)
        release(forced)
    finally:
        release(res)


def test_missing_or_stale_partition_nodes_are_remade_not_reformatted(loops, mnt):
    """A restarted container has no partition nodes (or stale ones): preparing again
    must make them and keep the data, never take a missing node for a blank disk."""
    m = randomize(L.gpt_bios(unit=U))
    dev = loops.new(300 * MiB)
    res = prepare(m, L.plan(), {"system": dev}, mnt)
    marker = os.path.join(res["modules"]["system"], "etc", "marker")
    try:
        os.makedirs(os.path.dirname(marker))
        with open(marker, "w") as f:
            f.write("synced data")
        release(res)
        root_node = dev + "p2"
        rdev = os.stat(root_node).st_rdev
        p1_rdev = os.stat(dev + "p1").st_rdev
        os.unlink(root_node)  # gone, as in a fresh container /dev
        # and one stale: p1's node points at p2's device numbers
        os.unlink(dev + "p1")
        os.mknod(dev + "p1", 0o600 | stat.S_IFBLK, rdev)
        again = prepare(m, L.plan(), {"system": dev}, mnt)
        assert again["made"] == [], again["actions"]
        assert os.stat(root_node).st_rdev == rdev
        assert os.stat(dev + "p1").st_rdev == p1_rdev != rdev
        with open(marker) as f:
            assert f.read() == "synced data"
        release(again)
    finally:
        release(res)


def test_disk_in_use_missing_and_uuid_collision(loops, mnt, tmp_path):
    m = randomize(L.gpt_bios(unit=U))
    # the "receiver's own" disk: an ext4 with the source root's UUID, mounted elsewhere
    own = loops.new(64 * MiB)
    runner.run(["mkfs.ext4", "-q", "-U", uuid_of(m, "/"), own])
    elsewhere = str(tmp_path / "own")
    os.mkdir(elsewhere)
    runner.run(["mount", own, elsewhere])
    with pytest.raises(DiskError) as e:
        prepare(m, L.plan(), {"system": own}, mnt)
    assert e.value.code == "disk.in_use" and own in e.value.message
    with pytest.raises(DiskError) as e:
        prepare(m, L.plan(), {"system": "/dev/g2a-no-such-disk"}, mnt)
    assert e.value.code == "disk.missing"

    dev = loops.new(300 * MiB)
    layout, text = review(m, L.plan(), {"system": dev})
    assert probe.probe_table(dev) is None  # review writes nothing
    change = [c for c in layout["id_changes"] if c["kind"] == "filesystem"]
    assert change and change[0]["old"] == uuid_of(m, "/")
    assert "collides with the receiver" in text
    res = prepare(m, L.plan(), {"system": dev}, mnt)
    try:
        new = blkid(dev + "p2")["UUID"]
        assert new == change[0]["new"] != uuid_of(m, "/")
        root = next(f for f in res["filesystems"] if f["mountpoint"] == "/")
        assert root["uuid"] == new and root["source_uuid"] == uuid_of(m, "/")
    finally:
        release(res)
        with contextlib.suppress(Exception):
            runner.run(["umount", elsewhere])


def test_esp_mounted_when_the_kernel_has_vfat_else_refused_before_writing(loops, mnt):
    m = randomize(L.gpt_esp(unit=U, esp_size=64 * MiB))
    dev = loops.new(400 * MiB)
    runner.run(["modprobe", "-q", "vfat"], ok_codes=None)
    with open("/proc/filesystems") as f:
        has_vfat = any(line.split()[-1] == "vfat" for line in f if line.strip())
    if not has_vfat:  # this host: no vfat in the kernel (the VM tests cover mounting it)
        with pytest.raises(DiskError) as e:
            prepare(m, L.plan(), {"system": dev}, mnt)
        assert e.value.code == "disk.kernel_support" and "vfat" in e.value.message
        assert probe.probe_table(dev) is None  # refused before anything was written
        return
    res = prepare(m, L.plan(), {"system": dev}, mnt)
    try:
        assert mounted(os.path.join(mnt, "system", "boot", "efi")) and res["unmounted"] == []
    finally:
        release(res)


def test_data_disk_without_partition_table(loops, mnt):
    m = randomize(L.gpt_bios(unit=U))
    m["disks"].append(L.disk("sdc", 256 * MiB, "none", None, []))
    m["filesystems"].append(L.fs("/dev/sdc", "ext4", str(uuid.uuid4()), "/mnt/disk1",
                                 256 * MiB, 10 * MiB, label="bulk", ext=L.EXT4_DEBIAN12))
    sysdev, datadev = loops.new(300 * MiB), loops.new(200 * MiB)
    res = prepare(m, L.plan([(1, "/mnt/disk1")]), {"system": sysdev, "disk1": datadev}, mnt)
    try:
        assert probe.probe_table(datadev) is None
        sig = blkid(datadev)
        assert (sig["TYPE"], sig["UUID"], sig["LABEL"]) == ("ext4", uuid_of(m, "/mnt/disk1"),
                                                           "bulk")
        assert mounted(os.path.join(mnt, "disk1"))
    finally:
        release(res)


def test_lvm_pv_and_vg_made_and_renamed_without_device_mapper(loops):
    """pvcreate/vgcreate argv run for real (no device-mapper needed); the working name
    of a VG that clashes with the receiver's is given back, also while the receiver's
    VG of that name is active (its /dev/<name> folder exists: vgrename refused the
    name, seen in the receiver VM). LVs need device-mapper: the receiver-VM test makes
    and mounts them."""
    dev = loops.new(200 * MiB)
    vgname = "g2a%s" % uuid.uuid4().hex[:6]
    m = L.lvm_root(unit=GiB)
    for key in ("pvs", "lvs"):
        for x in m["lvm"][key]:
            x["vg"] = vgname
    m["lvm"]["vgs"][0]["name"] = vgname
    for lv in m["lvm"]["lvs"]:
        lv["path"] = "/dev/%s/%s" % (vgname, lv["name"])
    m["filesystems"][1]["device"] = "/dev/%s/root" % vgname
    m["swap"][0]["path"] = "/dev/%s/swap_1" % vgname
    layout = plan_layout(m, L.plan(), {"system": 40 * GiB}, taken_vg_names=[vgname])
    vg = layout.vgs[0]
    pvs = [dev]
    names = lambda: runner.run(  # noqa: E731
        ["vgs", "--devices", dev, "--noheadings", "-o", "vg_name,vg_extent_size",
         "--units", "b"], env=LVM_ENV).stdout.split()
    try:
        for argv in render_lvm(vg, pvs)[:2]:
            runner.run(argv, env=LVM_ENV)
        assert names() == ["g2a-" + vgname, "%dB" % (4 * MiB)]
        os.mkdir("/dev/" + vgname)  # as an active VG of the receiver has it
        try:
            assert rename_vg(vg, pvs, to_source=True)
        finally:
            os.rmdir("/dev/" + vgname)
        assert names()[0] == vgname
        assert rename_vg(vg, pvs, to_source=False)
        assert names()[0] == "g2a-" + vgname
        assert pv_devices(layout, vg, {"system": "/dev/vdb"}) == ["/dev/vdb2"]
    finally:
        for n in ("g2a-" + vgname, vgname):
            runner.run(["vgremove", "-y", "--devices", dev, n], ok_codes=None, env=LVM_ENV)
        runner.run(["pvremove", "-y", "--devices", dev, dev], ok_codes=None, env=LVM_ENV)


def test_mbr_with_logical_partitions(loops, mnt):
    m = randomize(L.mbr_boot_root_swap(unit=U))
    d = m["disks"][0]
    for n, mp in ((6, "/var"), (7, "/home")):
        d["partitions"].append(L.part("sda", n, (4 + n) * U, U, "83", flags=["logical"]))
        m["filesystems"].append(L.fs("/dev/sda%d" % n, "ext4", str(uuid.uuid4()), mp, U,
                                     MiB, ext=L.EXT4_DEBIAN12))
    dev = loops.new(800 * MiB)
    res = prepare(m, L.plan(), {"system": dev}, mnt)
    try:
        t = sfdisk_json(dev)
        assert [(p["number"], p["type"]) for p in t["partitions"]] == [
            (1, "83"), (2, "83"), (3, "82"), (4, "5"), (5, "83"), (6, "83")]
        for n, mp in ((5, "/var"), (6, "/home")):  # source order kept
            assert blkid(dev + "p%d" % n)["UUID"] == uuid_of(m, mp)
        assert mounted(os.path.join(mnt, "system", "var"))
        assert mounted(os.path.join(mnt, "system", "home"))
    finally:
        release(res)


def test_a_mount_point_the_copy_made_a_symlink_stays_inside_it(loops, mnt, tmp_path):
    """After the data came, a PREPARING run again (a restart) mounts where the copy says:
    its /boot may be a symlink out of it; the mount lands inside the copy."""
    m = randomize(L.mbr_boot_root_swap(unit=U))
    dev = loops.new(600 * MiB)
    release(prepare(m, L.plan(), {"system": dev}, mnt))
    outside = str(tmp_path / "outside")
    os.makedirs(outside)
    root = str(tmp_path / "root")
    os.makedirs(root)
    runner.run(["mount", dev + "p2", root])
    try:
        os.rmdir(os.path.join(root, "boot"))
        os.symlink(outside, os.path.join(root, "boot"))  # absolute: the copy's own /...
    finally:
        runner.run(["umount", root])
    res = prepare(m, L.plan(), {"system": dev}, mnt)
    try:
        sysroot = os.path.join(mnt, "system")
        boot = res["mounts"][1]["path"]
        assert boot == os.path.join(sysroot, outside.lstrip("/")) and mounted(boot)
        assert not mounted(outside) and os.listdir(outside) == []
    finally:
        release(res)
