"""Source and receiver as containers on a compose network (pytest-docker, docker-compose 1.29).

One stack per test module (`stack`): the receiver image is built (or reused: cached by
its inputs, image_build.dev.docker), the sample server is built (or reused) and mounted
read-only on the host, two sparse disk image files are made for the receiver, and
``docker-compose up`` starts ``receiver`` and ``source`` under a unique project name.
Teardown (always, in ``finally``): ``docker-compose down -v``, the receiver's loop
devices detached (found by their backing files, ours alone), the sample unmounted,
the environment restored.
"""

import contextlib
import json
import os
import secrets
import time

import pytest
from pytest_docker.plugin import get_docker_services

from image_build.dev import docker as docker_build
from receiver import blockdev
from tests.helpers import sample
from wire import runner

HERE = os.path.dirname(os.path.abspath(__file__))
COMPOSE_FILE = os.path.join(HERE, "docker-compose.yml")
COMPOSE = "docker-compose"  # Debian's docker-compose 1.29 (pytest-docker defaults to v2)
IMAGE_NAME = "g2a-docker-e2e"
SYSTEM_IMG_MIB = 4096
DISK1_IMG_MIB = 2048


class Stack(object):
    def __init__(self, project, env, dirs):
        self.project = project
        self.env = env
        self.dirs = dirs
        self.work = dirs["work"]

    # -- docker-compose
    def compose(self, *args, ok_codes=(0,), timeout=300):
        return runner.run([COMPOSE, "-f", COMPOSE_FILE, "-p", self.project] + list(args),
                          env=self.env, ok_codes=ok_codes, timeout=timeout)

    def container(self, service):
        cid = self.compose("ps", "-q", service).stdout.strip()
        assert cid, "no container for %s" % service
        return cid

    def health(self, service="receiver"):
        r = runner.run([docker_build.docker_binary(), "inspect", "-f",
                        "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}"
                        "{{end}}", self.container(service)], ok_codes=None)
        return r.stdout.strip()

    def wait_healthy(self, timeout=120):
        deadline = time.time() + timeout
        state = ""
        while time.time() < deadline:
            state = self.health()
            if state == "running healthy":
                return
            time.sleep(1)
        raise AssertionError("receiver not healthy after %ss: %s\n%s" % (
            timeout, state, self.compose("logs", "--tail", "50", "receiver",
                                         ok_codes=None).stdout))

    # -- the receiver's state folder (a volume on the host)
    def read_state(self, name):
        with open(os.path.join(self.dirs["state"], name)) as f:
            return json.load(f)

    def status(self):
        return self.read_state("status.json")

    def document(self):
        return self.read_state("migration.json")

    # -- the source
    def source_argv(self, *args):
        """Run in the source container; the token goes through a 0600 file in the work
        folder, never through argv."""
        return ["exec", "-T", "source", "/bin/sh", "-c",
                'GO2ALIYUN_TOKEN="$(cat "$0")" exec "$@"', os.path.join(self.work, ".token")
                ] + list(args)

    def migrate_argv(self, *args):
        st = self.status()
        return self.source_argv("go2aliyun", "migrate", "--workdir", self.work,
                                "--root", "/source", "--receiver", "receiver",
                                "--fingerprint", st["fingerprint"], "--yes", "--no-check",
                                "--io-timeout", "120", *args)

    def write_token(self):
        path = os.path.join(self.work, ".token")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.status().get("token") or "")

    def migrate(self, *args, timeout=1500):
        self.write_token()
        return self.compose(*self.migrate_argv(*args), ok_codes=None, timeout=timeout)

    def start_migrate(self, *args, log=None):
        self.write_token()
        argv = [COMPOSE, "-f", COMPOSE_FILE, "-p", self.project] + self.migrate_argv(*args)
        return runner.start(argv, env=self.env, stdout=log, stderr=log)

    def client_data(self):
        with open(os.path.join(self.work, "client_data")) as f:
            return json.load(f)


def loops_of(path):
    r = runner.run(["losetup", "-n", "-O", "NAME", "-j", path], ok_codes=None)
    return [line.strip() for line in r.stdout.splitlines() if line.strip()]


def detach_loops(paths):
    for path in paths:
        for dev in loops_of(path):
            blockdev.detach(dev)


@pytest.fixture(scope="module")
def receiver_image():
    return docker_build.build(progress=lambda m: print("docker build:", m))["image"]


def make_config(bandwidth_limit):
    return {"access_id": "", "secret_key": "", "region_id": "", "image_name": IMAGE_NAME,
            "system_disk_size": 20, "platform": "Debian", "architecture": "x86_64",
            "bandwidth_limit": bandwidth_limit,
            "data_disks": [{"data_disk_index": 1, "data_disk_size": 20,
                            "src_path": "/mnt/disk1"}]}


@contextlib.contextmanager
def compose_stack(tmp_root, image, bandwidth_limit=0):
    sample.ensure_sample()
    tag = secrets.token_hex(3)
    dirs = {k: os.path.join(tmp_root, k) for k in ("state", "output", "disks", "work")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    os.chmod(dirs["state"], 0o700)
    os.makedirs(os.path.join(dirs["state"], "tls"), mode=0o700)
    os.makedirs(os.path.join(dirs["work"], "Excludes"))
    with open(os.path.join(dirs["work"], "user_config.json"), "w") as f:
        json.dump(make_config(bandwidth_limit), f)
    images = []
    for name, mib in (("system.img", SYSTEM_IMG_MIB), ("disk1.img", DISK1_IMG_MIB)):
        path = os.path.join(dirs["disks"], name)
        with open(path, "wb") as f:
            f.truncate(mib * 1024 * 1024)
        images.append(path)
    project = "g2a%s" % tag
    try:
        with sample.mounted_readonly() as root:
            env = {"G2A_IMAGE": image, "G2A_STATE": dirs["state"], "G2A_OUTPUT": dirs["output"],
                   "G2A_DISKS": dirs["disks"], "G2A_SOURCE": root, "G2A_WORK": dirs["work"]}
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)  # pytest-docker runs docker-compose with os.environ
            try:
                with get_docker_services(COMPOSE, COMPOSE_FILE, project, ["up -d"],
                                         ["down -v -t 10"]):
                    stack = Stack(project, env, dict(dirs, source=root))
                    stack.wait_healthy()
                    yield stack
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
    finally:
        # the containers are gone: nothing holds the receiver's loop devices any more
        detach_loops(images)
