"""Look at block devices: ``probe_*`` run one command (or read one kernel file).

The parsers are the source's (:mod:`wire.parsers`, one parser per
format), tested on output captured on a real machine (tests/data/inventory/ and
tests/data/disks/).
"""

import contextlib
import logging
import os

from wire import parsers, runner

log = logging.getLogger(__name__)

SYS_BLOCK = "/sys/class/block"


# ---------------------------------------------------------------- probes (effects)

def probe_table(device):
    """The partition table of ``device`` (:func:`parsers.parse_sfdisk_json`: starts and
    sizes in bytes), or None when it has none."""
    r = runner.run(["sfdisk", "--json", device], ok_codes=None)
    if r.returncode != 0 or not r.stdout.strip():
        return None
    return parsers.parse_sfdisk_json(r.stdout, device)


def probe_signature(device):
    """Low-level probe of one device (no cache): {} when nothing is recognised."""
    r = runner.run(["blkid", "-p", "-o", "export", device], ok_codes=(0, 2))
    found = parsers.parse_blkid(r.stdout)
    return found[0] if found else {}


def probe_all_ids():
    """Every block device blkid can read: [{DEVNAME, UUID, PARTUUID, PTUUID, ...}]."""
    r = runner.run(["blkid", "-c", "/dev/null", "-o", "export"], ok_codes=None)
    return parsers.parse_blkid(r.stdout)


def probe_vg_names():
    """Volume groups the receiver can see (empty without LVM tools)."""
    if not runner.which("vgs"):
        return []
    r = runner.run(["vgs", "--noheadings", "-o", "vg_name"], ok_codes=None,
                   env={"LVM_SUPPRESS_FD_WARNINGS": "1"})
    if r.returncode != 0:
        return []
    return [line.strip() for line in r.stdout.splitlines() if line.strip()]


def read_mountinfo():
    """The receiver's mounts (:func:`parsers.parse_mountinfo`)."""
    with open("/proc/self/mountinfo") as f:
        return parsers.parse_mountinfo(f.read())


def read_swaps():
    """Paths of the receiver's active swap devices and files."""
    try:
        with open("/proc/swaps") as f:
            return [s["path"] for s in parsers.parse_proc_swaps(f.read())]
    except OSError:
        return []


def _read(path):
    with open(path) as f:
        return f.read().strip()


def block_name(device):
    """Kernel name of a block device node (``/dev/vdb`` -> ``vdb``)."""
    st = os.stat(device)
    link = os.path.realpath("/sys/dev/block/%d:%d" % (os.major(st.st_rdev),
                                                      os.minor(st.st_rdev)))
    return os.path.basename(link)


def disk_size(name):
    """Size in bytes of block device ``name`` (kernel name) from sysfs."""
    return int(_read(os.path.join(SYS_BLOCK, name, "size"))) * 512


def sector_size(name):
    try:
        return int(_read(os.path.join(SYS_BLOCK, name, "queue", "logical_block_size")))
    except OSError:
        return 512


def partitions_of(name):
    """{number: kernel name} of the partitions the kernel knows on disk ``name``."""
    out = {}
    base = os.path.join(SYS_BLOCK, name)
    try:
        entries = os.listdir(base)
    except OSError:
        return out
    for e in entries:
        pfile = os.path.join(base, e, "partition")
        if os.path.exists(pfile):
            out[int(_read(pfile))] = e
    return out


def dev_numbers(name):
    """"major:minor" of kernel block device ``name``."""
    return _read(os.path.join(SYS_BLOCK, name, "dev"))


def related_names(name):
    """``name``, its partitions and (recursively) every device holding one of them."""
    seen = []
    todo = [name] + list(partitions_of(name).values())
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.append(n)
        with contextlib.suppress(OSError):
            todo.extend(os.listdir(os.path.join(SYS_BLOCK, n, "holders")))
    return seen
