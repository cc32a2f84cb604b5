"""The ``local`` provider with every step real.

Build the receiver appliance (cached by its inputs), launch it with
``go2aliyun-cloud --provider local launch`` from the ``src`` namespace while qemu runs in
the ``ecs`` namespace (its ports forwarded on the ``ecs`` address), check the receiver
answers /healthz with the launcher's fingerprint and refuses a wrong token and a wrong
pin, and push the sample server (mounted read-only) into it with
``go2aliyun migrate --sync-only`` (which spends the real token) onto the virtio disks
the receiver found by disk id; then ``cleanup``. The fixture stops qemu and removes the
namespaces and mounts, even when the test fails.

Not here yet: ``--cutover`` + ``finish`` + boot of the image set. On this machine the
conversion's ``update-initramfs`` inside the TCG guest ran past its 900 s limit; the
host side of ``finish`` (snapshots, image set, verification boot and its failure with
the console) is covered by tests/image_build/cloud/test_contract.py and test_local.py.
"""

import json
import os
import re
import sys

import pytest

from image_build import appliance
from image_build.cloud.local import LocalCloud, _alive
from source_script import clientdata
from tests.helpers import sample
from tests.helpers.netns import netns_pair
from wire import runner

pytestmark = [pytest.mark.root, pytest.mark.qemu]

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


def _receiver_migration_id(console):
    """The migration id the receiver printed on the instance's serial console."""
    found = re.findall(r"go2aliyun receiver for migration (m-[0-9a-f-]+)", console)
    assert found, console[-2000:]
    return found[-1]


def _allocated(path):
    return os.stat(path).st_blocks * 512


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

    # `cleanup` (the same code as for aliyun) stops qemu and drops the bookkeeping
    pid = run.cloud._get("instances", inst.id)["pid"]
    r = run.cli("cleanup", "--yes")
    assert r.returncode == 0, _show(r)
    assert run.cloud.instance(inst.id) is None and not _alive(pid)
    state = run.cloud._read()
    assert not state["vpcs"] and not state["vswitches"] and not state["groups"]

