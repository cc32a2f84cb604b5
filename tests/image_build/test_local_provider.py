"""The demo's default mode (``bash image_build/dev/demo.sh``: image_build/dev/demo.py
``run_demo(cloud="local")``) with assertions: the ``local`` provider's whole cycle with
every step real.

The demo builds (or takes from its cache) the sample server and the receiver appliance,
launches the appliance with ``go2aliyun-cloud --provider local launch`` from the ``src``
namespace while qemu runs in ``ecs`` (ports forwarded on the ``ecs`` address), pushes
the sample server (mounted read-only) with ``go2aliyun migrate --sync-only`` (which
spends the real token) and ``--cutover``; the receiver inside the VM converts the copy
(update-initramfs, grub-install, update-grub under TCG), unmounts and syncs the disks
and hands them over; ``go2aliyun-cloud --provider local finish`` snapshots the disk
files, writes the image set and boots it on the host (VERIFYING by the provider) to a
login prompt with the data disk mounted, then releases the instance; ``cleanup`` drops
the rest. Observed on the way (the demo's ``observe`` hook): the receiver answers with
the launcher's fingerprint and refuses a wrong token and a wrong pin; after the cutover,
the receiver's own state and log are read from the running VM's disk. Afterwards every
file of the source is checked in the image, byte for byte with its metadata. The demo
stops qemu and removes the namespaces and mounts, even when it fails.
"""

import glob
import json
import os
import re
import sys

import pytest

from image_build.cloud.local import IMAGE_FILE, VERIFY_CONSOLE, LocalCloud, _alive
from image_build.dev import demo
from tests.helpers import e2e, sample
from tests.helpers.appliance_vm import chroot_command_times
from tests.helpers.e2e import PROBE, mounted_image
from wire import clientdata

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _receiver_migration_id(console):
    """The migration id the receiver printed on the instance's serial console."""
    found = re.findall(r"go2aliyun receiver for migration (m-[0-9a-f-]+)", console)
    assert found, console[-2000:]
    return found[-1]


def test_chroot_command_times_from_a_worker_log():
    with open(os.path.join(REPO, "tests", "data", "local_provider", "worker.log")) as f:
        times = chroot_command_times(f.read())
    assert times == [("grub-install", 4.3), ("update-initramfs", 503.8), ("update-grub", 15.1)]


class Observer(object):
    """The demo's ``observe`` hook: what the test looks at while the VM runs."""

    GUEST_FILES = ("/var/lib/go2aliyun/migration.json", "/var/lib/go2aliyun/logs/worker.log")

    def __init__(self):
        self.seen = {}

    def __call__(self, point, info):
        net, launched = info["net"], info["launched"]
        self.seen[point] = {"token": launched["token"]}
        if point == "launched":
            r = net.run(net.src, [sys.executable, "-c", PROBE, net.ecs_ip,
                                  launched["fingerprint"]],
                        ok_codes=None, timeout=120, cwd=REPO, env={"PYTHONPATH": REPO})
            self.seen[point]["probe"] = (r.returncode, r.stdout, r.stderr[-3000:])
        elif point == "converted":
            rec = LocalCloud(info["local_dir"])._get("instances", info["instance_id"])
            self.seen[point]["pid"] = rec["pid"]
            # the appliance's own disk, read while it runs (the receiver synced)
            files = {}
            with mounted_image(rec["disks"][0]["file"], 1, in_use=True) as mnt:
                for path in self.GUEST_FILES:
                    with open(os.path.join(mnt, path.lstrip("/")), errors="replace") as f:
                        files[path] = f.read()
            self.seen[point]["guest"] = files


@pytest.mark.root
@pytest.mark.qemu
@pytest.mark.long(minutes=13)
@pytest.mark.timeout(3000)
def test_demo_default_mode_migrates_into_the_appliance_vm_and_the_image_boots(
        tmp_path, capfd):
    observer = Observer()
    result = demo.run_demo(str(tmp_path), cloud="local", observe=observer)
    out, err = capfd.readouterr()
    print(out[-5000:])
    assert result["rc"] == 0, out[-6000:] + "\nstderr:\n" + err[-4000:]

    # what the user sees; the token only in cloud_state.json, never printed
    for n in range(1, 8):
        assert "[%d/7]" % n in out
    assert "Goto Aliyun Finished!" in out and result["image"] in out
    assert "boot: PASS" in out
    token = observer.seen["launched"]["token"]
    assert token and token not in out

    # the receiver inside answered with the launcher's fingerprint, refused a wrong
    # token and a wrong pin (the right token was spent by `go2aliyun migrate`)
    rc, stdout, stderr = observer.seen["launched"]["probe"]
    assert rc == 0, stderr
    assert json.loads(stdout) == {"healthz": {"status": "ok"},
                                  "wrong_token": "auth.token_invalid",
                                  "unproven": "auth.receiver_unproven",
                                  "other_pin": "auth.fingerprint_mismatch"}
    (console_log,) = glob.glob(os.path.join(result["local_dir"], "logs",
                                            result["instance_id"] + "*console*"))
    with open(console_log, errors="replace") as f:
        assert clientdata.load(result["workdir"])["migration_id"] == \
            _receiver_migration_id(f.read())

    # the receiver converted inside the VM and handed the disks to the host
    guest = observer.seen["converted"]["guest"]
    doc = json.loads(guest["/var/lib/go2aliyun/migration.json"])
    assert doc["state"] in ("IMAGE_READY", "RELEASED"), doc
    assert doc["image"]["by"] == "host" and len(doc["image"]["disks"]) == 2, doc["image"]
    with open(os.path.join(str(tmp_path), "guest-worker.log"), "w") as f:
        f.write(guest["/var/lib/go2aliyun/logs/worker.log"])  # kept for a look afterwards
    times = chroot_command_times(guest["/var/lib/go2aliyun/logs/worker.log"])
    print("conversion commands in the guest (s):", times)
    assert [name for name, _ in times] == ["grub-install", "update-initramfs", "update-grub"]

    # finish: the image set, booted to a login prompt with the data disk mounted
    image = result["image"]
    with open(os.path.join(image, IMAGE_FILE)) as f:
        desc = json.load(f)
    assert [(d["module"], d["device"]) for d in desc["disks"]] == [
        ("system", "/dev/xvda"), ("disk1", "/dev/xvdb")]
    files = [os.path.join(image, d["file"]) for d in desc["disks"]]
    assert all(os.path.getsize(f) > 0 for f in files)
    assert desc["verification"]["ok"] is True, desc["verification"]
    assert desc["verification"]["code"] == "verify.ok"
    with open(os.path.join(image, VERIFY_CONSOLE), errors="replace") as f:
        console = f.read()
    assert "Debian GNU/Linux 12 sample-server ttyS0" in console, console[-3000:]
    assert console.rstrip().endswith("login:"), console[-3000:]

    # every file of the source in the image; the data disk's fstab entry must mount
    # (the console is `quiet`: a failed mount would have been an emergency shell)
    def fstab_disk1(system, data):
        with open(os.path.join(system, "etc", "fstab")) as f:
            fstab = [ln.split() for ln in f if ln.strip() and not ln.startswith("#")]
        disk1 = [e for e in fstab if e[1] == "/mnt/disk1"]
        assert len(disk1) == 1 and disk1[0][0].startswith("UUID="), fstab
        assert "nofail" not in disk1[0][3], disk1

    with sample.mounted_readonly() as root:
        e2e.check_image_files(files, root, os.path.join(root, "mnt", "disk1"),
                              also=fstab_disk1)

    # finish released the instance (its qemu is gone); cleanup dropped the network;
    # the snapshots (raw copies, GBs) are not kept without --keep
    assert not _alive(observer.seen["converted"]["pid"])
    left = result["cloud_left"]
    assert all(i.get("deleted") for i in left["instances"].values()), left["instances"]
    assert not left["vpcs"] and not left["vswitches"] and not left["groups"], left
    assert not os.path.exists(os.path.join(result["local_dir"], "snapshots"))
