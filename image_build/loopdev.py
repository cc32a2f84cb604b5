"""Loop devices over disk image files: the one place that attaches, waits for partition
nodes and detaches (the sample server, the demo's target disks, images read back).

There is no udev on the machines this runs on: the kernel's devtmpfs makes the partition
nodes, and a node left behind by someone else (a container that made its own with mknod,
a device detached while it was in use) can point at a partition that no longer exists.
``receiver.disks.apply.wait_for_partitions`` makes every node right before it is used,
and :func:`detach` removes the nodes of the device that nothing backs any more.
"""

import contextlib
import glob
import os
import stat

from receiver.disks import apply, probe
from receiver.disks.render import partition_device
from wire import runner


def attach(image, read_only=False, partitions=None):
    """Attach ``image`` (with partition scan); returns the loop device. ``partitions``:
    the numbers to wait for, or None for every partition the kernel found."""
    argv = ["losetup", "-f", "--show", "-P"] + (["-r"] if read_only else []) + [image]
    dev = runner.run(argv).stdout.strip()
    try:
        runner.run(["partprobe", dev], ok_codes=None)
        numbers = partitions
        if numbers is None:
            numbers = sorted(probe.partitions_of(probe.block_name(dev)))
        if numbers:
            apply.wait_for_partitions(dev, list(numbers))
    except BaseException:
        detach(dev)
        raise
    return dev


def detach(dev):
    """Detach ``dev`` and remove its partition nodes that no block device backs."""
    runner.run(["losetup", "-d", dev], ok_codes=None)
    live = set()
    for path in glob.glob("/sys/class/block/*/dev"):
        try:
            with open(path) as f:
                live.add(f.read().strip())
        except OSError:
            pass
    for node in glob.glob(dev + "p*"):
        try:
            st = os.stat(node)
        except OSError:
            continue
        if stat.S_ISBLK(st.st_mode) and \
                "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)) not in live:
            with contextlib.suppress(OSError):
                os.unlink(node)


@contextlib.contextmanager
def attached(image, read_only=False, partitions=None):
    """:func:`attach` as a context manager: always detached."""
    dev = attach(image, read_only, partitions)
    try:
        yield dev
    finally:
        detach(dev)


def partition(dev, number):
    """The node of partition ``number`` of loop device ``dev``."""
    return partition_device(dev, number)


@contextlib.contextmanager
def blank_disks(folder, sizes, prefix=""):
    """Sparse files of ``sizes`` ({name: bytes}) in ``folder`` on loop devices, made anew;
    yields {name: device}. Detached even on failure (the files stay)."""
    with contextlib.ExitStack() as stack:
        devs = {}
        for name, size in sorted(sizes.items()):
            path = os.path.join(folder, "%s%s.img" % (prefix, name))
            if os.path.exists(path):
                os.unlink(path)
            with open(path, "wb") as f:
                f.truncate(size)
            devs[name] = stack.enter_context(attached(path, partitions=()))
        yield devs
