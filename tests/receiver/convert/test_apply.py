"""Writing the edits (atomic, .pre-migration kept and never overwritten); the sandbox the
commands run in is tested in test_sandbox.py."""

import os
import stat

from receiver.convert.apply import apply_edits
from receiver.convert.plan import Edit
from tests.receiver.conftest import read_text


def test_edits_keep_the_original_across_reruns(tmp_path):
    root = str(tmp_path)
    os.makedirs(os.path.join(root, "etc/udev/rules.d"))
    fstab = os.path.join(root, "etc/fstab")
    with open(fstab, "w") as f:
        f.write("/dev/sda1 / ext4 defaults 0 1\n")
    os.chmod(fstab, 0o640)
    rules = os.path.join(root, "etc/udev/rules.d/70-persistent-net.rules")
    with open(rules, "w") as f:
        f.write("SUBSYSTEM==\"net\", ATTR{address}==\"00:11:22:33:44:55\", NAME=\"eth0\"\n")
    edits = [Edit("/etc/fstab", "UUID=1 / ext4 defaults 0 1\n", "r"),
             Edit("/etc/udev/rules.d/70-persistent-net.rules", None, "mac"),
             Edit("/.autorelabel", "", "selinux")]
    done = apply_edits(root, edits)
    assert [(d["path"], d["action"]) for d in done] == [
        ("/etc/fstab", "changed"), ("/etc/udev/rules.d/70-persistent-net.rules", "removed"),
        ("/.autorelabel", "created")]
    assert read_text(fstab) == "UUID=1 / ext4 defaults 0 1\n"
    assert stat.S_IMODE(os.stat(fstab).st_mode) == 0o640
    assert read_text(fstab + ".pre-migration") == "/dev/sda1 / ext4 defaults 0 1\n"
    assert not os.path.exists(rules) and os.path.exists(rules + ".pre-migration")
    assert not os.path.exists(os.path.join(root, ".autorelabel.pre-migration"))
    # a rerun with another change keeps the ORIGINAL copy
    edits[0].content = "UUID=2 / ext4 defaults 0 1\n"
    done = apply_edits(root, edits)
    assert [d["path"] for d in done] == ["/etc/fstab"]
    assert read_text(fstab) == "UUID=2 / ext4 defaults 0 1\n"
    assert read_text(fstab + ".pre-migration") == "/dev/sda1 / ext4 defaults 0 1\n"
    assert not [n for n in os.listdir(os.path.join(root, "etc")) if n.startswith(".go2aliyun")]
