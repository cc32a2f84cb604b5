"""The receiver appliance for the ``local`` provider: a Debian 12 qcow2 that boots under
qemu, takes its identity from a cloud-init NoCloud seed and runs the receiver.

Inputs -> one cache key -> one file. The debootstrap tree (the appliance's package list)
is cached by :func:`image_build.dev.sample_server.ensure_rootfs`; the project's wheel and its
receiver dependencies are made ON THE HOST (``pip wheel``: nothing inside the chroot
reaches PyPI) and installed offline into a venv at ``/opt/go2aliyun``. The result is
cached under ``/var/cache/go2aliyun/appliance-<key>.qcow2`` where the key covers the
root tree, the project's source files and its dependencies, so a rerun with no change
returns at once. Written as ``.part`` and renamed.

    go2aliyun-cloud build-image --provider local [--out FILE]
"""

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile

from image_build.dev import sample_server
from image_build.dev.docker import source_tree_hash
from image_build.userdata import BOOT_PACKAGES, RECEIVER_PACKAGES
from receiver import blockdev
from wire import runner
from wire.errors import CommandError
from wire.paths import target_path

log = logging.getLogger(__name__)

PACKAGES = BOOT_PACKAGES + RECEIVER_PACKAGES
UNIT = "go2aliyun-receiver.service"
DISK_MIB = 4096
VENV = "/opt/go2aliyun"
# The files that make the project; their content is part of the cache key.
SOURCE_PARTS = ("pyproject.toml", "wire", "source_script", "receiver", "image_build",
                "cloud-init")
PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The appliance only ever runs under qemu (the local provider), one receiver per VM. Under
# TCG every process it starts is slow (update-initramfs starts ~13 000): the TSC is a
# good clock there (else the kernel falls back to HPET, an emulated device), and the
# spectre-class mitigations (retpolines, barriers on every user copy) guard processes
# against each other in a VM whose only work runs as root anyway. Measured: ~10% off
# process-heavy work on top of -smp 1 (docs/testing.md).
KERNEL_CMDLINE = ("console=tty0 console=ttyS0,115200n8 net.ifnames=0 "
                  "tsc=reliable clocksource=tsc mitigations=off")

LAYOUT = {"file": "appliance.img", "size_mib": DISK_MIB, "table": "dos",
          "partitions": [{"size_mib": None, "type": "83", "bootable": True, "fs": "ext4",
                          "label": "go2aliyun", "mount": "/"}]}


def appliance_key(project_dir=PROJECT_DIR, packages=PACKAGES):
    """The cache key (pure apart from reading the source files)."""
    blob = json.dumps({"rootfs": sample_server.rootfs_key(packages=packages),
                       "source": source_tree_hash(project_dir, SOURCE_PARTS), "layout": LAYOUT,
                       "cmdline": KERNEL_CMDLINE, "venv": VENV}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_path(cache_dir=None, project_dir=PROJECT_DIR):
    cache_dir = cache_dir or sample_server.default_cache_dir()
    return os.path.join(cache_dir, "appliance-%s.qcow2" % appliance_key(project_dir))


def render_fstab(root_uuid):
    return "# go2aliyun receiver appliance\nUUID=%s / ext4 errors=remount-ro 0 1\n" % root_uuid


def render_grub_default():
    return ("GRUB_DEFAULT=0\nGRUB_TIMEOUT=0\nGRUB_DISTRIBUTOR=go2aliyun\n"
            "GRUB_CMDLINE_LINUX_DEFAULT=\"\"\n"
            "GRUB_CMDLINE_LINUX=\"%s\"\n"
            "GRUB_TERMINAL=\"console serial\"\n"
            "GRUB_SERIAL_COMMAND=\"serial --speed=115200\"\n"
            "GRUB_DISABLE_OS_PROBER=true\n" % KERNEL_CMDLINE)


# NoCloud only (no network probing of other clouds); DHCP on the first NIC comes from
# cloud-init's fallback network config, rendered for ifupdown.
CLOUD_CFG = """\
# go2aliyun receiver appliance: identity from a NoCloud seed (volume label cidata), or
# none (launched by hand: the receiver makes its own)
datasource_list: [NoCloud, None]
locale: C.UTF-8
"""

INTERFACES = """\
# go2aliyun receiver appliance; cloud-init writes the DHCP stanza into interfaces.d
auto lo
iface lo inet loopback
source /etc/network/interfaces.d/*
"""


def build_wheels(out_dir, project_dir=PROJECT_DIR):
    """The project's wheel and every receiver dependency as wheels, made on the host."""
    os.makedirs(out_dir, exist_ok=True)
    runner.run([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "-q",
                "--wheel-dir", out_dir, project_dir + "[receiver]"], timeout=1800)
    return sorted(os.listdir(out_dir))


def _configure(mnt, root_uuid):
    def write(path, text, mode=0o644):
        full = target_path(mnt, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(text)
        os.chmod(full, mode)

    write("/etc/fstab", render_fstab(root_uuid))
    write("/etc/hostname", "go2aliyun-receiver\n")
    write("/etc/hosts", "127.0.0.1 localhost\n127.0.1.1 go2aliyun-receiver\n")
    write("/etc/network/interfaces", INTERFACES)
    os.makedirs(target_path(mnt, "/etc/network/interfaces.d"), exist_ok=True)
    write("/etc/cloud/cloud.cfg.d/90-go2aliyun.cfg", CLOUD_CFG)
    write("/etc/default/grub", render_grub_default())
    # qemu's default machine has a floppy controller; probing it costs boot time
    write("/etc/modprobe.d/go2aliyun-no-floppy.conf", "blacklist floppy\n")
    # Let the serial console show a login prompt (what the boot checks look for).
    wants = target_path(mnt, "/etc/systemd/system/getty.target.wants")
    os.makedirs(wants, exist_ok=True)
    link = os.path.join(wants, "serial-getty@ttyS0.service")
    if not os.path.lexists(link):
        os.symlink("/lib/systemd/system/serial-getty@.service", link)
    # The receiver starts on every boot, as on an appliance made by build-image: with a
    # launch's user-data it takes the identity and disks it names; launched by hand (no
    # user-data) it makes its own token and takes the blank disks.
    with open(os.path.join(PROJECT_DIR, "cloud-init", UNIT)) as f:
        write("/etc/systemd/system/" + UNIT, f.read())
    wants = target_path(mnt, "/etc/systemd/system/multi-user.target.wants")
    os.makedirs(wants, exist_ok=True)
    link = os.path.join(wants, UNIT)
    if not os.path.lexists(link):
        os.symlink("/etc/systemd/system/" + UNIT, link)


def _install_receiver(mnt, wheels_dir):
    inside = "/var/tmp/go2aliyun-wheels"
    dest = target_path(mnt, inside)
    shutil.copytree(wheels_dir, dest)
    try:
        runner.run(["chroot", mnt, "python3", "-m", "venv", VENV], timeout=600)
        runner.run(["chroot", mnt, VENV + "/bin/pip", "install", "-q",
                    "--disable-pip-version-check", "--no-index", "--find-links", inside,
                    "go2aliyun[receiver]"], timeout=1200)
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    for tool in ("go2aliyun-receiver",):
        link = target_path(mnt, "/usr/local/bin/" + tool)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(VENV + "/bin/" + tool, link)


def build(out=None, cache_dir=None, project_dir=PROJECT_DIR, progress=None):
    """Make (or reuse) the appliance qcow2; returns its path."""
    say = progress or (lambda m: log.info("%s", m))
    cache_dir = cache_dir or sample_server.default_cache_dir()
    cached = default_path(cache_dir, project_dir)
    with sample_server.cache_lock(cached):
        if not os.path.exists(cached):
            _build(cached, cache_dir, project_dir, say)
        else:
            say("appliance is cached: %s" % cached)
    return _deliver(cached, out, say)


def _build(cached, cache_dir, project_dir, say):
    say("root tree (debootstrap %s, cached by its package list)" % sample_server.SUITE)
    tarball = sample_server.ensure_rootfs(cache_dir, packages=PACKAGES,
                                          configure=lambda tree: None)
    work = tempfile.mkdtemp(prefix="appliance-", dir=cache_dir)
    try:
        say("building the project's wheels on the host")
        wheels = os.path.join(work, "wheels")
        names = build_wheels(wheels, project_dir)
        say("%d wheels (go2aliyun and its dependencies)" % len(names))
        raw = os.path.join(work, LAYOUT["file"])
        with open(raw, "wb") as f:
            f.truncate(LAYOUT["size_mib"] * sample_server.MIB)
        runner.run(["sfdisk", "-q", raw], input=sample_server.render_sfdisk(LAYOUT))
        with contextlib.ExitStack() as stack:
            dev = stack.enter_context(blockdev.attached(raw, partitions=[1]))
            part = blockdev.partition(dev, 1)
            runner.run(["mkfs.ext4", "-q", "-F", "-L", "go2aliyun", part])
            mnt = tempfile.mkdtemp(prefix="mnt-", dir=work)
            runner.run(["mount", part, mnt])
            stack.callback(sample_server.umount_if_mounted, mnt)
            say("unpacking the root tree")
            runner.run(["tar", "--numeric-owner", "--xattrs", "--acls", "-C", mnt, "-xf",
                        tarball], timeout=900)
            root_uuid = runner.run(["blkid", "-s", "UUID", "-o", "value",
                                    part]).stdout.strip()
            _configure(mnt, root_uuid)
            with sample_server._chroot(mnt):
                say("installing the receiver into %s (offline)" % VENV)
                _install_receiver(mnt, wheels)
            say("installing GRUB (console on ttyS0)")
            sample_server._install_grub(mnt, dev, root_part=1)
            if not os.path.exists(target_path(mnt, "/boot/grub/grub.cfg")):
                raise CommandError("update-grub made no /boot/grub/grub.cfg in the appliance")
            # The image is copied next: it must be unmounted for real (the lazy unmounts
            # of the chroot's /dev, /proc, /sys may still be going on), never left dirty.
            sample_server.unmount(mnt)
        say("writing %s" % cached)
        tmp = "%s.%d.part" % (cached, os.getpid())  # two builds at once do not collide
        runner.run(["qemu-img", "convert", "-O", "qcow2", "-f", "raw", raw, tmp], timeout=1800)
        os.rename(tmp, cached)
        prune(cache_dir, keep=cached)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def prune(cache_dir, keep):
    """Remove appliances of older source trees (each is about 1 GiB); a qemu that still
    runs on one keeps its open file."""
    for name in os.listdir(cache_dir):
        path = os.path.join(cache_dir, name)
        if name.startswith("appliance-") and name.endswith(".qcow2") and path != keep:
            log.info("removing the outdated appliance %s", path)
            os.unlink(path)
        elif name.startswith("appliance-") and name.endswith(".qcow2.lock") \
                and path != keep + ".lock":
            os.unlink(path)


def _deliver(cached, out, say):
    if not out or os.path.abspath(out) == cached:
        return cached
    tmp = out + ".part"
    shutil.copyfile(cached, tmp)
    os.rename(tmp, out)
    say("appliance written to %s" % out)
    return os.path.abspath(out)
