"""Build the receiver appliance image in an Alibaba Cloud region (``go2aliyun-cloud
--provider aliyun build-image``), as resumable steps like :mod:`image_build.launch`.

Steps: refuse a taken image name (``go2aliyun-receiver-<version>``) before anything is
made -> zone, VPC, vSwitch, security group (launch's own ``ensure_*``; no port is opened)
-> RunInstances from a Debian 12 base image with the build user-data
(``cloud-init/appliance-build.yaml.tmpl``: packages, the receiver in /opt/go2aliyun, the
systemd unit enabled, a self-check that prints one marker line on the serial console,
power off) -> wait for the marker (GetInstanceConsoleOutput) and the Stopped instance ->
CreateImage from the instance -> wait Available -> release the instance and the network
made for it. The image id is what ``launch --receiver-image`` takes.

Every id is written to ``build_image_state.json`` in the work folder before the next
call and every create sends a ClientToken derived from the build id and the step, so a
rerun after a crash at any call makes no duplicate. A failed self-check releases what
was made, forgets the build and raises with the console tail.
"""

import datetime
import logging
import os
import secrets
import string

from image_build import finish, launch, userdata
from image_build.cloud import InstanceSpec, client_token
from image_build.cloud.base import migration_tags
from image_build.state import StateFile
from wire.errors import CloudError, UsageError

log = logging.getLogger(__name__)

STATE_FILE = "build_image_state.json"
TEMPLATE = "appliance-build.yaml.tmpl"
SCRIPT = userdata.INSTALL_SCRIPT
SETTINGS_PATH = userdata.SETTINGS_PATH
DEFAULT_PIP_INDEX = userdata.DEFAULT_PIP_INDEX
IMAGE_PREFIX = "go2aliyun-receiver-"
BUILD_INSTANCE_NAME = "go2aliyun-appliance-build"
MARKER = userdata.MARKER
# the install steps and their package lists live in image_build/userdata.py (the
# one-step launch runs the same steps)
RECEIVER_PACKAGES = userdata.RECEIVER_PACKAGES
BOOT_PACKAGES = userdata.BOOT_PACKAGES
render_settings = userdata.render_settings
parse_marker = userdata.parse_marker
console_tail = userdata.console_tail
own_version = userdata.own_version
STOPPED_GRACE_POLLS = 3


class BuildSettings(object):
    """What build-image needs. The attribute names launch's ``ensure_*`` read
    (zone_id, vpc_id, vswitch_id, security_group_id, source_cidr) mean the same here;
    ``source_cidr`` is None: the build instance admits no inbound traffic."""

    def __init__(self, region_id, base_image_id, version=None, pip_index=None,
                 wheel_url=None, instance_type="ecs.g7.large", zone_id=None, vpc_id=None,
                 vswitch_id=None, security_group_id=None, bandwidth_mbit=10, disk_gib=20,
                 timeout=3600):
        self.region_id = region_id
        self.base_image_id = base_image_id
        self.install = userdata.InstallSettings(version, pip_index, wheel_url)
        self.version = self.install.version
        self.pip_index = self.install.pip_index
        self.wheel_url = self.install.wheel_url
        self.instance_type = instance_type
        self.zone_id = zone_id
        self.vpc_id = vpc_id
        self.vswitch_id = vswitch_id
        self.security_group_id = security_group_id
        self.source_cidr = None
        self.bandwidth_mbit = int(bandwidth_mbit)
        self.disk_gib = int(disk_gib)
        self.timeout = timeout
        self.check()

    @property
    def image_name(self):
        return IMAGE_PREFIX + self.version

    def check(self):
        if not self.region_id:
            raise UsageError("no region given", hint="pass --region (e.g. cn-hangzhou)")
        if not self.base_image_id:
            raise UsageError("no base image given",
                             hint="pass --base-image with a Debian 12 public image id of the "
                                  "region (`aliyun ecs DescribeImages --ImageOwnerAlias "
                                  "system --OSType linux`)")
        if self.vpc_id and not self.vswitch_id:
            raise UsageError("--vpc-id needs --vswitch-id too",
                             hint="name the vSwitch of that VPC the instance should use")
        if self.bandwidth_mbit < 1:
            raise UsageError("--bandwidth must be at least 1 Mbit/s",
                             hint="the instance downloads packages from the internet")


def render_build_user_data(settings, folder=None):
    """The build instance's cloud-config (pure apart from reading ``cloud-init/``)."""
    folder = folder or userdata.CLOUD_INIT_DIR
    text = string.Template(userdata._read(TEMPLATE, folder)).substitute(
        unit_b64=userdata._b64(userdata._read(userdata.UNIT, folder)),
        install_files=userdata.render_install_files(settings.install, folder),
        install_runcmd=userdata.INSTALL_RUNCMD)
    size = len(text.encode("utf-8"))
    if size > userdata.MAX_USER_DATA:
        raise UsageError("the build user-data is %d bytes; ECS accepts at most %d" % (
            size, userdata.MAX_USER_DATA), hint="shorten cloud-init/" + SCRIPT)
    return text


def new_build_id():
    return "b-%s-%s" % (datetime.datetime.utcnow().strftime("%Y%m%d"), secrets.token_hex(3))


def state_in(workdir):
    return StateFile(os.path.join(workdir, STATE_FILE))


def ensure_build_instance(cloud, state, settings, bid, vsw_id, sg_id):
    inst_id = state.get("instance_id")
    if not inst_id:
        spec = InstanceSpec(settings.base_image_id, settings.instance_type, vsw_id, sg_id,
                            render_build_user_data(settings), system_disk_gib=settings.disk_gib,
                            public_bandwidth_mbit=settings.bandwidth_mbit,
                            name=BUILD_INSTANCE_NAME,
                            tags=dict(migration_tags(bid), **{"go2aliyun:appliance-build": bid}))
        inst_id = cloud.run_instance(spec, client_token(bid, "instance"))
        state.set("instance_id", inst_id)
    return inst_id


def wait_built(cloud, state, settings, inst_id):
    """Until the console shows ``ready`` and the instance is Stopped. A ``failed`` marker,
    a wrong version or a stop without a marker raise ``cloud.appliance_failed``."""
    seen = {"console": ""}

    def failed(reason):
        return CloudError("the appliance build on %s failed: %s\n--- console (last lines) ---\n%s"
                          % (inst_id, reason, console_tail(seen["console"])),
                          code="cloud.appliance_failed",
                          hint="fix the cause (--pip-index, --wheel-url, --base-image) and run "
                               "build-image again; what was made for this build is released")

    def probe():
        inst = cloud.instance(inst_id)
        if inst is None:
            raise CloudError("the build instance %s disappeared" % inst_id,
                             code="cloud.vanished", hint="run build-image again")
        seen["console"] = cloud.console_output(inst_id)
        verdict = parse_marker(seen["console"])
        if verdict and verdict[0] == "failed":
            raise failed(verdict[1])
        if verdict and verdict[1] != settings.version:
            raise failed("it installed go2aliyun %s, not %s" % (verdict[1], settings.version))
        if inst.status == "Stopped":
            if verdict is not None:
                return verdict
            # the console log may lag the power-off a little
            seen["stopped"] = seen.get("stopped", 0) + 1
            if seen["stopped"] > STOPPED_GRACE_POLLS:
                raise failed("the instance stopped without printing the %r marker" % MARKER)
        return None

    cloud.wait_for("the appliance build on %s (console marker, then power off)" % inst_id,
                   probe, settings.timeout)
    state.set("built", settings.version)


def ensure_image(cloud, state, settings, bid, inst_id):
    image_id = state.get("image_id")
    if not image_id:
        image_id = cloud.create_image_from_instance(
            inst_id, settings.image_name, client_token(bid, "image"),
            description="go2aliyun receiver appliance %s" % settings.version)
        state.set("image_id", image_id)
    img = cloud.wait_image(image_id)
    state.set("image_status", img["status"])
    return image_id


# What the build's create calls are made of, by option name: a rerun with other values
# would send the same ClientTokens with other parameters (IdempotentParameterMismatch).
RECORDED_OPTIONS = (("--base-image", "base_image_id"), ("--instance-type", "instance_type"),
                    ("--pip-index", "pip_index"), ("--wheel-url", "wheel_url"),
                    ("--bandwidth", "bandwidth_mbit"))


def recorded_options(settings):
    return {opt: getattr(settings, attr) for opt, attr in RECORDED_OPTIONS}


def _shown(value):
    return value if value not in ("", None) else "(none)"


def changed_options(recorded, settings):
    """[(option, recorded value, this run's value)] that differ (pure)."""
    now = recorded_options(settings)
    return [(opt, recorded[opt], now[opt]) for opt, _ in RECORDED_OPTIONS
            if opt in recorded and recorded[opt] != now[opt]]


def _start(state, settings):
    """Start a new build or resume the recorded one; returns the build id. A resumed
    build must run with the options it was started with."""
    recorded = state.get("image_name")
    if recorded and state.get("status") == "Released" and recorded != settings.image_name:
        state.data = {}  # an earlier, finished build of another version
    elif recorded and recorded != settings.image_name:
        raise UsageError("%s records an unfinished build of %s, not %s" % (
            state.path, recorded, settings.image_name),
            hint="rerun with --version %s to finish it, or remove the file after "
                 "releasing its resources" % recorded[len(IMAGE_PREFIX):])
    if "migration_id" not in state:
        state.update(migration_id=new_build_id(), region_id=settings.region_id,
                     image_name=settings.image_name, options=recorded_options(settings))
    elif state.get("status") != "Released":
        changed = changed_options(state.get("options") or {}, settings)
        if changed:
            raise UsageError(
                "%s records an unfinished build %s started with other options: %s" % (
                    state.path, state.get("migration_id"), "; ".join(
                        "%s was %s, now %s" % (o, _shown(was), _shown(now))
                        for o, was, now in changed)),
                code="usage.build_options_changed",
                hint="rerun with the options it was started with to finish it (%s), or "
                     "remove the file after releasing its resources" % " ".join(
                         "%s %s" % (o, _shown(was)) for o, was, _ in changed))
    return state.get("migration_id")


def _make(cloud, state, settings, bid, say):
    """Network, build instance, the build itself, the image (each step resumable)."""
    if not state.get("instance_id"):
        launch.refuse_duplicate_image(cloud, state, settings.image_name)
    zone = launch.ensure_zone(cloud, state, settings)
    vpc_id = launch.ensure_vpc(cloud, state, settings, bid)
    vsw_id = launch.ensure_vswitch(cloud, state, settings, bid, vpc_id, zone)
    sg_id = launch.ensure_security_group(cloud, state, settings, bid, vpc_id)
    inst_id = ensure_build_instance(cloud, state, settings, bid, vsw_id, sg_id)
    if state.get("built") != settings.version:
        say("instance %s installs the receiver from %s" % (
            inst_id, settings.wheel_url or settings.pip_index))
        try:
            wait_built(cloud, state, settings, inst_id)
        except CloudError as e:
            if e.code == "cloud.appliance_failed":
                state.set("failed", str(e).splitlines()[0])
                say("the build failed; releasing what was made for it")
                _forget_failed(cloud, state)
            raise
    say("making image %s from %s" % (settings.image_name, inst_id))
    return ensure_image(cloud, state, settings, bid, inst_id)


def _forget_failed(cloud, state):
    """Release what a failed build made, then forget it (the next run starts afresh)."""
    finish.release(cloud, state)
    state.data = {}
    state.save()


def build(cloud, state, settings, progress=None):
    """Run (or resume) the build; returns the image id."""
    say = progress or (lambda m: log.info("%s", m))
    if state.get("failed"):  # its release was interrupted: finish it first
        say("releasing what the failed build %s made" % state.get("migration_id"))
        _forget_failed(cloud, state)
    bid = _start(state, settings)
    if state.get("status") == "Released":
        return state.get("image_id")
    if state.get("image_status") != "Available":  # else: only the release is left
        _make(cloud, state, settings, bid, say)
    image_id = state.get("image_id")
    say("releasing the build instance and its network")
    finish.release(cloud, state)
    return image_id
