"""Probes: run one command (through wire.runner) or read one file, return its text.

No parsing here (see parsers.py). Tests replace these functions with ones that
return captured output; the runner's refusal of real commands stays in force.
"""

import os

from wire import runner
from wire.errors import CommandError
from wire.paths import target_path

LSBLK_COLUMNS = ("NAME,KNAME,PKNAME,TYPE,SIZE,MAJ:MIN,MODEL,LOG-SEC,FSTYPE,UUID,LABEL,"
                 "PARTTYPE,PARTUUID,PARTLABEL,MOUNTPOINT")
LSBLK_BASIC_COLUMNS = "NAME,KNAME,PKNAME,TYPE,SIZE,MAJ:MIN,MODEL,FSTYPE,UUID,LABEL,MOUNTPOINT"
LVM_ENV = {"LVM_SUPPRESS_FD_WARNINGS": "1"}
PV_FIELDS = "pv_name,pv_uuid,vg_name,pv_size,pv_free"
VG_FIELDS = "vg_name,vg_uuid,vg_size,vg_free,vg_extent_size,pv_count,lv_count"
LV_FIELDS = "lv_name,vg_name,lv_uuid,lv_size,lv_path,lv_active,segtype,lv_attr"


def run_lsblk(devices=()):
    try:
        return runner.run(["lsblk", "-P", "-b", "-p", "-o", LSBLK_COLUMNS] + list(devices),
                          timeout=60).stdout
    except CommandError as e:
        if "unknown column" not in (e.stderr or "").lower():
            raise
        # an old util-linux: the columns every lsblk with -P/-p has
        return runner.run(["lsblk", "-P", "-b", "-p", "-o", LSBLK_BASIC_COLUMNS]
                          + list(devices), timeout=60).stdout


def run_sfdisk_json(disk):
    return runner.run(["sfdisk", "--json", disk], timeout=60).stdout


def run_blkid(device):
    # -p: low-level probe of the device itself (no cache), so unmounted filesystems
    # (an ESP on a kernel that cannot mount vfat) are read as they are on disk.
    # Exit code 2 means "nothing found".
    r = runner.run(["blkid", "-p", "-o", "export", device], ok_codes=(0, 2), timeout=60)
    if r.returncode == 2 and r.stderr.strip():
        # 2 with a message is an error (e.g. the device cannot be opened), not "empty"
        raise CommandError("blkid -p %s: %s" % (device, r.stderr.strip()), argv=r.argv,
                           returncode=2, stderr=r.stderr)
    return r.stdout


def run_dumpe2fs(device):
    return runner.run(["dumpe2fs", "-h", device], timeout=60).stdout


def run_fsck_fat(device):
    # -n: check only, never write. Exit 1 = problems found (the counts still print).
    return runner.run(["fsck.fat", "-n", "-v", device], ok_codes=(0, 1), timeout=60).stdout


def run_xfs_info(mountpoint_or_device):
    return runner.run(["xfs_info", mountpoint_or_device], timeout=60).stdout


def run_btrfs(mountpoint):
    """What the inventory records of a mounted btrfs filesystem: ``subvolume list -a -p
    -u -q`` (every subvolume, whichever is mounted; ``-a``: paths from the top level,
    where without it a subvolume below the mounted one is named relative to it),
    ``subvolume get-default``, and whether ``qgroup show`` works (quotas enabled)."""
    return {
        "list": runner.run(["btrfs", "subvolume", "list", "-a", "-p", "-u", "-q",
                            mountpoint], timeout=60).stdout,
        "default": runner.run(["btrfs", "subvolume", "get-default", mountpoint],
                              timeout=60).stdout,
        "quota": runner.run(["btrfs", "qgroup", "show", mountpoint], ok_codes=None,
                            timeout=60).returncode == 0,
    }


def run_lvm_report():
    common = ["--reportformat", "json", "--units", "b", "--nosuffix"]
    return {
        "pvs": runner.run(["pvs"] + common + ["-o", PV_FIELDS], env=LVM_ENV, timeout=60).stdout,
        "vgs": runner.run(["vgs"] + common + ["-o", VG_FIELDS], env=LVM_ENV, timeout=60).stdout,
        "lvs": runner.run(["lvs"] + common + ["-o", LV_FIELDS], env=LVM_ENV, timeout=60).stdout,
    }


def run_grub_install_version():
    """``grub-install --version`` of the running system (root / only)."""
    for name in ("grub2-install", "grub-install"):
        path = runner.which(name)
        if path:
            return runner.run([path, "--version"], timeout=30).stdout
    return None


def run_rsync_version():
    """(path, ``rsync --version`` text) of the rsync this host will run, or (None, None)."""
    path = runner.which("rsync")
    if not path:
        return None, None
    return path, runner.run([path, "--version"], timeout=30).stdout


def read_mountinfo():
    return read_text("/proc/self/mountinfo")


def read_proc_swaps():
    """/proc/swaps of the running system, or None where there is none."""
    if not os.path.exists("/proc/swaps"):
        return None
    return read_text("/proc/swaps")


def read_selinux_enforce():
    """The running SELinux mode from selinuxfs, or None when SELinux is not running."""
    for path in ("/sys/fs/selinux/enforce", "/selinux/enforce"):
        if os.path.exists(path):
            return read_text(path).strip()
    return None


def read_text(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def read_bytes(path, size):
    with open(path, "rb") as f:
        return f.read(size)


def read_target(root, relpath):
    """Text of a file of the system at ``root``, or None if it does not exist."""
    path = target_path(root, relpath)
    if not os.path.isfile(path):
        return None
    return read_text(path)


def list_target(root, relpath):
    """Sorted names in a folder of the system at ``root`` (empty if absent)."""
    path = target_path(root, relpath)
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def exists_target(root, relpath):
    return os.path.lexists(target_path(root, relpath))


def program_target(root, relpath):
    """Whether ``relpath`` is an executable file of the system at ``root``, its symlinks
    read as that system reads them (an absolute link from ``root``, as usrmerge's
    ``/sbin/x -> /usr/sbin/x``)."""
    path = target_path(root, relpath)
    for _ in range(40):
        if not os.path.islink(path):
            break
        link = os.readlink(path)
        path = target_path(root, link) if link.startswith("/") else \
            os.path.join(os.path.dirname(path), link)
    try:
        st = os.stat(path)
    except OSError:
        return False
    return os.path.isfile(path) and bool(st.st_mode & 0o111)


def walk_module_names(root, moddir):
    """Names of the module files under ``moddir`` (used when modules.dep is absent)."""
    names = set()
    base = target_path(root, moddir)
    for _dirpath, _dirs, files in os.walk(base):
        for f in files:
            for ext in (".ko", ".ko.xz", ".ko.gz", ".ko.zst"):
                if f.endswith(ext):
                    names.add(f[: -len(ext)].replace("-", "_"))
    return names


def statvfs_usage(path):
    """(size_bytes, used_bytes) of the filesystem mounted at ``path``."""
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize, (st.f_blocks - st.f_bfree) * st.f_frsize


def device_number(path):
    """``major:minor`` of a block device node, or None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not st.st_rdev:
        return None
    return "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))


def host_path_exists(path):
    return os.path.exists(path)
