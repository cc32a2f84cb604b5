"""The conformance suite of the cloud interface (image_build/cloud/base.py).

Every implementation runs through the same tests: add a param to ``subject`` that yields
a :class:`Subject` (the ``local`` provider, a later issue, adds one). ``aliyun`` runs the
real SDK against tests/fakecloud.
"""

import time

import pytest

from image_build.cloud import ImageSpec, InstanceSpec, client_token
from receiver.datachannel import free_port
from tests.fakecloud.fixtures import FakeClock, aliyun_cloud


class Subject(object):
    def __init__(self, cloud, boot_image, owner):
        self.cloud = cloud
        self.boot_image = boot_image  # an image id run_instance can start
        self.owner = owner            # the backing fake/provider, for inspection only


class ShortSleepClock(FakeClock):
    """For the local provider, whose work is real: time jumps like FakeClock's, but each
    sleep also lets the real helpers (qemu-img, the image builder) run a little."""

    def sleep(self, seconds):
        time.sleep(min(seconds, 0.05))
        super(ShortSleepClock, self).sleep(seconds)


class LocalOwner(object):
    """The local provider's side of the subject: instances can be held Pending (qemu
    started paused, like ECS's CreateInstance without StartInstance)."""

    def __init__(self, cloud):
        self.cloud = cloud

    def hold_instances_pending(self):
        self.cloud.autostart = False


@pytest.fixture(params=["aliyun", pytest.param("local", marks=[pytest.mark.qemu,
                                                                pytest.mark.commands])])
def subject(request, tmp_path):
    if request.param == "aliyun":
        fake = request.getfixturevalue("fake")
        yield Subject(aliyun_cloud(fake, FakeClock()), fake.appliance_image, fake)
    else:
        from image_build.cloud.local import LocalCloud
        from wire import runner

        clock = ShortSleepClock()
        cloud = LocalCloud(str(tmp_path / "local"), address="127.0.0.1",
                           ports={8080: free_port(), 8703: free_port()},
                           verify_images=False, memory_mib=64, sleep=clock.sleep,
                           clock=clock, poll_interval=0.2)
        blank = str(tmp_path / "blank.qcow2")  # boots nowhere: Running is qemu running
        runner.run(["qemu-img", "create", "-q", "-f", "qcow2", blank, "1G"])
        try:
            yield Subject(cloud, blank, LocalOwner(cloud))
        finally:
            for inst_id in list(cloud._read()["instances"]):
                cloud.delete_instance(inst_id)


def _network(cloud, tag):
    vpc_id = cloud.create_vpc("172.16.0.0/16", "contract", client_token(tag, "vpc"))
    cloud.wait_vpc_available(vpc_id)
    zone = cloud.zones()[0]
    vsw_id = cloud.create_vswitch(vpc_id, zone, "172.16.0.0/24", "contract",
                                  client_token(tag, "vsw"))
    cloud.wait_vswitch_available(vsw_id)
    sg_id = cloud.create_security_group(vpc_id, "contract", client_token(tag, "sg"))
    return vpc_id, vsw_id, sg_id


def _instance(subject, tag="m-contract", disks=(("go2aliyun-target-system", 30),)):
    cloud = subject.cloud
    vpc_id, vsw_id, sg_id = _network(cloud, tag)
    spec = InstanceSpec(subject.boot_image, "ecs.g7.large", vsw_id, sg_id, "#cloud-config\n",
                        data_disks=disks, public_bandwidth_mbit=10)
    inst_id = cloud.run_instance(spec, client_token(tag, "instance"))
    return (vpc_id, vsw_id, sg_id), inst_id, spec


def test_network_resources_are_created_once_per_client_token(subject):
    cloud = subject.cloud
    vpc_id = cloud.create_vpc("172.16.0.0/16", "a", client_token("m-1", "vpc"))
    assert cloud.create_vpc("172.16.0.0/16", "a", client_token("m-1", "vpc")) == vpc_id
    other = cloud.create_vpc("172.16.0.0/16", "a", client_token("m-2", "vpc"))
    assert other != vpc_id
    assert cloud.wait_vpc_available(vpc_id)["status"] == "Available"
    assert cloud.vpc("vpc-doesnotexist") is None
    assert cloud.vswitch("vsw-doesnotexist") is None


def test_ingress_is_exactly_the_ports_from_the_source(subject):
    cloud = subject.cloud
    _, _, sg_id = _network(cloud, "m-ingress")
    cloud.allow_ingress(sg_id, (8080, 8703), "203.0.113.7/32", client_token("m-i", "rules"))
    cloud.allow_ingress(sg_id, (8080, 8703), "203.0.113.7/32", "another-token")
    assert cloud.ingress_rules(sg_id) == [(8080, "203.0.113.7/32"), (8703, "203.0.113.7/32")]


def test_instance_runs_and_lists_its_disks_in_order(subject):
    cloud = subject.cloud
    _, inst_id, spec = _instance(subject, disks=[("go2aliyun-target-system", 30),
                                                 ("go2aliyun-target-disk1", 60)])
    again = cloud.run_instance(spec, client_token("m-contract", "instance"))
    assert again == inst_id
    inst = cloud.wait_instance_running(inst_id)
    assert inst.status == "Running" and inst.public_ip and inst.private_ip
    disks = cloud.instance_disks(inst_id)
    assert [d.role for d in disks] == ["system", "data", "data"]
    assert [(d.name, d.size_gib) for d in disks[1:]] == [
        ("go2aliyun-target-system", 30), ("go2aliyun-target-disk1", 60)]
    assert cloud.instance("i-doesnotexist") is None


def test_snapshot_image_and_lookup_by_name(subject):
    cloud = subject.cloud
    _, inst_id, _ = _instance(subject)
    cloud.wait_instance_running(inst_id)
    disk = cloud.instance_disks(inst_id)[1]
    snap = cloud.create_snapshot(disk.id, "s", client_token("m-s", "snap"))
    seen = []
    assert cloud.wait_snapshot(snap, progress=lambda s: seen.append(s["progress"]))[
        "status"] == "accomplished"
    assert seen[-1] == "100%" and len(seen) > 1
    assert cloud.find_images_by_name("contract-image") == []
    spec = ImageSpec("contract-image", [(snap, disk.size_gib)], platform="Debian")
    image_id = cloud.create_image(spec, client_token("m-s", "image"))
    assert cloud.create_image(spec, client_token("m-s", "image")) == image_id
    assert cloud.find_images_by_name("contract-image") == [
        {"id": image_id, "status": cloud.image(image_id)["status"]}]
    assert cloud.wait_image(image_id)["status"] == "Available"
    assert cloud.image(image_id)["name"] == "contract-image"


def test_image_mapping_puts_the_system_disk_first():
    spec = ImageSpec("x", [("s-1", 40), ("s-2", 100), ("s-3", 20)])
    assert spec.mappings() == [
        {"snapshot_id": "s-1", "device": "/dev/xvda", "disk_type": "system", "size": 40},
        {"snapshot_id": "s-2", "device": "/dev/xvdb", "disk_type": "data", "size": 100},
        {"snapshot_id": "s-3", "device": "/dev/xvdc", "disk_type": "data", "size": 20}]


def test_deletes_wait_for_dependents_and_are_idempotent(subject):
    cloud = subject.cloud
    (vpc_id, vsw_id, sg_id), inst_id, _ = _instance(subject)
    cloud.wait_instance_running(inst_id)
    cloud.delete_instance(inst_id)
    cloud.delete_instance(inst_id)
    # The instance is still going away: the group and vSwitch deletes must wait for it.
    cloud.delete_security_group(sg_id)
    cloud.delete_vswitch(vsw_id)
    cloud.delete_vpc(vpc_id)
    assert cloud.instance(inst_id) is None
    for again in (lambda: cloud.delete_security_group(sg_id), lambda: cloud.delete_vswitch(
            vsw_id), lambda: cloud.delete_vpc(vpc_id), lambda: cloud.delete_instance(inst_id),
            lambda: cloud.delete_snapshot("s-doesnotexist")):
        again()
    assert cloud.vpc(vpc_id) is None and cloud.vswitch(vsw_id) is None


def test_waits_give_up_with_a_clear_error(subject):
    from wire.errors import CloudError

    cloud = subject.cloud
    cloud.timeouts["instance"] = 60
    if hasattr(subject.owner, "world"):
        subject.owner.world.ticks["instance_pending"] = 10 ** 6
    if hasattr(subject.owner, "hold_instances_pending"):
        subject.owner.hold_instances_pending()
    _, inst_id, _ = _instance(subject)
    with pytest.raises(CloudError) as e:
        cloud.wait_instance_running(inst_id)
    assert e.value.code == "cloud.timeout" and inst_id in e.value.message


def test_tagged_resources_are_found_by_their_tag(subject):
    cloud = subject.cloud
    tags = {"go2aliyun:migration": "m-tagged"}
    vpc_id = cloud.create_vpc("172.16.0.0/16", "t", client_token("m-t", "vpc"), tags=tags)
    cloud.create_vpc("172.16.0.0/16", "u", client_token("m-u", "vpc"),
                     tags={"go2aliyun:migration": "m-other"})
    cloud.wait_vpc_available(vpc_id)
    vsw_id = cloud.create_vswitch(vpc_id, cloud.zones()[0], "172.16.0.0/24", "t",
                                  client_token("m-t", "vsw"), tags=tags)
    sg_id = cloud.create_security_group(vpc_id, "t", client_token("m-t", "sg"), tags=tags)
    found = cloud.find_tagged(tags)
    assert [r["id"] for r in found["vpcs"]] == [vpc_id]
    assert [(r["id"], r["vpc_id"]) for r in found["vswitches"]] == [(vsw_id, vpc_id)]
    assert [(r["id"], r["vpc_id"]) for r in found["security_groups"]] == [(sg_id, vpc_id)]
    assert found["instances"] == found["snapshots"] == found["images"] == []


def test_revoke_ingress_leaves_the_other_source(subject):
    cloud = subject.cloud
    _, _, sg_id = _network(cloud, "m-revoke")
    cloud.allow_ingress(sg_id, (8080, 8703), "203.0.113.7/32", "t1")
    cloud.allow_ingress(sg_id, (8080, 8703), "198.51.100.9/32", "t2")
    cloud.revoke_ingress(sg_id, (8080, 8703), "203.0.113.7/32")
    cloud.revoke_ingress(sg_id, (8080, 8703), "203.0.113.7/32")  # harmless
    assert cloud.ingress_rules(sg_id) == [(8080, "198.51.100.9/32"), (8703, "198.51.100.9/32")]
