"""Test-wide rules.

* Unit tests cannot run a real external command: ``wire.runner`` refuses unless the
  test carries one of the markers ``commands``, ``root`` or ``qemu``.
* ``root`` and ``qemu`` tests need root (loop devices, mounts, namespaces). CI runs
  as root, so there they always run; elsewhere they are reported as skipped.
"""

import os

import pytest

from tests.fakecloud.fixtures import clock, cloud, fake  # noqa: F401 (fixtures for every test)
from wire import logs, runner

REAL_COMMAND_MARKERS = ("commands", "root", "qemu")


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


def pytest_runtest_setup(item):
    needs_root = item.get_closest_marker("root") or item.get_closest_marker("qemu")
    if needs_root and os.geteuid() != 0:
        pytest.skip("needs root (CI runs as root)")
