"""The state of the fake cloud: VPCs, vSwitches, security groups, instances, disks,
snapshots and images of one account, with lifecycles that advance each time a resource
is described (so tests never sleep), ClientToken idempotency and the error codes of the
real ECS and VPC APIs."""

import base64
import copy
import hashlib
import itertools
import json
import secrets
import shlex
import ssl
import threading
import time
import uuid

ECS_VERSION = "2014-05-26"
VPC_VERSION = "2016-04-28"

# code -> (HTTP status, message), as the real services answer.
ERRORS = {
    "SignatureDoesNotMatch": (400, "The request signature does not conform to Aliyun standards."),
    "IncompleteSignature": (400, "The request signature does not conform to Aliyun standards."),
    "MissingAuthorization": (400, "The Authorization header is missing."),
    "IllegalTimestamp": (400, "The input parameter \"Timestamp\" that is mandatory for "
                              "processing this request is not supplied or is out of range."),
    "SignatureNonceUsed": (400, "The request signature nonce has been used."),
    "InvalidAccessKeyId.NotFound": (404, "Specified access key is not found."),
    "InvalidSecurityToken.Expired": (400, "Specified SecurityToken is expired."),
    "InvalidSecurityToken.Mismatch": (400, "Specified SecurityToken mismatch with the AccessKey."),
    "Forbidden.RAM": (403, "User not authorized to operate on the specified resource, or this "
                           "API doesn't support RAM."),
    "Forbidden.SubUser": (403, "The specified action is not available for you."),
    "DryRunOperation": (400, "Request validation has been passed with DryRun flag set."),
    "InvalidAccountStatus.NotEnoughBalance": (403, "Your account does not have enough balance."),
    "InvalidAccountStatus.SnapshotServiceUnavailable": (
        403, "Snapshot service has not been opened yet."),
    "Throttling": (400, "Request was denied due to request throttling."),
    "Throttling.User": (400, "Request was denied due to user flow control."),
    "ServiceUnavailable": (503, "The request has failed due to a temporary failure of the "
                                "server."),
    "InternalError": (500, "The request processing has failed due to some unknown error."),
    "InvalidAction.NotFound": (404, "Specified api is not found, please check your url and "
                                    "method."),
    "MissingParameter": (400, "A required parameter is not supplied."),
    "InvalidParameter": (400, "The specified parameter is not valid."),
    "IdempotentParameterMismatch": (400, "The specified parameter has changed while using an "
                                         "already used clientToken."),
    "QuotaExceeded.Vpc": (400, "VPC quota exceeded."),
    "InvalidVpcId.NotFound": (404, "Specified VPC does not exist."),
    "InvalidVSwitchId.NotFound": (404, "Specified virtual switch does not exist."),
    "IncorrectVpcStatus": (400, "Current VPC status does not support this operation."),
    "IncorrectVSwitchStatus": (400, "The current virtual switch status does not support this "
                                    "operation."),
    "DependencyViolation": (400, "Specified object has dependent resources."),
    "DependencyViolation.SecurityGroup": (403, "There is still instance(s) in the specified "
                                               "security group."),
    "InvalidSecurityGroupId.NotFound": (404, "The specified SecurityGroupId does not exist."),
    "InvalidImageId.NotFound": (404, "The specified ImageId does not exist."),
    "InvalidImageName.Duplicated": (400, "The specified Image name has already been used."),
    "InvalidImageName.Malformed": (400, "Specified image name is not valid."),
    "InvalidInstanceId.NotFound": (404, "The specified InstanceId does not exist."),
    "IncorrectInstanceStatus": (403, "The current status of the resource does not support this "
                                     "operation."),
    "InvalidDiskId.NotFound": (404, "The specified disk does not exist."),
    "InvalidSnapshotId.NotFound": (404, "The specified snapshot does not exist."),
    "InvalidSnapshotId.NotReady": (403, "The specified snapshot has not completed yet."),
    "InvalidUserData.SizeExceeded": (400, "The specified parameter UserData exceeds the size "
                                          "limit (32 KB)."),
    "InvalidUserData.Base64FormatInvalid": (400, "The specified UserData is not valid base64."),
    "InvalidDataDiskSize.ValueNotSupported": (400, "The specified data disk size is not "
                                                   "supported."),
    "InvalidSystemDiskSize.ValueNotSupported": (400, "The specified system disk size is not "
                                                     "supported."),
    "InvalidZoneId.NotFound": (404, "The specified zone does not exist."),
    "SnapshotCreatedImage": (403, "The specified snapshot has been used to create custom "
                                  "images and cannot be deleted. Delete the images first."),
    "InvalidTagKey.Malformed": (400, "The specified Tag.n.Key is not valid."),
    "InvalidTagCount": (400, "The specified tags are beyond the permitted range."),
    "InvalidPermission.NotFound": (404, "The specified permission does not exist."),
}

# How many describes a resource spends in each transitional state.
DEFAULT_TICKS = {"vpc": 1, "vswitch": 1, "instance_pending": 2, "instance_starting": 1,
                 "instance_deleting": 1, "snapshot_step": 40, "image": 2,
                 "appliance_build": 2}
# The marker the receiver appliance build prints on the console (cloud-init/
# appliance-build.sh) and the command its user-data runs.
BUILD_MARKER = "go2aliyun-appliance: "
BUILD_COMMAND = "/usr/local/sbin/go2aliyun-appliance-build"
# Where a launch user-data puts the receiver's certificate, and the line the receiver
# prints on the console when it serves (receiver/cli.py serve).
RECEIVER_CERT = "/var/lib/go2aliyun/tls/receiver.crt"
RECEIVER_BANNER = ("go2aliyun-receiver: migration %s, address %s, fingerprint %s, "
                   "ports 8080/8703; the token is in /var/lib/go2aliyun/status.json")


class ApiError(Exception):
    def __init__(self, code, message=None, status=None):
        st, msg = ERRORS.get(code, (400, code))
        super().__init__(message or msg)
        self.code = code
        self.message = message or msg
        self.status = status or st


class Hold(object):
    """A call of one action that the fake answers late: ``arrived`` is set when the
    request is in (authenticated, recorded), the call then waits for :meth:`release`
    (or ``timeout``), does its work and answers; ``done`` is set once it has."""

    def __init__(self, action, timeout=60.0):
        self.action, self.timeout = action, timeout
        self.arrived, self.released, self.done = (threading.Event(), threading.Event(),
                                                  threading.Event())

    def release(self):
        self.released.set()


class Fault(object):
    def __init__(self, code=None, action=None, after=0, times=1, status=None, crash=False):
        self.code, self.action, self.after, self.times = code, action, after, times
        self.status, self.crash = status, crash

    def matches(self, action):
        return self.action is None or self.action == action


def _need(params, name):
    v = params.get(name)
    if v in (None, ""):
        raise ApiError("MissingParameter", "The input parameter \"%s\" that is mandatory for "
                       "processing this request is not supplied." % name)
    return v


def _indexed(params, prefix):
    """``DataDisk.1.Size=.. DataDisk.2.Size=..`` -> [{"Size": ..}, {"Size": ..}]."""
    found = {}
    for k, v in params.items():
        if k.startswith(prefix + "."):
            idx, _, field = k[len(prefix) + 1:].partition(".")
            if idx.isdigit():
                found.setdefault(int(idx), {})[field] = v
    return [found[i] for i in sorted(found)]


def _found(res, code):
    """``res``, a resource looked up by its id, or the API's NotFound error ``code``."""
    if res is None:
        raise ApiError(code)
    return res


def _json_list(params, name):
    raw = params.get(name)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise ApiError("InvalidParameter", "%s must be a JSON array." % name) from None
    if not isinstance(value, list):
        raise ApiError("InvalidParameter", "%s must be a JSON array." % name)
    return value


def _tags(params):
    """``Tag.N.Key``/``Tag.N.Value`` of a create call -> {key: value}, checked as ECS and
    VPC do (at most 20, a key that is not empty and does not start with aliyun/acs:)."""
    tags = {}
    for t in _indexed(params, "Tag"):
        key = t.get("Key", "")
        if not key or key.startswith(("aliyun", "acs:")) or "http://" in key \
                or "https://" in key or len(key) > 128:
            raise ApiError("InvalidTagKey.Malformed")
        tags[key] = t.get("Value", "")
    if len(tags) > 20:
        raise ApiError("InvalidTagCount")
    return tags


def _tag_match(res, params):
    """Describe* with ``Tag.N.Key`` (and ``Tag.N.Value``): resources that carry every one."""
    have = res.get("_tags") or {}
    for t in _indexed(params, "Tag"):
        key = t.get("Key")
        if not key or key not in have:
            return False
        if t.get("Value") not in (None, "") and have[key] != t["Value"]:
            return False
    return True


def _ecs_tags(res):
    return {"Tag": [{"TagKey": k, "TagValue": v} for k, v in sorted(
        (res.get("_tags") or {}).items())]}


def _vpc_tags(res):
    return {"Tag": [{"Key": k, "Value": v} for k, v in sorted(
        (res.get("_tags") or {}).items())]}


def _bool(v):
    return str(v).lower() == "true"


def _allowed(policy, version, action):
    """``policy``: "full", "readonly" (Describe* only) or a set of RAM actions such as
    ``ecs:CreateImage`` (a RAM role with a custom policy: tests/fakecloud/server.py)."""
    if policy == "readonly":
        return action.startswith("Describe")
    if isinstance(policy, frozenset):
        return "%s:%s" % ("vpc" if version == VPC_VERSION else "ecs", action) in policy
    return True


class World(object):
    """One account in one region. Every public method is thread-safe."""

    def __init__(self, region="cn-hangzhou", zones=None, ticks=None, vpc_quota=10):
        self.region = region
        self.zones = list(zones or [region + "-h", region + "-i"])
        self.ticks = dict(DEFAULT_TICKS, **(ticks or {}))
        self.vpc_quota = vpc_quota
        self.lock = threading.RLock()
        self.vpcs, self.vswitches, self.groups = {}, {}, {}
        self.instances, self.disks, self.snapshots, self.images = {}, {}, {}, {}
        self.tokens = {}
        self.calls = []          # (action, params) of every authenticated call, in order
        self.callers = []        # the AccessKey id of each of those calls
        self.faults = []
        self.dark = False        # after a simulated client crash: drop every request
        self.crashed_at = None
        self.crash_event = threading.Event()  # set when a simulated crash happened
        self.public_ip = None    # give new instances this public address (e.g. 127.0.0.1)
        self.private_ip = None   # and this private one (default 172.16.0.N)
        self.receiver_starts = True  # a launched receiver prints its start line on the console
        self.appliance_failure = None  # a build user-data's self-check fails with this
        self._ips = itertools.count(10)
        self.holds = []          # Hold: calls answered late (see hold())

    # ------------------------------------------------------------------ helpers
    def _id(self, prefix):
        return "%s-%s" % (prefix, secrets.token_hex(10))

    def add_image(self, name, owner="self", status="Available", platform="Debian",
                  architecture="x86_64", size=20, os_type="linux", created=None,
                  image_id=None):
        """``image_id``: a public image's id is its file name (``debian_12_8_x64_20G_
        alibase_20241210.vhd``); ``created``: its CreationTime (ISO 8601, UTC)."""
        with self.lock:
            image_id = image_id or "m-" + secrets.token_hex(10)
            self.images[image_id] = {
                "ImageId": image_id, "ImageName": name, "Status": status,
                "ImageOwnerAlias": owner, "Platform": platform, "Architecture": architecture,
                "OSType": os_type, "OSNameEn": name, "BootMode": "BIOS", "Progress": "100%",
                "Size": size, "CreationTime": created or iso_after(0),
                "DiskDeviceMappings": {"DiskDeviceMapping": []}, "_ticks": 0,
            }
            return image_id

    def inject(self, code=None, action=None, after=0, times=1, status=None, crash=False):
        """Fail ``times`` calls of ``action`` (any action when None) with ``code``, after
        letting ``after`` matching calls through. ``crash=True`` instead lets the call do its
        work and then drops the answer and every later request (the client "died")."""
        with self.lock:
            self.faults.append(Fault(code, action, after, times, status, crash))

    def crash_after_call(self, n):
        """The ``n``-th API call from now (1-based, any action) is the last one answered:
        it does its work, then the connection drops and the cloud goes dark."""
        self.inject(after=n - 1, times=1, crash=True)

    def hold(self, action, timeout=60.0):
        """The next call of ``action`` is answered late (a :class:`Hold`)."""
        h = Hold(action, timeout)
        with self.lock:
            self.holds.append(h)
        return h

    def take_hold(self, action):
        with self.lock:
            for h in self.holds:
                if h.action == action:
                    self.holds.remove(h)
                    return h
            return None

    def revive(self):
        with self.lock:
            self.dark = False
            self.faults = [f for f in self.faults if not f.crash]
            self.crash_event.clear()

    def take_fault(self, action):
        """Called for each authenticated call before it runs: the fault to apply, or None."""
        with self.lock:
            for f in self.faults:
                if f.matches(action):
                    if f.after > 0:
                        f.after -= 1
                        continue
                    f.times -= 1
                    if f.times <= 0:
                        self.faults.remove(f)
                    return f
            return None

    def record(self, action, params, access_key_id=None):
        """Every authenticated call, faulted or not, in order (and who made it)."""
        with self.lock:
            self.calls.append((action, dict(params)))
            self.callers.append(access_key_id)

    def summary(self):
        """What exists now, as counts by kind (deleted things are gone)."""
        with self.lock:
            return {
                "vpcs": len(self.vpcs), "vswitches": len(self.vswitches),
                "security_groups": len(self.groups), "instances": len(self.instances),
                "disks": len(self.disks), "snapshots": len(self.snapshots),
                "images": len([i for i in self.images.values() if i["ImageOwnerAlias"] == "self"]),
            }

    def actions(self):
        with self.lock:
            return [a for a, _ in self.calls]

    # ------------------------------------------------------------------ dispatch
    def handle(self, version, action, params, principal):
        with self.lock:
            self._tick_deletions()
            table = ECS_ACTIONS if version == ECS_VERSION else (
                VPC_ACTIONS if version == VPC_VERSION else {})
            name = table.get(action)
            if name is None:
                raise ApiError("InvalidAction.NotFound")
            if not _allowed(principal.get("policy"), version, action):
                raise ApiError("Forbidden.RAM")
            if _bool(params.get("DryRun")):
                # as ECS: permissions checked, nothing done
                raise ApiError("DryRunOperation")
            token = params.get("ClientToken")
            key = None
            if token:
                key = (version, action, token)
                fingerprint = sorted((k, v) for k, v in params.items() if k != "ClientToken")
                seen = self.tokens.get(key)
                if seen is not None:
                    if seen[0] != fingerprint:
                        raise ApiError("IdempotentParameterMismatch")
                    return copy.deepcopy(seen[1])
            result = getattr(self, name)(params)
            if key is not None:
                self.tokens[key] = (fingerprint, copy.deepcopy(result))
            return result

    # ------------------------------------------------------------------ VPC
    def create_vpc(self, p):
        if len(self.vpcs) >= self.vpc_quota:
            raise ApiError("QuotaExceeded.Vpc")
        vpc_id = self._id("vpc")
        self.vpcs[vpc_id] = {"VpcId": vpc_id, "VpcName": p.get("VpcName", ""),
                             "CidrBlock": p.get("CidrBlock", "172.16.0.0/12"),
                             "Status": "Pending", "RegionId": self.region,
                             "VRouterId": self._id("vrt"), "_ticks": 0,
                             "Description": p.get("Description", ""), "_tags": _tags(p)}
        return {"VpcId": vpc_id, "VRouterId": self.vpcs[vpc_id]["VRouterId"],
                "RouteTableId": self._id("vtb"), "ResourceGroupId": "rg-default"}

    def _advance(self, res, pending, done, ticks):
        if res["Status"] == pending:
            res["_ticks"] += 1
            if res["_ticks"] > ticks:
                res["Status"] = done

    def describe_vpcs(self, p):
        want = p.get("VpcId")
        out = []
        for vpc in self.vpcs.values():
            if want and vpc["VpcId"] not in want.split(","):
                continue
            if p.get("VpcName") and vpc["VpcName"] != p["VpcName"]:
                continue
            if not _tag_match(vpc, p):
                continue
            self._advance(vpc, "Pending", "Available", self.ticks["vpc"])
            out.append(dict(_public(vpc), Tags=_vpc_tags(vpc)))
        return {"Vpcs": {"Vpc": out}, "TotalCount": len(out), "PageNumber": 1,
                "PageSize": 50}

    def delete_vpc(self, p):
        vpc_id = _need(p, "VpcId")
        vpc = _found(self.vpcs.get(vpc_id), "InvalidVpcId.NotFound")
        if any(v["VpcId"] == vpc_id for v in self.vswitches.values()) or any(
                g["VpcId"] == vpc_id for g in self.groups.values()):
            raise ApiError("DependencyViolation")
        if vpc["Status"] != "Available":
            raise ApiError("IncorrectVpcStatus")
        del self.vpcs[vpc_id]
        return {}

    def create_vswitch(self, p):
        vpc = _found(self.vpcs.get(_need(p, "VpcId")), "InvalidVpcId.NotFound")
        if vpc["Status"] != "Available":
            raise ApiError("IncorrectVpcStatus")
        zone = _need(p, "ZoneId")
        if zone not in self.zones:
            raise ApiError("InvalidZoneId.NotFound")
        vsw_id = self._id("vsw")
        self.vswitches[vsw_id] = {"VSwitchId": vsw_id, "VpcId": vpc["VpcId"], "ZoneId": zone,
                                  "CidrBlock": _need(p, "CidrBlock"), "Status": "Pending",
                                  "VSwitchName": p.get("VSwitchName", ""), "_ticks": 0,
                                  "_tags": _tags(p)}
        return {"VSwitchId": vsw_id}

    def describe_vswitches(self, p):
        out = []
        for vsw in self.vswitches.values():
            if p.get("VSwitchId") and vsw["VSwitchId"] != p["VSwitchId"]:
                continue
            if p.get("VpcId") and vsw["VpcId"] != p["VpcId"]:
                continue
            if not _tag_match(vsw, p):
                continue
            self._advance(vsw, "Pending", "Available", self.ticks["vswitch"])
            out.append(dict(_public(vsw), Tags=_vpc_tags(vsw)))
        return {"VSwitches": {"VSwitch": out}, "TotalCount": len(out), "PageNumber": 1,
                "PageSize": 50}

    def delete_vswitch(self, p):
        vsw_id = _need(p, "VSwitchId")
        vsw = _found(self.vswitches.get(vsw_id), "InvalidVSwitchId.NotFound")
        if any(i["VSwitchId"] == vsw_id for i in self.instances.values()):
            raise ApiError("DependencyViolation")
        if vsw["Status"] != "Available":
            raise ApiError("IncorrectVSwitchStatus")
        del self.vswitches[vsw_id]
        return {}

    # ------------------------------------------------------------------ ECS network
    def describe_zones(self, p):
        return {"Zones": {"Zone": [
            {"ZoneId": z, "LocalName": z, "AvailableResourceCreation": {
                "ResourceTypes": ["Instance", "Disk", "VSwitch"]}} for z in self.zones]}}

    def create_security_group(self, p):
        vpc_id = _need(p, "VpcId")
        if vpc_id not in self.vpcs:
            raise ApiError("InvalidVpcId.NotFound")
        sg_id = self._id("sg")
        self.groups[sg_id] = {"SecurityGroupId": sg_id, "VpcId": vpc_id,
                              "SecurityGroupName": p.get("SecurityGroupName", ""),
                              "Permissions": [], "_tags": _tags(p)}
        return {"SecurityGroupId": sg_id}

    def _group(self, p):
        return _found(self.groups.get(_need(p, "SecurityGroupId")),
                      "InvalidSecurityGroupId.NotFound")

    def authorize_security_group(self, p):
        group = self._group(p)
        rules = _indexed(p, "Permissions")
        if not rules:
            raise ApiError("MissingParameter", "Permissions is required.")
        for rule in rules:
            for field in ("IpProtocol", "PortRange"):
                _need(rule, field)
            entry = {"Direction": "ingress", "IpProtocol": rule["IpProtocol"].upper(),
                     "PortRange": rule["PortRange"], "SourceCidrIp": rule.get("SourceCidrIp", ""),
                     "Policy": rule.get("Policy", "Accept"),
                     "Description": rule.get("Description", "")}
            # An identical rule that already exists is accepted and not added twice.
            if not any(_same_rule(entry, old) for old in group["Permissions"]):
                group["Permissions"].append(entry)
        return {}

    def revoke_security_group(self, p):
        group = self._group(p)
        rules = _indexed(p, "Permissions")
        if not rules:
            raise ApiError("MissingParameter", "Permissions is required.")
        for rule in rules:
            entry = {"IpProtocol": rule.get("IpProtocol", "").upper(),
                     "PortRange": rule.get("PortRange"),
                     "SourceCidrIp": rule.get("SourceCidrIp", ""),
                     "Policy": rule.get("Policy", "Accept")}
            # as ECS: revoking a rule that is not there succeeds and changes nothing
            group["Permissions"] = [old for old in group["Permissions"]
                                    if not _same_rule(entry, old)]
        return {}

    def describe_security_group_attribute(self, p):
        group = self._group(p)
        return {"SecurityGroupId": group["SecurityGroupId"], "VpcId": group["VpcId"],
                "SecurityGroupName": group["SecurityGroupName"],
                "Permissions": {"Permission": copy.deepcopy(group["Permissions"])}}

    def describe_security_groups(self, p):
        ids = _json_list(p, "SecurityGroupIds")
        out = [{"SecurityGroupId": g["SecurityGroupId"], "VpcId": g["VpcId"],
                "SecurityGroupName": g["SecurityGroupName"], "Tags": _ecs_tags(g)}
               for g in self.groups.values()
               if (not p.get("VpcId") or g["VpcId"] == p["VpcId"])
               and (ids is None or g["SecurityGroupId"] in ids) and _tag_match(g, p)]
        return {"SecurityGroups": {"SecurityGroup": out}, "TotalCount": len(out)}

    def delete_security_group(self, p):
        group = self._group(p)
        if any(group["SecurityGroupId"] == i["SecurityGroupId"]
               for i in self.instances.values()):
            raise ApiError("DependencyViolation.SecurityGroup")
        del self.groups[group["SecurityGroupId"]]
        return {}

    # ------------------------------------------------------------------ instances
    def run_instances(self, p):
        image = self.images.get(_need(p, "ImageId"))
        if image is None or image["Status"] != "Available":
            raise ApiError("InvalidImageId.NotFound")
        _need(p, "InstanceType")
        vsw = _found(self.vswitches.get(_need(p, "VSwitchId")), "InvalidVSwitchId.NotFound")
        if vsw["Status"] != "Available":
            raise ApiError("IncorrectVSwitchStatus")
        group = self.groups.get(_need(p, "SecurityGroupId"))
        if group is None or group["VpcId"] != vsw["VpcId"]:
            raise ApiError("InvalidSecurityGroupId.NotFound")
        user_data = p.get("UserData", "")
        try:
            raw = base64.b64decode(user_data.encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError):
            raise ApiError("InvalidUserData.Base64FormatInvalid") from None
        if len(raw) > 32 * 1024:
            raise ApiError("InvalidUserData.SizeExceeded")
        sys_size = int(p.get("SystemDisk.Size", "40"))
        if not 20 <= sys_size <= 500:
            raise ApiError("InvalidSystemDiskSize.ValueNotSupported")
        data = _indexed(p, "DataDisk")
        for d in data:
            if not 20 <= int(d.get("Size", "0")) <= 32768:
                raise ApiError("InvalidDataDiskSize.ValueNotSupported")
        inst_id = "i-" + secrets.token_hex(10)
        bandwidth = int(p.get("InternetMaxBandwidthOut", "0"))
        n = next(self._ips)
        self.instances[inst_id] = {
            "InstanceId": inst_id, "InstanceName": p.get("InstanceName", inst_id),
            "InstanceType": p["InstanceType"], "ImageId": image["ImageId"],
            "Status": "Pending", "ZoneId": vsw["ZoneId"], "RegionId": self.region,
            "VSwitchId": vsw["VSwitchId"], "VpcId": vsw["VpcId"],
            "SecurityGroupId": group["SecurityGroupId"],
            "PrivateIp": self.private_ip or "172.16.0.%d" % n,
            "PublicIp": (self.public_ip or "47.96.0.%d" % n) if bandwidth > 0 else None,
            "RamRoleName": p.get("RamRoleName"), "UserData": raw,
            "_tags": _tags(p), "_ticks": 0,
            "_console": "[    0.000000] Linux version 6.1.0-28-amd64 (fake)\n",
            "_build": appliance_build_version(raw), "_build_ticks": 0,
            "_receiver": launched_receiver(raw, image),
        }
        devices = iter("bcdefghijklmnopqrstuvwxyz")
        # as ECS: RunInstances' Tag.N go on the instance, its disks and its primary ENI
        tags = self.instances[inst_id]["_tags"]
        self._disk(inst_id, "system", "/dev/xvda", sys_size, p.get("SystemDisk.DiskName", ""),
                   tags)
        for d in data:
            self._disk(inst_id, "data", "/dev/xvd" + next(devices), int(d["Size"]),
                       d.get("DiskName", ""), tags)
        return {"InstanceIdSets": {"InstanceIdSet": [inst_id]}, "TradePrice": 0.0}

    def _disk(self, inst_id, kind, device, size, name, tags):
        disk_id = "d-" + secrets.token_hex(10)
        self.disks[disk_id] = {"DiskId": disk_id, "InstanceId": inst_id, "Type": kind,
                               "Device": device, "Size": size, "DiskName": name,
                               "Status": "In_use", "Category": "cloud_essd",
                               "DeleteWithInstance": True, "_tags": dict(tags)}

    def _tick_instance(self, inst):
        if inst["Status"] == "Pending":
            inst["_ticks"] += 1
            if inst["_ticks"] > self.ticks["instance_pending"]:
                inst["Status"], inst["_ticks"] = "Starting", 0
        elif inst["Status"] == "Starting":
            inst["_ticks"] += 1
            if inst["_ticks"] > self.ticks["instance_starting"]:
                inst["Status"] = "Running"
                inst["_console"] += "Debian GNU/Linux 12 %s ttyS0\n" % inst["InstanceId"]
                receiver = inst["_receiver"]
                if receiver and not receiver["install"]:
                    self._receiver_starts(inst)
        elif inst["Status"] == "Running" and (inst["_receiver"] or {}).get("install"):
            # "runs" the install steps of a one-step launch: the marker, then the receiver
            inst["_build_ticks"] += 1
            if inst["_build_ticks"] > self.ticks["appliance_build"]:
                failure = self.appliance_failure
                inst["_console"] += "cloud-init: running %s\n%s%s\n" % (
                    BUILD_COMMAND, BUILD_MARKER, "failed: " + failure if failure
                    else "ready " + inst["_receiver"]["install"])
                inst["_receiver"] = None if failure else dict(inst["_receiver"], install=None)
                if not failure:
                    self._receiver_starts(inst)
        elif inst["Status"] == "Running" and inst["_build"]:
            # "runs" the appliance build user-data: its marker line, then power_state off
            inst["_build_ticks"] += 1
            if inst["_build_ticks"] > self.ticks["appliance_build"]:
                result = ("failed: " + self.appliance_failure if self.appliance_failure
                          else "ready " + inst["_build"])
                inst["_console"] += "cloud-init: running %s\n%s%s\nreboot: Power down\n" % (
                    BUILD_COMMAND, BUILD_MARKER, result)
                inst["Status"], inst["_build"] = "Stopped", None
        return True

    def _receiver_starts(self, inst):
        if self.receiver_starts:
            inst["_console"] += RECEIVER_BANNER % (
                "m-fake", inst["PublicIp"] or inst["PrivateIp"],
                inst["_receiver"]["fingerprint"]) + "\n"

    def _tick_deletions(self):
        """A released instance goes away with time, whether anyone looks or not: each API
        call is one tick of that time."""
        for inst in list(self.instances.values()):
            if inst["Status"] == "Deleting":
                inst["_ticks"] += 1
                if inst["_ticks"] > self.ticks["instance_deleting"]:
                    self._remove_instance(inst["InstanceId"])

    def _remove_instance(self, inst_id):
        del self.instances[inst_id]
        for disk_id in [d for d, disk in self.disks.items() if disk["InstanceId"] == inst_id]:
            del self.disks[disk_id]

    def describe_instances(self, p):
        ids = _json_list(p, "InstanceIds")
        out = []
        for inst in list(self.instances.values()):
            if ids is not None and inst["InstanceId"] not in ids:
                continue
            if p.get("InstanceName") and inst["InstanceName"] != p["InstanceName"]:
                continue
            if not _tag_match(inst, p):
                continue
            self._tick_instance(inst)
            out.append({
                "InstanceId": inst["InstanceId"], "InstanceName": inst["InstanceName"],
                "InstanceType": inst["InstanceType"], "ImageId": inst["ImageId"],
                "Status": "Stopping" if inst["Status"] == "Deleting" else inst["Status"],
                "ZoneId": inst["ZoneId"], "RegionId": inst["RegionId"],
                "VpcAttributes": {"VpcId": inst["VpcId"], "VSwitchId": inst["VSwitchId"],
                                  "PrivateIpAddress": {"IpAddress": [inst["PrivateIp"]]}},
                "PublicIpAddress": {"IpAddress": [inst["PublicIp"]] if inst["PublicIp"] else []},
                "SecurityGroupIds": {"SecurityGroupId": [inst["SecurityGroupId"]]},
                "Tags": _ecs_tags(inst),
            })
        return {"Instances": {"Instance": out}, "TotalCount": len(out), "PageNumber": 1,
                "PageSize": 10}

    def delete_instance(self, p):
        inst = self.instances.get(_need(p, "InstanceId"))
        if inst is None or inst["Status"] == "Deleting":
            raise ApiError("InvalidInstanceId.NotFound")
        if inst["Status"] != "Stopped" and not _bool(p.get("Force")):
            raise ApiError("IncorrectInstanceStatus")
        inst["Status"], inst["_ticks"] = "Deleting", 0
        return {}

    def stop_instance(self, p):
        inst = self.instances.get(_need(p, "InstanceId"))
        if inst is None or inst["Status"] == "Deleting":
            raise ApiError("InvalidInstanceId.NotFound")
        inst["Status"] = "Stopped"
        return {}

    def get_instance_console_output(self, p):
        inst = self.instances.get(_need(p, "InstanceId"))
        if inst is None or inst["Status"] == "Deleting":
            raise ApiError("InvalidInstanceId.NotFound")
        if inst["_receiver"]:  # a launched instance boots on, watched or not
            self._tick_instance(inst)
        text = inst["_console"].encode("utf-8")
        return {"InstanceId": inst["InstanceId"], "LastUpdateTime": iso_after(0),
                "ConsoleOutput": base64.b64encode(text).decode("ascii")}

    def describe_disks(self, p):
        out = []
        for disk in self.disks.values():
            if p.get("InstanceId") and disk["InstanceId"] != p["InstanceId"]:
                continue
            if p.get("DiskType") and p["DiskType"] != "all" and disk["Type"] != p["DiskType"]:
                continue
            ids = _json_list(p, "DiskIds")
            if (ids is not None and disk["DiskId"] not in ids) or not _tag_match(disk, p):
                continue
            out.append(dict(_public(disk), Tags=_ecs_tags(disk)))
        out.sort(key=lambda d: (d["Device"], d["DiskId"]))
        return {"Disks": {"Disk": out}, "TotalCount": len(out), "PageNumber": 1,
                "PageSize": 50}

    # ------------------------------------------------------------------ snapshots, images
    def create_snapshot(self, p):
        disk = _found(self.disks.get(_need(p, "DiskId")), "InvalidDiskId.NotFound")
        snap_id = "s-" + secrets.token_hex(10)
        self.snapshots[snap_id] = {"SnapshotId": snap_id, "SourceDiskId": disk["DiskId"],
                                   "SourceDiskSize": str(disk["Size"]),
                                   "SourceDiskType": disk["Type"],
                                   "SnapshotName": p.get("SnapshotName", ""),
                                   "Status": "progressing", "Progress": "0%", "_pct": 0,
                                   "_tags": _tags(p)}
        return {"SnapshotId": snap_id}

    def describe_snapshots(self, p):
        ids = _json_list(p, "SnapshotIds")
        out = []
        for snap in self.snapshots.values():
            if ids is not None and snap["SnapshotId"] not in ids:
                continue
            if p.get("DiskId") and snap["SourceDiskId"] != p["DiskId"]:
                continue
            if not _tag_match(snap, p):
                continue
            if snap["Status"] == "progressing":
                snap["_pct"] = min(100, snap["_pct"] + self.ticks["snapshot_step"])
                snap["Progress"] = "%d%%" % snap["_pct"]
                if snap["_pct"] >= 100:
                    snap["Status"] = "accomplished"
            out.append(dict(_public(snap), Tags=_ecs_tags(snap)))
        return {"Snapshots": {"Snapshot": out}, "TotalCount": len(out), "PageNumber": 1,
                "PageSize": 10}

    def delete_snapshot(self, p):
        snap_id = _need(p, "SnapshotId")
        if snap_id not in self.snapshots:
            raise ApiError("InvalidSnapshotId.NotFound")
        if any(m.get("SnapshotId") == snap_id
               for img in self.images.values() if img["ImageOwnerAlias"] == "self"
               for m in img["DiskDeviceMappings"]["DiskDeviceMapping"]):
            raise ApiError("SnapshotCreatedImage")
        del self.snapshots[snap_id]
        return {}

    def create_image(self, p):
        name = _need(p, "ImageName")
        if len(name) < 2 or len(name) > 128 or not name[0].isalpha() or name.startswith(
                ("http://", "https://", "aliyun", "acs:")):
            raise ApiError("InvalidImageName.Malformed")
        if any(i["ImageName"] == name and i["ImageOwnerAlias"] == "self"
               for i in self.images.values()):
            raise ApiError("InvalidImageName.Duplicated")
        mappings = _indexed(p, "DiskDeviceMapping")
        if p.get("InstanceId") and not mappings:
            return self._image_from_instance(name, p)
        if not mappings:
            raise ApiError("MissingParameter", "DiskDeviceMapping or SnapshotId is required.")
        for m in mappings:
            snap = _found(self.snapshots.get(m.get("SnapshotId")), "InvalidSnapshotId.NotFound")
            if snap["Status"] != "accomplished":
                raise ApiError("InvalidSnapshotId.NotReady")
        image_id = self.add_image(name, status="Creating", platform=p.get("Platform", ""),
                                  architecture=p.get("Architecture", "x86_64"))
        img = self.images[image_id]
        img["_tags"] = _tags(p)
        img["BootMode"] = p.get("BootMode", "BIOS")
        img["Progress"] = "0%"
        img["DiskDeviceMappings"] = {"DiskDeviceMapping": [
            {"SnapshotId": m["SnapshotId"], "Device": m.get("Device", ""),
             "Type": m.get("DiskType", "data"), "Size": m.get("Size", "")} for m in mappings]}
        return {"ImageId": image_id}

    def _image_from_instance(self, name, p):
        inst = self.instances.get(p["InstanceId"])
        if inst is None or inst["Status"] == "Deleting":
            raise ApiError("InvalidInstanceId.NotFound")
        disks = sorted((d for d in self.disks.values() if d["InstanceId"] == inst["InstanceId"]),
                       key=lambda d: d["Device"])
        base = self.images.get(inst["ImageId"], {})
        image_id = self.add_image(name, status="Creating", platform=base.get("Platform", ""),
                                  architecture=base.get("Architecture", "x86_64"))
        img = self.images[image_id]
        img["Progress"] = "0%"
        img["SourceInstanceId"] = inst["InstanceId"]
        # the real service snapshots each disk for the image; those belong to the image
        img["DiskDeviceMappings"] = {"DiskDeviceMapping": [
            {"SnapshotId": "s-" + secrets.token_hex(10), "Device": d["Device"],
             "Type": d["Type"], "Size": str(d["Size"])} for d in disks]}
        return {"ImageId": image_id}

    def describe_images(self, p):
        statuses = (p.get("Status") or "Available").split(",")
        ids = p.get("ImageId", "").split(",") if p.get("ImageId") else None
        out = []
        for img in self.images.values():
            if p.get("OSType") and img["OSType"] != p["OSType"]:
                continue
            if p.get("Architecture") and img["Architecture"] != p["Architecture"]:
                continue
            if ids is not None and img["ImageId"] not in ids:
                continue
            if p.get("ImageName") and img["ImageName"] != p["ImageName"]:
                continue
            if p.get("ImageOwnerAlias") and img["ImageOwnerAlias"] != p["ImageOwnerAlias"]:
                continue
            if not _tag_match(img, p):
                continue
            if img["Status"] == "Creating":
                img["_ticks"] += 1
                img["Progress"] = "%d%%" % min(99, 100 * img["_ticks"] // (self.ticks["image"]
                                                                          + 1))
                if img["_ticks"] > self.ticks["image"]:
                    img["Status"], img["Progress"] = "Available", "100%"
            if img["Status"] not in statuses:
                continue
            out.append(dict(_public(img), Tags=_ecs_tags(img)))
        size, number = int(p.get("PageSize") or 10), int(p.get("PageNumber") or 1)
        return {"Images": {"Image": out[(number - 1) * size:number * size]},
                "TotalCount": len(out), "PageNumber": number, "PageSize": size,
                "RegionId": self.region}

    def delete_image(self, p):
        img = self.images.get(_need(p, "ImageId"))
        if img is None or img["ImageOwnerAlias"] != "self":
            raise ApiError("InvalidImageId.NotFound")
        del self.images[img["ImageId"]]
        return {}

    # ------------------------------------------------------------------ metadata service
    def metadata(self, path, instance_id, role, issue_credentials):
        """Answer ``/latest/meta-data/...``; returns (status, text)."""
        inst = self.instances.get(instance_id) if instance_id else None
        leaf = path[len("/latest/meta-data/"):] if path.startswith("/latest/meta-data/") else None
        if leaf is None or inst is None:
            return 404, "Not Found"
        simple = {"instance-id": inst["InstanceId"], "region-id": self.region,
                  "zone-id": inst["ZoneId"], "private-ipv4": inst["PrivateIp"],
                  "vpc-id": inst["VpcId"], "vswitch-id": inst["VSwitchId"],
                  "hostname": inst["InstanceName"]}
        if leaf in simple:
            return 200, simple[leaf]
        if leaf == "ram/security-credentials/":
            return (200, role) if role else (404, "Not Found")
        if leaf.startswith("ram/security-credentials/") and role:
            if leaf.rsplit("/", 1)[1] != role:
                return 404, "Not Found"
            return 200, json.dumps(issue_credentials())
        return 404, "Not Found"


def appliance_build_version(user_data):
    """The go2aliyun version a receiver appliance build user-data installs, or None when
    ``user_data`` is not one: a cloud-config that runs the build command, writes the build
    script (which prints the marker) and the settings file, and powers off."""
    import yaml

    try:
        doc = yaml.safe_load(user_data)
    except yaml.YAMLError:
        return None
    if not isinstance(doc, dict) or [BUILD_COMMAND] not in (doc.get("runcmd") or []):
        return None
    if (doc.get("power_state") or {}).get("mode") != "poweroff":
        return None
    files = {}
    for f in doc.get("write_files") or []:
        if f.get("encoding") == "b64":
            files[f.get("path")] = base64.b64decode(f.get("content", "")).decode("utf-8")
    if BUILD_MARKER.strip() not in files.get(BUILD_COMMAND, ""):
        return None
    settings = {}
    for line in files.get("/etc/go2aliyun/appliance-build.env", "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            settings[key.strip()] = " ".join(shlex.split(value))
    return settings.get("G2A_VERSION") or None


def launched_receiver(user_data, image):
    """What a launch user-data starts on an instance of ``image``: ``{"fingerprint",
    "install"}`` (``install``: the go2aliyun version its install steps put on a stock
    image first, else None), or None when no receiver would start (no receiver identity
    in it, or a public image without the install steps)."""
    import yaml

    try:
        doc = yaml.safe_load(user_data)
    except yaml.YAMLError:
        return None
    if not isinstance(doc, dict) or (doc.get("power_state") or {}).get("mode"):
        return None
    files = {f.get("path"): base64.b64decode(f.get("content", "")).decode("utf-8")
             for f in doc.get("write_files") or [] if f.get("encoding") == "b64"}
    if RECEIVER_CERT not in files:
        return None
    der = ssl.PEM_cert_to_DER_cert(files[RECEIVER_CERT])
    digest = hashlib.sha256(der).hexdigest().upper()
    fingerprint = ":".join(digest[i:i + 2] for i in range(0, 64, 2))
    install = None
    if [BUILD_COMMAND] in (doc.get("runcmd") or []):
        for line in files.get("/etc/go2aliyun/appliance-build.env", "").splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == "G2A_VERSION":
                install = " ".join(shlex.split(value))
    if image["ImageOwnerAlias"] == "system" and not install:
        return None
    return {"fingerprint": fingerprint, "install": install}


def _public(res):
    return {k: v for k, v in res.items() if not k.startswith("_")}


def _same_rule(a, b):
    keys = ("IpProtocol", "PortRange", "SourceCidrIp", "Policy")
    return all(a.get(k) == b.get(k) for k in keys)


def new_request_id():
    return str(uuid.uuid4()).upper()


def iso_after(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds))


ECS_ACTIONS = {
    "DescribeZones": "describe_zones",
    "CreateSecurityGroup": "create_security_group",
    "AuthorizeSecurityGroup": "authorize_security_group",
    "RevokeSecurityGroup": "revoke_security_group",
    "DescribeSecurityGroupAttribute": "describe_security_group_attribute",
    "DescribeSecurityGroups": "describe_security_groups",
    "DeleteSecurityGroup": "delete_security_group",
    "RunInstances": "run_instances",
    "DescribeInstances": "describe_instances",
    "DeleteInstance": "delete_instance",
    "StopInstance": "stop_instance",
    "DescribeDisks": "describe_disks",
    "GetInstanceConsoleOutput": "get_instance_console_output",
    "CreateSnapshot": "create_snapshot",
    "DescribeSnapshots": "describe_snapshots",
    "DeleteSnapshot": "delete_snapshot",
    "CreateImage": "create_image",
    "DescribeImages": "describe_images",
    "DeleteImage": "delete_image",
}
VPC_ACTIONS = {
    "CreateVpc": "create_vpc",
    "DescribeVpcs": "describe_vpcs",
    "DeleteVpc": "delete_vpc",
    "CreateVSwitch": "create_vswitch",
    "DescribeVSwitches": "describe_vswitches",
    "DeleteVSwitch": "delete_vswitch",
}
