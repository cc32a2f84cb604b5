"""The ``local`` provider with every step real, the whole cycle.

Build the receiver appliance (cached by its inputs), launch it with
``go2aliyun-cloud --provider local launch`` from the ``src`` namespace while qemu runs in
the ``ecs`` namespace (its ports forwarded on the ``ecs`` address), check the receiver
answers /healthz with the launcher's fingerprint and refuses a wrong token and a wrong
pin, and push the sample server (mounted read-only) into it with
``go2aliyun migrate --sync-only`` (which spends the real token) onto the virtio disks
the receiver found by disk id. Then ``--cutover``: the receiver inside the VM converts
the copy (update-initramfs, grub-install, update-grub under TCG), unmounts and syncs the
disks and hands them to the host; ``go2aliyun-cloud --provider local finish`` copies
the disk files (snapshots), writes the image set and boots it on the host (VERIFYING by
the provider) to a login prompt with the data disk mounted, then releases the instance;
``cleanup`` drops the rest. The fixture stops qemu and removes the namespaces and
mounts, even when a test fails.
"""

import datetime
import json
import os
import re
import shutil
import sys
import time

import pytest

from image_build import appliance
from image_build.cloud.local import IMAGE_FILE, VERIFY_CONSOLE, LocalCloud, _alive
from source_script import clientdata
from tests.helpers import sample
from tests.helpers.e2e import mounted_image
from tests.helpers.netns import netns_pair
from wire import runner

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE_NAME = "g2a-local-e2e"
CONFIG = {"access_id": "", "secret_key": "", "region_id": "", "image_name": IMAGE_NAME,
          "system_disk_size": 20, "platform": "Debian", "architecture": "x86_64",
          "bandwidth_limit": 0,
          "data_disks": [{"data_disk_index": 1, "data_disk_size": 20,
                          "src_path": "/mnt/disk1"}]}

# Runs in `src`: the receiver answers with the pinned certificate and refuses a wrong
# token (the right one is spent by `go2aliyun migrate`).
PROBE = r"""
import json, sys, tempfile
from source_script import session
from wire.errors import Go2AliyunError
address, fingerprint = sys.argv[1], sys.argv[2]
out = {"healthz": session.Client(address, fingerprint).healthz()}
try:
    session.open_session(address, fingerprint, "not-the-token", tempfile.mkdtemp())
    out["wrong_token"] = "accepted"
except Go2AliyunError as e:
    out["wrong_token"] = e.code
try:
    session.Client(address, "00" * 32).healthz()
    out["other_pin"] = "accepted"
except Go2AliyunError as e:
    out["other_pin"] = e.code
print(json.dumps(out))
"""


def _show(r):
    return "exit %s\nstdout:\n%s\nstderr:\n%s" % (r.returncode, r.stdout[-4000:],
                                                  r.stderr[-4000:])


@pytest.fixture(scope="module")
def appliance_image():
    return appliance.build(progress=lambda m: print("build-image:", m))


class Run(object):
    """One launched appliance, shared by the tests of this module (a TCG boot is the
    expensive part): namespaces, work folder, local provider state, launch result."""

    def __init__(self, net, work, local_dir, launched):
        self.net = net
        self.work = work
        self.local_dir = local_dir
        self.launched = launched
        self.cloud = LocalCloud(local_dir)

    @property
    def instance_id(self):
        return self.launched["instance_id"]

    def console(self):
        return self.cloud.console(self.instance_id)[-3000:]

    def cli(self, *args, ns=None, timeout=600):
        argv = [sys.executable, "-m", "image_build.cli", "--workdir", self.work,
                "--provider", "local", "--local-dir", self.local_dir, "--listen",
                self.net.ecs_ip, "--netns", self.net.ecs, "--poll-interval", "1"] + list(args)
        if ns:
            return self.net.run(ns, argv, ok_codes=None, timeout=timeout, cwd=REPO,
                                env={"PYTHONPATH": REPO})
        return runner.run(argv, ok_codes=None, timeout=timeout, cwd=REPO,
                          env={"PYTHONPATH": REPO})

    def migrate(self, root, flag):
        return self.net.run(self.net.src, [
            sys.executable, "-m", "source_script.cli", "migrate", "--workdir", self.work,
            "--root", root, "--receiver", self.net.ecs_ip, "--fingerprint",
            self.launched["fingerprint"], "--yes", "--no-check", flag],
            env={"GO2ALIYUN_TOKEN": self.launched["token"], "PYTHONPATH": REPO},
            ok_codes=None, timeout=1800, cwd=REPO)


@pytest.fixture(scope="module")
def run(tmp_path_factory, appliance_image):
    """Launch from the source's side (`src`); qemu runs in `ecs` with 8080/8703 forwarded
    on its address. Whatever happens, no qemu of ours outlives the module."""
    base = str(tmp_path_factory.mktemp("local-provider"))
    work = os.path.join(base, "work")
    os.makedirs(os.path.join(work, "Excludes"))
    with open(os.path.join(work, "user_config.json"), "w") as f:
        json.dump(CONFIG, f)
    local_dir = os.path.join(base, "local")
    sample.ensure_sample()
    with netns_pair() as net:
        try:
            r = Run(net, work, local_dir, None)
            res = r.cli("launch", "--receiver-image", appliance_image, "--source-cidr",
                        net.src_ip, "--json", ns=net.src, timeout=900)
            assert res.returncode == 0, _show(res)
            r.launched = json.loads(res.stdout)
            yield r
        finally:
            if os.path.isdir(local_dir):
                cloud = LocalCloud(local_dir)
                for inst_id in list(cloud._read()["instances"]):
                    cloud.delete_instance(inst_id)
                # the snapshots are raw copies of the target disks (GBs): not kept
                shutil.rmtree(os.path.join(local_dir, "snapshots"), ignore_errors=True)


def _receiver_migration_id(console):
    """The migration id the receiver printed on the instance's serial console."""
    found = re.findall(r"go2aliyun receiver for migration (m-[0-9a-f-]+)", console)
    assert found, console[-2000:]
    return found[-1]


def _allocated(path):
    return os.stat(path).st_blocks * 512


@pytest.mark.root
@pytest.mark.qemu
@pytest.mark.timeout(1800)
def test_launched_appliance_answers_and_receives_the_sample(run):
    """The receiver inside answers with the launcher's fingerprint, refuses a wrong token,
    and a first pass of `go2aliyun migrate` (which spends the real token) lands on the
    virtio disks the receiver found by disk id; `cleanup` releases it all."""
    assert run.launched["address"] == run.net.ecs_ip
    inst = run.cloud.instance(run.instance_id)
    assert inst.status == "Running"
    ids = [d.id for d in run.cloud.instance_disks(inst.id)]
    assert len(ids) == 3 and all(len(i) == 20 for i in ids)

    r = run.net.run(run.net.src, [sys.executable, "-c", PROBE, run.net.ecs_ip,
                                  run.launched["fingerprint"]],
                    ok_codes=None, timeout=120, cwd=REPO, env={"PYTHONPATH": REPO})
    assert r.returncode == 0, _show(r)
    assert json.loads(r.stdout) == {"healthz": {"status": "ok"},
                                    "wrong_token": "auth.token_invalid",
                                    "other_pin": "auth.fingerprint_mismatch"}

    files = {d["name"]: d["file"] for d in run.cloud._get("instances", inst.id)["disks"]}
    with sample.mounted_readonly() as root:
        r = run.migrate(root, "--sync-only")
    assert r.returncode == 0, _show(r) + "\nconsole:\n" + run.console()
    assert clientdata.load(run.work)["migration_id"] == _receiver_migration_id(
        run.cloud.console(inst.id))
    assert _allocated(files["go2aliyun-target-system"]) > 300 * 1024 * 1024
    assert _allocated(files["go2aliyun-target-disk1"]) > 0



CHROOT_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \S+ "
                         r"receiver\.convert\.apply: in the chroot: (\S+)")
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")
RUNNER_CHROOT = re.compile(r"^\S+ \S+ DEBUG wire\.runner: run: chroot ")


def chroot_command_times(log_text):
    """[(command name, seconds)] of the conversion's chroot commands in a receiver
    worker.log: each lasts until the next line with a time stamp other than the
    runner's own ``run: chroot ...`` (pure)."""
    def when(m):
        t = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
        return t.timestamp() + int(m.group(2)) / 1000.0

    out, current = [], None
    for line in log_text.splitlines():
        stamp = STAMP.match(line)
        if not stamp or RUNNER_CHROOT.match(line):
            continue
        if current:
            out.append((current[0], round(when(stamp) - current[1], 1)))
            current = None
        m = CHROOT_LINE.match(line)
        if m:
            current = (os.path.basename(m.group(3)), when(m))
    return out


def test_chroot_command_times_from_a_worker_log():
    with open(os.path.join(REPO, "tests", "data", "local_provider", "worker.log")) as f:
        times = chroot_command_times(f.read())
    assert times == [("grub-install", 4.3), ("update-initramfs", 503.8), ("update-grub", 15.1)]


def _guest_files(run, paths):
    """Files of the appliance's own disk, read while it runs (the receiver synced)."""
    disk = run.cloud._get("instances", run.instance_id)["disks"][0]["file"]
    out = {}
    with mounted_image(disk, 1, in_use=True) as mnt:
        for path in paths:
            full = os.path.join(mnt, path.lstrip("/"))
            with open(full, errors="replace") as f:
                out[path] = f.read()
    return out


@pytest.mark.root
@pytest.mark.qemu
@pytest.mark.timeout(2700)
def test_cutover_converts_in_the_vm_and_finish_makes_an_image_set_that_boots(run):
    """`--cutover`: the receiver inside converts the copy and hands the disks over;
    `finish` on the host snapshots them, writes the image set, boots it to a login prompt
    with /mnt/disk1 mounted, and releases the instance; `cleanup` leaves nothing."""
    started = time.time()
    with sample.mounted_readonly() as root:
        r = run.migrate(root, "--cutover")
    assert r.returncode == 0, _show(r) + "\nconsole:\n" + run.console()
    migrated = time.time()

    guest = _guest_files(run, ["/var/lib/go2aliyun/migration.json",
                               "/var/lib/go2aliyun/logs/worker.log"])
    doc = json.loads(guest["/var/lib/go2aliyun/migration.json"])
    assert doc["state"] in ("IMAGE_READY", "RELEASED"), doc
    assert doc["image"]["by"] == "host" and len(doc["image"]["disks"]) == 2, doc["image"]
    with open(os.path.join(os.path.dirname(run.work), "guest-worker.log"), "w") as f:
        f.write(guest["/var/lib/go2aliyun/logs/worker.log"])  # kept for a look afterwards
    times = chroot_command_times(guest["/var/lib/go2aliyun/logs/worker.log"])
    print("conversion commands in the guest (s):", times)
    assert [name for name, _ in times] == ["grub-install", "update-initramfs", "update-grub"]

    inst = run.instance_id
    pid = run.cloud._get("instances", inst)["pid"]
    r = run.cli("finish", timeout=1800)
    assert r.returncode == 0, _show(r)
    finished = time.time()
    print("cutover + conversion %.0f s, finish %.0f s" % (migrated - started,
                                                          finished - migrated))

    image = os.path.join(run.local_dir, "images", IMAGE_NAME)
    with open(os.path.join(image, IMAGE_FILE)) as f:
        desc = json.load(f)
    assert [(d["module"], d["device"]) for d in desc["disks"]] == [
        ("system", "/dev/xvda"), ("disk1", "/dev/xvdb")]
    assert all(os.path.getsize(os.path.join(image, d["file"])) > 0 for d in desc["disks"])
    assert desc["verification"]["ok"] is True, desc["verification"]
    assert desc["verification"]["code"] == "verify.ok"
    with open(os.path.join(image, VERIFY_CONSOLE), errors="replace") as f:
        console = f.read()
    assert "Debian GNU/Linux 12 sample-server ttyS0" in console, console[-3000:]
    assert console.rstrip().endswith("login:"), console[-3000:]
    # The console is `quiet`: the data disk's mount shows as no emergency shell before the
    # login prompt (bootcheck), for an fstab entry that must mount (no nofail).
    with mounted_image(os.path.join(image, "system.qcow2"), 2) as mnt, \
            open(os.path.join(mnt, "etc", "fstab")) as f:
        fstab = [line.split() for line in f if line.strip() and not line.startswith("#")]
    disk1 = [e for e in fstab if e[1] == "/mnt/disk1"]
    assert len(disk1) == 1 and disk1[0][0].startswith("UUID="), fstab
    assert "nofail" not in disk1[0][3], disk1

    # finish released the instance; `cleanup` drops the network bookkeeping
    assert run.cloud.instance(inst) is None and not _alive(pid)
    r = run.cli("cleanup", "--yes")
    assert r.returncode == 0, _show(r)
    state = run.cloud._read()
    assert not state["vpcs"] and not state["vswitches"] and not state["groups"]
