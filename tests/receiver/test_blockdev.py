"""Loop devices: partition nodes are right even when a stale node is in the way, and a
node nothing backs is removed at detach (``root``, real loop devices, about 1 s)."""

import os
import stat

import pytest

from receiver import blockdev
from wire import runner

pytestmark = pytest.mark.root

MIB = 1024 * 1024


def _image(tmp_path):
    path = str(tmp_path / "disk.img")
    with open(path, "wb") as f:
        f.truncate(16 * MIB)
    runner.run(["sfdisk", "-q", path], input="label: dos\n,4MiB,L\n,,L\n")
    return path


def _rdev(node):
    st = os.stat(node)
    assert stat.S_ISBLK(st.st_mode)
    return "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))


def _sys_dev(dev, number):
    name = os.path.basename(dev) + "p%d" % number
    with open("/sys/class/block/%s/dev" % name) as f:
        return f.read().strip()


def test_stale_node_is_replaced_and_removed_at_detach(tmp_path):
    image = _image(tmp_path)
    dev = blockdev.attach(image, read_only=True)
    try:
        # what a container or an earlier test can leave: p2 pointing at nothing
        node = blockdev.partition(dev, 2)
        os.unlink(node)
        os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(259, 999999 % 1048576))
    finally:
        blockdev.detach(dev)
    assert not os.path.exists(blockdev.partition(dev, 2)), "stale node left after detach"

    # the same stale node made again before the next attach of that device
    os.mknod(blockdev.partition(dev, 2), 0o600 | stat.S_IFBLK, os.makedev(259, 999998 % 1048576))
    with blockdev.attached(image, read_only=True) as again:
        for n in (1, 2):
            assert _rdev(blockdev.partition(again, n)) == _sys_dev(again, n)
        blkid = runner.run(["blkid", "-p", blockdev.partition(again, 2)], ok_codes=None)
        assert "not a valid block device" not in blkid.stderr
    if again != dev:
        blockdev.detach(dev)  # our stale node was on a device someone else took


def test_blank_disks_are_detached_even_on_failure(tmp_path):
    with pytest.raises(RuntimeError), \
            blockdev.blank_disks(str(tmp_path), {"a": 8 * MIB, "b": 8 * MIB}) as devs:
        assert set(devs) == {"a", "b"}
        raise RuntimeError("boom")
    for name in ("a", "b"):
        out = runner.run(["losetup", "-j", str(tmp_path / ("%s.img" % name))]).stdout
        assert out.strip() == ""
