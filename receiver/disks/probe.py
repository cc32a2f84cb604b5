"""Look at block devices: ``probe_*`` run one command (or read one kernel file),
``parse_*`` are pure and tested on output captured on a real machine
(tests/data/disks/)."""

import contextlib
import json
import logging
import os
import re

from wire import runner

log = logging.getLogger(__name__)

SYS_BLOCK = "/sys/class/block"


# ---------------------------------------------------------------- parsers (pure)

def parse_blkid_export(text):
    """``blkid -o export`` output -> list of {KEY: value} (one per device)."""
    out, cur = [], {}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line:
            if cur:
                out.append(cur)
                cur = {}
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "DEVNAME" and "DEVNAME" in cur:
            out.append(cur)
            cur = {}
        cur[key] = value
    if cur:
        out.append(cur)
    return out


def parse_sfdisk_json(text):
    """``sfdisk --json DEV`` -> {"label", "id", "sector_size", "partitions": [{"node",
    "number", "start", "size", "type", "uuid", "name", "bootable"}]} (sectors)."""
    table = json.loads(text)["partitiontable"]
    parts = []
    for p in table.get("partitions") or []:
        m = re.search(r"(\d+)$", p["node"])
        parts.append({
            "node": p["node"],
            "number": int(m.group(1)) if m else None,
            "start": int(p["start"]),
            "size": int(p["size"]),
            "type": str(p.get("type", "")),
            "uuid": p.get("uuid"),
            "name": p.get("name"),
            "bootable": bool(p.get("bootable")),
        })
    return {"label": table.get("label"), "id": table.get("id"),
            "sector_size": int(table.get("sectorsize") or 512), "partitions": parts}


def _unescape_mount(s):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def parse_mountinfo(text):
    """/proc/self/mountinfo -> [{"major_minor", "root", "mountpoint", "fstype", "source"}]."""
    out = []
    for line in (text or "").splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        f = left.split()
        r = right.split()
        if len(f) < 5 or len(r) < 2:
            continue
        out.append({"major_minor": f[2], "root": _unescape_mount(f[3]),
                    "mountpoint": _unescape_mount(f[4]), "fstype": r[0],
                    "source": _unescape_mount(r[1])})
    return out


def parse_swaps(text):
    """/proc/swaps -> [device or file path]."""
    lines = (text or "").splitlines()[1:]
    return [_unescape_mount(line.split()[0]) for line in lines if line.split()]


def parse_dumpe2fs(text):
    """``dumpe2fs -h`` -> {"uuid", "label", "features": [...], "inode_size", "block_size"}."""
    out = {"uuid": None, "label": None, "features": [], "inode_size": None,
           "block_size": None}
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        value = value.strip()
        if key == "Filesystem UUID":
            out["uuid"] = value
        elif key == "Filesystem volume name":
            out["label"] = None if value == "<none>" else value
        elif key == "Filesystem features":
            out["features"] = value.split()
        elif key == "Inode size":
            out["inode_size"] = int(value)
        elif key == "Block size":
            out["block_size"] = int(value)
    return out


def parse_xfs_info(text):
    """``xfs_info`` -> {feature: 0/1} (crc, finobt, sparse, rmapbt, reflink, bigtime,
    inobtcount, nrext64, ftype) plus "isize" and "bsize" of the data section."""
    out = {}
    for key, value in re.findall(r"([a-z0-9_]+)=(\d+)", text or ""):
        if key in ("crc", "finobt", "sparse", "rmapbt", "reflink", "bigtime", "inobtcount",
                   "nrext64", "ftype", "isize") and key not in out:
            out[key] = int(value)
    m = re.search(r"^data\s+=\s+bsize=(\d+)", text or "", re.M)
    if m:
        out["bsize"] = int(m.group(1))
    return out


# ---------------------------------------------------------------- probes (effects)

def probe_table(device):
    """The partition table of ``device`` (parse_sfdisk_json), or None when it has none."""
    r = runner.run(["sfdisk", "--json", device], ok_codes=None)
    if r.returncode != 0 or not r.stdout.strip():
        return None
    return parse_sfdisk_json(r.stdout)


def probe_signature(device):
    """Low-level probe of one device (no cache): {} when nothing is recognised."""
    r = runner.run(["blkid", "-p", "-o", "export", device], ok_codes=(0, 2))
    found = parse_blkid_export(r.stdout)
    return found[0] if found else {}


def probe_all_ids():
    """Every block device blkid can read: [{DEVNAME, UUID, PARTUUID, PTUUID, ...}]."""
    r = runner.run(["blkid", "-c", "/dev/null", "-o", "export"], ok_codes=None)
    return parse_blkid_export(r.stdout)


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
    with open("/proc/self/mountinfo") as f:
        return parse_mountinfo(f.read())


def read_swaps():
    try:
        with open("/proc/swaps") as f:
            return parse_swaps(f.read())
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
