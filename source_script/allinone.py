"""The all-in-one mode (the seed's flow): ``go2aliyun migrate`` with AccessKeys and no
receiver starts the intermediate instance itself, then migrates into it as usual.

* **When**: ``user_config.json`` carries ``access_id`` and ``secret_key`` (or the
  environment ``ALIBABA_CLOUD_ACCESS_KEY_ID``/``ALIBABA_CLOUD_ACCESS_KEY_SECRET``) and
  no receiver is named (``--receiver`` or ``receiver.address`` in ``client_data``); or
  ``cloud_state.json`` in the work folder already records a launch (a rerun resumes it).
* **Launch**: :func:`image_build.launch.launch` (resumable by ClientToken and the state
  file: a rerun after a crash at any point makes no second instance). Its settings come
  from ``user_config.json`` (region, image name, disk sizes) and from the flags
  ``--receiver-image``, ``--source-cidr``, ``--instance-type``, ``--ram-role``,
  ``--private`` or the same keys in ``client_data`` (so a rerun needs no flag);
  ``vpc_id``/``vswitch_id``/``security_group_id`` in ``client_data`` reuse a network
  (the VPC intranet way, with ``--private``: no public address).
* **No receiver image** (the one-step way): the launch starts the region's newest
  official Debian 12 image, whose user-data installs the receiver at first boot (the
  steps build-image runs); ``--receiver-image`` is the faster way.
* **Python**: the cloud SDK and ``image_build`` need Python 3.8 or newer. On an older
  Python (CentOS 7, Ubuntu 18.04: 3.6) this mode stops before any cloud call and says
  what to run instead: ``go2aliyun-cloud launch`` on another machine, then
  ``go2aliyun migrate --receiver`` here.
* **Keys**: used for the cloud API calls from this machine only; the receiver learns
  only its token hash, TLS identity and ``cloud.json`` (the launch refuses a key there).
  They are registered as secrets, so no log line or error shows them.
* **After the image is ready**: release what the launch made for this migration (the
  instance, and the VPC, vSwitch and security group only when it created them). When
  the run stops before that, the message says what ``go2aliyun-cloud cleanup`` will
  release.

This module imports ``image_build`` (and the Alibaba Cloud SDK) only in this mode, in
:func:`require_cloud_extra`: the plain source needs neither.
"""

import ipaddress
import json
import logging
import os
import socket
import sys
import types

from wire import clientdata
from wire import config as user_config
from wire.errors import ConfigError, UsageError
from wire.logs import register_secret

log = logging.getLogger(__name__)

KEY_ID_ENV = user_config.KEY_ID_ENV
KEY_SECRET_ENV = user_config.KEY_SECRET_ENV
STS_TOKEN_ENV = user_config.STS_TOKEN_ENV
CLOUD_EXTRA = "pip install 'go2aliyun[cloud]'"
# launch settings that may also come from client_data (so a rerun needs no flag)
SETTING_KEYS = ("receiver_image", "source_cidr", "instance_type", "ram_role", "private",
                "pip_index", "wheel_url")
# set by hand in client_data to reuse a network (the seed's way; go2aliyun-cloud reads
# the same keys)
NETWORK_KEYS = ("vpc_id", "vswitch_id", "security_group_id")
# the oldest Python the launcher side (image_build, the Alibaba Cloud SDK) runs on
CLOUD_PYTHON = (3, 8)
DEFAULT_INSTANCE_TYPE = "ecs.g7.large"
STATE_FILE = "cloud_state.json"


class LaunchOptions(object):
    """The all-in-one knobs of ``go2aliyun migrate`` (flags; None = not given)."""

    def __init__(self, receiver_image=None, source_cidr=None, instance_type=None,
                 ram_role=None, endpoint=None, protocol="https", poll_interval=5.0,
                 receiver_timeout=None, private=None, pip_index=None, wheel_url=None):
        self.receiver_image = receiver_image
        self.source_cidr = source_cidr
        self.instance_type = instance_type
        self.ram_role = ram_role
        self.private = private or None  # a flag not given is not "False": client_data counts
        self.pip_index = pip_index  # without receiver_image: where the instance gets go2aliyun
        self.wheel_url = wheel_url
        self.endpoint = endpoint
        self.protocol = protocol
        self.poll_interval = float(poll_interval)
        self.receiver_timeout = receiver_timeout


# ------------------------------------------------------------------- pure parts

# user_config.json, else the environment: the same order as go2aliyun-cloud
keys_from = user_config.cloud_keys


def decide(receiver_flag, client_data, state_data, has_keys):
    """``"resume"`` (a launch is recorded: go on with it), ``"launch"`` (keys and no
    receiver named) or ``"manual"`` (the receiver is named, or no keys)."""
    if not receiver_flag and (state_data or {}).get("migration_id"):
        return "resume"
    named = receiver_flag or ((client_data or {}).get("receiver") or {}).get("address")
    if named:
        return "manual"
    return "launch" if has_keys else "manual"


def merged_settings(opts, client_data):
    """Flag, else client_data, else the default; also what to remember in client_data."""
    saved = dict((client_data or {}).get("all_in_one") or {})
    out = {}
    for key in SETTING_KEYS:
        value = getattr(opts, key)
        out[key] = value if value not in (None, "") else saved.get(key)
    if not out["instance_type"]:
        out["instance_type"] = DEFAULT_INSTANCE_TYPE
    out["private"] = bool(out["private"])
    for key in NETWORK_KEYS:
        out[key] = (client_data or {}).get(key) or None
    return out


def judge_detected_address(address, private=False):
    """The security group admits only the source's address; a detected private or
    loopback address is what this host sees, not what the cloud sees (NAT). Over a VPC
    intranet (``private``) the VPC sees the private address: it is the right one."""
    ip = ipaddress.ip_address(address)
    if ip.is_loopback or ip.is_link_local or ip.is_unspecified or (
            ip.is_private and not private):
        raise UsageError(
            "this server's outgoing address %s is private: the cloud sees another one "
            "(NAT)" % address, code="usage.source_cidr",
            hint="pass --source-cidr with the public address the server uses to reach "
                 "the internet (or the private one the VPC sees, for a VPC intranet)")
    return address


def release_text(state_data):
    """What ``go2aliyun-cloud cleanup`` would release, from the launch record (pure)."""
    created = state_data.get("created") or {}
    released = state_data.get("released") or {}
    parts = []
    if state_data.get("instance_id") and not released.get("instance"):
        parts.append("instance %s" % state_data["instance_id"])
    for kind, key in (("security_group", "security_group_id"), ("vswitch", "vswitch_id"),
                      ("vpc", "vpc_id")):
        if state_data.get(key) and created.get(kind) and not released.get(kind):
            parts.append("%s %s" % (kind.replace("_", " "), state_data[key]))
    if not state_data.get("image_id"):
        for _, snap in sorted((state_data.get("snapshots") or {}).items()):
            parts.append("snapshot %s" % snap)
    return ", ".join(parts)


# ------------------------------------------------------------------- effects

def detect_source_address(host, port=443):
    """The local address this host uses towards ``host`` (a UDP connect sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, port))
            return s.getsockname()[0]
    except OSError as e:
        raise UsageError("cannot find this server's outgoing address towards %s: %s" % (
            host, e), code="usage.source_cidr",
            hint="pass --source-cidr with the server's public address") from e


def require_cloud_python(workdir, version_info=None):
    """Stop at once, before any cloud call, on a Python the cloud SDK does not run on,
    saying what to run instead and where."""
    version_info = version_info or sys.version_info
    if tuple(version_info[:2]) >= CLOUD_PYTHON:
        return
    raise ConfigError(
        "the all-in-one mode (AccessKeys in user_config.json and no --receiver) launches "
        "the intermediate instance with the Alibaba Cloud SDK, which needs Python %d.%d or "
        "newer; this is Python %d.%d. Nothing was created" % (
            CLOUD_PYTHON + tuple(version_info[:2])), code="config.cloud_python",
        hint="on a machine with Python %d.%d+ (your workstation): pip install "
             "'go2aliyun[cloud]', copy %s there and run `go2aliyun-cloud --workdir DIR "
             "launch --source-cidr THIS_SERVER_ADDRESS`; it prints the address, token and "
             "fingerprint. Then here, with that token in the GO2ALIYUN_TOKEN environment "
             "variable: go2aliyun migrate --workdir %s --receiver ADDRESS --fingerprint "
             "FP" % (
                 CLOUD_PYTHON + (os.path.join(workdir, "user_config.json"), workdir)))


def require_cloud_extra():
    """The cloud side (``image_build``'s cloud, finish, launch and state modules), or an
    error that says exactly what to install."""
    try:
        # lazy: the cloud SDK is optional on the source; only the all-in-one mode needs it
        import alibabacloud_credentials.client  # noqa: F401
        import alibabacloud_ecs20140526.client  # noqa: F401
        import alibabacloud_vpc20160428.client  # noqa: F401

        from image_build import cloud, finish, launch, state
        from image_build.cloud import aliyun  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            "the all-in-one mode (AccessKeys in user_config.json and no --receiver) needs "
            "the cloud extra: %s" % e, code="config.cloud_extra_missing",
            hint="install it with: %s (or start a receiver yourself and pass --receiver, "
                 "--token and --fingerprint)" % CLOUD_EXTRA) from e
    return types.SimpleNamespace(cloud=cloud, finish=finish, launch=launch, state=state)


class AllInOne(object):
    """One migration's launch record (``cloud_state.json``) and what to do with it."""

    def __init__(self, workdir, config, keys, settings, opts, side, echo=None):
        self.workdir = workdir
        self.side = side  # what require_cloud_extra returned
        self.config = config
        self.keys = keys
        self.settings = settings
        self.opts = opts
        self.echo = echo or (lambda text: None)
        self._cloud = None
        self._state = None

    @property
    def state(self):
        if self._state is None:
            self._state = self.side.state.StateFile(os.path.join(self.workdir, STATE_FILE))
        return self._state

    def cloud(self):
        if self._cloud is None:
            if not self.keys:
                raise ConfigError("the launch of this migration is recorded in %s but no "
                                  "AccessKey is given" % self.state.path,
                                  code="config.missing_keys",
                                  hint="put access_id and secret_key back in user_config.json "
                                       "(or set %s and %s)" % (KEY_ID_ENV, KEY_SECRET_ENV))
            key_id, secret, sts = self.keys
            region = self.state.get("region_id") or (self.config.region_id if self.config
                                                     else "")
            self._cloud = self.side.cloud.aliyun_from_settings(
                region, access_key_id=key_id, access_key_secret=secret, security_token=sts,
                endpoint=self.opts.endpoint, protocol=self.opts.protocol,
                poll_interval=self.opts.poll_interval)
        return self._cloud

    def launch_settings(self):
        cfg = self.config
        unsized = [d.index for d in cfg.data_disks if not d.size_gib]
        if unsized:
            raise ConfigError("data disk %s has no data_disk_size" % ", ".join(
                str(i) for i in unsized), code="config.data_disk_size",
                hint="the all-in-one mode must know every target disk's size: set "
                     "data_disk_size in user_config.json")
        s = self.settings
        cidr = s.get("source_cidr")
        if not cidr:
            host = "ecs.%s.aliyuncs.com" % cfg.region_id
            if self.opts.endpoint:
                host = self.opts.endpoint.rsplit(":", 1)[0]
            cidr = judge_detected_address(detect_source_address(host), s["private"])
            self.echo("Admitting this server's address %s to the receiver's ports" % cidr)
        if not s.get("receiver_image"):
            self.echo("No --receiver-image: the intermediate instance starts from the "
                      "region's Debian 12 image and installs the receiver at first boot "
                      "(a few minutes more; --receiver-image is faster)")
        return self.side.launch.LaunchSettings(
            region_id=cfg.region_id, image_name=cfg.image_name,
            receiver_image_id=s.get("receiver_image"), source_cidr=cidr,
            system_disk_size=cfg.system_disk_size or 40,
            data_disks=[(d.index, d.size_gib) for d in cfg.data_disks],
            platform=cfg.platform or "", architecture=cfg.architecture or "x86_64",
            instance_type=s["instance_type"], ram_role=s.get("ram_role"),
            private=s["private"], vpc_id=s.get("vpc_id"), vswitch_id=s.get("vswitch_id"),
            security_group_id=s.get("security_group_id"), reachable_here=True,
            pip_index=s.get("pip_index"), wheel_url=s.get("wheel_url"),
            receiver_timeout=self.opts.receiver_timeout)

    def launch(self):
        """Launch (or resume the launch); returns (address, fingerprint, token)."""
        if self.released():
            raise ConfigError(
                "the intermediate instance recorded in %s was released already"
                % self.state.path, code="config.launch_released",
                hint="to migrate again from the start: run %s`go2aliyun clear` (it puts "
                     "that record aside)" % (
                         "" if not release_text(self.state.data) else
                         "`go2aliyun-cloud cleanup`, then "))
        done = self.launched()
        if done is not None:
            # launched to the end already: by an earlier run, or by
            # `go2aliyun-cloud launch` in this folder (which keeps no launch settings
            # in client_data); its record has all the source needs
            self.echo("Intermediate instance %s (recorded in %s) answers at %s"
                      % (self.state.get("instance_id"), self.state.path, done[0]))
            return done
        settings = self.launch_settings()

        clientdata.update(self.workdir, all_in_one={
            "receiver_image": settings.receiver_image_id, "source_cidr": settings.source_cidr,
            "instance_type": settings.instance_type, "ram_role": settings.ram_role,
            "private": settings.private, "pip_index": self.settings.get("pip_index"),
            "wheel_url": self.settings.get("wheel_url")})
        self.echo("Launching the intermediate instance in %s (all-in-one mode; "
                  "recorded in %s) ..." % (settings.region_id, self.state.path))
        result = self.side.launch.launch(self.cloud(), self.state, settings)
        register_secret(result["token"])
        self.echo("Intermediate instance %s answers at %s" % (result["instance_id"],
                                                              result["address"]))
        return result["address"], result["fingerprint"], result["token"]

    def released(self):
        return bool((self.state.get("released") or {}).get("instance"))

    def launched(self):
        """(address, fingerprint, token) of a launch recorded to its end, else None."""
        tls = self.state.get("tls") or {}
        if self.state.get("status") != "Launched" or not self.state.get("instance_id"):
            return None
        address, token = self.state.get("address"), self.state.get("token")
        if not (address and token and tls.get("fingerprint")):
            return None
        register_secret(token)
        return address, tls["fingerprint"], token

    def image_ready(self, image):
        """Record in the launch record the image the receiver made (so the record reads
        ``Released`` afterwards, and cleanup keeps the image's snapshots)."""
        image_id = image.get("id") if isinstance(image, dict) else image
        if image_id and not self.state.get("image_id"):
            self.state.update(image_id=image_id, image_status="Available",
                              status="ImageReady")

    def release(self):
        """Release what the launch made (resumable); returns a line for the user."""
        what = release_text(self.state.data)
        if what:
            self.echo("Releasing %s ..." % what)
        self.side.finish.release(self.cloud(), self.state, release_network=True)
        return "released: %s" % (what or "nothing left")

    def cleanup_hint(self):
        what = release_text(self.state.data)
        if not what:
            return ""
        return ("the intermediate resources stay for a rerun; to release them instead: "
                "go2aliyun-cloud --workdir %s cleanup (releases %s)" % (self.workdir, what))


def load_state_data(workdir):
    """The launch record as a dict ({} when none), without importing image_build."""
    path = os.path.join(workdir, STATE_FILE)
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except ValueError as e:
        raise ConfigError("%s is not valid JSON: %s" % (path, e), code="config.state_invalid",
                          hint="fix it; it records paid cloud resources") from e
    for key in ("token",):
        if data.get(key):
            register_secret(data[key])
    return data


def forget(workdir):
    """``go2aliyun clear``: forget this folder's all-in-one launch record, keeping it as
    ``cloud_state-<migration id>.json`` (a next migration launches afresh). Refused
    while it records resources not released yet. Returns the kept file's path, or None
    when there was no record."""
    path = os.path.join(workdir, STATE_FILE)
    data = load_state_data(workdir)
    if not data:
        return None
    left = release_text(data)
    if left:
        raise UsageError(
            "%s records cloud resources of migration %s not released yet: %s" % (
                path, data.get("migration_id") or "-", left),
            code="usage.cloud_resources_left",
            hint="release them first: go2aliyun-cloud --workdir %s cleanup; then clear "
                 "again (or keep this migration and run go2aliyun migrate to go on)"
            % workdir)
    kept = os.path.join(workdir, "cloud_state-%s.json" % (data.get("migration_id") or "old"))
    os.replace(path, kept)
    log.info("launch record %s kept as %s", path, kept)
    return kept


def prepare(workdir, config, receiver_flag, client_data, opts, environ=None, echo=None):
    """An :class:`AllInOne` when this run is in the all-in-one mode, else None."""
    environ = os.environ if environ is None else environ
    keys = keys_from(config, environ)
    if keys:
        register_secret(keys[1])
        if keys[2]:
            register_secret(keys[2])
    state_data = load_state_data(workdir)
    mode = decide(receiver_flag, client_data, state_data, bool(keys))
    log.info("receiver mode: %s", mode)
    if mode == "manual":
        return None
    require_cloud_python(workdir)
    return AllInOne(workdir, config, keys, merged_settings(opts, client_data), opts,
                    require_cloud_extra(), echo)
