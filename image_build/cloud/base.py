"""The one small cloud interface the launcher and the image builder use.

Fine-grained on purpose: every create returns one id, so the caller can write that id
to its state file before the next call (a crash at any point then resumes without
duplicates). Every create takes a ``client_token``: the same token with the same
arguments returns the resource made the first time instead of a second one. Every
delete is idempotent: a resource that is already gone counts as deleted.

Implementations: ``aliyun`` (the Alibaba Cloud SDK; tests run it against
``tests/fakecloud``) and, later, ``local``. ``tests/image_build/cloud/test_contract.py``
is the conformance suite every implementation must pass.
"""

import abc
import hashlib
import time

from wire.errors import CloudError

INSTANCE_NAME = "INSTANCE_FOR_GOTOALIYUN"
RECEIVER_PORTS = (8080, 8703)
# Every resource go2aliyun creates carries this tag (value: the migration id), so cleanup
# finds what a create call made even when its answer was lost (issue 16).
MIGRATION_TAG = "go2aliyun:migration"
# What :meth:`Cloud.find_tagged` returns, by kind, in the order cleanup releases them.
TAGGED_KINDS = ("instances", "disks", "images", "snapshots", "security_groups", "vswitches",
                "vpcs")


def migration_tags(migration_id):
    return {MIGRATION_TAG: migration_id}


def client_token(migration_id, step):
    """A ClientToken (<= 64 ASCII) derived from the migration and the step, so a rerun of
    the same step sends the same token."""
    digest = hashlib.sha256(("%s/%s" % (migration_id, step)).encode("utf-8")).hexdigest()
    return "g2a-" + digest[:40]


class Instance(object):
    def __init__(self, instance_id, status, public_ip=None, private_ip=None, zone_id=None,
                 vpc_id=None, vswitch_id=None, security_group_ids=()):
        self.id = instance_id
        self.status = status
        self.public_ip = public_ip
        self.private_ip = private_ip
        self.zone_id = zone_id
        self.vpc_id = vpc_id
        self.vswitch_id = vswitch_id
        self.security_group_ids = list(security_group_ids)

    @property
    def address(self):
        return self.public_ip or self.private_ip

    def __repr__(self):
        return "Instance(%s, %s, %s)" % (self.id, self.status, self.address)


class Disk(object):
    """A disk of an instance. ``role`` is ``system`` for the instance's own system disk,
    else ``data``; ``name`` is what RunInstances gave it (e.g. ``go2aliyun-target-system``)."""

    def __init__(self, disk_id, role, device, size_gib, name=""):
        self.id = disk_id
        self.role = role
        self.device = device
        self.size_gib = int(size_gib)
        self.name = name or ""

    def __repr__(self):
        return "Disk(%s, %s, %s, %sGiB, %r)" % (self.id, self.role, self.device,
                                                self.size_gib, self.name)


class InstanceSpec(object):
    """What RunInstances gets. ``data_disks``: list of (name, size_gib)."""

    def __init__(self, image_id, instance_type, vswitch_id, security_group_id, user_data,
                 system_disk_gib=40, data_disks=(), public_bandwidth_mbit=100,
                 name=INSTANCE_NAME, ram_role=None, tags=None):
        self.image_id = image_id
        self.instance_type = instance_type
        self.vswitch_id = vswitch_id
        self.security_group_id = security_group_id
        self.user_data = user_data
        self.system_disk_gib = system_disk_gib
        self.data_disks = list(data_disks)
        self.public_bandwidth_mbit = public_bandwidth_mbit
        self.name = name
        self.ram_role = ram_role
        self.tags = dict(tags or {})


class ImageSpec(object):
    """What CreateImage gets. ``disks``: list of (snapshot_id, size_gib), the target system
    disk first; it becomes /dev/xvda and the data disks /dev/xvdb, /dev/xvdc, ..."""

    def __init__(self, name, disks, platform="Others Linux", architecture="x86_64",
                 boot_mode="BIOS", description="made by go2aliyun", tags=None):
        self.tags = dict(tags or {})
        self.name = name
        self.disks = list(disks)
        self.platform = platform
        self.architecture = architecture
        self.boot_mode = boot_mode
        self.description = description

    def mappings(self):
        return [{"snapshot_id": snapshot_id, "device": "/dev/xvd" + chr(ord("a") + n),
                 "disk_type": "system" if n == 0 else "data", "size": int(size)}
                for n, (snapshot_id, size) in enumerate(self.disks)]


class Cloud(abc.ABC):
    """The interface. ``sleep`` and ``clock`` are injectable so tests never wait."""

    name = "base"

    def __init__(self, sleep=time.sleep, clock=time.monotonic, poll_interval=5.0,
                 timeouts=None):
        self.sleep = sleep
        self.clock = clock
        self.poll_interval = poll_interval
        self.timeouts = dict({"network": 300, "instance": 900, "snapshot": 6 * 3600,
                              "image": 6 * 3600, "delete": 900}, **(timeouts or {}))

    # -- network
    @abc.abstractmethod
    def zones(self):
        """Zones."""

    @abc.abstractmethod
    def create_vpc(self, cidr, name, client_token, tags=None):
        """Create vpc. ``tags`` ({key: value}) go on it in the same call."""

    @abc.abstractmethod
    def vpc(self, vpc_id):
        """``{"id", "status", "cidr"}`` or None when it does not exist."""

    @abc.abstractmethod
    def create_vswitch(self, vpc_id, zone_id, cidr, name, client_token, tags=None):
        """Create vswitch."""

    @abc.abstractmethod
    def vswitch(self, vswitch_id):
        """``{"id", "vpc_id", "zone_id", "status", "cidr"}`` or None."""

    @abc.abstractmethod
    def create_security_group(self, vpc_id, name, client_token, tags=None):
        """Create security group."""

    @abc.abstractmethod
    def allow_ingress(self, group_id, ports, source_cidr, client_token):
        """Admit TCP ``ports`` from ``source_cidr`` only. Adding a rule twice is harmless."""

    @abc.abstractmethod
    def revoke_ingress(self, group_id, ports, source_cidr):
        """Remove the TCP ``ports`` rules for ``source_cidr``; removing none is harmless."""

    @abc.abstractmethod
    def ingress_rules(self, group_id):
        """List of ``(port, source_cidr)`` admitted over TCP."""

    # -- images and instances
    @abc.abstractmethod
    def find_images_by_name(self, name):
        """The account's own images called ``name``, any status: list of ``{"id", "status"}``."""

    @abc.abstractmethod
    def image(self, image_id):
        """``{"id", "name", "status", "progress", "snapshot_ids"}`` or None."""

    @abc.abstractmethod
    def delete_image(self, image_id):
        """Delete an image of this account (gone already counts as deleted)."""

    @abc.abstractmethod
    def find_tagged(self, tags):
        """Everything carrying all ``tags``: ``{kind: [record]}`` for each kind of
        :data:`TAGGED_KINDS`; records are ``{"id", ...}`` with ``status`` (instances,
        images, snapshots), ``instance_id`` (disks), ``disk_id`` (snapshots),
        ``snapshot_ids`` (images), ``vpc_id`` (security groups, vSwitches)."""

    def system_images(self, os_type="linux", architecture="x86_64"):
        """The region's public (system) images: list of ``{"id", "name", "os_name",
        "platform", "architecture", "creation_time"}``; for the one-step launch."""
        raise CloudError("the %s provider has no public images" % self.name,
                         code="cloud.unsupported",
                         hint="pass --receiver-image (with the local provider: the path "
                              "`go2aliyun-cloud --provider local build-image` prints)")

    def receiver_config(self, config, instance_token):
        """The cloud.json the receiver of the instance made with ``instance_token`` gets
        (launch renders it into the user-data before RunInstances). A provider that knows
        more than launch (e.g. the local one: its disk ids, who verifies) adds it here."""
        return config

    @abc.abstractmethod
    def run_instance(self, spec, client_token):
        """Run instance."""

    @abc.abstractmethod
    def instance(self, instance_id):
        """An :class:`Instance` or None when it does not exist (any more)."""

    @abc.abstractmethod
    def instance_disks(self, instance_id):
        """The instance's disks, system disk first, then data disks in device order."""

    @abc.abstractmethod
    def delete_instance(self, instance_id):
        """Delete instance."""

    # -- snapshots
    @abc.abstractmethod
    def create_snapshot(self, disk_id, name, client_token, tags=None):
        """Create snapshot."""

    @abc.abstractmethod
    def snapshot(self, snapshot_id):
        """``{"id", "status", "progress"}`` (status progressing|accomplished|failed) or None."""

    @abc.abstractmethod
    def delete_snapshot(self, snapshot_id):
        """Delete snapshot."""

    @abc.abstractmethod
    def create_image(self, spec, client_token):
        """Create image."""

    # -- building the receiver appliance (build-image); optional for a provider
    def console_output(self, instance_id):
        """The instance's serial console output as text ("" when there is none yet)."""
        raise CloudError("the %s provider cannot read an instance's console" % self.name,
                         code="cloud.unsupported", hint="use --provider aliyun")

    def create_image_from_instance(self, instance_id, name, client_token,
                                   description="made by go2aliyun"):
        """CreateImage from all disks of a (stopped) instance; returns the image id."""
        raise CloudError("the %s provider cannot make an image from an instance" % self.name,
                         code="cloud.unsupported", hint="use --provider aliyun")

    @abc.abstractmethod
    def delete_security_group(self, group_id):
        """Delete security group."""

    @abc.abstractmethod
    def delete_vswitch(self, vswitch_id):
        """Delete vswitch."""

    @abc.abstractmethod
    def delete_vpc(self, vpc_id):
        """Delete vpc."""

    # -- waiting, shared by every implementation
    def wait_for(self, what, probe, timeout, progress=None):
        """Poll ``probe()`` until it returns something true; return that. ``probe`` may
        raise to stop. ``progress(value)`` is told each non-final answer."""
        deadline = self.clock() + timeout
        while True:
            value = probe()
            if value:
                return value
            if self.clock() >= deadline:
                raise CloudError("timed out after %ss waiting for %s" % (timeout, what),
                                 code="cloud.timeout",
                                 hint="look at the resource in the console; run the same "
                                      "command again to keep waiting")
            self.sleep(self.poll_interval)

    def wait_vpc_available(self, vpc_id):
        def probe():
            v = self.vpc(vpc_id)
            if v is None:
                raise CloudError("VPC %s disappeared while waiting for it" % vpc_id,
                                 code="cloud.vanished")
            return v if v["status"] == "Available" else None
        return self.wait_for("VPC %s to become Available" % vpc_id, probe,
                             self.timeouts["network"])

    def wait_vswitch_available(self, vswitch_id):
        def probe():
            v = self.vswitch(vswitch_id)
            if v is None:
                raise CloudError("vSwitch %s disappeared while waiting for it" % vswitch_id,
                                 code="cloud.vanished")
            return v if v["status"] == "Available" else None
        return self.wait_for("vSwitch %s to become Available" % vswitch_id, probe,
                             self.timeouts["network"])

    def wait_instance_running(self, instance_id):
        def probe():
            inst = self.instance(instance_id)
            if inst is None:
                raise CloudError("instance %s disappeared while starting" % instance_id,
                                 code="cloud.vanished",
                                 hint="it was released from outside; run `go2aliyun-cloud "
                                      "cleanup` and launch again")
            if inst.status in ("Stopped", "Stopping"):
                raise CloudError("instance %s is %s instead of starting" % (
                    instance_id, inst.status), code="cloud.instance_stopped")
            return inst if inst.status == "Running" else None
        return self.wait_for("instance %s to run" % instance_id, probe,
                             self.timeouts["instance"])

    def wait_instance_gone(self, instance_id):
        return self.wait_for("instance %s to be released" % instance_id,
                             lambda: self.instance(instance_id) is None,
                             self.timeouts["delete"])

    def wait_snapshot(self, snapshot_id, progress=None):
        def probe():
            s = self.snapshot(snapshot_id)
            if s is None:
                raise CloudError("snapshot %s disappeared" % snapshot_id, code="cloud.vanished")
            if s["status"] == "failed":
                raise CloudError("snapshot %s failed" % snapshot_id,
                                 code="cloud.snapshot_failed",
                                 hint="run the same step again: a new snapshot is taken")
            if progress:
                progress(s)
            return s if s["status"] == "accomplished" else None
        return self.wait_for("snapshot %s" % snapshot_id, probe, self.timeouts["snapshot"])

    def wait_image(self, image_id, progress=None):
        def probe():
            img = self.image(image_id)
            if img is None:
                raise CloudError("image %s disappeared" % image_id, code="cloud.vanished")
            if img["status"] in ("CreateFailed", "UnAvailable", "Deprecated"):
                raise CloudError("image %s is %s" % (image_id, img["status"]),
                                 code="cloud.image_failed",
                                 hint="delete the failed image and run the step again")
            if progress:
                progress(img)
            return img if img["status"] == "Available" else None
        return self.wait_for("image %s to become Available" % image_id, probe,
                             self.timeouts["image"])
