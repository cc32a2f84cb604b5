"""Pure parsers: text (or bytes) in, plain data out. No commands, no files.

Each one is tested on output captured from real systems (tests/data/inventory/ and
the fixture trees under tests/data/trees/).
"""

import json
import re

from wire import osfamily

# --------------------------------------------------------------------------- os


def unquote_shell(value):
    """Undo the quoting os-release and /etc/default/grub use (a small shell subset)."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        inner = value[1:-1]
        if value[0] == '"':
            inner = re.sub(r'\\([\\$"`])', r"\1", inner)
        return inner
    # unquoted: strip a trailing comment
    return value.split(" #", 1)[0].strip()


def parse_shell_vars(text):
    """``KEY=value`` lines (os-release, /etc/default/grub, ifcfg, selinux config)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if m:
            out[m.group(1)] = unquote_shell(m.group(2))
    return out


def parse_os_release(text):
    """/etc/os-release as a dict (``ID``, ``VERSION_ID``, ``ID_LIKE``...)."""
    return parse_shell_vars(text)


_REDHAT_RELEASE = [  # (first line, ID, NAME, ID_LIKE)
    (r"^CentOS Stream release", "centos", "CentOS Stream", "rhel fedora"),
    (r"^CentOS( Linux)? release", "centos", "CentOS Linux", "rhel fedora"),
    (r"^Red Hat Enterprise Linux", "rhel", "Red Hat Enterprise Linux", "rhel fedora"),
    (r"^Rocky Linux", "rocky", "Rocky Linux", "rhel fedora"),
    (r"^AlmaLinux", "almalinux", "AlmaLinux", "rhel fedora"),
    (r"^Oracle Linux", "ol", "Oracle Linux Server", "rhel fedora"),
    (r"^Fedora", "fedora", "Fedora Linux", ""),
]


def parse_redhat_release(text):
    """/etc/redhat-release (or centos-release) as os-release-like keys.

    ``CentOS release 6.10 (Final)`` -> ``{"ID": "centos", "VERSION_ID": "6", ...}``.
    VERSION_ID keeps the major version only, as CentOS 7's own os-release does.
    """
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    known = next((r for r in _REDHAT_RELEASE if re.match(r[0], line)), None)
    m = re.search(r"release\s+(\d+)(?:\.(\d+))?", line)
    out = {"PRETTY_NAME": line}
    if known:
        out.update(ID=known[1], NAME=known[2], ID_LIKE=known[3])
    if m:
        out["VERSION_ID"] = m.group(1)
    return out


def os_family(osid, id_like):
    """debian | rhel | suse | other, from ID and then ID_LIKE (the wire.osfamily table)."""
    fam = osfamily.family_of(osid, id_like)
    return fam.name if fam else osfamily.OTHER


def os_info(release, source):
    """The manifest's ``os`` object from os-release-like keys."""
    osid = release.get("ID") or None
    like = [x for x in (release.get("ID_LIKE") or "").split() if x]
    return {
        "id": osid,
        "version_id": release.get("VERSION_ID") or None,
        "name": release.get("NAME") or None,
        "pretty_name": release.get("PRETTY_NAME") or None,
        "family": os_family(osid, like),
        "id_like": like,
        "source": source,
    }


# ------------------------------------------------------------------- block devices

_PAIR = re.compile(r'([A-Z0-9:_.%-]+)="((?:[^"\\]|\\.)*)"')


def _unescape_lsblk(value):
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), value)


def parse_lsblk(text):
    """``lsblk -P -b -p -o ...`` (pairs; works on util-linux 2.23 and later).

    Returns one dict per device with lower-case keys (``maj:min`` spelled
    ``maj_min``), ``size`` and ``log_sec`` as integers, empty values as None.
    """
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        row = {}
        for key, value in _PAIR.findall(line):
            key = key.lower().replace(":", "_").replace("-", "_")
            value = _unescape_lsblk(value)
            row[key] = value if value != "" else None
        for key in ("size", "log_sec"):
            if row.get(key) is not None:
                try:
                    row[key] = int(row[key])
                except ValueError:
                    row[key] = None
        rows.append(row)
    return rows


def parse_blkid(text):
    """``blkid [-p] -o export [DEV...]``: a list of dicts of tags, one per device.

    A device starts after a blank line or at a repeated ``DEVNAME`` (some blkid
    versions print no blank line between devices). Values are unescaped: blkid puts a
    backslash before a space, ``"``, ``$``, a backslash and other shell characters.
    """
    out, cur = [], {}
    for line in (text or "").splitlines():
        if not line.strip():
            if cur:
                out.append(cur)
                cur = {}
            continue
        k, sep, v = line.lstrip().partition("=")  # a trailing "\\ " is an escaped space
        if not sep:
            continue
        if k == "DEVNAME" and "DEVNAME" in cur:
            out.append(cur)
            cur = {}
        cur[k] = re.sub(r"\\(.)", r"\1", v)
    if cur:
        out.append(cur)
    return out


GPT_TYPES = {
    "C12A7328-F81F-11D2-BA4B-00A0C93EC93B": "esp",
    "21686148-6449-6E6F-744E-656564454649": "bios_grub",
    "E6D6D379-F507-44C2-A23C-238F2A3DF928": "lvm",
    "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F": "swap",
    "A19D880F-05FC-4D3B-A006-743F0F84911E": "raid",
    "0FC63DAF-8483-4772-8E79-3D69D8477DE4": "linux",
    "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709": "linux",
    "BC13C2FF-59E6-4262-A352-B275FD6F7172": "xbootldr",
    "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7": "msftdata",
    "933AC7E1-2EB4-4F13-B844-0E14E2AEF915": "linux",
}
MBR_TYPES = {"83": "linux", "82": "swap", "8e": "lvm", "fd": "raid", "ef": "esp",
             "5": "extended", "f": "extended", "85": "extended", "7": "msftdata",
             "b": "msftdata", "c": "msftdata"}


def partition_flags(table, ptype, number, bootable):
    """Roles of a partition derived from its table type, type code and number."""
    flags = []
    if bootable:
        flags.append("boot")
    if table == "gpt":
        role = GPT_TYPES.get((ptype or "").upper())
    else:
        role = MBR_TYPES.get((ptype or "").lower())
        if number > 4 and role != "extended":
            flags.append("logical")
    if role:
        flags.append(role)
    return flags


def _mbr_type(value):
    v = (value or "").lower()
    if v.startswith("0x"):
        v = v[2:]
    return v.lstrip("0") or "0"


def parse_sfdisk_json(text, disk_path=None):
    """``sfdisk --json DEV`` -> ``{table, label, table_id, sector_size, partitions: [...]}``.

    ``table`` is ``dos``, ``gpt`` or ``none`` (any other label); ``label`` is sfdisk's own.

    Starts and sizes are converted to bytes; MBR types become lower-case hex without
    ``0x`` and leading zeros (``83``, ``5``); GPT type GUIDs are upper case.
    """
    doc = json.loads(text)["partitiontable"]
    label = doc.get("label", "none")
    table = {"dos": "dos", "gpt": "gpt"}.get(label, "none")
    sector = int(doc.get("sectorsize") or 512)
    if doc.get("unit", "sectors") != "sectors":
        raise ValueError("sfdisk unit %r is not 'sectors'" % doc.get("unit"))
    node = doc.get("device") or disk_path
    parts = []
    for p in doc.get("partitions", []):
        pnode = p["node"]
        m = re.search(r"(\d+)$", pnode)
        number = int(m.group(1)) if m else len(parts) + 1
        ptype = (p.get("type") or "").upper() if table == "gpt" else _mbr_type(p.get("type"))
        attrs = p.get("attrs") or None
        bootable = bool(p.get("bootable")) or (
            table == "gpt" and bool(attrs) and "LegacyBIOSBootable" in attrs)
        partuuid = p.get("uuid")
        if table == "dos" and not partuuid and doc.get("id"):
            partuuid = "%s-%02x" % (doc["id"].lower().replace("0x", ""), number)
        parts.append({
            "number": number,
            "path": pnode,
            "start_bytes": int(p["start"]) * sector,
            "size_bytes": int(p["size"]) * sector,
            "type": ptype,
            "partuuid": partuuid.lower() if (partuuid and table == "dos") else partuuid,
            "name": p.get("name") or None,
            "bootable": bootable,
            "flags": partition_flags(table, ptype, number, bool(p.get("bootable"))),
            "attrs": attrs,
        })
    return {"path": node, "table": table, "label": label, "table_id": doc.get("id"),
            "sector_size": sector, "partitions": parts}


def parse_blkid_table(tags):
    """``blkid -p -o export DISK`` tags -> (table, table_id)."""
    table = {"dos": "dos", "gpt": "gpt"}.get(tags.get("PTTYPE"), "none")
    table_id = tags.get("PTUUID")
    if table == "dos" and table_id:
        table_id = "0x" + table_id.lower()
    elif table == "gpt" and table_id:
        table_id = table_id.upper()
    return table, table_id


def partition_from_blkid(tags):
    """A partition described by ``blkid -p`` (PART_ENTRY_* tags; util-linux 2.23+): the
    fallback when ``sfdisk --json`` is missing (util-linux < 2.26, CentOS 7)."""
    table = {"dos": "dos", "gpt": "gpt"}.get(tags.get("PART_ENTRY_SCHEME"))
    if table is None:
        raise ValueError("%s: blkid shows no partition entry" % tags.get("DEVNAME"))
    number = int(tags["PART_ENTRY_NUMBER"])
    ptype = tags.get("PART_ENTRY_TYPE") or ""
    ptype = ptype.upper() if table == "gpt" else _mbr_type(ptype)
    flags_value = int(tags.get("PART_ENTRY_FLAGS") or "0", 16)
    if table == "dos":
        active = bool(flags_value & 0x80)
        bootable, attrs = active, None
    else:
        active = False
        bootable = bool(flags_value & 0x4)  # GPT attribute bit 2: LegacyBIOSBootable
        attrs = "LegacyBIOSBootable" if bootable else None
    uuid = tags.get("PART_ENTRY_UUID")
    return {
        "number": number,
        "path": tags["DEVNAME"],
        "start_bytes": int(tags["PART_ENTRY_OFFSET"]) * 512,
        "size_bytes": int(tags["PART_ENTRY_SIZE"]) * 512,
        "type": ptype,
        "partuuid": (uuid.upper() if table == "gpt" else uuid.lower()) if uuid else None,
        "name": tags.get("PART_ENTRY_NAME") or None,
        "bootable": bootable,
        "flags": partition_flags(table, ptype, number, active),
        "attrs": attrs,
    }


def parse_mbr_boot_code(sector):
    """What the boot code of a disk's first sector is: grub2, grub-legacy, other, empty.

    GRUB legacy's stage1 carries its compat version 3.2 at offset 0x3E; GRUB 2's
    boot.img does not. Both carry the strings "GRUB " and "Geom".
    """
    code = bytes(sector[:440])
    if len(code) < 440 or not code.strip(b"\x00"):
        return "empty"
    if b"GRUB" in code:
        return "grub-legacy" if code[0x3E:0x40] == b"\x03\x02" else "grub2"
    return "other"


# ------------------------------------------------------------------- filesystems


def parse_dumpe2fs(text):
    """``dumpe2fs -h DEV``: features, block and inode sizes, counts, uuid, label."""
    fields = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()

    def num(key):
        v = fields.get(key)
        return int(v) if v is not None and v.isdigit() else None

    label = fields.get("Filesystem volume name")
    out = {
        "features": fields.get("Filesystem features", "").split(),
        "uuid": fields.get("Filesystem UUID"),
        "label": None if label in (None, "", "<none>") else label,
        "block_size": num("Block size"),
        "inode_size": num("Inode size"),
        "block_count": num("Block count"),
        "free_blocks": num("Free blocks"),
        "reserved_blocks": num("Reserved block count"),
        "state": fields.get("Filesystem state"),
    }
    if out["block_size"] and out["block_count"] is not None:
        out["size_bytes"] = out["block_size"] * out["block_count"]
        if out["free_blocks"] is not None:
            out["used_bytes"] = out["block_size"] * (out["block_count"] - out["free_blocks"])
    return out


def parse_fsck_fat(text):
    """``fsck.fat -n -v DEV`` (read-only): size and used space of a FAT filesystem that
    is not mounted (an ESP on a kernel that cannot mount vfat)."""
    cluster = re.search(r"^\s*(\d+) bytes per cluster", text, re.M)
    data = re.search(r"^\s*\d+ data clusters \((\d+) bytes\)", text, re.M)
    used = re.search(r":\s*\d+ files, (\d+)/(\d+) clusters", text)
    if not (cluster and used):
        raise ValueError("fsck.fat output without cluster counts")
    sector = re.search(r"^\s*(\d+) bytes per logical sector", text, re.M)
    sectors = re.search(r"^\s*(\d+) sectors total", text, re.M)
    size = int(cluster.group(1))
    if sector and sectors:  # the whole filesystem, as dumpe2fs/xfs_info sizes are
        total = int(sector.group(1)) * int(sectors.group(1))
    else:
        total = int(data.group(1)) if data else int(used.group(2)) * size
    return {"cluster_size": size, "used_bytes": int(used.group(1)) * size,
            "size_bytes": total}


XFS_FEATURES = ("crc", "ftype", "finobt", "sparse", "rmapbt", "reflink", "bigtime",
                "inobtcount", "nrext64")


def parse_xfs_info(text):
    """``xfs_info MOUNTPOINT|DEV``: the feature flags (0/1, None when the running
    xfsprogs does not report one) and the data geometry."""
    sections = {}
    section = None
    for line in text.splitlines():
        m = re.match(r"^([a-z-]+)\s*=", line)
        if m:
            section = m.group(1)
        elif not re.match(r"^\s+=", line):
            continue
        body = line.split("=", 1)[1] if section else line
        for key, value in re.findall(r"([a-z0-9-]+)=([^\s,]+)", body):
            sections.setdefault(section, {}).setdefault(key, value)

    def num(sec, key):
        v = sections.get(sec, {}).get(key)
        try:
            return int(v)
        except (TypeError, ValueError):
            return None

    # a flag is read from the first section that has it
    features = {name: next((num(sec, name) for sec in ("meta-data", "naming")
                            if name in sections.get(sec, {})), None) for name in XFS_FEATURES}
    block_size = num("data", "bsize")
    blocks = num("data", "blocks")
    return {
        "features": features,
        "block_size": block_size,
        "inode_size": num("meta-data", "isize"),
        "size_bytes": block_size * blocks if block_size and blocks else None,
    }


BTRFS_TOP_LEVEL = 5  # the id of a btrfs filesystem's top-level subvolume (FS_TREE)
_BTRFS_LIST_RE = re.compile(
    r"^ID (?P<id>\d+) gen \d+ parent (?P<parent>\d+) top level (?P<top_level>\d+)"
    r" parent_uuid (?P<parent_uuid>\S+)\s+uuid (?P<uuid>\S+) path (?P<path>.+)$")


def parse_btrfs_subvolume_list(text):
    """``btrfs subvolume list -a -p -u -q MOUNTPOINT`` (every subvolume of the filesystem;
    ``<FS_TREE>/`` dropped, the paths are from the top level): ``[{"id", "parent",
    "top_level", "uuid", "path", "snapshot_of"}]``; ``snapshot_of`` is the uuid of the
    subvolume it is a snapshot of (``parent_uuid``), None for one created empty."""
    out = []
    for line in text.splitlines():
        m = _BTRFS_LIST_RE.match(line.strip())
        if not m:
            continue
        path = m.group("path")
        if path.startswith("<FS_TREE>/"):  # -a: outside the mounted subvolume
            path = path[len("<FS_TREE>/"):]
        out.append({"id": int(m.group("id")), "parent": int(m.group("parent")),
                    "top_level": int(m.group("top_level")), "uuid": m.group("uuid"),
                    "path": path, "snapshot_of": None if m.group("parent_uuid") == "-"
                    else m.group("parent_uuid")})
    return out


def parse_btrfs_get_default(text):
    """``btrfs subvolume get-default MOUNTPOINT`` -> the default subvolume's id (5, the
    top level, when none was set: ``ID 5 (FS_TREE)``)."""
    m = re.match(r"^ID (\d+)", text.strip())
    return int(m.group(1)) if m else None


def parse_lvm_report(pvs_json, vgs_json, lvs_json):
    """``pvs``/``vgs``/``lvs --reportformat json --units b --nosuffix -o ...`` -> the
    manifest's ``lvm`` object."""

    def rows(text, kind):
        return [row for rep in json.loads(text).get("report", []) for row in rep.get(kind, [])]

    def num(v):
        v = (v or "").strip()
        return int(float(v)) if v else 0

    pvs = [{"name": r["pv_name"], "uuid": r["pv_uuid"], "vg": r.get("vg_name") or None,
            "size_bytes": num(r.get("pv_size")), "free_bytes": num(r.get("pv_free"))}
           for r in rows(pvs_json, "pv")]
    vgs = [{"name": r["vg_name"], "uuid": r["vg_uuid"], "size_bytes": num(r.get("vg_size")),
            "free_bytes": num(r.get("vg_free")),
            "extent_size_bytes": num(r.get("vg_extent_size")),
            "pv_count": num(r.get("pv_count")), "lv_count": num(r.get("lv_count"))}
           for r in rows(vgs_json, "vg")]
    lvs = []
    for r in rows(lvs_json, "lv"):
        attr = r.get("lv_attr") or ""
        lvs.append({
            "name": r["lv_name"], "vg": r["vg_name"], "uuid": r["lv_uuid"],
            "size_bytes": num(r.get("lv_size")),
            "path": r.get("lv_path") or "/dev/%s/%s" % (r["vg_name"], r["lv_name"]),
            "active": (r.get("lv_active") == "active") or (len(attr) > 4 and attr[4] == "a"),
            "segtype": r.get("segtype") or None,
            "attr": attr or None,
        })
    return {"pvs": pvs, "vgs": vgs, "lvs": lvs}


# ------------------------------------------------------------------ mounts, fstab


def _unescape_octal(value):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), value)


def parse_fstab(text, malformed=None):
    """/etc/fstab entries (spec, file, vfstype, mntops, freq, passno, line).

    A line with fewer than three fields is no entry: it is skipped, and its
    ``(line number, text)`` appended to ``malformed`` when a list is given.
    """
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        f = line.split()
        if len(f) < 3:
            if malformed is not None:
                malformed.append((n, line))
            continue
        out.append({
            "spec": _unescape_octal(f[0]),
            "file": _unescape_octal(f[1]),
            "vfstype": f[2],
            "mntops": f[3] if len(f) > 3 else "defaults",
            "freq": int(f[4]) if len(f) > 4 and f[4].isdigit() else 0,
            "passno": int(f[5]) if len(f) > 5 and f[5].isdigit() else 0,
            "line": n,
        })
    return out


def parse_mountinfo(text):
    """/proc/self/mountinfo (proc(5)): one dict per mount."""
    out = []
    for line in text.splitlines():
        f = line.split()
        if len(f) < 10 or "-" not in f[6:]:
            continue
        sep = f.index("-", 6)
        out.append({
            "mount_id": int(f[0]),
            "parent_id": int(f[1]),
            "major_minor": f[2],
            "fs_root": _unescape_octal(f[3]),
            "mountpoint": _unescape_octal(f[4]),
            "options": f[5],
            "fstype": f[sep + 1],
            "source": _unescape_octal(f[sep + 2]) if len(f) > sep + 2 else "none",
            "super_options": f[sep + 3] if len(f) > sep + 3 else "",
        })
    return out


def parse_proc_swaps(text):
    """/proc/swaps: [{path, kind (partition|file), size_bytes}]."""
    out = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) >= 3:
            out.append({"path": _unescape_octal(f[0]), "kind": f[1],
                        "size_bytes": int(f[2]) * 1024 if f[2].isdigit() else None})
    return out


# ------------------------------------------------------------------ kernel, boot


def module_name(path):
    """The module name of a module file or modules.builtin line (``-`` as ``_``):
    ``kernel/drivers/block/virtio-blk.ko.xz`` -> ``virtio_blk``."""
    base = path.strip().rsplit("/", 1)[-1]
    base = re.sub(r"\.ko(\.(xz|gz|zst))?$", "", base)
    return base.replace("-", "_")


def is_module_file(name):
    """Whether a file name is a kernel module (``.ko``, maybe compressed)."""
    return re.search(r".\.ko(\.(xz|gz|zst))?$", name) is not None


def parse_modules_builtin(text):
    """lib/modules/<k>/modules.builtin -> set of module names (``-`` as ``_``)."""
    return {module_name(line) for line in text.splitlines() if line.strip()}


def parse_modules_dep(text):
    """lib/modules/<k>/modules.dep -> set of module names that have a file."""
    return parse_modules_builtin("\n".join(line.split(":", 1)[0] for line in text.splitlines()))


def parse_kernel_config(text):
    """/boot/config-<k> -> {CONFIG_X: 'y'|'m'|value}."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$", line.strip())
        if m:
            out[m.group(1)] = m.group(2).strip('"')
    return out


DRIVER_CONFIG = {
    "virtio_blk": "CONFIG_VIRTIO_BLK",
    "virtio_net": "CONFIG_VIRTIO_NET",
    "virtio_pci": "CONFIG_VIRTIO_PCI",
    "virtio_scsi": "CONFIG_SCSI_VIRTIO",
    "nvme": "CONFIG_BLK_DEV_NVME",
    "virtio": "CONFIG_VIRTIO",
    "virtio_ring": "CONFIG_VIRTIO",
}


def driver_status(name, builtin, modules, config):
    """module | builtin | missing for one driver of one kernel.

    ``builtin``/``modules`` are sets of names (from modules.builtin and from module
    files or modules.dep), ``config`` the kernel's config dict (may be empty).
    """
    if name in builtin:
        return "builtin"
    if name in modules:
        return "module"
    return "builtin" if config.get(DRIVER_CONFIG.get(name, "")) == "y" else "missing"


def parse_grub_version(text):
    """GRUB version from ``grub-install --version`` / ``grub2-install --version`` or
    from a ``modinfo.sh`` of /usr/lib/grub/<platform>/.

    Returns ``{"flavour", "version", "package_version"}`` (None when unknown).
    """
    out = {"flavour": None, "version": None, "package_version": None}
    m = re.search(r'^grub_version="?([^"\n]+)"?', text, re.M)
    if m:
        out["version"] = m.group(1)
        pm = re.search(r'^grub_package_version="?([^"\n]+)"?', text, re.M)
        out["package_version"] = pm.group(1) if pm else m.group(1)
    else:
        m = re.search(r"\((?:GNU )?GRUB\)?\s*([0-9][^\s)]*)", text)
        if not m:
            return out
        out["package_version"] = m.group(1)
        vm = re.match(r"(\d+\.\d+(?:\.\d+)?)", m.group(1))
        out["version"] = vm.group(1) if vm else m.group(1)
    major = re.match(r"(\d+)\.(\d+)", out["version"] or "")
    if major:
        out["flavour"] = "legacy" if int(major.group(1)) == 0 else "grub2"
    return out


def parse_debconf_value(text, name):
    """Value of a question in /var/cache/debconf/config.dat (e.g. grub-pc/install_devices)."""
    for block in re.split(r"\n\s*\n", text):
        fields = {}
        for line in block.splitlines():
            if ":" in line and not line.startswith(" "):
                k, _, v = line.partition(":")
                fields[k.strip()] = v.strip()
        if fields.get("Name") == name:
            return fields.get("Value") or None
    return None


def parse_selinux_config(text):
    """/etc/selinux/config -> {"mode", "type"}."""
    v = parse_shell_vars(text)
    mode = (v.get("SELINUX") or "").lower()
    if mode not in ("enforcing", "permissive", "disabled"):
        mode = "disabled"  # an empty or unknown value loads no policy
    return {"mode": mode, "type": v.get("SELINUXTYPE") or None}


ELF_MACHINES = {3: "i686", 62: "x86_64", 183: "aarch64", 40: "arm", 243: "riscv64",
                21: "ppc64", 22: "s390x", 258: "loongarch64"}


def parse_elf_machine(header):
    """The architecture (uname -m spelling) from the first 20 bytes of an ELF file."""
    header = bytes(header)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    little = header[5] == 1
    machine = int.from_bytes(header[18:20], "little" if little else "big")
    if machine == 21 and little:
        return "ppc64le"
    return ELF_MACHINES.get(machine)


def arch_from_kernel_name(version):
    """x86_64 / i686 / aarch64 from a kernel release name, or None."""
    v = version.lower()
    for pattern, arch in ((r"(amd64|x86_64)", "x86_64"), (r"(arm64|aarch64)", "aarch64"),
                          (r"(i[3-6]86|-686)", "i686")):
        if re.search(pattern, v):
            return arch
    return None


# ----------------------------------------------------------------- network, cloud

MAC = r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}"
_MAC_RULES = {
    "udev-persistent-net": r"ATTRS?\{address\}\s*==\s*\"%s\"" % MAC,
    "ifcfg-hwaddr": r"^\s*(HWADDR|MACADDR|LLADDR)\s*=\s*['\"]?%s" % MAC,
    "netplan-macaddress": r"^\s*macaddress\s*:\s*['\"]?%s" % MAC,
    "networkmanager-mac": r"^\s*(mac-address|cloned-mac-address)\s*=\s*%s" % MAC,
    "systemd-link": r"^\s*(MACAddress|PermanentMACAddress)\s*=\s*.*%s" % MAC,
    "systemd-network": r"^\s*(MACAddress|PermanentMACAddress)\s*=\s*.*%s" % MAC,
    "interfaces-hwaddress": r"^\s*hwaddress\s+(ether\s+)?%s" % MAC,
}


def find_mac_bound(path, text, kind):
    """Lines of a network config file that tie it to a MAC address."""
    pattern = re.compile(_MAC_RULES[kind])
    return [{"file": path, "kind": kind, "detail": line.strip(), "line": n}
            for n, line in enumerate(text.splitlines(), 1)
            if not line.lstrip().startswith("#") and pattern.search(line)]


def parse_cloud_datasource(text):
    """``datasource_list`` of a cloud-init YAML file (flow or block list), or None.

    cloud-init's files are YAML; the source side has no YAML library, and this key
    is written in one of two shapes in practice, both handled here.
    """
    m = re.search(r"^datasource_list\s*:\s*\[([^\]]*)\]", text, re.M)
    if m:
        items = [x.strip().strip("'\"") for x in m.group(1).split(",")]
        return [x for x in items if x]
    m = re.search(r"^datasource_list\s*:\s*\n((?:\s+-\s*.*\n?)+)", text, re.M)
    if m:
        return [x.strip().lstrip("-").strip().strip("'\"")
                for x in m.group(1).splitlines() if x.strip()]
    return None


def parse_rsync_version(text):
    """``rsync --version`` -> {"version", "protocol"}."""
    m = re.search(r"rsync\s+version\s+v?(\S+)\s+protocol version\s+(\d+)", text)
    if not m:
        return {"version": None, "protocol": None}
    return {"version": m.group(1), "protocol": int(m.group(2))}
