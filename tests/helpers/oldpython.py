"""The Python 3.6 that old servers (CentOS 7, Ubuntu 18.04) have, for the tests of the
source side as shipped to them: pyenv's 3.6 on the CI machine, or a system one."""

import glob
import os

import pytest


def python36():
    """Path of a Python 3.6 interpreter, or None."""
    found = sorted(glob.glob("/root/.pyenv/versions/3.6*/bin/python3.6")) + [
        p for p in ("/usr/bin/python3.6", "/usr/local/bin/python3.6") if os.path.exists(p)]
    return found[0] if found else None


# CI's machine has one (the main run exercises these tests); a stock Debian root (the
# set-up test's quick suite) has none, and skips them there.
needs_python36 = pytest.mark.skipif(python36() is None, reason="no python3.6 on this machine")
