"""A real Debian 13 tree that switched to dracut (tests/helpers/dracut_source.py):
the inventory reports dracut (not the leftover /etc/initramfs-tools), the conversion
plans dracut for each kernel, and the copy's own dracut, run in the conversion's
sandbox, rebuilds /boot/initrd.img-<k> with the virtio drivers (issue 18). No disks and
no boot: the tree is a folder, so grub-install and update-grub are not run here."""

import os
import shutil

import pytest

from receiver.convert.apply import apply_edits, run_commands
from receiver.convert.chroot import sandbox
from receiver.convert.plan import plan_conversion
from source_script.inventory.collect import collect
from tests.helpers import dracut_source
from tests.receiver.convert import trees as T
from wire import runner
from wire.paths import target_path

# about 2 min with the cached trixie+dracut tree, ~13 more to build it on a new machine
pytestmark = [pytest.mark.root, pytest.mark.long(minutes=4)]

SOURCE_ROOT_UUID = "6c1f0b9e-2a3d-4e5f-8a7b-9c0d1e2f3a4b"
NEW_ROOT_UUID = "7d2e1c0f-3b4a-4f6e-9b8c-0d1e2f3a4b5c"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    tarball = dracut_source.ensure_tarball()
    work = str(tmp_path_factory.mktemp("dracut-debian"))
    root = os.path.join(work, "root")
    os.makedirs(root)
    try:
        runner.run(["tar", "--numeric-owner", "--xattrs", "--acls", "-C", root, "-xf",
                    tarball], timeout=900)
        with open(target_path(root, "/etc/fstab"), "w") as f:
            f.write("UUID=%s / ext4 errors=remount-ro 0 1\n" % SOURCE_ROOT_UUID)
        yield root
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_a_debian_tree_with_dracut_is_converted_with_dracut(tree):
    assert os.path.isdir(target_path(tree, "/etc/initramfs-tools"))  # the leftover
    manifest = collect(tree)
    assert manifest["initramfs_tool"] == "dracut"
    assert manifest["os"]["family"] == "debian" and manifest["os"]["version_id"] == "13"
    prepared = T.prepared([T.fs("fs1", "/", "ext4", NEW_ROOT_UUID, "/dev/sda1",
                                source_uuid=SOURCE_ROOT_UUID, device="/dev/vdb1")])
    plan = plan_conversion(tree, prepared, manifest, "bios", "/dev/vdb")
    initramfs = [c for c in plan.commands if c.argv[0] == "dracut"]
    kernels = [k["version"] for k in plan.kernels]
    assert kernels and [c.argv[-1] for c in initramfs] == [
        "/boot/initrd.img-%s" % k for k in kernels]
    assert not [c for c in plan.commands if c.argv[0] == "update-initramfs"]
    before = {k: os.stat(target_path(tree, "/boot/initrd.img-" + k)).st_mtime_ns
              for k in kernels}
    apply_edits(tree, plan.edits)
    run_commands(tree, initramfs, "bios")
    with sandbox(tree, "bios") as run:
        for k in plan.kernels:
            k, modules = k["version"], [d for d, st in k["drivers"].items() if st == "module"]
            assert "virtio_blk" in modules  # Debian's kernel has it as a module
            assert os.stat(target_path(tree, "/boot/initrd.img-" + k)).st_mtime_ns > before[k]
            listing = run(["lsinitrd", "/boot/initrd.img-" + k]).stdout
            for driver in modules:
                assert "/%s.ko" % driver in listing, (k, driver)
            assert "pre-migration" not in listing
