"""End to end on this host: the sample Debian 12 server (MBR, /boot, swap, fstab by
/dev/sdX names, a data disk at /mnt/disk1) is inventoried, its disks rebuilt on loop
devices by receiver.disks, its files copied with a local rsync, converted, and booted
under qemu on VIRTIO disks, as ECS has them. Unconverted, it would not boot there
(/dev/sda names, no serial console). A wrong root= must fail the verification.

The network push (source script -> receiver) is tested elsewhere; here the copy is a
local ``rsync -aHAXS --numeric-ids``.
"""

import contextlib
import json
import os
import re
import shutil
import time

import pytest

from receiver import blockdev
from receiver.convert import convert
from receiver.convert.chroot import sandbox
from receiver.disks import apply as disks_apply
from receiver.disks import probe
from source_script.inventory.collect import collect
from tests.helpers import sample
from tests.receiver.conftest import read_text, unmount_under
from wire import bootcheck, runner
from wire.errors import VerifyError
from wire.paths import target_path

pytestmark = [pytest.mark.root, pytest.mark.qemu]

SAMPLE_DIR = sample.SAMPLE_DIR
BOOT_TIMEOUT = 300


def _attach(stack, image, read_only=False):
    return stack.enter_context(blockdev.attached(image, read_only=read_only))


def _mount(stack, dev, where, ro=False):
    os.makedirs(where, exist_ok=True)
    runner.run(["mount"] + (["-o", "ro"] if ro else []) + [dev, where])
    stack.callback(runner.run, ["umount", "-l", where], ok_codes=None)


def _wait_detached(images, timeout=30.0):
    """A loop device still busy is detached later, with writes not yet in the image
    file: qemu must not read the image before that."""
    deadline = time.time() + timeout
    for image in images:
        while runner.run(["losetup", "-j", image]).stdout.strip():
            if time.time() > deadline:
                raise AssertionError("%s is still attached to a loop device" % image)
            time.sleep(0.2)
    os.sync()


def as_on_the_source(manifest, names):
    """The manifest as the source would report it running: the loop devices the sample
    is attached to here carry the names it has on its own machine (/dev/sda...)."""
    text = json.dumps(manifest)
    for loop, real in names.items():
        base = os.path.basename(loop)
        text = re.sub(r"/dev/%sp(\d+)\b" % base, r"/dev/%s\1" % real, text)
        text = re.sub(r"/dev/%s\b" % base, "/dev/" + real, text)
        text = re.sub(r'"%s"' % base, '"%s"' % real, text)
    return json.loads(text)


def build_converted(work):
    """Build the sample (cached), prepare target disk images in ``work``, copy, convert
    and release. Returns the images, the reports and the converted files."""
    _, desc = sample.ensure_sample()
    images = {"system": os.path.join(work, "system.img"),
              "disk1": os.path.join(work, "disk1.img")}
    report = {}
    with contextlib.ExitStack() as stack:
        # the source, read-only
        src = os.path.join(work, "source")
        names = {}
        srcdev = {}
        for module, d in desc["disks"].items():
            srcdev[module] = _attach(stack, os.path.join(SAMPLE_DIR, d["file"]), read_only=True)
            names[srcdev[module]] = os.path.basename(d["device"])
        for dev, where in ((srcdev["system"] + "p2", src),
                           (srcdev["system"] + "p1", src + "/boot"),
                           (srcdev["disk1"] + "p1", src + "/mnt/disk1")):
            _mount(stack, dev, where, ro=True)
        manifest = as_on_the_source(collect(src), names)
        assert {f["device"] for f in manifest["filesystems"]} == {
            "/dev/sda1", "/dev/sda2", "/dev/sdb1"}
        # the target disks, the size of the source's
        disks = {}
        for module, path in images.items():
            with open(path, "wb") as f:
                f.truncate(os.path.getsize(os.path.join(SAMPLE_DIR,
                                                        desc["disks"][module]["file"])))
            disks[module] = _attach(stack, path)
        plan = {"data_disks": [{"index": 1, "size_gib": 1, "src_path": "/mnt/disk1"}]}
        mount_root = os.path.join(work, "target")
        stack.callback(unmount_under, mount_root)  # whatever a failure left mounted
        result = disks_apply.prepare(manifest, plan, disks, mount_root)
        try:
            runner.run(["rsync", "-aHAXS", "--numeric-ids", "--exclude=/mnt/disk1/*",
                        src + "/", result["modules"]["system"] + "/"], timeout=900)
            runner.run(["rsync", "-aHAXS", "--numeric-ids", src + "/mnt/disk1/",
                        result["modules"]["disk1"] + "/"], timeout=300)
            report = convert(result["modules"]["system"], result, manifest,
                             disks["system"], "bios")
            fstab = read_text(target_path(result["modules"]["system"], "/etc/fstab"))
            grub_cfg = read_text(target_path(result["modules"]["system"], "/boot/grub/grub.cfg"))
            resume = read_text(target_path(result["modules"]["system"],
                                       "/etc/initramfs-tools/conf.d/resume"))
            # what the rebuilt initrds hold, listed by the copy's own lsinitramfs
            with sandbox(result["modules"]["system"], "bios", disks["system"]) as run:
                initrds = {k["version"]: run(["lsinitramfs",
                                              "/boot/initrd.img-%s" % k["version"]]).stdout
                           for k in report["kernels"]}
        finally:
            disks_apply.release(result)
        # the source's filesystems were attached here: every UUID collided and changed
        assert {c["kind"] for c in result["id_changes"]} >= {"filesystem"}
    _wait_detached(images.values())
    return {"images": images, "report": report, "result": result, "fstab": fstab,
            "grub_cfg": grub_cfg, "resume": resume, "initrds": initrds, "work": work,
            "manifest": manifest,
            "source": desc}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("g2a-convert"))
    yield build_converted(work)
    assert not [m for m in probe.read_mountinfo() if m["mountpoint"].startswith(work)]


def _uuid(result, mountpoint):
    return next(f["uuid"] for f in result["filesystems"] if f["mountpoint"] == mountpoint)


def test_the_rebuilt_initrd_holds_no_kept_original(converted):
    """initramfs-tools packs every file of conf/conf.d: a backup kept next to
    conf.d/resume would bring the source's RESUME= back into the initrd (issue 18)."""
    assert converted["initrds"]
    for version, listing in converted["initrds"].items():
        confd = sorted(ln.rsplit("/", 1)[1] for ln in listing.splitlines()
                       if re.search(r"(^|/)conf/conf\.d/[^/]+$", ln))
        assert confd == ["resume"], (version, confd)
        assert "pre-migration" not in listing, version


def test_converted_sample_boots_on_virtio_with_its_data_disk(converted, tmp_path):
    result, fstab, cfg = converted["result"], converted["fstab"], converted["grub_cfg"]
    root_uuid = _uuid(result, "/")
    # what conversion wrote, checked before paying for a boot
    assert re.search(r"^UUID=%s\s+/\s" % root_uuid, fstab, re.M)
    # the data disk: mounted at boot, and required (no nofail: a failure would stop the
    # boot in the emergency shell)
    assert re.search(r"^UUID=%s\s+/mnt/disk1\s+ext4\s+defaults\s" % _uuid(result, "/mnt/disk1"),
                     fstab, re.M)
    assert "/dev/sd" not in "".join(ln for ln in fstab.splitlines() if not ln.startswith("#"))
    assert "root=UUID=%s" % root_uuid in cfg
    report = converted["report"]
    assert report["family"] == "debian" and report["commands"][0] == [
        "grub-install", "--target=i386-pc", converted["result"]["devices"]["system"]]
    assert os.path.basename(report["commands"][-1][0]) == "update-grub"
    assert "console=ttyS0,115200n8" in cfg and "/dev/loop" not in cfg
    # hibernation resumes from the new swap: its UUID changed (it collided with the
    # attached source), on the kernel command line and in the initramfs config
    swap = next(f for f in result["filesystems"] if f["type"] == "swap")
    old = converted["source"]["resume"]
    assert old and swap["uuid"] and swap["uuid"] != old
    assert "resume=UUID=%s" % swap["uuid"] in cfg and old not in cfg
    assert converted["resume"].split() == ["RESUME=UUID=%s" % swap["uuid"]]
    assert re.search(r"^UUID=%s\s+none\s+swap\s" % swap["uuid"], fstab, re.M)
    t = time.time()
    verdict = bootcheck.require_boot(list(converted["images"].values()), firmware="bios",
                                     timeout=BOOT_TIMEOUT, workdir=str(tmp_path))
    print("boot took %.0fs" % (time.time() - t))
    assert verdict.ok and verdict.code == "verify.ok"
    # the data disk's mount unit ran (no nofail: a failure is the emergency shell)
    assert "You are in emergency mode" not in verdict.console


def test_wrong_root_fails_verification_with_the_console(converted, tmp_path):
    """The same disks with grub.cfg pointing root= at the source's /dev/sda2 (as if
    conversion had not fixed it): the initramfs cannot find root on virtio."""
    broken = str(tmp_path / "system-broken.img")
    runner.run(["cp", "--sparse=always", converted["images"]["system"], broken], timeout=300)
    root_uuid = _uuid(converted["result"], "/")
    with contextlib.ExitStack() as stack:
        dev = _attach(stack, broken)
        boot = str(tmp_path / "boot")
        _mount(stack, dev + "p1", boot)
        cfg = os.path.join(boot, "grub", "grub.cfg")
        text = read_text(cfg)
        assert "root=UUID=%s" % root_uuid in text
        with open(cfg, "w") as f:
            f.write(text.replace("root=UUID=%s" % root_uuid, "root=/dev/sda2"))
    _wait_detached([broken])
    with pytest.raises(VerifyError) as e:
        bootcheck.require_boot([broken, converted["images"]["disk1"]], firmware="bios",
                               timeout=BOOT_TIMEOUT, workdir=str(tmp_path / "verify"))
    assert e.value.code != "verify.ok"
    assert e.value.code in ("verify.initramfs_shell", "verify.emergency_shell")
    tail = e.value.details["console_tail"]
    assert "/dev/sda2" in tail
    shutil.rmtree(str(tmp_path / "verify"), ignore_errors=True)
