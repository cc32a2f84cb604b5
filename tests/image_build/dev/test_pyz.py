"""The one-file zipapp: built with ``python3 -m image_build.dev.pyz``, it bundles click 7.1.2
and runs the source script (``--help``, ``inventory --json --root TREE``), also on the
oldest Python the source side supports when that interpreter is on this machine."""

import json
import os
import sys
import zipfile

import pytest

from image_build.dev import pyz
from tests.helpers.oldpython import python36
from wire import runner

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TREE = os.path.join(REPO, "tests", "data", "trees", "debian12")
pytestmark = pytest.mark.commands


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("pyz") / "go2aliyun.pyz")
    r = runner.run([sys.executable, "-m", "image_build.dev.pyz", "-o", out], cwd=REPO, timeout=300)
    assert r.stdout.strip() == out
    return out


def interpreters():
    out = [pytest.param(sys.executable, id="python%d.%d" % sys.version_info[:2])]
    old = python36()
    out.append(pytest.param(old, id="python3.6", marks=pytest.mark.skipif(
        old is None, reason="no python3.6 on this machine")))
    return out


def test_bundles_click_712_and_the_packages(app):
    with zipfile.ZipFile(app) as z:
        names = set(z.namelist())
        init = z.read("click/__init__.py").decode()
    assert '__version__ = "7.1.2"' in init
    assert {"__main__.py", "source_script/cli.py", "source_script/inventory/collect.py",
            "wire/runner.py", "wire/manifest.schema.json"} <= names
    assert not [n for n in names if "__pycache__" in n or n.startswith("tests/")]
    with open(app, "rb") as f:
        assert f.readline() == b"#!/usr/bin/env python3\n"


@pytest.mark.parametrize("python", interpreters())
def test_help(app, python):
    r = runner.run([python, app, "--help"], cwd="/", timeout=60)
    assert "inventory" in r.stdout and "Usage: go2aliyun" in r.stdout


@pytest.mark.parametrize("python", interpreters())
def test_inventory_json_of_a_tree(app, python):
    import jsonschema

    r = runner.run([python, app, "inventory", "--json", "--root", TREE], cwd="/", timeout=120)
    m = json.loads(r.stdout)
    with open(os.path.join(REPO, "wire", "manifest.schema.json")) as f:
        jsonschema.Draft202012Validator(json.load(f)).validate(m)
    assert m["os"]["id"] == "debian" and m["root"] == TREE
    assert m["grub"]["version"] == "2.06" and len(m["kernels"]) == 3


@pytest.mark.parametrize("python", interpreters())
def test_non_ascii_text_under_the_c_locale(app, python, tmp_path):
    # runner.run sets LC_ALL=C: on Python 3.6 click 7 would refuse to start, and an
    # ASCII stdout could not print this hostname.
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "hostname").write_bytes("café-01\n".encode("utf-8"))
    r = runner.run([python, app, "inventory", "--root", str(tmp_path)], cwd="/", timeout=60)
    assert "Host:      café-01" in r.stdout


def test_bad_root_is_a_usage_error(app):
    r = runner.run([sys.executable, app, "inventory", "--root", "/nonexistent-g2a"],
                   cwd="/", ok_codes=None, timeout=60)
    assert r.returncode == 2 and "/nonexistent-g2a" in r.stderr


def test_wheel_is_checked(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / pyz.CLICK_WHEEL).write_bytes(b"not a wheel")
    # a tampered cache is replaced by a fresh download, which matches the pin
    path = pyz.ensure_click_wheel(str(cache))
    assert pyz._sha256(path) == pyz.CLICK_SHA256
