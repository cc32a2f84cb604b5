"""Faults survived: a migration of the sample server that is interrupted at every point
issue 7 names, continued by rerunning ``go2aliyun migrate`` as an operator would, and
still ends with the verified image; then the incremental path (a ``--sync-only`` pass,
files changed, added and deleted on the source, a ``--cutover`` pass) in the same
migration; and the receiver's state folder filling up.

How each fault is hit (no fake, no hook in the product but the state file it writes):

* PREPARING: the receiver crashes (serve and every process under it SIGKILLed at
  once) as soon as the system target's first partition shows in sysfs: the table is
  written, the filesystems are not made yet;
* CONVERTING: the test polls ``STATE/migration.json`` and stops the receiver (SIGTERM
  to serve, which stops API, worker, relay and rsyncd) while it shows the step, which
  lasts more than a minute (initramfs and GRUB in a chroot);
* the push is made long enough by a ``bandwidth_limit`` in user_config.json; during it
  the source script is SIGKILLed, the veth is cut for 30 s (``ip link set down``), and
  the receiver crashes (serve and every process under it SIGKILLed at once).

The receiver is always started again on the same state folder, like systemd would. A
source run that ended on a fault is run again; the final check is the one a clean run
must pass (the demo's default mode makes it too, tests/image_build/test_local_provider.py):
the receiver's verification boot of the converted disks, and every file of the source,
read back from the image files, as on the source.
"""

import contextlib
import errno
import glob
import json
import os
import signal
import sys
import time

import pytest

from image_build.dev.netns import REPO, ReceiverProcess, netns_pair, tail_of
from tests.helpers import e2e, fidelity, sourcetree
from wire import clientdata, runner

# KiB/s for rsync --bwlimit: compressed (rsync -z below 50 MB/s), the ~700 MB of the system
# disk take about a minute: long enough for three faults.
BANDWIDTH_LIMIT = 6000
IO_TIMEOUT = "120"


class Driver(object):
    """Runs the source script and reruns it when a fault ended it."""

    def __init__(self, world, *args):
        self.w = world
        self.args = list(args) + ["--io-timeout", IO_TIMEOUT]
        self.runs = []
        self.proc = None
        self.start()

    def start(self):
        self.proc = self.w.start_migrate(*self.args)
        self.runs.append(self.proc)
        return self.proc

    def alive(self, what):
        """Make sure the source script runs: rerun it when it ended (not finished)."""
        p = self.proc
        if p.poll() is None:
            return p
        out = self.w.output(p)
        assert p.returncode != 0 and e2e.FINISHED not in out, (
            "the source ended on its own before %s:\n%s" % (what, out[-3000:]))
        return self.start()

    def finish(self, timeout):
        """Wait for the end, rerunning after a fault at most twice; return the output."""
        deadline = time.time() + timeout
        while True:
            p = self.proc
            try:
                p.wait(max(1, deadline - time.time()))
            except Exception:  # noqa: BLE001 - a timeout: say where it stood
                raise AssertionError("the source did not end in %ss:\n%s" % (
                    timeout, self.w.explain(p))) from None
            out = self.w.output(p)
            if p.returncode == 0:
                return out
            assert len(self.runs) < 8, self.w.explain(p)
            self.start()

    def kill(self):
        """SIGKILL the source script (not its group: its rsync dies on the broken pipe)."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def _change_source(disk1):
    """Changed, added and deleted files on the data disk between the passes."""
    files = sorted(p for p in glob.glob(os.path.join(disk1, "**", "*"), recursive=True)
                   if os.path.isfile(p) and not os.path.islink(p)
                   and "lost+found" not in p)
    assert len(files) >= 2, files
    changed, deleted = files[0], files[-1]
    with open(changed, "ab") as f:
        f.write(b"\nchanged between the passes\n")
    os.unlink(deleted)
    added = os.path.join(disk1, "added-after-the-first-pass.txt")
    with open(added, "w") as f:
        f.write("new on the source after the first pass\n")
    return [os.path.relpath(p, disk1) for p in (changed, deleted, added)]


@pytest.mark.root
@pytest.mark.qemu
@pytest.mark.long(minutes=3)
def test_migration_survives_faults_then_takes_the_changes(tmp_path):
    config = dict(e2e.CONFIG, bandwidth_limit=BANDWIDTH_LIMIT)
    with e2e.world(str(tmp_path), config=config, writable_data=True) as w:
        # 1. the receiver crashes in the middle of PREPARING (right after it wrote the
        #    system disk's partition table, before mkfs), then starts again
        d = Driver(w, "--sync-only")
        w.wait_state("PREPARING", timeout=180, proc=d.proc)
        w.wait_until(w.target_partitioned, "partition table on the system target",
                     proc=d.proc)
        w.crash_receiver()
        doc = w.state()
        assert doc["state"] == "PREPARING", doc
        w.restart_receiver()

        # 2. the source script SIGKILLed during the push, then run again
        w.wait_state("SYNCING", timeout=180, proc=d.alive("SYNCING"))
        time.sleep(6)
        d.alive("the SIGKILL")
        d.kill()
        d.start()
        w.wait_state("SYNCING", timeout=60, proc=d.proc)
        time.sleep(4)

        # 3. the link cut for 30 s during the push
        d.alive("the link cut")
        w.net.link_down()
        try:
            time.sleep(30)
        finally:
            w.net.link_up()
        time.sleep(8)

        # 4. the receiver crashes during SYNCING (every process SIGKILLed), restarts
        assert w.state()["state"] == "SYNCING", "the push ended too early: raise the load"
        d.alive("the crash")
        w.crash_receiver()
        w.restart_receiver()

        out = d.finish(timeout=600)
        assert "sync pass done" in out, out[-3000:]
        doc = w.state()
        assert doc["state"] == "READY_FOR_DATA", doc
        assert any(p.get("finished_at") and not p["final"] for p in doc["passes"])
        assert len(d.runs) >= 2  # the SIGKILL needed a rerun at least

        # 5. the incremental pass: the source changed, then --cutover; the receiver is
        #    stopped during CONVERTING and started again.
        changed, deleted, added = _change_source(w.disk1_source)
        d = Driver(w, "--cutover")
        w.wait_state("CONVERTING", timeout=300, proc=d.proc)
        time.sleep(10)
        w.receiver.stop()
        doc = w.state()
        assert doc["state"] == "CONVERTING", doc
        w.restart_receiver()
        out = d.finish(timeout=1200)
        w.receiver.stop()
        assert e2e.FINISHED in out and w.image_dir() in out, out[-3000:]
        doc = w.state()
        assert doc["state"] in ("IMAGE_READY", "RELEASED"), doc
        assert [p["final"] for p in doc["passes"] if p.get("finished_at")][-1] is True
        assert w.verified_by_receiver()  # booted to a login prompt on the receiver

        def incremental(system, data):
            assert not os.path.lexists(os.path.join(data, deleted))
            for rel in (changed, added):
                assert fidelity._sha256(os.path.join(data, rel)) == fidelity._sha256(
                    os.path.join(w.disk1_source, rel)), rel

        w.check_files(also=incremental)


# --------------------------------------------------------------- state folder full

CONFIG_FOLDERS = {"access_id": "", "secret_key": "", "region_id": "", "image_name": "E2E_FULL",
                  "system_disk_size": 40, "platform": "Debian", "architecture": "x86_64",
                  "bandwidth_limit": 0, "data_disks": []}


@contextlib.contextmanager
def small_tmpfs(path, size="8m"):
    os.makedirs(path)
    runner.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size, "g2a-state", path])
    try:
        yield path
    finally:
        runner.run(["umount", "-l", path], ok_codes=None)


def _fill(folder):
    """Write a file until the filesystem is full (to the last page); returns its path."""
    path = os.path.join(folder, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (256 * 1024, 4096, 512):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)
    return path


def _check_state_intact(state_dir, expect_state):
    with open(os.path.join(state_dir, "migration.json")) as f:
        doc = json.load(f)  # valid JSON: nothing half-written
    assert doc["state"] == expect_state, doc
    assert not glob.glob(os.path.join(state_dir, "*.tmp-*"))
    return doc


@pytest.mark.root
def test_state_folder_full_is_a_clear_error_then_continues(tmp_path):
    base = str(tmp_path)
    root, work, target = (os.path.join(base, n) for n in ("source", "work", "target"))
    for p in (root, work, target):
        os.makedirs(p)
    tree = sourcetree.build(root)
    with open(os.path.join(work, "user_config.json"), "w") as f:
        json.dump(CONFIG_FOLDERS, f)
    os.makedirs(os.path.join(work, "Excludes"))
    with open(os.path.join(work, "Excludes", "rsync_excludes_linux.txt"), "w") as f:
        f.write(sourcetree.USER_EXCLUDE_RULE + "\n")
    with netns_pair() as net, small_tmpfs(os.path.join(base, "state")) as state_dir:
        receiver = ReceiverProcess(net, base, {"system": target})
        receiver.start()
        try:
            argv = [sys.executable, "-m", "source_script.cli", "migrate", "--workdir",
                    work, "--root", root, "--receiver", net.ecs_ip, "--fingerprint",
                    receiver.status["fingerprint"], "--yes", "--io-timeout", "15",
                    "--no-check", "--sync-only"]
            env = {"GO2ALIYUN_TOKEN": receiver.status["token"], "PYTHONPATH": REPO}

            def migrate():
                r = net.run(net.src, argv, env=env, ok_codes=None, timeout=180, cwd=work)
                return r, r.stdout + r.stderr

            def refused(expect_state):
                r, out = migrate()
                assert r.returncode != 0, out
                assert "no space" in out and state_dir in out, out[-2000:]
                assert "state.no_space" in out, out[-2000:]
                _check_state_intact(state_dir, expect_state)

            # full before the first run: the session is refused, the token not spent
            _fill(state_dir)
            refused("NEW")
            for p in glob.glob(os.path.join(state_dir, "filler*")):
                os.unlink(p)
            r, out = migrate()
            assert r.returncode == 0 and "sync pass done" in out, out[-3000:]
            assert fidelity.compare(root, target, tree.excluded) == []
            _check_state_intact(state_dir, "READY_FOR_DATA")

            # full between two passes: the next pass is refused, then runs
            _fill(state_dir)
            with open(os.path.join(root, "added-while-full"), "w") as f:
                f.write("second pass\n")
            refused("READY_FOR_DATA")
            for p in glob.glob(os.path.join(state_dir, "filler*")):
                os.unlink(p)
            r, out = migrate()
            assert r.returncode == 0 and "sync pass done" in out, out[-3000:]
            doc = _check_state_intact(state_dir, "READY_FOR_DATA")
            assert [bool(p.get("finished_at")) for p in doc["passes"]][-1] is True
            assert fidelity.compare(root, target, tree.excluded) == []
            assert clientdata.load(work)["migration_id"] == doc["id"]
        finally:
            receiver.stop()
            print(tail_of(receiver.log))
