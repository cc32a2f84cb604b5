"""A sample source server: Debian 12 made with debootstrap onto loop disk images.

Used by the demo (the README's first command) and by the end-to-end tests: it is the
kind of server operators migrate, laid out the old-fashioned way the seed's users have
it (MBR, a separate ``/boot``, swap with ``resume=UUID=``, fstab by ``/dev/sdX`` names,
a data disk at ``/mnt/disk1``), and it boots under qemu as it is.

The debootstrap tree is cached as a tarball outside the repository, keyed by its
inputs (suite, mirror, variant, packages), so a second run is fast; nothing depends
on the cache existing.

    python3 -m image_build.dev.sample_server --out DIR [--cache DIR]
"""

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time

from receiver import blockdev
from wire import runner
from wire.errors import CommandError, DiskError
from wire.paths import target_path

log = logging.getLogger(__name__)

SUITE = "bookworm"
MIRROR = os.environ.get("GO2ALIYUN_DEBIAN_MIRROR", "http://deb.debian.org/debian")
VARIANT = "minbase"
PACKAGES = (
    "linux-image-amd64", "grub-pc", "systemd-sysv", "initramfs-tools", "udev", "kmod",
    "e2fsprogs", "ifupdown", "isc-dhcp-client", "iproute2", "netbase",
)
MIB = 1024 * 1024


def default_cache_dir():
    return os.environ.get("GO2ALIYUN_CACHE", "/var/cache/go2aliyun")


# The layout: pure data. Partition sizes in MiB; None takes the rest of the disk.
LAYOUT = {
    "system": {
        "file": "system.img", "size_mib": 3072, "table": "dos", "device": "/dev/sda",
        "partitions": [
            {"size_mib": 256, "type": "83", "bootable": True, "fs": "ext4", "label": "boot",
             "mount": "/boot"},
            {"size_mib": None, "type": "83", "fs": "ext4", "label": "root", "mount": "/"},
            {"size_mib": 256, "type": "82", "fs": "swap", "label": "swap", "mount": None},
        ],
    },
    "disk1": {
        "file": "disk1.img", "size_mib": 1024, "table": "dos", "device": "/dev/sdb",
        "partitions": [
            {"size_mib": None, "type": "83", "fs": "ext4", "label": "data1",
             "mount": "/mnt/disk1"},
        ],
    },
}


# Bumped when what build() makes changes (not only its inputs): a new folder, so a run
# of the older code on the same machine keeps its own images.
BUILD_VERSION = 2


def build_key():
    """The sample's images are made anew when this changes."""
    return rootfs_key() + "-" + hashlib.sha256(json.dumps(
        [BUILD_VERSION, LAYOUT], sort_keys=True).encode()).hexdigest()[:8]


def default_out_dir(cache_dir=None):
    """Where the sample's disk images are kept: one folder per build key."""
    return os.path.join(cache_dir or default_cache_dir(), "sample-server-" + build_key())


def rootfs_key(suite=SUITE, mirror=MIRROR, variant=VARIANT, packages=PACKAGES, recipe=None):
    parts = [suite, mirror, variant, sorted(packages)] + ([recipe] if recipe else [])
    blob = json.dumps(parts).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def render_sfdisk(disk):
    """sfdisk script for one disk of LAYOUT (pure).

    The partition of size None takes what the fixed ones leave.
    """
    lines = ["label: %s" % disk["table"], "unit: sectors", ""]
    parts = disk["partitions"]
    total = disk["size_mib"] - 1  # 1 MiB for the label and alignment
    sizes = [p["size_mib"] for p in parts]
    rest = total - sum(s for s in sizes if s is not None)
    if rest <= 0:
        raise DiskError("sample layout does not fit %s MiB" % disk["size_mib"])
    start = 2048
    for i, p in enumerate(parts):
        size = (sizes[i] if sizes[i] is not None else rest) * 2048
        attrs = ", bootable" if p.get("bootable") else ""
        lines.append("start=%d, size=%d, type=%s%s" % (start, size, p["type"], attrs))
        start += size
    return "\n".join(lines) + "\n"


def render_fstab(layout):
    """fstab by /dev/sdX names, as many long-lived servers have it (pure)."""
    rows = ["# /etc/fstab of the go2aliyun sample server (device names on purpose)"]
    entries = []
    for disk in layout.values():
        for n, p in enumerate(disk["partitions"], 1):
            dev = "%s%d" % (disk["device"], n)
            if p["fs"] == "swap":
                entries.append((dev, "none", "swap", "sw", 0, 0))
            elif p["mount"]:
                passno = 1 if p["mount"] == "/" else 2
                entries.append((dev, p["mount"], p["fs"], "defaults", 0, passno))
    entries.sort(key=lambda e: (e[1] != "/", e[1]))
    for e in entries:
        rows.append("%-12s %-12s %-6s %-10s %d %d" % e)
    return "\n".join(rows) + "\n"


@contextlib.contextmanager
def cache_lock(path):
    """One builder of the cache file ``path`` at a time (the test workers, the demo and
    a user's build-image may start together): the others wait, then find it made."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_rootfs(cache_dir=None, packages=PACKAGES, configure=None, suite=SUITE,
                  recipe=None):
    """Return the path of the cached debootstrap tarball of ``packages``, making it when
    missing. ``configure(tree)`` adjusts the tree before it is packed (default: the
    sample server's hostname and network); the cache key is over the suite, the packages
    and ``recipe`` (a name for what ``configure`` does beyond them), so two callers with
    different lists never share a tarball."""
    cache_dir = cache_dir or default_cache_dir()
    os.makedirs(cache_dir, exist_ok=True)
    tarball = os.path.join(cache_dir, "debian-%s-%s.tar" % (suite, rootfs_key(
        suite=suite, packages=packages, recipe=recipe)))
    with cache_lock(tarball):
        return _ensure_rootfs(cache_dir, tarball, packages, configure, suite)


def _ensure_rootfs(cache_dir, tarball, packages, configure, suite=SUITE):
    if os.path.exists(tarball):
        log.info("using cached root tree %s", tarball)
        return tarball
    work = tempfile.mkdtemp(prefix="debootstrap-", dir=cache_dir)
    try:
        tree = os.path.join(work, "root")
        log.info("debootstrap %s into %s (a few minutes)", suite, tree)
        runner.run(["debootstrap", "--variant=" + VARIANT, "--include=" + ",".join(packages),
                    suite, tree, MIRROR], timeout=1800)
        (configure or _configure_tree)(tree)
        clean_apt_archives(tree)
        tmp = tarball + ".part"
        runner.run(["tar", "--numeric-owner", "--xattrs", "--acls", "-C", tree, "-cf", tmp, "."],
                   timeout=900)
        os.rename(tmp, tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball


def _configure_tree(tree):
    with open(target_path(tree, "/etc/hostname"), "w") as f:
        f.write("sample-server\n")
    with open(target_path(tree, "/etc/network/interfaces"), "w") as f:
        f.write("auto lo\niface lo inet loopback\n")
    # No password login is needed: the boot check reads the serial console only.


def clean_apt_archives(tree):
    apt_clean = target_path(tree, "/var/cache/apt/archives")
    for name in os.listdir(apt_clean):
        if name.endswith(".deb"):
            os.unlink(os.path.join(apt_clean, name))


def _mkfs(node, part):
    if part["fs"] == "swap":
        runner.run(["mkswap", "-L", part["label"], node])
    else:
        runner.run(["mkfs." + part["fs"], "-q", "-F", "-L", part["label"], node])


def build(out_dir, cache_dir=None, data_files=True):
    """Build the sample server's disk images in ``out_dir``; returns a description dict.

    Idempotent: when ``out_dir/sample.json`` exists with the same key, nothing is done.
    """
    os.makedirs(out_dir, exist_ok=True)
    # one builder at a time per folder (tests and the demo may start together)
    with open(os.path.join(out_dir, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(out_dir, cache_dir, data_files)


def _build(out_dir, cache_dir, data_files):
    desc_path = os.path.join(out_dir, "sample.json")
    key = build_key()
    if os.path.exists(desc_path):
        with open(desc_path) as f:
            desc = json.load(f)
        if desc.get("key") == key and all(
                os.path.exists(os.path.join(out_dir, d["file"])) for d in LAYOUT.values()):
            return desc
    tarball = ensure_rootfs(cache_dir)
    for d in LAYOUT.values():
        path = os.path.join(out_dir, d["file"])
        if os.path.exists(path):
            os.unlink(path)
        with open(path, "wb") as f:
            f.truncate(d["size_mib"] * MIB)
        runner.run(["sfdisk", "-q", path], input=render_sfdisk(d))
    with contextlib.ExitStack() as stack:
        devs = {}
        for name, d in LAYOUT.items():
            numbers = list(range(1, len(d["partitions"]) + 1))
            devs[name] = stack.enter_context(blockdev.attached(os.path.join(out_dir, d["file"]),
                                                              partitions=numbers))
            for n, part in enumerate(d["partitions"], 1):
                _mkfs(blockdev.partition(devs[name], n), part)
        mnt = tempfile.mkdtemp(prefix="sample-mnt-")
        stack.callback(os.rmdir, mnt)
        mounts = []
        for name, d in LAYOUT.items():
            for n, part in enumerate(d["partitions"], 1):
                if part["mount"]:
                    mounts.append((part["mount"], blockdev.partition(devs[name], n)))
        mounts.sort(key=lambda m: m[0].count("/") if m[0] != "/" else 0)
        mounted = []
        for mountpoint, node in mounts:
            where = target_path(mnt, mountpoint)
            os.makedirs(where, exist_ok=True)
            runner.run(["mount", node, where])
            stack.callback(umount_if_mounted, where)
            mounted.append(where)
        runner.run(["tar", "--numeric-owner", "--xattrs", "--acls", "-C", mnt, "-xf", tarball],
                   timeout=900)
        with open(target_path(mnt, "/etc/fstab"), "w") as f:
            f.write(render_fstab(LAYOUT))
        if data_files:
            _write_data(mnt)
        swap_uuid = runner.run(["blkid", "-s", "UUID", "-o", "value", blockdev.partition(
            devs["system"], _swap_number(LAYOUT["system"]))]).stdout.strip()
        _set_resume(mnt, swap_uuid)
        kver = _install_grub(mnt, devs["system"])
        # The images are read next (and cached): unmounted for real, never left dirty.
        for where in reversed(mounted):
            unmount(where)
    desc = {"key": key, "kernel": kver, "fstab": render_fstab(LAYOUT), "resume": swap_uuid,
            "disks": {name: {"file": d["file"], "device": d["device"]}
                      for name, d in LAYOUT.items()}}
    tmp = desc_path + ".part"
    with open(tmp, "w") as f:
        json.dump(desc, f, indent=2)
    os.rename(tmp, desc_path)
    return desc


def _write_data(mnt):
    d = target_path(mnt, "/mnt/disk1")
    os.makedirs(os.path.join(d, "app"), exist_ok=True)
    with open(os.path.join(d, "app", "README.txt"), "w") as f:
        f.write("data disk of the go2aliyun sample server\n")
    with open(os.path.join(d, "app", "blob.bin"), "wb") as f:
        f.write(hashlib.sha256(b"go2aliyun").digest() * 4096)
    os.link(os.path.join(d, "app", "blob.bin"), os.path.join(d, "app", "blob.hardlink"))
    os.symlink("README.txt", os.path.join(d, "app", "readme.link"))
    with open(target_path(mnt, "/etc/motd"), "w") as f:
        f.write("migrated by go2aliyun\n")


def _swap_number(disk):
    return next(n for n, p in enumerate(disk["partitions"], 1) if p["fs"] == "swap")


def _set_resume(mnt, swap_uuid):
    """Hibernation resumes from the swap partition, by UUID, on the kernel command line
    and in the initramfs config, as Debian's installer sets it up: the conversion must
    point both at the swap of the new disks."""
    with open(target_path(mnt, "/etc/initramfs-tools/conf.d/resume"), "w") as f:
        f.write("RESUME=UUID=%s\n" % swap_uuid)
    path = target_path(mnt, "/etc/default/grub")
    with open(path) as f:
        text = f.read()
    new = text.replace('GRUB_CMDLINE_LINUX_DEFAULT="quiet"',
                       'GRUB_CMDLINE_LINUX_DEFAULT="quiet resume=UUID=%s"' % swap_uuid)
    if new == text:
        raise CommandError("the sample's /etc/default/grub has no GRUB_CMDLINE_LINUX_DEFAULT"
                           "=\"quiet\" line to add resume= to")
    with open(path, "w") as f:
        f.write(new)


def _install_grub(mnt, system_dev, root_part=2):
    """Install the tree's own GRUB for BIOS from a chroot, as Debian's installer would,
    make grub.cfg with its update-grub and put ``root=UUID=`` in it (in a chroot over
    a loop device without udev, grub-mkconfig writes /dev/loopNpM instead)."""
    kernels = sorted(k for k in os.listdir(target_path(mnt, "/boot")) if k.startswith("vmlinuz-"))
    if not kernels:
        raise CommandError("no kernel in the sample tree")
    kver = kernels[-1][len("vmlinuz-"):]
    root_uuid = runner.run(["blkid", "-s", "UUID", "-o", "value",
                            blockdev.partition(system_dev, root_part)]).stdout.strip()
    with _chroot(mnt):
        runner.run(["chroot", mnt, "grub-install", "--target=i386-pc", system_dev], timeout=300)
        runner.run(["chroot", mnt, "update-grub"], env={"GRUB_DISABLE_OS_PROBER": "true"},
                   timeout=300)
    cfg = target_path(mnt, "/boot/grub/grub.cfg")
    with open(cfg) as f:
        text = f.read()
    text = text.replace("root=%s" % blockdev.partition(system_dev, root_part),
                        "root=UUID=%s" % root_uuid)
    with open(cfg, "w") as f:
        f.write(text)
    return kver


def umount_if_mounted(where):
    if os.path.ismount(where):
        runner.run(["umount", "-l", where], ok_codes=None)


def unmount(where, attempts=20):
    """Unmount for real (sync, retry while busy) or raise: an image that is copied or
    cached next must not be half-written."""
    runner.run(["sync"])
    for _ in range(attempts):
        if runner.run(["umount", where], ok_codes=None).returncode == 0:
            return
        time.sleep(0.5)
    raise CommandError("cannot unmount %s: something still uses it" % where,
                       hint="look for processes started in the chroot")


@contextlib.contextmanager
def _chroot(mnt):
    done = []
    try:
        for src in ("/dev", "/proc", "/sys"):
            runner.run(["mount", "--bind", src, target_path(mnt, src)])
            done.append(target_path(mnt, src))
        yield
    finally:
        for where in reversed(done):
            runner.run(["umount", "-l", where], ok_codes=None)


@contextlib.contextmanager
def mounted_readonly(out_dir, names=None):
    """Mount the sample server's filesystems read-only under a temporary root, as the
    running server sees them (``/``, ``/boot``, ``/mnt/disk1``); yields the root.
    Undone even on failure. This is the "source server" of the demo."""
    names = names or list(LAYOUT)
    root = tempfile.mkdtemp(prefix="sample-ro-")
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, root, True)
        mounts = []
        for name in names:
            dev = stack.enter_context(blockdev.attached(
                os.path.join(out_dir, LAYOUT[name]["file"]), read_only=True))
            for n, part in enumerate(LAYOUT[name]["partitions"], 1):
                if part["mount"]:
                    mounts.append((part["mount"], blockdev.partition(dev, n)))
        mounts.sort(key=lambda m: 0 if m[0] == "/" else m[0].count("/"))
        for mountpoint, node in mounts:
            where = target_path(root, mountpoint)
            os.makedirs(where, exist_ok=True)
            runner.run(["mount", "-o", "ro,noload", node, where])
            stack.callback(runner.run, ["umount", where], ok_codes=None)
        yield root


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for the disk images")
    ap.add_argument("--cache", default=None, help="cache folder (default %s)" % default_cache_dir())
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    desc = build(args.out, args.cache)
    print(json.dumps(desc, indent=2))


if __name__ == "__main__":
    main()
