"""wire/manifest.schema.json: a valid draft 2020-12 schema, the example manifest
(tests/data/manifests/) validates, the documented top-level keys are the schema's,
and bad manifests are refused at the right JSON path."""

import copy
import json
import os
import re

import jsonschema
import pytest

from wire import manifest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(REPO, "tests", "data", "manifests", "debian12-bios.json")


@pytest.fixture(scope="module")
def validator():
    schema = manifest.load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture
def example():
    with open(EXAMPLE) as f:
        return json.load(f)


def test_example_is_valid(validator, example):
    validator.validate(example)
    assert example["schema_version"] == manifest.SCHEMA_VERSION


def test_documented_keys_are_the_schemas():
    with open(os.path.join(REPO, "docs", "ARCHITECTURE.md")) as f:
        doc = f.read()
    m = re.search(r"Top-level keys:\s*`([^`]+)`", doc)
    documented = [k.strip() for k in m.group(1).split(",")]
    assert documented == manifest.top_level_keys()


@pytest.mark.parametrize("path,value,where", [
    (("firmware",), "efi", "firmware"),
    (("schema_version",), 2, "schema_version"),
    (("os", "family"), "arch", "os.family"),
    (("kernels", 0, "virtio", "virtio_blk"), "yes", "kernels.0.virtio.virtio_blk"),
    (("disks", 0, "table"), "mbr", "disks.0.table"),
    (("disks", 0, "partitions", 0, "start_bytes"), -1, "disks.0.partitions.0.start_bytes"),
    (("swap", 0, "kind"), "zram", "swap.0.kind"),
    (("grub", "flavour"), "grub3", "grub.flavour"),
    (("network", "mac_bound", 0, "kind"), "mac", "network.mac_bound.0.kind"),
])
def test_bad_values_are_refused_at_their_path(validator, example, path, value, where):
    bad = copy.deepcopy(example)
    node = bad
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    errors = list(validator.iter_errors(bad))
    assert errors
    assert ".".join(str(p) for p in errors[0].absolute_path) == where


def test_unknown_top_level_key_is_refused(validator, example):
    example["extra"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(example)


def test_missing_key_is_refused(validator, example):
    del example["kernels"]
    with pytest.raises(jsonschema.ValidationError, match="kernels"):
        validator.validate(example)


def test_plan_schema_image_name_pattern_is_the_shared_rule():
    schema = manifest.load_schema(manifest.PLAN_SCHEMA_FILE)
    assert schema["properties"]["image_name"]["pattern"] == manifest.IMAGE_NAME_PATTERN


@pytest.mark.parametrize("name", ["../../x", "/etc", "a/b", "ab\x00c", "ab\n", "ab\ncd", "..",
                                  ".", "a" * 129, "x", "1-bad", ""])
def test_image_names_that_are_not_one_folder_are_refused(name):
    assert manifest.image_name_problem(name) is not None
    assert [p for p, _ in manifest.plan_problems({"image_name": name})] == ["image_name"]


@pytest.mark.parametrize("name", ["CLIENT_IMAGE_CENTOS72_01", "ab", "a" * 128, "Web.01:2-x",
                                  "镜像-01", "a.."])
def test_image_names_of_the_source_rule_pass(name):
    assert manifest.image_name_problem(name) is None
    assert manifest.plan_problems({"image_name": name}) == []
    assert manifest.plan_problems({"image_name": None}) == []
