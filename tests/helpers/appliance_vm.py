"""The receiver appliance launched as an instance of the ``local`` provider (qemu in
the ``ecs`` namespace, launched from ``src`` as an operator would), for the VM tests
that drive the receiver themselves (the demo's default mode, image_build/dev/demo.py, is
the other user of the same launch)."""

import contextlib
import datetime
import json
import os
import re
import sys
import time

from image_build.cloud.base import InstanceSpec
from image_build.cloud.local import QMP_SOCKET, LocalCloud
from image_build.dev.demo import release_local_instances
from image_build.dev.netns import netns_pair
from wire import runner

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


CHROOT_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \S+ "
                         r"receiver\.convert\.apply: in the chroot: (\S+)")
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")
RUNNER_CHROOT = re.compile(r"^\S+ \S+ DEBUG wire\.runner: run: (chroot|bwrap) ")


def chroot_command_times(log_text):
    """[(command name, seconds)] of the conversion's chroot commands in a receiver
    worker.log: each lasts until the next line with a time stamp other than the
    runner's own ``run: bwrap ...`` (``run: chroot ...`` before the sandbox) (pure)."""
    def when(m):
        t = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
        return t.timestamp() + int(m.group(2)) / 1000.0

    out, current = [], None
    for line in log_text.splitlines():
        stamp = STAMP.match(line)
        if not stamp or RUNNER_CHROOT.match(line):
            continue
        if current:
            out.append((current[0], round(when(stamp) - current[1], 1)))
            current = None
        m = CHROOT_LINE.match(line)
        if m:
            current = (os.path.basename(m.group(3)), when(m))
    return out


def show(r):
    """A command's result for an assertion message."""
    return "exit %s\nstdout:\n%s\nstderr:\n%s" % (r.returncode, r.stdout[-4000:],
                                                  r.stderr[-4000:])


class Launched(object):
    """One launched appliance: namespaces, work folder, local provider folder and the
    launch's result (address, fingerprint, token, instance id)."""

    def __init__(self, net, work, local_dir):
        self.net = net
        self.work = work
        self.local_dir = local_dir
        self.launched = None
        self.cloud = LocalCloud(local_dir)

    @property
    def instance_id(self):
        return self.launched["instance_id"]

    def console(self):
        return self.cloud.console(self.instance_id)[-3000:]

    def qmp_socket(self):
        return os.path.join(self.cloud._get("instances", self.instance_id)["dir"], QMP_SOCKET)

    def disk_files(self):
        """{disk name: file} of the instance."""
        return {d["name"]: d["file"]
                for d in self.cloud._get("instances", self.instance_id)["disks"]}

    def cli(self, *args, ns=None, timeout=600):
        """``go2aliyun-cloud --provider local ...`` on the host or in namespace ``ns``."""
        argv = [sys.executable, "-m", "image_build.cli", "--workdir", self.work,
                "--provider", "local", "--local-dir", self.local_dir, "--listen",
                self.net.ecs_ip, "--netns", self.net.ecs, "--poll-interval", "1"] + list(args)
        env = {"PYTHONPATH": REPO}
        if ns:
            return self.net.run(ns, argv, ok_codes=None, timeout=timeout, cwd=REPO, env=env)
        return runner.run(argv, ok_codes=None, timeout=timeout, cwd=REPO, env=env)


WAIT_HEALTHZ = r"""
import sys, time
from source_script import session
from wire.errors import Go2AliyunError
address, fingerprint, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
deadline = time.time() + timeout
while True:
    try:
        session.Client(address, fingerprint, timeout=10).healthz()
        break
    except Go2AliyunError:
        if time.time() > deadline:
            raise
        time.sleep(2)
"""

# What the receiver prints on the serial console (receiver/cli.py render_status).
CONSOLE_TOKEN = re.compile(r"^token: (\S+)\s*$", re.M)
CONSOLE_FINGERPRINT = re.compile(r"^fingerprint: ([0-9A-F:]{95})\s*$", re.M)
CONSOLE_BLANK = re.compile(r"^blank target disks: (.*?)\s*$", re.M)


def read_console_token(console):
    """(token, fingerprint, blank disks line) the receiver printed last on the serial
    console, or None before it did (pure)."""
    tok, fp = CONSOLE_TOKEN.findall(console), CONSOLE_FINGERPRINT.findall(console)
    blank = CONSOLE_BLANK.findall(console)
    if not tok or not fp:
        return None
    return tok[-1], fp[-1], blank[-1] if blank else None


@contextlib.contextmanager
def console_launched(base, config, appliance_image, data_disks_gib, timeout=900):
    """The appliance started as from the ECS console: NO user-data (no NoCloud seed), its
    own disk and blank data disks of ``data_disks_gib`` sizes, nothing else told. Waits
    until the receiver printed its token on the serial console; yields a
    :class:`Launched` whose ``launched`` holds what an operator reads there (address is
    the one the source dials: the ``ecs`` address, forwarded by qemu). Whatever happens,
    no qemu of ours outlives it and the namespaces go."""
    work, local_dir = _folders(base, config)
    with netns_pair() as net:
        try:
            vm = Launched(net, work, local_dir)
            vm.cloud = LocalCloud(local_dir, address=net.ecs_ip, netns=net.ecs)
            spec = InstanceSpec(appliance_image, "local", "", "", None, system_disk_gib=20,
                                data_disks=[("disk-%d" % n, size)
                                            for n, size in enumerate(data_disks_gib, 1)],
                                name="go2aliyun-receiver-by-hand")
            inst_id = vm.cloud.run_instance(spec, "console-%s" % os.path.basename(base))
            deadline = time.time() + timeout
            while True:
                seen = read_console_token(vm.cloud.console(inst_id))
                if seen:
                    break
                assert time.time() < deadline, "no token on the console in %ds:\n%s" % (
                    timeout, vm.cloud.console(inst_id)[-4000:])
                time.sleep(3)
            vm.launched = {"instance_id": inst_id, "address": net.ecs_ip, "token": seen[0],
                           "console_fingerprint": seen[1], "blank_disks": seen[2]}
            # serve prints before its API listens (launch waits for /healthz likewise)
            r = net.run(net.src, [sys.executable, "-c", WAIT_HEALTHZ, net.ecs_ip, seen[1],
                                  str(timeout)], ok_codes=None, timeout=timeout + 30,
                        cwd=REPO, env={"PYTHONPATH": REPO})
            assert r.returncode == 0, show(r) + "\nconsole:\n" + vm.console()
            yield vm
        finally:
            release_local_instances(local_dir)


def _folders(base, config):
    """The source's workdir (``config`` as its user_config.json, an empty Excludes/) and
    the local provider's folder, under ``base``."""
    work = os.path.join(base, "work")
    os.makedirs(os.path.join(work, "Excludes"))
    with open(os.path.join(work, "user_config.json"), "w") as f:
        json.dump(config, f)
    return work, os.path.join(base, "local")


@contextlib.contextmanager
def launched(base, config, appliance_image):
    """Launch ``appliance_image`` for ``config`` (a user_config.json dict) from ``src``;
    yields a :class:`Launched`. Whatever happens, no qemu of ours outlives it and the
    namespaces go."""
    work, local_dir = _folders(base, config)
    with netns_pair() as net:
        try:
            vm = Launched(net, work, local_dir)
            r = vm.cli("launch", "--receiver-image", appliance_image, "--source-cidr",
                       net.src_ip, "--json", ns=net.src, timeout=900)
            assert r.returncode == 0, show(r)
            vm.launched = json.loads(r.stdout)
            yield vm
        finally:
            release_local_instances(local_dir)
