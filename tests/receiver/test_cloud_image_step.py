"""The receiver's SNAPSHOTTING and IMAGE_READY steps with the ``aliyun`` provider, run
by the real worker against the fake cloud: the instance is launched by
image_build.launch (so its disks, RAM role and cloud.json are what a real launch makes),
the receiver reads the cloud.json decoded from that user-data at a configurable path,
takes its RAM role keys from the (fake) metadata service, snapshots the target disks,
creates the image, waits until Available and releases its own instance; the launcher
then releases the network it made."""

import base64
import json
import os

import yaml

from image_build import finish, launch
from image_build.state import StateFile
from receiver import state as st
from receiver import worker
from tests.fakecloud.fixtures import REGION, aliyun_cloud
from tests.fakecloud.server import OPERATOR_KEY


def _launched(fake, clock, base):
    cloud = aliyun_cloud(fake, clock)
    state = StateFile(os.path.join(base, "cloud_state.json"))
    settings = launch.LaunchSettings(
        region_id=REGION, image_name="web01-from-receiver",
        receiver_image_id=fake.appliance_image, source_cidr="203.0.113.7",
        system_disk_size=40, data_disks=[(1, 100)], platform="Debian",
        ram_role=fake.role, wait_receiver=False)
    result = launch.launch(cloud, state, settings)
    return cloud, state, result


def _cloud_json_from_user_data(inst, path):
    ud = yaml.safe_load(inst["UserData"])
    for f in ud["write_files"]:
        if f["path"] == "/etc/go2aliyun/cloud.json":
            with open(path, "wb") as out:
                out.write(base64.b64decode(f["content"]))
            return json.loads(base64.b64decode(f["content"]))
    raise AssertionError("the user-data writes no cloud.json: %s" % ud)


def test_receiver_makes_the_image_with_its_ram_role_and_releases_itself(fake, clock,
                                                                       tmp_path):
    base = str(tmp_path)
    launcher_cloud, launcher_state, result = _launched(fake, clock, base)
    inst_id = result["instance_id"]
    fake.metadata_instance = inst_id  # the metadata service answers for this instance
    cloud_json = os.path.join(base, "etc-go2aliyun-cloud.json")
    config = _cloud_json_from_user_data(fake.world.instances[inst_id], cloud_json)
    assert config["ram_role"] == fake.role and "secret" not in json.dumps(config)

    store = st.Store(os.path.join(base, "state"))
    store.ensure()
    store.write("config.json", {
        "provider": config["provider"], "cloud_config": cloud_json,
        "release_grace_seconds": 0,
        "cloud_api": {"endpoint": fake.endpoint, "protocol": "http",
                      "metadata_endpoint": fake.endpoint, "poll_interval": 0.01}})
    store.write("manifest.json", {"firmware": "bios"})

    def to_snapshotting(doc):
        doc["state"] = "SNAPSHOTTING"
    store.update(to_snapshotting)
    calls_before = len(fake.world.calls)

    assert worker.run_step(store).value == "IMAGE_READY", store.load().get("error")
    doc = store.load()
    image_id = doc["image"]["id"]
    assert doc["image"]["provider"] == "aliyun"
    image = fake.world.images[image_id]
    assert (image["ImageName"], image["Status"], image["BootMode"]) == (
        "web01-from-receiver", "Available", "BIOS")
    mapping = image["DiskDeviceMappings"]["DiskDeviceMapping"]
    assert [(m["Device"], m["Size"]) for m in mapping] == [("/dev/xvda", "40"),
                                                           ("/dev/xvdb", "100")]
    # the receiver's calls were made with the RAM role's temporary keys, none with the
    # operator's AccessKey
    callers = fake.world.callers[calls_before:]
    assert callers and all(c.startswith("STS.") for c in callers), callers
    assert OPERATOR_KEY[0] not in callers
    on_disk = json.loads((tmp_path / "state" / "cloud_image.json").read_text())
    assert on_disk["image_id"] == image_id and on_disk["instance_id"] == inst_id

    # IMAGE_READY: the receiver releases its own instance (not the network)
    assert worker.run_step(store).value == "RELEASED", store.load().get("error")
    assert inst_id not in fake.world.instances or \
        fake.world.instances[inst_id]["Status"] == "Deleting"
    assert fake.world.vpcs, "the receiver must not delete the launcher's network"

    # the launcher (all-in-one source or `go2aliyun-cloud cleanup`) releases the rest
    finish.release(launcher_cloud, launcher_state)
    left = {k: v for k, v in fake.world.summary().items() if k not in ("images",
                                                                          "snapshots")}
    assert left == {"vpcs": 0, "vswitches": 0, "security_groups": 0, "instances": 0,
                    "disks": 0}
    # the image keeps its two snapshots (one per target disk, not the receiver's own)
    assert sorted(s["SourceDiskSize"] for s in fake.world.snapshots.values()) == ["100", "40"]
