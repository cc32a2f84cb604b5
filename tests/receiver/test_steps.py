import os

import pytest

from receiver import steps
from wire import runner
from wire.errors import DiskError


def test_target_disks_in_ecs_order():
    result = {"devices": {"disk10": "/dev/vdk", "system": "/dev/vdb", "disk2": "/dev/vdd",
                          "disk1": "/dev/vdc"}}
    assert steps.target_disks_in_order(result) == ["/dev/vdb", "/dev/vdc", "/dev/vdd",
                                                   "/dev/vdk"]
    with pytest.raises(DiskError):
        steps.target_disks_in_order({"devices": {"disk1": "/dev/vdc"}})


def test_local_image_description_maps_disks_like_create_image():
    desc = steps.render_local_image_description(
        "m-1", {"image_name": "IMG_1", "platform": "Debian", "architecture": "x86_64"},
        {"arch": "x86_64"}, [("system", "/o/system.qcow2"), ("disk1", "/o/disk1.qcow2")],
        "BIOS")
    assert desc["image_name"] == "IMG_1" and desc["boot_mode"] == "BIOS"
    assert desc["disks"] == [
        {"module": "system", "file": "system.qcow2", "device": "/dev/xvda",
         "disk_type": "system", "format": "qcow2"},
        {"module": "disk1", "file": "disk1.qcow2", "device": "/dev/xvdb",
         "disk_type": "data", "format": "qcow2"}]


@pytest.mark.root
def test_image_source_reads_a_loop_devices_backing_file(tmp_path):
    path = str(tmp_path / "disk.img")
    with open(path, "wb") as f:
        f.truncate(1 << 20)
    dev = runner.run(["losetup", "-f", "--show", path]).stdout.strip()
    try:
        assert steps.image_source(dev) == os.path.realpath(path)
    finally:
        runner.run(["losetup", "-d", dev])
    assert steps.image_source("/dev/null") == "/dev/null"
