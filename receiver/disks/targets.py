"""The target disks of a receiver launched by hand (the ECS console, no user-data): which
disks it may take, and which source disk goes to which of them.

Launched by ``go2aliyun-cloud launch``, the receiver is told its disks by id
(``/etc/go2aliyun/cloud.json``, :mod:`receiver.clouddisks`); ``serve --disk`` names them.
Launched from the console it is told nothing, so it takes the disks that are blank:

* :func:`blank_disks` (pure): a whole disk (not removable: qemu's machine has a floppy
  drive, which lsblk calls a disk) is a target when nothing on this machine uses
  it (nothing mounted from it or from a partition or volume on it, no swap) and it is
  blank: no partition table, no filesystem or other signature (an LVM PV, RAID member),
  no partitions or holders. A disk that is not blank becomes a target only when named
  with ``--force-wipe`` (device path or kernel name); a disk in use never does, whatever
  is named. Its inputs are ``lsblk -P -b -p`` rows and ``blkid -p`` tags (low level: no
  udev database is needed, as in a container or a fresh boot);
* :func:`probe_blank_disks` runs those two commands (the effects);
* :func:`min_bytes` (pure): the least each module of the plan needs, from the layout
  planner itself (:func:`receiver.disks.plan.plan_layout`);
* :func:`match_disks` (pure): the plan's modules onto those disks by size: in device
  order when they fit so (the first blank disk is the system disk), else the smallest
  need first, each taking the smallest disk that holds it (which places every module
  whenever any placement does); a clear :class:`DiskError` ``disk.no_fit`` when they do
  not fit.
"""

import logging

from receiver.disks.plan import plan_layout
from wire import parsers, runner
from wire.errors import DiskError

log = logging.getLogger(__name__)

LSBLK_COLUMNS = "NAME,TYPE,SIZE,RO,RM,PKNAME,MOUNTPOINT"
GiB = 1 << 30
HUGE = 1 << 60


def _gib(n):
    return "%.1f GiB" % (n / float(GiB))


def _named(path, names):
    base = path.rsplit("/", 1)[-1]
    return path in names or base in names


def blank_disks(rows, signatures, swaps=(), force_wipe=(), types=("disk",)):
    """(targets, refused) (pure).

    ``rows``: :func:`wire.parsers.parse_lsblk` of ``lsblk -P -b -p -o NAME,TYPE,SIZE,RO,RM,
    PKNAME,MOUNTPOINT``; ``signatures``: {disk path: ``blkid -p -o export`` tags of the
    whole disk} ({} when blkid found nothing); ``swaps``: active swap devices;
    ``force_wipe``: device paths or kernel names the operator allows to be wiped;
    ``types``: the lsblk types that count as disks (``loop`` too in tests).
    ``targets``: [{"path", "size", "forced"}] in lsblk's order; ``refused``: [{"path",
    "reason"}] for the operator.
    """
    children = {}
    for r in rows:
        if r.get("pkname"):
            children.setdefault(r["pkname"], []).append(r)
    swaps = set(swaps or ())
    targets, refused = [], []
    for disk in rows:
        if disk.get("pkname") or disk.get("type") not in types:
            continue
        path = disk["name"]
        below, todo = [], list(children.get(path, []))
        while todo:
            r = todo.pop(0)
            below.append(r)
            todo += children.get(r["name"], [])
        in_use = [(r["name"], r["mountpoint"]) for r in [disk] + below if r.get("mountpoint")]
        in_use += [(r["name"], "swap") for r in [disk] + below if r["name"] in swaps]
        if in_use:
            refused.append({"path": path, "reason": "in use by this machine (%s)" % ", ".join(
                "%s at %s" % u if u[1] != "swap" else "%s as swap" % u[0] for u in in_use)})
            continue
        if str(disk.get("ro") or "0") != "0":
            refused.append({"path": path, "reason": "read-only"})
            continue
        if str(disk.get("rm") or "0") != "0":  # a floppy drive (qemu has one), USB stick
            refused.append({"path": path, "reason": "removable"})
            continue
        size = int(disk.get("size") or 0)
        if size <= 0:
            refused.append({"path": path, "reason": "has no size (no medium)"})
            continue
        tags = signatures.get(path) or {}
        held = []
        if tags.get("PTTYPE"):
            held.append("a %s partition table" % tags["PTTYPE"])
        if tags.get("TYPE"):
            held.append("a %s signature" % tags["TYPE"])
        if below:
            held.append("%s on it" % ", ".join(r["name"] for r in below))
        if held and not _named(path, force_wipe):
            refused.append({"path": path, "reason": "not blank: holds %s; name it with "
                            "--force-wipe %s to let the receiver wipe it"
                            % (", ".join(held), path)})
            continue
        targets.append({"path": path, "size": size, "forced": bool(held)})
    targets.sort(key=lambda d: _device_order(d["path"]))
    return targets, refused


def _device_order(path):
    """vdb < vdc < vdaa, nvme1n1 < nvme10n1: the kernel's naming order."""
    name = path.rsplit("/", 1)[-1]
    return (len(name), name)


def probe_blank_disks(force_wipe=(), types=("disk",), only=None):
    """:func:`blank_disks` on this machine's disks (``only``: limit to these device
    paths, for tests on a shared host). Returns (targets, refused)."""
    r = runner.run(["lsblk", "-P", "-b", "-p", "-o", LSBLK_COLUMNS])
    rows = parsers.parse_lsblk(r.stdout)
    if only is not None:
        keep = set(only)
        names = {x["name"] for x in rows if x["name"] in keep}
        while True:  # the chosen disks and everything below them
            more = {x["name"] for x in rows if x.get("pkname") in names} - names
            if not more:
                break
            names |= more
        rows = [x for x in rows if x["name"] in names]
    signatures = {}
    for row in rows:
        # not removable ones: blkid on qemu's empty floppy drive only makes I/O errors
        if not row.get("pkname") and row.get("type") in types \
                and str(row.get("rm") or "0") == "0":
            got = runner.run(["blkid", "-p", "-o", "export", row["name"]], ok_codes=(0, 2))
            found = parsers.parse_blkid(got.stdout)
            signatures[row["name"]] = found[0] if found else {}
    try:
        with open("/proc/swaps") as f:
            swaps = [s["path"] for s in parsers.parse_proc_swaps(f.read())]
    except OSError:
        swaps = []
    return blank_disks(rows, signatures, swaps=swaps, force_wipe=force_wipe, types=types)


def plan_modules(plan):
    """The modules of a plan, the system disk first (pure)."""
    return ["system"] + ["disk%d" % int(d["index"]) for d in (plan or {}).get("data_disks")
                         or []]


def min_bytes(manifest, plan):
    """{module: the least bytes its target disk needs} (pure): the layout planner is
    asked with every other disk unbounded and this one empty, and says what it needs."""
    modules = plan_modules(plan)
    out = {}
    for module in modules:
        targets = {m: (0 if m == module else HUGE) for m in modules}
        try:
            plan_layout(manifest, plan, targets)
        except DiskError as e:
            if e.code != "disk.too_small" or e.details.get("disk") != module:
                raise
            out[module] = int(e.details["needed_bytes"])
        else:
            out[module] = 0
    return out


def match_disks(needs, disks):
    """{module: disk path} (pure). ``needs``: {module: bytes}; ``disks``: [{"path",
    "size"}] in device order. When the disks in device order hold the modules in order
    (system, disk1, ...), that is the match: the first blank disk becomes the system disk,
    as the host's ``finish`` takes them (image_build/finish.target_disks). Else the
    smallest need first (ties: the system disk, then by module number), each taking the
    smallest free disk that holds it (ties: device order)."""
    ordered = sorted(needs, key=_module_key)
    if len(disks) >= len(ordered) and all(int(disks[n]["size"]) >= needs[m]
                                          for n, m in enumerate(ordered)):
        return {m: disks[n]["path"] for n, m in enumerate(ordered)}
    order = {m: n for n, m in enumerate(ordered)}
    free = sorted(disks, key=lambda d: (int(d["size"]), disks.index(d)))
    out = {}
    for module in sorted(needs, key=lambda m: (needs[m], order[m])):
        fit = next((d for d in free if int(d["size"]) >= needs[module]), None)
        if fit is None:
            break
        free.remove(fit)
        out[module] = fit["path"]
    if len(out) == len(needs):
        return out
    want = ", ".join("%s >= %s" % (m, _gib(needs[m])) for m in sorted(needs, key=_module_key))
    have = ", ".join("%s %s" % (d["path"], _gib(int(d["size"])))
                     for d in disks) or "none"
    raise DiskError(
        "the blank disks do not fit the migration: it needs %d disk(s) (%s); this receiver "
        "has %d blank disk(s): %s" % (len(needs), want, len(disks), have),
        code="disk.no_fit",
        hint="attach empty disks of at least those sizes to the receiver instance (the ECS "
             "console: Disks, attach) and run `go2aliyun migrate` again; or start the "
             "receiver with --disk MODULE=/dev/X",
        needs={m: int(v) for m, v in needs.items()},
        disks=[{"path": d["path"], "size": int(d["size"])} for d in disks])


def _module_key(module):
    return (0, 0) if module == "system" else (1, int(module[4:]))
