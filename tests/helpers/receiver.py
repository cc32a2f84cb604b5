"""``go2aliyun-receiver serve`` as a process inside the `ecs` namespace, for the
end-to-end tests (tests/helpers/netns.py makes the namespaces)."""

import json
import os
import subprocess
import sys
import time

from tests.helpers.netns import stop_process

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tail_of(path, n=3000):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


class Receiver(object):
    """go2aliyun-receiver serve inside the `ecs` namespace."""

    def __init__(self, net, base, roots=None, extra_args=()):
        self.net = net
        self.state = os.path.join(base, "state")
        self.roots = roots or {}
        self.extra_args = list(extra_args)
        self.proc = None
        self.log = os.path.join(base, "receiver.out")
        self.status = {}

    def start(self, fresh=True):
        argv = [sys.executable, "-m", "receiver.cli", "serve", "--state", self.state,
                "--bind", self.net.ecs_ip, "--address", self.net.ecs_ip, "--no-console",
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
                raise AssertionError("receiver died: %s" % tail_of(self.log))
            try:
                with open(path) as f:
                    self.status = json.load(f)
                if self.status.get("fingerprint") and (self.status.get("token") or not fresh):
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        self.net.wait_port(self.net.src, self.net.ecs_ip, 8080, timeout=60)
        self.net.wait_port(self.net.src, self.net.ecs_ip, 8703, timeout=60)
        return self

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)
            self.net.procs.remove(self.proc)
            self.proc = None

    def document(self):
        with open(os.path.join(self.state, "migration.json")) as f:
            return json.load(f)
