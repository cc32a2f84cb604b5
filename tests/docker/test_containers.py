"""The receiver container and a source container on one compose network.

The tests of this module share one stack (tests/docker/conftest.py) and run in order,
as a migration does:

1. the receiver container is healthy (its HEALTHCHECK on /healthz) and answers a source
   container: /healthz with the pinned certificate, a wrong token and a wrong pin refused;
2. ``go2aliyun migrate --sync-only`` from the source container; the receiver container is
   killed (SIGKILL) mid-transfer and started again; the same run resumes and finishes;
   the receiver's disks (loop devices on image files, made inside the container) hold a
   faithful copy of the sample server (checked on the host, after a clean stop);
3. the receiver is started again (its disks mounted again by the entry point) and
   ``go2aliyun migrate --cutover`` runs the rest: conversion, the verification boot and
   the local provider's image set; the test boots that image once more on the host and
   compares file checksums with the source.
"""

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

import pytest

from receiver import blockdev
from receiver.disks.apply import wait_for_partitions
from tests.docker.conftest import IMAGE_NAME, compose_stack, loops_of
from tests.helpers import fidelity
from tests.helpers.e2e import PROBE, show
from wire import bootcheck, runner

pytestmark = [pytest.mark.root, pytest.mark.long(minutes=3)]

# What the system disk does not carry (the seed's defaults, relative to /) and what mkfs
# makes on each new filesystem.
SYSTEM_EXCLUDED = ["dev/*", "proc/*", "sys/*", "run/*", "tmp/*", "media/*"]
NEW_ON_TARGET = ["lost+found", "lost+found/*", "boot/lost+found", "boot/lost+found/*",
                 "mnt/disk1/lost+found", "mnt/disk1/lost+found/*"]
# Files conversion does not touch: their checksums must survive into the image.
CHECKSUMMED = ["usr/bin", "usr/lib/x86_64-linux-gnu/libc.so.6", "etc/passwd", "etc/motd",
               "mnt/disk1/app"]


@pytest.fixture(scope="module")
def stack(receiver_image):
    # our own folder, not pytest's numbered ones: those of a long module can be rotated
    # away by other pytest sessions started on the same machine meanwhile
    base = tempfile.mkdtemp(prefix="g2a-docker-", dir="/var/tmp")
    try:
        with compose_stack(base, receiver_image, bandwidth_limit=40000) as s:
            yield s
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def mounted_target(system_dev, disk1_dev):
    """The receiver's disks as the migrated system sees them, read-only, on the host."""
    root = tempfile.mkdtemp(prefix="g2a-target-")
    done = []
    try:
        # the partitions were made inside the container: make sure the host's nodes
        # exist and point at them (the receiver's own wait, which also fixes stale ones)
        wait_for_partitions(system_dev, [1, 2])
        wait_for_partitions(disk1_dev, [1])
        for node, where in ((system_dev + "p2", root), (system_dev + "p1", root + "/boot"),
                            (disk1_dev + "p1", root + "/mnt/disk1")):
            runner.run(["mount", "-o", "ro,noload", node, where])
            done.append(where)
        yield root
    finally:
        for where in reversed(done):
            runner.run(["umount", where], ok_codes=None)
        os.rmdir(root)


def checksums(root, paths):
    out = {}
    for top in paths:
        full = os.path.join(root, top)
        files = [full] if not os.path.isdir(full) else [
            os.path.join(d, f) for d, _dirs, names in os.walk(full) for f in names]
        for path in files:
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_receiver_container_is_healthy_and_answers_the_source(stack):
    assert stack.health() == "running healthy"
    st = stack.status()
    assert st["token"] and st["fingerprint"] and st["address"] == "receiver"
    r = stack.compose(*stack.source_argv("/opt/go2aliyun/bin/python", "-c", PROBE,
                                         "receiver", st["fingerprint"]), ok_codes=None)
    assert r.returncode == 0, show(r, 5000)
    assert json.loads(r.stdout) == {"healthz": {"status": "ok"},
                                    "wrong_token": "auth.token_invalid",
                                    "unproven": "auth.receiver_unproven",
                                    "other_pin": "auth.fingerprint_mismatch"}
    # the token went to the container's log (docker logs), as to an ECS console
    logs = stack.compose("logs", "receiver").stdout
    assert "fingerprint: %s" % st["fingerprint"] in logs


def _progress(path):
    try:
        with open(path) as f:
            lines = f.read().split()
        return lines[0], int(lines[1])
    except (OSError, IndexError, ValueError):
        return None, 0


def test_receiver_killed_mid_transfer_and_the_source_resumes(stack):
    progress = os.path.join(stack.work, "progress")
    log_path = os.path.join(stack.work, "migrate-1.out")
    with open(log_path, "wb") as log:
        proc = stack.start_migrate("--sync-only", "--progressfile", progress, log=log)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            phase, pct = _progress(progress)
            if phase == "DoRsync" and pct >= 10:
                break
            time.sleep(0.5)
        phase, pct = _progress(progress)
        assert proc.poll() is None and phase == "DoRsync" and pct < 90, (
            "the transfer did not run long enough to be interrupted: %s %s" % (phase, pct))
        assert stack.document()["state"] == "SYNCING"
        stack.compose("kill", "-s", "SIGKILL", "receiver")
        time.sleep(2)
        stack.compose("start", "receiver")
        stack.wait_healthy()
        rc = proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with open(log_path, errors="replace") as f:
        out = f.read()
    assert rc == 0, out[-5000:]
    doc = stack.document()
    assert doc["state"] == "READY_FOR_DATA", doc
    data = stack.client_data()
    assert data["disks"]["system"]["state"] == "synced"
    assert data["disks"]["disk1"]["state"] == "synced"
    logs = stack.compose("logs", "receiver").stdout
    assert "reusing /dev/loop" in logs  # the restarted container found its disks again
    # the run resumed: the attempt after the restart did not send everything again
    system = data["disks"]["system"]
    assert 0 < system["literal_bytes"] < 0.95 * system["bytes"], (
        system, out[-3000:], logs[-5000:], stack.read_state("prepare.json").get("actions"))

    # a clean stop unmounts (the container's mount namespace goes); look on the host
    stack.compose("stop", "-t", "30", "receiver")
    system_dev = loops_of(os.path.join(stack.dirs["disks"], "system.img"))
    disk1_dev = loops_of(os.path.join(stack.dirs["disks"], "disk1.img"))
    assert len(system_dev) == 1 and len(disk1_dev) == 1, (system_dev, disk1_dev)
    with mounted_target(system_dev[0], disk1_dev[0]) as target:
        problems = fidelity.compare(stack.dirs["source"], target,
                                    SYSTEM_EXCLUDED + NEW_ON_TARGET,
                                    ignore_extra=NEW_ON_TARGET)
    assert problems == [], "\n".join(problems[:50])


@pytest.mark.qemu
def test_cutover_converts_verifies_and_the_image_boots(stack, tmp_path):
    stack.compose("start", "receiver")
    stack.wait_healthy()
    logs = stack.compose("logs", "receiver").stdout
    assert "mounting the prepared target disks again" in logs
    r = stack.migrate("--cutover", timeout=2400)
    assert r.returncode == 0, show(r, 5000) + "\n" + stack.compose(
        "logs", "--tail", "80", "receiver", ok_codes=None).stdout
    assert "Goto Aliyun Finished!" in r.stdout
    doc = stack.document()
    assert doc["state"] in ("IMAGE_READY", "RELEASED"), doc
    folder = os.path.join(stack.dirs["output"], IMAGE_NAME)
    with open(os.path.join(folder, "image.json")) as f:
        desc = json.load(f)
    files = [os.path.join(folder, d["file"]) for d in desc["disks"]]
    assert [d["module"] for d in desc["disks"]] == ["system", "disk1"]
    verify = stack.read_state("verify.json")
    assert verify["ok"] is True, verify

    # our own boot of the image set, on overlays (the files stay as they are)
    verdict = bootcheck.boot_and_watch(files, firmware="bios", workdir=str(tmp_path / "boot"),
                                       timeout=600)
    assert verdict.ok, verdict.console[-3000:]

    # the files conversion leaves alone arrived bit for bit
    raws = []
    try:
        for path in files:
            raw = str(tmp_path / (os.path.basename(path) + ".raw"))
            runner.run(["qemu-img", "convert", "-O", "raw", path, raw], timeout=600)
            raws.append(blockdev.attach(raw, read_only=True))
        with mounted_target(raws[0], raws[1]) as target:
            got = checksums(target, CHECKSUMMED)
        want = checksums(stack.dirs["source"], CHECKSUMMED)
    finally:
        for dev in raws:
            blockdev.detach(dev)
    assert len(want) > 100 and got == want


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
