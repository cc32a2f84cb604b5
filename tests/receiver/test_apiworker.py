"""The control API's worker leans on gthread's event loop (gunicorn 24+): an upgrade
that changes it must fail here, not silently bring back threads that wait on idle
connections. The behaviour itself is tested through the real serve
(tests/receiver/test_serve.py::test_idle_connections_do_not_starve_the_control_api)."""

from receiver import apiworker, cli


def test_the_installed_gunicorn_is_one_the_worker_knows():
    assert apiworker.SUPPORTED


def test_serve_runs_gunicorn_with_this_worker(tmp_path):
    api = dict(cli.child_argvs(str(tmp_path), "0.0.0.0", 8080, 8703))["api"]
    assert api[api.index("--worker-class") + 1] == "receiver.apiworker.ThreadWorker"
