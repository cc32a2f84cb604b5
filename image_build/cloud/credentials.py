"""Where API keys come from: an AccessKey pair, an STS token, or the RAM role of the
instance we run on (through the ECS metadata service), plus a tiny metadata client for
``instance-id`` and ``region-id``.

``metadata_endpoint`` exists for tests: the metadata service is always
``100.100.100.200``; with an endpoint given, requests for it go through that address as
an HTTP proxy (the SDK's own RAM-role provider offers exactly that knob).
The SDK is imported inside the functions that use it: it is heavy and optional.
"""

import urllib.request

from wire.errors import CloudError, ConfigError
from wire.logs import register_secret

METADATA_HOST = "100.100.100.200"


def from_access_key(access_key_id, access_key_secret, security_token=None):
    """An ``alibabacloud_credentials`` client for a static AccessKey (or STS) pair."""
    from alibabacloud_credentials.client import Client
    from alibabacloud_credentials.models import Config

    if not access_key_id or not access_key_secret:
        raise ConfigError("access_id and secret_key are both needed for the cloud API",
                          code="config.missing_keys",
                          hint="put them in user_config.json, or set "
                               "ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET "
                               "(and ALIBABA_CLOUD_SECURITY_TOKEN for an STS token), or, on "
                               "an ECS instance with a RAM role, pass --use-ram-role")
    register_secret(access_key_secret)
    if security_token:
        register_secret(security_token)
        return Client(Config(type="sts", access_key_id=access_key_id,
                             access_key_secret=access_key_secret,
                             security_token=security_token))
    return Client(Config(type="access_key", access_key_id=access_key_id,
                         access_key_secret=access_key_secret))


def from_ram_role(role_name=None, metadata_endpoint=None, timeout_ms=2000):
    """Temporary keys of the instance's RAM role, refreshed by the SDK before they expire."""
    from alibabacloud_credentials.client import Client
    from alibabacloud_credentials.http import HttpOptions
    from alibabacloud_credentials.provider import EcsRamRoleCredentialsProvider

    proxy = "http://" + metadata_endpoint if metadata_endpoint else None
    provider = EcsRamRoleCredentialsProvider(
        role_name=role_name,
        http_options=HttpOptions(proxy=proxy, connect_timeout=timeout_ms,
                                 read_timeout=timeout_ms),
        async_update_enabled=False)
    return Client(provider=provider)


class Metadata(object):
    """``http://100.100.100.200/latest/meta-data/<leaf>`` (IMDSv2 token when offered)."""

    def __init__(self, endpoint=None, timeout=2.0):
        self.endpoint = endpoint
        self.timeout = timeout
        handlers = []
        if endpoint:
            handlers.append(urllib.request.ProxyHandler({"http": "http://" + endpoint}))
        else:
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)
        self._token = None

    def _open(self, req):
        return self._opener.open(req, timeout=self.timeout)  # noqa: S310 - fixed http URL

    def _url(self, path):
        return "http://%s%s" % (METADATA_HOST, path)

    def token(self):
        if self._token is None:
            req = urllib.request.Request(  # noqa: S310 - always http://100.100.100.200
                self._url("/latest/api/token"), method="PUT",
                headers={"X-aliyun-ecs-metadata-token-ttl-seconds": "21600"})
            try:
                with self._open(req) as resp:
                    self._token = resp.read().decode("utf-8").strip()
            except OSError:
                self._token = ""
        return self._token

    def get(self, leaf):
        headers = {}
        token = self.token()
        if token:
            headers["X-aliyun-ecs-metadata-token"] = token
        req = urllib.request.Request(  # noqa: S310 - always http://100.100.100.200
            self._url("/latest/meta-data/" + leaf), headers=headers)
        try:
            with self._open(req) as resp:
                return resp.read().decode("utf-8").strip()
        except OSError as e:
            raise CloudError("the ECS metadata service did not answer %s: %s" % (leaf, e),
                             code="cloud.metadata",
                             hint="this only works on an ECS instance; give the region and "
                                  "instance id explicitly elsewhere") from e

    def instance_id(self):
        return self.get("instance-id")

    def region_id(self):
        return self.get("region-id")

    def ram_role(self):
        return self.get("ram/security-credentials/")
