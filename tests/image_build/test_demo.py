"""The demo's fake-aliyun mode end to end (image_build/demo.py, `demo.sh --cloud
fake-aliyun`): go2aliyun-cloud launch through the real SDK against tests/fakecloud, a
real receiver started from the instance's user-data, migrate --sync-only and
--cutover, the receiver's verification boot (the one qemu boot of this test), the image
made in the fake cloud, cleanup. The default mode's flow is test_end_to_end's."""

import glob
import json
import os

import pytest

from image_build import demo
from wire import runner


def test_left_behind_names_only_what_a_migration_must_release():
    summary = {"vpcs": 0, "vswitches": 1, "security_groups": 0, "instances": 0,
               "disks": 2, "snapshots": 2, "images": 2}
    assert demo.left_behind(summary) == {"vswitches": 1, "disks": 2}
    assert demo.left_behind(dict(summary, vswitches=0, disks=0)) == {}


@pytest.mark.root
@pytest.mark.qemu
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
