"""Command-line flags that override ``user_config.json``, shared by ``check`` and
``migrate``.

Each config key has a flag, spelled the modern way and the seed's way:

======================  =====================================================
key                     flags
======================  =====================================================
access_id               ``--access-id``, ``--accessid``
secret_key              ``--secret-key``, ``--secretkey`` (prefer the file or
                        ``ALIBABA_CLOUD_ACCESS_KEY_SECRET``: argv is public)
region_id               ``--region-id``, ``--regionid``
image_name              ``--image-name``, ``--imagename``
system_disk_size        ``--system-disk-size``, ``--systemdisksize``
platform                ``--platform``
architecture            ``--architecture``
bandwidth_limit         ``--bandwidth-limit``, ``--bandwidthlimit``
data_disks              ``--data-disks``, ``--datadisks`` ``idx|size|path;...``
======================  =====================================================

``source_script.cli.config_options`` makes them click options, with the seed's old
flags ``--noenterkey``, ``--progressfile FILE`` and ``--cleardata`` (a ``legacy`` dict).

Flags win over the file; values are merged first and validated together
(:func:`wire.config.from_dict`), so a flag can fix a bad value in the file.
"""

import os

from wire import config as cfg
from wire.errors import ConfigError
from wire.logs import register_secret

# (key, flag names, metavar, help)
FLAGS = (
    ("access_id", ("--access-id", "--accessid"), "ID", "AccessKey ID (all-in-one mode)"),
    ("secret_key", ("--secret-key", "--secretkey"), "SECRET",
     "AccessKey secret; visible in the process list, prefer user_config.json (mode 0600) "
     "or ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
    ("region_id", ("--region-id", "--regionid"), "REGION",
     "region to migrate to, e.g. cn-hangzhou"),
    ("image_name", ("--image-name", "--imagename"), "NAME", "name of the custom image"),
    ("system_disk_size", ("--system-disk-size", "--systemdisksize"), "GIB",
     "system disk size in GiB (20-500)"),
    ("platform", ("--platform",), "PLATFORM",
     "case-sensitive: " + " | ".join(cfg.PLATFORMS)),
    ("architecture", ("--architecture",), "ARCH", "i386 | x86_64"),
    ("bandwidth_limit", ("--bandwidth-limit", "--bandwidthlimit"), "KBPS",
     "bandwidth limit in KB/s, 0 = none"),
    ("data_disks", ("--data-disks", "--datadisks"), "IDX|SIZE|PATH;...",
     "data disks, e.g. '1|100|/mnt/disk1;2|150|/mnt/disk2' (empty: none)"),
)
INT_KEYS = ("system_disk_size", "bandwidth_limit")
ENV_ACCESS_ID = "ALIBABA_CLOUD_ACCESS_KEY_ID"
ENV_SECRET = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"  # noqa: S105 - a variable name


def _flag(key):
    for k, names, _m, _h in FLAGS:
        if k == key:
            return names[0]
    return "--" + key


def parse_data_disks(text, flag="--data-disks"):
    """``'1|100|/mnt/disk1;2||/data'`` -> the ``data_disks`` list of user_config.json.
    An empty size means "not given". Pure."""
    disks = []
    for n, item in enumerate(t for t in text.split(";") if t.strip()):
        parts = item.strip().split("|")
        if len(parts) != 3:
            raise ConfigError(
                "%s: item %d %s has %d field%s; allowed: idx|size|path items separated by ';', "
                "e.g. '1|100|/mnt/disk1;2|150|/mnt/disk2'"
                % (flag, n + 1, cfg.show(item), len(parts), "" if len(parts) == 1 else "s"),
                code="config.invalid")
        idx, size, path = (p.strip() for p in parts)
        disk = {"src_path": path}
        for key, raw in (("data_disk_index", idx), ("data_disk_size", size)):
            if raw == "":
                continue
            try:
                disk[key] = int(raw)
            except ValueError:
                raise ConfigError(
                    "%s: item %d %s: %s %s is not an integer; allowed: idx 1-16, size "
                    "20-32768 (GiB)" % (flag, n + 1, cfg.show(item), key, cfg.show(raw)),
                    code="config.invalid") from None
        disks.append(disk)
    return disks


def parse_overrides(overrides):
    """Turn flag strings into config values: ``{key: value}`` plus the origin of each.
    Pure."""
    values, origins = {}, {}
    for key, raw in overrides.items():
        if key not in cfg.KEYS:
            raise ConfigError("unknown override %r; allowed: %s" % (key, ", ".join(cfg.KEYS)),
                              code="config.invalid")
        flag = _flag(key)
        origins[key] = flag
        if key in INT_KEYS and isinstance(raw, str):
            try:
                values[key] = int(raw.strip())
            except ValueError:
                lo_hi = ("20-500 (GiB)" if key == "system_disk_size"
                         else ">= 0 (KB/s, 0 = no limit)")
                raise ConfigError("%s (%s): %s is not an integer; allowed: an integer %s"
                                  % (flag, key, cfg.show(raw), lo_hi),
                                  code="config.invalid") from None
        elif key == "data_disks" and isinstance(raw, str):
            values[key] = parse_data_disks(raw, flag)
        else:
            values[key] = raw
    return values, origins


def effective_config(config_path, overrides, environ=None):
    """The configuration ``check`` and ``migrate`` work with: ``config_path`` (None: no
    file, start from the seed's template) with ``overrides`` (flag values) on top, then
    the AccessKey from ``ALIBABA_CLOUD_ACCESS_KEY_ID``/``_SECRET`` where both are still
    empty. Returns a validated :class:`wire.config.Config`."""
    environ = os.environ if environ is None else environ
    if config_path is not None:
        data = cfg.read_file(config_path)
        secret = data.get("secret_key")
        if isinstance(secret, str):
            register_secret(secret)
    else:
        data = dict(cfg.TEMPLATE)
    values, origins = parse_overrides(overrides or {})
    data.update(values)
    if not data.get("access_id") and not data.get("secret_key") \
            and environ.get(ENV_ACCESS_ID) and environ.get(ENV_SECRET):
        register_secret(environ[ENV_SECRET])
        data["access_id"] = environ[ENV_ACCESS_ID]
        data["secret_key"] = environ[ENV_SECRET]
        origins["access_id"] = ENV_ACCESS_ID
        origins["secret_key"] = ENV_SECRET
    return cfg.from_dict(data, path=config_path, origins=origins)


def resolve_config_path(config_path, workdir):
    """``--config`` when given (it must exist), else ``WORKDIR/user_config.json`` when it
    exists, else None (flags and the template only)."""
    if config_path:
        return config_path
    default = os.path.join(workdir or ".", cfg.CONFIG_NAME)
    return default if os.path.exists(default) else None
