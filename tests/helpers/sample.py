"""The sample source server for tests that boot or migrate a real system.

Built once per machine by image_build.dev.sample_server (debootstrap tree cached under
/var/cache/go2aliyun, keyed by its inputs); tests never write to these images: they
boot them on overlays or mount them read-only.
"""

import contextlib
import glob
import os
import shutil
import tempfile

from image_build.dev import sample_server
from receiver import blockdev
from wire import runner

SAMPLE_DIR = os.environ.get("GO2ALIYUN_SAMPLE_DIR") or sample_server.default_out_dir()


def ensure_sample():
    """Build (or reuse) the sample server; returns (dir, description)."""
    desc = sample_server.build(SAMPLE_DIR)
    return SAMPLE_DIR, desc


def image(name):
    return os.path.join(SAMPLE_DIR, sample_server.LAYOUT[name]["file"])


def mounted_readonly(names=("system", "disk1")):
    """The sample's filesystems mounted read-only under a temporary root (a context
    manager yielding the root)."""
    return sample_server.mounted_readonly(SAMPLE_DIR, list(names))


@contextlib.contextmanager
def kernel_files():
    """Copy the sample's kernel and initrd out of its /boot; yields (vmlinuz, initrd, root_uuid)."""
    out = tempfile.mkdtemp(prefix="sample-kernel-")
    try:
        with blockdev.attached(image("system"), read_only=True) as dev:
            mnt = tempfile.mkdtemp(prefix="sample-boot-")
            try:
                runner.run(["mount", "-o", "ro,noload", dev + "p1", mnt])
                try:
                    shutil.copy(sorted(glob.glob(mnt + "/vmlinuz-*"))[-1], out + "/vmlinuz")
                    shutil.copy(sorted(glob.glob(mnt + "/initrd.img-*"))[-1], out + "/initrd")
                finally:
                    runner.run(["umount", mnt], ok_codes=None)
            finally:
                os.rmdir(mnt)
            uuid = runner.run(["blkid", "-s", "UUID", "-o", "value", dev + "p2"]).stdout.strip()
        yield out + "/vmlinuz", out + "/initrd", uuid
    finally:
        shutil.rmtree(out, ignore_errors=True)
