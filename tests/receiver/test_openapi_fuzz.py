"""Fuzz the control API from its OpenAPI document (schemathesis, in-process WSGI):
no 5xx, no crash, answers that match the document. Bounded to a few examples per
call so it takes seconds.

Then hostile strings in every string field of every request body (receiver/openapi.yaml),
through the Flask test client with a valid session: path traversal, NUL, a lone
surrogate, a newline, a 1 MB string, and a deeply nested JSON body. The receiver must
answer each with a JSON body and never with a 5xx. The manifest has many string fields
repeated in lists: each field is taken once, at its first occurrence
(``disks[0].partitions[0].path`` stands for every partition's path)."""

import json
import os
import shutil
from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from receiver import app as app_mod
from receiver import state as st
from receiver import tls, tokens
from tests.receiver.conftest import Api, der_of, load_manifest, make_csr, sample_plan


class WithPeerCert(object):
    """Present the migration's client certificate, as gunicorn's TLS socket would."""

    def __init__(self, app, der):
        self.app = app
        self.der = der

    def __call__(self, environ, start_response):
        environ[app_mod.TEST_PEER_KEY] = self.der
        return self.app(environ, start_response)


@pytest.fixture
def api_schema(tmp_path):
    d = str(tmp_path / "state")
    store = st.Store(d)
    store.ensure()
    tls.ensure_ca(d)
    store.write("config.json", {"target_roots": {"system": str(tmp_path / "sys")}})
    app = app_mod.create_app({"STATE_DIR": d, "TESTING_PEER_CERT": True})
    tok = tokens.new_token(store)
    r = app.test_client().post("/v1/session", json={"token": tok, "csr": make_csr()[1]})
    assert r.status_code == 201
    wsgi = WithPeerCert(app.wsgi_app, der_of(r.get_json()["client_certificate"]))
    app.wsgi_app = wsgi
    return schemathesis.openapi.from_wsgi("/v1/openapi.yaml", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_never_fails_with_5xx(case):
    case.call_and_validate(checks=[checks.not_a_server_error,
                                   checks.status_code_conformance,
                                   checks.content_type_conformance,
                                   checks.response_schema_conformance])


# ---------------------------------------------------------------- hostile strings

HOSTILE = {
    "traversal": "../../x",
    "absolute": "/etc",
    "nul": "a\x00b",
    "surrogate": "\ud800",
    "newline": "a\nb",
    "huge": "x" * (1 << 20),
}
DEEP = b"[" * 100000 + b"]" * 100000

def string_paths(value, path=()):
    """The paths to the string leaves of ``value``, one per shape (list index 0 stands
    for every index)."""
    seen = {}

    def walk(x, p):
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, p + (k,))
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, p + (i,))
        elif isinstance(x, str):
            seen.setdefault(tuple("*" if isinstance(e, int) else e for e in p), p)

    walk(value, path)
    return list(seen.values())


def replaced(value, path, new):
    value = json.loads(json.dumps(value))
    target = value
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return value


def manifest_body():
    return {"manifest": load_manifest(), "plan": sample_plan()}


# (method, path, body maker) of every call with a JSON body after the session
OPERATIONS = [
    ("PUT", "/v1/migration/manifest", manifest_body),
    ("POST", "/v1/migration/prepare", dict),
    ("POST", "/v1/migration/syncs", lambda: {"final": False}),
    ("POST", "/v1/migration/syncs/1/finished",
     lambda: {"stats": {"system": {"bytes": 1, "files": 1}}}),
    ("POST", "/v1/migration/finalize", dict),
    ("POST", "/v1/migration/retry", dict),
]


def field_cases():
    cases = []
    for method, url, make in OPERATIONS:
        body = make()
        for path in string_paths(body) + [("go2aliyun_extra",)]:  # an undeclared field too
            cases.append(pytest.param(method, url, make, path, id="%s-%s" % (
                url.rsplit("/", 1)[1], ".".join(map(str, path)))))
    return cases


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch):
    """Hundreds of state writes: durability is not what these tests are about, and
    fsync on a busy disk made them take minutes."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A state folder with a session traded: (folder, client certificate DER)."""
    base = tmp_path_factory.mktemp("hostile")
    d = str(base / "state")
    store = st.Store(d)
    store.ensure()
    tls.ensure_ca(d, addresses=["127.0.0.1"])
    store.write("config.json", {"target_roots": {"system": str(base / "sys"),
                                                 "disk1": str(base / "d1")},
                                "data_port": 8703})
    app = app_mod.create_app({"STATE_DIR": d, "TESTING": True, "TESTING_PEER_CERT": True})
    r = app.test_client().post("/v1/session", json={"token": tokens.new_token(store),
                                                    "csr": make_csr()[1]})
    assert r.status_code == 201
    return d, der_of(r.get_json()["client_certificate"])


def fresh_app(template, d):
    """An app on a copy of the template's state, so every case starts alike."""
    shutil.copytree(template[0], d)
    app = app_mod.create_app({"STATE_DIR": d, "TESTING": True, "TESTING_PEER_CERT": True})
    return app, Api(app.test_client(), template[1]), st.Store(d)


@pytest.fixture
def fresh(template, tmp_path):
    return fresh_app(template, str(tmp_path / "state"))


def assert_json_answer(r):
    assert r.status_code < 500, (r.status_code, r.get_data()[:300])
    body = r.get_json(silent=True)
    assert body is not None, r.get_data()[:300]
    if r.status_code >= 400:
        assert set(body) == {"error"} and body["error"].get("code"), body


@pytest.mark.parametrize("method,url,make,path", field_cases())
def test_hostile_strings_in_a_body_field(template, tmp_path, method, url, make, path):
    """Each hostile value in turn; a fresh state after an answer that changed it."""
    api, bad = None, {}
    for n, name in enumerate(sorted(HOSTILE)):
        if api is None:
            _, api, _ = fresh_app(template, str(tmp_path / str(n)))
        r = api.open(method, url, json=replaced(make(), path, HOSTILE[name]))
        try:
            assert_json_answer(r)
        except AssertionError as e:
            bad[name] = str(e)[:300]
        if r.status_code < 400:
            api = None
    assert not bad, bad


@pytest.mark.parametrize("field,name", [
    pytest.param(field, name, id="%s-%s" % (field, name))
    for field in ("token", "csr") for name in sorted(HOSTILE)])
def test_hostile_string_in_the_session_call(fresh, field, name):
    app, _, store = fresh
    body = {"token": tokens.new_token(store), "csr": make_csr()[1]}
    body[field] = HOSTILE[name]
    assert_json_answer(app.test_client().post("/v1/session", json=body))


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_key_in_sync_stats(fresh, name):
    _, api, _ = fresh
    body = {"stats": {HOSTILE[name]: {"bytes": 1, "files": 1}}}
    assert_json_answer(api.post("/v1/migration/syncs/1/finished", json=body))


@pytest.mark.parametrize("name", ["traversal", "absolute", "newline"])
def test_hostile_sync_number_in_the_path(fresh, name):
    _, api, _ = fresh
    url = "/v1/migration/syncs/%s/finished" % quote(HOSTILE[name], safe="")
    assert_json_answer(api.post(url, json={}))


@pytest.mark.parametrize("method,url", [("POST", "/v1/session")] + [
    (method, url) for method, url, _ in OPERATIONS])
def test_deeply_nested_json_body(fresh, method, url):
    _, api, _ = fresh
    assert_json_answer(api.open(method, url, data=DEEP, content_type="application/json"))
