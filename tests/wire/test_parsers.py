"""Every inventory parser on output captured from real systems: the loop-device
layouts of tests/data/inventory/ and the files of the fixture trees."""

import json

import pytest

from tests.helpers.data import captured, tree_file
from wire import parsers


@pytest.mark.parametrize("tree,osid,version,family,like", [
    ("centos7", "centos", "7", "rhel", ["rhel", "fedora"]),
    ("ubuntu1804", "ubuntu", "18.04", "debian", ["debian"]),
    ("debian12", "debian", "12", "debian", []),
    ("rhel9", "rhel", "9.4", "rhel", ["fedora"]),
])
def test_os_release(tree, osid, version, family, like):
    info = parsers.os_info(parsers.parse_os_release(tree_file(tree, "etc/os-release")),
                           "os-release")
    assert (info["id"], info["version_id"], info["family"], info["id_like"]) == \
        (osid, version, family, like)
    assert info["pretty_name"] and '"' not in info["pretty_name"]


@pytest.mark.parametrize("tree,osid,version", [("centos7", "centos", "7"),
                                               ("rhel9", "rhel", "9")])
def test_redhat_release(tree, osid, version):
    info = parsers.os_info(parsers.parse_redhat_release(
        tree_file(tree, "etc/redhat-release")), "redhat-release")
    assert (info["id"], info["version_id"], info["family"]) == (osid, version, "rhel")


def test_os_family_uses_id_like_for_derivatives():
    assert parsers.os_family("linuxmint", []) == "debian"
    assert parsers.os_family("mydistro", ["ubuntu", "debian"]) == "debian"
    assert parsers.os_family("opensuse-leap", ["suse", "opensuse"]) == "suse"
    assert parsers.os_family("arch", []) == "other"


def test_lsblk_pairs():
    rows = parsers.parse_lsblk(captured("mbr.lsblk.txt"))
    assert [r["name"] for r in rows] == ["/dev/loopX", "/dev/loopXp1", "/dev/loopXp2",
                                         "/dev/loopXp5", "/dev/loopXp6"]
    disk, boot = rows[0], rows[1]
    assert disk["type"] == "loop" and disk["size"] == 128 * 1024 * 1024
    assert disk["pkname"] is None and disk["log_sec"] == 512
    assert boot["pkname"] == "/dev/loopX" and boot["type"] == "part"
    assert boot["maj_min"].startswith("259:") and boot["mountpoint"] == "/ROOT/boot"


def test_blkid_export_unmounted_vfat():
    (tags,) = parsers.parse_blkid(captured("gpt.blkid.p2.txt"))
    assert tags["TYPE"] == "vfat" and tags["UUID"] == "1234-ABCD" and tags["LABEL"] == "ESP"
    assert tags["PART_ENTRY_NAME"] == "EFI System"  # blkid escapes the space


def test_blkid_partition_without_filesystem():
    (tags,) = parsers.parse_blkid(captured("gpt.blkid.p1.txt"))
    assert "TYPE" not in tags and tags["PART_ENTRY_NAME"] == "bios"


def test_sfdisk_dos_with_extended_and_logical():
    t = parsers.parse_sfdisk_json(captured("mbr.sfdisk.json"))
    assert t["table"] == "dos" and t["sector_size"] == 512
    byn = {p["number"]: p for p in t["partitions"]}
    assert sorted(byn) == [1, 2, 5, 6]
    assert byn[1]["bootable"] and byn[1]["flags"] == ["boot", "linux"]
    assert byn[1]["start_bytes"] == 2048 * 512 and byn[1]["size_bytes"] == 65536 * 512
    assert byn[2]["type"] == "5" and byn[2]["flags"] == ["extended"]
    assert byn[5]["flags"] == ["logical", "linux"] and byn[6]["type"] == "82"
    assert byn[6]["flags"] == ["logical", "swap"]
    disk_id = t["table_id"].lower().replace("0x", "")
    assert byn[5]["partuuid"] == disk_id + "-05"


def test_sfdisk_gpt_types_names_attrs():
    t = parsers.parse_sfdisk_json(captured("gpt.sfdisk.json"))
    assert t["table"] == "gpt" and len(t["table_id"]) == 36
    p1, p2, p3 = t["partitions"]
    assert p1["flags"] == ["bios_grub"] and p1["name"] == "bios"
    assert p2["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" and p2["flags"] == ["esp"]
    assert p2["name"] == "EFI System" and not p2["bootable"]
    assert p3["bootable"] and p3["attrs"] == "LegacyBIOSBootable"
    assert p3["start_bytes"] == 135168 * 512 and p3["size_bytes"] == 320 * 1024 * 1024
    assert len(p3["partuuid"]) == 36


def test_sfdisk_lvm_type():
    t = parsers.parse_sfdisk_json(captured("lvm.sfdisk.json"))
    assert [p["flags"] for p in t["partitions"]] == [["boot", "linux"], ["lvm"]]


def test_dumpe2fs_features_replayable():
    root = parsers.parse_dumpe2fs(captured("mbr.dumpe2fs.root.txt"))
    assert "metadata_csum" not in root["features"] and "64bit" not in root["features"]
    assert {"has_journal", "extent", "flex_bg"} <= set(root["features"])
    assert root["uuid"] == "8a2d4b6e-1f3c-4e5a-b7d9-2c4e6f8a0b13" and root["label"] == "rootfs"
    assert root["block_size"] == 1024 and root["inode_size"] == 256
    assert 0 < root["used_bytes"] < root["size_bytes"] <= 64 * 1024 * 1024
    boot = parsers.parse_dumpe2fs(captured("mbr.dumpe2fs.boot.txt"))
    assert "metadata_csum" in boot["features"] and boot["label"] == "boot"


def test_btrfs_subvolumes():
    """A root filesystem as SUSE and Fedora lay it out (captured from btrfs-progs 6.2
    with @ mounted, tests/source_script/inventory/layouts.btrfs_subvolumes): @ (the
    default), @home, a nested @/var/lib/machines and a read-only snapshot of @."""
    subs = parsers.parse_btrfs_subvolume_list(captured("btrfs.subvolume_list.txt"))
    assert [(s["id"], s["parent"], s["path"]) for s in subs] == [
        (256, 5, "@"), (257, 5, "@home"), (258, 256, "@/var/lib/machines"),
        (259, 5, "@snap-1")]
    assert [s["snapshot_of"] for s in subs] == [
        None, None, None, "3cc7358d-0755-2745-aff7-b2ebecb94a79"]
    assert subs[3]["snapshot_of"] == subs[0]["uuid"]
    assert parsers.parse_btrfs_get_default(captured("btrfs.get_default.txt")) == 256
    assert parsers.parse_btrfs_get_default("ID 5 (FS_TREE)\n") == parsers.BTRFS_TOP_LEVEL


def test_xfs_info_features():
    info = parsers.parse_xfs_info(captured("gpt.xfs_info.txt"))
    f = info["features"]
    assert (f["crc"], f["ftype"], f["finobt"], f["sparse"], f["reflink"]) == (1, 1, 1, 1, 1)
    assert (f["bigtime"], f["inobtcount"], f["rmapbt"], f["nrext64"]) == (0, 0, 0, 0)
    assert info["block_size"] == 4096 and info["inode_size"] == 512
    assert info["size_bytes"] == 81920 * 4096


def test_xfs_info_old_xfsprogs_lacks_new_flags():
    # the same capture with the line an old xfsprogs (4.5, CentOS 7) does not print
    text = "\n".join(line for line in captured("gpt.xfs_info.txt").splitlines()
                     if "bigtime" not in line)
    f = parsers.parse_xfs_info(text)["features"]
    assert f["bigtime"] is None and f["reflink"] is None and f["crc"] == 1


def test_lvm_report():
    lvm = parsers.parse_lvm_report(captured("lvm.pvs.json"), captured("lvm.vgs.json"),
                                   captured("lvm.lvs.json"))
    (pv,), (vg,) = lvm["pvs"], lvm["vgs"]
    assert pv["name"] == "/dev/loopXp2" and pv["vg"] == "g2avg_test" and len(pv["uuid"]) == 38
    assert vg["extent_size_bytes"] == 4 * 1024 * 1024 and vg["lv_count"] == 2
    assert vg["size_bytes"] == pv["size_bytes"] and vg["free_bytes"] == 16 * 1024 * 1024
    root, swap = lvm["lvs"]
    assert (root["name"], root["size_bytes"], root["segtype"]) == ("root", 60 << 20, "linear")
    assert root["path"] == "/dev/g2avg_test/root" and root["active"] is False
    assert swap["size_bytes"] == 16 << 20


def test_fstab_debian():
    entries = parsers.parse_fstab(tree_file("debian12", "etc/fstab"))
    assert [e["file"] for e in entries] == ["/", "none", "/srv/data", "/media/cdrom0"]
    root = entries[0]
    assert root["spec"].startswith("UUID=5f3c2a71") and root["mntops"] == "errors=remount-ro"
    assert (root["freq"], root["passno"], root["line"]) == (0, 1, 12)
    assert entries[3]["vfstype"] == "udf,iso9660"


def test_fstab_centos_lvm_names():
    entries = parsers.parse_fstab(tree_file("centos7", "etc/fstab"))
    assert entries[0]["spec"] == "/dev/mapper/centos-root"
    assert entries[-1]["vfstype"] == "swap" and entries[-1]["file"] == "swap"


def test_fstab_reports_lines_that_are_no_entries():
    text = "# c\nUUID=a / ext4 defaults 0 1\nbroken line\n/dev/x\\040y /my\\040dir xfs\n"
    bad = []
    entries = parsers.parse_fstab(text, bad)
    assert bad == [(3, "broken line")]
    assert [(e["line"], e["spec"], e["file"], e["mntops"]) for e in entries] == [
        (2, "UUID=a", "/", "defaults"), (4, "/dev/x y", "/my dir", "defaults")]
    assert parsers.parse_fstab(text) == entries


def test_unquote_shell():
    assert parsers.unquote_shell('"a \\"b\\" \\$c"') == 'a "b" $c'
    assert parsers.unquote_shell("'x \\y'") == "x \\y"
    assert parsers.unquote_shell("quiet splash # a comment") == "quiet splash"


def test_module_names():
    assert parsers.module_name("kernel/drivers/block/virtio-blk.ko.xz") == "virtio_blk"
    assert parsers.module_name("nvme.ko") == "nvme" and parsers.module_name("dm-mod") == "dm_mod"
    assert parsers.is_module_file("virtio_net.ko.zst") and parsers.is_module_file("a.ko")
    assert not parsers.is_module_file("modules.order") and not parsers.is_module_file(".ko")


def test_mountinfo():
    entries = parsers.parse_mountinfo(captured("mbr.mountinfo.txt"))
    by_mp = {e["mountpoint"]: e for e in entries}
    root = by_mp["/ROOT"]
    assert root["fstype"] == "ext4" and root["source"] == "/dev/loopXp5"
    assert root["major_minor"].startswith("259:") and root["fs_root"] == "/"
    assert by_mp["/ROOT/boot"]["parent_id"] == root["mount_id"]
    assert by_mp["/proc"]["fstype"] == "proc"


def test_proc_swaps_header_only():
    assert parsers.parse_proc_swaps(captured("host.proc-swaps.txt")) == []


def test_modules_builtin_and_dep():
    k = "usr/lib/modules/5.14.0-427.13.1.el9_4.x86_64/"
    builtin = parsers.parse_modules_builtin(tree_file("rhel9", k + "modules.builtin"))
    modules = parsers.parse_modules_dep(tree_file("rhel9", k + "modules.dep"))
    assert {"virtio", "virtio_pci", "virtio_ring"} <= builtin
    assert {"virtio_blk", "virtio_net", "virtio_scsi", "nvme", "nvme_core", "dm_mod"} <= modules
    assert parsers.driver_status("virtio_pci", builtin, modules, {}) == "builtin"
    assert parsers.driver_status("virtio_blk", builtin, modules, {}) == "module"


def test_kernel_config_decides_when_no_module_lists():
    config = parsers.parse_kernel_config(tree_file("ubuntu1804", "boot/config-4.15.0-213-generic"))
    assert config["CONFIG_VIRTIO_BLK"] == "y"
    assert parsers.driver_status("virtio_blk", set(), set(), config) == "builtin"
    custom = parsers.parse_kernel_config(tree_file("debian12", "boot/config-6.1.55-web01"))
    assert parsers.driver_status("virtio_net", set(), set(), custom) == "missing"


def test_grub_version_from_grub_install():
    v = parsers.parse_grub_version(captured("host.grub-install-version.txt"))
    assert v == {"flavour": "grub2", "version": "2.06", "package_version": "2.06-13+deb12u2"}


@pytest.mark.parametrize("tree,platform,version,package", [
    ("centos7", "i386-pc", "2.02~beta2", "2.02~beta2"),
    ("ubuntu1804", "i386-pc", "2.02", "2.02-2ubuntu8.26"),
    ("rhel9", "x86_64-efi", "2.06", "2.06-77.el9"),
])
def test_grub_version_from_modinfo(tree, platform, version, package):
    v = parsers.parse_grub_version(tree_file(tree, "usr/lib/grub/%s/modinfo.sh" % platform))
    assert (v["flavour"], v["version"], v["package_version"]) == ("grub2", version, package)


def test_grub_version_legacy():
    # GRUB legacy (CentOS 6) prints "grub-install (GNU GRUB 0.97)"
    v = parsers.parse_grub_version("grub-install (GNU GRUB 0.97)\n")
    assert v["flavour"] == "legacy" and v["version"] == "0.97"


def test_mbr_boot_code():
    assert parsers.parse_mbr_boot_code(captured("grub2-boot.img", "rb")) == "grub2"
    assert parsers.parse_mbr_boot_code(b"\0" * 512) == "empty"
    legacy = bytearray(captured("grub2-boot.img", "rb"))
    legacy[0x3E:0x40] = b"\x03\x02"  # stage1's compat version, where GRUB legacy keeps it
    assert parsers.parse_mbr_boot_code(bytes(legacy)) == "grub-legacy"


def test_debconf_install_devices():
    text = tree_file("ubuntu1804", "var/cache/debconf/config.dat")
    assert parsers.parse_debconf_value(text, "grub-pc/install_devices") == "/dev/xvda"
    assert parsers.parse_debconf_value(text, "grub-pc/nothing") is None


def test_selinux_config():
    assert parsers.parse_selinux_config(tree_file("centos7", "etc/selinux/config")) == \
        {"mode": "enforcing", "type": "targeted"}
    assert parsers.parse_selinux_config(tree_file("rhel9", "etc/selinux/config"))["mode"] == \
        "permissive"


def test_grub_default_shell_vars():
    v = parsers.parse_shell_vars(tree_file("centos7", "etc/default/grub"))
    assert "rd.lvm.lv=centos/root" in v["GRUB_CMDLINE_LINUX"]
    assert v["GRUB_DISTRIBUTOR"] == "$(sed 's, release .*$,,g' /etc/system-release)"


def test_elf_machine_of_this_hosts_bash():
    assert parsers.parse_elf_machine(captured("host.bash.elf-header.bin", "rb")) == "x86_64"
    assert parsers.parse_elf_machine(b"#!/bin/sh\n" + b"\0" * 20) is None


def test_arch_from_kernel_names():
    assert parsers.arch_from_kernel_name("6.1.0-27-amd64") == "x86_64"
    assert parsers.arch_from_kernel_name("3.10.0-1160.el7.x86_64") == "x86_64"
    assert parsers.arch_from_kernel_name("4.15.0-213-generic") is None


@pytest.mark.parametrize("tree,path,kind,needle", [
    ("debian12", "etc/udev/rules.d/70-persistent-net.rules", "udev-persistent-net",
     "00:50:56:a1:3c:7e"),
    ("debian12", "etc/network/interfaces", "interfaces-hwaddress", "hwaddress ether"),
    ("centos7", "etc/sysconfig/network-scripts/ifcfg-ens192", "ifcfg-hwaddr", "HWADDR="),
    ("ubuntu1804", "etc/netplan/50-cloud-init.yaml", "netplan-macaddress", "06:5c:8e:2f:41:b3"),
    ("rhel9", "etc/NetworkManager/system-connections/eth0.nmconnection", "networkmanager-mac",
     "mac-address=00:0D:3A:5C:21:9E"),
])
def test_mac_bound(tree, path, kind, needle):
    (hit,) = parsers.find_mac_bound("/" + path, tree_file(tree, path), kind)
    assert needle in hit["detail"] and hit["file"] == "/" + path and hit["line"] > 1


def test_mac_bound_ignores_files_without_mac():
    assert parsers.find_mac_bound("/x", tree_file("centos7", "etc/sysconfig/network-scripts/"
                                                           "ifcfg-lo"), "ifcfg-hwaddr") == []


def test_cloud_datasource():
    assert parsers.parse_cloud_datasource(
        tree_file("ubuntu1804", "etc/cloud/cloud.cfg.d/90_dpkg.cfg")) == ["Ec2", "None"]
    assert parsers.parse_cloud_datasource(
        tree_file("rhel9", "etc/cloud/cloud.cfg.d/91-azure_datasource.cfg")) == ["Azure"]
    assert parsers.parse_cloud_datasource(tree_file("rhel9", "etc/cloud/cloud.cfg")) is None


def test_rsync_version():
    assert parsers.parse_rsync_version(captured("host.rsync-version.txt")) == \
        {"version": "3.5.0", "protocol": 32}


def test_captures_are_json():
    for name in ("mbr.sfdisk.json", "lvm.pvs.json"):
        assert json.loads(captured(name))


def test_fsck_fat_unmounted_esp():
    info = parsers.parse_fsck_fat(captured("gpt.fsck_fat.p2.txt"))
    assert info["cluster_size"] == 512
    assert info["size_bytes"] == 131040 * 512 and info["used_bytes"] == 512


def test_blkid_table_of_disks():
    assert parsers.parse_blkid_table(parsers.parse_blkid(captured("gpt.blkid.disk.txt"))[0]) \
        == ("gpt", parsers.parse_sfdisk_json(captured("gpt.sfdisk.json"))["table_id"])
    assert parsers.parse_blkid_table(parsers.parse_blkid(captured("mbr.blkid.disk.txt"))[0]) \
        == ("dos", parsers.parse_sfdisk_json(captured("mbr.sfdisk.json"))["table_id"])


@pytest.mark.parametrize("layout,numbers", [("mbr", (1, 2, 5, 6)), ("gpt", (1, 2, 3)),
                                            ("lvm", (1, 2))])
def test_blkid_partitions_agree_with_sfdisk(layout, numbers):
    # the fallback for sources whose sfdisk has no --json (util-linux < 2.26, CentOS 7)
    from_sfdisk = parsers.parse_sfdisk_json(captured("%s.sfdisk.json" % layout))["partitions"]
    from_blkid = [parsers.partition_from_blkid(
        parsers.parse_blkid(captured("%s.blkid.p%d.txt" % (layout, n)))[0]) for n in numbers]
    assert from_blkid == from_sfdisk


def test_blkid_partition_needs_a_partition_entry():
    with pytest.raises(ValueError, match="no partition entry"):
        parsers.partition_from_blkid(parsers.parse_blkid(captured("gpt.blkid.disk.txt"))[0])
