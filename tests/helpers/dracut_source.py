"""A Debian 13 (trixie) source that switched from initramfs-tools to dracut, as a file
tree: the debootstrap of the sample server's package list, then ``apt-get install
dracut`` in it, which removes initramfs-tools' programs and leaves its
``/etc/initramfs-tools`` (conffiles of a removed, not purged, package) and the
kernel's ``/boot/initrd.img-<k>`` made by dracut. Debian supports dracut since 13;
issue 18's inventory took the leftover folder for the tool. Cached as its own tarball
by :func:`image_build.dev.sample_server.ensure_rootfs` (suite ``trixie``, recipe
``dracut``)."""

import os

from image_build.dev import sample_server
from wire import runner
from wire.paths import target_path

SUITE = "trixie"
PACKAGES = sample_server.PACKAGES
RECIPE = "apt-get install dracut"


def _switch_to_dracut(tree):
    sample_server._configure_tree(tree)
    with sample_server._chroot(tree):
        runner.run(["chroot", tree, "apt-get", "install", "-y", "--no-install-recommends",
                    "dracut"], env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=1800)
        runner.run(["chroot", tree, "apt-get", "clean"], timeout=300)
    if os.path.lexists(target_path(tree, "/usr/sbin/update-initramfs")):
        raise AssertionError("installing dracut left initramfs-tools in %s" % tree)


def ensure_tarball(cache_dir=None):
    """The cached tarball of the tree (built the first time: debootstrap and apt, a
    few minutes with a network)."""
    return sample_server.ensure_rootfs(cache_dir, packages=PACKAGES,
                                       configure=_switch_to_dracut, suite=SUITE,
                                       recipe=RECIPE)
