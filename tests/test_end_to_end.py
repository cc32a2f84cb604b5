"""The whole product on one machine: a real Debian 12 server migrated into an image that
boots on virtio.

The sample server (image_build.sample_server: MBR, /boot, /, swap, fstab by /dev/sdX
names, a data disk at /mnt/disk1) is mounted read-only in the `src` namespace; the
receiver runs in `ecs` with two empty target disks (loop devices over sparse files),
the `local` provider and its verification boot. `go2aliyun migrate --cutover` pushes
through TLS; the receiver prepares the disks, converts, boots the copy under qemu,
writes the image as qcow2 files. Then this test boots the image once more itself and
reads it back: every source file is in it, byte for byte with its metadata, or was
changed by the conversion and left its original as ``<file>.pre-migration``.
"""

import os

import pytest

from tests.helpers import e2e

pytestmark = [pytest.mark.root, pytest.mark.qemu]


def test_sample_server_migrates_to_an_image_that_boots(tmp_path):
    with e2e.world(str(tmp_path)) as w:
        r = w.migrate("--cutover")
        w.receiver.stop()
        assert r.returncode == 0 and e2e.FINISHED in r.stdout, w.explain(r)
        doc = w.receiver.document()
        assert doc["image"]["path"] == w.image_dir() and w.image_dir() in r.stdout
        assert w.verified_by_receiver()
        verdict = w.boot_image()
        assert "ttyS0" in verdict.console
        assert os.path.isdir(os.path.join(w.root, "mnt", "disk1", "lost+found"))
        w.check_files()
