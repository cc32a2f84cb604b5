"""Paths of the copy are resolved inside it: a symlink of the received tree that points
outside it never makes the receiver read or write its own files (issue 14)."""

import os

import pytest

from receiver.convert import chroot as chroot_mod
from receiver.convert.apply import apply_edits
from receiver.convert.inroot import in_root
from receiver.convert.plan import Edit, read_target
from wire.errors import ConversionError

FSTAB = "/dev/sda1 / ext4 defaults 0 1\n"
NEW = "UUID=1 / ext4 defaults 0 1\n"


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _read(path):
    with open(path) as f:
        return f.read()


@pytest.fixture
def outside(tmp_path):
    """A folder outside the copy, standing for the receiver's /etc."""
    out = tmp_path / "receiver-etc"
    _write(str(out / "fstab"), "receiver's own fstab\n")
    _write(str(out / "grub" / "grub.cfg"), "receiver's grub.cfg\n")
    return str(out)


def test_in_root_resolves_absolute_links_from_the_copys_root(tmp_path):
    root = str(tmp_path / "t")
    _write(os.path.join(root, "run/systemd/resolve/stub-resolv.conf"), "nameserver 1\n")
    os.symlink("/run/systemd/resolve/stub-resolv.conf", os.path.join(root, "etc-resolv"))
    os.makedirs(os.path.join(root, "etc"))
    os.symlink("/run/systemd/resolve/stub-resolv.conf",
               os.path.join(root, "etc/resolv.conf"))
    os.symlink("usr/bin", os.path.join(root, "bin"))
    assert in_root(root, "/etc/resolv.conf") == \
        os.path.join(root, "run/systemd/resolve/stub-resolv.conf")
    assert in_root(root, "/etc/resolv.conf", follow=False) == \
        os.path.join(root, "etc/resolv.conf")
    assert in_root(root, "/bin/sh") == os.path.join(root, "usr/bin/sh")
    assert in_root(root, "etc", "missing/file") == os.path.join(root, "etc/missing/file")
    assert in_root(root, "/") == root


def test_in_root_refuses_links_that_climb_out_and_loops(tmp_path):
    root = str(tmp_path / "t")
    os.makedirs(os.path.join(root, "boot"))
    os.symlink("../../elsewhere", os.path.join(root, "boot/grub"))
    os.symlink("loop", os.path.join(root, "loop"))
    with pytest.raises(ConversionError) as e:
        in_root(root, "/boot/grub/grub.cfg")
    assert e.value.code == "conversion.unsafe_path"
    assert e.value.details["path"] == "/boot/grub/grub.cfg"
    with pytest.raises(ConversionError, match="too many levels"):
        in_root(root, "/loop/x")


@pytest.mark.parametrize("link", ["etc", "etc/fstab"])
def test_an_absolute_link_out_of_the_copy_is_written_inside_it(tmp_path, outside, link):
    root = str(tmp_path / "t")
    os.makedirs(os.path.join(root, os.path.dirname(link)), exist_ok=True)
    os.symlink(os.path.join(outside, "fstab") if link == "etc/fstab" else outside,
               os.path.join(root, link))
    apply_edits(root, [Edit("/etc/fstab", NEW, "r")])
    assert _read(os.path.join(outside, "fstab")) == "receiver's own fstab\n"
    assert sorted(os.listdir(outside)) == ["fstab", "grub"]
    # the copy's programs see the link from the copy's root: that is where it went
    assert _read(os.path.join(root, outside.lstrip("/"), "fstab")) == NEW


@pytest.mark.parametrize("link,rel", [("etc", "/etc/fstab"), ("etc/fstab", "/etc/fstab"),
                                      ("boot/grub", "/boot/grub/grub.cfg")])
def test_a_relative_link_out_of_the_copy_is_refused(tmp_path, outside, link, rel):
    root = str(tmp_path / "t")
    os.makedirs(os.path.join(root, os.path.dirname(link)), exist_ok=True)
    where = os.path.join(root, link)
    target = os.path.join(outside, os.path.basename(rel) if link == "etc/fstab" else
                          ("grub" if link == "boot/grub" else ""))
    os.symlink(os.path.relpath(target, os.path.dirname(where)), where)
    with pytest.raises(ConversionError) as e:
        read_target(root, rel)
    assert e.value.code == "conversion.unsafe_path"
    with pytest.raises(ConversionError):
        apply_edits(root, [Edit(rel, NEW, "r")])
    assert _read(os.path.join(outside, "fstab")) == "receiver's own fstab\n"
    assert _read(os.path.join(outside, "grub", "grub.cfg")) == "receiver's grub.cfg\n"
    assert sorted(os.listdir(outside)) == ["fstab", "grub"]


def test_an_in_root_link_is_edited_where_it_points(tmp_path):
    root = str(tmp_path / "t")
    real = os.path.join(root, "usr/share/netplan/50-cloud.yaml")
    _write(real, "old\n")
    os.makedirs(os.path.join(root, "etc/netplan"))
    link = os.path.join(root, "etc/netplan/50-cloud.yaml")
    os.symlink("/usr/share/netplan/50-cloud.yaml", link)
    apply_edits(root, [Edit("/etc/netplan/50-cloud.yaml", "new\n", "mac")])
    assert os.readlink(link) == "/usr/share/netplan/50-cloud.yaml"
    assert _read(real) == "new\n"
    assert _read(os.path.join(root, "var/lib/go2aliyun/pre-migration",
                              "usr/share/netplan/50-cloud.yaml")) == "old\n"


def test_a_removed_link_is_the_link_not_its_target(tmp_path, outside):
    root = str(tmp_path / "t")
    rules = os.path.join(root, "etc/udev/rules.d/70-persistent-net.rules")
    os.makedirs(os.path.dirname(rules))
    os.symlink(os.path.join(outside, "fstab"), rules)
    apply_edits(root, [Edit("/etc/udev/rules.d/70-persistent-net.rules", None, "mac")])
    kept = os.path.join(root, "var/lib/go2aliyun/pre-migration",
                        "etc/udev/rules.d/70-persistent-net.rules")
    assert os.path.islink(kept) and not os.path.lexists(rules)
    assert os.readlink(kept) == os.path.join(outside, "fstab")
    assert _read(os.path.join(outside, "fstab")) == "receiver's own fstab\n"


def test_the_sandbox_set_up_writes_inside_the_copy(tmp_path, outside, monkeypatch):
    """policy-rc.d and os-prober's mode go through the copy's symlinks inside it."""
    root = str(tmp_path / "t")
    for d in ("dev", "proc", "sys", "run", "tmp", "usr"):
        os.makedirs(os.path.join(root, d))
    os.symlink(outside, os.path.join(root, "usr/sbin"))
    os.makedirs(os.path.join(root, "etc"))
    os.symlink(os.path.join(outside, "grub"), os.path.join(root, "etc/grub.d"))
    prober = os.path.join(outside, "grub", "30_os-prober")
    _write(prober, "#!/bin/sh\n")
    os.chmod(prober, 0o755)
    monkeypatch.setattr(chroot_mod.probe, "read_mountinfo", lambda: [])
    os.rmdir(os.path.join(root, "tmp"))
    with chroot_mod.sandbox(root):
        assert os.stat(os.path.join(root, "tmp")).st_mode & 0o7777 == 0o1777
        assert _read(os.path.join(root, outside.lstrip("/"), "policy-rc.d")) == \
            chroot_mod.POLICY_RC_D
        assert os.stat(prober).st_mode & 0o777 == 0o755
    assert sorted(os.listdir(outside)) == ["fstab", "grub"]


def test_the_sandbox_refuses_a_mount_point_that_is_a_symlink(tmp_path, monkeypatch):
    root = str(tmp_path / "t")
    for d in ("dev", "sys", "run", "tmp", "etc"):
        os.makedirs(os.path.join(root, d))
    os.symlink("/etc", os.path.join(root, "proc"))
    monkeypatch.setattr(chroot_mod.probe, "read_mountinfo", lambda: [])
    with pytest.raises(ConversionError) as e, chroot_mod.sandbox(root):
        pass
    assert e.value.code == "conversion.unsafe_path" and e.value.details["path"] == "/proc"
