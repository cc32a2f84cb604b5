"""Shared helpers for the inventory tests: captured real output (tests/data/inventory/,
made by ``python3 -m tests.source_script.inventory.layouts capture``) and the
fixture trees (tests/data/trees/<name>/)."""

import pytest

from tests.helpers.data import captured
from wire.manifest import load_schema


def validate(manifest):
    import jsonschema

    jsonschema.Draft202012Validator(load_schema()).validate(manifest)


@pytest.fixture
def no_host_probes(monkeypatch):
    """Stub the probes that read this host (mount table, rsync) with captured output,
    so collect() over a fixture tree sees no disks and a known rsync."""
    from source_script.inventory import probes

    mountinfo = captured("mbr.mountinfo.txt")
    monkeypatch.setattr(probes, "read_mountinfo", lambda: mountinfo)
    rsync = captured("host.rsync-version.txt")
    monkeypatch.setattr(probes, "run_rsync_version", lambda: ("/usr/bin/rsync", rsync))
    return probes
