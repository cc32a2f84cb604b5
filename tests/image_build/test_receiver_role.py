"""The receiver's RAM role against the fake cloud through the real SDK: the policy file
allows exactly what the receiver calls with it, and the DryRun check at start names a
missing action (and warns about a broader role) without making or deleting anything."""

import logging

import pytest

from image_build import launch
from image_build.cloud import ramrole
from image_build.state import StateFile
from receiver import cloudimage
from tests.fakecloud.fixtures import REGION, receiver_of
from tests.fakecloud.fixtures import aliyun_cloud as operator_cloud
from wire.errors import CloudError

POLICY = ramrole.policy_actions()


def launched_receiver(fake, clock, tmp_path):
    """Launch as the operator; return an OnReceiver as the receiver would build it."""
    state = StateFile.in_workdir(str(tmp_path / "operator"))
    launch.launch(operator_cloud(fake, clock), state, launch.LaunchSettings(
        region_id=REGION, image_name="web01-migrated", receiver_image_id=fake.appliance_image,
        source_cidr="203.0.113.7", system_disk_size=40, data_disks=[(1, 100)],
        platform="Debian", wait_receiver=False, ram_role=fake.role))
    return receiver_of(fake, clock, state, tmp_path)


def role_calls(fake, dry_run):
    """The RAM actions called with the role's temporary keys (DryRun ones or real ones)."""
    return {"ecs:" + action for (action, params), caller in zip(fake.world.calls,
                                                                  fake.world.callers)
            if caller in fake.sts_issued
            and (str(params.get("DryRun")).lower() == "true") == dry_run}


def test_the_policy_allows_exactly_what_the_receiver_calls(fake, clock, tmp_path, caplog):
    """With a role of exactly the policy the receiver checks, builds and releases; the
    real calls it made are the policy's actions, no more, no fewer."""
    fake.role_actions = POLICY
    receiver = launched_receiver(fake, clock, tmp_path)
    with caplog.at_level(logging.WARNING):
        check = receiver.check_role()
    assert check.missing == [] and check.broader == [] and check.unsure == {}
    assert check.unchecked == ["ecs:CreateSnapshot"]  # its SDK request has no DryRun
    assert sorted(check.allowed + check.unchecked) == POLICY
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    image_id = receiver.build_image()
    receiver.release_self()
    assert fake.world.images[image_id]["Status"] == "Available"
    assert fake.world.summary()["instances"] == 0
    assert sorted(role_calls(fake, dry_run=False)) == POLICY
    # the check asked for every policy action that has a DryRun, plus the one probe
    assert role_calls(fake, dry_run=True) == set(check.allowed) | {"ecs:StopInstance"}


@pytest.mark.parametrize("missing", ["ecs:CreateImage", "ecs:DeleteInstance",
                                     "ecs:DescribeSnapshots"])
def test_a_role_without_an_action_is_refused_at_start_naming_it(fake, clock, tmp_path,
                                                                 missing):
    fake.role_actions = [a for a in POLICY if a != missing]
    receiver = launched_receiver(fake, clock, tmp_path)
    before = fake.world.summary()
    with pytest.raises(CloudError) as e:
        receiver.check_role()
    assert e.value.code == "cloud.ram_role_too_narrow"
    assert missing in e.value.message and e.value.details["missing"] == [missing]
    assert "image_build/receiver-ram-policy.json" in e.value.hint
    # DryRun: nothing made, nothing deleted, the instance still runs
    assert fake.world.summary() == before
    assert fake.world.instances[receiver.state.get("instance_id")]["Status"] == "Running"


def test_a_broader_role_passes_with_a_warning(fake, clock, tmp_path, caplog):
    receiver = launched_receiver(fake, clock, tmp_path)  # the fake role may do everything
    with caplog.at_level(logging.WARNING):
        check = receiver.check_role()
    assert check.broader == ["ecs:StopInstance"] and check.missing == []
    assert any("broader" in r.getMessage() and "receiver-ram-policy.json" in r.getMessage()
               for r in caplog.records)
    assert fake.world.instances[receiver.state.get("instance_id")]["Status"] == "Running"


def test_create_snapshot_refused_later_names_the_policy(fake, clock, tmp_path):
    """CreateSnapshot has no DryRun: when it is the missing one, the check passes and the
    first snapshot's refusal names the policy instead of the launcher's hint."""
    fake.role_actions = [a for a in POLICY if a != "ecs:CreateSnapshot"]
    receiver = launched_receiver(fake, clock, tmp_path)
    receiver.check_role()
    with pytest.raises(CloudError) as e:
        receiver.build_image()
    assert e.value.code == "cloud.Forbidden.RAM"
    assert "ecs:CreateSnapshot" in e.value.hint and "receiver-ram-policy.json" in e.value.hint


def test_check_at_start_raises_only_for_a_narrow_role(fake, clock, tmp_path, caplog):
    """serve's check: a missing action stops it; a cloud it cannot ask is a warning."""
    fake.role_actions = [a for a in POLICY if a != "ecs:CreateImage"]
    launched_receiver(fake, clock, tmp_path)
    config = {"cloud_config": str(tmp_path / "cloud.json"),
              "cloud_api": {"endpoint": fake.endpoint, "protocol": "http",
                            "metadata_endpoint": fake.endpoint}}
    with pytest.raises(CloudError) as e:
        cloudimage.check_role_at_start(str(tmp_path / "state"), config)
    assert e.value.code == "cloud.ram_role_too_narrow"
    fake.metadata_instance = None  # the metadata service does not know this instance
    with caplog.at_level(logging.WARNING):
        assert cloudimage.check_role_at_start(str(tmp_path / "state2"), config) is None
    assert any("could not check the RAM role" in r.getMessage() for r in caplog.records)


def test_the_policy_file_is_a_ram_policy_of_ecs_actions_only():
    assert sorted(set(POLICY)) == POLICY and all(a.startswith("ecs:") for a in POLICY)
    assert not [a for a in POLICY if "*" in a]


def test_an_unreachable_api_is_asked_once_and_left_to_the_steps(fake, clock, tmp_path):
    receiver = launched_receiver(fake, clock, tmp_path)
    fake.world.inject("ServiceUnavailable", times=1000)  # every call, every retry
    calls = len(fake.world.calls)
    check = receiver.check_role()
    assert check.missing == [] and check.broader == []
    assert sorted(check.unsure) == sorted(set(POLICY) - {"ecs:CreateSnapshot"})
    # one action's retries, not six times that
    assert len(fake.world.calls) - calls == receiver.cloud.retrier.attempts
