"""pytest fixtures around the fake cloud, shared by tests/fakecloud and tests/image_build
(import them into a conftest.py)."""

import base64
import json

import pytest
import yaml

from receiver import cloudimage
from tests.fakecloud.server import OPERATOR_KEY, FakeCloud

REGION = "cn-hangzhou"


def cloud_workdir(tmp_path, monkeypatch):
    """A go2aliyun-cloud workdir: the operator's keys and a 40 + 50 GiB server in its
    user_config.json, and no keys in the environment."""
    (tmp_path / "user_config.json").write_text(json.dumps({
        "access_id": OPERATOR_KEY[0], "secret_key": OPERATOR_KEY[1],
        "region_id": REGION, "image_name": "web01-migrated", "system_disk_size": 40,
        "platform": "Debian", "architecture": "x86_64", "bandwidth_limit": 0,
        "data_disks": [{"data_disk_index": 1, "data_disk_size": 50, "src_path": "/data"}]}))
    for var in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
                "ALIBABA_CLOUD_SECURITY_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def users_network(cloud):
    """A VPC and vSwitch the user made before (ids), as the private mode is given them."""
    vpc_id = cloud.create_vpc("10.0.0.0/16", "users", "users-vpc")
    cloud.wait_vpc_available(vpc_id)
    return vpc_id, cloud.create_vswitch(vpc_id, REGION + "-i", "10.0.1.0/24", "users",
                                        "users-vsw")


def cloud_cli_args(fake, workdir, *rest):
    """go2aliyun-cloud's options that point it at the fake, then ``rest``."""
    return ["--workdir", str(workdir), "--endpoint", fake.endpoint, "--protocol", "http",
            "--poll-interval", "0.01"] + list(rest)


class FakeClock(object):
    """A clock that only moves when something sleeps: waits and backoffs cost nothing."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake():
    with FakeCloud() as cloud:
        cloud.appliance_image = cloud.world.add_image("go2aliyun-receiver-0.1.0")
        yield cloud


@pytest.fixture
def clock():
    return FakeClock()


def aliyun_cloud(fake, clock, key=OPERATOR_KEY, **kw):
    """The real SDK-based implementation, pointed at the fake cloud."""
    from image_build.cloud import aliyun_from_settings

    settings = dict(access_key_id=key[0], access_key_secret=key[1])
    settings.update(kw)
    return aliyun_from_settings(REGION, endpoint=fake.endpoint, protocol="http",
                                sleep=clock.sleep, clock=clock, **settings)


@pytest.fixture
def cloud(fake, clock):
    return aliyun_cloud(fake, clock)


def receiver_of(fake, clock, state, tmp_path):
    """The OnReceiver of the instance launch made (``state``), built as the receiver
    would: from the cloud.json in its user-data, the fake's metadata naming it."""
    fake.metadata_instance = state.get("instance_id")
    inst = fake.world.instances[state.get("instance_id")]
    files = {f["path"]: base64.b64decode(f["content"])
             for f in yaml.safe_load(inst["UserData"])["write_files"]}
    cloud_json = tmp_path / "cloud.json"
    cloud_json.write_bytes(files["/etc/go2aliyun/cloud.json"])
    return cloudimage.OnReceiver(
        cloudimage.receiver_state_path(str(tmp_path / "receiver")), str(cloud_json),
        metadata_endpoint=fake.endpoint, endpoint=fake.endpoint, protocol="http",
        sleep=clock.sleep, clock=clock)
