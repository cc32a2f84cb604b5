"""collect() over the fixture trees of four distributions (tests/data/trees/), with the
host probes stubbed by captured output, validated against wire/manifest.schema.json."""

import os
import shutil

import pytest

from source_script.inventory import collect, render_text
from tests.helpers.data import TREES, captured

from .conftest import validate


def manifest_of(tree):
    m = collect(os.path.join(TREES, tree))
    validate(m)
    return m


def kernel(m, version):
    (k,) = [k for k in m["kernels"] if k["version"] == version]
    return k


ALL_MODULE = {d: "module" for d in ("virtio_blk", "virtio_net", "virtio_pci", "virtio_scsi",
                                    "nvme", "virtio", "virtio_ring")}


def test_centos7(no_host_probes):
    m = manifest_of("centos7")
    assert (m["os"]["id"], m["os"]["version_id"], m["os"]["family"]) == ("centos", "7", "rhel")
    assert m["hostname"] == "db01.example.lan" and m["arch"] == "x86_64"
    assert [k["version"] for k in m["kernels"]] == ["3.10.0-1160.el7.x86_64",
                                                    "3.10.0-1160.119.1.el7.x86_64"]
    k = kernel(m, "3.10.0-1160.119.1.el7.x86_64")
    assert k["virtio"] == ALL_MODULE and not k["running"]
    assert k["initramfs"] == "/boot/initramfs-3.10.0-1160.119.1.el7.x86_64.img"
    assert m["initramfs_tool"] == "dracut"
    g = m["grub"]
    assert (g["flavour"], g["version"], g["config_path"]) == \
        ("grub2", "2.02~beta2", "/boot/grub2/grub.cfg")
    assert g["mkconfig"] == "grub2-mkconfig" and g["platforms"] == ["i386-pc"]
    assert "rd.lvm.lv=centos/root" in g["cmdline_linux"]
    assert m["firmware"] == "bios"
    assert m["selinux"] == {"mode": "enforcing", "type": "targeted", "current": None}
    (mac,) = m["network"]["mac_bound"]
    assert mac["kind"] == "ifcfg-hwaddr" and mac["file"].endswith("ifcfg-ens192")
    assert m["network"]["config_tools"] == ["network-scripts"]
    assert m["cloud_init"]["installed"] is False
    assert m["rsync"] == {"path": "/usr/bin/rsync", "version": "3.5.0", "protocol": 32}


def test_ubuntu1804(no_host_probes):
    m = manifest_of("ubuntu1804")
    assert (m["os"]["id"], m["os"]["version_id"], m["os"]["family"]) == \
        ("ubuntu", "18.04", "debian")
    (k,) = m["kernels"]
    assert k["virtio"]["virtio_blk"] == "builtin" and k["virtio"]["nvme"] == "builtin"
    assert m["arch"] == "x86_64"  # from the multiarch folder: the kernel name has no arch
    assert m["initramfs_tool"] == "initramfs-tools"
    g = m["grub"]
    assert (g["flavour"], g["version"], g["package_version"]) == \
        ("grub2", "2.02", "2.02-2ubuntu8.26")
    assert g["config_path"] == "/boot/grub/grub.cfg" and g["install_device"] == "/dev/xvda"
    (mac,) = m["network"]["mac_bound"]
    assert mac["kind"] == "netplan-macaddress" and "06:5c:8e:2f:41:b3" in mac["detail"]
    ci = m["cloud_init"]
    assert ci["installed"] and ci["datasource"] == ["Ec2", "None"]
    (swap,) = m["swap"]
    assert swap == {"kind": "file", "path": "/swap.img", "uuid": None, "label": None,
                    "size_bytes": 0, "active": False, "in_fstab": True}
    assert m["selinux"]["mode"] == "absent"


def test_debian12(no_host_probes):
    m = manifest_of("debian12")
    assert (m["os"]["id"], m["os"]["family"], m["os"]["source"]) == \
        ("debian", "debian", "os-release")
    assert [k["version"] for k in m["kernels"]] == ["6.1.0-13-amd64", "6.1.0-27-amd64",
                                                    "6.1.55-web01"]
    assert kernel(m, "6.1.0-27-amd64")["virtio"] == ALL_MODULE
    custom = kernel(m, "6.1.55-web01")["virtio"]
    assert custom["virtio_blk"] == custom["virtio_net"] == custom["virtio_pci"] == "missing"
    assert custom["nvme"] == "builtin"
    g = m["grub"]
    assert (g["flavour"], g["version"]) == ("grub2", "2.06")
    assert g["install_device"].startswith("/dev/disk/by-id/ata-VMware")
    assert "resume=UUID=0d8f3e6a" in g["cmdline_linux_default"]
    kinds = sorted(x["kind"] for x in m["network"]["mac_bound"])
    assert kinds == ["interfaces-hwaddress", "udev-persistent-net"]
    assert m["network"]["config_tools"] == ["ifupdown"]
    assert m["cloud_init"] == {"installed": False, "datasource": None, "disabled": False,
                               "files": []}
    assert len(m["fstab"]) == 4


def test_rhel9_uefi(no_host_probes):
    m = manifest_of("rhel9")
    assert (m["os"]["id"], m["os"]["version_id"], m["os"]["family"]) == ("rhel", "9.4", "rhel")
    (k,) = m["kernels"]  # the rescue kernel is not listed
    assert k["virtio"]["virtio_pci"] == "builtin" and k["virtio"]["virtio_blk"] == "module"
    assert k["modules_dir"] == "/lib/modules/5.14.0-427.13.1.el9_4.x86_64"
    g = m["grub"]
    assert (g["flavour"], g["version"], g["bls"]) == ("grub2", "2.06", True)
    assert g["config_path"] == "/boot/grub2/grub.cfg"
    # EFI/centos is left over from a convert2rhel: the distribution's own folder wins
    assert g["efi_dir"] == "/boot/efi/EFI/redhat"
    assert m["firmware"] == "uefi"
    assert m["selinux"]["mode"] == "permissive"
    (mac,) = m["network"]["mac_bound"]
    assert mac["kind"] == "networkmanager-mac"
    assert m["cloud_init"]["datasource"] == ["Azure"]
    assert m["initramfs_tool"] == "dracut"


def _as_switched_to(root, tool):
    """The debian12 tree after ``apt install <tool>``: initramfs-tools' programs gone,
    its /etc/initramfs-tools left over (as Debian's dracut and mkinitcpio leave it)."""
    for name in ("update-initramfs", "mkinitramfs"):
        os.unlink(os.path.join(root, "usr", "sbin", name))
    program = os.path.join(root, "usr", "bin", tool)
    with open(program, "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(program, 0o755)
    assert os.path.isdir(os.path.join(root, "etc", "initramfs-tools"))


@pytest.mark.parametrize("tool", ["dracut", "mkinitcpio"])
def test_the_initramfs_tool_is_the_one_installed_not_the_leftover_folder(
        no_host_probes, tmp_path, tool):
    """Debian 13 supports dracut: /etc/initramfs-tools survives the switch (issue 18)."""
    root = str(tmp_path / "debian13")
    shutil.copytree(os.path.join(TREES, "debian12"), root, symlinks=True)
    _as_switched_to(root, tool)
    assert collect(root)["initramfs_tool"] == tool
    # a program that is not executable, or a dangling link, is not installed
    os.chmod(os.path.join(root, "usr", "bin", tool), 0o644)
    os.symlink("/usr/sbin/nowhere", os.path.join(root, "usr", "sbin", "update-initramfs"))
    os.symlink("/usr/sbin/nowhere", os.path.join(root, "usr", "sbin", "mkinitramfs"))
    m = collect(root)
    validate(m)
    assert m["initramfs_tool"] is None


def test_redhat_release_fallback(no_host_probes, tmp_path):
    (tmp_path / "etc").mkdir()
    with open(os.path.join(TREES, "centos7", "etc", "redhat-release")) as f:
        (tmp_path / "etc" / "redhat-release").write_text(f.read())
    m = collect(str(tmp_path))
    validate(m)
    assert (m["os"]["id"], m["os"]["version_id"], m["os"]["source"]) == \
        ("centos", "7", "redhat-release")
    probes_warned = {w["probe"] for w in m["warnings"]}
    assert {"kernels", "fstab"} <= probes_warned  # empty tree: warnings, no crash


def test_failing_probe_is_a_warning(no_host_probes, monkeypatch):
    def broken():
        raise OSError("rsync exploded")

    monkeypatch.setattr(no_host_probes, "run_rsync_version", broken)
    m = manifest_of("debian12")
    assert {"probe": "rsync", "message": "OSError: rsync exploded"} in m["warnings"]
    assert m["rsync"] == {"path": None, "version": None, "protocol": None}
    assert m["os"]["id"] == "debian"  # the other probes still ran


def test_render_text(no_host_probes):
    text = render_text(manifest_of("debian12"))
    assert "Debian GNU/Linux 12 (bookworm)" in text
    assert "6.1.55-web01" in text and "missing" in text
    assert "70-persistent-net.rules" in text


@pytest.fixture
def tree_on_captured_mbr_disk(no_host_probes, monkeypatch):
    """The Debian 12 tree as if mounted from the MBR loop layout: the block-device
    probes answer with that layout's captured output."""
    probes = no_host_probes
    root = os.path.join(TREES, "debian12")
    mountinfo = captured("mbr.mountinfo.txt").replace("/ROOT", root)
    blkid = {"/dev/loopXp%d" % n: captured("mbr.blkid.p%d.txt" % n) for n in (1, 2, 5, 6)}
    blkid["/dev/loopX"] = captured("mbr.blkid.disk.txt")
    dumpe2fs = {"/dev/loopXp5": captured("mbr.dumpe2fs.root.txt"),
                "/dev/loopXp1": captured("mbr.dumpe2fs.boot.txt")}
    empty_lvm = '{"report": [{"%s": []}]}'
    monkeypatch.setattr(probes, "read_mountinfo", lambda: mountinfo)
    monkeypatch.setattr(probes, "run_lsblk", lambda devices=(): captured("mbr.lsblk.txt"))
    monkeypatch.setattr(probes, "run_sfdisk_json", lambda disk: captured("mbr.sfdisk.json"))
    monkeypatch.setattr(probes, "run_blkid", lambda dev: blkid[dev])
    monkeypatch.setattr(probes, "run_dumpe2fs", lambda dev: dumpe2fs[dev])
    monkeypatch.setattr(probes, "run_lvm_report", lambda: {
        k: empty_lvm % k[:2] for k in ("pvs", "vgs", "lvs")})
    monkeypatch.setattr(probes, "read_bytes", lambda path, n: captured("grub2-boot.img", "rb"))
    monkeypatch.setattr(probes, "device_number", lambda path: None)
    monkeypatch.setattr(probes, "statvfs_usage", lambda path: (1000, 400))
    return root


def test_disks_from_captured_layout(tree_on_captured_mbr_disk):
    m = collect(tree_on_captured_mbr_disk)
    validate(m)
    (disk,) = m["disks"]
    assert disk["path"] == "/dev/loopX" and disk["table"] == "dos"
    assert disk["boot_code"] == "grub2"
    assert m["grub"]["install_device"].startswith("/dev/disk/by-id/")  # debconf wins
    fs = {f["device"]: f for f in m["filesystems"]}
    assert sorted(fs) == ["/dev/loopXp1", "/dev/loopXp5"]
    assert fs["/dev/loopXp5"]["mountpoint"] == "/" and fs["/dev/loopXp1"]["mountpoint"] == "/boot"
    assert "metadata_csum" not in fs["/dev/loopXp5"]["ext_features"]
    assert fs["/dev/loopXp5"]["used_bytes"] == 400
    (swap,) = m["swap"]
    assert swap["kind"] == "partition" and swap["path"] == "/dev/loopXp6"
    assert swap["uuid"] == "d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6"
    # the tree's fstab names another swap UUID: reported, not invented
    assert any(w["probe"] == "swap" and "UUID=0d8f3e6a" in w["message"]
               for w in m["warnings"])
    mounts = {x["mountpoint"]: x for x in m["mounts"]}
    assert set(mounts) == {"/", "/boot"} and not mounts["/"]["pseudo"]


def test_partition_table_without_sfdisk_json(tree_on_captured_mbr_disk, monkeypatch):
    from source_script.inventory import probes
    from wire.errors import CommandError

    def old_sfdisk(disk):
        raise CommandError("sfdisk --json %s failed with exit code 1: sfdisk: "
                           "unrecognized option '--json'" % disk)

    with_json = collect(tree_on_captured_mbr_disk)["disks"]
    monkeypatch.setattr(probes, "run_sfdisk_json", old_sfdisk)
    m = collect(tree_on_captured_mbr_disk)
    validate(m)
    assert m["disks"] == with_json
    assert any(w["probe"] == "disks" and "blkid -p" in w["message"] for w in m["warnings"])
