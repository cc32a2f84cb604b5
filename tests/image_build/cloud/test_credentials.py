"""Credentials: an STS token, and the RAM role of the instance through the metadata
service (the SDK's own provider, pointed at the fake with its proxy option)."""

import json

import pytest

from image_build.cloud import aliyun_from_settings, client_token
from image_build.cloud.credentials import Metadata
from tests.fakecloud.fixtures import REGION, aliyun_cloud
from wire.errors import CloudError, ConfigError


def _running_instance(fake, clock):
    cloud = aliyun_cloud(fake, clock)
    from tests.image_build.cloud.test_contract import Subject, _instance

    _, inst_id, _ = _instance(Subject(cloud, fake.appliance_image, fake))
    cloud.wait_instance_running(inst_id)
    return inst_id


def test_ram_role_credentials_from_the_metadata_service(fake, clock):
    inst_id = _running_instance(fake, clock)
    fake.metadata_instance = inst_id
    md = Metadata(fake.endpoint)
    assert (md.instance_id(), md.region_id(), md.ram_role()) == (inst_id, REGION, fake.role)
    cloud = aliyun_from_settings(None, use_ram_role=True, endpoint=fake.endpoint,
                                 protocol="http", metadata_endpoint=fake.endpoint,
                                 sleep=clock.sleep, clock=clock)
    assert cloud.region_id == REGION  # asked the metadata service
    vpc_id = cloud.create_vpc("10.0.0.0/16", "role", client_token("m-role", "vpc"))
    assert vpc_id
    # the call was signed with the temporary keys the metadata service handed out
    assert fake.world.actions()[-1] == "CreateVpc"
    assert fake.world.callers[-1] in fake.sts_issued


def test_sts_token_pair(fake, clock):
    fake.metadata_instance = _running_instance(fake, clock)
    creds = json.loads(Metadata(fake.endpoint).get("ram/security-credentials/" + fake.role))
    cloud = aliyun_cloud(fake, clock, key=(creds["AccessKeyId"], creds["AccessKeySecret"]),
                         security_token=creds["SecurityToken"])
    assert cloud.zones()
    bad = aliyun_cloud(fake, clock, key=(creds["AccessKeyId"], creds["AccessKeySecret"]),
                       security_token="CAISnotit")
    with pytest.raises(CloudError) as e:
        bad.zones()
    assert e.value.code == "cloud.InvalidSecurityToken.Mismatch"


def test_metadata_outside_an_instance_is_a_clear_error(fake):
    with pytest.raises(CloudError) as e:
        Metadata(fake.endpoint).instance_id()
    assert e.value.code == "cloud.metadata"


def test_missing_keys_are_a_configuration_error():
    with pytest.raises(ConfigError) as e:
        aliyun_from_settings(REGION, access_key_id="", access_key_secret="")
    assert e.value.code == "config.missing_keys"
