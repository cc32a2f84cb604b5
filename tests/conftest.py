"""Test-wide rules.

* Unit tests cannot run a real external command: ``wire.runner`` refuses unless the
  test carries one of the markers ``commands``, ``root`` or ``qemu``.
* ``root`` and ``qemu`` tests need root (loop devices, mounts, namespaces). CI runs
  as root, so there they always run; elsewhere they are reported as skipped.
* The suite runs on two pytest-xdist workers, a test file on one worker
  (``-n 2 --dist loadfile`` in pyproject.toml). Tests marked ``long(minutes=N)`` are
  collected first, longest first, and xdist keeps that order (``--no-loadscope-reorder``;
  by default it hands out the files with the most tests first), so the two VM cycles
  (about 13 minutes each, one core each under TCG) start together on the two workers
  and the rest follows: no VM cycle is left running alone at the end.
  Tests that run at the same time never meet: each makes its own namespaces, folders,
  ports and loop devices, and checks only what it made.
* The commands tests start by name (``go2aliyun``, ``python3``, ``pip``) are those of the
  Python that runs the tests (see :func:`pytest_configure`).
"""

import os
import sys

import pytest

from tests.fakecloud.fixtures import clock, cloud, fake  # noqa: F401 (fixtures for every test)
from wire import logs, runner

REAL_COMMAND_MARKERS = ("commands", "root", "qemu")


def pytest_configure(config):
    """Put the bin folder of the Python that runs the tests first on PATH, as a venv's
    ``activate`` would. The README's test command is ``.venv/bin/python3 -m pytest`` from
    a new shell, whose PATH finds Debian's python3 (no project, no pytest: PEP 668) or,
    on a developer's machine, another Python (pyenv) whose install of the project may
    point at another checkout: the commands the tests start by name must be this
    checkout's (the ones of ``.venv/bin``, or of the Python a developer runs with
    ``PYTHONPATH=$PWD``)."""
    bindir = os.path.dirname(sys.executable)
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != bindir]
    os.environ["PATH"] = os.pathsep.join([bindir] + path)


@pytest.fixture(autouse=True)
def _forbid_real_commands(request, monkeypatch):
    if any(request.node.get_closest_marker(m) for m in REAL_COMMAND_MARKERS):
        return

    def refuse(argv, *args, **kwargs):
        raise AssertionError(
            "a unit test tried to run a real command: %r; feed the parser captured "
            "output from tests/data/ or mark the test 'commands'/'root'" % (argv,)
        )

    monkeypatch.setattr(runner, "_popen", refuse)


@pytest.fixture(autouse=True)
def _forget_registered_secrets():
    """Secrets registered by one test (a token, a key) must not mask another test's
    output: the registry is process-wide by design."""
    yield
    with logs._lock:
        logs._secrets.clear()


def expected_minutes(item):
    marker = item.get_closest_marker("long")
    return float(marker.kwargs.get("minutes", 1)) if marker else 0.0


def pytest_collection_modifyitems(items):
    """The longest first (a stable sort: the rest keep their order)."""
    items.sort(key=lambda item: -expected_minutes(item))


def pytest_runtest_setup(item):
    needs_root = item.get_closest_marker("root") or item.get_closest_marker("qemu")
    if needs_root and os.geteuid() != 0:
        pytest.skip("needs root (CI runs as root)")
