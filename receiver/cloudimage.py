"""SNAPSHOTTING and RELEASED with the ``aliyun`` provider, run by the receiver itself
with its RAM role: snapshots and the custom image (``image_build.finish.build_image``),
then the release of its own instance.

This is the receiver's one way into the launcher's cloud code, imported when an
:class:`OnReceiver` is made and not before: the Alibaba Cloud SDK is heavy and optional,
and a receiver on the local provider or in a container never loads it.
"""

import json
import os

from wire.errors import ConfigError

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
        from image_build.cloud import aliyun_from_settings
        from image_build.cloud.credentials import Metadata
        from image_build.state import StateFile

        self._finish = finish
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

    def build_image(self, boot_mode="BIOS", progress=None):
        image = self.config.get("image") or {}
        return self._finish.build_image(self.cloud, self.state, self.state.get("instance_id"),
                           image.get("name"), platform=image.get("platform") or "Others Linux",
                           architecture=image.get("architecture") or "x86_64",
                           boot_mode=boot_mode, disk_names=self.config.get("target_disks"),
                           progress=progress)

    def release_self(self):
        """Delete this very instance (the network, if launch made one, is the launcher's
        to delete: ``go2aliyun-cloud cleanup``)."""
        return self._finish.release(self.cloud, self.state, release_network=False)


def receiver_state_path(state_dir):
    return os.path.join(state_dir, "cloud_state.json")


def on_receiver(ctx):
    """The OnReceiver of this receiver: its cloud.json (``serve --cloud-config``, default
    /etc/go2aliyun/cloud.json) and API endpoints (tests)."""
    api = dict(ctx.config.get("cloud_api") or {})
    return OnReceiver(os.path.join(ctx.store.dir, "cloud_image.json"),
                      cloud_config_path=ctx.config.get("cloud_config") or CLOUD_CONFIG,
                      metadata_endpoint=api.get("metadata_endpoint"),
                      endpoint=api.get("endpoint"), protocol=api.get("protocol") or "https",
                      poll_interval=float(api.get("poll_interval") or 5.0))
