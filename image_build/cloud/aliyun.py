"""The cloud interface over the real Alibaba Cloud SDK (ECS 2014-05-26, VPC 2016-04-28).

Every call goes through :meth:`AliyunCloud._call`: the SDK's own retries are off, our
:class:`~image_build.cloud.retry.Retrier` retries transient errors only, and permanent
ones become ``CloudError("cloud.<Code>")`` with a hint. ``endpoint``/``protocol`` point
both clients elsewhere (tests: the fake cloud on ``127.0.0.1:PORT`` over http).
The SDK is imported inside the functions that use it: it is heavy and optional.
"""

import base64
import json
import logging
import re

from image_build.cloud.base import Cloud, Disk, Instance
from image_build.cloud.retry import Retrier
from wire.errors import CloudError

log = logging.getLogger(__name__)

OWN_IMAGE_STATES = "Creating,Waiting,Available,UnAvailable,CreateFailed,Deprecated"


def _tag_list(model, tags):
    """``{key: value}`` -> the request's ``Tag.N`` list (None for no tags)."""
    return [model(key=k, value=v) for k, v in sorted((tags or {}).items())] or None


def _image_record(i):
    mappings = (i.get("DiskDeviceMappings") or {}).get("DiskDeviceMapping") or []
    return {"id": i["ImageId"], "name": i.get("ImageName"), "status": i.get("Status"),
            "progress": i.get("Progress"),
            "snapshot_ids": [d["SnapshotId"] for d in mappings if d.get("SnapshotId")]}


def _is_sdk_error(exc):
    from alibabacloud_credentials.exceptions import CredentialException
    from alibabacloud_tea_openapi.exceptions import AlibabaCloudException
    from darabonba.exceptions import UnretryableException

    return isinstance(exc, (AlibabaCloudException, UnretryableException, CredentialException))


class AliyunCloud(Cloud):
    name = "aliyun"

    def __init__(self, region_id, credential, endpoint=None, vpc_endpoint=None,
                 protocol="https", retrier=None, connect_timeout_ms=5000,
                 read_timeout_ms=30000, **kw):
        super(AliyunCloud, self).__init__(**kw)
        from alibabacloud_ecs20140526.client import Client as EcsClient
        from alibabacloud_tea_openapi.utils_models import Config
        from alibabacloud_vpc20160428.client import Client as VpcClient

        self.region_id = region_id

        def config(ep):
            return Config(credential=credential, region_id=region_id, endpoint=ep,
                          protocol=protocol, connect_timeout=connect_timeout_ms,
                          read_timeout=read_timeout_ms)

        self.ecs = EcsClient(config(endpoint))
        self.vpc_client = VpcClient(config(vpc_endpoint or endpoint))
        self.retrier = retrier or Retrier(sleep=self.sleep)
        self._runtime_options = dict(autoretry=False, read_timeout=read_timeout_ms,
                                     connect_timeout=connect_timeout_ms)

    # ------------------------------------------------------------------ plumbing
    def _call(self, client, method, request, ok_codes=()):
        """Call ``client.<method>_with_options(request)`` and return the body as a dict,
        or None when the API answered with one of ``ok_codes``."""
        from darabonba.runtime import RuntimeOptions

        action = "".join(p.capitalize() for p in method.split("_"))
        fn = getattr(client, method + "_with_options")

        def once():
            return fn(request, RuntimeOptions(**self._runtime_options)).body.to_map()

        try:
            return self.retrier.call(action, once, _is_sdk_error)
        except CloudError as e:
            if e.details.get("api_code") in ok_codes:
                return None
            raise

    def _models(self):
        from alibabacloud_ecs20140526 import models
        return models

    def _vpc_models(self):
        from alibabacloud_vpc20160428 import models
        return models

    # ------------------------------------------------------------------ network
    def zones(self):
        m = self._models()
        body = self._call(self.ecs, "describe_zones", m.DescribeZonesRequest(
            region_id=self.region_id))
        out = []
        for z in body.get("Zones", {}).get("Zone", []):
            kinds = z.get("AvailableResourceCreation", {}).get("ResourceTypes", [])
            if "Instance" in kinds and "VSwitch" in kinds:
                out.append(z["ZoneId"])
        return sorted(out)

    def create_vpc(self, cidr, name, client_token, tags=None):
        m = self._vpc_models()
        body = self._call(self.vpc_client, "create_vpc", m.CreateVpcRequest(
            region_id=self.region_id, cidr_block=cidr, vpc_name=name,
            description="made by go2aliyun", client_token=client_token,
            tag=_tag_list(m.CreateVpcRequestTag, tags)))
        return body["VpcId"]

    def vpc(self, vpc_id):
        m = self._vpc_models()
        body = self._call(self.vpc_client, "describe_vpcs", m.DescribeVpcsRequest(
            region_id=self.region_id, vpc_id=vpc_id), ok_codes=("InvalidVpcId.NotFound",))
        for v in (body or {}).get("Vpcs", {}).get("Vpc", []):
            if v["VpcId"] == vpc_id:
                return {"id": vpc_id, "status": v.get("Status"), "cidr": v.get("CidrBlock")}
        return None

    def create_vswitch(self, vpc_id, zone_id, cidr, name, client_token, tags=None):
        m = self._vpc_models()
        body = self._call(self.vpc_client, "create_vswitch", m.CreateVSwitchRequest(
            region_id=self.region_id, vpc_id=vpc_id, zone_id=zone_id, cidr_block=cidr,
            v_switch_name=name, description="made by go2aliyun", client_token=client_token,
            tag=_tag_list(m.CreateVSwitchRequestTag, tags)))
        return body["VSwitchId"]

    def vswitch(self, vswitch_id):
        m = self._vpc_models()
        body = self._call(self.vpc_client, "describe_vswitches", m.DescribeVSwitchesRequest(
            region_id=self.region_id, v_switch_id=vswitch_id),
            ok_codes=("InvalidVSwitchId.NotFound",))
        for v in (body or {}).get("VSwitches", {}).get("VSwitch", []):
            if v["VSwitchId"] == vswitch_id:
                return {"id": vswitch_id, "vpc_id": v.get("VpcId"), "zone_id": v.get("ZoneId"),
                        "status": v.get("Status"), "cidr": v.get("CidrBlock")}
        return None

    def create_security_group(self, vpc_id, name, client_token, tags=None):
        m = self._models()
        body = self._call(self.ecs, "create_security_group", m.CreateSecurityGroupRequest(
            region_id=self.region_id, vpc_id=vpc_id, security_group_name=name,
            description="go2aliyun receiver: 8080 and 8703 from the source only",
            client_token=client_token, tag=_tag_list(m.CreateSecurityGroupRequestTag, tags)))
        return body["SecurityGroupId"]

    def allow_ingress(self, group_id, ports, source_cidr, client_token):
        m = self._models()
        perms = [m.AuthorizeSecurityGroupRequestPermissions(
            ip_protocol="TCP", port_range="%d/%d" % (p, p), source_cidr_ip=source_cidr,
            policy="Accept", description="go2aliyun") for p in ports]
        self._call(self.ecs, "authorize_security_group", m.AuthorizeSecurityGroupRequest(
            region_id=self.region_id, security_group_id=group_id, permissions=perms,
            client_token=client_token))

    def revoke_ingress(self, group_id, ports, source_cidr):
        m = self._models()
        perms = [m.RevokeSecurityGroupRequestPermissions(
            ip_protocol="TCP", port_range="%d/%d" % (p, p), source_cidr_ip=source_cidr,
            policy="Accept") for p in ports]
        self._call(self.ecs, "revoke_security_group", m.RevokeSecurityGroupRequest(
            region_id=self.region_id, security_group_id=group_id, permissions=perms))

    def ingress_rules(self, group_id):
        m = self._models()
        body = self._call(self.ecs, "describe_security_group_attribute",
                          m.DescribeSecurityGroupAttributeRequest(
                              region_id=self.region_id, security_group_id=group_id,
                              direction="ingress"))
        out = []
        for p in body.get("Permissions", {}).get("Permission", []):
            if p.get("IpProtocol", "").upper() != "TCP" or p.get("Policy", "Accept") != "Accept":
                continue
            lo, _, hi = p.get("PortRange", "").partition("/")
            if lo.isdigit() and lo == hi:
                out.append((int(lo), p.get("SourceCidrIp", "")))
        return sorted(out)

    def delete_security_group(self, group_id):
        m = self._models()
        self._delete_when_free(
            "security group %s" % group_id,
            lambda: self._call(self.ecs, "delete_security_group", m.DeleteSecurityGroupRequest(
                region_id=self.region_id, security_group_id=group_id),
                ok_codes=("InvalidSecurityGroupId.NotFound",)))

    def delete_vswitch(self, vswitch_id):
        m = self._vpc_models()
        self._delete_when_free(
            "vSwitch %s" % vswitch_id,
            lambda: self._call(self.vpc_client, "delete_vswitch", m.DeleteVSwitchRequest(
                region_id=self.region_id, v_switch_id=vswitch_id),
                ok_codes=("InvalidVSwitchId.NotFound",)))

    def delete_vpc(self, vpc_id):
        m = self._vpc_models()
        self._delete_when_free(
            "VPC %s" % vpc_id,
            lambda: self._call(self.vpc_client, "delete_vpc", m.DeleteVpcRequest(
                region_id=self.region_id, vpc_id=vpc_id), ok_codes=("InvalidVpcId.NotFound",)))

    def _delete_when_free(self, what, attempt):
        """Deleting a network resource fails with DependencyViolation (or an Incorrect*Status)
        while a released instance is still going away: wait and try again."""
        def probe():
            try:
                attempt()
                return True
            except CloudError as e:
                code = e.details.get("api_code") or ""
                if code.startswith("DependencyViolation") or code.startswith("Incorrect"):
                    log.info("%s is still in use (%s); waiting", what, code)
                    return False
                raise
        self.wait_for("%s to be deletable" % what, probe, self.timeouts["delete"])

    # ------------------------------------------------------------------ images, instances
    def find_images_by_name(self, name):
        m = self._models()
        body = self._call(self.ecs, "describe_images", m.DescribeImagesRequest(
            region_id=self.region_id, image_name=name, image_owner_alias="self",
            status=OWN_IMAGE_STATES))
        return [{"id": i["ImageId"], "status": i.get("Status")}
                for i in body.get("Images", {}).get("Image", []) if i.get("ImageName") == name]

    def system_images(self, os_type="linux", architecture="x86_64"):
        m = self._models()
        out, page = [], 1
        while True:
            body = self._call(self.ecs, "describe_images", m.DescribeImagesRequest(
                region_id=self.region_id, image_owner_alias="system", ostype=os_type,
                architecture=architecture, status="Available", page_size=100,
                page_number=page))
            images = body.get("Images", {}).get("Image", [])
            out += [{"id": i["ImageId"], "name": i.get("ImageName"),
                     "os_name": i.get("OSNameEn") or i.get("OSName"),
                     "platform": i.get("Platform"), "architecture": i.get("Architecture"),
                     "creation_time": i.get("CreationTime") or ""} for i in images]
            if not images or len(out) >= int(body.get("TotalCount") or 0):
                return out
            page += 1

    def image(self, image_id):
        m = self._models()
        body = self._call(self.ecs, "describe_images", m.DescribeImagesRequest(
            region_id=self.region_id, image_id=image_id, status=OWN_IMAGE_STATES))
        for i in body.get("Images", {}).get("Image", []):
            if i["ImageId"] == image_id:
                return _image_record(i)
        return None

    def delete_image(self, image_id):
        m = self._models()
        self._call(self.ecs, "delete_image", m.DeleteImageRequest(
            region_id=self.region_id, image_id=image_id, force=True),
            ok_codes=("InvalidImageId.NotFound",))

    # ------------------------------------------------------------------ by tag
    def find_tagged(self, tags):
        """One Describe* per kind with the Tag filter (as the console's tag search)."""
        m, v = self._models(), self._vpc_models()
        found = {}
        body = self._call(self.ecs, "describe_instances", m.DescribeInstancesRequest(
            region_id=self.region_id, page_size=100,
            tag=_tag_list(m.DescribeInstancesRequestTag, tags)))
        found["instances"] = [{"id": i["InstanceId"], "status": i.get("Status")}
                              for i in body.get("Instances", {}).get("Instance", [])]
        body = self._call(self.ecs, "describe_disks", m.DescribeDisksRequest(
            region_id=self.region_id, page_size=100,
            tag=_tag_list(m.DescribeDisksRequestTag, tags)))
        found["disks"] = [{"id": d["DiskId"], "instance_id": d.get("InstanceId") or None,
                           "status": d.get("Status")}
                          for d in body.get("Disks", {}).get("Disk", [])]
        body = self._call(self.ecs, "describe_images", m.DescribeImagesRequest(
            region_id=self.region_id, image_owner_alias="self", status=OWN_IMAGE_STATES,
            page_size=100, tag=_tag_list(m.DescribeImagesRequestTag, tags)))
        found["images"] = [_image_record(i) for i in body.get("Images", {}).get("Image", [])]
        body = self._call(self.ecs, "describe_snapshots", m.DescribeSnapshotsRequest(
            region_id=self.region_id, page_size=100,
            tag=_tag_list(m.DescribeSnapshotsRequestTag, tags)))
        found["snapshots"] = [{"id": s["SnapshotId"], "disk_id": s.get("SourceDiskId"),
                               "status": s.get("Status")}
                              for s in body.get("Snapshots", {}).get("Snapshot", [])]
        body = self._call(self.ecs, "describe_security_groups",
                          m.DescribeSecurityGroupsRequest(
                              region_id=self.region_id, page_size=50,
                              tag=_tag_list(m.DescribeSecurityGroupsRequestTag, tags)))
        found["security_groups"] = [
            {"id": g["SecurityGroupId"], "vpc_id": g.get("VpcId")}
            for g in body.get("SecurityGroups", {}).get("SecurityGroup", [])]
        body = self._call(self.vpc_client, "describe_vswitches", v.DescribeVSwitchesRequest(
            region_id=self.region_id, page_size=50,
            tag=_tag_list(v.DescribeVSwitchesRequestTag, tags)))
        found["vswitches"] = [{"id": s["VSwitchId"], "vpc_id": s.get("VpcId")}
                              for s in body.get("VSwitches", {}).get("VSwitch", [])]
        body = self._call(self.vpc_client, "describe_vpcs", v.DescribeVpcsRequest(
            region_id=self.region_id, page_size=50, tag=_tag_list(v.DescribeVpcsRequestTag,
                                                                   tags)))
        found["vpcs"] = [{"id": x["VpcId"]} for x in body.get("Vpcs", {}).get("Vpc", [])]
        return found

    def run_instance(self, spec, client_token):
        m = self._models()
        data = [m.RunInstancesRequestDataDisk(size=int(size), disk_name=name,
                                              category="cloud_essd", delete_with_instance=True)
                for name, size in spec.data_disks]
        tags = [m.RunInstancesRequestTag(key=k, value=v) for k, v in sorted(spec.tags.items())]
        user_data = base64.b64encode(spec.user_data.encode("utf-8")).decode("ascii")
        body = self._call(self.ecs, "run_instances", m.RunInstancesRequest(
            region_id=self.region_id, image_id=spec.image_id, instance_type=spec.instance_type,
            v_switch_id=spec.vswitch_id, security_group_id=spec.security_group_id,
            instance_name=spec.name, host_name="go2aliyun-receiver",
            internet_max_bandwidth_out=int(spec.public_bandwidth_mbit),
            internet_charge_type="PayByTraffic", instance_charge_type="PostPaid",
            system_disk=m.RunInstancesRequestSystemDisk(size=int(spec.system_disk_gib),
                                                        category="cloud_essd"),
            data_disk=data or None, user_data=user_data, ram_role_name=spec.ram_role,
            tag=tags or None, amount=1, client_token=client_token))
        return body["InstanceIdSets"]["InstanceIdSet"][0]

    def instance(self, instance_id):
        m = self._models()
        body = self._call(self.ecs, "describe_instances", m.DescribeInstancesRequest(
            region_id=self.region_id, instance_ids=json.dumps([instance_id])))
        for i in body.get("Instances", {}).get("Instance", []):
            if i["InstanceId"] != instance_id:
                continue
            public = i.get("PublicIpAddress", {}).get("IpAddress") or []
            eip = (i.get("EipAddress") or {}).get("IpAddress")
            vpc = i.get("VpcAttributes", {})
            private = vpc.get("PrivateIpAddress", {}).get("IpAddress") or []
            return Instance(instance_id, i.get("Status"),
                            public_ip=(public[0] if public else eip) or None,
                            private_ip=private[0] if private else None,
                            zone_id=i.get("ZoneId"), vpc_id=vpc.get("VpcId"),
                            vswitch_id=vpc.get("VSwitchId"),
                            security_group_ids=i.get("SecurityGroupIds", {}).get(
                                "SecurityGroupId", []))
        return None

    def instance_disks(self, instance_id):
        m = self._models()
        body = self._call(self.ecs, "describe_disks", m.DescribeDisksRequest(
            region_id=self.region_id, instance_id=instance_id, page_size=100))
        disks = [Disk(d["DiskId"], d.get("Type"), d.get("Device", ""), d.get("Size", 0),
                      d.get("DiskName", "")) for d in body.get("Disks", {}).get("Disk", [])]
        disks.sort(key=lambda d: (d.role != "system", d.device, d.id))
        return disks

    def delete_instance(self, instance_id):
        m = self._models()
        self._call(self.ecs, "delete_instance", m.DeleteInstanceRequest(
            instance_id=instance_id, force=True), ok_codes=("InvalidInstanceId.NotFound",))

    # ------------------------------------------------------------------ snapshots, images
    def create_snapshot(self, disk_id, name, client_token, tags=None):
        m = self._models()
        body = self._call(self.ecs, "create_snapshot", m.CreateSnapshotRequest(
            disk_id=disk_id, snapshot_name=name, description="made by go2aliyun",
            client_token=client_token, tag=_tag_list(m.CreateSnapshotRequestTag, tags)))
        return body["SnapshotId"]

    def snapshot(self, snapshot_id):
        m = self._models()
        body = self._call(self.ecs, "describe_snapshots", m.DescribeSnapshotsRequest(
            region_id=self.region_id, snapshot_ids=json.dumps([snapshot_id])))
        for s in body.get("Snapshots", {}).get("Snapshot", []):
            if s["SnapshotId"] == snapshot_id:
                return {"id": snapshot_id, "status": s.get("Status"),
                        "progress": s.get("Progress")}
        return None

    def delete_snapshot(self, snapshot_id):
        m = self._models()
        self._call(self.ecs, "delete_snapshot", m.DeleteSnapshotRequest(
            snapshot_id=snapshot_id, force=True), ok_codes=("InvalidSnapshotId.NotFound",))

    def create_image(self, spec, client_token):
        m = self._models()
        mappings = [m.CreateImageRequestDiskDeviceMapping(
            snapshot_id=d["snapshot_id"], device=d["device"], disk_type=d["disk_type"],
            size=d["size"]) for d in spec.mappings()]
        body = self._call(self.ecs, "create_image", m.CreateImageRequest(
            region_id=self.region_id, image_name=spec.name, platform=spec.platform,
            architecture=spec.architecture, boot_mode=spec.boot_mode,
            description=spec.description, disk_device_mapping=mappings,
            client_token=client_token, tag=_tag_list(m.CreateImageRequestTag, spec.tags)))
        return body["ImageId"]

    def create_image_from_instance(self, instance_id, name, client_token,
                                   description="made by go2aliyun"):
        m = self._models()
        body = self._call(self.ecs, "create_image", m.CreateImageRequest(
            region_id=self.region_id, instance_id=instance_id, image_name=name,
            description=description, client_token=client_token))
        return body["ImageId"]

    # ------------------------------------------------------------------ permissions
    def dry_run(self, action, **fields):
        """Ask whether these credentials may make ``action`` (an ECS API with a ``DryRun``
        field) without making it: returns when the answer is ``DryRunOperation``, raises
        the CloudError of any other (``cloud.Forbidden.RAM``: not allowed)."""
        m = self._models()
        request = getattr(m, action + "Request")(dry_run=True, **fields)
        if hasattr(request, "region_id"):
            request.region_id = self.region_id
        method = re.sub(r"(?<!^)(?=[A-Z])", "_", action).lower()
        body = self._call(self.ecs, method, request, ok_codes=("DryRunOperation",))
        if body is not None:
            log.warning("%s: the API answered a DryRun call as a real one", action)

    # ------------------------------------------------------------------ console
    def console_output(self, instance_id):
        m = self._models()
        body = self._call(self.ecs, "get_instance_console_output",
                          m.GetInstanceConsoleOutputRequest(
                              region_id=self.region_id, instance_id=instance_id,
                              remove_symbols=True))
        raw = (body or {}).get("ConsoleOutput") or ""
        return base64.b64decode(raw).decode("utf-8", "replace")
