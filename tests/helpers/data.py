"""Captured real output (tests/data/inventory/, made by
``python3 -m tests.source_script.inventory.layouts capture``) and the fixture trees
(tests/data/trees/<name>/), for every test that reads them."""

import os

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(TESTS, "data")
CAPTURES = os.path.join(DATA, "inventory")
TREES = os.path.join(DATA, "trees")


def captured(name, mode="r"):
    with open(os.path.join(CAPTURES, name), mode) as f:
        return f.read()


def tree_file(tree, rel):
    with open(os.path.join(TREES, tree, rel.lstrip("/"))) as f:
        return f.read()
