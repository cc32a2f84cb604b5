"""The documents of the contract. The two the source sends (``PUT /v1/migration/manifest``):
``wire/manifest.schema.json`` (what the server is) and ``wire/plan.schema.json`` (what
the user asked for, from user_config.json); and ``image.json``, which describes a local
image set (:func:`render_image_description`), whoever makes it (the receiver or the local
provider).

``load_schema()`` reads one from the package (works from the zipapp too). The source
side never needs jsonschema; the receiver and the tests validate with it.
"""

import json
import pkgutil

SCHEMA_VERSION = 1
SCHEMA_FILE = "manifest.schema.json"
PLAN_SCHEMA_FILE = "plan.schema.json"


def load_schema(name=SCHEMA_FILE):
    """A JSON Schema (draft 2020-12) of ``wire/``, as a dict: the manifest's by default."""
    data = pkgutil.get_data("wire", name)
    if data is None:
        raise IOError("wire/%s is missing from this installation" % name)
    return json.loads(data.decode("utf-8"))


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
