"""SNAPSHOTTING and RELEASED with the ``aliyun`` provider, run by the receiver itself
with its RAM role: snapshots and the custom image (``image_build.finish.build_image``),
then the release of its own instance.

This is the receiver's one way into the launcher's cloud code, imported when an
:class:`OnReceiver` is made and not before: the Alibaba Cloud SDK is heavy and optional,
and a receiver on the local provider or in a container never loads it.
"""

import contextlib
import json
import logging
import os

from wire.errors import CloudError, ConfigError, Go2AliyunError

log = logging.getLogger(__name__)

CLOUD_CONFIG = "/etc/go2aliyun/cloud.json"


class OnReceiver(object):
    """What the receiver's worker calls in SNAPSHOTTING (``build_image``) and, once the
    source has the image id, to release its own instance (``release_self``).

    ``cloud.json`` (written by launch through user-data) names the migration, region,
    RAM role, image settings and target disks; the instance id comes from the metadata
    service; the progress is kept in ``state_path`` (in the receiver's state folder)."""

    def __init__(self, state_path, cloud_config_path=CLOUD_CONFIG, metadata_endpoint=None,
                 endpoint=None, protocol="https", **cloud_kw):
        # the one seam from the receiver to the launcher's cloud code, lazy: the cloud
        # SDK is heavy and optional (a local or container receiver never loads it)
        from image_build import finish
        from image_build.cloud import aliyun_from_settings, ramrole
        from image_build.cloud.credentials import Metadata
        from image_build.state import StateFile

        self._finish = finish
        self._ramrole = ramrole
        try:
            with open(cloud_config_path) as f:
                self.config = json.load(f)
        except (OSError, ValueError) as e:
            raise ConfigError("cannot read %s: %s" % (cloud_config_path, e),
                              code="config.cloud_config",
                              hint="this receiver was not started by `go2aliyun-cloud "
                                   "launch`; build the image with `go2aliyun-cloud finish` "
                                   "on the operator's machine") from e
        self.metadata = Metadata(metadata_endpoint)
        self.cloud = aliyun_from_settings(
            self.config.get("region_id"), ram_role=self.config.get("ram_role"),
            use_ram_role=True, endpoint=endpoint, protocol=protocol,
            metadata_endpoint=metadata_endpoint, **cloud_kw)
        self.state = StateFile(state_path)
        if not self.state.get("migration_id"):
            self.state.update(migration_id=self.config["migration_id"],
                              instance_id=self.metadata.instance_id())

    def check_role(self):
        """DryRun the calls of the policy (``image_build/receiver-ram-policy.json``) as
        this instance's RAM role: raises ``cloud.ram_role_too_narrow`` naming what is
        missing, logs a warning when the role is detectably broader."""
        check = self._ramrole.check_receiver_role(self.cloud, self.state.get("instance_id"))
        for warning in check.warnings():
            log.warning("%s", warning)
        check.require()
        return check

    def build_image(self, boot_mode="BIOS", progress=None):
        image = self.config.get("image") or {}
        with self._role_hint():
            return self._finish.build_image(
                self.cloud, self.state, self.state.get("instance_id"), image.get("name"),
                platform=image.get("platform") or "Others Linux",
                architecture=image.get("architecture") or "x86_64", boot_mode=boot_mode,
                disk_names=self.config.get("target_disks"), progress=progress)

    def release_self(self):
        """Delete this very instance (the network, if launch made one, is the launcher's
        to delete: ``go2aliyun-cloud cleanup``)."""
        with self._role_hint():
            return self._finish.release(self.cloud, self.state, release_network=False)

    @contextlib.contextmanager
    def _role_hint(self):
        """A refused call here is the RAM role's doing, not an AccessKey's: name the
        policy the role needs instead of the launcher's hint (AliyunECSFullAccess)."""
        try:
            yield
        except CloudError as e:
            if e.details.get("api_code") in self._ramrole.DENIED_CODES:
                e.hint = "the receiver's RAM role may not call ecs:%s: attach the policy %s " \
                         "to it" % (e.details.get("action"), self._ramrole.POLICY_NAME)
            raise


def receiver_state_path(state_dir):
    return os.path.join(state_dir, "cloud_state.json")


def on_receiver(ctx):
    """The OnReceiver of this receiver: its cloud.json (``serve --cloud-config``, default
    /etc/go2aliyun/cloud.json) and API endpoints (tests)."""
    return from_config(ctx.store.dir, ctx.config)


def check_role_at_start(state_dir, config):
    """``serve`` with the ``aliyun`` provider: check the RAM role before any data comes.
    A missing action raises ``cloud.ram_role_too_narrow`` (serve stops; systemd starts
    it again, so fixing the role in the RAM console is enough). Anything else (API or
    metadata service unreachable) is only a warning: SNAPSHOTTING will meet it and say."""
    try:
        return from_config(state_dir, config).check_role()
    except CloudError as e:
        if e.code == "cloud.ram_role_too_narrow":
            raise
        log.warning("could not check the RAM role at start: %s", e)
    except (Go2AliyunError, KeyError, OSError) as e:  # e.g. cloud.json without an id
        log.warning("could not check the RAM role at start: %s", e)
    return None


def from_config(state_dir, config):
    api = dict(config.get("cloud_api") or {})
    return OnReceiver(os.path.join(state_dir, "cloud_image.json"),
                      cloud_config_path=config.get("cloud_config") or CLOUD_CONFIG,
                      metadata_endpoint=api.get("metadata_endpoint"),
                      endpoint=api.get("endpoint"), protocol=api.get("protocol") or "https",
                      poll_interval=float(api.get("poll_interval") or 5.0))
