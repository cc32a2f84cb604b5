"""Build the manifest (wire/manifest.schema.json) of the system mounted at ``root``.

Each section is one step; a step that fails adds ``{"probe", "message"}`` to
``warnings`` and leaves its key at its empty value: the inventory never aborts.

With ``root="/"`` every real disk of the machine is described. With another root
(an offline disk mounted at DIR, a test host) the disks are the ones behind the
mounts under DIR, their partitions (mounted or not, e.g. an ESP) and the LVM
volume groups whose PVs live on them.
"""

import datetime
import logging
import os
import re
import socket

from source_script import __version__
from source_script.inventory import probes
from wire import osfamily, parsers
from wire.errors import UsageError
from wire.manifest import SCHEMA_VERSION
from wire.osfamily import PSEUDO_FSTYPES
from wire.paths import lv_paths, target_path

log = logging.getLogger(__name__)

SKIP_DISK_PREFIXES = ("zram", "ram", "sr", "fd", "nbd")


def empty_manifest(root):
    return {
        "schema_version": SCHEMA_VERSION,
        "tool_version": __version__,
        "generated_at": datetime.datetime.now(datetime.timezone.utc).replace(
            microsecond=0, tzinfo=None).isoformat() + "Z",
        "hostname": None,
        "root": root,
        "os": parsers.os_info({}, None),
        "arch": None,
        "firmware": "bios",
        "kernels": [],
        "initramfs_tool": None,
        "disks": [],
        "filesystems": [],
        "mounts": [],
        "fstab": [],
        "swap": [],
        "lvm": {"pvs": [], "vgs": [], "lvs": []},
        "grub": {"flavour": "none", "version": None, "package_version": None,
                 "config_path": None, "install_device": None, "platforms": [],
                 "mkconfig": None, "bls": False, "efi_dir": None,
                 "cmdline_linux": None, "cmdline_linux_default": None},
        "selinux": {"mode": "absent", "type": None, "current": None},
        "network": {"mac_bound": [], "config_tools": []},
        "cloud_init": {"installed": False, "datasource": None, "disabled": False, "files": []},
        "rsync": {"path": None, "version": None, "protocol": None},
        "warnings": [],
    }


def collect(root="/"):
    """The manifest of the system at ``root`` (a dict that validates against the schema)."""
    root = os.path.abspath(root or "/")
    if not os.path.isdir(root):
        raise UsageError("--root %s: no such folder" % root,
                         hint="give the folder where the system to migrate is mounted")
    c = _Collector(root)
    return c.run()


class _Collector(object):
    def __init__(self, root):
        self.root = root
        self.m = empty_manifest(root)
        self.is_host = root == "/"
        self.mountinfo = []        # entries under root, mountpoints relative to root
        self.lsblk = []
        self.devices = {}          # path -> lsblk row, for the included disks' tree
        self.blkid = {}            # device path -> blkid tags

    def warn(self, probe, message):
        log.debug("inventory %s: %s", probe, message)
        self.m["warnings"].append({"probe": probe, "message": message})

    def step(self, key, fn):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a failed probe degrades to a warning
            log.debug("inventory step %s failed", key, exc_info=True)
            self.warn(key, "%s: %s" % (type(e).__name__, e))

    def run(self):
        for key, fn in (
            ("os", self.probe_os), ("hostname", self.probe_hostname),
            ("mounts", self.probe_mounts), ("fstab", self.probe_fstab),
            ("disks", self.probe_disks), ("lvm", self.probe_lvm),
            ("filesystems", self.probe_filesystems), ("swap", self.probe_swap),
            ("kernels", self.probe_kernels), ("arch", self.probe_arch),
            ("initramfs_tool", self.probe_initramfs_tool), ("grub", self.probe_grub),
            ("firmware", self.probe_firmware), ("selinux", self.probe_selinux),
            ("network", self.probe_network), ("cloud_init", self.probe_cloud_init),
            ("rsync", self.probe_rsync),
        ):
            self.step(key, fn)
        return self.m

    # ------------------------------------------------------------------ helpers
    def read(self, relpath):
        return probes.read_target(self.root, relpath)

    def rel_mountpoint(self, mountpoint):
        if self.is_host:
            return mountpoint
        if mountpoint == self.root:
            return "/"
        return "/" + mountpoint[len(self.root):].lstrip("/")

    # ------------------------------------------------------------------ os
    def probe_os(self):
        text = self.read("/etc/os-release") or self.read("/usr/lib/os-release")
        if text:
            self.m["os"] = parsers.os_info(parsers.parse_os_release(text), "os-release")
            return
        for name in ("/etc/redhat-release", "/etc/centos-release", "/etc/system-release"):
            text = self.read(name)
            if text:
                self.m["os"] = parsers.os_info(parsers.parse_redhat_release(text),
                                               "redhat-release")
                return
        self.warn("os", "no /etc/os-release or /etc/redhat-release under %s" % self.root)

    def probe_hostname(self):
        if self.is_host:
            self.m["hostname"] = socket.gethostname()
            return
        text = self.read("/etc/hostname")
        if text and text.strip():
            self.m["hostname"] = text.strip().split()[0]
            return
        net = self.read("/etc/sysconfig/network")
        if net:
            self.m["hostname"] = parsers.parse_shell_vars(net).get("HOSTNAME") or None

    # ------------------------------------------------------------------ mounts
    def probe_mounts(self):
        under = [dict(e, host_mountpoint=e["mountpoint"],
                      mountpoint=self.rel_mountpoint(e["mountpoint"]))
                 for e in parsers.parse_mountinfo(probes.read_mountinfo())
                 if self.is_host or e["mountpoint"] == self.root
                 or e["mountpoint"].startswith(self.root + "/")]
        self.mountinfo = under
        self.m["mounts"] = [{
            "mountpoint": e["mountpoint"], "source": e["source"], "fstype": e["fstype"],
            "options": e["options"], "pseudo": e["fstype"] in PSEUDO_FSTYPES,
            "major_minor": e["major_minor"], "fs_root": e["fs_root"],
        } for e in under]

    def probe_fstab(self):
        text = self.read("/etc/fstab")
        if text is None:
            self.warn("fstab", "no /etc/fstab under %s" % self.root)
            return
        self.m["fstab"] = parsers.parse_fstab(text)

    # ------------------------------------------------------------------ disks
    def probe_disks(self):
        real_mounts = [e for e in self.mountinfo if e["fstype"] not in PSEUDO_FSTYPES]
        if not self.is_host and not real_mounts:
            self.warn("disks", "nothing is mounted under %s: no disk was read (mount the "
                      "system's filesystems there to describe its disks)" % self.root)
            return
        self.lsblk = parsers.parse_lsblk(probes.run_lsblk())
        by_name = {r["name"]: r for r in self.lsblk}
        children = {}
        for r in self.lsblk:
            if r.get("pkname"):
                children.setdefault(r["pkname"], []).append(r["name"])

        def top(name, seen=()):
            r = by_name.get(name)
            if r is None or name in seen:
                return set()
            if not r.get("pkname"):
                return {name}
            out = set()
            for p in self.lsblk:
                if p["name"] == name and p.get("pkname"):
                    out |= top(p["pkname"], seen + (name,))
            return out

        wanted = set()
        mounted_numbers = {e["major_minor"] for e in self.mountinfo
                           if e["fstype"] not in PSEUDO_FSTYPES}
        # btrfs reports an anonymous device number (0:N) in mountinfo: its source names
        # the device
        mounted_sources = {e["source"] for e in self.mountinfo if e["fstype"] == "btrfs"}
        for r in self.lsblk:
            if r.get("maj_min") in mounted_numbers or r["name"] in mounted_sources:
                wanted |= top(r["name"])
        if self.is_host:
            for r in self.lsblk:
                base = os.path.basename(r["name"])
                if (r.get("type") == "disk" and not r.get("pkname") and (r.get("size") or 0) > 0
                        and not base.startswith(SKIP_DISK_PREFIXES)):
                    wanted.add(r["name"])
        disks = []
        for name in sorted(wanted):
            try:
                disks.append(self.describe_disk(by_name[name]))
            except Exception as e:  # noqa: BLE001 - one unreadable disk, not all
                self.warn("disks", "%s: %s: %s" % (name, type(e).__name__, e))
        self.m["disks"] = disks
        # every device in the included disks' trees (partitions, LVs)
        stack = list(wanted)
        while stack:
            n = stack.pop()
            if n in self.devices:
                continue
            self.devices[n] = by_name[n]
            stack.extend(children.get(n, []))

    def describe_disk(self, row):
        path = row["name"]
        disk = {"name": os.path.basename(row.get("kname") or path), "path": path,
                "size_bytes": row.get("size") or 0, "table": "none", "table_id": None,
                "sector_size": row.get("log_sec"),
                "model": (row.get("model") or "").strip() or None,
                "boot_code": None, "partitions": []}
        parts = [r for r in self.lsblk if r.get("pkname") == path and r.get("type") == "part"]
        if parts:
            try:
                table = parsers.parse_sfdisk_json(probes.run_sfdisk_json(path), path)
                disk.update(table=table["table"], table_id=table["table_id"],
                            partitions=table["partitions"])
            except Exception as e:  # noqa: BLE001
                self.warn("disks", "sfdisk --json %s: %s; the partition table is read "
                          "with blkid -p instead" % (path, e))
                self.partitions_from_blkid(disk, parts)
        try:
            disk["boot_code"] = parsers.parse_mbr_boot_code(probes.read_bytes(path, 512))
        except OSError as e:
            self.warn("disks", "reading the boot sector of %s: %s" % (path, e))
        return disk

    def blkid_of(self, dev):
        """blkid -p tags of a device (cached: read once per inventory)."""
        if dev not in self.blkid:
            tags = parsers.parse_blkid(probes.run_blkid(dev))
            self.blkid[dev] = tags[0] if tags else {}
        return self.blkid[dev]

    def partitions_from_blkid(self, disk, parts):
        disk["table"], disk["table_id"] = parsers.parse_blkid_table(self.blkid_of(disk["path"]))
        out = [parsers.partition_from_blkid(dict(self.blkid_of(r["name"]), DEVNAME=r["name"]))
               for r in parts]
        disk["partitions"] = sorted(out, key=lambda p: p["number"])

    # ------------------------------------------------------------------ lvm
    def probe_lvm(self):
        if not self.is_host and not self.devices:
            return
        rep = probes.run_lvm_report()
        lvm = parsers.parse_lvm_report(rep["pvs"], rep["vgs"], rep["lvs"])
        if not self.is_host:
            mine = {p["name"] for p in lvm["pvs"] if p["name"] in self.devices}
            vgs = {p["vg"] for p in lvm["pvs"] if p["name"] in mine and p["vg"]}
            lvm = {"pvs": [p for p in lvm["pvs"] if p["name"] in mine],
                   "vgs": [v for v in lvm["vgs"] if v["name"] in vgs],
                   "lvs": [v for v in lvm["lvs"] if v["vg"] in vgs]}
        self.m["lvm"] = lvm

    # ------------------------------------------------------------------ filesystems
    def block_devices(self):
        """Devices that may hold a filesystem: partitions, whole disks without a
        table, active LVs."""
        out = []
        for disk in self.m["disks"]:
            if disk["partitions"]:
                out.extend(p["path"] for p in disk["partitions"]
                           if "extended" not in p["flags"])
            else:
                out.append(disk["path"])
        for lv in self.m["lvm"]["lvs"]:
            if lv["active"] and probes.host_path_exists(lv["path"]):
                out.append(lv["path"])
        return out

    def mount_of(self, device):
        number = probes.device_number(device)
        hits = [e for e in self.mountinfo if number and e["major_minor"] == number]
        if not hits:
            hits = [e for e in self.mountinfo if e["source"] == device]
        hits.sort(key=lambda e: (e["fs_root"] != "/", len(e["mountpoint"])))
        return hits[0] if hits else None

    def probe_filesystems(self):
        fss = []
        for dev in self.block_devices():
            try:
                tags = self.blkid_of(dev)
            except Exception as e:  # noqa: BLE001
                tags = self.fallback_tags(dev)
                self.warn("filesystems", "blkid %s: %s%s" % (
                    dev, e, "; type taken from lsblk/the mount table" if tags else ""))
                if not tags:
                    continue
            fstype = tags.get("TYPE")
            if not fstype or fstype in ("swap", "LVM2_member", "linux_raid_member"):
                continue
            fss.append(self.describe_fs(dev, fstype, tags))
        self.m["filesystems"] = fss

    def describe_btrfs(self, out, dev):
        """The subvolumes (each with where the system mounts it, and the uuid of the
        subvolume it is a snapshot of), the default subvolume and the quota state."""
        mounted = {}
        number = probes.device_number(dev)
        for e in self.mountinfo:
            if e["fstype"] == "btrfs" and (e["source"] == dev or
                                           (number and e["major_minor"] == number)):
                mounted.setdefault(e["fs_root"].strip("/"), e["mountpoint"])
        subs = parsers.parse_btrfs_subvolume_list(out["list"])
        for s in subs:
            s["mountpoint"] = mounted.get(s["path"])
        return {"subvolumes": subs, "default_id": parsers.parse_btrfs_get_default(
            out["default"]), "quota": bool(out["quota"])}

    def fallback_tags(self, dev):
        """What lsblk and the mount table know of a device blkid could not read."""
        row = self.devices.get(dev) or {}
        tags = {"TYPE": row.get("fstype"), "UUID": row.get("uuid"), "LABEL": row.get("label")}
        if not tags["TYPE"]:
            mnt = self.mount_of(dev)
            tags["TYPE"] = mnt["fstype"] if mnt else None
        return {k: v for k, v in tags.items() if v}

    def part_size(self, dev):
        for disk in self.m["disks"]:
            if disk["path"] == dev:
                return disk["size_bytes"]
            for p in disk["partitions"]:
                if p["path"] == dev:
                    return p["size_bytes"]
        for lv in self.m["lvm"]["lvs"]:
            if lv["path"] == dev:
                return lv["size_bytes"]
        return None

    def describe_fs(self, dev, fstype, tags):
        mnt = self.mount_of(dev)
        fs = {"device": dev, "type": fstype, "uuid": tags.get("UUID") or None,
              "label": tags.get("LABEL") or None, "size_bytes": None, "used_bytes": None,
              "mountpoint": mnt["mountpoint"] if mnt else None, "block_size": None,
              "inode_size": None, "ext_features": None, "xfs_features": None}
        if fstype in ("ext2", "ext3", "ext4"):
            try:
                info = parsers.parse_dumpe2fs(probes.run_dumpe2fs(dev))
                fs.update(ext_features=info["features"], block_size=info["block_size"],
                          inode_size=info["inode_size"], size_bytes=info.get("size_bytes"),
                          used_bytes=info.get("used_bytes"))
            except Exception as e:  # noqa: BLE001
                self.warn("filesystems", "dumpe2fs -h %s: %s" % (dev, e))
        elif fstype == "xfs":
            try:
                info = parsers.parse_xfs_info(probes.run_xfs_info(
                    mnt["host_mountpoint"] if mnt else dev))
                fs.update(xfs_features=info["features"], block_size=info["block_size"],
                          inode_size=info["inode_size"], size_bytes=info["size_bytes"])
            except Exception as e:  # noqa: BLE001
                self.warn("filesystems", "xfs_info %s: %s" % (dev, e))
        elif fstype == "btrfs" and mnt:
            try:
                fs["btrfs"] = self.describe_btrfs(probes.run_btrfs(mnt["host_mountpoint"]), dev)
            except Exception as e:  # noqa: BLE001
                self.warn("filesystems", "btrfs subvolume list %s: %s" % (dev, e))
        elif fstype == "vfat":
            fs["vfat_id"] = (tags.get("UUID") or "").replace("-", "") or None
            if not mnt:
                try:
                    info = parsers.parse_fsck_fat(probes.run_fsck_fat(dev))
                    fs.update(size_bytes=info["size_bytes"], used_bytes=info["used_bytes"],
                              block_size=info["cluster_size"])
                except Exception as e:  # noqa: BLE001
                    self.warn("filesystems", "fsck.fat -n %s: %s" % (dev, e))
        if mnt:
            size, used = probes.statvfs_usage(mnt["host_mountpoint"])
            fs["used_bytes"] = used
            if fs["size_bytes"] is None:
                fs["size_bytes"] = size
        if fs["size_bytes"] is None:
            fs["size_bytes"] = int(tags["FSSIZE"]) if tags.get("FSSIZE", "").isdigit() \
                else self.part_size(dev)
        if fs["used_bytes"] is None and not mnt:
            self.warn("filesystems", "%s (%s) is not mounted: its used space is unknown; "
                      "mount it under the root to measure it" % (dev, fstype))
        return fs

    # ------------------------------------------------------------------ swap
    def resolve_spec(self, spec):
        """The block device an fstab spec names, among the devices we read."""
        if spec.startswith(("UUID=", "LABEL=", "PARTUUID=", "PARTLABEL=")):
            key, _, value = spec.partition("=")
            value = value.strip("\"'")
            for dev, tags in self.blkid.items():
                if tags.get(key) == value or (
                        key == "UUID" and (tags.get(key) or "").lower() == value.lower()):
                    return dev
            if key.startswith("PART"):
                for disk in self.m["disks"]:
                    for p in disk["partitions"]:
                        if key == "PARTUUID" and (p["partuuid"] or "").lower() == value.lower():
                            return p["path"]
                        if key == "PARTLABEL" and p["name"] == value:
                            return p["path"]
            return None
        if spec in self.blkid:
            return spec
        return None

    def lv_for(self, spec):
        return next((lv for lv in self.m["lvm"]["lvs"]
                     if spec == lv["path"] or spec in lv_paths(lv["vg"], lv["name"])), None)

    def probe_swap(self):
        active = {s["path"]: s for s in parsers.parse_proc_swaps(
            probes.read_proc_swaps() or "")} if self.is_host else {}
        swaps = {}
        for dev, tags in self.blkid.items():
            if tags.get("TYPE") == "swap":
                kind = "lv" if self.lv_for(dev) else "partition"
                swaps[dev] = {"kind": kind, "path": dev, "uuid": tags.get("UUID") or None,
                              "label": tags.get("LABEL") or None,
                              "size_bytes": self.part_size(dev),
                              "active": dev in active, "in_fstab": False}
        for e in self.m["fstab"]:
            if e["vfstype"] != "swap":
                continue
            dev = self.resolve_spec(e["spec"])
            if dev and dev in swaps:
                swaps[dev]["in_fstab"] = True
                continue
            lv = self.lv_for(e["spec"])
            if lv:
                swaps[lv["path"]] = {"kind": "lv", "path": lv["path"], "uuid": None,
                                     "label": None, "size_bytes": lv["size_bytes"],
                                     "active": lv["path"] in active, "in_fstab": True}
                continue
            if e["spec"].startswith("/") and not e["spec"].startswith("/dev/"):
                path = target_path(self.root, e["spec"])
                size = os.path.getsize(path) if os.path.isfile(path) else None
                if size is None:
                    self.warn("swap", "swap file %s in /etc/fstab does not exist" % e["spec"])
                swaps[e["spec"]] = {"kind": "file", "path": e["spec"], "uuid": None,
                                    "label": None, "size_bytes": size,
                                    "active": e["spec"] in active, "in_fstab": True}
                continue
            if self.m["disks"]:
                self.warn("swap", "fstab line %d: swap %s is on none of the disks read"
                          % (e["line"], e["spec"]))
        self.m["swap"] = [swaps[k] for k in sorted(swaps)]

    # ------------------------------------------------------------------ kernels
    def probe_kernels(self):
        boot = probes.list_target(self.root, "/boot")
        versions = {}
        for name in boot:
            for prefix in ("vmlinuz-", "vmlinux-", "kernel-"):
                if name.startswith(prefix):
                    version = name[len(prefix):]
                    if "rescue" in version or version.endswith((".hmac", ".sig")):
                        continue
                    versions[version] = "/boot/" + name
        moddirs = {}
        for base in ("/lib/modules", "/usr/lib/modules"):
            for version in probes.list_target(self.root, base):
                moddirs.setdefault(version, base + "/" + version)
        for version, moddir in moddirs.items():
            if version not in versions and probes.exists_target(
                    self.root, moddir + "/vmlinuz"):
                versions[version] = moddir + "/vmlinuz"
        running = os.uname()[2] if self.is_host else None
        kernels = []
        for version in sorted(versions, key=_version_key):
            moddir = moddirs.get(version)
            kernels.append({
                "version": version,
                "image": versions[version],
                "initramfs": self.find_initramfs(version, boot),
                "modules_dir": moddir,
                "running": version == running,
                "virtio": self.virtio_status(version, moddir),
            })
        if not kernels:
            self.warn("kernels", "no kernel found in /boot under %s" % self.root)
        self.m["kernels"] = kernels

    def find_initramfs(self, version, boot):
        return next(("/boot/" + name for name in (
            "initrd.img-%s" % version, "initramfs-%s.img" % version,
            "initrd-%s" % version, "initrd-%s.img" % version) if name in boot), None)

    def virtio_status(self, version, moddir):
        config_text = self.read("/boot/config-%s" % version)
        config = parsers.parse_kernel_config(config_text) if config_text else {}
        builtin, modules = set(), set()
        if moddir:
            text = self.read(moddir + "/modules.builtin")
            if text:
                builtin = parsers.parse_modules_builtin(text)
            text = self.read(moddir + "/modules.dep")
            modules = parsers.parse_modules_dep(text) if text else set()
            if not modules:
                modules = probes.walk_module_names(self.root, moddir)
        else:
            self.warn("kernels", "kernel %s has no /lib/modules/%s" % (version, version))
        return {d: parsers.driver_status(d, builtin, modules, config) for d in osfamily.DRIVERS}

    def probe_arch(self):
        if self.is_host:
            self.m["arch"] = os.uname()[4]
            return
        for rel in ("/usr/bin/bash", "/bin/bash", "/usr/bin/sh", "/bin/sh", "/usr/bin/ls"):
            path = target_path(self.root, rel)
            if os.path.isfile(path) and not os.path.islink(path):
                arch = parsers.parse_elf_machine(probes.read_bytes(path, 20))
                if arch:
                    self.m["arch"] = arch
                    return
        for k in self.m["kernels"]:
            arch = parsers.arch_from_kernel_name(k["version"])
            if arch:
                self.m["arch"] = arch
                return
        # Debian multiarch folders, then the RHEL/SUSE lib64 convention
        for triplet, arch in (("x86_64-linux-gnu", "x86_64"), ("aarch64-linux-gnu", "aarch64"),
                              ("i386-linux-gnu", "i686")):
            if probes.exists_target(self.root, "/usr/lib/" + triplet):
                self.m["arch"] = arch
                return
        self.warn("arch", "no ELF binary or kernel name tells the architecture")

    def probe_initramfs_tool(self):
        """The tool whose programs are installed (wire.osfamily.INITRAMFS_TOOLS), not
        the one whose configuration folder is left over."""
        self.m["initramfs_tool"] = osfamily.initramfs_tool_of(
            lambda p: probes.program_target(self.root, p))

    # ------------------------------------------------------------------ grub
    def probe_grub(self):
        g = self.m["grub"]
        boot_dirs = [d for d in ("/boot/grub2", "/boot/grub")
                     if probes.exists_target(self.root, d)]
        platforms = []
        for d in boot_dirs:
            for name in probes.list_target(self.root, d):
                if name in ("i386-pc", "x86_64-efi", "i386-efi", "arm64-efi") \
                        and name not in platforms:
                    platforms.append(name)
        g["platforms"] = platforms
        efi_dirs = [n for n in probes.list_target(self.root, "/boot/efi/EFI")
                    if n.upper() != "BOOT"]
        # the distribution's own folder first (an ESP may keep others' leftovers)
        osid = self.m["os"]["id"] or ""
        own = {osid, osfamily.EFI_DIRS.get(osid, osid)}
        efi_dirs.sort(key=lambda n: (n.lower() not in own, n))
        g["efi_dir"] = "/boot/efi/EFI/%s" % efi_dirs[0] if efi_dirs else None
        cfg = self.first_existing("/boot/grub2/grub.cfg", "/boot/grub/grub.cfg")
        if cfg is None and g["efi_dir"] and probes.exists_target(
                self.root, g["efi_dir"] + "/grub.cfg"):
            cfg = g["efi_dir"] + "/grub.cfg"
        legacy_cfg = self.first_existing("/boot/grub/grub.conf", "/boot/grub/menu.lst")
        version = self.grub_version()
        if cfg:
            g["flavour"], g["config_path"] = "grub2", cfg
        elif legacy_cfg:
            g["flavour"], g["config_path"] = "legacy", legacy_cfg
        elif version["flavour"]:
            g["flavour"] = version["flavour"]
        if version["flavour"] == g["flavour"]:
            g["version"], g["package_version"] = version["version"], version["package_version"]
        elif g["flavour"] == "legacy":
            g["version"] = "0.97"
        bin_dirs = ("/usr/sbin/", "/sbin/", "/usr/bin/")
        g["mkconfig"] = next((tool for tool in ("grub2-mkconfig", "grub-mkconfig")
                              if self.first_existing(*(d + tool for d in bin_dirs))), None)
        g["bls"] = any(n.endswith(".conf")
                       for n in probes.list_target(self.root, "/boot/loader/entries"))
        default = self.read("/etc/default/grub")
        if default:
            v = parsers.parse_shell_vars(default)
            g["cmdline_linux"] = v.get("GRUB_CMDLINE_LINUX")
            g["cmdline_linux_default"] = v.get("GRUB_CMDLINE_LINUX_DEFAULT")
        g["install_device"] = self.grub_install_device()
        if g["flavour"] != "none" and not g["version"]:
            self.warn("grub", "GRUB is installed (%s) but its version could not be read"
                      % g["config_path"])

    def first_existing(self, *paths):
        """The first of ``paths`` that exists under the root, or None."""
        return next((p for p in paths if probes.exists_target(self.root, p)), None)

    def grub_version(self):
        for platform in ("i386-pc", "x86_64-efi", "i386-efi", "arm64-efi"):
            for base in ("/usr/lib/grub/", "/usr/lib/grub2/"):
                text = self.read(base + platform + "/modinfo.sh")
                if text:
                    v = parsers.parse_grub_version(text)
                    if v["version"]:
                        return v
        if self.is_host:
            text = probes.run_grub_install_version()
            if text:
                return parsers.parse_grub_version(text)
        return {"flavour": None, "version": None, "package_version": None}

    def grub_install_device(self):
        config = self.read("/var/cache/debconf/config.dat")
        if config:
            value = parsers.parse_debconf_value(config, "grub-pc/install_devices")
            if value:
                return value.split(",")[0].strip()
        for disk in self.m["disks"]:
            if disk["boot_code"] in ("grub2", "grub-legacy"):
                return disk["path"]
        return None

    def probe_firmware(self):
        if self.is_host:
            self.m["firmware"] = "uefi" if probes.host_path_exists("/sys/firmware/efi") \
                else "bios"
            return
        esp_in_fstab = any(e["file"] in ("/boot/efi", "/efi") for e in self.m["fstab"])
        bios_boot = "i386-pc" in self.m["grub"]["platforms"] or any(
            d["boot_code"] in ("grub2", "grub-legacy") for d in self.m["disks"])
        self.m["firmware"] = "uefi" if esp_in_fstab and not bios_boot else "bios"

    # ------------------------------------------------------------------ the rest
    def probe_selinux(self):
        text = self.read("/etc/selinux/config")
        if text is None:
            self.m["selinux"] = {"mode": "absent", "type": None, "current": None}
            return
        conf = parsers.parse_selinux_config(text)
        current = None
        if self.is_host:
            enforce = probes.read_selinux_enforce()
            current = {"1": "enforcing", "0": "permissive"}.get(enforce, "disabled")
        self.m["selinux"] = {"mode": conf["mode"], "type": conf["type"], "current": current}

    def probe_network(self):
        found, tools = [], []

        def scan(folder, kind, match=None):
            hits = 0
            for name in probes.list_target(self.root, folder):
                if match and not match(name):
                    continue
                path = folder + "/" + name
                text = self.read(path)
                if text is None:
                    continue
                hits += 1
                found.extend(parsers.find_mac_bound(path, text, kind))
            return hits

        for path in ("/etc/udev/rules.d/70-persistent-net.rules",
                     "/etc/udev/rules.d/75-persistent-net-generator.rules"):
            text = self.read(path)
            if text:
                found.extend(parsers.find_mac_bound(path, text, "udev-persistent-net"))
        if scan("/etc/netplan", "netplan-macaddress", lambda n: n.endswith(".yaml")):
            tools.append("netplan")
        interfaces = self.read("/etc/network/interfaces")
        if interfaces is not None:
            found.extend(parsers.find_mac_bound("/etc/network/interfaces", interfaces,
                                                "interfaces-hwaddress"))
            scan("/etc/network/interfaces.d", "interfaces-hwaddress")
            if any(line.split()[:1] == ["iface"] and "lo" not in line.split()[1:2]
                   for line in interfaces.splitlines() if line.strip()):
                tools.append("ifupdown")
        if scan("/etc/sysconfig/network-scripts", "ifcfg-hwaddr",
                lambda n: n.startswith("ifcfg-") and n != "ifcfg-lo"):
            tools.append("network-scripts")
        if scan("/etc/sysconfig/network", "ifcfg-hwaddr",
                lambda n: n.startswith("ifcfg-") and n != "ifcfg-lo"):
            tools.append("wicked")
        if scan("/etc/NetworkManager/system-connections", "networkmanager-mac"):
            tools.append("NetworkManager")
        scan("/etc/systemd/network", "systemd-link", lambda n: n.endswith(".link"))
        if scan("/etc/systemd/network", "systemd-network", lambda n: n.endswith(".network")):
            tools.append("systemd-networkd")
        self.m["network"] = {"mac_bound": found, "config_tools": tools}

    def probe_cloud_init(self):
        ci = self.m["cloud_init"]
        files = []
        if self.read("/etc/cloud/cloud.cfg") is not None:
            files.append("/etc/cloud/cloud.cfg")
        files += ["/etc/cloud/cloud.cfg.d/" + n
                  for n in probes.list_target(self.root, "/etc/cloud/cloud.cfg.d")
                  if n.endswith(".cfg")]
        ci["installed"] = bool(files) or any(
            probes.exists_target(self.root, p)
            for p in ("/usr/bin/cloud-init", "/bin/cloud-init"))
        ci["disabled"] = probes.exists_target(self.root, "/etc/cloud/cloud-init.disabled")
        ci["files"] = files
        datasource = None
        for f in files:  # later files win, as in cloud-init
            ds = parsers.parse_cloud_datasource(self.read(f) or "")
            if ds is not None:
                datasource = ds
        ci["datasource"] = datasource

    def probe_rsync(self):
        path, text = probes.run_rsync_version()
        if not path:
            self.warn("rsync", "rsync is not installed on this host: install it "
                      "(apt-get install rsync / yum install rsync)")
            return
        v = parsers.parse_rsync_version(text or "")
        self.m["rsync"] = {"path": path, "version": v["version"], "protocol": v["protocol"]}


def _version_key(version):
    """Order kernel releases as rpm/dpkg do: digit runs by value, and a number sorts
    after letters (3.10.0-1160.el7 < 3.10.0-1160.119.1.el7)."""
    return [(1, int(x), "") if x.isdigit() else (0, 0, x)
            for x in re.findall(r"\d+|[A-Za-z]+", version)]
