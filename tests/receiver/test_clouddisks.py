"""Target disks found by disk id from cloud.json (receiver/clouddisks.py)."""

import pytest

from receiver.clouddisks import disks_from_cloud_config, module_for
from wire.errors import DiskError


def test_disks_by_virtio_serial_in_target_order():
    config = {"target_disks": ["go2aliyun-target-system", "go2aliyun-target-disk2",
                               "go2aliyun-target-disk5"],
              "target_disk_ids": ["d-0123456789abcdef01", "d-bp1a2b3c4d5e6f7g8h9i0",
                                  "d-ffffffffffffffffff"]}
    assert disks_from_cloud_config(config, by_id="/dev/disk/by-id") == {
        "system": "/dev/disk/by-id/virtio-d-0123456789abcdef01",
        # a virtio serial holds 20 characters: ECS's longer ids are cut there too
        "disk2": "/dev/disk/by-id/virtio-d-bp1a2b3c4d5e6f7g8h",
        "disk5": "/dev/disk/by-id/virtio-d-ffffffffffffffffff"}


def test_no_ids_means_no_discovery_and_a_mismatch_is_an_error():
    assert disks_from_cloud_config({"target_disks": ["go2aliyun-target-system"]}) == {}
    with pytest.raises(DiskError) as e:
        disks_from_cloud_config({"target_disks": ["a", "b"], "target_disk_ids": ["d-1"]})
    assert e.value.code == "disk.cloud_config"


def test_module_names():
    assert module_for(0, "anything") == "system"
    assert module_for(1, "go2aliyun-target-disk7") == "disk7"
    assert module_for(2, "") == "disk2"


def test_resolve_follows_existing_links_only(tmp_path):
    from receiver.clouddisks import resolve

    (tmp_path / "vdb").write_text("")
    (tmp_path / "virtio-d-1").symlink_to(tmp_path / "vdb")
    assert resolve({"system": str(tmp_path / "virtio-d-1"),
                    "disk1": str(tmp_path / "virtio-d-2")}) == {
        "system": str(tmp_path / "vdb"), "disk1": str(tmp_path / "virtio-d-2")}
