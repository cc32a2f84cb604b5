"""Render the intermediate instance's cloud-init user-data from ``cloud-init/``
(pure: values in, text out).

Two kinds of instance get it: one started from the receiver appliance image (the
receiver is installed; the user-data hands it its identity), and one started from the
region's stock Debian 12 image (the one-step way, no prepared image): its user-data
also carries the install steps, the SAME ones ``build-image`` runs
(:func:`render_install_files`: the settings file and ``cloud-init/appliance-build.sh``
with :data:`RECEIVER_PACKAGES`), which install the receiver at first boot before it starts.
"""

import base64
import json
import os
import re
import shlex
import string
from importlib import metadata

from wire.errors import ConfigError, UsageError

MAX_USER_DATA = 32 * 1024
_HERE = os.path.dirname(os.path.abspath(__file__))
CLOUD_INIT_DIR = os.environ.get("GO2ALIYUN_CLOUD_INIT_DIR") or os.path.join(
    os.path.dirname(_HERE), "cloud-init")
TEMPLATE = "user-data.yaml.tmpl"
UNIT = "go2aliyun-receiver.service"
RECEIVER_STATE = "/var/lib/go2aliyun"

# What the receiver itself needs on any Debian 12 (python, rsync, the disk and
# boot-repair tools): installed by debootstrap for the local appliance
# (image_build/dev/appliance.py) and by apt on an ECS Debian 12 instance
# (cloud-init/appliance-build.sh, run by build-image and by the one-step launch). ONE list.
RECEIVER_PACKAGES = (
    # python3-cffi-backend: provides the virtual package python3-cryptography needs,
    # which debootstrap's resolver does not pick by itself
    "cloud-init", "python3-cffi-backend", "python3", "python3-venv", "rsync", "fdisk",
    "util-linux", "e2fsprogs", "xfsprogs", "dosfstools", "mtools", "lvm2", "grub-pc-bin",
    "grub-efi-amd64-bin", "openssl", "qemu-utils", "iproute2", "bubblewrap",
)
# What only a disk made from nothing needs to boot (an ECS base image has it already).
BOOT_PACKAGES = (
    "linux-image-amd64", "grub-pc", "systemd-sysv", "initramfs-tools", "udev", "kmod",
    "ifupdown", "isc-dhcp-client", "netbase",
)
# Where pip gets go2aliyun and its dependencies on the instance: Alibaba's PyPI mirror,
# over the internet; with no public address (VPC intranet) its VPC-internal name, which
# every VPC reaches without a NAT gateway (plain http, so pip is told to trust that host).
DEFAULT_PIP_INDEX = "https://mirrors.aliyun.com/pypi/simple/"
INTRANET_PIP_INDEX = "http://mirrors.cloud.aliyuncs.com/pypi/simple/"
INSTALL_SCRIPT = "appliance-build.sh"
INSTALL_COMMAND = "/usr/local/sbin/go2aliyun-appliance-build"
SETTINGS_PATH = "/etc/go2aliyun/appliance-build.env"
# The one line the install script prints on the serial console (what
# GetInstanceConsoleOutput returns): "ready <version>" or "failed: <reason>".
MARKER = "go2aliyun-appliance:"
_MARKER_RE = re.compile(r"go2aliyun-appliance: (ready (\S+)|failed: (.*))\s*$")
# The receiver's start line on the console (receiver/cli.py serve; its unit sends stdout
# to the console too): it names the certificate fingerprint.
RECEIVER_BANNER = "go2aliyun-receiver:"
CONSOLE_TAIL_LINES = 20


def own_version():
    """The version of the go2aliyun that runs this (what an instance installs by default)."""
    return metadata.version("go2aliyun")


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


def check_url(flag, value):
    if value and not re.match(r"^https?://[^\s'\"]+$", value):
        raise UsageError("%s %r is not an http(s) URL" % (flag, value),
                         hint="e.g. %s" % DEFAULT_PIP_INDEX)


class InstallSettings(object):
    """What the install script installs: go2aliyun ``version`` from ``pip_index`` (or the
    wheel at ``wheel_url``, its dependencies still from the index)."""

    def __init__(self, version=None, pip_index=None, wheel_url=None):
        self.version = version or own_version()
        self.pip_index = pip_index or DEFAULT_PIP_INDEX
        self.wheel_url = wheel_url or ""
        if not re.match(r"^[0-9][0-9A-Za-z.+!-]*$", self.version):
            raise UsageError("--version %r is not a package version" % self.version,
                             hint="e.g. 0.1.0")
        check_url("--pip-index", self.pip_index)
        check_url("--wheel-url", self.wheel_url)


def render_settings(install):
    """The install script's settings file (pure): shell assignments, every value quoted."""
    values = [("G2A_VERSION", install.version), ("G2A_PIP_INDEX", install.pip_index),
              ("G2A_WHEEL_URL", install.wheel_url),
              ("G2A_PACKAGES", " ".join(RECEIVER_PACKAGES))]
    return "".join("%s=%s\n" % (k, shlex.quote(v)) for k, v in values)


def _file_entry(path, permissions, content):
    return ('  - path: %s\n    owner: root:root\n    permissions: "%s"\n    encoding: b64\n'
            "    content: %s\n" % (path, permissions, _b64(content)))


def render_install_files(install, folder=None):
    """The ``write_files`` entries of the install steps (settings, then the script), as
    cloud-config text; the same for build-image and the one-step launch."""
    folder = folder or CLOUD_INIT_DIR
    return (_file_entry(SETTINGS_PATH, "0644", render_settings(install))
            + _file_entry(INSTALL_COMMAND, "0755", _read(INSTALL_SCRIPT, folder)))


INSTALL_RUNCMD = "  - [%s]\n" % INSTALL_COMMAND


def check_size(text, what="user-data"):
    size = len(text.encode("utf-8"))
    if size > MAX_USER_DATA:
        raise ConfigError("the %s is %d bytes; ECS accepts at most %d" % (
            what, size, MAX_USER_DATA), code="config.user_data_too_large",
            hint="shorten cloud-init/" + INSTALL_SCRIPT)
    return text


def render_user_data(certificate, key, tokens_json, cloud_config, folder=None, install=None):
    """``tokens_json``: the receiver's token file (hashes only, never the token).
    ``cloud_config``: what the receiver needs to build the image itself (migration id,
    region, RAM role, image settings); never an AccessKey. ``install``: an
    :class:`InstallSettings` when the instance runs a stock Debian 12 image (the receiver
    is installed first), None for the receiver appliance image."""
    folder = folder or CLOUD_INIT_DIR
    for forbidden in ("access_key_secret", "secret_key", "access_id"):
        if forbidden in cloud_config:
            raise ValueError("cloud_config must not carry %s" % forbidden)
    text = string.Template(_read(TEMPLATE, folder)).substitute(
        state_dir=RECEIVER_STATE, tokens_json_b64=_b64(tokens_json),
        certificate_b64=_b64(certificate), key_b64=_b64(key),
        cloud_json_b64=_b64(json.dumps(cloud_config, sort_keys=True, indent=1)),
        unit_b64=_b64(_read(UNIT, folder)),
        install_files=render_install_files(install, folder) if install else "",
        install_runcmd=INSTALL_RUNCMD if install else "")
    return check_size(text)


# ------------------------------------------------------------------ the console

def parse_marker(console):
    """The install's verdict in the console text (pure): ``("ready", version)``,
    ``("failed", reason)`` or None when there is no marker line yet. The last one counts."""
    verdict = None
    for line in console.splitlines():
        m = _MARKER_RE.search(line.replace("\r", ""))
        if m:
            verdict = ("ready", m.group(2)) if m.group(2) else ("failed", m.group(3).strip())
    return verdict


def _plain_fingerprint(text):
    return (text or "").replace(":", "").strip().lower()


def receiver_started(console, fingerprint):
    """True when the console shows the receiver's start line with ``fingerprint`` (pure):
    the receiver with the identity the launcher made is serving."""
    want = _plain_fingerprint(fingerprint)
    for line in console.splitlines():
        if RECEIVER_BANNER not in line:
            continue
        if want in (_plain_fingerprint(m) for m in re.findall(r"[0-9A-Fa-f:]{64,}", line)):
            return True
    return False


def console_tail(console, lines=CONSOLE_TAIL_LINES):
    return "\n".join(console.replace("\r", "").rstrip("\n").splitlines()[-lines:])
