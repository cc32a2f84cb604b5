"""Static checks that run with the suite: ruff over the tree, and the minimum Python
version of the code that runs on the source (source_script/ and wire/ must run on
Python 3.6, the python3 of CentOS 7 / Ubuntu 18.04)."""

import os
import sys

import pytest

from wire import runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.commands
def test_ruff_clean():
    r = runner.run([sys.executable, "-m", "ruff", "check", "--no-cache", ROOT], ok_codes=None)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.commands
def test_source_side_runs_on_python36():
    r = runner.run(
        [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())",
         "--no-tips", "--violations", "--eval-annotations",
         "-t=3.6-", "--backport", "typing", os.path.join(ROOT, "source_script"),
         os.path.join(ROOT, "wire")],
        ok_codes=None,
    )
    assert r.returncode == 0, r.stdout + r.stderr
