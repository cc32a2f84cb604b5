"""Writing the edits (atomic, originals kept under /var/lib/go2aliyun/pre-migration and
never overwritten); the sandbox the commands run in is tested in test_sandbox.py."""

import json
import os
import stat

from receiver.convert.apply import BACKUP_DIR, MANIFEST, apply_edits
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
    kept = os.path.join(root, BACKUP_DIR.lstrip("/"))
    assert read_text(os.path.join(kept, "etc/fstab")) == "/dev/sda1 / ext4 defaults 0 1\n"
    assert stat.S_IMODE(os.stat(os.path.join(kept, "etc/fstab")).st_mode) == 0o640
    assert not os.path.exists(rules)
    assert os.path.exists(os.path.join(kept, "etc/udev/rules.d/70-persistent-net.rules"))
    assert os.listdir(os.path.join(root, "etc/udev/rules.d")) == []  # nothing left there
    assert sorted(os.listdir(os.path.join(root, "etc"))) == ["fstab", "udev"]
    assert not os.path.exists(os.path.join(kept, ".autorelabel"))
    manifest = json.loads(read_text(os.path.join(root, MANIFEST.lstrip("/"))))
    assert [(e["path"], e["action"], e["backup"]) for e in manifest["entries"]] == [
        ("/etc/fstab", "changed", BACKUP_DIR + "/etc/fstab"),
        ("/etc/udev/rules.d/70-persistent-net.rules", "removed",
         BACKUP_DIR + "/etc/udev/rules.d/70-persistent-net.rules"),
        ("/.autorelabel", "created", None)]
    # a rerun with another change keeps the ORIGINAL copy
    edits[0].content = "UUID=2 / ext4 defaults 0 1\n"
    done = apply_edits(root, edits)
    assert [d["path"] for d in done] == ["/etc/fstab"]
    assert read_text(fstab) == "UUID=2 / ext4 defaults 0 1\n"
    assert read_text(os.path.join(kept, "etc/fstab")) == "/dev/sda1 / ext4 defaults 0 1\n"
    assert json.loads(read_text(os.path.join(root, MANIFEST.lstrip("/")))) == manifest
    assert not [n for n in os.listdir(os.path.join(root, "etc")) if n.startswith(".go2aliyun")]
