"""The whole product on one machine: a real Debian 12 server migrated into an image that
boots on virtio.

The sample server (image_build.sample_server: MBR, /boot, /, swap, fstab by /dev/sdX
names, a data disk at /mnt/disk1) is mounted read-only in the `src` namespace; the
receiver runs in `ecs` with two empty target disks (loop devices over sparse files),
the `local` provider and its verification boot. `go2aliyun migrate --cutover` pushes
through TLS; the receiver prepares the disks, converts, boots the copy under qemu,
writes the image as qcow2 files. Then this test boots the image once more itself and
reads it back: every source file is in it, byte for byte with its metadata, or was
changed by the conversion and left its original as ``<file>.pre-migration``.
"""

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time

import pytest

from receiver import bootcheck
from tests.helpers import fidelity, sample
from tests.helpers.netns import netns_pair
from tests.helpers.receiver import Receiver, tail_of
from wire import runner

pytestmark = [pytest.mark.root, pytest.mark.qemu]

GIB = 1024 ** 3
FINISHED = "Goto Aliyun Finished!"
CONFIG = {"access_id": "", "secret_key": "", "region_id": "", "image_name": "E2E_SAMPLE",
          "system_disk_size": 20, "platform": "Debian", "architecture": "x86_64",
          "bandwidth_limit": 0,
          "data_disks": [{"data_disk_index": 1, "data_disk_size": 20,
                          "src_path": "/mnt/disk1"}]}
# What the default excludes leave out of the system disk (the contents, not the folder).
SYSTEM_EXCLUDED = ["dev/*", "proc/*", "sys/*", "run/*", "tmp/*", "media/*", "mnt/*",
                   "lost+found/*", "var/lib/lxcfs/*"]
# Files the conversion regenerates rather than edits: no .pre-migration copy (a small
# /boot may not hold two initramfs images); checked by the boot instead.
REGENERATED = ["boot/initrd.img-*", "boot/grub/*", "var/lib/initramfs-tools/*",
               "etc/initramfs-tools/*", "var/lib/dpkg/*", "var/cache/*", "var/log/*",
               "etc/ld.so.cache", "var/lib/systemd/*"]


@contextlib.contextmanager
def loop_disks(base, sizes):
    devs = {}
    try:
        for name, size in sizes.items():
            path = os.path.join(base, "%s.img" % name)
            with open(path, "wb") as f:
                f.truncate(size)
            devs[name] = runner.run(["losetup", "-f", "--show", path]).stdout.strip()
        yield devs
    finally:
        for dev in devs.values():
            runner.run(["losetup", "-d", dev], ok_codes=None)


@contextlib.contextmanager
def mounted_image(qcow2, partition):
    """A partition of a qcow2 image, read back through a raw copy, mounted read-only."""
    work = tempfile.mkdtemp(prefix="e2e-image-")
    raw = os.path.join(work, "disk.raw")
    mnt = os.path.join(work, "mnt")
    os.makedirs(mnt)
    dev = None
    try:
        runner.run(["qemu-img", "convert", "-O", "raw", qcow2, raw], timeout=600)
        dev = runner.run(["losetup", "-f", "--show", "-r", "-P", raw]).stdout.strip()
        runner.run(["partprobe", dev], ok_codes=None)
        node = "%sp%d" % (dev, partition)
        for _ in range(100):
            if os.path.exists(node):
                break
            time.sleep(0.1)
        runner.run(["mount", "-o", "ro,noload", node, mnt])
        try:
            yield mnt
        finally:
            runner.run(["umount", mnt], ok_codes=None)
    finally:
        if dev:
            runner.run(["losetup", "-d", dev], ok_codes=None)
        shutil.rmtree(work, ignore_errors=True)


def unexplained(problems, src, dst):
    """Differences that neither a .pre-migration copy nor a regeneration explains."""
    left = []
    for p in problems:
        if " for '" in p:
            rel = p.split(" for '", 1)[1].split("'", 1)[0]
        elif p.startswith("extra in copy: '"):
            rel = p.split("'", 2)[1]
            if rel.endswith(".pre-migration") or fidelity.excluded(rel, REGENERATED):
                continue
        else:
            left.append(p)
            continue
        pre = os.path.join(dst, rel + ".pre-migration")
        if os.path.lexists(pre) and os.path.isfile(pre) and \
                fidelity._sha256(pre) == fidelity._sha256(os.path.join(src, rel)):
            continue
        if fidelity.excluded(rel, REGENERATED):
            continue
        left.append(p)
    return left


def test_sample_server_migrates_to_an_image_that_boots(tmp_path):
    base = str(tmp_path)
    sample.ensure_sample()
    out = os.path.join(base, "images")
    work = os.path.join(base, "work")
    os.makedirs(work)
    with open(os.path.join(work, "user_config.json"), "w") as f:
        json.dump(CONFIG, f)
    with sample.mounted_readonly() as root, netns_pair() as net, \
            loop_disks(base, {"system": 20 * GIB, "disk1": 20 * GIB}) as disks:
        receiver = Receiver(net, base, extra_args=[
            "--disk", "system=" + disks["system"], "--disk", "disk1=" + disks["disk1"],
            "--provider", "local", "--output", out])
        receiver.start()
        try:
            r = net.run(net.src, [
                sys.executable, "-m", "source_script.cli", "migrate", "--workdir", work,
                "--root", root, "--receiver", net.ecs_ip,
                "--fingerprint", receiver.status["fingerprint"], "--cutover", "--yes"],
                env={"GO2ALIYUN_TOKEN": receiver.status["token"],
                     "PYTHONPATH": os.getcwd()},
                ok_codes=None, timeout=1500, cwd=work)
            doc = receiver.document()
        finally:
            receiver.stop()
        assert r.returncode == 0 and FINISHED in r.stdout, (
            "exit %s\n%s\n%s\nreceiver: %s\nstate: %s" % (
                r.returncode, r.stdout[-3000:], r.stderr[-3000:],
                tail_of(receiver.log), json.dumps(doc.get("error"))))
        image_dir = os.path.join(out, "E2E_SAMPLE")
        assert doc["image"]["path"] == image_dir and image_dir in r.stdout
        with open(os.path.join(image_dir, "image.json")) as f:
            desc = json.load(f)
        assert [d["device"] for d in desc["disks"]] == ["/dev/xvda", "/dev/xvdb"]
        with open(os.path.join(receiver.state, "verify.json")) as f:
            verify = json.load(f)
        assert verify["ok"] is True and verify["code"] == "verify.ok"

        # The image boots once more, here, on virtio: login prompt, no failed mount.
        files = [os.path.join(image_dir, d["file"]) for d in desc["disks"]]
        verdict = bootcheck.boot_and_watch(files, workdir=os.path.join(base, "boot"),
                                           timeout=600)
        assert verdict.ok, verdict.reason + "\n" + verdict.console[-3000:]
        assert "console=ttyS0" in verdict.console or "ttyS0" in verdict.console

        # Every file of the source is in the image (minus the excludes).
        with mounted_image(files[1], 1) as data:
            problems = fidelity.compare(os.path.join(root, "mnt", "disk1"), data,
                                        excluded_patterns=["lost+found"],
                                        ignore_extra=["lost+found"], check_dir_mtime=False)
            assert problems == [], problems[:20]
        with mounted_image(files[0], 2) as system:
            problems = fidelity.compare(
                root, system, excluded_patterns=SYSTEM_EXCLUDED + ["boot/*", "lost+found"],
                ignore_extra=["lost+found", "boot/*", "mnt/disk1"], check_dir_mtime=False)
            left = unexplained(problems, root, system)
            assert left == [], left[:30]
            with open(os.path.join(system, "etc", "fstab")) as f:
                fstab = f.read()
            assert "/dev/sda" not in "\n".join(
                ln for ln in fstab.splitlines() if not ln.startswith("#"))
            assert "/mnt/disk1" in fstab
            assert os.path.exists(os.path.join(system, "etc", "fstab.pre-migration"))
