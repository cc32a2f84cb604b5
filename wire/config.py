"""``user_config.json``: load, merge with flag overrides, validate.

Exactly the seed's fields, types, ranges and rules (see
``../shared/seed/cloud-migration-tool.md``, Step 2):

=================  =======  ===========================================================
key                type     rule
=================  =======  ===========================================================
access_id          string   AccessKey ID; only needed in all-in-one mode
secret_key         string   AccessKey secret; never printed, never sent to the receiver
region_id          string   e.g. ``cn-hangzhou``; needed with ``access_id``
image_name         string   required; 2-128 characters, starts with an English or Chinese
                            letter; letters, Chinese characters, digits, ``. : _ -``
system_disk_size   integer  GiB, 20-500 (default 40)
platform           string   case-sensitive, one of :data:`PLATFORMS`; empty = detect
architecture       string   ``i386`` or ``x86_64``; empty = detect
bandwidth_limit    integer  KB/s, >= 0, 0 = no limit
data_disks         array    at most 16 of {data_disk_index 1-16 unique (default 1),
                            data_disk_size 20-32768 GiB, src_path}
=================  =======  ===========================================================

``src_path`` is required, never ``/``, ``/root`` or a system directory, and no data
disk path lies inside another. What can only be judged against the source (a path that
is not a mount point, sizes against used space, a Windows platform on a Linux source)
is checked by :mod:`source_script.check`.

Every problem names the field, the bad value and what is allowed; all problems of one
file are reported at once (:class:`wire.errors.ConfigError`, exit code 3). The secret
is registered with :func:`wire.logs.register_secret` as soon as it is read and is shown
as ``<hidden>`` in every message.
"""

import difflib
import fnmatch
import json
import os
import posixpath
import re

from wire.errors import ConfigError
from wire.logs import register_secret
from wire.manifest import IMAGE_NAME_ALLOWED, image_name_problem

CONFIG_NAME = "user_config.json"

PLATFORMS = (
    "Windows Server 2003", "Windows Server 2008", "Windows Server 2012",
    "Windows Server 2016", "CentOS", "Ubuntu", "SUSE", "OpenSUSE", "Debian", "RedHat",
    "Others Linux",
)
WINDOWS_PLATFORMS = tuple(p for p in PLATFORMS if p.startswith("Windows"))
ARCHITECTURES = ("i386", "x86_64")

SYSTEM_DISK_GIB = (20, 500)
DATA_DISK_GIB = (20, 32768)
DATA_DISK_INDEX = (1, 16)
MAX_DATA_DISKS = 16
DEFAULT_SYSTEM_DISK_GIB = 40

# The seed: "It cannot be the /root directory or system directories, such as /bin,
# /boot, /dev, /etc, /lib, /lib64, /sbin, /usr or /var." (and / itself).
FORBIDDEN_SRC_PATHS = ("/", "/root", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64",
                       "/sbin", "/usr", "/var", "/proc", "/sys", "/run")
# Nothing inside these can be a data disk either: boot files and pseudo filesystems.
FORBIDDEN_SRC_TREES = ("/boot", "/dev", "/proc", "/sys", "/run")

# The seed's initial file (Step 2), written by `go2aliyun init`.
TEMPLATE = {
    "access_id": "",
    "secret_key": "",
    "region_id": "region",
    "image_name": "",
    "system_disk_size": DEFAULT_SYSTEM_DISK_GIB,
    "platform": "",
    "architecture": "",
    "bandwidth_limit": 0,
    "data_disks": [],
}
KEYS = tuple(TEMPLATE)
DISK_KEYS = ("data_disk_index", "data_disk_size", "src_path")

HIDDEN = "<hidden>"
REGION_RE = re.compile(r"^[a-z]{2,}(-[a-z0-9]+)+$")
WINDOWS_DRIVE_RE = re.compile(r"^[A-Za-z]:\\?$")


class DataDisk(object):
    """One entry of ``data_disks``: target disk ``index`` (1-16) of ``size_gib`` GiB
    (None: as large as the source filesystem) filled from ``src_path``."""

    __slots__ = ("index", "size_gib", "src_path")

    def __init__(self, index, size_gib, src_path):
        self.index = index
        self.size_gib = size_gib
        self.src_path = src_path

    @property
    def name(self):
        """The rsync module / filter-list key of this disk: ``disk<index>``."""
        return "disk%d" % self.index

    def to_dict(self):
        return {"index": self.index, "size_gib": self.size_gib, "src_path": self.src_path}

    def __repr__(self):
        return "DataDisk(%r, %r, %r)" % (self.index, self.size_gib, self.src_path)


# Where the cloud API keys come from when user_config.json has none (the SDK's names).
KEY_ID_ENV = "ALIBABA_CLOUD_ACCESS_KEY_ID"
KEY_SECRET_ENV = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"  # noqa: S105 - a variable name
STS_TOKEN_ENV = "ALIBABA_CLOUD_SECURITY_TOKEN"  # noqa: S105 - a variable name


def cloud_keys(config, environ):
    """``(access_key_id, secret, sts_token)`` for the cloud API, or None: the pair in
    user_config.json, else the pair in the environment (never one of each). The one
    order for ``go2aliyun`` and ``go2aliyun-cloud``."""
    if config is not None and config.access_id and config.secret_key:
        return config.access_id, config.secret_key, None
    key_id, secret = environ.get(KEY_ID_ENV), environ.get(KEY_SECRET_ENV)
    if key_id and secret:
        return key_id, secret, environ.get(STS_TOKEN_ENV) or None
    return None


class Config(object):
    """A validated ``user_config.json`` (after flag overrides)."""

    def __init__(self, access_id="", secret_key="", region_id="", image_name="",
                 system_disk_size=DEFAULT_SYSTEM_DISK_GIB, platform=None, architecture=None,
                 bandwidth_limit=0, data_disks=(), path=None, origins=None):
        self.access_id = access_id
        self.secret_key = secret_key
        self.region_id = region_id
        self.image_name = image_name
        self.system_disk_size = system_disk_size
        self.platform = platform
        self.architecture = architecture
        self.bandwidth_limit = bandwidth_limit
        self.data_disks = list(data_disks)
        self.path = path
        self.origins = dict(origins or {})

    @property
    def all_in_one(self):
        """True when the config carries AccessKeys (the seed's flow: launch the
        intermediate instance from here)."""
        return bool(self.access_id and self.secret_key)

    @property
    def is_windows(self):
        return self.platform in WINDOWS_PLATFORMS

    def to_dict(self, secrets=False):
        """The config as user_config.json keys; ``secret_key`` is ``<hidden>`` unless
        ``secrets``."""
        return {
            "access_id": self.access_id,
            "secret_key": self.secret_key if secrets else (HIDDEN if self.secret_key else ""),
            "region_id": self.region_id,
            "image_name": self.image_name,
            "system_disk_size": self.system_disk_size,
            "platform": self.platform or "",
            "architecture": self.architecture or "",
            "bandwidth_limit": self.bandwidth_limit,
            "data_disks": [{"data_disk_index": d.index, "data_disk_size": d.size_gib,
                            "src_path": d.src_path} for d in self.data_disks],
        }

    def __repr__(self):
        return "Config(%r)" % (self.to_dict(),)


class Problem(object):
    """One rejected value: ``field`` (``data_disks[1].src_path``), the bad ``value``
    (already made printable), what is wrong and what is ``allowed``."""

    __slots__ = ("field", "value", "problem", "allowed")

    def __init__(self, field, value, problem, allowed):
        self.field = field
        self.value = value
        self.problem = problem
        self.allowed = allowed

    def __str__(self):
        return "%s: %s %s; allowed: %s" % (self.field, self.value, self.problem, self.allowed)

    def to_dict(self):
        return {"field": self.field, "value": self.value, "problem": self.problem,
                "allowed": self.allowed}


def _secret_like(field):
    f = field.lower().replace("_", "").replace("-", "")
    return any(w in f for w in ("secret", "password", "passwd", "token", "accesskey"))


def show(value, field=""):
    """How a bad value is quoted in a message (never the secret, nor the value of a
    key that looks like one, such as a misspelt ``secretkey``)."""
    if _secret_like(str(field)):
        if isinstance(value, str):
            register_secret(value)
        return HIDDEN
    if isinstance(value, str):
        return "'%s'" % value if len(value) <= 200 else "'%s...'" % value[:200]
    return json.dumps(value, ensure_ascii=False)[:200]


# bool before int: True is an int too
_TYPE_NAMES = ((type(None), "null"), (bool, "a boolean"), (int, "an integer"),
               (float, "a number with a fraction"), (str, "a string"), (list, "an array"))


def _type_name(value):
    return next((name for t, name in _TYPE_NAMES if isinstance(value, t)), "an object")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


# ---------------------------------------------------------------------------- loading

def read_file(path):
    """Read ``path`` as a JSON object and return the dict. Malformed JSON is a
    :class:`ConfigError` naming the line and column (never quoting the line: it may
    hold the secret)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(
            "%s not found" % path, code="config.missing",
            hint="create it with `go2aliyun init --workdir DIR` or name it with --config",
        ) from None
    except OSError as e:
        raise ConfigError("cannot read %s: %s" % (path, e.strerror), code="config.unreadable",
                          hint="check the file's permissions (run as root)") from e
    try:
        text = raw.decode("utf-8-sig")  # editors on Windows add a BOM
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError(
            "%s: line %d: bytes that are not UTF-8" % (path, line), code="config.encoding",
            hint="save the file as UTF-8",
        ) from e
    try:
        data = json.loads(text)
    except ValueError as e:
        lineno = getattr(e, "lineno", None)
        colno = getattr(e, "colno", None)
        msg = getattr(e, "msg", str(e))
        raise ConfigError(
            "%s: malformed JSON at line %s, column %s: %s" % (path, lineno, colno, msg),
            code="config.malformed", line=lineno, column=colno,
            hint="fix the JSON syntax (RFC 7159): double quotes around keys and strings, "
                 "commas between items, no comma after the last one",
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            "%s: the top level is %s; allowed: a JSON object {...} with the keys %s"
            % (path, _type_name(data), ", ".join(KEYS)), code="config.invalid",
        )
    return data


def load(path):
    """Read and validate ``path``. Returns a :class:`Config`."""
    return from_dict(read_file(path), path=path)


def from_dict(data, path=None, origins=None):
    """Validate the dict ``data`` (user_config.json keys) and return a :class:`Config`;
    raise one :class:`ConfigError` listing every problem. ``origins`` maps a key to
    where its value came from (a flag) for the messages."""
    secret = data.get("secret_key")
    if isinstance(secret, str):
        register_secret(secret)
    config, problems = validate(data, path=path, origins=origins)
    if problems:
        raise_problems(problems, path=path)
    return config


def raise_problems(problems, path=None):
    where = path or "the configuration"
    lines = ["  - %s" % p for p in problems]
    raise ConfigError(
        "%s has %d problem%s:\n%s" % (where, len(problems), "" if len(problems) == 1 else "s",
                                      "\n".join(lines)),
        code="config.invalid", problems=[p.to_dict() for p in problems],
        hint="fix the values named above in %s or with the matching flags" % CONFIG_NAME,
    )


# ---------------------------------------------------------------------------- rules

def _label(key, origins):
    origin = (origins or {}).get(key)
    return "%s (from %s)" % (key, origin) if origin else key


def validate(data, path=None, origins=None):
    """Pure: return ``(Config or None, [Problem, ...])`` for the dict ``data``."""
    problems = []
    add = problems.append

    for key in data:
        if key not in KEYS:
            close = difflib.get_close_matches(key.lower() if isinstance(key, str) else "",
                                              KEYS, n=1)
            add(Problem(key, show(data[key], str(key)), "is not a key of %s" % CONFIG_NAME,
                        ("did you mean '%s'? " % close[0] if close else "")
                        + "the keys are " + ", ".join(KEYS)))

    def get(key):
        return data.get(key, TEMPLATE[key] if key != "region_id" else "")

    strings = {}
    for key in ("access_id", "secret_key", "region_id", "image_name", "platform",
                "architecture"):
        value = get(key)
        if value is None:
            value = ""
        if not isinstance(value, str):
            add(Problem(_label(key, origins), show(value, key),
                        "is %s" % _type_name(value), "a string"))
            value = ""
        strings[key] = value.strip() if key != "secret_key" else value

    access_id = strings["access_id"]
    secret_key = strings["secret_key"]
    if bool(access_id) != bool(secret_key):
        missing, given = ("secret_key", "access_id") if access_id else ("access_id", "secret_key")
        add(Problem(_label(missing, origins), "''",
                    "is empty while %s is set" % given,
                    "both access_id and secret_key (all-in-one mode) or neither "
                    "(a receiver started by other means)"))

    region = strings["region_id"]
    if region == TEMPLATE["region_id"] and not (access_id or secret_key):
        region = ""  # the template's placeholder; only all-in-one mode needs a region
    if region and not REGION_RE.match(region):
        add(Problem(_label("region_id", origins), show(region),
                    "is not an Alibaba Cloud region id",
                    "a region id such as cn-hangzhou, cn-shanghai or ap-southeast-1"))
    elif access_id and secret_key and not region:
        add(Problem(_label("region_id", origins), "''", "is empty but access_id is set",
                    "the region to migrate to, such as cn-hangzhou"))

    name = strings["image_name"]
    if not name:
        add(Problem(_label("image_name", origins), "''", "is empty (it is required)",
                    IMAGE_NAME_ALLOWED))
    elif image_name_problem(name) is not None:
        add(Problem(_label("image_name", origins), show(name), image_name_problem(name),
                    IMAGE_NAME_ALLOWED))

    platform = strings["platform"] or None
    if platform is not None and platform not in PLATFORMS:
        alike = [p for p in PLATFORMS
                 if p.lower().replace(" ", "") == platform.lower().replace(" ", "")]
        hint = "did you mean '%s'? (the value is case-sensitive) " % alike[-1] if alike else ""
        add(Problem(_label("platform", origins), show(platform), "is not a platform",
                    hint + "one of " + " | ".join(PLATFORMS)
                    + ", or empty to use the detected one"))
        platform = None

    arch = strings["architecture"] or None
    if arch is not None and arch not in ARCHITECTURES:
        add(Problem(_label("architecture", origins), show(arch), "is not an architecture",
                    "i386 | x86_64, or empty to use the detected one"))
        arch = None

    system_disk_size = _int_in_range(
        get("system_disk_size"), _label("system_disk_size", origins), SYSTEM_DISK_GIB, "GiB",
        add, default=DEFAULT_SYSTEM_DISK_GIB)

    bw = get("bandwidth_limit")
    if bw is None:
        bw = 0
    if not _is_int(bw):
        add(Problem(_label("bandwidth_limit", origins), show(bw), "is %s" % _type_name(bw),
                    "an integer >= 0 (KB/s; 0 means no limit)"))
        bw = 0
    elif bw < 0:
        add(Problem(_label("bandwidth_limit", origins), show(bw), "is negative",
                    "an integer >= 0 (KB/s; 0 means no limit)"))

    disks = _validate_disks(get("data_disks"), _label("data_disks", origins), platform, add)

    if problems:
        return None, problems
    return Config(access_id=access_id, secret_key=secret_key, region_id=region,
                  image_name=name, system_disk_size=system_disk_size, platform=platform,
                  architecture=arch, bandwidth_limit=bw, data_disks=disks, path=path,
                  origins=origins), []


def _int_in_range(value, field, bounds, unit, add, default=None):
    lo, hi = bounds
    allowed = "an integer from %d to %d (%s)" % (lo, hi, unit)
    if value is None and default is not None:
        return default
    if not _is_int(value):
        add(Problem(field, show(value), "is %s" % _type_name(value), allowed))
        return None
    if not lo <= value <= hi:
        add(Problem(field, show(value), "is out of range", allowed))
        return None
    return value


def _validate_disks(value, field, platform, add):
    if value is None:
        return []
    if not isinstance(value, list):
        add(Problem(field, show(value), "is %s" % _type_name(value),
                    "an array of {data_disk_index, data_disk_size, src_path} objects"))
        return []
    if len(value) > MAX_DATA_DISKS:
        add(Problem(field, "%d entries" % len(value), "is too long",
                    "at most %d data disks" % MAX_DATA_DISKS))
    windows = platform in WINDOWS_PLATFORMS
    disks = []
    for i, item in enumerate(value):
        f = "data_disks[%d]" % i
        if not isinstance(item, dict):
            add(Problem(f, show(item), "is %s" % _type_name(item),
                        "an object {data_disk_index, data_disk_size, src_path}"))
            continue
        for key in item:
            if key not in DISK_KEYS:
                close = difflib.get_close_matches(str(key), DISK_KEYS, n=1)
                add(Problem("%s.%s" % (f, key), show(item[key]), "is not a data disk key",
                            ("did you mean '%s'? " % close[0] if close else "")
                            + "the keys are " + ", ".join(DISK_KEYS)))
        index = item.get("data_disk_index", 1)
        index = _int_in_range(index, f + ".data_disk_index", DATA_DISK_INDEX, "disk number",
                              add, default=1)
        size = item.get("data_disk_size")
        if size is not None:
            size = _int_in_range(size, f + ".data_disk_size", DATA_DISK_GIB, "GiB", add)
        src = item.get("src_path")
        src = _validate_src_path(src, f + ".src_path", windows, add)
        disks.append(DataDisk(index, size, src))

    seen = {}
    for i, d in enumerate(disks):
        if d.index is None:
            continue
        if d.index in seen:
            add(Problem("data_disks[%d].data_disk_index" % i, show(d.index),
                        "is already used by data_disks[%d]" % seen[d.index],
                        "each data disk a different index from 1 to 16 (the default is 1: "
                        "give every disk its own data_disk_index)"))
        else:
            seen[d.index] = i
    paths = [(i, d.src_path) for i, d in enumerate(disks) if d.src_path]
    for i, p in paths:
        for j, q in paths:
            if i == j:
                continue
            if p == q and i > j:
                add(Problem("data_disks[%d].src_path" % i, show(p),
                            "is also data_disks[%d].src_path" % j,
                            "a different folder for each data disk"))
            elif not windows and p != q and q.startswith(p.rstrip("/") + "/"):
                add(Problem("data_disks[%d].src_path" % j, show(q),
                            "lies inside data_disks[%d].src_path %s" % (i, show(p)),
                            "data disk paths that do not contain one another"))
    return disks


def _validate_src_path(src, field, windows, add):
    if src is None or src == "":
        add(Problem(field, show(src if src is not None else ""), "is missing (it is required)",
                    "the mount point of the source data disk, such as /mnt/disk1"
                    + (" (or a drive letter such as D: for Windows)" if windows else "")))
        return None
    if not isinstance(src, str):
        add(Problem(field, show(src), "is %s" % _type_name(src),
                    "a path string such as /mnt/disk1"))
        return None
    if windows:
        if not WINDOWS_DRIVE_RE.match(src):
            add(Problem(field, show(src), "is not a drive letter",
                        "a drive letter such as D:, E: or F: for a Windows platform"))
            return None
        if src[0].upper() == "C":
            add(Problem(field, show(src), "is the system drive",
                        "a data drive letter such as D:, E: or F:"))
            return None
        return src[:2].upper()
    if not src.startswith("/"):
        add(Problem(field, show(src), "is not an absolute path",
                    "an absolute path such as /%s" % src.lstrip("./")))
        return None
    norm = posixpath.normpath(src)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    if norm in FORBIDDEN_SRC_PATHS or any(norm.startswith(t + "/") for t in FORBIDDEN_SRC_TREES):
        what = ("is the root directory" if norm == "/" else
                "is /root" if norm == "/root" else "is a system directory")
        add(Problem(field, show(src), what,
                    "a data disk mount point such as /mnt/disk1 or /data; never "
                    + ", ".join(FORBIDDEN_SRC_PATHS) + " or a folder inside "
                    + ", ".join(FORBIDDEN_SRC_TREES)))
        return None
    return norm


# ---------------------------------------------------------------------------- the plan

# os-release ID (an fnmatch pattern) -> the seed's platform name
PLATFORM_BY_ID = {
    "centos": "CentOS", "ubuntu": "Ubuntu", "debian": "Debian", "rhel": "RedHat",
    "redhat": "RedHat", "sles": "SUSE", "sled": "SUSE", "sles_sap": "SUSE",
    "opensuse*": "OpenSUSE",
}
ARCH_BY_UNAME = {"x86_64": "x86_64", "amd64": "x86_64", "i386": "i386", "i486": "i386",
                 "i586": "i386", "i686": "i386"}
GIB = 1024 ** 3


def detect_platform(manifest):
    """The seed's platform name for the source's OS (``Others Linux`` when the seed
    has none), or None without an OS id."""
    os_ = (manifest or {}).get("os") or {}
    oid = (os_.get("id") or "").lower()
    if not oid:
        return None
    return next((name for pattern, name in PLATFORM_BY_ID.items()
                 if fnmatch.fnmatchcase(oid, pattern)), "Others Linux")


def detect_architecture(manifest):
    """``i386`` or ``x86_64`` from the manifest's ``arch`` (uname -m), else None."""
    return ARCH_BY_UNAME.get(((manifest or {}).get("arch") or "").lower())


def default_data_disk_size(size_bytes):
    """The size of a data disk when ``data_disk_size`` is not set: the source
    filesystem's size in whole GiB, at least 20."""
    if not size_bytes:
        return None
    return min(DATA_DISK_GIB[1], max(DATA_DISK_GIB[0], -(-int(size_bytes) // GIB)))


def build_plan(config, filters, manifest=None):
    """Pure: the plan the receiver gets with the manifest (no AccessKey, no region):
    ``{image_name, platform, architecture, system_disk_size, bandwidth_limit,
    data_disks: [{index, size_gib, src_path}], filters}``, data disks by index. With
    ``manifest``, an unset platform, architecture or data disk size is filled in from
    the source (the detected OS, uname -m, the size of the filesystem at src_path)."""
    fs_size = {fs["mountpoint"]: fs.get("size_bytes")
               for fs in (manifest or {}).get("filesystems") or [] if fs.get("mountpoint")}
    disks = [{"index": d.index,
              "size_gib": default_data_disk_size(fs_size.get(d.src_path))
              if d.size_gib is None else d.size_gib,
              "src_path": d.src_path} for d in sorted(config.data_disks, key=lambda d: d.index)]
    return {
        "image_name": config.image_name,
        "platform": config.platform or detect_platform(manifest),
        "architecture": config.architecture or detect_architecture(manifest),
        "system_disk_size": config.system_disk_size,
        "bandwidth_limit": config.bandwidth_limit,
        "data_disks": disks,
        "filters": {k: list(v) for k, v in (filters or {}).items()},
    }


# ---------------------------------------------------------------------------- template

def template_text():
    """The seed's initial user_config.json."""
    return json.dumps(TEMPLATE, indent=4) + "\n"


def write_template(path):
    """Write the initial user_config.json (mode 0600: it will hold the secret) unless
    ``path`` exists. Returns True when written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(template_text())
    return True
