"""Plan the target disks from the source manifest: a pure function, no effects.

``plan_layout(manifest, plan, targets)`` answers, before anything is written, what each
target disk will hold: its partition table (MBR or GPT, with a BIOS boot partition or
an ESP when the firmware needs one), the partitions with their sizes scaled to the
target disk (BIOS boot, ESP, ``/boot`` and swap keep their size; the rest share what is
left in proportion to their source size, each getting at least its used space plus
headroom), the filesystems with the source's type, UUID, label and features, the LVM
volume groups and logical volumes, and the mount tree. A layout that cannot hold the
used space is refused with :class:`DiskError` ``disk.too_small``.

:func:`plan_layout` runs phases that take values and return new ones; the result is a
:class:`~receiver.disks.layout.Layout` (its ``to_json()`` is saved in the state folder
and shown in the status); :func:`render_review` turns it into text for people.

Sizes are bytes everywhere. ``targets`` maps module names (``system``, ``disk1`` ...)
to the target disk size in bytes.
"""

import posixpath
import uuid as uuidlib
from dataclasses import dataclass, replace

from receiver.disks.layout import (
    Disk,
    Extended,
    Filesystem,
    Layout,
    LogicalVolume,
    Mount,
    Partition,
    VolumeGroup,
)
from wire.errors import DiskError
from wire.paths import lv_paths

MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40
MBR_LIMIT = 2 * TiB

# GPT partition type GUIDs (upper case, as the manifest spells them).
GPT_BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
GPT_ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
GPT_LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
GPT_SWAP = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"
GPT_LVM = "E6D6D379-F507-44C2-A23C-238F2A3DF928"
# MBR type codes (lower-case hex without 0x).
MBR_TYPES = {"linux": "83", "swap": "82", "lvm": "8e", "esp": "ef", "extended": "5"}
GPT_TYPES = {"linux": GPT_LINUX, "swap": GPT_SWAP, "lvm": GPT_LVM, "esp": GPT_ESP,
             "bios_boot": GPT_BIOS_BOOT}

SUPPORTED_FS = ("ext2", "ext3", "ext4", "xfs", "vfat")
# Smallest filesystem each mkfs accepts (mkfs.xfs >= 5.19 refuses below 300 MiB).
MIN_FS_BYTES = {"xfs": 300 * MiB, "vfat": 33 * MiB, "ext2": 8 * MiB, "ext3": 8 * MiB,
                "ext4": 8 * MiB}
# Mount points whose filesystem keeps its size (boot loader territory).
FIXED_MOUNTPOINTS = ("/boot", "/boot/efi", "/efi")
NEW_ESP_BYTES = 256 * MiB
BIOS_BOOT_BYTES = 1 * MiB
LVM_PE_START = 1 * MiB
# Namespace for UUIDs made when a source UUID collides with the receiver's own.
_ID_NAMESPACE = uuidlib.UUID("6f6e2d67-3261-4a2d-8e2f-6469736b7321")


def needed_bytes(fs_type, used_bytes, size_bytes):
    """The smallest filesystem that holds ``used_bytes``: the used space, 10 % and
    64 MiB of headroom (journal, metadata, reserved blocks), never below what the
    filesystem's mkfs accepts. When the used space is unknown the source size counts."""
    floor = MIN_FS_BYTES.get(fs_type, 8 * MiB)
    if used_bytes is None:
        return max(floor, _align_up(size_bytes or 0))
    return max(floor, _align_up(used_bytes + used_bytes // 10 + 64 * MiB))


def _align_up(n, a=MiB):
    return -(-int(n) // a) * a


def _align_down(n, a=MiB):
    return int(n) // a * a


def _gib(n):
    return "%.2f GiB" % (n / float(GiB))


def _norm(path):
    return posixpath.normpath("/" + (path or "").strip("/")) if path else path


@dataclass(frozen=True)
class _Where:
    """Where a source device is: a partition ``part`` of ``disk``, a whole ``disk`` or
    a logical volume ``lv`` (manifest entries); ``kind`` None: no device we know."""
    kind: str | None
    disk: dict | None = None
    part: dict | None = None
    lv: dict | None = None


class _Source(object):
    """Indexes over the manifest (read only)."""

    def __init__(self, manifest):
        disks = manifest.get("disks") or []
        self.part_by_path = {p["path"]: (d, p) for d in disks for p in d.get("partitions") or []}
        self.disk_by_path = {d["path"]: d for d in disks}
        lvm = manifest.get("lvm") or {}
        self.vgs = {vg["name"]: vg for vg in lvm.get("vgs") or []}
        self.pvs = lvm.get("pvs") or []
        self.lvs = lvm.get("lvs") or []
        self.lv_by_dev = {name: lv for lv in self.lvs
                          for name in (*lv_paths(lv["vg"], lv["name"]), lv.get("path")) if name}

    def where(self, device):
        if device in self.part_by_path:
            d, p = self.part_by_path[device]
            return _Where("partition", disk=d, part=p)
        if device in self.disk_by_path:
            return _Where("disk", disk=self.disk_by_path[device])
        if device in self.lv_by_dev:
            return _Where("lv", lv=self.lv_by_dev[device])
        return _Where(None)

    def pv_disk(self, vg_name):
        """The source disk of the VG's first PV (manifest order), or None."""
        for pv in self.pvs:
            w = self.where(pv["name"]) if pv.get("vg") == vg_name else _Where(None)
            if w.kind in ("partition", "disk"):
                return w.disk
        return None


def _has_flag(part, flag):
    return flag in (part.get("flags") or [])


def _is_bios_boot(part):
    return _has_flag(part, "bios_grub") or (part.get("type") or "").upper() == GPT_BIOS_BOOT


def _is_esp_part(part):
    return _has_flag(part, "esp") or (part.get("type") or "").upper() == GPT_ESP \
        or (part.get("type") or "").lower() == "ef"


class _Ids(object):
    """Identifiers already in use (the receiver's own and the ones this plan hands out)
    and the changes made to avoid them."""

    def __init__(self, taken):
        self.taken = {str(t).lower() for t in taken or () if t}
        self.changes = []

    def keep(self, kind, value, where, make):
        """Return ``value`` if free, else a new value made by ``make(value, n)``."""
        if not value:
            return value
        if value.lower() not in self.taken:
            self.taken.add(value.lower())
            return value
        n = 1
        while True:
            new = make(value, n)
            if new.lower() not in self.taken:
                break
            n += 1
        self.taken.add(new.lower())
        self.changes.append({"kind": kind, "old": value, "new": new, "where": where})
        return new


def _new_uuid(value, n):
    return str(uuidlib.uuid5(_ID_NAMESPACE, "%s:%d" % (value.lower(), n)))


def _new_guid(value, n):
    return _new_uuid(value, n).upper()


def _new_vfat_id(value, n):
    h = uuidlib.uuid5(_ID_NAMESPACE, "%s:%d" % (value.lower(), n)).hex[:8].upper()
    return "%s-%s" % (h[:4], h[4:])


def _new_mbr_id(value, n):
    return "0x" + uuidlib.uuid5(_ID_NAMESPACE, "%s:%d" % (value.lower(), n)).hex[:8]


def _fs_uuid_maker(fs_type):
    return _new_vfat_id if fs_type == "vfat" else _new_uuid


@dataclass(frozen=True)
class _Slot:
    """A partition to make, before its size is known: ``src`` (source size) sets its
    share of the disk, ``need`` its least size; ``fixed`` ones keep their source size."""
    role: str
    src: int
    need: int
    fixed: bool
    source: str | None = None
    fs: str | None = None
    vg: "_VgDraft | None" = None
    partuuid: str | None = None
    name: str | None = None
    bootable: bool = False
    type: str | None = None
    new_esp: bool = False


@dataclass(frozen=True)
class _VgDraft:
    """A volume group before its PV's size is known (LV ``size_bytes`` still None)."""
    vg: VolumeGroup
    free_src: int  # the source VG's free space: its share of the growth
    need: int
    src: int


def _fs_entry(src, fs, module, mountpoint, fid):
    """The target filesystem for a source filesystem (type, identity, features)."""
    return Filesystem(
        fid, module, fs["type"], uuid=fs.get("uuid"), source_uuid=fs.get("uuid"),
        label=fs.get("label"), source_device=fs.get("device"), mountpoint=mountpoint,
        system_mountpoint=fs.get("mountpoint"), source_size_bytes=fs.get("size_bytes"),
        used_bytes=fs.get("used_bytes"),
        need_bytes=needed_bytes(fs["type"], fs.get("used_bytes"), fs.get("size_bytes")),
        ext_features=fs.get("ext_features"), xfs_features=fs.get("xfs_features"),
        inode_size=fs.get("inode_size"), block_size=fs.get("block_size"),
        on=_on_lv(src, fs.get("device")))


def _swap_entry(src, sw, fid):
    size = sw.get("size_bytes") or 0
    return Filesystem(fid, "system", "swap", uuid=sw.get("uuid"), source_uuid=sw.get("uuid"),
                      label=sw.get("label"), source_device=sw["path"],
                      source_size_bytes=size, need_bytes=_align_up(size),
                      on=_on_lv(src, sw["path"]))


def _on_lv(src, device):
    w = src.where(device)
    return {"lv": "%s/%s" % (w.lv["vg"], w.lv["name"])} if w.kind == "lv" else None


def _fill(items, available):
    """Share ``available`` bytes among growable ``items`` ((src, need) pairs) in
    proportion to their source size, each at least its need: their sizes, in order."""
    sizes = [0] * len(items)
    pending = list(range(len(items)))
    left = available
    while pending:
        total_src = sum(max(items[k][0], 1) for k in pending) or 1
        short = [k for k in pending if left * max(items[k][0], 1) // total_src < items[k][1]]
        if not short:
            break
        for k in short:
            sizes[k] = items[k][1]
            left -= items[k][1]
            pending.remove(k)
    if pending:
        total_src = sum(max(items[k][0], 1) for k in pending) or 1
        for k in pending[:-1]:
            sizes[k] = max(items[k][1], _align_down(left * max(items[k][0], 1) // total_src))
        sizes[pending[-1]] = _align_down(left - sum(sizes[k] for k in pending[:-1]))
    return sizes


def plan_layout(manifest, plan, targets, taken_ids=(), taken_vg_names=()):
    """Plan every target disk. Pure: same input, same :class:`Layout`.

    ``taken_ids``: UUIDs, PARTUUIDs and table ids of the receiver's own block devices
    (a source id found there is replaced and the change recorded in ``id_changes``).
    ``taken_vg_names``: volume groups the receiver already has (ours get created under
    a temporary name and renamed back when released).
    """
    plan = plan or {}
    src = _Source(manifest)
    firmware = manifest.get("firmware") or "bios"
    modules, data_paths = _modules(plan, targets)
    filesystems, folded, notes = _place_filesystems(src, manifest, modules, data_paths)
    vg_content = {}  # vg name -> [filesystems on its LVs]
    for f in filesystems:
        if f.lv:
            vg_content.setdefault(f.lv.split("/")[0], []).append(f)
    asked = {"system": plan.get("system_disk_size")}
    for d in plan.get("data_disks") or []:
        asked["disk%d" % int(d["index"])] = d.get("size_gib")
    fs_by_id = {f.id: f for f in filesystems}
    disks, vgs = [], []
    for module in modules:
        size = int(targets[module])
        if asked.get(module) and size < int(asked[module]) * GiB:
            notes.append("%s: the disk has %s, the plan asked for %d GiB: the layout is made "
                         "for the disk" % (module, _gib(size), int(asked[module])))
        mine = [f for f in filesystems if f.module == module]
        if module == "system":
            disk, slots, more = _plan_system_disk(src, mine, vg_content, firmware, size)
        else:
            disk, slots, more = _plan_data_disk(src, mine, module, size)
        disk, disk_vgs, sized = _size_disk(disk, slots, fs_by_id)
        fs_by_id = {**fs_by_id, **sized}
        disks.append(disk)
        vgs += disk_vgs
        notes += more
    # Identities after sizes, so a refusal comes first.
    disks, filesystems, device_map, id_changes = _assign_ids(disks, list(fs_by_id.values()),
                                                             taken_ids)
    vgs, more = _name_vgs(vgs, taken_vg_names)
    return Layout(1, firmware, modules, disks, filesystems, vgs, _mounts(modules, filesystems),
                  device_map, id_changes, folded, notes + more)


def _modules(plan, targets):
    """The modules (``system``, ``disk<index>``) and {data disk src_path: module}; each
    module needs a target disk and each target disk a module."""
    modules = ["system"]
    data_paths = {}
    for d in plan.get("data_disks") or []:
        name = "disk%d" % int(d["index"])
        modules.append(name)
        data_paths[_norm(d["src_path"])] = name
    for name in modules:
        if name not in targets:
            raise DiskError(
                "no target disk for %r: the plan needs one (%s)" % (name, ", ".join(modules)),
                code="disk.missing",
                hint="attach a disk and name it, e.g. --disk %s=/dev/vdX" % name,
            )
    extra = sorted(set(targets) - set(modules))
    if extra:
        raise DiskError(
            "target disk(s) %s are not in the plan (it has %s)" % (", ".join(extra),
                                                                   ", ".join(modules)),
            code="disk.unexpected",
            hint="add the data disk to user_config.json data_disks or drop the --disk",
        )
    return modules, data_paths


def _place_filesystems(src, manifest, modules, data_paths):
    """Which filesystem goes to which module, at which mount point in the module:
    (filesystems, folded, notes)."""
    filesystems, folded, notes = [], [], []
    fs_list = [f for f in manifest.get("filesystems") or [] if f.get("mountpoint")]
    fs_list.sort(key=lambda f: (_norm(f["mountpoint"]).count("/"), _norm(f["mountpoint"])))
    n = 0
    seen_devices = set()
    for fs in fs_list:
        mp = _norm(fs["mountpoint"])
        if fs.get("device") in seen_devices:
            notes.append("%s is %s mounted a second time: not made twice" % (
                mp, fs.get("device")))
            continue
        seen_devices.add(fs.get("device"))
        module, rel = "system", mp
        for dpath, dmod in sorted(data_paths.items(), key=lambda kv: -len(kv[0])):
            if mp == dpath or mp.startswith(dpath.rstrip("/") + "/"):
                module, rel = dmod, "/" + mp[len(dpath):].lstrip("/")
                break
        if fs["type"] not in SUPPORTED_FS or (module != "system" and rel != "/"):
            if rel == "/":
                raise DiskError(
                    "the filesystem at %s is %s, which the receiver cannot rebuild "
                    "(it can: %s)" % (mp, fs["type"], ", ".join(SUPPORTED_FS)),
                    code="disk.unsupported_filesystem",
                    hint="migrate a system whose root and data disk paths are on one of those",
                )
            parent = _parent_fs([f for f in filesystems if f.module == module], rel)
            if parent is not None and fs.get("used_bytes"):
                used = (parent.used_bytes or 0) + fs["used_bytes"]
                filesystems[filesystems.index(parent)] = parent = replace(
                    parent, used_bytes=used,
                    need_bytes=needed_bytes(parent.type, used, parent.source_size_bytes))
            into = parent.system_mountpoint if parent else None
            folded.append({"mountpoint": mp, "type": fs["type"], "device": fs.get("device"),
                           "into": into})
            notes.append("%s (%s on %s) is copied into the filesystem of %s" % (
                mp, fs["type"], fs.get("device"), into or "/"))
            continue
        n += 1
        filesystems.append(_fs_entry(src, fs, module, rel, "fs%d" % n))

    if not any(f.module == "system" and f.mountpoint == "/" for f in filesystems):
        raise DiskError("the manifest has no filesystem mounted at /",
                        code="disk.no_root", hint="send the manifest of a mounted system")
    for dpath, dmod in data_paths.items():
        if not any(f.module == dmod and f.mountpoint == "/" for f in filesystems):
            n += 1
            filesystems.append(Filesystem("fs%d" % n, dmod, "ext4", mountpoint="/",
                                          system_mountpoint=dpath,
                                          need_bytes=MIN_FS_BYTES["ext4"], new=True))
            notes.append("%s is a folder on the source, not a filesystem: %s gets a new "
                         "ext4 filesystem (new UUID, fstab entry to add)" % (dpath, dmod))
    for sw in manifest.get("swap") or []:
        if sw.get("kind") in ("partition", "lv"):
            n += 1
            filesystems.append(_swap_entry(src, sw, "fs%d" % n))
    return filesystems, folded, notes


def _parent_fs(entries, rel):
    best = None
    for f in entries:
        mp = f.mountpoint
        inside = mp and (mp == "/" or rel.startswith(mp.rstrip("/") + "/")) and mp != rel
        if inside and (best is None or len(mp) > len(best.mountpoint)):
            best = f
    return best


def _is_fixed_fs(f, part=None):
    if f.type == "swap" or f.mountpoint in FIXED_MOUNTPOINTS:
        return True
    return bool(part is not None and _is_esp_part(part) and f.type == "vfat")


def _fs_slot(f, part, disk_table):
    """One partition holding filesystem ``f`` (``part``: the source partition or None)."""
    part = part or {}
    esp = f.type == "vfat" and (_is_esp_part(part) or f.mountpoint in ("/boot/efi", "/efi"))
    role = "swap" if f.type == "swap" else "esp" if esp else "fs"
    src_size = part.get("size_bytes") or f.source_size_bytes or f.need_bytes
    fixed = _is_fixed_fs(f, part or None)
    # A partition that keeps its size holds what it held on the source (same type and
    # features): the headroom rule is for the partitions that get resized.
    need = min(f.need_bytes, _align_up(src_size)) if fixed else f.need_bytes
    return _Slot(role, int(src_size), need, fixed, source=part.get("path"), fs=f.id,
                 partuuid=part.get("partuuid") if disk_table == "gpt" else None,
                 name=part.get("name"), bootable=bool(part.get("bootable")),
                 type=part.get("type"))


def _plan_system_disk(src, entries, vg_content, firmware, size):
    """The system disk: the table and partition order of the source disk holding /boot
    (or /), then what lives elsewhere. Returns (disk, slots, notes)."""
    notes = []
    by_dev = {f.source_device: f for f in entries if f.source_device}
    root = next(f for f in entries if f.mountpoint == "/")
    boot = next((f for f in entries if f.mountpoint == "/boot"), root)
    w = src.where(boot.source_device)
    boot_disk = src.pv_disk(w.lv["vg"]) if w.kind == "lv" else w.disk
    table = (boot_disk or {}).get("table") or "none"
    if table == "none":
        table = "gpt" if firmware == "uefi" else "dos"
        notes.append("the source system disk has no partition table: the target gets %s"
                     % ("GPT" if table == "gpt" else "MBR"))
    if table == "dos" and size > MBR_LIMIT:
        table = "gpt"
        notes.append("the target system disk is larger than 2 TiB: GPT instead of MBR "
                     "(with a BIOS boot partition)")
    table_id = (boot_disk or {}).get("table_id") if (boot_disk or {}).get("table") == table \
        else None
    disk = Disk("system", size, table, table_id, (boot_disk or {}).get("path"), [], None)
    slots = []
    placed = set()
    vgs_placed = set()

    def add_vg(vg_name, part):
        if vg_name in vgs_placed:
            return
        vgs_placed.add(vg_name)
        vg, more = _plan_vg(src, vg_name, vg_content.get(vg_name, []))
        notes.extend(more)
        part = part or {}
        slots.append(_Slot("lvm", vg.src, vg.need, False, source=part.get("path"), vg=vg,
                           partuuid=part.get("partuuid") if table == "gpt" else None,
                           name=part.get("name"), type=part.get("type")))
        placed.update(f.id for f in vg_content.get(vg_name, []))

    if boot_disk is not None:
        parts = sorted(boot_disk.get("partitions") or [], key=lambda p: p["start_bytes"])
        for p in parts:
            if _has_flag(p, "extended") or (p.get("type") or "").lower() in ("5", "f", "85"):
                continue
            if _is_bios_boot(p):
                if table == "gpt":
                    slots.append(_Slot("bios_boot", p["size_bytes"], BIOS_BOOT_BYTES, True,
                                       source=p["path"], partuuid=p.get("partuuid"),
                                       name=p.get("name"), type=GPT_BIOS_BOOT))
                continue
            f = by_dev.get(p["path"])
            if f is not None:
                slots.append(_fs_slot(f, p, table))
                placed.add(f.id)
                continue
            vg_name = next((pv.get("vg") for pv in src.pvs if pv["name"] == p["path"]), None)
            if vg_name and vg_name in vg_content:
                add_vg(vg_name, p)
                continue
            notes.append("%s holds nothing that is migrated: not recreated" % p["path"])
    for f in entries:
        if f.id in placed:
            continue
        if f.lv:
            add_vg(f.lv.split("/")[0], None)
            continue
        slots.append(_fs_slot(f, src.where(f.source_device).part, table))
        placed.add(f.id)
        notes.append("%s (%s) moves onto the system disk as its own partition" % (
            f.system_mountpoint or f.source_device, f.source_device))
    if table == "gpt" and firmware == "bios" and not any(s.role == "bios_boot" for s in slots):
        slots.insert(0, _Slot("bios_boot", BIOS_BOOT_BYTES, BIOS_BOOT_BYTES, True,
                              type=GPT_BIOS_BOOT))
        notes.append("GPT with BIOS firmware: a 1 MiB BIOS boot partition is added for GRUB")
    if firmware == "uefi" and not any(s.role == "esp" for s in slots):
        notes.append("UEFI source without an EFI system partition: a new 256 MiB ESP is "
                     "added at /boot/efi (new volume id)")
        slots.insert(0, _Slot("esp", NEW_ESP_BYTES, NEW_ESP_BYTES, True,
                              name="EFI System Partition", new_esp=True))
    return disk, slots, notes


def _plan_data_disk(src, entries, module, size):
    """A data disk: one filesystem, on the whole disk as on the source or on one
    partition. Returns (disk without partitions, slots, notes)."""
    main = next(f for f in entries if f.mountpoint == "/")
    w = src.where(main.source_device)
    if w.kind == "disk":
        return Disk(module, size, "none", None, w.disk["path"], [], main.id), [], []
    table, table_id, notes = "gpt", None, []
    if w.kind == "partition":
        table = w.disk.get("table") if w.disk.get("table") in ("gpt", "dos") else "gpt"
        table_id = w.disk.get("table_id")
        if table == "dos" and size > MBR_LIMIT:
            table, table_id = "gpt", None
    elif w.kind == "lv":
        notes.append("%s is on LVM (%s): the target %s holds it on a plain partition" % (
            main.system_mountpoint, main.lv, module))
    slot = replace(_fs_slot(main, w.part, table), fixed=False)
    disk = Disk(module, size, table, table_id, w.disk["path"] if w.part else None, [], None)
    return disk, [slot], notes


def _plan_vg(src, vg_name, content):
    """The volume group ``vg_name`` with an LV for each filesystem in ``content``:
    (draft, notes)."""
    vg = src.vgs.get(vg_name) or {}
    extent = int(vg.get("extent_size_bytes") or 4 * MiB)
    lvs, notes = [], []
    for lv in src.lvs:
        if lv["vg"] != vg_name:
            continue
        f = next((c for c in content if c.lv == "%s/%s" % (vg_name, lv["name"])), None)
        if f is None:
            notes.append("logical volume %s/%s holds nothing that is migrated: not recreated"
                         % (vg_name, lv["name"]))
            continue
        lvs.append(LogicalVolume(lv["name"], f.id, _is_fixed_fs(f), lv.get("uuid"), None,
                                 int(lv["size_bytes"]), _align_up(f.need_bytes, extent)))
    free = int(vg.get("free_bytes") or 0)
    fixed_total = sum(_align_up(lv.source_size_bytes, extent) for lv in lvs if lv.fixed)
    need = LVM_PE_START + fixed_total + sum(lv.need_bytes for lv in lvs if not lv.fixed) \
        + extent * (len(lvs) + 1)
    src_total = int(vg.get("size_bytes") or sum(lv.source_size_bytes for lv in lvs) + free)
    draft = VolumeGroup(vg_name, vg_name, vg.get("uuid"), extent, lvs)
    return _VgDraft(draft, free, _align_up(need), src_total), notes


def _size_vg(draft, pv_bytes):
    """The volume group on a PV of ``pv_bytes``: fixed LVs keep their size, the others
    share the rest with the source's free space."""
    vg = draft.vg
    extent = vg.extent_size_bytes
    usable = _align_down(pv_bytes - LVM_PE_START, extent) - extent
    fixed_total = sum(_align_up(lv.source_size_bytes, extent) for lv in vg.lvs if lv.fixed)
    grow = [(lv.source_size_bytes, lv.need_bytes) for lv in vg.lvs if not lv.fixed]
    shares = iter(_fill(grow + [(draft.free_src, 0)], usable - fixed_total) if grow else ())
    lvs = [replace(lv, size_bytes=_align_up(lv.source_size_bytes, extent) if lv.fixed
                   else _align_down(next(shares), extent)) for lv in vg.lvs]
    return replace(vg, lvs=lvs, size_bytes=usable)


def _size_disk(disk, slots, fs_by_id):
    """Give every planned partition its number, start and size, or refuse. Returns
    (disk, its volume groups, {fs id: the filesystem with its size and place})."""
    module, size = disk.module, disk.size_bytes
    if disk.table == "none":
        f = fs_by_id[disk.whole_disk_fs]
        if f.need_bytes > size:
            raise _too_small(module, size, f.need_bytes, [_fs_need(f, f.need_bytes)])
        return disk, [], {f.id: replace(f, size_bytes=size, on={"disk": True})}
    start = MiB
    end = _align_down(size - (MiB if disk.table == "gpt" else 0))
    logical = disk.table == "dos" and len(slots) > 4
    overhead = MiB * (len(slots) - 3) if logical else 0
    fixed_total = sum(_fixed_size(s) for s in slots if s.fixed)
    grow = [s for s in slots if not s.fixed]
    available = end - start - fixed_total - overhead
    need_total = sum(s.need for s in grow)
    if need_total > available:
        raise _too_small(module, size, size - available + need_total, [
            "LVM volume group %s needs %s" % (s.vg.vg.name, _gib(s.need)) if s.vg
            else _fs_need(fs_by_id.get(s.fs), s.need) for s in grow])
    shares = iter(_fill([(s.src, s.need) for s in grow], available))
    partitions, vgs, sized = [], [], {}
    pos = start
    for k, s in enumerate(slots):
        in_extended = logical and k >= 3
        pos += MiB if in_extended else 0  # room for the extended boot record
        psize = _fixed_size(s) if s.fixed else next(shares)
        fs_id = "fs-esp" if s.new_esp else s.fs
        if s.new_esp:
            sized[fs_id] = Filesystem(fs_id, "system", "vfat", mountpoint="/boot/efi",
                                      system_mountpoint="/boot/efi", size_bytes=psize,
                                      need_bytes=NEW_ESP_BYTES, new=True)
        elif fs_id:
            sized[fs_id] = replace(fs_by_id[fs_id], size_bytes=psize, on=None)
        if s.vg:
            vgs.append(_size_vg(s.vg, psize))
            sized.update({lv.fs: replace(fs_by_id[lv.fs], size_bytes=lv.size_bytes)
                          for lv in vgs[-1].lvs})
        partitions.append(Partition(
            k + 2 if in_extended else k + 1, pos, psize, s.role, _type_code(disk.table, s),
            s.partuuid, s.name if disk.table == "gpt" else None, s.bootable, s.source, fs_id,
            s.vg.vg.name if s.vg else None, in_extended))
        pos += psize
    extended = None
    if logical:
        ext_start = partitions[3].start_bytes - MiB
        extended = Extended(4, ext_start, _align_down(size) - ext_start)
    return replace(disk, partitions=partitions, extended=extended), vgs, sized


def _fixed_size(slot):
    return max(_align_up(slot.src), slot.need)


def _type_code(table, slot):
    role, given = slot.role, slot.type
    if table == "gpt":
        if role == "bios_boot":
            return GPT_BIOS_BOOT
        if role == "esp":
            return GPT_ESP
        if given and len(given) == 36:
            return given.upper()
        return GPT_TYPES.get({"fs": "linux"}.get(role, role), GPT_LINUX)
    if given and len(given) <= 2:
        return given.lower()
    return MBR_TYPES.get({"fs": "linux"}.get(role, role), "83")


def _assign_ids(disks, filesystems, taken_ids):
    """Keep the source's table ids, PARTUUIDs and UUIDs unless the receiver has them:
    (disks, filesystems, device_map, id_changes)."""
    ids = _Ids(taken_ids)
    device_map = {}
    out_disks, out_fs = [], []
    for disk in disks:
        table_id = disk.table_id
        if table_id:
            table_id = ids.keep("table_id", table_id, disk.module,
                                _new_guid if disk.table == "gpt" else _new_mbr_id)
        partitions = []
        for p in disk.partitions:
            partuuid = p.partuuid
            if disk.table == "gpt" and partuuid:
                partuuid = ids.keep("partuuid", partuuid,
                                    "%s partition %d" % (disk.module, p.number), _new_guid)
            elif disk.table == "dos":
                partuuid = "%s-%02x" % (table_id[2:], p.number) if table_id else None
            partitions.append(replace(p, partuuid=partuuid))
            if p.source:
                device_map[p.source] = {"module": disk.module, "partition": p.number}
        out_disks.append(replace(disk, table_id=table_id, partitions=partitions))
    for f in filesystems:
        if f.uuid:
            f = replace(f, uuid=ids.keep("filesystem", f.uuid,
                                         f.system_mountpoint or f.source_device,
                                         _fs_uuid_maker(f.type)))
        if f.source_device and f.lv:
            device_map[f.source_device] = {"module": f.module, "lv": f.lv}
        out_fs.append(f)
    return out_disks, out_fs, device_map, ids.changes


def _name_vgs(vgs, taken_vg_names):
    """A volume group whose name the receiver has is made as g2a-<name>: (vgs, notes)."""
    out, notes = [], []
    for vg in vgs:
        if vg.name in set(taken_vg_names or ()):
            vg = replace(vg, create_name="g2a-" + vg.name)
            notes.append("the receiver has a volume group named %s: ours is made as %s "
                         "and renamed back when released" % (vg.name, vg.create_name))
        out.append(vg)
    return out, notes


def _mounts(modules, filesystems):
    """Per module, in mount order (parents first)."""
    mounts = []
    for module in modules:
        mine = [f for f in filesystems if f.module == module and f.type != "swap"
                and f.mountpoint]
        mine.sort(key=lambda f: (f.mountpoint.rstrip("/").count("/"), f.mountpoint))
        mounts += [Mount(module, f.mountpoint, f.id, f.type) for f in mine]
    return mounts


def _fs_need(f, need):
    if f is None or not f.system_mountpoint:
        return None
    return "%s needs %s (used %s)" % (f.system_mountpoint, _gib(need), _gib(f.used_bytes or 0))


def _too_small(module, size, needed, details):
    detail = [d for d in details if d]
    gib_needed = -(-needed // GiB)
    return DiskError(
        "target disk %r is too small: it needs at least %d bytes (%s), it has %d bytes (%s)%s"
        % (module, needed, _gib(needed), size, _gib(size),
           (": " + "; ".join(detail)) if detail else ""),
        code="disk.too_small",
        hint="give %s at least %d GiB (system_disk_size / data_disk_size) or exclude data"
        % (module, gib_needed),
        disk=module, needed_bytes=int(needed), available_bytes=int(size),
    )


def render_review(layout):
    """The plan (a :class:`Layout`) as text for people (``--dry-run``, the status)."""
    lines = []
    for disk in layout.disks:
        lines.append("%s: %s, %s%s" % (
            disk.module, _gib(disk.size_bytes),
            {"gpt": "GPT", "dos": "MBR", "none": "no partition table"}[disk.table],
            (" (from %s)" % disk.source_disk) if disk.source_disk else ""))
        if disk.table == "none":
            lines.append("  whole disk: %s" % _describe_fs(layout.filesystem(disk.whole_disk_fs)))
        if disk.extended:
            lines.append("  #4 extended %10s at %s" % (_gib(disk.extended.size_bytes),
                                                      _gib(disk.extended.start_bytes)))
        for p in disk.partitions:
            vg = layout.vg(p.vg) if p.role == "lvm" else None
            what = p.role
            if p.fs:
                what = _describe_fs(layout.filesystem(p.fs))
            elif p.role == "bios_boot":
                what = "BIOS boot partition"
            elif vg:
                what = "LVM PV of %s" % (vg.name if vg.create_name == vg.name else
                                         "%s (made as %s)" % (vg.name, vg.create_name))
            lines.append("  #%d %10s %s%s" % (
                p.number, _gib(p.size_bytes), what, ("  <- %s" % p.source) if p.source else ""))
            for lv in vg.lvs if vg else ():
                lines.append("      %s/%s %10s %s" % (vg.name, lv.name, _gib(lv.size_bytes),
                                                   _describe_fs(layout.filesystem(lv.fs))))
    if layout.mounts:
        lines.append("mounts:")
        for m in layout.mounts:
            f = layout.filesystem(m.fs)
            lines.append("  %s:%s  (%s %s)" % (m.module, m.mountpoint, f.type, f.uuid or "new"))
    for c in layout.id_changes:
        lines.append("id change: %s %s -> %s (%s collides with the receiver)" % (
            c["kind"], c["old"], c["new"], c["where"]))
    for note in layout.notes:
        lines.append("note: " + note)
    return "\n".join(lines) + "\n"


def _describe_fs(f):
    bits = [f.type]
    if f.system_mountpoint:
        bits.append(f.system_mountpoint)
    if f.uuid:
        bits.append("UUID=" + f.uuid)
    if f.label:
        bits.append("LABEL=" + f.label)
    if f.used_bytes is not None:
        bits.append("used " + _gib(f.used_bytes))
    return " ".join(bits)
