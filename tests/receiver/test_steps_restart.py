"""What the receiver's steps do to be run again after a restart (no commands here; the
whole thing runs in tests/test_faults.py)."""

import os

from receiver import steps


def test_leftovers_are_the_new_initramfs_work_folders_only():
    before = ["mkinitramfs-OLD123", "keep.txt"]
    now = ["mkinitramfs-OLD123", "mkinitramfs-FW_ab12", "mkinitramfs-MAIN_x", "dracut.Xy1",
           "keep.txt", "new-but-not-ours", "systemd-private-1"]
    assert steps.leftovers(now, before) == ["dracut.Xy1", "mkinitramfs-FW_ab12",
                                            "mkinitramfs-MAIN_x"]
    assert steps.leftovers(before, before) == []


def test_remove_work_leftovers_keeps_what_the_source_had(tmp_path):
    tmp = tmp_path / "var" / "tmp"
    (tmp / "mkinitramfs-SRC").mkdir(parents=True)
    (tmp / "mkinitramfs-SRC" / "f").write_text("the source's own\n")
    (tmp / "mkinitramfs-FW_1" / "lib").mkdir(parents=True)
    (tmp / "mkinitramfs-FW_1" / "lib" / "x").write_text("half made\n")
    (tmp / "mkinitramfs-MAIN_2").write_text("a file\n")
    (tmp / "data").write_text("kept\n")
    gone = steps.remove_work_leftovers(str(tmp), ["mkinitramfs-SRC", "data"])
    assert gone == ["mkinitramfs-FW_1", "mkinitramfs-MAIN_2"]
    assert sorted(os.listdir(str(tmp))) == ["data", "mkinitramfs-SRC"]


def test_a_symlinked_var_tmp_is_not_followed(tmp_path):
    outside = tmp_path / "host-tmp"
    (outside / "mkinitramfs-HOST").mkdir(parents=True)
    root = tmp_path / "root" / "var"
    root.mkdir(parents=True)
    (root / "tmp").symlink_to(outside)
    assert steps.remove_work_leftovers(str(root / "tmp"), []) == []
    assert os.path.isdir(str(outside / "mkinitramfs-HOST"))
