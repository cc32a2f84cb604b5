from receiver.convert import refs


def manifest_read_offline():
    """The sample server read with --root while attached as /dev/loop0 and /dev/loop1:
    its fstab names the disks as its own machine did."""
    return {
        "filesystems": [
            {"device": "/dev/loop0p1", "uuid": "u-boot", "mountpoint": "/boot"},
            {"device": "/dev/loop0p2", "uuid": "u-root", "mountpoint": "/"},
            {"device": "/dev/loop1p1", "uuid": "u-data", "mountpoint": "/mnt/disk1"},
        ],
        "swap": [{"path": "/dev/loop0p3", "uuid": "u-swap"}],
        "fstab": [
            {"spec": "/dev/sda2", "file": "/"},
            {"spec": "/dev/sda1", "file": "/boot"},
            {"spec": "/dev/sda3", "file": "none"},
            {"spec": "/dev/sdb1", "file": "/mnt/disk1"},
        ],
    }


def test_aliases_learned_from_mounted_entries():
    aliases = refs.learn_disk_aliases(manifest_read_offline())
    assert aliases == {"/dev/sda": "/dev/loop0", "/dev/sdb": "/dev/loop1"}
    assert refs.apply_disk_alias("/dev/sda3", aliases) == "/dev/loop0p3"
    assert refs.apply_disk_alias("/dev/sdc1", aliases) is None


def test_ambiguous_or_renumbered_pairs_are_not_learned():
    m = manifest_read_offline()
    m["fstab"].append({"spec": "/dev/sda1", "file": "/mnt/disk1"})  # sda -> loop1 too
    assert "/dev/sda" not in refs.learn_disk_aliases(m)
    m = manifest_read_offline()
    m["fstab"][0] = {"spec": "/dev/sda7", "file": "/"}  # /dev/loop0p2 is partition 2
    m["fstab"][1] = {"spec": "/dev/sda9", "file": "/boot"}
    assert "/dev/sda" not in refs.learn_disk_aliases(m)


def test_swap_by_device_name_resolves_through_the_alias():
    prepared = {"filesystems": [
        {"id": "fs-swap", "type": "swap", "uuid": "u-swap", "source_uuid": "u-swap",
         "device": "/dev/vdb3"},
        {"id": "fs-root", "type": "ext4", "uuid": "u-root", "source_uuid": "u-root",
         "mountpoint": "/", "device": "/dev/vdb2"},
    ]}
    t = refs.Targets(prepared, manifest_read_offline())
    assert t.resolve("/dev/sda3")["id"] == "fs-swap"
    assert t.resolve("/dev/sda2")["id"] == "fs-root"
    assert t.resolve("/dev/sdc3") is None
