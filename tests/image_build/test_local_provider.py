"""The ``local`` provider's whole cycle, every step real.

Build the receiver appliance (cached by its inputs), launch it with
``go2aliyun-cloud --provider local launch`` from the ``src`` namespace while qemu runs in
the ``ecs`` namespace (its ports forwarded on the ``ecs`` address), check the receiver
answers /healthz with the launcher's fingerprint and refuses a wrong token, migrate the
sample server (mounted read-only) into it with ``go2aliyun migrate --cutover`` (which
spends the real token), then ``go2aliyun-cloud --provider local finish`` on the host:
snapshots of the disk files, the image set, and a verification boot of it to a login
prompt. ``cleanup`` and the fixtures stop qemu and remove namespaces and mounts, even
when the test fails.
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


@pytest.fixture
def world(tmp_path):
    work = str(tmp_path / "work")
    os.makedirs(os.path.join(work, "Excludes"))
    with open(os.path.join(work, "user_config.json"), "w") as f:
        json.dump(CONFIG, f)
    local_dir = str(tmp_path / "local")
    with netns_pair() as net:
        try:
            yield net, work, local_dir
        finally:
            # Whatever happened: no qemu of ours may outlive the test.
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


def cloud_cli(net, work, local_dir, *args, ns=None, timeout=600):
    argv = [sys.executable, "-m", "image_build.cli", "--workdir", work, "--provider", "local",
            "--local-dir", local_dir, "--listen", net.ecs_ip, "--netns", net.ecs,
            "--poll-interval", "1"] + list(args)
    if ns:
        return net.run(ns, argv, ok_codes=None, timeout=timeout, cwd=REPO,
                       env={"PYTHONPATH": REPO})
    from wire import runner

    return runner.run(argv, ok_codes=None, timeout=timeout, cwd=REPO,
                      env={"PYTHONPATH": REPO})


def test_local_provider_launch_migrate_image_boots(world, appliance_image):
    net, work, local_dir = world
    sample.ensure_sample()

    # launch from the source's side; qemu runs in `ecs` with 8080/8703 on its address
    r = cloud_cli(net, work, local_dir, "launch", "--receiver-image", appliance_image,
                  "--source-cidr", net.src_ip, "--json", ns=net.src, timeout=900)
    assert r.returncode == 0, _show(r)
    launched = json.loads(r.stdout)
    assert launched["address"] == net.ecs_ip
    cloud = LocalCloud(local_dir)
    inst = cloud.instance(launched["instance_id"])
    assert inst.status == "Running"
    pid = cloud._get("instances", inst.id)["pid"]
    ids = [d.id for d in cloud.instance_disks(inst.id)]
    assert len(ids) == 3 and all(len(i) == 20 for i in ids)

    r = net.run(net.src, [sys.executable, "-c", PROBE, net.ecs_ip, launched["fingerprint"]],
                ok_codes=None, timeout=120, cwd=REPO, env={"PYTHONPATH": REPO})
    assert r.returncode == 0, _show(r)
    probe = json.loads(r.stdout)
    assert probe == {"healthz": {"status": "ok"}, "wrong_token": "auth.token_invalid",
                     "other_pin": "auth.fingerprint_mismatch"}, probe

    # the source migrates the sample server into the appliance: a first pass (spends the
    # token; the receiver finds its target disks by id and lays them out), then cutover
    disk_files = {d["name"]: d["file"] for d in cloud._get("instances", inst.id)["disks"]}
    with sample.mounted_readonly() as root:
        def migrate(flag):
            return net.run(net.src, [sys.executable, "-m", "source_script.cli", "migrate",
                                     "--workdir", work, "--root", root, "--receiver",
                                     net.ecs_ip, "--fingerprint", launched["fingerprint"],
                                     "--yes", "--no-check", flag],
                           env={"GO2ALIYUN_TOKEN": launched["token"], "PYTHONPATH": REPO},
                           ok_codes=None, timeout=1500, cwd=REPO)

        r = migrate("--sync-only")
        assert r.returncode == 0, _show(r) + "\nconsole:\n" + cloud.console(inst.id)[-3000:]
        data = clientdata.load(work)
        assert data["migration_id"] == _receiver_migration_id(cloud.console(inst.id))
        assert _allocated(disk_files["go2aliyun-target-system"]) > 300 * 1024 * 1024
        r = migrate("--cutover")
    assert r.returncode == 0, _show(r) + "\nconsole:\n" + cloud.console(inst.id)[-3000:]
    data = clientdata.load(work)
    assert data["image"]["by"] == "host"

    # the host snapshots the disk files, assembles the image set and boots it
    r = cloud_cli(net, work, local_dir, "finish", timeout=1200)
    assert r.returncode == 0, _show(r)
    folder = os.path.join(local_dir, "images", IMAGE_NAME)
    with open(os.path.join(folder, "image.json")) as f:
        desc = json.load(f)
    assert [d["file"] for d in desc["disks"]] == ["system.qcow2", "disk1.qcow2"]
    assert all(os.path.getsize(os.path.join(folder, d["file"])) > 0 for d in desc["disks"])
    assert desc["verification"]["ok"] is True, desc["verification"]
    assert "login:" in desc["verification"]["console_tail"]
    assert not _alive(pid)  # finish released the instance

    r = cloud_cli(net, work, local_dir, "cleanup", "--yes")
    assert r.returncode == 0, _show(r)
    state = LocalCloud(local_dir)._read()
    assert not state["vpcs"] and not state["vswitches"] and not state["groups"]
    assert os.path.exists(os.path.join(folder, "image.json"))  # the image is kept
