"""The pure parts of image_build/finish.py: which disk is which target disk, and the
order cleanup releases things in."""

import pytest

from image_build.cloud import Disk
from image_build.finish import plan_cleanup, plan_target_disks
from image_build.launch import LaunchSettings, target_layout
from wire.errors import CloudError

LAYOUT = target_layout(LaunchSettings(
    "cn-hangzhou", "img", "m-1", source_cidr="203.0.113.7", system_disk_size=40,
    data_disks=[(1, 100), (2, 20)]))
OWN_SYSTEM = Disk("d-own", "system", "/dev/xvda", 40)


def plan(disks, **kw):
    return [(t.disk_id, t.role, t.index, t.size_gib)
            for t in plan_target_disks("i-1", [OWN_SYSTEM] + disks, **kw)]


def test_by_name_whatever_the_device_order():
    disks = [Disk("d-b", "data", "/dev/xvdb", 20, "go2aliyun-target-disk2"),
             Disk("d-c", "data", "/dev/xvdc", 40, "go2aliyun-target-system"),
             Disk("d-d", "data", "/dev/xvdd", 100, "go2aliyun-target-disk1")]
    expected = [("d-c", "system", 0, 40), ("d-d", "data", 1, 100), ("d-b", "data", 2, 20)]
    assert plan(disks, layout=LAYOUT) == expected
    assert plan(disks) == expected
    assert plan(disks, names=["go2aliyun-target-system", "go2aliyun-target-disk1",
                              "go2aliyun-target-disk2"]) == expected


def test_no_names_no_devices_by_the_sizes_launch_asked_for():
    disks = [Disk("d-b", "data", "", 20), Disk("d-c", "data", "", 40),
             Disk("d-d", "data", "", 100)]
    assert plan(disks, layout=LAYOUT) == [("d-c", "system", 0, 40), ("d-d", "data", 1, 100),
                                          ("d-b", "data", 2, 20)]


def test_equal_sizes_fall_back_to_devices_and_else_refuse():
    layout = [dict(LAYOUT[0]), dict(LAYOUT[1], size_gib=40)]
    with_devices = [Disk("d-c", "data", "/dev/xvdc", 40), Disk("d-b", "data", "/dev/xvdb", 40)]
    assert plan(with_devices, layout=layout) == [("d-b", "system", 0, 40),
                                                 ("d-c", "data", 1, 40)]
    for disks in ([Disk("d-c", "data", "", 40), Disk("d-b", "data", "", 40)],
                  [Disk("d-b", "data", "", 40)]):
        with pytest.raises(CloudError) as e:
            plan(disks, layout=layout)
        assert e.value.code == "cloud.target_disk_unproven"


def test_hand_started_instance_uses_device_order_or_refuses():
    disks = [Disk("d-c", "data", "/dev/xvdc", 50), Disk("d-b", "data", "/dev/xvdb", 30)]
    assert plan(disks) == [("d-b", "system", 0, 30), ("d-c", "data", 1, 50)]
    with pytest.raises(CloudError) as e:
        plan([Disk("d-c", "data", "", 50), Disk("d-b", "data", "", 30)])
    assert e.value.code == "cloud.target_disk_unproven"
    with pytest.raises(CloudError) as e:
        plan([])
    assert e.value.code == "cloud.target_disk_missing"


def _found(**kinds):
    out = {k: {} for k in ("instances", "disks", "images", "snapshots", "security_groups",
                           "vswitches", "vpcs")}
    for kind, records in kinds.items():
        out[kind] = {r["id"]: r for r in records}
    return out


def test_cleanup_order_follows_the_dependencies_and_keeps_the_image():
    steps, kept = plan_cleanup(_found(
        vpcs=[{"id": "vpc-1"}], vswitches=[{"id": "vsw-1"}],
        security_groups=[{"id": "sg-1"}], instances=[{"id": "i-1"}],
        snapshots=[{"id": "s-used"}, {"id": "s-spare"}, {"id": "s-failed"}],
        images=[{"id": "m-ok", "status": "Available", "snapshot_ids": ["s-used"]},
                {"id": "m-bad", "status": "CreateFailed", "snapshot_ids": ["s-failed"]}]))
    assert steps == [("delete", "instance", "i-1"), ("wait_gone", "instance", None),
                     ("delete", "image", "m-bad"), ("delete", "snapshot", "s-failed"),
                     ("delete", "snapshot", "s-spare"),
                     ("delete", "security_group", "sg-1"), ("delete", "vswitch", "vsw-1"),
                     ("delete", "vpc", "vpc-1")]
    assert kept == [("image", "m-ok", "the migration's image (Available)"),
                    ("snapshot", "s-used", "image m-ok is made of it")]
