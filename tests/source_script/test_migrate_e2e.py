"""End to end: `go2aliyun migrate` in network namespace `src` against
`go2aliyun-receiver serve` in namespace `ecs`, over a real veth link, real TLS, real
rsync; then the copy is compared with the source tree (tests/helpers/fidelity.py).

Each test builds its own namespace pair, receiver state folder, target folder and
source tree, and removes them in finally (fixtures), even when it fails.
"""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from image_build.dev.netns import REPO, ReceiverProcess, netns_pair
from tests.helpers import fidelity, sourcetree
from tests.helpers.e2e import show
from tests.helpers.oldpython import needs_python36, python36
from wire import clientdata, runner

pytestmark = pytest.mark.root

FINISHED = "Goto Aliyun Finished!"
NOT_FINISHED = "Goto Aliyun Not Finished!"
CONFIG = {"access_id": "", "secret_key": "", "region_id": "", "image_name": "E2E_IMAGE",
          "system_disk_size": 40, "platform": "Debian", "architecture": "x86_64",
          "bandwidth_limit": 0, "data_disks": []}


class World(object):
    def __init__(self, net, base):
        self.net = net
        self.base = base
        self.root = os.path.join(base, "source")
        self.work = os.path.join(base, "work")
        self.target = os.path.join(base, "target")
        for d in (self.root, self.work, self.target):
            os.makedirs(d)
        self.tree = sourcetree.build(self.root)
        self.config = dict(CONFIG)
        self.write_config()
        os.makedirs(os.path.join(self.work, "Excludes"))
        with open(os.path.join(self.work, "Excludes", "rsync_excludes_linux.txt"), "w") as f:
            f.write(sourcetree.USER_EXCLUDE_RULE + "\n")
        self.receiver = ReceiverProcess(net, base, {"system": self.target})

    def write_config(self):
        with open(os.path.join(self.work, "user_config.json"), "w") as f:
            json.dump(self.config, f)

    @property
    def token(self):
        return self.receiver.status["token"]

    @property
    def fingerprint(self):
        return self.receiver.status["fingerprint"]

    # how the source script is started: the checkout, or (see the zipapp test) a
    # go2aliyun.pyz under another interpreter
    prefix = (sys.executable, "-m", "source_script.cli")
    pythonpath = REPO

    def argv(self, *extra):
        return list(self.prefix) + ["migrate", "--workdir", self.work,
                "--root", self.root, "--receiver", self.net.ecs_ip, "--fingerprint",
                self.fingerprint, "--yes", "--io-timeout", "15", "--no-check"] + list(extra)

    def env(self):
        env = {"GO2ALIYUN_TOKEN": self.token}
        if self.pythonpath:
            env["PYTHONPATH"] = self.pythonpath
        return env

    def migrate(self, *extra, timeout=180):
        return self.net.run(self.net.src, self.argv(*extra), env=self.env(), ok_codes=None,
                            timeout=timeout, cwd=self.work)

    def start_migrate(self, *extra):
        return self.net.start(self.net.src, self.argv(*extra), env=self.env(), cwd=self.work,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)

    def faithful(self):
        return fidelity.compare(self.root, self.target, self.tree.excluded)

    def client_data(self):
        return clientdata.load(self.work)


@pytest.fixture
def world(tmp_path):
    with netns_pair() as net:
        w = World(net, str(tmp_path))
        w.receiver.start()
        try:
            yield w
        finally:
            w.receiver.stop()


def _target_bytes(path):
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def _wait_bytes(path, at_least, proc, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if _target_bytes(path) >= at_least:
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError("the migration ended before %d bytes arrived: %s"
                                 % (at_least, proc.stdout.read().decode(errors="replace")))
        time.sleep(0.1)
    raise AssertionError("fewer than %d bytes arrived in %ss" % (at_least, timeout))


# ------------------------------------------------------------------------ tests

@pytest.fixture
def world_with_data_disk(tmp_path):
    """The source has a data disk at /srv/disk1 (its own tree), the receiver a target
    root for it."""
    with netns_pair() as net:
        w = World(net, str(tmp_path))
        w.disk1_src = os.path.join(w.root, "srv", "disk1")
        os.makedirs(w.disk1_src)
        w.disk1_tree = sourcetree.build(w.disk1_src)
        w.disk1_target = os.path.join(str(tmp_path), "target-disk1")
        os.makedirs(w.disk1_target)
        w.receiver.roots["disk1"] = w.disk1_target
        w.config["data_disks"] = [{"data_disk_index": 1, "data_disk_size": 20,
                                   "src_path": "/srv/disk1"}]
        w.write_config()
        w.receiver.start()
        try:
            yield w
        finally:
            w.receiver.stop()


def test_full_push_is_faithful(world_with_data_disk):
    world = world_with_data_disk
    progressfile = os.path.join(world.base, "progress")
    r = world.migrate("--sync-only", "--progressfile", progressfile)
    assert r.returncode == 0, show(r)
    assert "sync pass done" in r.stdout
    with open(progressfile) as f:
        assert f.read() == "DoRsync\n100\n"
    # the system disk holds everything but the data disk's content (its folder stays)
    assert fidelity.compare(world.root, world.target,
                            world.tree.excluded + ["srv/disk1/*"]) == []
    assert os.listdir(os.path.join(world.target, "srv", "disk1")) == []
    # the data disk: its own tree, with the data disk's default excludes only
    assert fidelity.compare(world.disk1_src, world.disk1_target,
                            ["lost+found/*"]) == []
    assert world.client_data()["disks"]["disk1"]["state"] == "synced"
    doc = world.receiver.document()
    assert doc["state"] == "READY_FOR_DATA"
    assert [p["final"] for p in doc["passes"]] == [False]
    data = world.client_data()
    assert data["disks"]["system"]["state"] == "synced"
    assert data["migration_id"] == doc["id"]
    assert "token" not in data["receiver"]
    key = os.path.join(world.work, "session", "client.key")
    assert os.stat(key).st_mode & 0o777 == 0o600
    assert os.stat(os.path.join(world.work, "client_data")).st_mode & 0o777 == 0o600
    # the work folder never reaches the copy, nor does anything excluded
    assert not os.path.exists(os.path.join(world.target, "var", "cache", "skipme", "big"))


@needs_python36
def test_zipapp_on_python36_pushes_faithfully(world):
    """The source side as shipped: go2aliyun.pyz (click 7.1.2) on Python 3.6, the TLS
    bridge included, under rsync's LC_ALL=C."""
    pyz = os.path.join(world.base, "go2aliyun.pyz")
    runner.run([sys.executable, "-m", "image_build.dev.pyz", "-o", pyz], cwd=REPO, timeout=300)
    world.prefix = (python36(), pyz)
    world.pythonpath = None  # and the cwd is the work folder: only the zipapp has the code
    r = world.migrate("--sync-only")
    assert r.returncode == 0, show(r)
    assert world.faithful() == []
    assert world.client_data()["disks"]["system"]["state"] == "synced"


def test_sync_only_twice_then_cutover(world):
    r = world.migrate("--sync-only")
    assert r.returncode == 0, show(r)
    # the source keeps working between passes
    with open(os.path.join(world.root, "data", "new-between-passes"), "wb") as f:
        f.write(os.urandom(300000))
    os.unlink(os.path.join(world.root, "data", "empty"))
    os.chmod(os.path.join(world.root, "etc", "hostname"), 0o600)
    r = world.migrate("--sync-only")
    assert r.returncode == 0, show(r)
    assert world.faithful() == []
    data = world.client_data()
    assert data["disks"]["system"]["transferred_files"] == 1  # only the new file
    with open(os.path.join(world.root, "data", "at-cutover"), "w") as f:
        f.write("last words\n")
    r = world.migrate("--cutover")
    assert world.faithful() == []
    doc = world.receiver.document()
    assert [p["final"] for p in doc["passes"]] == [False, False, True]
    assert all(p.get("finished_at") for p in doc["passes"])
    assert doc["state"] not in ("READY_FOR_DATA", "SYNCING")
    if r.returncode == 0:
        assert FINISHED in r.stdout, show(r)
    else:
        # this build's receiver cannot convert yet: the reason and the log are named
        assert NOT_FINISHED in r.stdout, show(r)
        assert doc["state"] == "FAILED" and doc["error"]["step"] == "CONVERTING"
        assert re.search(r"log: .*/logs/go2aliyun-.*\.log", r.stdout)
        # a rerun retries the failed step once (and says so), then reports again
        r = world.migrate("--cutover")
        assert "retrying it" in r.stderr, show(r)
        assert r.returncode != 0 and NOT_FINISHED in r.stdout, show(r)
        assert world.receiver.document()["error"]["step"] == "CONVERTING"


def test_sigkill_mid_transfer_then_rerun_sends_only_the_rest(world):
    sourcetree.add_bulk(world.root, "bulk", 12, 4 * 1024 * 1024)
    world.config["bandwidth_limit"] = 8192  # KiB/s: ~6 s for 48 MiB
    world.write_config()
    p = world.start_migrate("--sync-only")
    _wait_bytes(world.target, 16 * 1024 * 1024, p)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(10)
    time.sleep(1)
    # nothing of the killed run goes on sending behind our back
    size = _target_bytes(world.target)
    time.sleep(1.5)
    assert _target_bytes(world.target) == size
    world.config["bandwidth_limit"] = 0
    world.write_config()
    r = world.migrate("--sync-only")
    assert r.returncode == 0, show(r)
    assert world.faithful() == []
    stats = world.client_data()["disks"]["system"]
    total = stats["bytes"]
    assert stats["literal_bytes"] < total - 12 * 1024 * 1024, stats


def test_receiver_restart_mid_transfer(world):
    sourcetree.add_bulk(world.root, "bulk", 8, 4 * 1024 * 1024)
    world.config["bandwidth_limit"] = 6144
    world.write_config()
    p = world.start_migrate("--sync-only")
    _wait_bytes(world.target, 8 * 1024 * 1024, p)
    world.receiver.stop()
    time.sleep(1)
    world.receiver.start(fresh=False)
    out = p.communicate(timeout=180)[0].decode(errors="replace")
    if p.returncode != 0:
        # the run gave up: a rerun must continue
        r = world.migrate("--sync-only")
        assert r.returncode == 0, show(r)
    else:
        assert "retrying" in out, out
    assert world.faithful() == []


def test_link_cut_and_restored(world):
    sourcetree.add_bulk(world.root, "bulk", 8, 4 * 1024 * 1024)
    world.config["bandwidth_limit"] = 6144
    world.write_config()
    p = world.start_migrate("--sync-only", "--retries", "0", "--io-timeout", "6")
    _wait_bytes(world.target, 8 * 1024 * 1024, p)
    world.net.link_down()
    try:
        out = p.communicate(timeout=120)[0].decode(errors="replace")
    finally:
        world.net.link_up()
    assert p.returncode != 0, out
    assert NOT_FINISHED in out and "log: " in out, out
    before = _target_bytes(world.target)
    world.config["bandwidth_limit"] = 0
    world.write_config()
    r = world.migrate("--sync-only")
    assert r.returncode == 0, show(r)
    assert world.faithful() == []
    stats = world.client_data()["disks"]["system"]
    assert stats["literal_bytes"] <= stats["bytes"] - before + 4 * 1024 * 1024, stats


def test_network_security(world):
    net = world.net
    # the rsync daemon is on the receiver's loopback only: nothing on 873 from src,
    # and plain rsync to the data port gets no module list
    r = net.run(net.src, ["rsync", "--contimeout=5", "rsync://%s/" % net.ecs_ip],
                ok_codes=None, timeout=30)
    assert r.returncode != 0
    r = net.run(net.src, ["rsync", "--contimeout=5", "--port=8703",
                          "rsync://%s/system/" % net.ecs_ip], ok_codes=None, timeout=30)
    assert r.returncode != 0 and "system" not in r.stdout
    # a run: the token never shows in ps, the logs or client_data
    seen = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            seen.append(runner.run(["ps", "-eo", "args"], timeout=10).stdout)
            time.sleep(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        r = world.migrate("--sync-only")
    finally:
        stop.set()
        t.join(10)
    assert r.returncode == 0, show(r)
    assert any("tls-bridge" in s for s in seen) or any("rsync" in s for s in seen)
    assert not any(world.token in s for s in seen)
    with open(os.path.join(world.work, "session", "client.key")) as f:
        key_pem = f.read()
    key_body = key_pem.strip().splitlines()[1]
    for dirpath, _dirs, files in os.walk(world.work):
        for name in files:
            if name == "client.key":
                continue
            with open(os.path.join(dirpath, name), errors="replace") as f:
                text = f.read()
            assert world.token not in text, name
            assert key_body not in text, name
    assert world.token not in r.stdout + r.stderr
    # the token is spent: a second session with it is refused with a clear error
    other = os.path.join(world.base, "work2")
    os.makedirs(other)
    with open(os.path.join(other, "user_config.json"), "w") as f:
        json.dump(world.config, f)
    argv = world.argv()
    argv[argv.index("--workdir") + 1] = other
    r = net.run(net.src, argv, env=world.env(), ok_codes=None, timeout=60, cwd=REPO)
    assert r.returncode == 7, show(r)
    assert "auth.token_used" in r.stdout, show(r)


def test_preflight_blockers_stop_before_anything_is_sent(world):
    # the test tree has no kernel and no boot loader: `go2aliyun check` blocks
    argv = [a for a in world.argv("--sync-only") if a != "--no-check"]
    r = world.net.run(world.net.src, argv, env=world.env(), ok_codes=None, timeout=60,
                      cwd=REPO)
    assert r.returncode == 4, show(r)
    assert NOT_FINISHED in r.stdout and "check.blocked" in r.stdout and "kernel" in r.stdout
    assert world.receiver.document()["state"] == "NEW"
    assert os.listdir(world.target) == []


def test_wrong_fingerprint_sends_nothing(world):
    argv = world.argv("--sync-only")
    argv[argv.index("--fingerprint") + 1] = "AB" * 32
    r = world.net.run(world.net.src, argv, env=world.env(), ok_codes=None, timeout=60,
                      cwd=REPO)
    assert r.returncode == 7, show(r)
    assert "auth.fingerprint_mismatch" in r.stdout and "interception" in r.stdout
    # the token was not spent: the right fingerprint still opens the session; without
    # --yes and nobody to answer, it stops before the receiver touches its disks
    argv = [a for a in world.argv("--sync-only") if a != "--yes"]
    r = world.net.run(world.net.src, argv, env=world.env(), ok_codes=None, timeout=60,
                      cwd=world.work)
    assert r.returncode == 130 and NOT_FINISHED in r.stdout, show(r)
    assert "Continue?" in r.stderr
    assert world.receiver.document()["state"] == "PLANNED"
    r = world.migrate("--sync-only")
    assert r.returncode == 0, show(r)
    assert world.faithful() == []


def test_bandwidth_limit(world):
    sourcetree.add_bulk(world.root, "bulk", 50, 4 * 1024 * 1024)  # 200 MiB
    limit = 10240  # KiB/s -> ~20 s
    world.config["bandwidth_limit"] = limit
    world.write_config()
    r = world.migrate("--sync-only", timeout=240)
    assert r.returncode == 0, show(r)
    stats = world.client_data()["disks"]["system"]
    sent, took = stats["literal_bytes"], stats["seconds"]
    assert sent >= 200 * 1024 * 1024
    rate = sent / 1024.0 / took
    print("bandwidth_limit %d KiB/s: %.0f KiB/s over %.1f s" % (limit, rate, took))
    assert 0.9 * limit <= rate <= 1.1 * limit, (rate, took)


def test_receiver_unreachable_names_the_port(world):
    world.receiver.stop()
    r = world.migrate("--sync-only", timeout=60)
    assert r.returncode == 6, show(r)
    assert NOT_FINISHED in r.stdout
    assert "network.refused" in r.stdout and "port 8080" in r.stdout


def test_disk_full_on_the_receiver(world):
    sourcetree.add_bulk(world.root, "bulk", 3, 4 * 1024 * 1024)
    # mount before the receiver starts: `ip netns exec` gave it its own mount namespace
    world.receiver.stop()
    runner.run(["mount", "-t", "tmpfs", "-o", "size=8m", "g2a-e2e-full", world.target])
    try:
        world.receiver.start(fresh=False)
        r = world.migrate("--sync-only")
        assert r.returncode == 8, show(r)
        assert NOT_FINISHED in r.stdout
        assert "transfer.disk_full" in r.stdout and "full" in r.stdout
    finally:
        world.receiver.stop()
        runner.run(["umount", world.target])
