"""The final pass names each broken reference: fstab, crypttab, grub.cfg, BLS entries,
the EFI wrapper."""

import os

import pytest

from receiver.convert.check import (
    check_boot_config,
    check_crypttab,
    check_fstab,
    collect_problems,
    verify_references,
)
from receiver.convert.refs import Targets
from tests.receiver.convert import trees as T
from wire.errors import ConversionError

ROOT = "UUID=%s" % T.DEBIAN12_ROOT_NEW
SWAP = "UUID=0d8f3e6a-7b2c-4c1d-8e9f-a0b1c2d3e4f5"
OLD_ROOT = "UUID=5f3c2a71-8d0e-4b5a-9f4e-1c2d3b4a5e6f"


@pytest.fixture
def targets():
    return Targets(T.DEBIAN12)


def test_fstab_good_and_each_kind_of_broken(targets):
    good = ("# comment\n%s / ext4 defaults 0 1\n%s none swap sw 0 0\n"
            "proc /proc proc defaults 0 0\nserver:/x /mnt/x nfs defaults 0 0\n"
            "/swap.img none swap sw 0 0\n/dev/sr0 /media/cdrom udf noauto 0 0\n"
            "LABEL=data /srv/data xfs defaults 0 2\n" % (ROOT, SWAP))
    assert check_fstab(good, targets) == []
    bad = ("%s / ext4 defaults 0 1\n/dev/sda1 /boot ext4 defaults 0 2\n"
           "LABEL=nope /x ext4 defaults 0 2\nPARTUUID=0000-01 /y ext4 defaults 0 2\n"
           "/dev/mapper/vg-lv /z xfs defaults 0 2\n" % OLD_ROOT)
    assert check_fstab(bad, targets) == [
        "/etc/fstab line 1: %s (mount point /) names no filesystem on the new disks" % OLD_ROOT,
        "/etc/fstab line 2: /dev/sda1 (mount point /boot) names no filesystem on the new disks",
        "/etc/fstab line 3: LABEL=nope (mount point /x) names no filesystem on the new disks",
        "/etc/fstab line 4: PARTUUID=0000-01 (mount point /y) names no filesystem on the new "
        "disks",
        "/etc/fstab line 5: /dev/mapper/vg-lv (mount point /z) names no filesystem on the new "
        "disks",
    ]


def test_fstab_line_that_is_no_entry_is_named_in_line_order(targets):
    text = "%s / ext4 defaults 0 1\n/dev/sda1\n%s /x ext4 defaults 0 2\n" % (ROOT, OLD_ROOT)
    assert check_fstab(text, targets) == [
        "/etc/fstab line 2: '/dev/sda1' is not an fstab entry",
        "/etc/fstab line 3: %s (mount point /x) names no filesystem on the new disks" % OLD_ROOT,
    ]


def test_crypttab(targets):
    assert check_crypttab("# none\ncswap %s /dev/urandom swap\n" % SWAP, targets) == []
    assert check_crypttab("cdata /dev/sdb2 none luks\n", targets) == [
        "/etc/crypttab line 1: /dev/sdb2 (for cdata) names no device on the new disks"]


def test_grub_cfg_root_on_a_loop_device_and_an_unknown_search_uuid(targets):
    cfg = ("search --no-floppy --fs-uuid --set=root %s\n"
           "\tlinux /vmlinuz root=%s ro resume=%s quiet\n"
           "\tsearch --no-floppy --fs-uuid --set=root 5f3c2a71-8d0e-4b5a-9f4e-1c2d3b4a5e6f\n"
           "\tlinux16 /vmlinuz root=/dev/loop0p1 ro\n"
           "options root=UUID=deadbeef-0000-4000-8000-000000000000 ro\n"
           % (T.DEBIAN12_ROOT_NEW, ROOT, SWAP))
    assert check_boot_config(cfg, targets, "/boot/grub/grub.cfg") == [
        "/boot/grub/grub.cfg line 3: GRUB searches for UUID 5f3c2a71-8d0e-4b5a-9f4e-1c2d3b4a5e6f,"
        " which is on none of the new disks",
        "/boot/grub/grub.cfg line 4: root=/dev/loop0p1 names no filesystem on the new disks",
        "/boot/grub/grub.cfg line 5: root=UUID=deadbeef-0000-4000-8000-000000000000 names no "
        "filesystem on the new disks",
    ]


def _write(root, rel, text):
    path = os.path.join(root, rel.lstrip("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def test_verify_references_over_a_tree(tmp_path):
    root = str(tmp_path)
    _write(root, "/etc/fstab", "%s / ext4 defaults 0 1\n" % ROOT)
    _write(root, "/boot/grub/grub.cfg", "linux /vmlinuz root=%s ro\n" % ROOT)
    assert verify_references(root, Targets(T.DEBIAN12), "/boot/grub/grub.cfg") == []
    _write(root, "/etc/crypttab", "c1 /dev/sdc1 none luks\n")
    _write(root, "/boot/loader/entries/x.conf", "options root=/dev/sda1 ro\n")
    with pytest.raises(ConversionError) as e:
        verify_references(root, Targets(T.DEBIAN12), "/boot/grub/grub.cfg")
    assert e.value.code == "conversion.broken_reference"
    assert e.value.details["problems"] == [
        "/etc/crypttab line 1: /dev/sdc1 (for c1) names no device on the new disks",
        "/boot/loader/entries/x.conf line 1: root=/dev/sda1 names no filesystem on the new "
        "disks",
    ]
    assert "2 broken reference(s)" in e.value.message


def test_missing_grub_cfg_and_a_stale_efi_wrapper(tmp_path):
    root = T.copy_tree("rhel9", tmp_path)
    problems = collect_problems(root, Targets(T.RHEL9), "/boot/grub2/grub.cfg.missing",
                                firmware="uefi")
    assert "/boot/grub2/grub.cfg.missing is missing: the boot loader has no configuration" \
        in problems
    # /boot got a new UUID; the untouched wrapper still searches for the old one
    assert ("/boot/efi/EFI/redhat/grub.cfg line 1: GRUB searches for UUID "
            "4a6c8e0f-2b4d-4f6a-8c1e-3b5d7f9a1c3e, which is on none of the new disks") in problems
