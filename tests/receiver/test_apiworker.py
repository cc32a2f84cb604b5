"""The control API's worker leans on gthread's event loop (gunicorn 25.2+): an upgrade
that changes it must fail here, not silently bring back threads that wait on idle
connections. The behaviour itself is tested through the real serve
(tests/receiver/test_serve.py::test_idle_connections_do_not_starve_the_control_api)."""

import os
import re

from gunicorn import http
from gunicorn import sock as gsock
from gunicorn.workers import gthread

from receiver import cli

HERE = os.path.dirname(os.path.abspath(__file__))


def test_the_installed_gunicorn_is_one_the_worker_knows():
    for owner, name in ((gthread.ThreadWorker, "murder_pending"),
                        (gthread.ThreadWorker, "enqueue_req"),
                        (gthread.TConn, "wait_for_data"), (http, "get_parser"),
                        (gsock, "ssl_context")):
        assert hasattr(owner, name), (owner, name)


def test_pyproject_asks_for_the_gunicorn_whose_loop_the_worker_uses():
    """gunicorn 25.2 brought pending_conns/murder_pending (25.1 and 24.x have not)."""
    with open(HERE + "/../../pyproject.toml") as f:
        text = f.read()
    assert re.findall(r'"gunicorn[^"]*"', text) == ['"gunicorn>=25.2"']


def test_serve_runs_gunicorn_with_this_worker(tmp_path):
    api = dict(cli.child_argvs(str(tmp_path), "0.0.0.0", 8080, 8703))["api"]
    assert api[api.index("--worker-class") + 1] == "receiver.apiworker.ThreadWorker"
