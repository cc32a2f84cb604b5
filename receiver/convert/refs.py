"""References to filesystems: which target filesystem a source reference means (pure).

A source system names its filesystems in fstab, on the kernel command line, in crypttab
and in the initramfs resume config by ``UUID=``, ``LABEL=``, ``PARTUUID=``, an LVM path
(``/dev/mapper/vg-lv``, ``/dev/vg/lv``), a ``/dev/disk/by-*`` link or a kernel device
name (``/dev/sda1``, ``/dev/hda1``, ``/dev/xvda1``, ``/dev/nvme0n1p1``). After the disks
were rebuilt (:func:`receiver.disks.apply.prepare`) each of those must name the right
filesystem on the new disks, where the kernel names will be ``/dev/vdX``.

:class:`Targets` indexes the prepared layout (and the manifest, for the source device
names) and answers :meth:`Targets.resolve` (source reference -> target filesystem) and
:meth:`Targets.resolves_now` (does a reference written in the converted system name a
filesystem on the new disks).
"""

import posixpath
import re

from wire.paths import dm_path

DEVICE_NAME_RE = re.compile(r"^/dev/(sd[a-z]+|hd[a-z]+|xvd[a-z]+|vd[a-z]+|nvme\d+n\d+)(p?\d+)?$")
BY_LINK_RE = re.compile(r"^/dev/disk/by-(uuid|label|partuuid|partlabel|id|path)/(.+)$")
TAGS = ("UUID", "LABEL", "PARTUUID", "PARTLABEL")


def _first(items, test):
    """The first item that passes ``test``, or None."""
    return next((x for x in items if test(x)), None)


def _low(s):
    return (s or "").lower()


def split_tag(spec):
    """``UUID=x`` -> ("UUID", "x"); ``/dev/disk/by-uuid/x`` -> ("UUID", "x"); a path ->
    (None, path). Quotes around the value are dropped."""
    spec = spec or ""
    for tag in TAGS:
        if spec.upper().startswith(tag + "="):
            return tag, spec[len(tag) + 1:].strip("\"'")
    m = BY_LINK_RE.match(spec)
    if m and m.group(1) != "id" and m.group(1) != "path":
        return m.group(1).upper(), m.group(2)
    return None, spec


def lv_from_path(path):
    """``/dev/mapper/vg-lv`` or ``/dev/vg/lv`` -> "vg/lv" (None for other paths)."""
    if path.startswith("/dev/mapper/"):
        name = path[len("/dev/mapper/"):]
        # device-mapper doubles a dash that is part of a VG or LV name
        parts = re.split(r"(?<!-)-(?!-)", name)
        if len(parts) == 2:
            return "%s/%s" % (parts[0].replace("--", "-"), parts[1].replace("--", "-"))
        return None
    m = re.match(r"^/dev/([^/]+)/([^/]+)$", path)
    if m and m.group(1) not in ("disk", "mapper", "md", "pts", "shm", "net", "bus", "input",
                                 "char", "block", "cpu", "snd", "dri"):
        return "%s/%s" % (m.group(1), m.group(2))
    return None


class Targets(object):
    """The filesystems of the prepared target disks, indexed for reference lookups.

    ``prepared`` is what :func:`receiver.disks.apply.prepare` returned (its ``layout``
    carries each filesystem's source device, source UUID, LV and mount point);
    ``manifest`` gives the source's device names for each filesystem and swap.
    """

    def __init__(self, prepared, manifest=None):
        layout = prepared.get("layout") or {}
        self.filesystems = [dict(f) for f in (layout.get("filesystems")
                                              or prepared.get("filesystems") or [])]
        # the target device of each filesystem (for grub.cfg made over loop devices)
        devices = {f.get("id"): f.get("device") for f in prepared.get("filesystems") or []}
        for f in self.filesystems:
            f.setdefault("device", devices.get(f.get("id")))
            if not f.get("system_mountpoint") and f.get("mountpoint") and \
                    f.get("module", "system") == "system":
                f["system_mountpoint"] = f["mountpoint"]
        self.partitions = []  # {partuuid, partlabel, fs}
        for disk in layout.get("disks") or []:
            for p in disk.get("partitions") or []:
                self.partitions.append({"partuuid": p.get("partuuid"), "name": p.get("name"),
                                        "fs": p.get("fs"), "vg": p.get("vg")})
        self.lvs = set()
        # a VG made under a working name (the receiver holds one of the source's name)
        # -> its source name, which release() gives it back before the first boot
        self.vg_source_names = {}
        for vg in layout.get("vgs") or []:
            for lv in vg.get("lvs") or []:
                self.lvs.add("%s/%s" % (vg["name"], lv["name"]))
            if vg.get("create_name") and vg["create_name"] != vg["name"]:
                self.vg_source_names[vg["create_name"]] = vg["name"]
        for f in self.filesystems:
            if f.get("on") and f["on"].get("lv"):
                self.lvs.add(f["on"]["lv"])
        self.id_changes = {}
        for c in prepared.get("id_changes") or []:
            self.id_changes[_low(c.get("old"))] = c.get("new")
        # source device name -> source UUID, from the manifest
        self.source_uuid_of = {}
        self.source_partuuid_of = {}
        manifest = manifest or {}
        for f in manifest.get("filesystems") or []:
            if f.get("device") and f.get("uuid"):
                self.source_uuid_of[f["device"]] = f["uuid"]
        for s in manifest.get("swap") or []:
            if s.get("path") and s.get("uuid"):
                self.source_uuid_of[s["path"]] = s["uuid"]
        for d in manifest.get("disks") or []:
            for p in d.get("partitions") or []:
                if p.get("path") and p.get("partuuid"):
                    self.source_partuuid_of[_low(p["partuuid"])] = p["path"]
        self.disk_aliases = learn_disk_aliases(manifest)

    # ------------------------------------------------------------------ lookups
    def by_id(self, fid):
        return _first(self.filesystems, lambda f: f.get("id") == fid)

    def by_mountpoint(self, mountpoint):
        mp = posixpath.normpath(mountpoint) if mountpoint else None
        return _first(self.filesystems, lambda f: f.get("system_mountpoint")
                      and posixpath.normpath(f["system_mountpoint"]) == mp)

    def root(self):
        return self.by_mountpoint("/")

    def swaps(self):
        return [f for f in self.filesystems if f.get("type") == "swap"]

    def _by_source_uuid(self, value):
        v = _low(value)
        for f in self.filesystems:
            if _low(f.get("source_uuid")) == v or _low(f.get("uuid")) == v:
                return f
        new = _low(self.id_changes.get(v))
        return _first(self.filesystems, lambda f: _low(f.get("uuid")) == new) if new else None

    def _by_device(self, path, aliased=False):
        for f in self.filesystems:
            if f.get("source_device") == path:
                return f
        if path in self.source_uuid_of:
            return self._by_source_uuid(self.source_uuid_of[path])
        if not aliased:
            other = apply_disk_alias(path, self.disk_aliases)
            if other:
                return self._by_device(other, aliased=True)
        return None

    def resolve(self, spec, mountpoint=None):
        """The target filesystem a SOURCE reference means, or None.

        ``mountpoint`` (the fstab entry's mount point) is the last resort for kernel
        device names: the filesystem migrated from that mount point is the one meant.
        """
        tag, value = split_tag(spec)
        if tag == "UUID":
            return self._by_source_uuid(value)
        if tag == "LABEL":
            return _first(self.filesystems, lambda f: f.get("label") and f["label"] == value)
        if tag == "PARTUUID":
            src_dev = self.source_partuuid_of.get(_low(value))
            if src_dev:
                f = self._by_device(src_dev)
                if f:
                    return f
            p = _first(self.partitions,
                       lambda p: _low(p["partuuid"]) == _low(value) and p.get("fs"))
            return self.by_id(p["fs"]) if p else None
        if tag == "PARTLABEL":
            p = _first(self.partitions, lambda p: p.get("name") == value and p.get("fs"))
            return self.by_id(p["fs"]) if p else None
        lv = lv_from_path(value)
        if lv:
            return _first(self.filesystems, lambda f: (f.get("on") or {}).get("lv") == lv)
        f = self._by_device(value)
        if f is None and mountpoint and mountpoint not in ("none", "swap") \
                and DEVICE_NAME_RE.match(value):
            f = self.by_mountpoint(mountpoint)
        return f

    def new_reference(self, spec, mountpoint=None):
        """How the converted system should write a SOURCE reference: ``UUID=<new>`` for
        device names, PARTUUIDs and UUIDs; LVM paths and labels stay (they are kept);
        None when it names no migrated filesystem."""
        f = self.resolve(spec, mountpoint)
        if f is None:
            return None
        tag, value = split_tag(spec)
        if lv_from_path(value) and tag is None:
            return spec
        if tag == "LABEL" and not spec.startswith("/dev/"):
            return spec
        if not f.get("uuid"):
            return spec if tag else None
        return "UUID=%s" % f["uuid"]

    def source_lv_path(self, path):
        """An LV path under a VG's working name (``/dev/mapper/g2a--vg-root``,
        ``/dev/g2a-vg/root``), as the converted system must name it: the same form
        under the VG's source name (``/dev/mapper/vg-root``). None for other paths."""
        lv = lv_from_path(path)
        if not lv:
            return None
        vg, name = lv.split("/", 1)
        if vg not in self.vg_source_names:
            return None
        source = self.vg_source_names[vg]
        if path.startswith("/dev/mapper/"):
            return dm_path(source, name)
        return "/dev/%s/%s" % (source, name)

    def resolves_now(self, spec):
        """Does a reference in the CONVERTED system name a filesystem on the new disks?
        Kernel device names never do (the disks are renamed on ECS)."""
        tag, value = split_tag(spec)
        if tag == "UUID":
            return any(_low(f.get("uuid")) == _low(value) for f in self.filesystems)
        if tag == "LABEL":
            return any(f.get("label") == value for f in self.filesystems)
        if tag == "PARTUUID":
            return any(_low(p["partuuid"]) == _low(value) for p in self.partitions)
        if tag == "PARTLABEL":
            return any(p.get("name") == value for p in self.partitions)
        lv = lv_from_path(value)
        if lv:
            return lv in self.lvs
        return False


__all__ = ["Targets", "split_tag", "lv_from_path", "DEVICE_NAME_RE"]


PART_RE = re.compile(r"^(/dev/(?:(?:sd|hd|xvd|vd)[a-z]+|nvme\d+n\d+|loop\d+|mmcblk\d+))(p?)(\d+)$")


def _split_partition(path):
    """``/dev/sda3`` -> ("/dev/sda", 3); ``/dev/loop0p2`` -> ("/dev/loop0", 2)."""
    m = PART_RE.match(path or "")
    if not m:
        return None, None
    return m.group(1), int(m.group(3))


def learn_disk_aliases(manifest):
    """Which disk the source's fstab calls by another name (pure).

    A system read offline (``go2aliyun migrate --root DIR``, a disk attached to another
    machine) names its disks as its own machine did (``/dev/sda``) while the inventory
    saw them attached elsewhere (``/dev/loop0``, ``/dev/sdc``). An fstab entry whose
    mount point was mounted tells the pair: ``/dev/sda2 /`` with ``/`` mounted from
    ``/dev/loop0p2`` gives sda -> loop0, which then resolves ``/dev/sda3`` (swap, not
    mounted) to ``/dev/loop0p3``. Only unambiguous pairs with the same partition
    number are kept.
    """
    mounted = {}
    for f in (manifest or {}).get("filesystems") or []:
        if f.get("mountpoint") and f.get("device"):
            mounted[posixpath.normpath(f["mountpoint"])] = f["device"]
    known = set(mounted.values())
    pairs = {}
    for e in (manifest or {}).get("fstab") or []:
        spec, where = e.get("spec") or "", e.get("file") or ""
        if spec in known or not where.startswith("/"):
            continue
        dev = mounted.get(posixpath.normpath(where))
        a_disk, a_num = _split_partition(spec)
        b_disk, b_num = _split_partition(dev)
        if a_disk and b_disk and a_num == b_num and a_disk != b_disk:
            pairs.setdefault(a_disk, set()).add(b_disk)
    return {a: next(iter(b)) for a, b in pairs.items() if len(b) == 1}


def apply_disk_alias(path, aliases):
    """``/dev/sda3`` with {"/dev/sda": "/dev/loop0"} -> "/dev/loop0p3" (None if no alias)."""
    disk, num = _split_partition(path)
    if not disk or disk not in aliases:
        return None
    other = aliases[disk]
    sep = "p" if other[-1].isdigit() else ""
    return "%s%s%d" % (other, sep, num)
