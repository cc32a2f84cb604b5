"""The one-step launch (no receiver appliance image: the region's newest official Debian 12
image, whose user-data installs the receiver first) and the wait for the receiver from a
machine the security group does not admit (the console through the API), against the
fake cloud through the real SDK."""

import base64
import shlex

import pytest
import yaml

from image_build import launch, userdata
from image_build.state import StateFile
from receiver.datachannel import free_port
from tests.fakecloud.fixtures import aliyun_cloud, users_network
from tests.image_build.test_launch_finish import settings_for
from wire import runner
from wire.errors import CloudError

NEWEST = "debian_12_8_x64_20G_alibase_20241210.vhd"


def stock_images(world):
    """A region's public images: Debian 12 old and new, its UEFI and ARM variants,
    Debian 11, Ubuntu, Windows, and more than one page of other Linux images."""
    add = world.add_image
    add("Debian 12.6 64 bit", owner="system", image_id="debian_12_6_x64_20G_alibase_20240601.vhd",
        created="2024-06-01T00:00:00Z")
    add("Debian 12.8 64 bit", owner="system", image_id=NEWEST, created="2024-12-10T00:00:00Z")
    add("Debian 12.8 UEFI", owner="system", created="2024-12-20T00:00:00Z",
        image_id="debian_12_8_uefi_x64_20G_alibase_20241220.vhd")
    add("Debian 12.8 ARM", owner="system", architecture="arm64", created="2024-12-21T00:00:00Z",
        image_id="debian_12_8_arm64_20G_alibase_20241221.vhd")
    add("Debian 11.11", owner="system", created="2024-12-22T00:00:00Z",
        image_id="debian_11_11_x64_20G_alibase_20241222.vhd")
    add("Windows Server 2022", owner="system", os_type="windows", created="2024-12-23T00:00:00Z",
        image_id="win2022_21H2_x64_dtc_en-us_40G_alibase_20241223.vhd")
    for n in range(110):
        add("Ubuntu %d" % n, owner="system", created="2024-12-%02dT00:00:00Z" % (n % 28 + 1),
            image_id="ubuntu_22_04_x64_20G_alibase_2024%04d.vhd" % n)


def run_params(fake):
    return [p for a, p in fake.world.calls if a == "RunInstances"][-1]


def user_data_files(params):
    doc = yaml.safe_load(base64.b64decode(params["UserData"]))
    return doc, {f["path"]: base64.b64decode(f["content"]).decode() for f in doc["write_files"]}


def unreachable(fake):
    """The instance's address is here, on a port nothing listens on: /healthz never
    answers, as for a workstation the security group does not admit."""
    fake.world.public_ip = "127.0.0.1"
    return free_port()


def test_pick_debian12_takes_the_newest_x86_64_one():
    images = [{"id": "debian_12_6_x64_20G_alibase_20240601.vhd",
               "creation_time": "2024-06-01T00:00:00Z", "architecture": "x86_64"},
              {"id": NEWEST, "creation_time": "2024-12-10T00:00:00Z", "architecture": "x86_64"},
              {"id": "debian_12_8_uefi_x64_20G_alibase_20241220.vhd",
               "creation_time": "2024-12-20T00:00:00Z", "architecture": "x86_64"},
              {"id": "debian_11_11_x64_20G_alibase_20241222.vhd",
               "creation_time": "2024-12-22T00:00:00Z", "architecture": "x86_64"}]
    assert launch.pick_debian12(images)["id"] == NEWEST
    assert launch.pick_debian12(images[3:]) is None


def test_without_an_appliance_image_debian12_installs_the_receiver(fake, clock, tmp_path):
    stock_images(fake.world)
    port = unreachable(fake)
    state = StateFile.in_workdir(str(tmp_path))
    result = launch.launch(aliyun_cloud(fake, clock), state, settings_for(
        fake, receiver_image_id=None, wait_receiver=True, receiver_port=port,
        version="0.1.0"))
    params = run_params(fake)
    assert params["ImageId"] == NEWEST and state.get("launch_image_id") == NEWEST
    # the same install steps build-image runs, then the receiver's identity and start
    doc, files = user_data_files(params)
    with open("cloud-init/" + userdata.INSTALL_SCRIPT) as f:
        assert files[userdata.INSTALL_COMMAND] == f.read()
    settings = dict(line.split("=", 1) for line in files[userdata.SETTINGS_PATH].splitlines())
    assert shlex.split(settings["G2A_VERSION"]) == ["0.1.0"]
    assert shlex.split(settings["G2A_PACKAGES"])[0].split() == list(userdata.RECEIVER_PACKAGES)
    assert shlex.split(settings["G2A_PIP_INDEX"]) == [userdata.DEFAULT_PIP_INDEX]
    assert doc["runcmd"][0] == [userdata.INSTALL_COMMAND]
    assert doc["runcmd"][-1] == ["systemctl", "enable", "--now", "--no-block",
                                 "go2aliyun-receiver.service"]
    assert "power_state" not in doc
    assert files["/var/lib/go2aliyun/tls/receiver.crt"] == state.get("tls")["certificate"]
    # seen running on the console (the install's marker, then the receiver's line)
    assert state.get("receiver_ready") and result["address"] == "127.0.0.1"
    console = aliyun_cloud(fake, clock).console_output(result["instance_id"])
    assert userdata.parse_marker(console) == ("ready", "0.1.0")
    # a rerun sends nothing new
    calls = len(fake.world.calls)
    again = launch.launch(aliyun_cloud(fake, clock), state, settings_for(
        fake, receiver_image_id=None, wait_receiver=False, version="0.1.0"))
    assert again["instance_id"] == result["instance_id"]
    assert "RunInstances" not in [a for a, _ in fake.world.calls[calls:]]


def test_private_one_step_asks_no_public_address_and_uses_the_intranet_mirror(
        fake, clock, tmp_path):
    stock_images(fake.world)
    cloud = aliyun_cloud(fake, clock)
    vpc_id, vsw_id = users_network(cloud)
    state = StateFile.in_workdir(str(tmp_path))
    result = launch.launch(cloud, state, settings_for(
        fake, receiver_image_id=None, private=True, vpc_id=vpc_id, vswitch_id=vsw_id,
        source_cidr="10.8.0.0/24", version="0.1.0"))
    params = run_params(fake)
    assert params["ImageId"] == NEWEST and params["InternetMaxBandwidthOut"] == "0"
    assert fake.world.instances[result["instance_id"]]["PublicIp"] is None
    _, files = user_data_files(params)
    assert userdata.INTRANET_PIP_INDEX in files[userdata.SETTINGS_PATH]


def test_a_failed_install_stops_the_wait_with_the_console(fake, clock, tmp_path):
    stock_images(fake.world)
    fake.world.appliance_failure = "apt-get install"
    port = unreachable(fake)
    state = StateFile.in_workdir(str(tmp_path))
    with pytest.raises(CloudError) as e:
        launch.launch(aliyun_cloud(fake, clock), state, settings_for(
            fake, receiver_image_id=None, wait_receiver=True, receiver_port=port,
            version="0.1.0"))
    assert e.value.code == "cloud.receiver_install_failed"
    assert "go2aliyun-appliance: failed: apt-get install" in e.value.message
    assert sum(clock.sleeps) < 60  # not the whole timeout


def test_no_debian12_in_the_region_is_said_before_any_instance(fake, clock, tmp_path):
    fake.world.add_image("Ubuntu", owner="system",
                         image_id="ubuntu_22_04_x64_20G_alibase_20241201.vhd")
    with pytest.raises(CloudError) as e:
        launch.launch(aliyun_cloud(fake, clock), StateFile.in_workdir(str(tmp_path)),
                      settings_for(fake, receiver_image_id=None, version="0.1.0"))
    assert e.value.code == "cloud.no_base_image" and "--receiver-image" in e.value.hint
    assert "RunInstances" not in fake.world.actions()


def test_a_workstation_not_admitted_waits_on_the_console(fake, clock, tmp_path):
    """The appliance image, launched from a machine that is not the server: /healthz
    cannot answer here (the security group admits the server only); the receiver's
    start line on the console, with the fingerprint made here, ends the wait."""
    port = unreachable(fake)
    state = StateFile.in_workdir(str(tmp_path))
    result = launch.launch(aliyun_cloud(fake, clock), state, settings_for(
        fake, wait_receiver=True, receiver_port=port))
    assert state.get("receiver_ready") and result["instance_id"]
    assert "GetInstanceConsoleOutput" in fake.world.actions()
    # another receiver's line (another fingerprint) would not do
    assert not userdata.receiver_started(
        "go2aliyun-receiver: migration m-1, address 1.2.3.4, fingerprint %s, ports 8080/8703"
        % ":".join(["AB"] * 32), result["fingerprint"])
    assert userdata.receiver_started(
        "[  9.5] go2aliyun-receiver: migration m-1, address 1.2.3.4, fingerprint %s, ports"
        % result["fingerprint"], result["fingerprint"])


@pytest.mark.commands
def test_cloud_init_schema_accepts_the_one_step_user_data(fake, clock, tmp_path):
    stock_images(fake.world)
    launch.launch(aliyun_cloud(fake, clock), StateFile.in_workdir(str(tmp_path / "w")),
                  settings_for(fake, receiver_image_id=None, version="0.1.0"))
    path = tmp_path / "user-data"
    path.write_bytes(base64.b64decode(run_params(fake)["UserData"]))
    r = runner.run(["cloud-init", "schema", "--config-file", str(path)], ok_codes=None)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Valid cloud-config" in r.stdout


def test_the_source_launching_for_itself_waits_until_the_receiver_answers_here(
        fake, clock, tmp_path):
    """All-in-one (``reachable_here``): the launching machine is the source and must
    reach the receiver; its console line alone (a moment before it listens) is not it."""
    port = unreachable(fake)
    with pytest.raises(CloudError) as e:
        launch.launch(aliyun_cloud(fake, clock), StateFile.in_workdir(str(tmp_path)),
                      settings_for(fake, wait_receiver=True, receiver_port=port,
                                   reachable_here=True, receiver_timeout=30))
    assert e.value.code == "cloud.timeout"


# API calls of a clean one-step launch (no wait): see test_one_step_call_count_is_current
ONE_STEP_CALLS = 18


def _one_step(fake, clock, workdir):
    return launch.launch(aliyun_cloud(fake, clock), StateFile.in_workdir(workdir),
                         settings_for(fake, receiver_image_id=None, version="0.1.0"))


def test_one_step_call_count_is_current(fake, clock, tmp_path):
    stock_images(fake.world)
    _one_step(fake, clock, str(tmp_path))
    assert len(fake.world.calls) == ONE_STEP_CALLS, \
        "the flow changed: update ONE_STEP_CALLS so every call gets its crash"


@pytest.mark.parametrize("n", range(1, ONE_STEP_CALLS + 1))
def test_one_step_crash_after_each_call_then_rerun_makes_one_instance(fake, clock, tmp_path, n):
    """The crash pattern of test_crash_resume.py: the n-th call does its work, its answer
    is lost, the cloud goes dark; a rerun from the state file ends with one instance,
    started from the Debian 12 image."""
    stock_images(fake.world)
    workdir = str(tmp_path / "work")
    fake.world.crash_after_call(n)
    with pytest.raises(CloudError) as e:
        _one_step(fake, clock, workdir)
    assert e.value.code == "cloud.unreachable"
    fake.world.revive()
    result = _one_step(fake, clock, workdir)
    assert list(fake.world.instances) == [result["instance_id"]]
    assert fake.world.instances[result["instance_id"]]["ImageId"] == NEWEST
