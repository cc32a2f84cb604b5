"""Turn a planned layout into command input: pure functions, no effects.

* :func:`render_sfdisk`: the sfdisk script of one target disk;
* :func:`render_mkfs`: the mkfs/mkswap argv of one filesystem, replaying the source's
  feature set so the older kernel and GRUB of the source can read what a newer mkfs
  makes (``metadata_csum_seed``, ``orphan_file``, xfs ``bigtime``/``nrext64``/
  ``inobtcount`` are never turned on for a source that lacked them);
* :func:`render_lvm`: pvcreate/vgcreate/lvcreate argv of one volume group, restricted
  with ``--devices`` to the target PVs so the receiver's own LVM is never touched.
"""

from wire.errors import DiskError

SECTOR = 512

# ext features mke2fs can set at creation (spelled as dumpe2fs prints them). Runtime
# state (needs_recovery, orphan_present, ...) is not replayed.
EXT_SETTABLE = frozenset((
    "has_journal", "ext_attr", "resize_inode", "dir_index", "filetype", "extent", "extents",
    "flex_bg", "sparse_super", "sparse_super2", "large_file", "huge_file", "uninit_bg",
    "dir_nlink", "extra_isize", "64bit", "metadata_csum", "metadata_csum_seed",
    "mmp", "quota", "project", "bigalloc", "inline_data", "encrypt", "casefold", "ea_inode",
    "large_dir", "orphan_file", "stable_inodes", "verity", "meta_bg",
))
# ext features a newer mke2fs might turn on by default; listed explicitly as off when
# the source lacked them (belt and braces on top of "-O none").
EXT_NEVER_ADD = ("metadata_csum_seed", "orphan_file")
# xfs features that are -m options, -i options and -n options of mkfs.xfs.
XFS_META = ("crc", "finobt", "rmapbt", "reflink", "bigtime", "inobtcount")
XFS_INODE = ("sparse", "nrext64")
XFS_NAMING = ("ftype",)
# Off unless the source had them (the newer defaults an old kernel cannot mount).
XFS_NEVER_ADD = ("bigtime", "inobtcount", "nrext64")


def partition_device(disk_device, number):
    """``/dev/vdb`` + 1 -> ``/dev/vdb1``; ``/dev/loop0`` + 1 -> ``/dev/loop0p1``."""
    sep = "p" if disk_device[-1:].isdigit() else ""
    return "%s%s%d" % (disk_device, sep, number)


def _sectors(n, sector):
    if n % sector:
        raise DiskError("%d bytes is not a whole number of %d-byte sectors" % (n, sector),
                        code="disk.alignment")
    return n // sector


def render_sfdisk(disk, sector=SECTOR):
    """The sfdisk script for one planned :class:`~receiver.disks.layout.Disk`."""
    if disk.table == "none":
        return None
    lines = ["label: %s" % disk.table]
    if disk.table_id:
        lines.append("label-id: %s" % disk.table_id)
    lines.append("unit: sectors")
    if disk.table == "gpt":
        lines.append("first-lba: %d" % _sectors(1 << 20, sector))
    lines.append("")
    for p in disk.partitions:
        if p.logical and p.number == 5:
            e = disk.extended
            lines.append("start=%d, size=%d, type=5" % (
                _sectors(e.start_bytes, sector), _sectors(e.size_bytes, sector)))
        fields = ["start=%d" % _sectors(p.start_bytes, sector),
                  "size=%d" % _sectors(p.size_bytes, sector),
                  "type=%s" % p.type]
        if disk.table == "gpt":
            if p.partuuid:
                fields.append("uuid=%s" % p.partuuid)
            if p.name:
                fields.append('name="%s"' % p.name.replace('"', ""))
            if p.bootable:
                fields.append('attrs="LegacyBIOSBootable"')
        elif p.bootable:
            fields.append("bootable")
        lines.append(", ".join(fields))
    return "\n".join(lines) + "\n"


def _ext_features(fs):
    have = [f for f in (fs.ext_features or []) if f in EXT_SETTABLE]
    have = ["extent" if f == "extents" else f for f in have]
    if fs.type == "ext2":
        have = [f for f in have if f != "has_journal"]
    elif fs.type == "ext3" and "has_journal" not in have:
        have.insert(0, "has_journal")
    opts = ["none"] + have
    opts += ["^" + f for f in EXT_NEVER_ADD if f not in have]
    return ",".join(opts)


def _flags(*pairs):
    """``flag value`` for each ``(flag, value)`` whose value is set."""
    return [arg for flag, value in pairs if value for arg in (flag, str(value))]


def render_mkfs(fs, device):
    """argv that makes :class:`~receiver.disks.layout.Filesystem` ``fs`` on ``device``."""
    t = fs.type
    label = fs.label
    if t in ("ext2", "ext3", "ext4"):
        argv = ["mkfs.%s" % t, "-F", "-q", "-E", "nodiscard"]
        if fs.ext_features:
            argv += ["-O", _ext_features(fs)]
        else:
            argv += ["-O", ",".join("^" + f for f in EXT_NEVER_ADD)]
        return argv + _flags(("-b", fs.block_size), ("-I", fs.inode_size), ("-U", fs.uuid),
                             ("-L", label)) + [device]
    if t == "xfs":
        feats = fs.xfs_features or {}
        meta, inode, naming = [], [], []
        if fs.inode_size:
            inode.append("size=%d" % fs.inode_size)
        if fs.uuid:
            meta.append("uuid=%s" % fs.uuid)
        for key, out in ((XFS_META, meta), (XFS_INODE, inode), (XFS_NAMING, naming)):
            for k in key:
                v = feats.get(k)
                if v is None and k in XFS_NEVER_ADD:
                    v = 0
                if v is not None:
                    out.append("%s=%d" % (k, 1 if v else 0))
        return ["mkfs.xfs", "-f", "-q", "-K"] + _flags(
            ("-m", ",".join(meta)), ("-i", ",".join(inode)), ("-n", ",".join(naming)),
            ("-L", label)) + [device]
    if t == "vfat":
        return ["mkfs.vfat"] + _flags(("-i", (fs.uuid or "").replace("-", "")),
                                      ("-n", label)) + [device]
    if t == "swap":
        return ["mkswap", "-f"] + _flags(("-U", fs.uuid), ("-L", label)) + [device]
    raise DiskError("cannot make a %s filesystem" % t, code="disk.unsupported_filesystem")


def render_lvm(vg, pv_devices):
    """argv list that makes :class:`~receiver.disks.layout.VolumeGroup` ``vg`` on the PVs."""
    devices = ["--devices", ",".join(pv_devices)]
    name = vg.create_name
    cmds = [["pvcreate", "-ff", "-y"] + devices + list(pv_devices),
            ["vgcreate", "-y"] + devices + ["-s", "%dk" % (vg.extent_size_bytes // 1024),
                                             name] + list(pv_devices)]
    for lv in vg.lvs:
        cmds.append(["lvcreate", "-y", "-Wy", "-Zy"] + devices + [
            "-n", lv.name, "-L", "%dm" % (lv.size_bytes >> 20), name])
    return cmds


def render_commands(layout, devices, sector=SECTOR):
    """Every step for review and tests: [("sfdisk", device, script) | ("run", argv)].

    ``devices`` maps module names to target disk device paths."""
    steps = []
    for disk in layout.disks:
        script = render_sfdisk(disk, sector)
        if script:
            steps.append(("sfdisk", devices[disk.module], script))
    for vg in layout.vgs:
        steps += [("run", argv) for argv in render_lvm(vg, pv_devices(layout, vg, devices))]
    for fs in layout.filesystems:
        steps.append(("run", render_mkfs(fs, fs_device(layout, fs, devices))))
    return steps


def pv_devices(layout, vg, devices):
    return [partition_device(devices[disk.module], p.number) for disk in layout.disks
            for p in disk.partitions if p.vg == vg.name]


def fs_device(layout, fs, devices):
    """The device node that holds ``fs`` on the target disks."""
    if (fs.on or {}).get("disk"):
        return devices[fs.module]
    if fs.lv:
        vg_name, lv = fs.lv.split("/", 1)
        return "/dev/%s/%s" % (layout.vg(vg_name).create_name, lv)
    for disk in layout.disks:
        for p in disk.partitions:
            if p.fs == fs.id:
                return partition_device(devices[disk.module], p.number)
    raise DiskError("filesystem %s has no place in the layout" % fs.id, code="disk.plan")
