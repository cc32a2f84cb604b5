"""One small cloud interface (:class:`image_build.cloud.base.Cloud`) and its
implementations. :func:`make_cloud` picks one by name. The Alibaba Cloud SDK is
imported only when an :class:`AliyunCloud` is made (inside ``aliyun`` and
``credentials``): it is heavy and optional on a source or a local receiver."""

from image_build.cloud import credentials
from image_build.cloud.aliyun import AliyunCloud
from image_build.cloud.base import (
    INSTANCE_NAME,
    RECEIVER_PORTS,
    Cloud,
    Disk,
    ImageSpec,
    Instance,
    InstanceSpec,
    client_token,
)
from image_build.cloud.local import LocalCloud
from wire.errors import ConfigError

__all__ = ["Cloud", "Disk", "ImageSpec", "Instance", "InstanceSpec", "INSTANCE_NAME",
           "RECEIVER_PORTS", "client_token", "make_cloud", "aliyun_from_settings"]


def aliyun_from_settings(region_id, access_key_id=None, access_key_secret=None,
                         security_token=None, ram_role=None, use_ram_role=False,
                         endpoint=None, protocol="https", metadata_endpoint=None, **kw):
    """An :class:`~image_build.cloud.aliyun.AliyunCloud` with credentials from an AccessKey,
    an STS token, or (``use_ram_role``) the instance's RAM role via the metadata service."""
    if use_ram_role or (ram_role and not access_key_id):
        cred = credentials.from_ram_role(ram_role, metadata_endpoint=metadata_endpoint)
    else:
        cred = credentials.from_access_key(access_key_id, access_key_secret, security_token)
    if not region_id:
        if not (use_ram_role or ram_role):
            raise ConfigError("region_id is empty", code="config.region_missing",
                              hint="set region_id in user_config.json, e.g. cn-hangzhou")
        region_id = credentials.Metadata(metadata_endpoint).region_id()
    return AliyunCloud(region_id, cred, endpoint=endpoint, protocol=protocol, **kw)


LOCAL_SETTINGS = ("state_dir", "output_dir", "address", "ports", "netns", "memory_mib", "smp",
                  "accel", "verify_images", "verify_timeout", "autostart", "poll_interval")


def make_cloud(provider, **settings):
    if provider == "aliyun":
        return aliyun_from_settings(**settings)
    if provider == "local":
        return LocalCloud(**{k: v for k, v in settings.items()
                             if k in LOCAL_SETTINGS and v is not None})
    raise ConfigError("unknown cloud provider %r" % provider, code="config.provider",
                      hint="use --provider aliyun or --provider local")
