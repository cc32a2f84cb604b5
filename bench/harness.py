"""What the scenarios drive: the namespaces, the receiver, the push and the baselines.

Everything runs between the ``src`` and ``ecs`` namespaces of one
:class:`image_build.dev.netns.NetnsPair` (unique names, removed in ``finally``):

* :class:`Receiver`: the real ``go2aliyun-receiver serve`` in ``ecs`` (gunicorn, TLS,
  the TLS data channel on 8703, rsyncd on its loopback) with one target root.
* :class:`Pusher`: the real ``go2aliyun migrate --sync-only`` in ``src``, under
  :mod:`bench.measure` (CPU and RSS of everything the source runs).
* :func:`tar_nc`: ``tar -c | nc`` -> ``nc -l | tar -x`` over the same veth: the physical
  limit of this machine for moving files.
* :class:`PlainRsyncd`: a plain rsync daemon in ``ecs`` (no TLS) and the same rsync
  command as the push, straight to it: the cost of our security.
* :class:`DelayRelay`: :mod:`bench.delay` in front of a receiver bound to 127.0.0.1:
  the shaped link's added latency (no netem in this kernel).
"""

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

from image_build.dev.netns import ReceiverProcess, stop_process
from source_script import push
from wire import runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = {"access_id": "", "secret_key": "", "region_id": "", "image_name": "BENCH",
          "system_disk_size": 40, "platform": "Debian", "architecture": "x86_64",
          "bandwidth_limit": 0, "data_disks": []}


def drop_caches():
    """Flush dirty pages and drop the page cache: the next read comes from disk."""
    runner.run(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def empty_dir(path):
    """Remove what ``path`` holds, keep the folder (it may be a mount point)."""
    entries = [os.path.join(path, e) for e in os.listdir(path)]
    if entries:
        runner.run(["rm", "-rf", "--one-file-system"] + entries)


def mount_tmpfs(path, size="14g"):
    runner.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "g2a-bench", path])


def umount(path):
    runner.run(["umount", path], ok_codes=None)


def tx_bytes(net):
    """Bytes the src end of the veth sent so far (what crossed the link)."""
    r = net.run(net.src, ["cat", "/sys/class/net/%s/statistics/tx_bytes" % net.veth_src])
    return int(r.stdout.strip())


def Receiver(net, base, target, bind=None):
    """``go2aliyun-receiver serve`` in ``ecs``, target root ``system`` -> ``target``
    (image_build.dev.netns.ReceiverProcess; ``bind`` 127.0.0.1 behind bench.delay's relay)."""
    return ReceiverProcess(net, base, roots={"system": target}, bind=bind)


class Pusher(object):
    """``go2aliyun migrate --sync-only`` from ``root`` in ``src`` to the receiver."""

    def __init__(self, net, base, root, receiver, bandwidth_limit=0):
        self.net = net
        self.base = base
        self.root = root
        self.receiver = receiver
        self.work = os.path.join(base, "work")
        os.makedirs(os.path.join(self.work, "Excludes"), exist_ok=True)
        self.config = dict(CONFIG, bandwidth_limit=bandwidth_limit)
        self.write_config()

    def write_config(self):
        with open(os.path.join(self.work, "user_config.json"), "w") as f:
            json.dump(self.config, f)

    def run(self, compress=None, timeout=3600):
        """One sync pass: returns {wall, push_seconds, cpu, peak_rss_sum, ..., stats}."""
        out = os.path.join(self.base, "measure-%s.json" % secrets.token_hex(3))
        argv = [sys.executable, "-m", "bench.measure", out, "--",
                sys.executable, "-m", "source_script.cli", "migrate", "--workdir", self.work,
                "--root", self.root, "--receiver", self.net.ecs_ip, "--fingerprint",
                self.receiver.status["fingerprint"], "--yes", "--no-check", "--sync-only",
                "--io-timeout", "60"]
        env = {"GO2ALIYUN_TOKEN": self.receiver.status["token"], "PYTHONPATH": REPO}
        if compress:
            env[push.COMPRESS_ENV] = compress
        tx0 = tx_bytes(self.net)
        r = self.net.run(self.net.src, argv, env=env, ok_codes=None, timeout=timeout,
                         cwd=self.work)
        wire = tx_bytes(self.net) - tx0
        if r.returncode != 0:
            raise RuntimeError("go2aliyun migrate failed (exit %s): %s %s"
                               % (r.returncode, r.stdout[-2000:], r.stderr[-2000:]))
        with open(out) as f:
            m = json.load(f)
        with open(os.path.join(self.work, "client_data")) as f:
            disk = json.load(f)["disks"]["system"]
        m.update(push_seconds=disk.get("seconds"), files=disk.get("files"),
                 bytes=disk.get("bytes"), literal_bytes=disk.get("literal_bytes"),
                 transferred_files=disk.get("transferred_files"), wire_bytes=wire)
        return m


def _wait_listen(net, port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = net.run(net.ecs, ["ss", "-Hltn", "sport = :%d" % port], ok_codes=None)
        if r.stdout.strip():
            return
        time.sleep(0.05)
    raise RuntimeError("nothing listens on %d in %s" % (port, net.ecs))


def tar_nc(net, source, target, port=None):
    """``tar -c | nc`` from src -> ``nc -l | tar -x`` in ecs. Returns (seconds, wire)."""
    port = port or (20000 + secrets.randbelow(20000))
    tar_opts = ["--numeric-owner", "--acls", "--xattrs", "--xattrs-include=*"]
    listen = net.start(net.ecs, ["nc", "-l", net.ecs_ip, str(port)], stdout=subprocess.PIPE,
                       stdin=subprocess.DEVNULL)
    untar = net.start(net.ecs, ["tar", "-xpf", "-", "-C", target] + tar_opts,
                      stdin=listen.stdout)
    listen.stdout.close()
    _wait_listen(net, port)
    tx0 = tx_bytes(net)
    began = time.time()
    mktar = net.start(net.src, ["tar", "-cf", "-", "-C", source, "."] + tar_opts,
                      stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    send = net.start(net.src, ["nc", "-N", net.ecs_ip, str(port)], stdin=mktar.stdout,
                     stdout=subprocess.DEVNULL)
    mktar.stdout.close()
    try:
        for p in (mktar, send, listen, untar):
            p.wait(3600)
        seconds = time.time() - began
    finally:
        for p in (mktar, send, listen, untar):
            stop_process(p)
            net.procs.remove(p)
    if untar.returncode != 0 or mktar.returncode != 0:
        raise RuntimeError("tar | nc failed: tar -c %s, nc %s, tar -x %s"
                           % (mktar.returncode, send.returncode, untar.returncode))
    return seconds, tx_bytes(net) - tx0


class PlainRsyncd(object):
    """A plain rsync daemon in ``ecs`` on a random port (module ``bench``)."""

    def __init__(self, net, base, target):
        self.net = net
        self.port = 20000 + secrets.randbelow(20000)
        self.conf = os.path.join(base, "plain-rsyncd.conf")
        self.target = target
        with open(self.conf, "w") as f:
            f.write("\n".join([
                "address = %s" % net.ecs_ip, "port = %d" % self.port, "uid = 0", "gid = 0",
                "use chroot = yes", "munge symlinks = no", "numeric ids = yes",
                "read only = no", "list = no", "hosts allow = %s" % net.src_ip,
                "reverse lookup = no", "", "[bench]", "    path = %s" % target, ""]))
        self.proc = None

    def __enter__(self):
        rsync = runner.which("rsync")
        self.proc = self.net.start(self.net.ecs, [rsync, "--daemon", "--no-detach",
                                                  "--config=%s" % self.conf],
                                   stdin=subprocess.DEVNULL)
        _wait_listen(self.net, self.port)
        return self

    def __exit__(self, *exc):
        stop_process(self.proc)
        self.net.procs.remove(self.proc)

    def push(self, source):
        """The push's own rsync command, no TLS bridge. Returns (seconds, wire, stats)."""
        argv = push.rsync_argv(source, "rsync://%s:%d/bench/" % (self.net.ecs_ip, self.port),
                               rsync=runner.which("rsync"))
        tx0 = tx_bytes(self.net)
        began = time.time()
        r = self.net.run(self.net.src, argv, timeout=3600)
        return time.time() - began, tx_bytes(self.net) - tx0, push.parse_stats(r.stdout)


@contextlib.contextmanager
def tempdir(prefix):
    base = os.environ.get("GO2ALIYUN_BENCH_TMP", "/var/tmp")
    path = tempfile.mkdtemp(prefix=prefix, dir=base)
    try:
        yield path
    finally:
        runner.run(["rm", "-rf", "--one-file-system", path], ok_codes=None)
        shutil.rmtree(path, ignore_errors=True)


class DelayRelay(object):
    """:mod:`bench.delay` in ``ecs`` on the receiver's address, forwarding the two ports
    to a receiver bound to 127.0.0.1 (``Receiver(bind="127.0.0.1")``) with ``delay``
    seconds added to what the source sends."""

    def __init__(self, net, delay, ports=(8080, 8703)):
        self.net = net
        self.argv = [sys.executable, "-m", "bench.delay", str(delay), net.ecs_ip, "127.0.0.1"]
        self.argv += [str(p) for p in ports]
        self.proc = None

    def __enter__(self):
        self.proc = self.net.start(self.net.ecs, self.argv, cwd=REPO, stdout=subprocess.PIPE,
                                   stdin=subprocess.DEVNULL)
        if self.proc.stdout.readline().strip() != b"ready":
            self.__exit__()
            raise RuntimeError("the delaying relay did not start")
        return self

    def __exit__(self, *exc):
        stop_process(self.proc)
        self.net.procs.remove(self.proc)
        self.proc.stdout.close()
