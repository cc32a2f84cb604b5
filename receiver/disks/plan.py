"""Plan the target disks from the source manifest: a pure function, no effects.

``plan_layout(manifest, plan, targets)`` answers, before anything is written, what each
target disk will hold: its partition table (MBR or GPT, with a BIOS boot partition or
an ESP when the firmware needs one), the partitions with their sizes scaled to the
target disk (BIOS boot, ESP, ``/boot`` and swap keep their size; the rest share what is
left in proportion to their source size, each getting at least its used space plus
headroom), the filesystems with the source's type, UUID, label and features, the LVM
volume groups and logical volumes, and the mount tree. A layout that cannot hold the
used space is refused with :class:`DiskError` ``disk.too_small``.

The layout is a plain JSON-able dict (it is saved in the state folder and shown in the
status); :func:`render_review` turns it into text for people.

Sizes are bytes everywhere. ``targets`` maps module names (``system``, ``disk1`` ...)
to the target disk size in bytes.
"""

import posixpath
import uuid as uuidlib

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


class _Source(object):
    """Indexes over the manifest (read only)."""

    def __init__(self, manifest):
        self.m = manifest
        self.disks = manifest.get("disks") or []
        self.part_by_path = {}
        for d in self.disks:
            for p in d.get("partitions") or []:
                self.part_by_path[p["path"]] = (d, p)
        self.disk_by_path = {d["path"]: d for d in self.disks}
        lvm = manifest.get("lvm") or {}
        self.vgs = {vg["name"]: vg for vg in lvm.get("vgs") or []}
        self.pvs = lvm.get("pvs") or []
        self.lvs = lvm.get("lvs") or []
        self.lv_by_dev = {}
        for lv in self.lvs:
            for name in _lv_device_names(lv):
                self.lv_by_dev[name] = lv

    def where(self, device):
        """("partition", disk, part) | ("disk", disk, None) | ("lv", lv, None) | None."""
        if device in self.part_by_path:
            d, p = self.part_by_path[device]
            return ("partition", d, p)
        if device in self.disk_by_path:
            return ("disk", self.disk_by_path[device], None)
        if device in self.lv_by_dev:
            return ("lv", self.lv_by_dev[device], None)
        return None

    def pv_disks(self, vg_name):
        """(disk, partition-or-None) for each PV of the VG, in manifest order."""
        out = []
        for pv in self.pvs:
            if pv.get("vg") == vg_name:
                w = self.where(pv["name"])
                if w and w[0] in ("partition", "disk"):
                    out.append((w[1], w[2]))
        return out


def _lv_device_names(lv):
    names = set(lv_paths(lv["vg"], lv["name"]))
    if lv.get("path"):
        names.add(lv["path"])
    return names


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


def _fs_entry(fs, module, mountpoint, fid):
    """The target filesystem for a source filesystem (type, identity, features)."""
    return {
        "id": fid,
        "module": module,
        "type": fs["type"],
        "uuid": fs.get("uuid"),
        "source_uuid": fs.get("uuid"),
        "label": fs.get("label"),
        "source_device": fs.get("device"),
        "mountpoint": mountpoint,
        "system_mountpoint": fs.get("mountpoint"),
        "size_bytes": None,
        "source_size_bytes": fs.get("size_bytes"),
        "used_bytes": fs.get("used_bytes"),
        "need_bytes": needed_bytes(fs["type"], fs.get("used_bytes"), fs.get("size_bytes")),
        "ext_features": fs.get("ext_features"),
        "xfs_features": fs.get("xfs_features"),
        "inode_size": fs.get("inode_size"),
        "block_size": fs.get("block_size"),
        "on": None,
    }


def _swap_entry(sw, fid):
    size = sw.get("size_bytes") or 0
    return {
        "id": fid, "module": "system", "type": "swap", "uuid": sw.get("uuid"),
        "source_uuid": sw.get("uuid"), "label": sw.get("label"),
        "source_device": sw["path"], "mountpoint": None, "system_mountpoint": None,
        "size_bytes": None, "source_size_bytes": size, "used_bytes": None,
        "need_bytes": _align_up(size), "ext_features": None, "xfs_features": None,
        "inode_size": None, "block_size": None, "on": None,
    }


def _fill(items, available):
    """Share ``available`` bytes among growable ``items`` ({"src", "need"}) in
    proportion to their source size, each at least its need; sets item["size"]."""
    pending = list(items)
    left = available
    while pending:
        total_src = sum(max(i["src"], 1) for i in pending) or 1
        short = [i for i in pending if left * max(i["src"], 1) // total_src < i["need"]]
        if not short:
            break
        for i in short:
            i["size"] = i["need"]
            left -= i["need"]
            pending.remove(i)
    if pending:
        total_src = sum(max(i["src"], 1) for i in pending) or 1
        given = 0
        for i in pending[:-1]:
            i["size"] = max(i["need"], _align_down(left * max(i["src"], 1) // total_src))
            given += i["size"]
        pending[-1]["size"] = _align_down(left - given)


def plan_layout(manifest, plan, targets, taken_ids=(), taken_vg_names=()):
    """Plan every target disk. Pure: same input, same layout.

    ``taken_ids``: UUIDs, PARTUUIDs and table ids of the receiver's own block devices
    (a source id found there is replaced and the change recorded in ``id_changes``).
    ``taken_vg_names``: volume groups the receiver already has (ours get created under
    a temporary name and renamed back when released).
    """
    plan = plan or {}
    src = _Source(manifest)
    ids = _Ids(taken_ids)
    notes = []
    firmware = manifest.get("firmware") or "bios"

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

    # 1. Which filesystem goes to which module, at which mount point in the module.
    filesystems = []
    folded = []
    by_module = {m: [] for m in modules}
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
            parent = _parent_fs(by_module[module], rel)
            if parent is not None and fs.get("used_bytes"):
                parent["used_bytes"] = (parent["used_bytes"] or 0) + fs["used_bytes"]
                parent["need_bytes"] = needed_bytes(parent["type"], parent["used_bytes"],
                                                    parent["source_size_bytes"])
            folded.append({"mountpoint": mp, "type": fs["type"], "device": fs.get("device"),
                           "into": parent["system_mountpoint"] if parent else None})
            notes.append("%s (%s on %s) is copied into the filesystem of %s" % (
                mp, fs["type"], fs.get("device"), parent["system_mountpoint"] if parent else "/"))
            continue
        n += 1
        entry = _fs_entry(fs, module, rel, "fs%d" % n)
        by_module[module].append(entry)
        filesystems.append(entry)

    if not any(f["mountpoint"] == "/" for f in by_module["system"]):
        raise DiskError("the manifest has no filesystem mounted at /",
                        code="disk.no_root", hint="send the manifest of a mounted system")
    for dpath, dmod in data_paths.items():
        if not any(f["mountpoint"] == "/" for f in by_module[dmod]):
            n += 1
            entry = {
                "id": "fs%d" % n, "module": dmod, "type": "ext4", "uuid": None,
                "source_uuid": None, "label": None, "source_device": None, "mountpoint": "/",
                "system_mountpoint": dpath, "size_bytes": None, "source_size_bytes": None,
                "used_bytes": None, "need_bytes": MIN_FS_BYTES["ext4"], "ext_features": None,
                "xfs_features": None, "inode_size": None, "block_size": None, "on": None,
                "new": True,
            }
            by_module[dmod].append(entry)
            filesystems.append(entry)
            notes.append("%s is a folder on the source, not a filesystem: %s gets a new "
                         "ext4 filesystem (new UUID, fstab entry to add)" % (dpath, dmod))

    swaps = []
    for sw in manifest.get("swap") or []:
        if sw.get("kind") in ("partition", "lv"):
            n += 1
            entry = _swap_entry(sw, "fs%d" % n)
            swaps.append(entry)
            filesystems.append(entry)
            by_module["system"].append(entry)

    # 2. Where each filesystem lives on the source: partition, whole disk or LV.
    fs_by_dev = {}
    for f in filesystems:
        if f["source_device"]:
            fs_by_dev[f["source_device"]] = f
    vg_content = {}  # vg name -> [fs entries on its LVs]
    for f in filesystems:
        w = src.where(f["source_device"]) if f["source_device"] else None
        if w and w[0] == "lv":
            f["on"] = {"lv": "%s/%s" % (w[1]["vg"], w[1]["name"])}
            vg_content.setdefault(w[1]["vg"], []).append(f)

    disks = []
    vgs_out = []
    device_map = {}
    asked = {"system": plan.get("system_disk_size")}
    for d in plan.get("data_disks") or []:
        asked["disk%d" % int(d["index"])] = d.get("size_gib")
    for module in modules:
        size = int(targets[module])
        if asked.get(module) and size < int(asked[module]) * GiB:
            notes.append("%s: the disk has %s, the plan asked for %d GiB: the layout is made "
                         "for the disk" % (module, _gib(size), int(asked[module])))
        if module == "system":
            disk = _plan_system_disk(src, by_module["system"], vg_content, firmware, size,
                                     notes)
        else:
            disk = _plan_data_disk(src, by_module[module], module, size, notes)
        _size_disk(disk, size, src, vg_content, filesystems)
        _number_partitions(disk)
        disks.append(disk)

    # 3. Identities (after sizes, so a refusal comes first), collisions handled.
    for disk in disks:
        if disk["table"] == "gpt" and disk.get("table_id"):
            disk["table_id"] = ids.keep("table_id", disk["table_id"], disk["module"], _new_guid)
        elif disk["table"] == "dos" and disk.get("table_id"):
            disk["table_id"] = ids.keep("table_id", disk["table_id"], disk["module"],
                                        _new_mbr_id)
        for p in disk["partitions"]:
            if disk["table"] == "gpt" and p.get("partuuid"):
                p["partuuid"] = ids.keep("partuuid", p["partuuid"],
                                         "%s partition %d" % (disk["module"], p["number"]),
                                         _new_guid)
            elif disk["table"] == "dos":
                p["partuuid"] = ("%s-%02x" % (disk["table_id"][2:], p["number"])
                                 if disk.get("table_id") else None)
            if p.get("source"):
                device_map[p["source"]] = {"module": disk["module"], "partition": p["number"]}
    for f in filesystems:
        if f["uuid"]:
            f["uuid"] = ids.keep("filesystem", f["uuid"],
                                 f["system_mountpoint"] or f["source_device"],
                                 _fs_uuid_maker(f["type"]))
        if f["source_device"] and f["on"] and "lv" in f["on"]:
            device_map[f["source_device"]] = {"module": f["module"], "lv": f["on"]["lv"]}
    for disk in disks:
        for vg in disk.pop("_vgs", []):
            if vg["name"] in set(taken_vg_names or ()):
                vg["create_name"] = "g2a-" + vg["name"]
                notes.append("the receiver has a volume group named %s: ours is made as %s "
                             "and renamed back when released" % (vg["name"], vg["create_name"]))
            vgs_out.append(vg)

    mounts = []
    for module in modules:
        mine = [f for f in filesystems
                if f["module"] == module and f["type"] != "swap" and f["mountpoint"]]
        mine.sort(key=lambda f: (f["mountpoint"].rstrip("/").count("/"), f["mountpoint"]))
        for f in mine:
            mounts.append({"module": module, "mountpoint": f["mountpoint"], "fs": f["id"],
                           "type": f["type"]})
    return {
        "version": 1,
        "firmware": firmware,
        "modules": modules,
        "disks": disks,
        "filesystems": filesystems,
        "vgs": vgs_out,
        "mounts": mounts,
        "device_map": device_map,
        "id_changes": ids.changes,
        "folded": folded,
        "notes": notes,
    }


def _parent_fs(entries, rel):
    best = None
    for f in entries:
        mp = f["mountpoint"]
        inside = mp and (mp == "/" or rel.startswith(mp.rstrip("/") + "/")) and mp != rel
        if inside and (best is None or len(mp) > len(best["mountpoint"])):
            best = f
    return best


def _is_fixed_fs(f, part=None):
    if f["type"] == "swap" or f["mountpoint"] in FIXED_MOUNTPOINTS:
        return True
    return bool(part is not None and _is_esp_part(part) and f["type"] == "vfat")


def _item_for_fs(f, part, disk_table):
    """One partition holding filesystem ``f`` (``part``: the source partition or None)."""
    esp = f["type"] == "vfat" and (
        (part is not None and _is_esp_part(part))
        or f["mountpoint"] in ("/boot/efi", "/efi"))
    if f["type"] == "swap":
        role = "swap"
    elif esp:
        role = "esp"
    else:
        role = "fs"
    src_size = (part or {}).get("size_bytes") or f["source_size_bytes"] or f["need_bytes"]
    fixed = _is_fixed_fs(f, part)
    # A partition that keeps its size holds what it held on the source (same type and
    # features): the headroom rule is for the partitions that get resized.
    need = min(f["need_bytes"], _align_up(src_size)) if fixed else f["need_bytes"]
    return {
        "role": role, "fs": f["id"], "source": part["path"] if part else None,
        "src": int(src_size), "need": need,
        "fixed": fixed,
        "partuuid": (part or {}).get("partuuid") if disk_table == "gpt" else None,
        "name": (part or {}).get("name"),
        "bootable": bool((part or {}).get("bootable")),
        "type": (part or {}).get("type"),
    }


def _plan_system_disk(src, entries, vg_content, firmware, size, notes):
    by_dev = {f["source_device"]: f for f in entries if f["source_device"]}
    root = next(f for f in entries if f["mountpoint"] == "/")
    boot = next((f for f in entries if f["mountpoint"] == "/boot"), root)
    boot_disk = None
    w = src.where(boot["source_device"])
    if w and w[0] in ("partition", "disk"):
        boot_disk = w[1]
    elif w and w[0] == "lv":
        pvd = src.pv_disks(w[1]["vg"])
        boot_disk = pvd[0][0] if pvd else None
    table = (boot_disk or {}).get("table") or "none"
    if table == "none":
        table = "gpt" if firmware == "uefi" else "dos"
        notes.append("the source system disk has no partition table: the target gets %s"
                     % ("GPT" if table == "gpt" else "MBR"))
    if table == "dos" and size > MBR_LIMIT:
        table = "gpt"
        notes.append("the target system disk is larger than 2 TiB: GPT instead of MBR "
                     "(with a BIOS boot partition)")
    disk = {"module": "system", "size_bytes": size, "table": table,
            "table_id": (boot_disk or {}).get("table_id") if (boot_disk or {}).get("table")
            == table else None,
            "source_disk": (boot_disk or {}).get("path"), "partitions": [], "_items": [],
            "_vgs": [], "whole_disk_fs": None}
    items = disk["_items"]
    placed = set()
    vgs_placed = set()

    def add_vg(vg_name, part):
        if vg_name in vgs_placed:
            return
        vgs_placed.add(vg_name)
        vg = _plan_vg(src, vg_name, vg_content.get(vg_name, []), notes)
        disk["_vgs"].append(vg)
        items.append({"role": "lvm", "vg": vg_name, "source": part["path"] if part else None,
                      "src": vg["_src"], "need": vg["_need"], "fixed": False,
                      "partuuid": (part or {}).get("partuuid") if table == "gpt" else None,
                      "name": (part or {}).get("name"), "bootable": False,
                      "type": (part or {}).get("type")})
        for f in vg_content.get(vg_name, []):
            placed.add(f["id"])

    if boot_disk is not None:
        parts = sorted(boot_disk.get("partitions") or [], key=lambda p: p["start_bytes"])
        for p in parts:
            if _has_flag(p, "extended") or (p.get("type") or "").lower() in ("5", "f", "85"):
                continue
            if _is_bios_boot(p):
                if table == "gpt":
                    items.append({"role": "bios_boot", "fs": None, "source": p["path"],
                                  "src": p["size_bytes"], "need": BIOS_BOOT_BYTES,
                                  "fixed": True, "partuuid": p.get("partuuid"),
                                  "name": p.get("name"), "bootable": False,
                                  "type": GPT_BIOS_BOOT})
                continue
            f = by_dev.get(p["path"])
            if f is not None:
                items.append(_item_for_fs(f, p, table))
                placed.add(f["id"])
                continue
            vg_name = next((pv.get("vg") for pv in src.pvs if pv["name"] == p["path"]), None)
            if vg_name and vg_name in vg_content:
                add_vg(vg_name, p)
                continue
            notes.append("%s holds nothing that is migrated: not recreated" % p["path"])
    for f in entries:
        if f["id"] in placed:
            continue
        if f["on"] and "lv" in f["on"]:
            add_vg(f["on"]["lv"].split("/")[0], None)
            continue
        w = src.where(f["source_device"]) if f["source_device"] else None
        part = w[2] if w and w[0] == "partition" else None
        items.append(_item_for_fs(f, part, table))
        placed.add(f["id"])
        notes.append("%s (%s) moves onto the system disk as its own partition" % (
            f["system_mountpoint"] or f["source_device"], f["source_device"]))
    if table == "gpt" and firmware == "bios" and not any(i["role"] == "bios_boot"
                                                         for i in items):
        items.insert(0, {"role": "bios_boot", "fs": None, "source": None,
                         "src": BIOS_BOOT_BYTES, "need": BIOS_BOOT_BYTES, "fixed": True,
                         "partuuid": None, "name": None, "bootable": False,
                         "type": GPT_BIOS_BOOT})
        notes.append("GPT with BIOS firmware: a 1 MiB BIOS boot partition is added for GRUB")
    if firmware == "uefi" and not any(i["role"] == "esp" for i in items):
        notes.append("UEFI source without an EFI system partition: a new 256 MiB ESP is "
                     "added at /boot/efi (new volume id)")
        items.insert(0, {"role": "esp", "fs": "esp-new", "source": None,
                         "src": NEW_ESP_BYTES, "need": NEW_ESP_BYTES, "fixed": True,
                         "partuuid": None, "name": "EFI System Partition", "bootable": False,
                         "type": None, "new_esp": True})
    return disk


def _plan_data_disk(src, entries, module, size, notes):
    main = next(f for f in entries if f["mountpoint"] == "/")
    w = src.where(main["source_device"]) if main["source_device"] else None
    if w and w[0] == "disk":
        return {"module": module, "size_bytes": size, "table": "none", "table_id": None,
                "source_disk": w[1]["path"], "partitions": [], "_items": [], "_vgs": [],
                "whole_disk_fs": main["id"], "_whole": main}
    table, table_id, part, srcdisk = "gpt", None, None, None
    if w and w[0] == "partition":
        srcdisk, part = w[1], w[2]
        table = srcdisk.get("table") if srcdisk.get("table") in ("gpt", "dos") else "gpt"
        table_id = srcdisk.get("table_id")
        if table == "dos" and size > MBR_LIMIT:
            table, table_id = "gpt", None
    elif w and w[0] == "lv":
        notes.append("%s is on LVM (%s): the target %s holds it on a plain partition" % (
            main["system_mountpoint"], main["on"]["lv"], module))
        main["on"] = None
    item = _item_for_fs(main, part, table)
    item["fixed"] = False
    if table != "gpt":
        item["partuuid"] = None
    return {"module": module, "size_bytes": size, "table": table, "table_id": table_id,
            "source_disk": srcdisk["path"] if srcdisk else None, "partitions": [],
            "_items": [item], "_vgs": [], "whole_disk_fs": None}


def _plan_vg(src, vg_name, content, notes):
    vg = src.vgs.get(vg_name) or {}
    extent = int(vg.get("extent_size_bytes") or 4 * MiB)
    lvs = []
    for lv in src.lvs:
        if lv["vg"] != vg_name:
            continue
        f = next((c for c in content if c["on"]["lv"] == "%s/%s" % (vg_name, lv["name"])), None)
        if f is None:
            notes.append("logical volume %s/%s holds nothing that is migrated: not recreated"
                         % (vg_name, lv["name"]))
            continue
        fixed = _is_fixed_fs(f)
        lvs.append({"name": lv["name"], "fs": f["id"], "src": int(lv["size_bytes"]),
                    "need": _align_up(f["need_bytes"], extent), "fixed": fixed,
                    "source_uuid": lv.get("uuid")})
    free = int(vg.get("free_bytes") or 0)
    fixed_total = sum(_align_up(lv["src"], extent) for lv in lvs if lv["fixed"])
    need = LVM_PE_START + fixed_total + sum(lv["need"] for lv in lvs if not lv["fixed"]) \
        + extent * (len(lvs) + 1)
    src_total = int(vg.get("size_bytes") or sum(lv["src"] for lv in lvs) + free)
    return {"name": vg_name, "create_name": vg_name, "source_uuid": vg.get("uuid"),
            "extent_size_bytes": extent, "lvs": lvs, "_free_src": free,
            "_need": _align_up(need), "_src": src_total}


def _size_vg(vg, pv_bytes):
    extent = vg["extent_size_bytes"]
    usable = _align_down(pv_bytes - LVM_PE_START, extent) - extent
    vg["size_bytes"] = usable
    fixed = [lv for lv in vg["lvs"] if lv["fixed"]]
    grow = [lv for lv in vg["lvs"] if not lv["fixed"]]
    for lv in fixed:
        lv["size"] = _align_up(lv["src"], extent)
    left = usable - sum(lv["size"] for lv in fixed)
    pool = [{"src": lv["src"], "need": lv["need"], "lv": lv} for lv in grow]
    if pool:
        pool.append({"src": vg.pop("_free_src", 0), "need": 0, "lv": None})
        _fill(pool, left)
        for i in pool:
            if i["lv"] is not None:
                i["lv"]["size"] = _align_down(i["size"], extent)
    vg.pop("_free_src", None)
    for lv in vg["lvs"]:
        lv["size_bytes"] = lv.pop("size")
        lv["source_size_bytes"] = lv.pop("src")
        lv["need_bytes"] = lv.pop("need")


def _size_disk(disk, size, src, vg_content, filesystems):
    """Give every planned partition its start and size, or refuse."""
    fs_by_id = {f["id"]: f for f in filesystems}
    module = disk["module"]
    if disk["table"] == "none":
        f = disk.pop("_whole")
        need = f["need_bytes"]
        if need > size:
            raise _too_small(module, size, need, [(f, need)])
        f["size_bytes"] = size
        f["on"] = {"disk": True}
        disk.pop("_items")
        return
    items = disk.pop("_items")
    start = MiB
    end = _align_down(size - (MiB if disk["table"] == "gpt" else 0))
    logical = disk["table"] == "dos" and len(items) > 4
    overhead = MiB * (len(items) - 3) if logical else 0
    for i in items:
        if i["fixed"]:
            i["size"] = max(_align_up(i["src"]), i["need"])
    fixed_total = sum(i["size"] for i in items if i["fixed"])
    grow = [i for i in items if not i["fixed"]]
    available = end - start - fixed_total - overhead
    need_total = sum(i["need"] for i in grow)
    if need_total > available:
        raise _too_small(module, size, size - available + need_total,
                         [(i, i["need"]) for i in grow], fixed_total, fs_by_id)
    _fill(grow, available)
    pos = start
    disk["_logical"] = logical
    for k, i in enumerate(items):
        if logical and k >= 3:
            pos += MiB  # room for the extended boot record
        i["start"] = pos
        pos += i["size"]
    for i in items:
        p = {
            "number": None, "start_bytes": i["start"], "size_bytes": i["size"],
            "role": i["role"], "type": _type_code(disk["table"], i), "partuuid": i["partuuid"],
            "name": i["name"] if disk["table"] == "gpt" else None,
            "bootable": i["bootable"],
            "source": i["source"], "fs": i.get("fs"), "vg": i.get("vg"),
            "logical": False,
        }
        disk["partitions"].append(p)
        if i.get("new_esp"):
            esp = {
                "id": "fs-esp", "module": "system", "type": "vfat", "uuid": None,
                "source_uuid": None, "label": None, "source_device": None,
                "mountpoint": "/boot/efi", "system_mountpoint": "/boot/efi",
                "size_bytes": i["size"], "source_size_bytes": None, "used_bytes": None,
                "need_bytes": NEW_ESP_BYTES, "ext_features": None, "xfs_features": None,
                "inode_size": None, "block_size": None, "on": None, "new": True,
            }
            filesystems.append(esp)
            fs_by_id[esp["id"]] = esp
            p["fs"] = esp["id"]
        if p["fs"]:
            fs_by_id[p["fs"]]["size_bytes"] = i["size"]
        if i["role"] == "lvm":
            vg = next(v for v in disk["_vgs"] if v["name"] == i["vg"])
            _size_vg(vg, i["size"])
            for lv in vg["lvs"]:
                fs_by_id[lv["fs"]]["size_bytes"] = lv["size_bytes"]
            vg.pop("_need", None)
            vg.pop("_src", None)


def _type_code(table, item):
    role = item["role"]
    given = item.get("type")
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


def _number_partitions(disk):
    logical = disk.pop("_logical", False)
    parts = disk["partitions"]
    for k, p in enumerate(parts):
        if logical and k >= 3:
            p["number"] = k + 2
            p["logical"] = True
        else:
            p["number"] = k + 1
    if logical:
        first = parts[3]
        disk["extended"] = {"number": 4, "start_bytes": first["start_bytes"] - MiB,
                            "size_bytes": _align_down(disk["size_bytes"])
                            - (first["start_bytes"] - MiB)}


def _too_small(module, size, needed, parts, fixed_total=0, fs_by_id=None):
    detail = []
    for i, need in parts:
        fid = i.get("fs") if "fs" in i else i.get("id")
        f = (fs_by_id or {}).get(fid) if fs_by_id else i
        if i.get("role") == "lvm":
            detail.append("LVM volume group %s needs %s" % (i["vg"], _gib(need)))
        elif f is not None and f.get("system_mountpoint"):
            detail.append("%s needs %s (used %s)" % (
                f["system_mountpoint"], _gib(need), _gib(f["used_bytes"] or 0)))
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
    """The plan as text for people (``--dry-run``, the status document)."""
    fs_by_id = {f["id"]: f for f in layout["filesystems"]}
    lines = []
    for disk in layout["disks"]:
        lines.append("%s: %s, %s%s" % (
            disk["module"], _gib(disk["size_bytes"]),
            {"gpt": "GPT", "dos": "MBR", "none": "no partition table"}[disk["table"]],
            (" (from %s)" % disk["source_disk"]) if disk.get("source_disk") else ""))
        if disk["table"] == "none":
            f = fs_by_id[disk["whole_disk_fs"]]
            lines.append("  whole disk: %s" % _describe_fs(f))
        if disk.get("extended"):
            e = disk["extended"]
            lines.append("  #4 extended %10s at %s" % (_gib(e["size_bytes"]),
                                                      _gib(e["start_bytes"])))
        for p in disk["partitions"]:
            what = p["role"]
            if p.get("fs"):
                what = _describe_fs(fs_by_id[p["fs"]])
            elif p["role"] == "bios_boot":
                what = "BIOS boot partition"
            elif p["role"] == "lvm":
                vg = next(v for v in layout["vgs"] if v["name"] == p["vg"])
                what = "LVM PV of %s" % (vg["name"] if vg["create_name"] == vg["name"] else
                                         "%s (made as %s)" % (vg["name"], vg["create_name"]))
            lines.append("  #%d %10s %s%s" % (
                p["number"], _gib(p["size_bytes"]), what,
                ("  <- %s" % p["source"]) if p.get("source") else ""))
            if p["role"] == "lvm":
                vg = next(v for v in layout["vgs"] if v["name"] == p["vg"])
                for lv in vg["lvs"]:
                    lines.append("      %s/%s %10s %s" % (vg["name"], lv["name"],
                                                       _gib(lv["size_bytes"]),
                                                       _describe_fs(fs_by_id[lv["fs"]])))
    if layout["mounts"]:
        lines.append("mounts:")
        for m in layout["mounts"]:
            f = fs_by_id[m["fs"]]
            lines.append("  %s:%s  (%s %s)" % (m["module"], m["mountpoint"], f["type"],
                                               f["uuid"] or "new"))
    for c in layout["id_changes"]:
        lines.append("id change: %s %s -> %s (%s collides with the receiver)" % (
            c["kind"], c["old"], c["new"], c["where"]))
    for note in layout["notes"]:
        lines.append("note: " + note)
    return "\n".join(lines) + "\n"


def _describe_fs(f):
    bits = [f["type"]]
    if f.get("system_mountpoint"):
        bits.append(f["system_mountpoint"])
    if f.get("uuid"):
        bits.append("UUID=" + f["uuid"])
    if f.get("label"):
        bits.append("LABEL=" + f["label"])
    if f.get("used_bytes") is not None:
        bits.append("used " + _gib(f["used_bytes"]))
    return " ".join(bits)

