"""The end-to-end harness: the sample server, two namespaces, target disks, the receiver,
the source script, and the checks of the image it makes.

    with e2e.world(str(tmp_path)) as w:
        r = w.migrate("--cutover")
        w.assert_finished(r)
        w.check_image()

:func:`world` mounts the sample Debian 12 server (tests/helpers/sample.py) read-only
under a temporary root that the ``src`` namespace reads; with ``writable_disk1`` its
data disk is a sparse copy of the sample's disk1 image, attached and mounted read-write
at ``/mnt/disk1`` instead (a real ext4 on a real loop partition, so the inventory sees
what it sees on a server), which tests change between passes. The receiver runs in
``ecs`` with two empty 20 GiB target disks (loop devices over sparse files), the
``local`` provider and its verification boot. Everything is undone in ``finally``.

Faults: :meth:`World.wait_state` polls the receiver's ``STATE/migration.json``;
:meth:`World.crash_receiver` SIGKILLs serve and every process under it (a crash),
``World.receiver.stop()`` is the polite SIGTERM; ``World.net.link_down()/link_up()``
cut the veth.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from image_build.dev.netns import REPO, ReceiverProcess, netns_pair, tail_of
from receiver import blockdev
from tests.helpers import fidelity, sample
from wire import runner

GIB = 1024 ** 3
FINISHED = "Goto Aliyun Finished!"
IMAGE_NAME = "E2E_SAMPLE"
CONFIG = {"access_id": "", "secret_key": "", "region_id": "", "image_name": IMAGE_NAME,
          "system_disk_size": 20, "platform": "Debian", "architecture": "x86_64",
          "bandwidth_limit": 0,
          "data_disks": [{"data_disk_index": 1, "data_disk_size": 20,
                          "src_path": "/mnt/disk1"}]}
# What the default excludes leave out of the system disk (the contents, not the folder).
SYSTEM_EXCLUDED = ["dev/*", "proc/*", "sys/*", "run/*", "tmp/*", "media/*", "mnt/*",
                   "lost+found/*", "var/lib/lxcfs/*"]
# Where the conversion keeps the originals it replaces (receiver.convert.apply.BACKUP_DIR,
# without its leading /).
KEPT = "var/lib/go2aliyun/pre-migration"
# Files the conversion regenerates rather than edits: no kept original (a small
# /boot may not hold two initramfs images); checked by the boot instead.
REGENERATED = ["boot/initrd.img-*", "boot/grub/*", "var/lib/initramfs-tools/*",
               "etc/initramfs-tools/*", "var/lib/dpkg/*", "var/cache/*", "var/log/*",
               "etc/ld.so.cache", "var/lib/systemd/*"]
# Runs where the source runs (``src``, the source container), given the receiver's
# address and fingerprint: the receiver answers with the pinned certificate and refuses
# a wrong token and a wrong pin (the right token is spent by ``go2aliyun migrate``).
PROBE = r"""
import json, sys, tempfile
from source_script import session
from wire.errors import Go2AliyunError
address, fingerprint = sys.argv[1], sys.argv[2]
out = {"healthz": session.Client(address, fingerprint).healthz()}
try:  # the source: the receiver cannot prove a token it did not make; nothing is sent
    session.open_session(address, fingerprint, "not-the-token", tempfile.mkdtemp())
    out["unproven"] = "accepted"
except Go2AliyunError as e:
    out["unproven"] = e.code
try:  # the receiver, asked directly: refuses the wrong token
    _, csr = session.make_key_and_csr(tempfile.mkdtemp())
    session.Client(address, fingerprint).open_session("not-the-token", csr)
    out["wrong_token"] = "accepted"
except Go2AliyunError as e:
    out["wrong_token"] = e.code
try:
    session.Client(address, "00" * 32).healthz()
    out["other_pin"] = "accepted"
except Go2AliyunError as e:
    out["other_pin"] = e.code
print(json.dumps(out))
"""


def show(r, tail=3000):
    """A finished command for an assertion message: its exit code and its output's tail."""
    return "exit %s\nstdout:\n%s\nstderr:\n%s" % (r.returncode, r.stdout[-tail:],
                                                  r.stderr[-tail:])


def loop_disks(base, sizes):
    """Empty sparse files of ``sizes`` ({name: bytes}) on loop devices; {name: dev}."""
    return blockdev.blank_disks(base, sizes)


@contextlib.contextmanager
def mounted_image(qcow2, partition, in_use=False):
    """A partition of a qcow2 image, read back through a raw copy, mounted read-only.
    ``in_use``: a disk of a running VM (``qemu-img -U``); its ext4 journal is replayed
    on the copy, so what the guest wrote and synced is there."""
    work = tempfile.mkdtemp(prefix="e2e-image-")
    raw = os.path.join(work, "disk.raw")
    mnt = os.path.join(work, "mnt")
    os.makedirs(mnt)
    dev = None
    try:
        runner.run(["qemu-img", "convert"] + (["-U"] if in_use else []) +
                   ["-O", "raw", qcow2, raw], timeout=600)
        dev = blockdev.attach(raw, read_only=not in_use, partitions=[partition])
        runner.run(["mount", "-o", "ro" if in_use else "ro,noload",
                    blockdev.partition(dev, partition), mnt])
        try:
            yield mnt
        finally:
            runner.run(["umount", mnt], ok_codes=None)
    finally:
        if dev:
            blockdev.detach(dev)
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def writable_disk1(root, base):
    """A read-write copy of the sample's data disk mounted at ``root``/mnt/disk1 (over
    nothing: the caller mounted only the system disk). Yields the mount point."""
    copy = os.path.join(base, "source-disk1.img")
    runner.run(["cp", "--sparse=always", sample.image("disk1"), copy], timeout=300)
    where = os.path.join(root, "mnt", "disk1")
    with blockdev.attached(copy, partitions=[1]) as dev:
        runner.run(["mount", blockdev.partition(dev, 1), where])
        try:
            yield where
        finally:
            runner.run(["umount", where], ok_codes=None)


def unexplained(problems, src, dst):
    """Differences that neither a kept original (under KEPT) nor a regeneration explains."""
    left = []
    for p in problems:
        if " for '" in p:
            rel = p.split(" for '", 1)[1].split("'", 1)[0]
        elif p.startswith("extra in copy: '"):
            rel = p.split("'", 2)[1]
            if rel == KEPT or rel.startswith(KEPT + "/") or \
                    fidelity.excluded(rel, REGENERATED) or rel in ("var/lib/go2aliyun",):
                continue
        else:
            left.append(p)
            continue
        pre = os.path.join(dst, KEPT, rel)
        if os.path.lexists(pre) and os.path.isfile(pre) and \
                fidelity._sha256(pre) == fidelity._sha256(os.path.join(src, rel)):
            continue
        if fidelity.excluded(rel, REGENERATED):
            continue
        left.append(p)
    return left


def descendants(pid):
    """Every process under ``pid`` (from /proc), children first found first."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


class World(object):
    """One migration of the sample server: see the module docstring."""

    def __init__(self, net, base, root, disks, disk1_source, config):
        self.net = net
        self.base = base
        self.root = root
        self.disks = disks
        self.disk1_source = disk1_source
        self.out = os.path.join(base, "images")
        self.work = os.path.join(base, "work")
        os.makedirs(self.work)
        self.config = dict(config)
        with open(os.path.join(self.work, "user_config.json"), "w") as f:
            json.dump(self.config, f)
        self.receiver = ReceiverProcess(net, base, extra_args=[
            "--disk", "system=" + disks["system"], "--disk", "disk1=" + disks["disk1"],
            "--provider", "local", "--output", self.out])

    # -- the receiver
    def state(self):
        """The receiver's migration document, read from its state folder."""
        for _ in range(50):
            try:
                return self.receiver.document()
            except (OSError, ValueError):  # not written yet
                time.sleep(0.1)
        return self.receiver.document()

    def wait_state(self, states, timeout=300, proc=None):
        """Poll STATE/migration.json until its state is one of ``states``."""
        states = (states,) if isinstance(states, str) else tuple(states)
        deadline = time.time() + timeout
        seen = None
        while time.time() < deadline:
            try:
                seen = self.receiver.document().get("state")
            except (OSError, ValueError):
                seen = None
            if seen in states:
                return seen
            if proc is not None and proc.poll() is not None:
                raise AssertionError("the source ended (exit %s) before %s (state %s):\n%s"
                                     % (proc.returncode, states, seen, self.output(proc)))
            time.sleep(0.1)
        raise AssertionError("the receiver did not reach %s in %ss (state %s)\n%s"
                             % (states, timeout, seen, tail_of(self.receiver.log)))

    def target_partitioned(self, name="system"):
        """True once PREPARING wrote the partition table of target disk ``name``: its
        first partition shows in sysfs (global, unlike the receiver's mounts)."""
        dev = os.path.basename(self.disks[name])
        return os.path.exists("/sys/block/%s/%sp1" % (dev, dev))

    def wait_until(self, predicate, what, timeout=180, proc=None):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                return
            if proc is not None and proc.poll() is not None:
                raise AssertionError("the source ended (exit %s) before %s:\n%s"
                                     % (proc.returncode, what, self.output(proc)))
            time.sleep(0.02)
        raise AssertionError("no %s in %ss\n%s" % (what, timeout, tail_of(self.receiver.log)))

    def crash_receiver(self):
        """SIGKILL serve and everything under it at once (a crash, not a stop)."""
        proc = self.receiver.proc
        pids = [proc.pid] + descendants(proc.pid)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGSTOP)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(10)
        self.net.procs.remove(proc)
        self.receiver.proc = None
        deadline = time.time() + 10
        while time.time() < deadline and any(os.path.exists("/proc/%d" % p) for p in pids):
            time.sleep(0.1)

    def restart_receiver(self):
        self.receiver.start(fresh=False)

    # -- the source
    def argv(self, *extra):
        return [sys.executable, "-m", "source_script.cli", "migrate", "--workdir", self.work,
                "--root", self.root, "--receiver", self.net.ecs_ip,
                "--fingerprint", self.receiver.status["fingerprint"], "--yes"] + list(extra)

    def env(self):
        return {"GO2ALIYUN_TOKEN": self.receiver.status.get("token") or "",
                "PYTHONPATH": REPO}

    def migrate(self, *extra, timeout=1500):
        """Run ``go2aliyun migrate`` in ``src`` to its end."""
        return self.net.run(self.net.src, self.argv(*extra), env=self.env(), ok_codes=None,
                            timeout=timeout, cwd=self.work)

    def start_migrate(self, *extra):
        """Start ``go2aliyun migrate`` in ``src``; its output goes to a file."""
        log = open(os.path.join(self.base, "migrate-%d.out" % time.time_ns()), "w+b")  # noqa: SIM115
        p = self.net.start(self.net.src, self.argv(*extra), env=self.env(), cwd=self.work,
                           stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        p.log = log
        return p

    @staticmethod
    def output(proc):
        proc.log.flush()
        proc.log.seek(0)
        return proc.log.read().decode("utf-8", "replace")

    def explain(self, r):
        doc = {}
        with contextlib.suppress(OSError, ValueError):
            doc = self.receiver.document()
        out = r.stdout + r.stderr if hasattr(r, "stdout") else self.output(r)
        return "exit %s\n%s\nreceiver: %s\nstate: %s" % (
            r.returncode, out[-4000:], tail_of(self.receiver.log),
            json.dumps(doc.get("error")))

    # -- the result
    def image_dir(self):
        return os.path.join(self.out, self.config["image_name"])

    def image_files(self):
        with open(os.path.join(self.image_dir(), "image.json")) as f:
            desc = json.load(f)
        assert [d["device"] for d in desc["disks"]] == ["/dev/xvda", "/dev/xvdb"]
        return [os.path.join(self.image_dir(), d["file"]) for d in desc["disks"]]

    def verified_by_receiver(self):
        with open(os.path.join(self.receiver.state, "verify.json")) as f:
            verify = json.load(f)
        return verify.get("ok") is True and verify.get("code") == "verify.ok"

    def check_files(self, also=None):
        """See :func:`check_image_files`."""
        check_image_files(self.image_files(), self.root, self.disk1_source, also=also)


def check_image_files(files, root, disk1_source, also=None):
    """Every file of the source (system tree at ``root``, data disk at
    ``disk1_source``) is in the image set ``files`` (system, disk1 qcow2), minus the
    excludes, byte for byte with its metadata, or changed by the conversion with its
    original kept. ``also(system_mnt, data_mnt)`` checks more while both are mounted."""
    with mounted_image(files[1], 1) as data, mounted_image(files[0], 2) as system:
        problems = fidelity.compare(disk1_source, data,
                                    excluded_patterns=["lost+found"],
                                    ignore_extra=["lost+found"], check_dir_mtime=False)
        assert problems == [], problems[:20]
        problems = fidelity.compare(
            root, system,
            excluded_patterns=SYSTEM_EXCLUDED + ["boot/*", "lost+found"],
            ignore_extra=["lost+found", "boot/*", "mnt/disk1"], check_dir_mtime=False)
        left = unexplained(problems, root, system)
        assert left == [], left[:30]
        with open(os.path.join(system, "etc", "fstab")) as f:
            fstab = f.read()
        assert "/dev/sda" not in "\n".join(
            ln for ln in fstab.splitlines() if not ln.startswith("#"))
        assert "/mnt/disk1" in fstab
        assert os.path.exists(os.path.join(system, KEPT, "etc", "fstab"))
        assert not [n for n in os.listdir(os.path.join(system, "etc"))
                    if n.endswith(".pre-migration")]
        if also is not None:
            also(system, data)


@contextlib.contextmanager
def world(base, config=CONFIG, writable_data=False):
    """The whole setup (see the module docstring); the receiver is started."""
    sample.ensure_sample()
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(sample.mounted_readonly(
            ("system",) if writable_data else ("system", "disk1")))
        disk1 = os.path.join(root, "mnt", "disk1")
        if writable_data:
            disk1 = stack.enter_context(writable_disk1(root, base))
        net = stack.enter_context(netns_pair())
        disks = stack.enter_context(loop_disks(base, {"system": 20 * GIB,
                                                      "disk1": 20 * GIB}))
        w = World(net, base, root, disks, disk1, config)
        stack.callback(w.receiver.stop)
        w.receiver.start()
        yield w
