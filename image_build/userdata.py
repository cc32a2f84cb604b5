"""Render the intermediate instance's cloud-init user-data from ``cloud-init/``
(pure: values in, text out)."""

import base64
import json
import os
import string

from wire.errors import ConfigError

MAX_USER_DATA = 32 * 1024
_HERE = os.path.dirname(os.path.abspath(__file__))
CLOUD_INIT_DIR = os.environ.get("GO2ALIYUN_CLOUD_INIT_DIR") or os.path.join(
    os.path.dirname(_HERE), "cloud-init")
TEMPLATE = "user-data.yaml.tmpl"
UNIT = "go2aliyun-receiver.service"
RECEIVER_STATE = "/var/lib/go2aliyun"


def _b64(text):
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _read(name, folder):
    path = os.path.join(folder, name)
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        raise ConfigError("cannot read %s: %s" % (path, e), code="config.cloud_init_missing",
                          hint="set GO2ALIYUN_CLOUD_INIT_DIR to the cloud-init/ folder of "
                               "go2aliyun") from e


def render_user_data(certificate, key, tokens_json, cloud_config, folder=None):
    """``tokens_json``: the receiver's token file (hashes only, never the token).
    ``cloud_config``: what the receiver needs to build the image itself (migration id,
    region, RAM role, image settings); never an AccessKey."""
    folder = folder or CLOUD_INIT_DIR
    for forbidden in ("access_key_secret", "secret_key", "access_id"):
        if forbidden in cloud_config:
            raise ValueError("cloud_config must not carry %s" % forbidden)
    text = string.Template(_read(TEMPLATE, folder)).substitute(
        state_dir=RECEIVER_STATE, tokens_json_b64=_b64(tokens_json),
        certificate_b64=_b64(certificate), key_b64=_b64(key),
        cloud_json_b64=_b64(json.dumps(cloud_config, sort_keys=True, indent=1)),
        unit_b64=_b64(_read(UNIT, folder)))
    size = len(text.encode("utf-8"))
    if size > MAX_USER_DATA:
        raise ConfigError("the user-data is %d bytes; ECS accepts at most %d" % (
            size, MAX_USER_DATA), code="config.user_data_too_large")
    return text
