"""Launch the intermediate instance (INSTANCE_FOR_GOTOALIYUN) as resumable steps.

Every step first looks at the state file; every id the cloud returns is written there
before the next call; every create sends a ClientToken derived from the migration id
and the step. So a run that dies after any call, rerun, makes no second resource and
ends in the same place.

Steps: identity (migration id, one-time token, TLS material) -> refuse a duplicate image
name -> zone -> VPC -> vSwitch -> security group (8080 and 8703 from the source only)
-> the image to start (the receiver appliance image given, or else the region's newest
official Debian 12 image, whose user-data then installs the receiver first: the one-step
way) -> RunInstances (data disks for the target system disk and each target data disk,
user-data from ``cloud-init/``) -> wait until Running -> wait until the receiver runs
-> address, token and fingerprint.

The wait for the receiver looks at what the launching machine can always see: the
instance's serial console through the API (GetInstanceConsoleOutput: the install's
marker, then the receiver's start line with the fingerprint made here), and, when it is
reachable from here, ``/healthz`` with the pinned certificate. A workstation that is not
the server being migrated is not admitted by the security group: it sees the console.
"""

import datetime
import hashlib
import http.client
import ipaddress
import logging
import re
import secrets
import ssl

from image_build import userdata
from image_build.cloud import INSTANCE_NAME, RECEIVER_PORTS, InstanceSpec, client_token
from image_build.cloud.base import migration_tags
from receiver.identity import make_receiver_identity
from wire.errors import CloudError, ConfigError, TrustError, UsageError
from wire.logs import register_secret

log = logging.getLogger(__name__)

DEFAULT_VPC_CIDR = "172.16.0.0/16"
DEFAULT_VSWITCH_CIDR = "172.16.0.0/24"
TARGET_SYSTEM_DISK = "go2aliyun-target-system"
# The region's official Debian 12 images are named by file: debian_12_8_x64_20G_alibase_
# 20241210.vhd (the UEFI and ARM variants say uefi_x64 / arm64 and are not taken).
DEBIAN12_ID = re.compile(r"^debian_12(_\d+)*_x64_")
# How long the receiver may take to answer: from the appliance image it only boots; on
# a stock image it installs its packages and itself first.
RECEIVER_TIMEOUT = 900
INSTALL_TIMEOUT = 1800
# Seconds /healthz still gets after the receiver's start line showed on the console.
CONSOLE_GRACE = 20


def target_disk_name(index):
    return "go2aliyun-target-disk%d" % int(index)


class LaunchSettings(object):
    """What `launch` needs, from user_config.json and flags."""

    def __init__(self, region_id, image_name, receiver_image_id, source_cidr=None,
                 system_disk_size=40, data_disks=(), platform="", architecture="x86_64",
                 instance_type="ecs.g7.large", zone_id=None, vpc_id=None, vswitch_id=None,
                 security_group_id=None, private=False, bandwidth_mbit=100, ram_role=None,
                 receiver_disk_gib=40, wait_receiver=True, receiver_port=8080,
                 receiver_timeout=None, pip_index=None, wheel_url=None, version=None,
                 reachable_here=False):
        self.region_id = region_id
        self.image_name = image_name
        self.receiver_image_id = receiver_image_id
        # no appliance image: a stock Debian 12 instance installs the receiver first
        # (over the VPC-internal mirror when it has no public address)
        self.install = None if receiver_image_id else userdata.InstallSettings(
            version, pip_index or (userdata.INTRANET_PIP_INDEX if private else None),
            wheel_url)
        self.source_cidr = normalize_cidr(source_cidr) if source_cidr else None
        self.system_disk_size = int(system_disk_size)
        self.data_disks = sorted((int(i), int(s)) for i, s in data_disks)
        self.platform = platform
        self.architecture = architecture
        self.instance_type = instance_type
        self.zone_id = zone_id
        self.vpc_id = vpc_id
        self.vswitch_id = vswitch_id
        self.security_group_id = security_group_id
        self.private = private
        self.bandwidth_mbit = 0 if private else int(bandwidth_mbit)
        self.ram_role = ram_role
        self.receiver_disk_gib = receiver_disk_gib
        self.wait_receiver = wait_receiver
        self.receiver_port = receiver_port
        # this machine is the source (all-in-one): the receiver must answer here, not only
        # show on its console (its start line comes a moment before it listens)
        self.reachable_here = reachable_here
        self.receiver_timeout = receiver_timeout or (
            INSTALL_TIMEOUT if self.install else RECEIVER_TIMEOUT)
        self.check()

    def check(self):
        if not self.image_name:
            raise ConfigError("image_name is empty", code="config.image_name",
                              hint="set image_name in user_config.json")
        if self.private and not (self.vpc_id and self.vswitch_id):
            raise UsageError("--private needs the VPC and vSwitch the source reaches",
                             hint="pass --vpc-id and --vswitch-id (or set vpc_id/vswitch_id "
                                  "in client_data)")
        if self.vpc_id and not self.vswitch_id:
            raise UsageError("--vpc-id needs --vswitch-id too",
                             hint="name the vSwitch of that VPC the instance should use")
        if not self.source_cidr:
            raise UsageError("the source's address is needed for the security group",
                             hint="pass --source-cidr with the public (or, with --private, "
                                  "the private) address of the server being migrated")
        if not 20 <= self.system_disk_size <= 500:
            raise ConfigError("system_disk_size %s is outside 20..500 GiB" %
                              self.system_disk_size, code="config.system_disk_size")
        for index, size in self.data_disks:
            if not 1 <= index <= 16 or not 20 <= size <= 32768:
                raise ConfigError("data disk %s of %s GiB: index must be 1..16 and size "
                                  "20..32768" % (index, size), code="config.data_disk")

    def cloud_config(self, migration_id):
        """What the receiver needs to snapshot and build the image itself."""
        return {"provider": "aliyun", "migration_id": migration_id,
                "region_id": self.region_id, "ram_role": self.ram_role,
                "image": {"name": self.image_name, "platform": self.platform,
                          "architecture": self.architecture},
                "target_disks": [TARGET_SYSTEM_DISK] + [target_disk_name(i)
                                                        for i, _ in self.data_disks]}


def normalize_cidr(value):
    try:
        net = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError as e:
        raise UsageError("--source-cidr %r is not an address or CIDR" % value,
                         hint="e.g. 203.0.113.7 or 203.0.113.0/28") from e
    if net.prefixlen == 0:
        raise UsageError("--source-cidr %s would open the receiver to everyone" % value,
                         hint="give the source's own address")
    return str(net)


def new_migration_id():
    return "m-%s-%s" % (datetime.datetime.utcnow().strftime("%Y%m%d"), secrets.token_hex(3))


def ensure_identity(state):
    """Migration id, one-time token and TLS material: made once, kept in the state file
    (the user-data must be identical on a rerun, or RunInstances' ClientToken would not
    match)."""
    if "migration_id" not in state:
        state.set("migration_id", new_migration_id())
    if "tls" not in state:
        identity = make_receiver_identity()
        state.update(token=identity.pop("token"), tls=identity)
    register_secret(state.get("token"))
    register_secret(state.get("tls")["key"])
    return state.get("migration_id")


def refuse_duplicate_image(cloud, state, name):
    if state.get("image_id"):
        return  # ours, from an earlier run of this migration
    found = cloud.find_images_by_name(name)
    if found:
        raise CloudError(
            "an image called %r already exists in %s (%s)" % (
                name, getattr(cloud, "region_id", "the region"),
                ", ".join(i["id"] for i in found)),
            code="cloud.InvalidImageName.Duplicated",
            hint="choose another image_name in user_config.json or delete the old image; "
                 "nothing was created", api_code="InvalidImageName.Duplicated")


def ensure_zone(cloud, state, settings):
    if state.get("zone_id"):
        return state.get("zone_id")
    if settings.vswitch_id:
        vsw = cloud.vswitch(settings.vswitch_id)
        if vsw is None:
            raise CloudError("vSwitch %s does not exist in %s" % (
                settings.vswitch_id, settings.region_id), code="cloud.vswitch_missing",
                hint="check --vswitch-id and the region")
        zone = vsw["zone_id"]
    elif settings.zone_id:
        zone = settings.zone_id
    else:
        zones = cloud.zones()
        if not zones:
            raise CloudError("no zone of %s offers instances and vSwitches" %
                             settings.region_id, code="cloud.no_zone")
        zone = zones[0]
    state.set("zone_id", zone)
    return zone


def ensure_vpc(cloud, state, settings, mid):
    vpc_id = state.get("vpc_id")
    if not vpc_id:
        if settings.vpc_id:
            if cloud.vpc(settings.vpc_id) is None:
                raise CloudError("VPC %s does not exist in %s" % (
                    settings.vpc_id, settings.region_id), code="cloud.vpc_missing",
                    hint="check --vpc-id and the region")
            state.update(vpc_id=settings.vpc_id, created=_created(state, vpc=False))
            return settings.vpc_id
        token = client_token(mid, "vpc")
        vpc_id = state.create("vpc", token, lambda: cloud.create_vpc(
            DEFAULT_VPC_CIDR, "go2aliyun-" + mid, token, tags=migration_tags(mid)))
        state.end_create("vpc", vpc_id=vpc_id, created=_created(state, vpc=True))
    if _created(state).get("vpc"):
        cloud.wait_vpc_available(vpc_id)
    elif cloud.vpc(vpc_id) is None:
        raise CloudError("the VPC %s recorded for this migration is gone" % vpc_id,
                         code="cloud.vanished", hint="run `go2aliyun-cloud cleanup`, then "
                                                     "launch again")
    return vpc_id


def ensure_vswitch(cloud, state, settings, mid, vpc_id, zone):
    vsw_id = state.get("vswitch_id")
    if not vsw_id:
        if settings.vswitch_id:
            vsw = cloud.vswitch(settings.vswitch_id)
            if vsw is None or vsw["vpc_id"] != vpc_id:
                raise CloudError("vSwitch %s is not in VPC %s" % (settings.vswitch_id, vpc_id),
                                 code="cloud.vswitch_mismatch",
                                 hint="pass a vSwitch of the given VPC")
            state.update(vswitch_id=settings.vswitch_id, created=_created(state, vswitch=False))
            return settings.vswitch_id
        token = client_token(mid, "vswitch")
        vsw_id = state.create("vswitch", token, lambda: cloud.create_vswitch(
            vpc_id, zone, DEFAULT_VSWITCH_CIDR, "go2aliyun-" + mid, token,
            tags=migration_tags(mid)))
        state.end_create("vswitch", vswitch_id=vsw_id, created=_created(state, vswitch=True))
    cloud.wait_vswitch_available(vsw_id)
    return vsw_id


def ensure_security_group(cloud, state, settings, mid, vpc_id):
    sg_id = state.get("security_group_id")
    if not sg_id:
        if settings.security_group_id:
            sg_id = settings.security_group_id
            state.update(security_group_id=sg_id, created=_created(state, security_group=False))
        else:
            token = client_token(mid, "security-group")
            sg_id = state.create("security_group", token, lambda: cloud.create_security_group(
                vpc_id, "go2aliyun-" + mid, token, tags=migration_tags(mid)))
            state.end_create("security_group", security_group_id=sg_id,
                             created=_created(state, security_group=True))
    allowed = state.get("ingress_allowed")
    if settings.source_cidr and allowed != settings.source_cidr:  # none: build-image
        # a rerun with another --source-cidr: admit the new source, then drop the old one
        cloud.allow_ingress(sg_id, RECEIVER_PORTS, settings.source_cidr,
                            client_token(mid, "ingress-" + settings.source_cidr))
        if allowed:
            cloud.revoke_ingress(sg_id, RECEIVER_PORTS, allowed)
            log.info("security group %s: source %s replaced by %s", sg_id, allowed,
                     settings.source_cidr)
        state.set("ingress_allowed", settings.source_cidr)
    return sg_id


def pick_debian12(images):
    """The newest official Debian 12 x86_64 image of ``cloud.system_images()`` (pure), or
    None. Newest by CreationTime, then by the date in the id."""
    found = [i for i in images if DEBIAN12_ID.match(i["id"])
             and i.get("architecture") in (None, "", "x86_64")]
    if not found:
        return None
    return max(found, key=lambda i: (i.get("creation_time") or "", i["id"]))


def ensure_base_image(cloud, state, settings):
    """The image the instance starts from, recorded before RunInstances (a rerun sends
    the same one): the appliance image given, else the region's newest Debian 12."""
    image_id = state.get("launch_image_id")
    if image_id:
        return image_id
    image_id = settings.receiver_image_id
    if not image_id:
        image = pick_debian12(cloud.system_images("linux", "x86_64"))
        if image is None:
            raise CloudError("no official Debian 12 x86_64 image found in %s" %
                             settings.region_id, code="cloud.no_base_image",
                             hint="pass --receiver-image with a receiver appliance image "
                                  "(go2aliyun-cloud build-image) made in this region")
        image_id = image["id"]
        log.info("starting from %s (%s), installing go2aliyun %s at first boot", image_id,
                 image.get("os_name") or image.get("name"), settings.install.version)
    state.set("launch_image_id", image_id)
    return image_id


def ensure_instance(cloud, state, settings, mid, vsw_id, sg_id):
    inst_id = state.get("instance_id")
    if not inst_id:
        image_id = ensure_base_image(cloud, state, settings)
        tls = state.get("tls")
        text = userdata.render_user_data(
            tls["certificate"], tls["key"], tls["tokens_json"],
            cloud.receiver_config(settings.cloud_config(mid), client_token(mid, "instance")),
            install=settings.install)
        disks = [(TARGET_SYSTEM_DISK, settings.system_disk_size)] + [
            (target_disk_name(i), size) for i, size in settings.data_disks]
        spec = InstanceSpec(image_id, settings.instance_type, vsw_id, sg_id,
                            text, system_disk_gib=settings.receiver_disk_gib,
                            data_disks=disks, public_bandwidth_mbit=settings.bandwidth_mbit,
                            name=INSTANCE_NAME, ram_role=settings.ram_role,
                            tags=migration_tags(mid))
        state.update(target_layout=target_layout(settings))
        token = client_token(mid, "instance")
        inst_id = state.create("instance", token, lambda: cloud.run_instance(spec, token))
        state.end_create("instance", instance_id=inst_id)
    inst = cloud.wait_instance_running(inst_id)
    address = inst.private_ip if settings.private else (inst.public_ip or inst.private_ip)
    state.update(address=address, public_ip=inst.public_ip, private_ip=inst.private_ip)
    return inst


def target_layout(settings):
    """The target disks launch asks for, as finish proves them on the instance: the target
    system disk (index 0), then each data disk by its index."""
    return [{"role": "system", "index": 0, "name": TARGET_SYSTEM_DISK,
             "size_gib": settings.system_disk_size}] + [
        {"role": "data", "index": i, "name": target_disk_name(i), "size_gib": size}
        for i, size in settings.data_disks]


# A setting -> the recorded resource it shaped. Once that resource exists (or its create
# is in flight), a rerun with another value is refused, naming the setting: the resource
# would not match it. --source-cidr is not here: a rerun applies it to the security group.
SHAPES = {"region_id": "vpc_id", "zone_id": "vswitch_id", "vpc_id": "vpc_id",
          "vswitch_id": "vswitch_id", "security_group_id": "security_group_id",
          "private": "instance_id", "instance_type": "instance_id",
          "receiver_image_id": "instance_id", "system_disk_size": "instance_id",
          "data_disks": "instance_id", "bandwidth_mbit": "instance_id",
          "ram_role": "instance_id", "receiver_disk_gib": "instance_id",
          "image_name": "instance_id"}
IN_FLIGHT_OF = {"vpc_id": "vpc", "vswitch_id": "vswitch", "security_group_id":
                "security_group", "instance_id": "instance"}


def _settings_record(settings):
    return {k: (list(map(list, v)) if k == "data_disks" else v)
            for k, v in ((k, getattr(settings, k)) for k in SHAPES)}


def check_settings_unchanged(state, settings):
    """Refuse a rerun whose settings differ from those that made a resource still in use;
    record the settings of this run otherwise."""
    before = state.get("settings") or {}
    now = _settings_record(settings)
    if settings.zone_id is None:
        now["zone_id"] = before.get("zone_id")  # picked by launch, not by the user
    released = state.get("released") or {}
    changed = []
    for key, value in sorted(now.items()):
        kind = IN_FLIGHT_OF[SHAPES[key]]
        made = (state.get(SHAPES[key]) and not released.get(kind)) or \
            kind in state.in_flight()
        if key in before and before[key] != value and made:
            changed.append("%s (was %r, now %r)" % (key, before[key], value))
    if changed:
        raise ConfigError(
            "this migration's resources were made with other settings: %s" % ", ".join(
                changed), code="config.settings_changed",
            hint="run launch with the settings of the first run (user_config.json, "
                 "options), or release this migration (`go2aliyun-cloud cleanup`) and "
                 "launch a new one in another work folder")
    state.set("settings", dict(before, **now))


def _plain_fingerprint(text):
    return text.replace(":", "").strip().lower()


def probe_receiver(address, port, fingerprint, timeout=5.0):
    """True when the receiver at ``address:port`` answers ``GET /healthz`` over TLS with the
    certificate whose SHA-256 is ``fingerprint``; False when it does not answer (yet).
    A different certificate raises :class:`TrustError`: someone else is there."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # pinned by fingerprint below, as the source does
    conn = http.client.HTTPSConnection(address, port, timeout=timeout, context=ctx)
    try:
        conn.connect()
        der = conn.sock.getpeercert(binary_form=True)
        seen = hashlib.sha256(der).hexdigest()
        if seen != _plain_fingerprint(fingerprint):
            raise TrustError("the server at %s:%d shows certificate %s, not the receiver's %s"
                             % (address, port, seen, fingerprint),
                             code="auth.fingerprint_mismatch",
                             hint="something else answers on that address; check the "
                                  "instance and its security group")
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        return resp.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def read_console(cloud, instance_id):
    """The instance's console text, "" when this provider has none (local: its qemu
    console is not an API)."""
    try:
        return cloud.console_output(instance_id)
    except CloudError as e:
        if e.code == "cloud.unsupported":
            return ""
        raise


def wait_for_receiver(cloud, state, settings):
    """Until the console shows the receiver's start line with our fingerprint, or it
    answers /healthz here (whichever comes first; with ``reachable_here``, /healthz
    here). The install's ``failed`` marker stops the wait at once with the end of the
    console."""
    address = state.get("address")
    fingerprint = state.get("tls")["fingerprint"]
    inst_id = state.get("instance_id")
    seen = {}

    def probe():
        console = read_console(cloud, inst_id)
        verdict = userdata.parse_marker(console)
        if verdict and verdict[0] == "failed":
            raise CloudError(
                "installing the receiver on %s failed: %s\n--- console (last lines) ---\n%s"
                % (inst_id, verdict[1], userdata.console_tail(console)),
                code="cloud.receiver_install_failed",
                hint="fix the cause (the instance must reach the Debian and PyPI mirrors; "
                     "--pip-index, --wheel-url) and run `go2aliyun-cloud cleanup`, then "
                     "launch again; or pass --receiver-image")
        if probe_receiver(address, settings.receiver_port, fingerprint):
            return "healthz"
        if settings.reachable_here or not userdata.receiver_started(console, fingerprint):
            return None
        # its start line comes a moment before it listens: where /healthz can answer,
        # give it that moment, so the source started next is not refused
        seen.setdefault("console", cloud.clock())
        return "console" if cloud.clock() - seen["console"] >= CONSOLE_GRACE else None

    how = cloud.wait_for("the receiver of %s to start (its console, or %s:%d)" % (
        inst_id, address, settings.receiver_port), probe, settings.receiver_timeout)
    log.info("the receiver of %s runs (seen on its %s)", inst_id, how)
    state.set("receiver_ready", True)


def _created(state, **changes):
    created = dict(state.get("created") or {})
    created.update(changes)
    return created


def launch(cloud, state, settings):
    """Run (or resume) the launch. Returns ``{"migration_id", "instance_id", "address",
    "token", "fingerprint"}``."""
    check_settings_unchanged(state, settings)
    state.update(region_id=settings.region_id, image_name=settings.image_name,
                 net_mode=2 if settings.private else 0)
    mid = ensure_identity(state)
    if not state.get("instance_id"):
        refuse_duplicate_image(cloud, state, settings.image_name)
    zone = ensure_zone(cloud, state, settings)
    vpc_id = ensure_vpc(cloud, state, settings, mid)
    vsw_id = ensure_vswitch(cloud, state, settings, mid, vpc_id, zone)
    sg_id = ensure_security_group(cloud, state, settings, mid, vpc_id)
    inst = ensure_instance(cloud, state, settings, mid, vsw_id, sg_id)
    if settings.wait_receiver:
        wait_for_receiver(cloud, state, settings)
    state.set("status", "Launched")
    log.info("intermediate instance %s runs at %s", inst.id, state.get("address"))
    return {"migration_id": mid, "instance_id": inst.id, "address": state.get("address"),
            "token": state.get("token"), "fingerprint": state.get("tls")["fingerprint"]}
