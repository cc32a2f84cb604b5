"""The documents of the contract. The two the source sends (``PUT /v1/migration/manifest``):
``wire/manifest.schema.json`` (what the server is) and ``wire/plan.schema.json`` (what
the user asked for, from user_config.json); and ``image.json``, which describes a local
image set (:func:`render_image_description`), whoever makes it (the receiver or the local
provider).

``load_schema()`` reads one from the package (works from the zipapp too). The source
side never needs jsonschema; the receiver and the tests validate with it.

The image name is the one rule both ends apply (:func:`image_name_problem`): the source
checks user_config.json with it (``wire/config.py``) and the receiver checks the plan
with it after the schema, because the receiver turns the name into a folder. The plan
schema's ``pattern`` mirrors :data:`IMAGE_NAME_PATTERN` (a test holds them equal); the
check in code also refuses what a JSON Schema ``$`` lets through in Python (a trailing
newline).
"""

import json
import pkgutil
import re

SCHEMA_VERSION = 1
SCHEMA_FILE = "manifest.schema.json"
PLAN_SCHEMA_FILE = "plan.schema.json"


def load_schema(name=SCHEMA_FILE):
    """A JSON Schema (draft 2020-12) of ``wire/``, as a dict: the manifest's by default."""
    data = pkgutil.get_data("wire", name)
    if data is None:
        raise IOError("wire/%s is missing from this installation" % name)
    return json.loads(data.decode("utf-8"))


_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_IMAGE_NAME_FIRST = "[A-Za-z" + _CJK + "]"
_IMAGE_NAME_CHAR = "[A-Za-z0-9" + _CJK + r".:_\-]"
IMAGE_NAME_PATTERN = "^" + _IMAGE_NAME_FIRST + _IMAGE_NAME_CHAR + "{1,127}$"
IMAGE_NAME_RE = re.compile(IMAGE_NAME_PATTERN)
IMAGE_NAME_ALLOWED = ("2-128 characters, starting with an English or Chinese letter, then "
                      "English letters, Chinese characters, digits, '.', ':', '_' or '-'")


def image_name_problem(name):
    """Why ``name`` is not an image name (ECS's rule, and a safe folder name for a local
    image), or None when it is one. No slash, no NUL, no newline, never ``.``/``..``."""
    if not isinstance(name, str):
        return "is not a string"
    if IMAGE_NAME_RE.fullmatch(name):
        return None
    if len(name) < 2:
        return "is too short (%d character)" % len(name)
    if len(name) > 128:
        return "is too long (%d characters)" % len(name)
    if not re.match(_IMAGE_NAME_FIRST, name):
        return "does not start with an English or Chinese letter"
    bad = sorted(set(c for c in name if not re.fullmatch(_IMAGE_NAME_CHAR, c)))
    return "contains %s" % ", ".join(repr(c) if not c.isprintable() else "'%s'" % c
                                     for c in bad)


def plan_problems(plan):
    """The problems the plan schema cannot express, as [(JSON path under the plan,
    message)]: today the image name, the one plan value the receiver makes a path of
    (``null`` lets the receiver name the image after the migration)."""
    name = plan.get("image_name")
    if name is None:
        return []
    why = image_name_problem(name)
    if why is None:
        return []
    return [("image_name", "%s %s; allowed: %s" % (_show(name), why, IMAGE_NAME_ALLOWED))]


def _show(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def top_level_keys():
    """The manifest's top-level keys, in the schema's order."""
    return list(load_schema()["required"])


IMAGE_FILE = "image.json"


def render_image_description(disk_files, **fields):
    """``image.json`` of a local image set (pure): what ECS's CreateImage would get, with
    qcow2 files instead of snapshots. ``disk_files``: [(module, file name, size in GiB or
    None)], the system disk first; ``fields``: image_name, platform, architecture,
    boot_mode and what else describes the set."""
    disks = []
    for n, (module, name, size) in enumerate(disk_files):
        disk = {"module": module, "file": name, "format": "qcow2",
                "device": "/dev/xvd" + chr(ord("a") + n),
                "disk_type": "system" if n == 0 else "data"}
        if size is not None:
            disk["size_gib"] = size
        disks.append(disk)
    return dict(fields, disks=disks)
