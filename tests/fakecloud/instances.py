"""The fake cloud with instances that really run: RunInstances starts a real receiver.

Used by the all-in-one tests (tests/source_script/test_allinone.py) and by the demo's
``--cloud fake-aliyun`` mode (image_build/dev/demo.py and its test):

    with fake_aliyun(net, base, receiver_args) as cloud:
        # cloud.fake: the FakeCloud (127.0.0.1, random port) with its World
        # cloud.appliance: the receiver appliance image id to launch
        # cloud.api: the API as seen from ``src`` (cloud.api.endpoint)
        # cloud.instances.receivers: one image_build.dev.netns.ReceiverProcess per instance

When the fake creates an instance, :class:`Instances` decodes its user-data the way
cloud-init does (``write_files``, b64, permissions) into a temporary root and starts a
REAL ``go2aliyun-receiver serve`` in the ``ecs`` namespace on that state folder (the
launcher's TLS key/certificate and token hash, ``--cloud-config`` the written
cloud.json); the fake reports the namespace's address as the instance's public IP and
answers the metadata service for that instance (its RAM role keys). ``src`` and ``ecs``
reach the fake cloud through ports forwarded into their namespaces
(tests/helpers/nsforward.py). Root only. Everything started is stopped on exit.
"""

import base64
import contextlib
import os
import signal
import threading

import yaml

from image_build.dev.netns import ReceiverProcess, tail_of
from tests.fakecloud.server import FakeCloud
from tests.helpers.e2e import descendants
from tests.helpers.nsforward import Forward
from wire.paths import target_path

APPLIANCE_NAME = "go2aliyun-receiver-0.1.0"


class Instances(object):
    """Wraps ``fake.world.run_instances``: each created instance boots a real receiver.

    ``receiver_args(root)`` gives extra ``serve`` flags for the instance whose files are
    under ``root`` (e.g. ``--disk`` loop devices); without ``--disk`` the system disk is
    a folder target (``root``/srv/target). ``cloud_args``: the flags that point the
    receiver's cloud provider at the fake (added to every receiver)."""

    def __init__(self, fake, net, base, receiver_args=None, cloud_args=()):
        self.fake = fake
        self.net = net
        self.base = base
        self.receiver_args = receiver_args or (lambda root: [])
        self.cloud_args = list(cloud_args)
        self.receivers = []
        self.errors = []
        self.roots = []
        self.user_data = []
        self.booted = threading.Event()
        self._run = fake.world.run_instances
        fake.world.run_instances = self.run_instances
        fake.world.public_ip = net.ecs_ip
        fake.world.private_ip = net.ecs_ip  # the VPC intranet way (--private) reaches it too

    def run_instances(self, params):
        result = self._run(params)
        inst_id = result["InstanceIdSets"]["InstanceIdSet"][0]
        self.fake.metadata_instance = inst_id  # what the metadata service answers for
        user_data = self.fake.world.instances[inst_id]["UserData"]
        self.user_data.append(user_data)
        threading.Thread(target=self.boot, args=(inst_id, user_data), daemon=True).start()
        return result

    def boot(self, inst_id, user_data):
        try:
            root = os.path.join(self.base, "instance-" + inst_id)
            self.roots.append(root)
            write_files(root, user_data)
            extra = self.receiver_args(root)
            roots = {}
            if "--disk" not in extra:
                roots["system"] = os.path.join(root, "srv", "target")
                os.makedirs(roots["system"])
            rec = ReceiverProcess(self.net, root, roots, extra_args=[
                "--cloud-config", target_path(root, "/etc/go2aliyun/cloud.json")]
                + self.cloud_args + extra)
            rec.state = target_path(root, "/var/lib/go2aliyun")
            self.receivers.append(rec)
            rec.start(fresh=False)
        except Exception as e:  # noqa: BLE001 - reported by the caller
            self.errors.append(e)
        finally:
            self.booted.set()

    def stop(self):
        """Stop every receiver; returns the log tails of those that had died.

        A worker in the ``aliyun`` provider's IMAGE_READY step waits out the release
        grace period (10 min) and does not end on serve's SIGTERM: whatever serve
        started and is still there after the stop is killed (only those processes)."""
        died = []
        for rec in self.receivers:
            if rec.proc is None:
                continue
            if rec.proc.poll() is not None:
                died.append(tail_of(rec.log))
            children = descendants(rec.proc.pid)
            rec.stop()
            for pid in children:
                with contextlib.suppress(OSError):
                    with open("/proc/%d/cmdline" % pid, "rb") as f:
                        ours = rec.state.encode() in f.read()  # not a reused pid
                    if ours:
                        os.kill(pid, signal.SIGKILL)
        return died


def write_files(root, user_data):
    """Apply the cloud-config's ``write_files`` (b64 content, octal permissions) under
    ``root``, as cloud-init does on the instance."""
    doc = yaml.safe_load(user_data)
    for f in doc["write_files"]:
        if f.get("encoding") != "b64":
            raise ValueError("write_files entry %s: encoding %r, expected b64"
                             % (f.get("path"), f.get("encoding")))
        path = target_path(root, f["path"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as out:
            out.write(base64.b64decode(f["content"]))
        os.chmod(path, int(f["permissions"], 8))


class FakeAliyun(object):
    """What :func:`fake_aliyun` yields."""

    def __init__(self, fake, appliance, api, api_ecs, instances):
        self.fake = fake
        self.world = fake.world
        self.appliance = appliance
        self.api = api
        self.api_ecs = api_ecs
        self.instances = instances

    def source_flags(self, prefix="--cloud-"):
        """Flags that point a client in ``src`` at the fake: ``go2aliyun migrate`` uses
        ``--cloud-endpoint``..., ``go2aliyun-cloud`` (prefix ``--``) ``--endpoint``..."""
        return [prefix + "endpoint", self.api.endpoint, prefix + "protocol", "http",
                prefix + "poll-interval", "0.1"]

    def left(self):
        """What is left in the fake cloud, by kind (the world's summary)."""
        return self.world.summary()


@contextlib.contextmanager
def fake_aliyun(net, base, receiver_args=None, record=False):
    """The fake cloud for the namespace pair ``net``, its instances real receivers in
    ``ecs`` (see the module docstring). ``record``: the ``src`` forward keeps every byte
    the source sent to the API (``cloud.api.sent``)."""
    with FakeCloud() as fake, \
            Forward(net.src, ("127.0.0.1", fake.port), record=record) as api, \
            Forward(net.ecs, ("127.0.0.1", fake.port)) as api_ecs:
        appliance = fake.world.add_image(APPLIANCE_NAME)
        instances = Instances(fake, net, base, receiver_args, cloud_args=[
            "--cloud-endpoint", api_ecs.endpoint, "--cloud-protocol", "http",
            "--metadata-endpoint", api_ecs.endpoint, "--cloud-poll-interval", "0.1"])
        try:
            yield FakeAliyun(fake, appliance, api, api_ecs, instances)
        finally:
            for tail in instances.stop():
                print("a receiver had stopped:\n" + tail)
