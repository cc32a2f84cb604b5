"""Fuzz the control API from its OpenAPI document (schemathesis, in-process WSGI):
no 5xx, no crash, answers that match the document. Bounded to a few examples per
call so it takes seconds."""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from receiver import app as app_mod
from receiver import state as st
from receiver import tls, tokens
from tests.receiver.conftest import der_of, make_csr


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
