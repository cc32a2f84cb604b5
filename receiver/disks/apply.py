"""Apply a planned layout to the receiver's target disks (the effects).

Entry points (the worker's PREPARING step calls :func:`prepare`):

* ``parse_disk_args(["system=/dev/vdb", "disk1=/dev/vdc"])`` -> {module: device};
* ``review(manifest, plan, disks)`` -> (layout JSON, text): probes sizes and the
  receiver's own ids, plans, writes nothing (``--dry-run``, the status);
* ``prepare(manifest, plan, disks, mount_root, force_wipe=())`` -> result: checks every
  disk first (exists, not the receiver's own, big enough, blank / already holding
  this layout / named in ``force_wipe``), then wipes, partitions, waits for the
  partition nodes, makes filesystems and LVM, mounts everything under
  ``mount_root/<module>`` in order. Running it again on disks that hold the layout
  only mounts them (data kept);
* ``release(result)``: unmount in reverse order, deactivate our volume groups and give
  them back their source names.

The entry points take and return the layout in its JSON form (saved in the state
folder); inside, it is a :class:`~receiver.disks.layout.Layout`.
"""

import logging
import os
import stat
import tempfile
import time

from receiver.convert.inroot import in_root
from receiver.disks import probe
from receiver.disks.layout import Layout
from receiver.disks.plan import plan_layout, render_review
from receiver.disks.render import (
    SECTOR,
    fs_device,
    partition_device,
    pv_devices,
    render_lvm,
    render_mkfs,
    render_sfdisk,
)
from wire import runner
from wire.errors import DiskError, UsageError
from wire.paths import target_path

log = logging.getLogger(__name__)

PARTITION_WAIT = 15.0


def parse_disk_args(values):
    """``["system=/dev/vdb", "disk1=/dev/vdc"]`` -> {"system": "/dev/vdb", ...}."""
    out = {}
    for v in values or ():
        name, sep, dev = str(v).partition("=")
        name, dev = name.strip(), dev.strip()
        if not sep or not name or not dev.startswith("/dev/"):
            raise UsageError("--disk %r: expected MODULE=/dev/DEVICE, e.g. system=/dev/vdb" % v)
        if name != "system" and not (name.startswith("disk") and name[4:].isdigit()
                                     and 1 <= int(name[4:]) <= 16):
            raise UsageError("--disk %r: the module is system or disk1..disk16" % v)
        if name in out:
            raise UsageError("--disk %s is given twice (%s and %s)" % (name, out[name], dev))
        out[name] = dev
    return out


def check_disks(disks, mount_root=None):
    """Each target must be a block device of its own that the receiver does not use.
    Returns {module: kernel name}."""
    names = {}
    mounts = probe.read_mountinfo()
    swaps = {os.path.realpath(s) for s in probe.read_swaps()}
    root = os.path.realpath(mount_root) if mount_root else None
    for module, dev in sorted(disks.items()):
        try:
            st = os.stat(dev)
        except OSError as e:
            raise DiskError("target disk %s=%s does not exist" % (module, dev),
                            code="disk.missing",
                            hint="attach the disk or fix --disk %s=..." % module) from e
        if not stat.S_ISBLK(st.st_mode):
            raise DiskError("target disk %s=%s is not a block device" % (module, dev),
                            code="disk.missing", hint="name a disk such as /dev/vdb")
        name = probe.block_name(dev)
        if os.path.exists(os.path.join(probe.SYS_BLOCK, name, "partition")):
            raise DiskError("target %s=%s is a partition; name the whole disk" % (module, dev),
                            code="disk.invalid", hint="e.g. --disk %s=/dev/vdb" % module)
        if name in names.values():
            raise DiskError("%s is named for two modules" % dev, code="disk.invalid")
        related = probe.related_names(name)
        numbers = {probe.dev_numbers(n): n for n in related}
        for m in mounts:
            if m["major_minor"] in numbers:
                mp = os.path.realpath(m["mountpoint"])
                if root and (mp == root or mp.startswith(root.rstrip("/") + "/")):
                    continue
                raise DiskError(
                    "target disk %s=%s is in use by the receiver: %s is mounted at %s"
                    % (module, dev, numbers[m["major_minor"]], m["mountpoint"]),
                    code="disk.in_use",
                    hint="name a spare disk; the receiver never touches the disk it runs from")
        for n in related:
            if "/dev/" + n in swaps:
                raise DiskError("target disk %s=%s is in use by the receiver: swap on /dev/%s"
                                % (module, dev, n), code="disk.in_use",
                                hint="name a spare disk")
        names[module] = name
    return names


def _receiver_ids(target_names):
    """UUIDs, PARTUUIDs and table ids of every block device except the targets."""
    skip = set()
    for n in target_names:
        skip.update(probe.related_names(n))
    taken = []
    for dev in probe.probe_all_ids():
        devname = os.path.basename(dev.get("DEVNAME", ""))
        if devname in skip:
            continue
        for key in ("UUID", "PARTUUID", "PTUUID", "UUID_SUB"):
            if dev.get(key):
                taken.append(dev[key])
                if key == "PTUUID" and len(dev[key]) == 8:
                    taken.append("0x" + dev[key])
                if key == "UUID" and dev.get("TYPE") == "vfat":
                    taken.append(dev[key].replace("-", ""))
    return taken


def review(manifest, plan, disks, mount_root=None):
    """Plan against the real disks without writing anything: (layout JSON, text)."""
    names = check_disks(disks, mount_root)
    targets = {m: probe.disk_size(n) for m, n in names.items()}
    layout = plan_layout(manifest, plan, targets, taken_ids=_receiver_ids(names.values()),
                         taken_vg_names=probe.probe_vg_names())
    return layout.to_json(), render_review(layout)


# ------------------------------------------------------------------- inspection

def _table_matches(disk, current, sector):
    if disk.table == "none":
        return False
    if current is None or current["table"] != disk.table:
        return False
    want = [(p.number, p.start_bytes // sector, p.size_bytes // sector, p.type.lower())
            for p in disk.partitions]
    if disk.extended:
        e = disk.extended
        want.append((4, e.start_bytes // sector, e.size_bytes // sector, "5"))
    have_sector = current["sector_size"]  # the table's own unit, as sfdisk reported it
    have = [(p["number"], p["start_bytes"] // have_sector, p["size_bytes"] // have_sector,
             p["type"].lower()) for p in current["partitions"]]
    return sorted(want) == sorted(have)


def _fs_matches(fs, sig):
    if not sig or sig.get("TYPE") != fs.type:
        return False
    if fs.uuid:
        return (sig.get("UUID") or "").lower() == fs.uuid.lower()
    return True


def _describe(current, sig):
    if current is not None:
        return "a %s partition table with %d partition(s)" % (current["label"],
                                                               len(current["partitions"]))
    if sig.get("TYPE"):
        return "a %s signature" % sig["TYPE"]
    return "a %s partition table" % sig.get("PTTYPE")


def inspect(layout, devices, force_wipe=()):
    """Decide per disk, before anything is written: "keep" (holds this layout),
    "write" (blank, or named in ``force_wipe``). Anything else is refused.
    Returns {module: {"action", "mkfs": [fs ids to make]}}."""
    decisions = {}
    force = set(force_wipe or ())
    for disk in layout.disks:
        module, dev = disk.module, devices[disk.module]
        sector = probe.sector_size(probe.block_name(dev))
        current = probe.probe_table(dev)
        sig = probe.probe_signature(dev)
        forced = module in force or dev in force
        if disk.table == "none":
            f = layout.filesystem(disk.whole_disk_fs)
            if current is None and _fs_matches(f, sig):
                decisions[module] = {"action": "keep", "mkfs": []}
                continue
            if current is None and not sig:
                decisions[module] = {"action": "write", "mkfs": [f.id]}
                continue
        elif _table_matches(disk, current, sector):
            mkfs, other = [], []
            # The nodes must be there before anything is judged blank: a restarted
            # container has none, and a missing node is not an empty partition.
            wait_for_partitions(dev, [p.number for p in disk.partitions])
            for p in disk.partitions:
                node = partition_device(dev, p.number)
                psig = probe.probe_signature(node)
                if p.fs:
                    f = layout.filesystem(p.fs)
                    if _fs_matches(f, psig):
                        continue
                    if not psig.get("TYPE"):
                        mkfs.append(f.id)
                        continue
                    other.append("%s holds %s, not %s %s" % (node, psig.get("TYPE"),
                                                            f.type, f.uuid or ""))
                elif p.role == "lvm" and psig.get("TYPE") not in (None, "LVM2_member"):
                    other.append("%s holds %s, not an LVM PV" % (node, psig.get("TYPE")))
            if not other:
                decisions[module] = {"action": "keep", "mkfs": mkfs}
                continue
            if not forced:
                raise _not_empty(module, dev, "; ".join(other))
        elif current is None and not sig:
            decisions[module] = {"action": "write", "mkfs": _all_fs_of(layout, disk)}
            continue
        if not forced:
            raise _not_empty(module, dev, _describe(current, sig) + " that differs from the plan")
        decisions[module] = {"action": "write", "mkfs": _all_fs_of(layout, disk)}
    return decisions


def _all_fs_of(layout, disk):
    ids = [p.fs for p in disk.partitions if p.fs]
    if disk.whole_disk_fs:
        ids.append(disk.whole_disk_fs)
    for p in disk.partitions:
        if p.vg:
            ids += [lv.fs for lv in layout.vg(p.vg).lvs]
    return ids


def _not_empty(module, dev, what):
    return DiskError(
        "target disk %s (%s) already holds data: %s; it is not overwritten"
        % (module, dev, what),
        code="disk.not_empty",
        hint="to wipe it, ask for it by name: force_wipe %s (go2aliyun-receiver "
        "--force-wipe %s)" % (module, module),
        disk=module, device=dev,
    )


# ------------------------------------------------------------------- effects

def wait_for_partitions(dev, numbers, timeout=PARTITION_WAIT):
    """Make the kernel read the new table and wait for each partition node (no udev
    needed: a missing node is made from sysfs)."""
    runner.run(["partx", "-u", dev], ok_codes=None)
    name = probe.block_name(dev)
    deadline = time.monotonic() + timeout
    asked_add = False
    while True:
        known = probe.partitions_of(name)
        missing = [n for n in numbers if n not in known]
        if missing and not asked_add:
            runner.run(["partx", "-a", dev], ok_codes=None)
            asked_add = True
            continue
        if not missing:
            ready = True
            for n in numbers:
                node = partition_device(dev, n)
                mm = probe.dev_numbers(known[n])
                want = os.makedev(*(int(x) for x in mm.split(":")))
                if os.path.exists(node):
                    st = os.stat(node)
                    if stat.S_ISBLK(st.st_mode) and st.st_rdev == want:
                        continue
                    # a stale node (a container's /dev after the kernel renumbered the
                    # partitions): it would point at another partition
                    os.unlink(node)
                if time.monotonic() > deadline - timeout / 2 or not _devtmpfs(node):
                    os.mknod(node, 0o600 | stat.S_IFBLK, want)
                else:
                    ready = False
            if ready:
                return
        if time.monotonic() > deadline:
            raise DiskError("partition(s) %s of %s did not appear within %ds"
                            % (", ".join(str(n) for n in missing), dev, timeout),
                            code="disk.partition_node",
                            hint="check dmesg; the kernel must re-read the partition table")
        time.sleep(0.1)


def _devtmpfs(path):
    """Is ``path``'s folder a devtmpfs (where the kernel makes nodes by itself)?"""
    folder = os.path.dirname(path)
    best, fstype = "", None
    for m in probe.read_mountinfo():
        mp = m["mountpoint"]
        if (folder == mp or folder.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
            best, fstype = mp, m.get("fstype")
    return fstype == "devtmpfs"


def _unmount_disk(name):
    """Unmount whatever of disk ``name`` is mounted (check_disks allowed only mounts
    under our mount root: a previous prepare of a disk now asked to be wiped)."""
    numbers = {probe.dev_numbers(n) for n in probe.related_names(name)}
    for m in reversed(probe.read_mountinfo()):
        if m["major_minor"] in numbers:
            runner.run(["umount", m["mountpoint"]])


def _write_disk(disk, dev):
    """Wipe old signatures and write the partition table."""
    name = probe.block_name(dev)
    for n in sorted(probe.partitions_of(name)):
        node = partition_device(dev, n)
        if os.path.exists(node):
            runner.run(["wipefs", "-a", "-q", node], ok_codes=None)
    runner.run(["wipefs", "-a", "-q", dev])
    script = render_sfdisk(disk, probe.sector_size(name))
    if script is None:
        runner.run(["partx", "-d", dev], ok_codes=None)
        return
    runner.run(["sfdisk", "-q", "--wipe", "always", "--wipe-partitions", "always", dev],
               input=script)
    numbers = [p.number for p in disk.partitions]
    wait_for_partitions(dev, numbers)
    for n in numbers:
        # sfdisk wipes what it sees; a node that appeared late may still carry an old
        # signature at the same offset.
        runner.run(["wipefs", "-a", "-q", partition_device(dev, n)], ok_codes=None)


# LVM complains about inherited descriptors otherwise; harmless, but noisy in logs.
LVM_ENV = {"LVM_SUPPRESS_FD_WARNINGS": "1"}


def _vg_names_on(pvs):
    r = runner.run(["vgs", "--devices", ",".join(pvs), "--noheadings", "-o", "vg_name"],
                   ok_codes=None, env=LVM_ENV)
    return [x.strip() for x in r.stdout.splitlines() if x.strip()]


def rename_vg(vg, pvs, to_source):
    """Give our volume group its source name back (``to_source``) or its working name.
    ``--devices`` hides the receiver's own VG of the same name from LVM."""
    old, new = (vg.create_name, vg.name) if to_source else (vg.name, vg.create_name)
    if old == new or old not in _vg_names_on(pvs):
        return False
    # vgrename refuses a new name that exists as /dev/<name> ("already exists in
    # filesystem"), and the receiver's own VG of that name, active, has that folder
    # (seen in the receiver VM). The check looks in devices/dir; our PVs are named by
    # --devices, so an empty devices/dir changes nothing else (our VG is inactive here:
    # no /dev entries to rename).
    with tempfile.TemporaryDirectory(prefix="g2a-lvm-dir-") as empty:
        runner.run(["vgrename", "--devices", ",".join(pvs),
                    "--config", 'devices/dir="%s"' % empty, old, new], env=LVM_ENV)
    return True


def _ensure_vg(layout, vg, devices, create):
    pvs = pv_devices(layout, vg, devices)
    if create:
        for argv in render_lvm(vg, pvs):
            runner.run(argv, env=LVM_ENV)
    else:
        rename_vg(vg, pvs, to_source=False)  # released before: back to the working name
    runner.run(["vgchange", "-ay", "--devices", ",".join(pvs), vg.create_name], env=LVM_ENV)


def _kernel_filesystems():
    with open("/proc/filesystems") as f:
        return {line.split()[-1] for line in f if line.strip()}


def ensure_fs_support(fs_type):
    """The kernel must mount ``fs_type``: load its module if needed, else say so."""
    if fs_type in _kernel_filesystems():
        return
    runner.run(["modprobe", "-q", fs_type], ok_codes=None)
    if fs_type not in _kernel_filesystems():
        raise DiskError("this receiver's kernel cannot mount %s filesystems" % fs_type,
                        code="disk.kernel_support",
                        hint="run the receiver on a kernel with %s (the receiver appliance "
                        "has it), or skip mounting that type" % fs_type)


def _mounted_at(path, mounts):
    path = os.path.realpath(path)
    for m in reversed(mounts):
        if os.path.realpath(m["mountpoint"]) == path:
            return m
    return None


def _mount_all(layout, devices, mount_root, skip_mount_types):
    modules = {}
    mounted, unmounted = [], []
    for module in layout.modules:
        modules[module] = target_path(mount_root, module)
        os.makedirs(modules[module], mode=0o700, exist_ok=True)
    for m in layout.mounts:
        f = layout.filesystem(m.fs)
        dev = fs_device(layout, f, devices)
        # resolved inside the copy: when PREPARING runs again after the data came (a
        # restart), a mount point of the copy may be a symlink leading out of it
        path = in_root(modules[m.module], m.mountpoint)
        entry = {"module": m.module, "mountpoint": m.mountpoint, "path": path,
                 "device": dev, "type": f.type, "uuid": f.uuid}
        if f.type in skip_mount_types:
            unmounted.append(entry)
            continue
        os.makedirs(path, exist_ok=True)
        here = _mounted_at(path, probe.read_mountinfo())
        want = probe.dev_numbers(probe.block_name(dev))
        if here is not None and here["major_minor"] == want:
            log.info("%s already mounted at %s", dev, path)
        elif here is not None:
            raise DiskError("%s is already a mount point (of %s), cannot mount %s there"
                            % (path, here["source"], dev), code="disk.mount",
                            hint="unmount it first")
        else:
            runner.run(["mount", "-t", f.type, dev, path])
        mounted.append(entry)
    return modules, mounted, unmounted


def prepare(manifest, plan, disks, mount_root, force_wipe=(), skip_mount_types=(),
            layout=None, on_layout=None):
    """Rebuild the source layout on ``disks`` ({module: device}) and mount it under
    ``mount_root``. Returns a JSON-able result: ``modules`` {module: mount path},
    ``devices``, ``mounts``, ``unmounted`` (types in ``skip_mount_types``),
    ``filesystems`` (target device, type, UUID for each), ``id_changes`` and
    ``device_map`` (for conversion), ``actions`` and the ``layout`` with its review.

    ``layout``: the one a previous prepare of this migration chose (its ``layout`` in
    the result, JSON), to mount the disks again after a restart. Planning anew could pick
    other identifiers (the free ones depend on what else the host has attached now)
    and then refuse the disks it made itself as "holding other data".
    ``on_layout(layout JSON)`` is called with a new plan before anything is written, so a
    caller can keep it for a rerun of an interrupted prepare."""
    names = check_disks(disks, mount_root)
    if layout:
        layout = Layout.from_json(layout)
    else:
        targets = {m: probe.disk_size(n) for m, n in names.items()}
        layout = plan_layout(manifest, plan, targets,
                             taken_ids=_receiver_ids(names.values()),
                             taken_vg_names=probe.probe_vg_names())
        if on_layout is not None:
            on_layout(layout.to_json())
    skip = set(skip_mount_types or ())
    for t in sorted({m.type for m in layout.mounts} - skip):
        ensure_fs_support(t)
    decisions = inspect(layout, disks, force_wipe)
    actions = []
    for disk in layout.disks:
        module, dev = disk.module, disks[disk.module]
        if decisions[module]["action"] == "write":
            log.info("partitioning %s (%s)", module, dev)
            _unmount_disk(names[module])
            _write_disk(disk, dev)
            actions.append("partitioned %s (%s)" % (module, dev))
        elif disk.partitions:
            wait_for_partitions(dev, [p.number for p in disk.partitions])
            actions.append("kept the partitions of %s (%s)" % (module, dev))
    to_make = set()
    for d in decisions.values():
        to_make.update(d["mkfs"])
    for vg in layout.vgs:
        module = next(d.module for d in layout.disks
                      if any(p.vg == vg.name for p in d.partitions))
        create = decisions[module]["action"] == "write"
        _ensure_vg(layout, vg, disks, create)
        actions.append("%s volume group %s" % ("made" if create else "activated",
                                                vg.create_name))
    made = []
    for f in layout.filesystems:
        dev = fs_device(layout, f, disks)
        if f.id in to_make:
            runner.run(render_mkfs(f, dev))
            actions.append("made %s on %s" % (f.type, dev))
            made.append(f.id)
        if not f.uuid:
            f.uuid = probe.probe_signature(dev).get("UUID")
    modules, mounted, unmounted = _mount_all(layout, disks, mount_root, skip)
    return {
        "modules": modules,
        "devices": dict(disks),
        "mounts": mounted,
        "unmounted": unmounted,
        "filesystems": [{"id": f.id, "module": f.module, "type": f.type, "uuid": f.uuid,
                         "label": f.label, "source_uuid": f.source_uuid,
                         "mountpoint": f.system_mountpoint,
                         "device": fs_device(layout, f, disks)}
                        for f in layout.filesystems],
        "made": made,
        "id_changes": layout.id_changes,
        "device_map": layout.device_map,
        "actions": actions,
        "layout": layout.to_json(),
        "review": render_review(layout),
    }


def release(result):
    """Undo the mounts of :func:`prepare` in reverse order, deactivate our volume
    groups and give them back their source names. Safe to call twice."""
    mounts = probe.read_mountinfo()
    for m in reversed(result.get("mounts") or []):
        if _mounted_at(m["path"], mounts) is not None:
            runner.run(["umount", m["path"]])
            mounts = probe.read_mountinfo()
    layout = Layout.from_json(result["layout"]) if result.get("layout") else None
    for vg in layout.vgs if layout else ():
        pvs = pv_devices(layout, vg, result["devices"])
        if vg.create_name in _vg_names_on(pvs):
            runner.run(["vgchange", "-an", "--devices", ",".join(pvs), vg.create_name],
                       env=LVM_ENV)
        rename_vg(vg, pvs, to_source=True)


__all__ = ["parse_disk_args", "prepare", "release", "review", "check_disks", "inspect",
           "wait_for_partitions", "rename_vg", "ensure_fs_support", "SECTOR"]
