"""The two documents the source sends (``PUT /v1/migration/manifest``):
``wire/manifest.schema.json`` (what the server is) and ``wire/plan.schema.json`` (what
the user asked for, from user_config.json).

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
