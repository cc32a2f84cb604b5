"""Real disk layouts on loop devices, for the inventory's root tests and for capturing
the real command output that the parser tests read (tests/data/inventory/).

Each layout is a context manager: a sparse image file, a loop device from
``losetup -f --show -P``, partitions made with sfdisk, filesystems made with mkfs,
mounted under a temporary root; everything is undone in ``finally``, even on failure.

Re-capture the parser inputs (as root) with::

    python3 -m tests.source_script.inventory.layouts capture tests/data/inventory

This kernel has no device-mapper: LVM metadata can be written and read (pvcreate,
vgcreate, ``lvcreate --driverloaded n --activate n --zero n``) but an LV cannot be
activated or mounted.
Mounting vfat does not work either: the ESP is read unmounted (blkid -p).
"""

import contextlib
import os
import secrets
import shutil
import sys
import tempfile
import time

from wire import runner

MiB = 1024 * 1024
LVM_ENV = {"LVM_SUPPRESS_FD_WARNINGS": "1"}


def unique(prefix="g2a"):
    return "%s-%s" % (prefix, secrets.token_hex(3))


def _wait_for(path, timeout=10.0):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        if time.time() > deadline:
            raise RuntimeError("device node %s did not appear" % path)
        time.sleep(0.05)


class Layout(object):
    """One loop disk with partitions and filesystems, mounted under ``self.root``."""

    def __init__(self, size_mib, sfdisk_script, workdir):
        self.size_mib = size_mib
        self.sfdisk_script = sfdisk_script
        self.workdir = workdir
        self.image = os.path.join(workdir, "disk.img")
        self.root = os.path.join(workdir, "root")
        self.loop = None
        self.mounted = []
        self.vgs = []

    def part(self, n):
        return "%sp%d" % (self.loop, n)

    def setup(self):
        with open(self.image, "wb") as f:
            f.truncate(self.size_mib * MiB)
        # Partition the image file, then attach it. On this kernel neither the
        # attach-time scan (-P) nor BLKRRPART makes partition nodes: `partx -a` does.
        runner.run(["sfdisk", "-q", self.image], input=self.sfdisk_script)
        self.loop = runner.run(["losetup", "-f", "--show", "-P", self.image]).stdout.strip()
        runner.run(["partx", "-a", self.loop], ok_codes=None)
        os.makedirs(self.root)

    def mkfs(self, argv):
        runner.run(argv)

    def mount(self, dev, mountpoint, options=None):
        target = os.path.join(self.root, mountpoint.lstrip("/"))
        if not os.path.isdir(target):
            os.makedirs(target)
        argv = ["mount"]
        if options:
            argv += ["-o", options]
        runner.run(argv + [dev, target])
        self.mounted.append(target)
        return target

    def write(self, relpath, text):
        path = os.path.join(self.root, relpath.lstrip("/"))
        d = os.path.dirname(path)
        if not os.path.isdir(d):
            os.makedirs(d)
        with open(path, "w") as f:
            f.write(text)

    def cleanup(self):
        for target in reversed(self.mounted):
            runner.run(["umount", target], ok_codes=None)
        self.mounted = []
        for vg in self.vgs:
            runner.run(["vgremove", "-f", "-y", vg], ok_codes=None, env=LVM_ENV)
        if self.loop:
            runner.run(["losetup", "-d", self.loop], ok_codes=None)
            self.loop = None


@contextlib.contextmanager
def _layout(size_mib, script, parts):
    workdir = tempfile.mkdtemp(prefix=unique() + "-")
    lay = Layout(size_mib, script, workdir)
    try:
        lay.setup()
        for n in parts:
            _wait_for(lay.part(n))
        yield lay
    finally:
        lay.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


FSTAB_HEAD = "# /etc/fstab: static file system information.\n#\n"


@contextlib.contextmanager
def mbr_boot_root_swap():
    """dos: p1 /boot ext4 (active), p2 extended, p5 / ext4 (old features), p6 swap."""
    script = ("label: dos\n"
              "start=2048, size=65536, type=83, bootable\n"
              "start=67584, size=192512, type=5\n"
              "start=69632, size=131072, type=83\n"
              "start=202752, size=57344, type=82\n")
    with _layout(128, script, (1, 2, 5, 6)) as lay:
        lay.mkfs(["mkfs.ext4", "-q", "-F", "-L", "boot", "-U",
                  "3c1f7a52-2b0d-4a8e-9d61-0f4e8b7c2a11", lay.part(1)])
        lay.mkfs(["mkfs.ext4", "-q", "-F", "-L", "rootfs", "-O", "^metadata_csum,^64bit",
                  "-U", "8a2d4b6e-1f3c-4e5a-b7d9-2c4e6f8a0b13", lay.part(5)])
        lay.mkfs(["mkswap", "-L", "swap0", "-U", "d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6",
                  lay.part(6)])
        lay.mount(lay.part(5), "/")
        lay.mount(lay.part(1), "/boot")
        lay.write("/etc/fstab", FSTAB_HEAD +
                  "UUID=8a2d4b6e-1f3c-4e5a-b7d9-2c4e6f8a0b13 / ext4 errors=remount-ro 0 1\n"
                  "LABEL=boot /boot ext4 defaults 0 2\n"
                  "UUID=d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6 none swap sw 0 0\n")
        lay.write("/boot/payload.bin", "x" * (3 * MiB))
        yield lay


@contextlib.contextmanager
def gpt_esp_xfs():
    """gpt: p1 BIOS boot, p2 ESP vfat (left unmounted), p3 / xfs."""
    script = ("label: gpt\n"
              "start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, name=bios\n"
              "start=4096, size=131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, "
              "name=\"EFI System\"\n"
              "start=135168, size=655360, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, "
              "name=root, attrs=LegacyBIOSBootable\n")
    with _layout(400, script, (1, 2, 3)) as lay:
        lay.mkfs(["mkfs.vfat", "-F", "32", "-n", "ESP", "-i", "1234ABCD", lay.part(2)])
        lay.mkfs(["mkfs.xfs", "-q", "-f", "-L", "root", "-m",
                  "uuid=6b1e2c3d-4f5a-4b6c-8d7e-9f0a1b2c3d4e,bigtime=0,inobtcount=0",
                  lay.part(3)])
        lay.mount(lay.part(3), "/")
        lay.write("/etc/fstab", FSTAB_HEAD +
                  "UUID=6b1e2c3d-4f5a-4b6c-8d7e-9f0a1b2c3d4e / xfs defaults 0 0\n"
                  "UUID=1234-ABCD /boot/efi vfat umask=0077 0 1\n"
                  "/swapfile none swap sw 0 0\n")
        with open(os.path.join(lay.root, "swapfile"), "wb") as f:
            f.truncate(8 * MiB)
        yield lay


@contextlib.contextmanager
def lvm_root():
    """dos: p1 /boot ext4, p2 LVM PV with a VG holding root and swap LVs (not
    activated: no device-mapper here, so the LVs cannot be mounted)."""
    script = ("label: dos\n"
              "start=2048, size=65536, type=83, bootable\n"
              "start=67584, size=194560, type=8e\n")
    vg = unique("g2avg").replace("-", "_")
    with _layout(128, script, (1, 2)) as lay:
        lay.mkfs(["mkfs.ext4", "-q", "-F", "-L", "boot", lay.part(1)])
        runner.run(["pvcreate", "-q", "-y", "-ff", lay.part(2)], env=LVM_ENV)
        runner.run(["vgcreate", "-q", vg, lay.part(2)], env=LVM_ENV)
        lay.vgs.append(vg)
        for name, size in (("root", "60m"), ("swap", "16m")):
            runner.run(["lvcreate", "-q", "--driverloaded", "n", "--activate", "n",
                        "--zero", "n", "-y", "-L", size, "-n", name, vg], env=LVM_ENV)
        lay.vg = vg
        lay.mount(lay.part(1), "/")
        lay.write("/etc/fstab", FSTAB_HEAD +
                  "/dev/mapper/%s-root / ext4 defaults 0 1\n" % vg +
                  "/dev/%s/swap none swap sw 0 0\n" % vg)
        yield lay


@contextlib.contextmanager
def btrfs_subvolumes():
    """dos: p1 btrfs as SUSE and Fedora install it: subvolumes @ (the default, mounted at
    /), @home (at /home), a nested @/var/lib/machines, a read-only snapshot of @ (not
    mounted), quotas enabled; fstab by subvol=."""
    script = "label: dos\nstart=2048, type=83\n"
    with _layout(320, script, (1,)) as lay:
        lay.mkfs(["mkfs.btrfs", "-q", "-f", "-L", "rootfs", "-U",
                  "0b7e2f1a-9c3d-4e5f-a6b7-c8d9e0f1a2b3", lay.part(1)])
        top = os.path.join(lay.workdir, "top")
        os.makedirs(top)
        runner.run(["mount", lay.part(1), top])
        try:
            for sub in ("@", "@home"):
                runner.run(["btrfs", "subvolume", "create", os.path.join(top, sub)])
            os.makedirs(os.path.join(top, "@", "var", "lib"))
            runner.run(["btrfs", "subvolume", "create",
                        os.path.join(top, "@", "var", "lib", "machines")])
            runner.run(["btrfs", "subvolume", "snapshot", "-r", os.path.join(top, "@"),
                        os.path.join(top, "@snap-1")])
            runner.run(["btrfs", "subvolume", "set-default", os.path.join(top, "@")])
            runner.run(["btrfs", "quota", "enable", top])
        finally:
            runner.run(["umount", top])
        lay.mount(lay.part(1), "/", "subvol=@")
        lay.mount(lay.part(1), "/home", "subvol=@home,compress=zstd")
        lay.write("/etc/fstab", FSTAB_HEAD +
                  "UUID=0b7e2f1a-9c3d-4e5f-a6b7-c8d9e0f1a2b3 / btrfs subvol=@ 0 0\n"
                  "UUID=0b7e2f1a-9c3d-4e5f-a6b7-c8d9e0f1a2b3 /home btrfs "
                  "subvol=@home,compress=zstd 0 0\n")
        yield lay


def _only_vg(text, vg, norm):
    """Keep the report rows of our VG only (others may have PVs on this machine)."""
    import json

    doc = json.loads(text)
    for rep in doc.get("report", []):
        for kind in rep:
            rep[kind] = [r for r in rep[kind] if r.get("vg_name") == vg]
    return norm(json.dumps(doc, indent=2)).replace(vg, "g2avg_test") + "\n"


LAYOUTS = {
    "mbr": mbr_boot_root_swap,
    "gpt": gpt_esp_xfs,
    "lvm": lvm_root,
}


def capture(outdir):
    """Run the inventory's commands on each layout and keep their real output."""
    from source_script.inventory import probes

    os.makedirs(outdir, exist_ok=True)

    def save(name, text):
        with open(os.path.join(outdir, name), "w") as f:
            f.write(text)

    for key, make in sorted(LAYOUTS.items()):
        with make() as lay:
            # loop names vary: keep them as /dev/loopX so captures are stable.
            def norm(text, lay=lay):
                return text.replace(lay.loop, "/dev/loopX").replace(
                    os.path.basename(lay.loop), "loopX").replace(lay.root, "/ROOT")

            save("%s.lsblk.txt" % key, norm(probes.run_lsblk([lay.loop])))
            save("%s.sfdisk.json" % key, norm(probes.run_sfdisk_json(lay.loop)))
            save("%s.blkid.disk.txt" % key, norm(probes.run_blkid(lay.loop)))
            for dev in sorted(os.listdir("/dev")):
                path = "/dev/" + dev
                if not path.startswith(lay.loop + "p"):
                    continue
                n = path[len(lay.loop) + 1:]
                save("%s.blkid.p%s.txt" % (key, n), norm(probes.run_blkid(path)))
            if key == "mbr":
                save("mbr.dumpe2fs.root.txt", norm(probes.run_dumpe2fs(lay.part(5))))
                save("mbr.dumpe2fs.boot.txt", norm(probes.run_dumpe2fs(lay.part(1))))
                save("mbr.mountinfo.txt", norm(probes.read_text("/proc/self/mountinfo")))
            if key == "gpt":
                save("gpt.xfs_info.txt", norm(probes.run_xfs_info(lay.root)))
                save("gpt.fsck_fat.p2.txt", norm(probes.run_fsck_fat(lay.part(2))))
            if key == "lvm":
                for kind, text in probes.run_lvm_report().items():
                    save("lvm.%s.json" % kind, _only_vg(text, lay.vg, norm))
        print("captured", key)
    # outputs of this host itself
    save("host.rsync-version.txt", probes.run_rsync_version()[1])
    save("host.grub-install-version.txt", probes.run_grub_install_version())
    save("host.proc-swaps.txt", probes.read_text("/proc/swaps"))
    with open(os.path.join(outdir, "host.bash.elf-header.bin"), "wb") as f:
        f.write(probes.read_bytes(os.path.realpath("/bin/bash"), 64))
    shutil.copy("/usr/lib/grub/i386-pc/boot.img", os.path.join(outdir, "grub2-boot.img"))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "capture":
        capture(sys.argv[2])
    else:
        sys.exit("usage: python3 -m tests.source_script.inventory.layouts capture OUTDIR")
