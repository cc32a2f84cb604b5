"""The demo's fake-aliyun mode end to end (image_build/dev/demo.py, `demo.sh --cloud
fake-aliyun`): go2aliyun-cloud launch through the real SDK against tests/fakecloud, a
real receiver started from the instance's user-data, migrate --sync-only and
--cutover, the receiver's verification boot (the one qemu boot of this test), the image
made in the fake cloud, cleanup. The default mode's whole run is test_local_provider's;
here: a demo stopped by SIGTERM while its appliance VM boots leaves nothing behind."""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from image_build.cloud.local import _alive
from image_build.dev import demo
from wire import runner

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_left_behind_names_only_what_a_migration_must_release():
    summary = {"vpcs": 0, "vswitches": 1, "security_groups": 0, "instances": 0,
               "disks": 2, "snapshots": 2, "images": 2}
    assert demo.left_behind(summary) == {"vswitches": 1, "disks": 2}
    assert demo.left_behind(dict(summary, vswitches=0, disks=0)) == {}


@pytest.mark.root
@pytest.mark.qemu
@pytest.mark.long(minutes=1.5)
def test_fake_aliyun_demo_makes_a_verified_image_and_leaves_nothing(tmp_path, capfd):
    work = str(tmp_path)
    result = demo.run_demo(work, cloud="fake-aliyun")
    out = capfd.readouterr().out
    assert result["rc"] == 0, out[-6000:]
    image_id = result["image_id"]
    image = result["cloud_image"]
    # the image exists in the fake cloud, made of the two target disks' snapshots
    assert image["ImageId"] == image_id and image_id.startswith("m-")
    assert (image["ImageName"], image["Status"]) == (demo.IMAGE_NAME, "Available")
    assert [(m["Device"], m["Size"]) for m in image["DiskDeviceMappings"][
        "DiskDeviceMapping"]] == [("/dev/xvda", "20"), ("/dev/xvdb", "20")]
    # the receiver's verification boot reached the login prompt
    assert result["verify"]["ok"] is True and result["verify"]["code"] == "verify.ok"
    # nothing of the migration is left in the cloud; the image's snapshots stay
    left = result["cloud_left"]
    assert demo.left_behind(left) == {} and left["snapshots"] == 2, left
    # what the user sees
    for n in range(1, 8):
        assert "[%d/7]" % n in out
    assert "Goto Aliyun Finished!" in out and image_id in out
    assert "verification boot: PASS" in out
    assert "nothing left in the fake cloud of this migration" in out
    (run,) = glob.glob(os.path.join(work, "run-*"))
    with open(os.path.join(run, "cloud-work", "cloud_state.json")) as f:
        state = json.load(f)
    assert state["token"] and state["token"] not in out
    assert state["instance_id"] in out
    # the server's work folder never held an AccessKey
    with open(os.path.join(run, "source-work", "user_config.json")) as f:
        assert json.load(f)["secret_key"] == ""
    # the target disk files are removed and no loop device is left on them
    assert not glob.glob(os.path.join(run, "target-*"))
    attached = runner.run(["losetup", "-a"]).stdout
    assert run not in attached


def _netns():
    return set(runner.run(["ip", "netns", "list"]).stdout.split())


def _loops_mounted_under(root):
    """The loop devices whose partitions are mounted at ``root`` or below it."""
    with open("/proc/mounts") as f:
        return {re.sub(r"p\d+$", "", line.split()[0]) for line in f
                if line.split()[1].startswith(root) and line.startswith("/dev/loop")}


def _backing_file(dev):
    return runner.run(["losetup", "--list", "--noheadings", "--output", "BACK-FILE", dev],
                      ok_codes=None).stdout.strip()


@pytest.mark.root
@pytest.mark.qemu
@pytest.mark.timeout(1800)
def test_a_terminated_demo_stops_its_vm_and_removes_namespaces_and_mounts(tmp_path):
    """`demo.sh` stopped with SIGTERM (a timeout, a service manager) while the launch
    boots the appliance: the launch command ends, qemu is stopped, the namespaces, the
    read-only mounts of the sample and their loop devices are gone; exit 143."""
    work = str(tmp_path)
    out_path = os.path.join(work, "demo.out")
    with open(out_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "image_build.dev.demo", "--work", work],
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                start_new_session=True)
    try:
        deadline = time.time() + 1500  # a cold appliance build included
        qemu_pid = None
        while qemu_pid is None:
            with open(out_path, errors="replace") as f:
                text = f.read()
            assert proc.poll() is None, text[-3000:]
            assert time.time() < deadline, text[-3000:]
            for pidfile in glob.glob(os.path.join(work, "run-*", "local-cloud", "instances",
                                                  "*", "qemu.pid")):
                with open(pidfile) as f:
                    qemu_pid = int(f.read().strip() or 0) or None
            time.sleep(1)
        assert _alive(qemu_pid)
        (root,) = re.findall(r"read-only, at (\S+)", text)
        loops = _loops_mounted_under(root)
        assert loops, root
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(180) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with open(out_path, errors="replace") as f:
        text = f.read()
    assert "[4/7]" in text and "[5/7]" not in text, text[-3000:]
    assert not _alive(qemu_pid)
    # only what this demo made is checked: other tests may run at the same time
    names = re.findall(r"\(ip netns exec (\S+)\)", text)
    assert len(names) == 2 and not set(names) & _netns(), (names, text[-3000:])
    with open("/proc/mounts") as f:
        assert root not in f.read()
    assert not os.path.exists(root)
    assert not [d for d in loops if "sample-server" in _backing_file(d)], loops
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _cmd(p).startswith(
        sys.executable) and "image_build.cli" in _cmd(p) and work in _cmd(p)]


def _cmd(pid):
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""
