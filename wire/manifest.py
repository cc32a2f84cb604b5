"""The manifest contract (source -> receiver): ``wire/manifest.schema.json``.

``load_schema()`` reads it from the package (works from the zipapp too). The source
side never needs jsonschema; the receiver and the tests validate with it.
"""

import json
import pkgutil

SCHEMA_VERSION = 1
SCHEMA_FILE = "manifest.schema.json"


def load_schema():
    """The JSON Schema (draft 2020-12) of the manifest, as a dict."""
    data = pkgutil.get_data("wire", SCHEMA_FILE)
    if data is None:
        raise IOError("wire/%s is missing from this installation" % SCHEMA_FILE)
    return json.loads(data.decode("utf-8"))


def top_level_keys():
    """The manifest's top-level keys, in the schema's order."""
    return list(load_schema()["required"])
