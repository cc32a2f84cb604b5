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
import logging
import os
import re
import stat
import time

from receiver.disks import apply, probe
from receiver.disks.render import partition_device
from wire import runner
from wire.errors import DiskError

log = logging.getLogger(__name__)


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


# --- in a container: no loop nodes in /dev, nodes made from sysfs ---------------------

LOOP_MAJOR = 7


def parse_losetup_j(text):
    """Loop devices from ``losetup -n -O NAME -j FILE`` output (pure)."""
    return [line.strip() for line in text.splitlines() if line.strip().startswith("/dev/loop")]


def loop_number(device):
    m = re.match(r"^/dev/loop(\d+)$", device)
    if not m:
        raise DiskError("not a loop device name: %r" % device, code="disk.invalid")
    return int(m.group(1))


def ensure_loop_node(device):
    """Make ``/dev/loopN`` (block 7:N) when missing; a container's /dev has none."""
    n = loop_number(device)
    try:
        st = os.stat(device)
    except FileNotFoundError:
        os.mknod(device, 0o660 | stat.S_IFBLK, os.makedev(LOOP_MAJOR, n))
        return
    if not stat.S_ISBLK(st.st_mode) or os.major(st.st_rdev) != LOOP_MAJOR:
        raise DiskError("%s exists but is not loop device 7:%d" % (device, n),
                        code="disk.invalid")


def host_loops(sys_block="/sys/block"):
    """Loop devices the kernel has (``/sys/block/loopN``), as ``/dev/loopN`` names."""
    try:
        names = os.listdir(sys_block)
    except OSError:
        return []
    return ["/dev/" + n for n in sorted(names) if re.match(r"^loop\d+$", n)]


def attached_loops(path):
    """Loop devices that already hold ``path`` (after a restart the old one stays).

    ``losetup -j`` must open every loop device to compare the backing inode, so nodes
    are made for all of them for the question and removed again afterwards: the
    receiver must not see (and ``blkid``) other people's loop devices."""
    made = []
    try:
        for dev in host_loops():
            if not os.path.exists(dev):
                ensure_loop_node(dev)
                made.append(dev)
        r = runner.run(["losetup", "-n", "-O", "NAME", "-j", path], ok_codes=None)
        found = parse_losetup_j(r.stdout) if r.returncode == 0 else []
    finally:
        for dev in made:
            with contextlib.suppress(OSError):
                os.unlink(dev)
    return found


def ensure_attached(path, attempts=10):
    """The loop device holding the image file ``path``: reused, or a new one (nodes made
    here; another process may take the free one between asking and attaching: retried).
    ``-P`` (partition scan): the kernel drops partitions a previous user of the device
    left behind, and removes ours when the device is detached."""
    if not os.path.exists("/dev/loop-control"):
        raise DiskError("--disk %s is an image file but /dev/loop-control is missing"
                        % path, code="disk.missing",
                        hint="run the container with --device /dev/loop-control and "
                        "--device-cgroup-rule 'b 7:* rmw' (docs/docker.md)")
    for dev in attached_loops(path):
        ensure_loop_node(dev)
        log.info("reusing %s for %s", dev, path)
        return dev
    last = None
    for _ in range(attempts):
        dev = runner.run(["losetup", "-f"]).stdout.strip()
        ensure_loop_node(dev)
        r = runner.run(["losetup", "-P", dev, path], ok_codes=None)
        if r.returncode == 0:
            log.info("attached %s to %s", path, dev)
            return dev
        last = r.stderr.strip()
        time.sleep(0.2)
    raise DiskError("cannot attach %s to a loop device: %s" % (path, last),
                    code="disk.missing", hint="free a loop device or raise max_loop")


def partition_of(device):
    """(disk, number) of a partition node name such as /dev/loop2p2 or /dev/vdb1 (pure);
    None for anything else (an LVM volume, a whole disk)."""
    m = re.match(r"^(/dev/(?:loop|nvme\d+n|mmcblk)\d+)p(\d+)$", device or "")
    if not m:
        m = re.match(r"^(/dev/[a-z]+)(\d+)$", device or "")
    if not m:
        return None
    return m.group(1), int(m.group(2))


def plan_remount(prepared, disks):
    """[(node name, kernel name, mount path, type)] to mount again, in PREPARING's order,
    with each partition moved to the device the module has now (pure); None when a
    mount is not a plain partition of a target disk (LVM: left to the disks module)."""
    old = prepared.get("devices") or {}
    by_old = {dev: module for module, dev in old.items()}
    out = []
    for m in prepared.get("mounts") or []:
        part = partition_of(m.get("device"))
        if not part or part[0] not in by_old or by_old[part[0]] not in disks:
            return None
        disk = disks[by_old[part[0]]]
        node = ("%sp%d" if disk[-1].isdigit() else "%s%d") % (disk, part[1])
        out.append((node, os.path.basename(node), m["path"], m["type"]))
    return out


def make_node(node, kernel_name, sys_block="/sys/block"):
    disk = re.sub(r"p?\d+$", "", kernel_name)
    with open(os.path.join(sys_block, disk, kernel_name, "dev")) as f:
        major, minor = (int(x) for x in f.read().strip().split(":"))
    want = os.makedev(major, minor)
    if os.path.lexists(node):
        st = os.lstat(node)
        if stat.S_ISBLK(st.st_mode) and st.st_rdev == want:
            return
        os.unlink(node)
    os.mknod(node, 0o660 | stat.S_IFBLK, want)


def mount_fresh(node, kernel_name, path, fstype, attempts=20):
    """mknod from sysfs, then mount; the kernel may renumber the partitions once (a
    rescan it owed the disk while the old container had them mounted), so a failed
    attempt reads sysfs again. A mounted partition can no longer be renumbered."""
    last = None
    for _ in range(attempts):
        try:
            make_node(node, kernel_name)
        except OSError as e:
            last = str(e)
            time.sleep(0.5)
            continue
        os.makedirs(path, exist_ok=True)
        r = runner.run(["mount", "-t", fstype, node, path], ok_codes=None)
        if r.returncode == 0:
            return
        last = r.stderr.strip()
        time.sleep(0.5)
    raise DiskError("cannot mount %s at %s again: %s" % (node, path, last), code="disk.mount",
                    hint="see the receiver's log; `go2aliyun-receiver serve` retries at start")


def mounted_paths():
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4] for line in f}
