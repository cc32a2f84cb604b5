"""A crash after every single API call of launch and of finish, then a rerun: no
duplicate resource, the same end state as a run that never crashed.

The crash is the fake cloud's: the N-th call does its work, its answer is lost and the
cloud goes dark (every later request of the dying client is dropped), so nothing the
client might still try after the lost answer reaches the cloud. Then the cloud revives and
the same command runs again from the state file on disk.
"""

import pytest

from image_build import finish, launch
from image_build.state import StateFile
from tests.fakecloud.fixtures import FakeClock, aliyun_cloud
from tests.fakecloud.server import FakeCloud
from tests.image_build.test_launch_finish import settings_for
from wire.errors import CloudError

# API calls of a clean run (see test_call_counts_are_current): launch, then finish.
LAUNCH_CALLS = 16
FINISH_CALLS = 33


def _end_state(fake, state):
    world = fake.world
    return {"summary": world.summary(), "status": state.get("status"),
            "image": world.images[state.get("image_id")]["Status"]
            if state.get("image_id") in world.images else None}


def _clean_run(fake, clock, tmp_path):
    cloud = aliyun_cloud(fake, clock)
    state = StateFile.in_workdir(str(tmp_path))
    launch.launch(cloud, state, settings_for(fake))
    n_launch = len(fake.world.calls)
    finish.finish(cloud, state)
    return n_launch, len(fake.world.calls) - n_launch, _end_state(fake, state)


def test_call_counts_are_current(fake, clock, tmp_path):
    n_launch, n_finish, end = _clean_run(fake, clock, tmp_path)
    assert (n_launch, n_finish) == (LAUNCH_CALLS, FINISH_CALLS), \
        "the flow changed: update LAUNCH_CALLS/FINISH_CALLS so every call gets its crash"
    assert end["summary"]["instances"] == 0 and end["image"] == "Available"


def _crash_then_rerun(fake, clock, tmp_path, crash_in, n):
    workdir = str(tmp_path / "work")
    cloud = aliyun_cloud(fake, clock)
    if crash_in == "finish":
        launch.launch(cloud, StateFile.in_workdir(workdir), settings_for(fake))
    fake.world.crash_after_call(n)
    step = (lambda s: launch.launch(cloud, s, settings_for(fake))) if crash_in == "launch" \
        else (lambda s: finish.finish(cloud, s))
    with pytest.raises(CloudError) as e:
        step(StateFile.in_workdir(workdir))
    assert e.value.code == "cloud.unreachable"
    assert fake.world.crashed_at is not None
    fake.world.revive()
    # a new process: everything it knows comes from the state file on disk
    state = StateFile.in_workdir(workdir)
    if crash_in == "launch":
        launch.launch(cloud, state, settings_for(fake))
    finish.finish(cloud, state)
    return _end_state(fake, state)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The end state of a run that never crashed (computed once)."""
    with FakeCloud() as other:
        other.appliance_image = other.world.add_image("go2aliyun-receiver-0.1.0")
        return _clean_run(other, FakeClock(), tmp_path_factory.mktemp("ref"))[2]


@pytest.mark.parametrize("n", range(1, LAUNCH_CALLS + 1))
def test_crash_after_each_launch_call(fake, clock, tmp_path, reference, n):
    assert _crash_then_rerun(fake, clock, tmp_path, "launch", n) == reference


@pytest.mark.parametrize("n", range(1, FINISH_CALLS + 1))
def test_crash_after_each_finish_call(fake, clock, tmp_path, reference, n):
    assert _crash_then_rerun(fake, clock, tmp_path, "finish", n) == reference
