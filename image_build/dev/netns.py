"""Two network namespaces, ``src`` and ``ecs``, joined by a veth pair: the demo's and
the tests' two hosts (a server to migrate and the intermediate instance).

Each pair gets unique names (``g2a-<6 hex>-src``/``-ecs``, veths ``g2a<6 hex>s``/``e``)
and a /30 out of 10.250.0.0/16 picked at random, so tests that run at the same time on
this machine never meet. Traffic only ever goes to the two addresses of the pair (the
namespaces have no other route). Everything is removed in :meth:`NetnsPair.close`,
which the :func:`netns_pair` context manager calls in ``finally``; it only kills
processes it started and only deletes namespaces it made. :class:`ReceiverProcess` is
``go2aliyun-receiver serve`` run in ``ecs`` (the tests' and the benchmark's receiver).
"""

import contextlib
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time

from wire import runner


class NetnsPair(object):
    def __init__(self):
        tag = secrets.token_hex(3)
        self.tag = tag
        self.src = "g2a-%s-src" % tag
        self.ecs = "g2a-%s-ecs" % tag
        self.veth_src = "g2a%ss" % tag
        self.veth_ecs = "g2a%se" % tag
        base = (10 << 24) | (250 << 16) | (random.randrange(0, 16384) << 2)  # noqa: S311
        self.src_ip = _ip(base + 1)
        self.ecs_ip = _ip(base + 2)
        self.procs = []
        self._made = []

    # -- set up / tear down
    def create(self):
        share_root_mounts()
        for ns in (self.src, self.ecs):
            runner.run(["ip", "netns", "add", ns])
            self._made.append(ns)
            runner.run(["ip", "-n", ns, "link", "set", "lo", "up"])
        runner.run(["ip", "link", "add", self.veth_src, "netns", self.src, "type", "veth",
                    "peer", "name", self.veth_ecs, "netns", self.ecs])
        for ns, dev, ip in ((self.src, self.veth_src, self.src_ip),
                            (self.ecs, self.veth_ecs, self.ecs_ip)):
            runner.run(["ip", "-n", ns, "addr", "add", ip + "/30", "dev", dev])
            runner.run(["ip", "-n", ns, "link", "set", dev, "up"])
        return self

    def close(self):
        for p in reversed(self.procs):
            stop_process(p)
        self.procs = []
        for ns in reversed(self._made):
            runner.run(["ip", "netns", "del", ns], ok_codes=None)
        self._made = []

    # -- running things inside
    def argv(self, ns, argv):
        return ["ip", "netns", "exec", ns] + list(argv)

    def run(self, ns, argv, **kw):
        return runner.run(self.argv(ns, argv), **kw)

    def start(self, ns, argv, env=None, **kw):
        """Start a process in ``ns`` in its own process group; stopped by close()."""
        kw.setdefault("start_new_session", True)
        p = runner.start(self.argv(ns, argv), env=env, **kw)
        self.procs.append(p)
        return p

    # -- the link
    def link_down(self):
        runner.run(["ip", "-n", self.src, "link", "set", self.veth_src, "down"])

    def link_up(self):
        runner.run(["ip", "-n", self.src, "link", "set", self.veth_src, "up"])
        runner.run(["ip", "-n", self.src, "addr", "replace", self.src_ip + "/30", "dev",
                    self.veth_src])

    def shape(self, rate="100mbit", delay=None, ns=None):
        """Limit the src side's egress with tc (tbf, optional netem delay)."""
        ns = ns or self.src
        dev = self.veth_src if ns == self.src else self.veth_ecs
        argv = ["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root"]
        if delay:
            runner.run(argv + ["netem", "delay", delay, "rate", rate])
        else:
            runner.run(argv + ["tbf", "rate", rate, "burst", "64kb", "latency", "100ms"])

    def unshape(self, ns=None):
        ns = ns or self.src
        dev = self.veth_src if ns == self.src else self.veth_ecs
        runner.run(["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"], ok_codes=None)

    def wait_port(self, ns, host, port, timeout=30):
        """Wait until TCP ``host:port`` accepts from inside ``ns``."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = self.run(ns, [sys.executable, "-c", _CONNECT, host, str(port)],
                         ok_codes=None, timeout=5)
            if r.returncode == 0:
                return True
            time.sleep(0.2)
        raise TimeoutError("nothing listens on %s:%s in %s after %ss" % (host, port, ns,
                                                                       timeout))


_CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 3)"


def _ip(n):
    return "%d.%d.%d.%d" % ((n >> 24) & 255, (n >> 16) & 255, (n >> 8) & 255, n & 255)


def stop_process(p, timeout=10):
    """SIGTERM the process group we started, then SIGKILL."""
    if p.poll() is not None:
        return
    with contextlib.suppress(OSError):
        os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(5)


def share_root_mounts():
    """Make ``/`` a shared mount (systemd hosts have it so; this VM does not).

    ``ip netns exec`` starts each process in a mount namespace that copies the host's
    mounts and makes them slaves of the host's. Under a private ``/`` the copy is cut off:
    a loop device mounted by one test when a qemu or a receiver is started in a
    namespace by another test at the same time stays mounted in that process's copy
    until it ends, so the first test cannot detach its loop device. Under a shared
    ``/`` the host's unmounts reach every copy."""
    r = runner.run(["findmnt", "--noheadings", "--output", "PROPAGATION", "/"],
                   ok_codes=None)
    if r.returncode == 0 and "shared" not in r.stdout:
        runner.run(["mount", "--make-rshared", "/"])


@contextlib.contextmanager
def netns_pair():
    pair = NetnsPair()
    try:
        pair.create()
        yield pair
    finally:
        pair.close()


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tail_of(path, n=3000):
    """The last ``n`` characters of a log file ("" when there is none)."""
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


class ReceiverProcess(object):
    """``go2aliyun-receiver serve`` in the ``ecs`` namespace of ``net``: state in
    ``base``/state, output in ``base``/receiver.out, target roots ``roots``
    ({module: folder}) and more ``extra_args``; ``bind`` another address (127.0.0.1:
    behind a relay in ``ecs``) while it tells the source the ``ecs`` address."""

    def __init__(self, net, base, roots=None, extra_args=(), bind=None):
        self.net = net
        self.bind = bind or net.ecs_ip
        self.state = os.path.join(base, "state")
        self.roots = roots or {}
        self.extra_args = list(extra_args)
        self.proc = None
        self.log = os.path.join(base, "receiver.out")
        self.status = {}

    def start(self, fresh=True):
        """Start it and wait until its status names a fingerprint (and, when ``fresh``,
        a token) and both ports answer. Raises RuntimeError when it dies first."""
        argv = [sys.executable, "-m", "receiver.cli", "serve", "--state", self.state,
                "--bind", self.bind, "--address", self.net.ecs_ip, "--no-console",
                "--workers", "1"]
        for name, path in sorted(self.roots.items()):
            argv += ["--target-root", "%s=%s" % (name, path)]
        argv += self.extra_args
        with open(self.log, "ab") as out:
            self.proc = self.net.start(self.net.ecs, argv, cwd=REPO, stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        path = os.path.join(self.state, "status.json")
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("the receiver died: %s" % tail_of(self.log))
            with contextlib.suppress(OSError, ValueError):
                with open(path) as f:
                    self.status = json.load(f)
                if self.status.get("fingerprint") and (self.status.get("token") or not fresh):
                    break
            time.sleep(0.2)
        ns = self.net.src if self.bind == self.net.ecs_ip else self.net.ecs
        self.net.wait_port(ns, self.bind, 8080, timeout=60)
        self.net.wait_port(ns, self.bind, 8703, timeout=60)
        return self

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)
            self.net.procs.remove(self.proc)
            self.proc = None

    def document(self):
        with open(os.path.join(self.state, "migration.json")) as f:
            return json.load(f)
