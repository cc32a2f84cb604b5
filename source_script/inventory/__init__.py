"""``go2aliyun inventory``: the manifest of the system to migrate.

``collect(root="/") -> dict`` gathers it (probes run commands through wire.runner,
parsers are pure); ``render_text(manifest) -> str`` shows it to people. The manifest's
contract is ``wire/manifest.schema.json``.
"""

from source_script.inventory.collect import SCHEMA_VERSION, collect
from source_script.inventory.render import render_text

__all__ = ["SCHEMA_VERSION", "collect", "render_text"]
