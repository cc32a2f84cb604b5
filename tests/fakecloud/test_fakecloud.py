"""The fake cloud itself, driven by the real Alibaba Cloud SDK clients: it must refuse
what the real service refuses (bad signatures, skewed clocks, unknown keys, replayed
nonces), keep ClientToken idempotency, and move resources through their lifecycles."""

import base64
import json
import urllib.request

import pytest
import requests
from alibabacloud_ecs20140526 import models as ecs_models
from alibabacloud_ecs20140526.client import Client as EcsClient
from alibabacloud_tea_openapi.exceptions import ClientException, ServerException
from alibabacloud_tea_openapi.utils_models import Config
from alibabacloud_vpc20160428 import models as vpc_models
from alibabacloud_vpc20160428.client import Client as VpcClient
from darabonba.exceptions import UnretryableException
from darabonba.runtime import RuntimeOptions

from tests.fakecloud import signing
from tests.fakecloud.fixtures import REGION
from tests.fakecloud.server import OPERATOR_KEY, READONLY_KEY


def _config(fake, key=OPERATOR_KEY, **kw):
    return Config(access_key_id=key[0], access_key_secret=key[1], region_id=REGION,
                  endpoint=fake.endpoint, protocol="http", **kw)


def vpc_client(fake, **kw):
    return VpcClient(_config(fake, **kw))


def ecs_client(fake, **kw):
    return EcsClient(_config(fake, **kw))


def describe_vpcs(client):
    return client.describe_vpcs(vpc_models.DescribeVpcsRequest(region_id=REGION)).body.to_map()


def test_signed_request_through_the_real_sdk_is_accepted(fake):
    body = describe_vpcs(vpc_client(fake))
    assert body["Vpcs"]["Vpc"] == [] and body["RequestId"]
    assert fake.world.actions() == ["DescribeVpcs"]


@pytest.mark.parametrize("key,code,status", [
    ((OPERATOR_KEY[0], "not-the-secret"), "SignatureDoesNotMatch", 400),
    (("LTAI5tNobody", "whatever"), "InvalidAccessKeyId.NotFound", 404),
], ids=["wrong secret: signature does not match", "unknown access key"])
def test_wrong_secret_or_unknown_access_key_is_refused(fake, key, code, status):
    with pytest.raises(ClientException) as e:
        describe_vpcs(vpc_client(fake, key=key))
    assert (e.value.code, e.value.status_code) == (code, status)
    assert fake.world.actions() == []


def test_query_changed_after_signing_is_refused(fake, monkeypatch):
    """The signature covers the query: a parameter added on the wire breaks it."""
    real_send = requests.Session.send

    def tamper(self, prepared, **kw):
        prepared.url += "&VpcName=evil"
        return real_send(self, prepared, **kw)

    monkeypatch.setattr(requests.Session, "send", tamper)
    with pytest.raises(ClientException) as e:
        describe_vpcs(vpc_client(fake))
    assert e.value.code == "SignatureDoesNotMatch"


@pytest.mark.parametrize("offset", [3600, -3600])
def test_skewed_clock_is_refused_with_illegal_timestamp(fake, offset):
    fake.clock_offset = offset
    with pytest.raises(ClientException) as e:
        describe_vpcs(vpc_client(fake))
    assert e.value.code == "IllegalTimestamp"
    fake.clock_offset = 60  # within the 15 minutes the service tolerates
    describe_vpcs(vpc_client(fake))


def test_unsigned_and_replayed_requests_are_refused(fake):
    r = requests.post(fake.url + "/?RegionId=" + REGION,
                      headers={"x-acs-action": "DescribeVpcs", "x-acs-version": "2016-04-28"},
                      timeout=5)
    assert r.status_code == 400 and r.json()["Code"] == "IllegalTimestamp"
    captured = []
    real_send = requests.Session.send

    def keep(self, prepared, **kw):
        captured.append(prepared.copy())
        return real_send(self, prepared, **kw)

    import unittest.mock as mock
    with mock.patch.object(requests.Session, "send", keep):
        describe_vpcs(vpc_client(fake))
    again = requests.Session().send(captured[0], timeout=5)
    assert again.status_code == 400 and again.json()["Code"] == "SignatureNonceUsed"


def test_canonical_request_matches_the_documented_layout():
    canon = signing.canonical_request(
        "POST", "/", [("b", "x y"), ("a", "1+2~")],
        {"host": "ecs.aliyuncs.com", "x-acs-action": "RunInstances"},
        ["host", "x-acs-action"], "e3b0")
    assert canon == ("POST\n/\na=1%2B2~&b=x%20y\nhost:ecs.aliyuncs.com\n"
                     "x-acs-action:RunInstances\n\nhost;x-acs-action\ne3b0")


def test_client_token_returns_the_first_result_and_refuses_changed_parameters(fake):
    client = vpc_client(fake)

    def create(cidr):
        return client.create_vpc(vpc_models.CreateVpcRequest(
            region_id=REGION, cidr_block=cidr, client_token="tok-1")).body.to_map()["VpcId"]

    first = create("172.16.0.0/16")
    assert create("172.16.0.0/16") == first
    assert fake.world.summary()["vpcs"] == 1
    with pytest.raises(ClientException) as e:
        create("10.0.0.0/16")
    assert e.value.code == "IdempotentParameterMismatch"


def test_vpc_quota(fake):
    fake.world.vpc_quota = 1
    client = vpc_client(fake)
    client.create_vpc(vpc_models.CreateVpcRequest(region_id=REGION, cidr_block="10.0.0.0/8"))
    with pytest.raises(ClientException) as e:
        client.create_vpc(vpc_models.CreateVpcRequest(region_id=REGION,
                                                      cidr_block="10.0.0.0/8"))
    assert e.value.code == "QuotaExceeded.Vpc"


def test_readonly_ram_user_gets_forbidden_ram_on_writes(fake):
    client = vpc_client(fake, key=READONLY_KEY)
    describe_vpcs(client)
    with pytest.raises(ClientException) as e:
        client.create_vpc(vpc_models.CreateVpcRequest(region_id=REGION,
                                                      cidr_block="10.0.0.0/8"))
    assert (e.value.code, e.value.status_code) == ("Forbidden.RAM", 403)


def test_dry_run_checks_the_permission_and_does_nothing(fake):
    """ECS's DryRun: DryRunOperation when the caller may make the call, Forbidden.RAM when
    not; either way nothing happens."""
    request = ecs_models.CreateImageRequest(region_id=REGION, image_name="dry",
                                            dry_run=True, instance_id="i-any")
    before = fake.world.summary()
    with pytest.raises(ClientException) as e:
        ecs_client(fake).create_image(request)
    assert (e.value.code, e.value.status_code) == ("DryRunOperation", 400)
    with pytest.raises(ClientException) as e:
        ecs_client(fake, key=READONLY_KEY).create_image(request)
    assert (e.value.code, e.value.status_code) == ("Forbidden.RAM", 403)
    assert fake.world.summary() == before


def test_a_role_with_a_custom_policy_may_call_only_its_actions(fake):
    fake.role_actions = ["ecs:DescribeImages"]
    creds = fake.issue_sts()
    client = ecs_client(fake, key=(creds["AccessKeyId"], creds["AccessKeySecret"]),
                        security_token=creds["SecurityToken"])
    client.describe_images(ecs_models.DescribeImagesRequest(region_id=REGION))
    for dry in (True, False):
        with pytest.raises(ClientException) as e:
            client.describe_disks(ecs_models.DescribeDisksRequest(region_id=REGION,
                                                                  dry_run=dry))
        assert e.value.code == "Forbidden.RAM"
    with pytest.raises(ClientException) as e:
        client.describe_images(ecs_models.DescribeImagesRequest(region_id=REGION,
                                                                dry_run=True))
    assert e.value.code == "DryRunOperation"


def test_injected_faults_hit_the_chosen_call_only(fake):
    fake.world.inject("ServiceUnavailable", action="DescribeVpcs", after=1, times=1)
    client = vpc_client(fake)
    describe_vpcs(client)
    with pytest.raises(ServerException) as e:
        describe_vpcs(client)
    assert (e.value.code, e.value.status_code) == ("ServiceUnavailable", 503)
    describe_vpcs(client)


def test_crash_does_the_work_then_goes_dark_until_revived(fake):
    client = vpc_client(fake)
    fake.world.crash_after_call(1)
    with pytest.raises(UnretryableException):  # no answer at all...
        client.create_vpc(vpc_models.CreateVpcRequest(region_id=REGION,
                                                      cidr_block="10.0.0.0/8"))
    assert fake.world.summary()["vpcs"] == 1  # ...but the VPC was made
    with pytest.raises(UnretryableException):
        describe_vpcs(client)
    fake.world.revive()
    assert len(describe_vpcs(client)["Vpcs"]["Vpc"]) == 1


def _run_instance(fake, **extra):
    vpc = vpc_client(fake)
    ecs = ecs_client(fake)
    vpc_id = vpc.create_vpc(vpc_models.CreateVpcRequest(
        region_id=REGION, cidr_block="172.16.0.0/16")).body.vpc_id
    while describe_vpcs(vpc)["Vpcs"]["Vpc"][0]["Status"] != "Available":
        pass
    vsw_id = vpc.create_vswitch(vpc_models.CreateVSwitchRequest(
        region_id=REGION, vpc_id=vpc_id, zone_id=REGION + "-h",
        cidr_block="172.16.0.0/24")).body.v_switch_id
    while vpc.describe_vswitches(vpc_models.DescribeVSwitchesRequest(
            region_id=REGION, v_switch_id=vsw_id)).body.v_switches.v_switch[0].status \
            != "Available":
        pass
    sg_id = ecs.create_security_group(ecs_models.CreateSecurityGroupRequest(
        region_id=REGION, vpc_id=vpc_id)).body.security_group_id
    req = ecs_models.RunInstancesRequest(
        region_id=REGION, image_id=fake.appliance_image, instance_type="ecs.g7.large",
        v_switch_id=vsw_id, security_group_id=sg_id, internet_max_bandwidth_out=10,
        system_disk=ecs_models.RunInstancesRequestSystemDisk(size=40),
        data_disk=[ecs_models.RunInstancesRequestDataDisk(size=50, disk_name="t-sys")],
        **extra)
    return ecs, ecs.run_instances(req).body.instance_id_sets.instance_id_set[0]


def test_instance_lifecycle_and_disks(fake):
    ecs, inst_id = _run_instance(fake)

    def status():
        body = ecs.describe_instances(ecs_models.DescribeInstancesRequest(
            region_id=REGION, instance_ids=json.dumps([inst_id]))).body.to_map()
        found = body["Instances"]["Instance"]
        return found[0]["Status"] if found else None

    seen = [status() for _ in range(6)]
    assert seen == ["Pending", "Pending", "Starting", "Starting", "Running", "Running"]
    disks = ecs.describe_disks(ecs_models.DescribeDisksRequest(
        region_id=REGION, instance_id=inst_id)).body.to_map()["Disks"]["Disk"]
    assert [(d["Type"], d["Device"], d["Size"]) for d in disks] == [
        ("system", "/dev/xvda", 40), ("data", "/dev/xvdb", 50)]
    with pytest.raises(ClientException) as e:
        ecs.delete_instance(ecs_models.DeleteInstanceRequest(instance_id=inst_id))
    assert e.value.code == "IncorrectInstanceStatus"
    ecs.delete_instance(ecs_models.DeleteInstanceRequest(instance_id=inst_id, force=True))
    assert status() == "Stopping"
    assert status() is None
    assert fake.world.summary()["disks"] == 0


def test_user_data_over_32k_is_refused(fake):
    big = base64.b64encode(b"#cloud-config\n" + b"x" * (33 * 1024)).decode()
    with pytest.raises(ClientException) as e:
        _run_instance(fake, user_data=big)
    assert e.value.code == "InvalidUserData.SizeExceeded"


def test_metadata_service_gives_identity_and_role_credentials(fake):
    _, inst_id = _run_instance(fake)
    fake.metadata_instance = inst_id
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": fake.url}))

    def get(leaf):
        with opener.open("http://100.100.100.200/latest/meta-data/" + leaf, timeout=5) as r:
            return r.read().decode()

    assert get("instance-id") == inst_id
    assert get("region-id") == REGION
    assert get("ram/security-credentials/") == fake.role
    creds = json.loads(get("ram/security-credentials/" + fake.role))
    assert creds["Code"] == "Success" and creds["AccessKeyId"].startswith("STS.")
    # The temporary keys work only together with their security token.
    cfg = Config(access_key_id=creds["AccessKeyId"], access_key_secret=creds["AccessKeySecret"],
                 security_token=creds["SecurityToken"], region_id=REGION,
                 endpoint=fake.endpoint, protocol="http")
    describe_vpcs(VpcClient(cfg))
    cfg.security_token = "CAISwrong"
    with pytest.raises(ClientException) as e:
        describe_vpcs(VpcClient(cfg))
    assert e.value.code == "InvalidSecurityToken.Mismatch"


def _tagged(model, **tags):
    return [model(key=k, value=v) for k, v in tags.items()]


def test_tags_given_at_create_are_found_by_the_describe_tag_filters(fake):
    """As ECS and VPC: Tag.N on a create tags it; Describe* with Tag.N returns only the
    resources carrying every given tag (a key alone matches any value); RunInstances'
    tags go on the instance and its disks."""
    _, inst_id = _run_instance(fake, tag=_tagged(ecs_models.RunInstancesRequestTag,
                                                 **{"go2aliyun:migration": "m-1"}))
    vpc, ecs = vpc_client(fake), ecs_client(fake)
    ours = vpc.create_vpc(vpc_models.CreateVpcRequest(
        region_id=REGION, cidr_block="172.16.0.0/16",
        tag=_tagged(vpc_models.CreateVpcRequestTag, **{"go2aliyun:migration": "m-1"}))
    ).body.vpc_id
    vpc.create_vpc(vpc_models.CreateVpcRequest(
        region_id=REGION, cidr_block="172.16.0.0/16",
        tag=_tagged(vpc_models.CreateVpcRequestTag, **{"go2aliyun:migration": "m-2"})))
    vpc.create_vpc(vpc_models.CreateVpcRequest(region_id=REGION, cidr_block="10.0.0.0/8"))

    def vpcs(**tags):
        body = vpc.describe_vpcs(vpc_models.DescribeVpcsRequest(
            region_id=REGION, tag=_tagged(vpc_models.DescribeVpcsRequestTag, **tags))
        ).body.to_map()
        return [v["VpcId"] for v in body["Vpcs"]["Vpc"]]

    assert vpcs(**{"go2aliyun:migration": "m-1"}) == [ours]
    assert len(vpcs(**{"go2aliyun:migration": ""})) == 2   # the key, any value
    assert vpcs(**{"go2aliyun:migration": "m-1", "other": "x"}) == []
    assert len(vpcs()) == 4  # and the instance's, without tags
    shown = vpc.describe_vpcs(vpc_models.DescribeVpcsRequest(
        region_id=REGION, vpc_id=ours)).body.to_map()["Vpcs"]["Vpc"][0]["Tags"]["Tag"]
    assert shown == [{"Key": "go2aliyun:migration", "Value": "m-1"}]
    with pytest.raises(ClientException) as e:
        vpc.create_vpc(vpc_models.CreateVpcRequest(
            region_id=REGION, tag=_tagged(vpc_models.CreateVpcRequestTag, aliyunx="1")))
    assert e.value.code == "InvalidTagKey.Malformed"

    mine = _tagged(ecs_models.DescribeDisksRequestTag, **{"go2aliyun:migration": "m-1"})
    disks = ecs.describe_disks(ecs_models.DescribeDisksRequest(
        region_id=REGION, tag=mine)).body.to_map()["Disks"]["Disk"]
    assert [(d["InstanceId"], d["Type"]) for d in disks] == [(inst_id, "system"),
                                                              (inst_id, "data")]
    assert disks[0]["Tags"]["Tag"] == [{"TagKey": "go2aliyun:migration", "TagValue": "m-1"}]
    found = ecs.describe_instances(ecs_models.DescribeInstancesRequest(
        region_id=REGION, tag=_tagged(ecs_models.DescribeInstancesRequestTag,
                                      **{"go2aliyun:migration": "m-2"}))).body.to_map()
    assert found["Instances"]["Instance"] == []


def test_a_snapshot_an_image_uses_is_refused_until_the_image_is_deleted(fake):
    ecs, inst_id = _run_instance(fake)
    disk = [d for d in fake.world.disks.values() if d["Type"] == "data"][0]
    snap = ecs.create_snapshot(ecs_models.CreateSnapshotRequest(
        disk_id=disk["DiskId"])).body.snapshot_id
    while ecs.describe_snapshots(ecs_models.DescribeSnapshotsRequest(
            region_id=REGION, snapshot_ids=json.dumps([snap]))).body.to_map()[
            "Snapshots"]["Snapshot"][0]["Status"] != "accomplished":
        pass
    image_id = ecs.create_image(ecs_models.CreateImageRequest(
        region_id=REGION, image_name="img", disk_device_mapping=[
            ecs_models.CreateImageRequestDiskDeviceMapping(snapshot_id=snap, size=50)])
    ).body.image_id
    with pytest.raises(ClientException) as e:
        ecs.delete_snapshot(ecs_models.DeleteSnapshotRequest(snapshot_id=snap, force=True))
    assert (e.value.code, e.value.status_code) == ("SnapshotCreatedImage", 403)
    ecs.delete_image(ecs_models.DeleteImageRequest(region_id=REGION, image_id=image_id,
                                                   force=True))
    ecs.delete_snapshot(ecs_models.DeleteSnapshotRequest(snapshot_id=snap, force=True))
    assert fake.world.summary()["snapshots"] == 0 and image_id not in fake.world.images


def test_revoke_removes_exactly_the_named_rules(fake):
    ecs = ecs_client(fake)
    vpc_id = vpc_client(fake).create_vpc(vpc_models.CreateVpcRequest(
        region_id=REGION)).body.vpc_id
    sg = ecs.create_security_group(ecs_models.CreateSecurityGroupRequest(
        region_id=REGION, vpc_id=vpc_id)).body.security_group_id

    def perm(model, cidr):
        return [model(ip_protocol="TCP", port_range="8080/8080", source_cidr_ip=cidr)]

    for cidr in ("198.51.100.1/32", "198.51.100.2/32"):
        ecs.authorize_security_group(ecs_models.AuthorizeSecurityGroupRequest(
            region_id=REGION, security_group_id=sg,
            permissions=perm(ecs_models.AuthorizeSecurityGroupRequestPermissions, cidr)))
    ecs.revoke_security_group(ecs_models.RevokeSecurityGroupRequest(
        region_id=REGION, security_group_id=sg,
        permissions=perm(ecs_models.RevokeSecurityGroupRequestPermissions, "198.51.100.1/32")))
    assert [p["SourceCidrIp"] for p in fake.world.groups[sg]["Permissions"]] == [
        "198.51.100.2/32"]


def test_a_held_call_is_answered_late_and_still_does_its_work(fake):
    """world.hold(action): the request arrives, waits for release(), then runs; the
    client that gave up meanwhile never learns the id, the resource exists anyway."""
    hold = fake.world.hold("CreateVpc")
    client = vpc_client(fake)
    with pytest.raises(UnretryableException):  # the client gives up before the answer
        client.create_vpc_with_options(vpc_models.CreateVpcRequest(region_id=REGION),
                                       RuntimeOptions(read_timeout=300, autoretry=False))
    assert hold.arrived.is_set() and fake.world.summary()["vpcs"] == 0
    hold.release()
    assert hold.done.wait(10)
    assert fake.world.summary()["vpcs"] == 1
    assert describe_vpcs(client)["Vpcs"]["Vpc"][0]["Status"] in ("Pending", "Available")
