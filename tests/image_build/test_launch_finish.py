"""The cloud life cycle against the fake cloud through the real SDK: launch ->
(receiver reports data done) -> snapshots -> image Available -> release."""

import base64
import json

import pytest
import yaml

from image_build import finish, launch
from image_build.state import StateFile
from tests.fakecloud.fixtures import REGION, aliyun_cloud, receiver_of, users_network
from wire.errors import CloudError, ConfigError, UsageError

SOURCE = "203.0.113.7"
EMPTY = {"vpcs": 0, "vswitches": 0, "security_groups": 0, "instances": 0, "disks": 0,
         "snapshots": 0}


def settings_for(fake, **kw):
    values = dict(region_id=REGION, image_name="web01-migrated",
                  receiver_image_id=fake.appliance_image, source_cidr=SOURCE,
                  system_disk_size=40, data_disks=[(1, 100), (2, 20)], platform="Debian",
                  wait_receiver=False)
    values.update(kw)
    return launch.LaunchSettings(**values)


def without_images(summary):
    return {k: v for k, v in summary.items() if k != "images"}


def test_full_life_cycle_leaves_only_the_image(fake, clock, tmp_path):
    cloud = aliyun_cloud(fake, clock)
    state = StateFile.in_workdir(str(tmp_path))
    result = launch.launch(cloud, state, settings_for(fake))

    inst = fake.world.instances[result["instance_id"]]
    assert inst["InstanceName"] == "INSTANCE_FOR_GOTOALIYUN" and inst["Status"] == "Running"
    assert result["address"] == inst["PublicIp"]
    assert result["token"] and len(result["fingerprint"].split(":")) == 32
    # 8080 and 8703 from the source's address only
    group = fake.world.groups[state.get("security_group_id")]
    assert sorted((p["PortRange"], p["SourceCidrIp"]) for p in group["Permissions"]) == [
        ("8080/8080", SOURCE + "/32"), ("8703/8703", SOURCE + "/32")]
    # one data disk for the target system disk and one per data disk, sized as configured
    disks = sorted((d["Device"], d["DiskName"], d["Size"]) for d in fake.world.disks.values())
    assert disks == [("/dev/xvda", "", 40), ("/dev/xvdb", "go2aliyun-target-system", 40),
                     ("/dev/xvdc", "go2aliyun-target-disk1", 100),
                     ("/dev/xvdd", "go2aliyun-target-disk2", 20)]
    # the receiver gets its token and TLS identity through cloud-init user-data
    ud = yaml.safe_load(inst["UserData"])
    files = {f["path"]: base64.b64decode(f["content"]).decode() for f in ud["write_files"]}
    assert result["token"] not in inst["UserData"].decode()
    assert files["/var/lib/go2aliyun/tokens.json"] == state.get("tls")["tokens_json"]
    assert files["/var/lib/go2aliyun/tls/receiver.crt"] == state.get("tls")["certificate"]
    cloud_json = json.loads(files["/etc/go2aliyun/cloud.json"])
    assert cloud_json["migration_id"] == state.get("migration_id")
    assert "secret" not in json.dumps(cloud_json)
    # every id is in the state file, on disk
    on_disk = json.loads((tmp_path / "cloud_state.json").read_text())
    for key in ("vpc_id", "vswitch_id", "security_group_id", "instance_id"):
        assert on_disk[key] == state.get(key)
    assert (tmp_path / "cloud_state.json").stat().st_mode & 0o777 == 0o600

    # ... the receiver reports data done and verified; then:
    image_id = finish.finish(cloud, state, platform="Debian")
    img = fake.world.images[image_id]
    assert (img["ImageName"], img["Status"], img["Platform"]) == (
        "web01-migrated", "Available", "Debian")
    mapping = img["DiskDeviceMappings"]["DiskDeviceMapping"]
    assert [(m["Device"], m["Type"], m["Size"]) for m in mapping] == [
        ("/dev/xvda", "system", "40"), ("/dev/xvdb", "data", "100"), ("/dev/xvdc", "data", "20")]
    # nothing left behind but the image and the snapshots it is made of
    assert without_images(fake.world.summary()) == dict(EMPTY, snapshots=3)
    assert state.get("status") == "Released"


def test_duplicate_image_name_is_refused_before_anything_is_made(fake, clock, tmp_path):
    fake.world.add_image("web01-migrated")
    cloud = aliyun_cloud(fake, clock)
    with pytest.raises(CloudError) as e:
        launch.launch(cloud, StateFile.in_workdir(str(tmp_path)), settings_for(fake))
    assert e.value.code == "cloud.InvalidImageName.Duplicated"
    assert "image_name" in e.value.hint
    assert fake.world.actions() == ["DescribeImages"]
    assert without_images(fake.world.summary()) == EMPTY


def test_private_mode_reuses_the_users_network_and_never_deletes_it(fake, clock, tmp_path):
    cloud = aliyun_cloud(fake, clock)
    vpc_id, vsw_id = users_network(cloud)
    state = StateFile.in_workdir(str(tmp_path))
    result = launch.launch(cloud, state, settings_for(
        fake, private=True, vpc_id=vpc_id, vswitch_id=vsw_id, source_cidr="10.8.0.0/24"))
    inst = fake.world.instances[result["instance_id"]]
    assert inst["PublicIp"] is None and result["address"] == inst["PrivateIp"]
    assert inst["ZoneId"] == REGION + "-i" and state.get("net_mode") == 2
    assert state.get("created") == {"vpc": False, "vswitch": False, "security_group": True}
    finish.finish(cloud, state)
    assert fake.world.summary()["vpcs"] == 1 and fake.world.summary()["vswitches"] == 1
    assert fake.world.summary()["security_groups"] == 0


def test_private_mode_needs_the_network(fake):
    with pytest.raises(UsageError):
        settings_for(fake, private=True)
    with pytest.raises(UsageError):
        settings_for(fake, source_cidr="0.0.0.0/0")


def test_vpc_quota_gives_the_hint_and_cleanup_releases_what_was_made(fake, clock, tmp_path):
    fake.world.vpc_quota = 0
    cloud = aliyun_cloud(fake, clock)
    state = StateFile.in_workdir(str(tmp_path))
    with pytest.raises(CloudError) as e:
        launch.launch(cloud, state, settings_for(fake))
    assert e.value.code == "cloud.QuotaExceeded.Vpc" and "--vpc-id" in e.value.hint
    fake.world.vpc_quota = 10
    launch.launch(cloud, state, settings_for(fake))
    finish.cleanup(cloud, state)
    assert without_images(fake.world.summary()) == EMPTY
    assert state.get("status") == "Cleaned"


def test_cleanup_after_snapshots_but_no_image_deletes_them(fake, clock, tmp_path):
    cloud = aliyun_cloud(fake, clock)
    state = StateFile.in_workdir(str(tmp_path))
    launch.launch(cloud, state, settings_for(fake))
    fake.world.inject("InvalidAccountStatus.NotEnoughBalance", action="CreateImage")
    with pytest.raises(CloudError) as e:
        finish.finish(cloud, state)
    assert e.value.code == "cloud.InvalidAccountStatus.NotEnoughBalance"
    assert len(state.get("snapshots")) == 3
    finish.cleanup(cloud, state)
    assert without_images(fake.world.summary()) == EMPTY


def test_receiver_side_build_with_its_ram_role_then_operator_releases_network(
        fake, clock, tmp_path):
    """The receiver builds the image with its RAM role and deletes only itself; the
    launcher's cleanup then removes the network it made."""
    operator = aliyun_cloud(fake, clock)
    state = StateFile.in_workdir(str(tmp_path / "operator"))
    launch.launch(operator, state, settings_for(fake, ram_role=fake.role))
    on_receiver = receiver_of(fake, clock, state, tmp_path)  # from launch's user-data
    image_id = on_receiver.build_image()
    assert on_receiver.build_image() == image_id  # done is done
    on_receiver.release_self()
    assert set(fake.world.callers[-1:]) <= set(fake.sts_issued)
    img = fake.world.images[image_id]
    assert (img["ImageName"], img["Status"], img["Platform"]) == (
        "web01-migrated", "Available", "Debian")
    assert fake.world.summary()["instances"] == 0 and fake.world.summary()["vpcs"] == 1
    finish.cleanup(operator, state)
    assert without_images(fake.world.summary()) == dict(EMPTY, snapshots=3)


def _blank_disk_names_and_devices(world):
    """As DescribeDisks answers for instances started by hand: no DiskName, no Device."""
    with world.lock:
        for disk in world.disks.values():
            disk["DiskName"], disk["Device"] = "", ""


def test_finish_on_disks_without_names_or_devices_builds_the_right_image(fake, clock,
                                                                         tmp_path):
    cloud = aliyun_cloud(fake, clock)
    state = StateFile.in_workdir(str(tmp_path))
    launch.launch(cloud, state, settings_for(fake))  # system 40, disk1 100, disk2 20 GiB
    role_of = {d["DiskId"]: d["DiskName"] for d in fake.world.disks.values()}
    _blank_disk_names_and_devices(fake.world)
    image_id = finish.build_image(cloud, state, state.get("instance_id"), "web01-migrated")
    mapping = fake.world.images[image_id]["DiskDeviceMappings"]["DiskDeviceMapping"]
    # each image disk is made from the snapshot of the right disk, in the right order
    source = [role_of[fake.world.snapshots[m["SnapshotId"]]["SourceDiskId"]] for m in mapping]
    assert source == ["go2aliyun-target-system", "go2aliyun-target-disk1",
                      "go2aliyun-target-disk2"]
    assert [(m["Device"], m["Type"], m["Size"]) for m in mapping] == [
        ("/dev/xvda", "system", "40"), ("/dev/xvdb", "data", "100"),
        ("/dev/xvdc", "data", "20")]
    assert len(set(m["SnapshotId"] for m in mapping)) == 3


def test_disks_that_cannot_be_told_apart_are_a_clear_error_not_a_guess(fake, clock,
                                                                      tmp_path):
    cloud = aliyun_cloud(fake, clock)
    state = StateFile.in_workdir(str(tmp_path))
    launch.launch(cloud, state, settings_for(fake, data_disks=[(1, 40)]))  # 40 and 40 GiB
    _blank_disk_names_and_devices(fake.world)
    with pytest.raises(CloudError) as e:
        finish.build_image(cloud, state, state.get("instance_id"), "web01-migrated")
    assert e.value.code == "cloud.target_disk_unproven"
    assert "go2aliyun-target-system" in e.value.hint
    assert fake.world.summary()["snapshots"] == 0 and "CreateSnapshot" not in \
        fake.world.actions()


def test_rerun_with_another_source_cidr_replaces_the_rule(fake, clock, tmp_path):
    cloud = aliyun_cloud(fake, clock)
    state = StateFile.in_workdir(str(tmp_path))
    launch.launch(cloud, state, settings_for(fake))
    launch.launch(cloud, StateFile.in_workdir(str(tmp_path)),
                  settings_for(fake, source_cidr="198.51.100.0/28"))
    group = fake.world.groups[state.get("security_group_id")]
    assert sorted((p["PortRange"], p["SourceCidrIp"]) for p in group["Permissions"]) == [
        ("8080/8080", "198.51.100.0/28"), ("8703/8703", "198.51.100.0/28")]
    assert fake.world.summary()["instances"] == 1


@pytest.mark.parametrize("change,setting", [
    (dict(instance_type="ecs.g7.xlarge"), "instance_type"),
    (dict(data_disks=[(1, 200), (2, 20)]), "data_disks"),
    (dict(system_disk_size=60), "system_disk_size")])
def test_rerun_with_a_setting_that_made_a_resource_is_refused_by_name(fake, clock, tmp_path,
                                                                      change, setting):
    cloud = aliyun_cloud(fake, clock)
    launch.launch(cloud, StateFile.in_workdir(str(tmp_path)), settings_for(fake))
    before = len(fake.world.calls)
    recorded = StateFile.in_workdir(str(tmp_path)).data
    with pytest.raises(ConfigError) as e:
        launch.launch(cloud, StateFile.in_workdir(str(tmp_path)), settings_for(fake, **change))
    assert e.value.code == "config.settings_changed" and setting in e.value.message
    assert "cleanup" in e.value.hint
    assert len(fake.world.calls) == before  # refused before any call
    assert StateFile.in_workdir(str(tmp_path)).data == recorded  # the state is untouched


def test_a_setting_whose_resource_was_never_made_may_change(fake, clock, tmp_path):
    cloud = aliyun_cloud(fake, clock)
    state = StateFile.in_workdir(str(tmp_path))
    fake.world.inject("InvalidAccountStatus.NotEnoughBalance", action="RunInstances")
    with pytest.raises(CloudError):
        launch.launch(cloud, state, settings_for(fake))
    # RunInstances was refused: nothing was made with the instance type yet
    assert state.in_flight() == {}
    launch.launch(cloud, StateFile.in_workdir(str(tmp_path)),
                  settings_for(fake, instance_type="ecs.g7.xlarge"))
    inst = fake.world.instances[StateFile.in_workdir(str(tmp_path)).get("instance_id")]
    assert inst["InstanceType"] == "ecs.g7.xlarge"
