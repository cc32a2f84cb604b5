"""A real ``go2aliyun-cloud`` process SIGKILLed while one of its create (or delete) calls is
in flight, then ``cleanup``: nothing billable is left, within two minutes.

The fake cloud answers the chosen call late (``world.hold``): the request is in, the
process is killed, then the call does its work, so the resource exists and its id never
reached ``cloud_state.json``. Only the go2aliyun:migration tag (and the "in flight" mark
the process wrote before the call) lead cleanup to it.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from image_build.cli import main
from tests.fakecloud.fixtures import cloud_cli_args, cloud_workdir
from wire import runner

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIMIT = 120  # seconds, from the kill to the end of cleanup


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    return cloud_workdir(tmp_path, monkeypatch)


cli_args = cloud_cli_args


def command(fake, name):
    if name == "launch":
        return ["launch", "--receiver-image", fake.appliance_image, "--source-cidr",
                "198.51.100.4", "--no-wait-receiver"]
    return [name] + (["--yes"] if name == "cleanup" else [])


def left_billable(world):
    """What would still cost money: every instance, disk, VPC, vSwitch and security group,
    and each snapshot no image uses."""
    with world.lock:
        used = {m["SnapshotId"] for img in world.images.values()
                for m in img["DiskDeviceMappings"]["DiskDeviceMapping"]}
        left = {"instances": sorted(world.instances), "disks": sorted(world.disks),
                "vpcs": sorted(world.vpcs), "vswitches": sorted(world.vswitches),
                "security_groups": sorted(world.groups),
                "snapshots": sorted(s for s in world.snapshots if s not in used)}
    return {k: v for k, v in left.items() if v}


def kill_while_in_flight(fake, workdir, name, action):
    """Run ``go2aliyun-cloud NAME`` as a real process, SIGKILL it once ``action`` is in
    flight, let the call finish in the cloud; returns when it has."""
    hold = fake.world.hold(action)
    proc = runner.start([sys.executable, "-m", "image_build.cli"] + cli_args(
        fake, workdir, *command(fake, name)), cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        assert hold.arrived.wait(60), "%s never called %s" % (name, action)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        hold.release()
    assert hold.done.wait(30)
    return time.monotonic()


CASES = [("launch", "CreateVpc", "vpc"), ("launch", "CreateVSwitch", "vswitch"),
         ("launch", "CreateSecurityGroup", "security_group"),
         ("launch", "RunInstances", "instance"),
         ("finish", "CreateSnapshot", "snapshot:"), ("finish", "CreateImage", "image"),
         ("cleanup", "DeleteInstance", None), ("cleanup", "DeleteVSwitch", None)]


@pytest.mark.commands
@pytest.mark.parametrize("name,action,in_flight", CASES,
                         ids=["%s-%s" % (c[0], c[1]) for c in CASES])
def test_killed_mid_call_then_cleanup_leaves_nothing_billable(fake, workdir, capsys, name,
                                                               action, in_flight):
    if name != "launch":
        assert main(cli_args(fake, workdir, *command(fake, "launch"))) == 0
        capsys.readouterr()
    killed_at = kill_while_in_flight(fake, workdir, name, action)
    state = json.loads((workdir / "cloud_state.json").read_text())
    if in_flight:  # the dead process had written "create in flight" before the call
        assert any(k.startswith(in_flight) for k in state.get("in_flight", {})), state
    assert left_billable(fake.world), "the crash left nothing: the test tests nothing"

    assert main(cli_args(fake, workdir, "cleanup", "--yes")) == 0
    elapsed = time.monotonic() - killed_at
    out = capsys.readouterr().out
    assert left_billable(fake.world) == {}, out
    with capsys.disabled():
        print("\n%s killed during %s: cleanup done %.1fs after the kill" % (name, action,
                                                                          elapsed))
    assert elapsed < LIMIT, "cleanup took %.0fs" % elapsed
    # what it says is what happened: every deleted id is gone, every kept one is there
    for line in out.splitlines():
        kind, res_id = line.split()[1:3]
        if line.startswith("kept: "):
            assert kind in ("image", "snapshot")
            assert res_id in fake.world.images or res_id in fake.world.snapshots
    if action == "CreateImage":  # the image the dead finish asked for is kept, and said so
        image_id = [i for i, img in fake.world.images.items() if img["ImageName"] ==
                    "web01-migrated"][0]
        assert "kept: image %s" % image_id in out
    # a second cleanup finds nothing more to do
    assert main(cli_args(fake, workdir, "cleanup", "--yes")) == 0
    assert "deleted:" not in capsys.readouterr().out
