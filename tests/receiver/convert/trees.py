"""Fixture trees and the prepare results that go with them (what
receiver.disks.apply.prepare returns, reduced to what conversion reads)."""

import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
TREES = os.path.join(os.path.dirname(os.path.dirname(HERE)), "data", "trees")
MANIFESTS = os.path.join(os.path.dirname(os.path.dirname(HERE)), "data", "manifests")


def copy_tree(name, dest):
    """Copy tests/data/trees/<name> to ``dest`` (symlinks kept); returns the root."""
    root = os.path.join(str(dest), name)
    shutil.copytree(os.path.join(TREES, name), root, symlinks=True)
    return root


def fs(fid, mountpoint, type_, uuid, source_device=None, source_uuid=None, label=None,
       module="system", lv=None, device=None, new=False):
    sys_mp = mountpoint
    mp = mountpoint if module == "system" else "/"
    return {"id": fid, "module": module, "type": type_, "uuid": uuid,
            "source_uuid": source_uuid if source_uuid is not None else (None if new else uuid),
            "label": label, "source_device": source_device, "mountpoint": mp,
            "system_mountpoint": sys_mp, "on": {"lv": lv} if lv else None,
            "device": device, "new": new}


def prepared(filesystems, id_changes=(), vgs=(), partitions=()):
    disks = [{"module": "system", "table": "dos", "partitions": list(partitions)}]
    layout = {"filesystems": filesystems, "disks": disks, "vgs": list(vgs),
              "id_changes": list(id_changes)}
    return {"layout": layout, "id_changes": list(id_changes),
            "filesystems": [{"id": f["id"], "module": f["module"], "type": f["type"],
                             "uuid": f["uuid"], "label": f["label"],
                             "source_uuid": f["source_uuid"],
                             "mountpoint": f["system_mountpoint"], "device": f["device"]}
                            for f in filesystems]}


# Debian 12 (tests/data/manifests/debian12-bios.json describes it): / collided with a
# receiver filesystem and got a new UUID; swap kept its own; /srv/data is data disk 1.
DEBIAN12_ROOT_NEW = "11111111-2222-4333-8444-555555555555"
DEBIAN12 = prepared([
    fs("fs1", "/", "ext4", DEBIAN12_ROOT_NEW, "/dev/sda1",
       source_uuid="5f3c2a71-8d0e-4b5a-9f4e-1c2d3b4a5e6f", device="/dev/loop7p1"),
    fs("fs2", "/srv/data", "xfs", "a1b2c3d4-e5f6-4718-9a0b-c1d2e3f4a5b6", "/dev/sdb1",
       label="data", module="disk1", device="/dev/loop8p1"),
    fs("fs3", None, "swap", "0d8f3e6a-7b2c-4c1d-8e9f-a0b1c2d3e4f5", "/dev/sda5",
       device="/dev/loop7p5"),
], id_changes=[{"kind": "filesystem", "old": "5f3c2a71-8d0e-4b5a-9f4e-1c2d3b4a5e6f",
                "new": DEBIAN12_ROOT_NEW, "where": "/"}])

# Ubuntu 18.04 cloud image from another cloud: root by LABEL, a swap file, a data disk
# by its Xen name (/dev/xvdf, whole disk) that became data disk 1.
UBUNTU1804_MYSQL = "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d"
UBUNTU1804 = prepared([
    fs("fs1", "/", "ext4", "3e0f6a1b-2c4d-4e5f-8a9b-0c1d2e3f4a5b", "/dev/xvda1",
       label="cloudimg-rootfs", device="/dev/vdb1"),
    fs("fs2", "/var/lib/mysql", "ext4", UBUNTU1804_MYSQL, "/dev/xvdf", module="disk1",
       device="/dev/vdc"),
])

# CentOS 7 on LVM with XFS: /boot collided and got a new UUID.
CENTOS7_BOOT_NEW = "99999999-8888-4777-8666-555555555555"
CENTOS7 = prepared([
    fs("fs1", "/", "xfs", "8b1e5c7a-3d2f-4a6b-9c8d-7e6f5a4b3c2d", "/dev/mapper/centos-root",
       lv="centos/root", device="/dev/mapper/centos-root"),
    fs("fs2", "/boot", "xfs", CENTOS7_BOOT_NEW, "/dev/sda1",
       source_uuid="2f6a1c3e-5b7d-4e8f-9a0b-1c2d3e4f5a6b", device="/dev/vdb1"),
    fs("fs3", "/home", "xfs", "4c5d6e7f-8091-4a2b-b3c4-d5e6f7a8b9c0", "/dev/mapper/centos-home",
       lv="centos/home", device="/dev/mapper/centos-home"),
    fs("fs4", None, "swap", "5e6f7081-92a3-4b4c-85d6-e7f8091a2b3c", "/dev/mapper/centos-swap",
       lv="centos/swap", device="/dev/mapper/centos-swap"),
], id_changes=[{"kind": "filesystem", "old": "2f6a1c3e-5b7d-4e8f-9a0b-1c2d3e4f5a6b",
                "new": CENTOS7_BOOT_NEW, "where": "/boot"}],
   vgs=[{"name": "centos", "create_name": "centos",
         "lvs": [{"name": "root"}, {"name": "home"}, {"name": "swap"}]}])

# RHEL 9 (BLS, UEFI, the EFI/redhat/grub.cfg wrapper): /boot got a new UUID.
RHEL9_BOOT_NEW = "abcdef01-2345-4678-9abc-def012345678"
RHEL9 = prepared([
    fs("fs1", "/", "xfs", "9e1d3c5b-7a2f-4e6d-8c0b-1a3f5e7d9b2c", "/dev/sda4",
       device="/dev/vdb4"),
    fs("fs2", "/boot", "xfs", RHEL9_BOOT_NEW, "/dev/sda2",
       source_uuid="4a6c8e0f-2b4d-4f6a-8c1e-3b5d7f9a1c3e", device="/dev/vdb2"),
    fs("fs3", "/boot/efi", "vfat", "7C1A-2B3D", "/dev/sda1", device="/dev/vdb1"),
    fs("fs4", None, "swap", "b3d5f7a9-1c3e-4a5b-9d7f-2e4a6c8e0b1d", "/dev/sda3",
       device="/dev/vdb3"),
], id_changes=[{"kind": "filesystem", "old": "4a6c8e0f-2b4d-4f6a-8c1e-3b5d7f9a1c3e",
                "new": RHEL9_BOOT_NEW, "where": "/boot"}])
