import json

import pytest

from receiver import app as app_mod
from receiver import tls, tokens, worker
from tests.receiver.conftest import Api, der_of, load_manifest, make_csr, sample_plan
from wire import logs, proof


def err(r):
    body = r.get_json()
    assert set(body) == {"error"}, body
    return body["error"]


def test_healthz_says_only_ok(anon):
    r = anon.get("/healthz")
    assert r.status_code == 200 and r.get_json() == {"status": "ok"}


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/migration"), ("PUT", "/v1/migration/manifest"),
    ("POST", "/v1/migration/prepare"), ("POST", "/v1/migration/syncs"),
    ("POST", "/v1/migration/syncs/1/finished"), ("POST", "/v1/migration/finalize"),
    ("POST", "/v1/migration/retry"), ("GET", "/v1/openapi.yaml"), ("GET", "/v1/nothing"),
])
def test_every_v1_call_but_session_needs_the_client_certificate(anon, method, path):
    r = anon.open(method, path, json={})
    assert r.status_code == 401
    assert err(r)["code"] == "auth.client_certificate_required"


def test_proof_shows_the_token_is_known_without_spending_it(app, store):
    """POST /v1/session/proof: no client certificate; one proof per token over our own
    certificate for the caller's nonce (wire/proof.py); nothing spent or counted."""
    tok, other = tokens.new_token(store), tokens.new_token(store)
    with open(tls.cert_path(store.dir), "rb") as f:
        der = der_of(f.read().decode("ascii"))
    c = app.test_client()
    nonce = proof.new_nonce()
    r = c.post("/v1/session/proof", json={"nonce": nonce})
    assert r.status_code == 200, r.get_json()
    proofs = r.get_json()["proofs"]
    assert len(proofs) == 2
    assert proof.check_proofs(tok, nonce, der, proofs)
    assert proof.check_proofs(other, nonce, der, proofs)
    assert not proof.check_proofs(tok, proof.new_nonce(), der, proofs)
    assert not proof.check_proofs("x" * 32, nonce, der, proofs)
    assert tok not in r.get_data(as_text=True)
    data = store.read(tokens.TOKEN_FILE)
    assert all(t["used_at"] is None for t in data["tokens"]) and data["failures"] == {}
    for bad in ({}, {"nonce": "00"}, {"nonce": "G" * 64}, {"nonce": nonce.upper()},
                {"nonce": 7}):
        r = c.post("/v1/session/proof", json=bad)
        assert r.status_code == 400 and err(r)["code"] == "request.invalid", bad
        assert "'nonce'" in err(r)["message"]


def test_session_trades_token_for_certificate_once(app, store, roots):
    tok = tokens.new_token(store)
    key, csr = make_csr()
    c = app.test_client()
    r = c.post("/v1/session", json={"token": tok, "csr": csr})
    assert r.status_code == 201
    body = r.get_json()
    assert body["migration_id"] == store.load()["id"]
    assert body["data_port"] == 8703
    assert body["modules"]["system"] == {"module": "system", "path": roots["system"]}
    assert "BEGIN CERTIFICATE" in body["ca_certificate"]
    api = Api(c, der_of(body["client_certificate"]))
    assert api.get("/v1/migration").status_code == 200
    again = c.post("/v1/session", json={"token": tok, "csr": make_csr()[1]})
    assert again.status_code == 401 and err(again)["code"] == "auth.token_used"


def test_session_errors(app, store):
    c = app.test_client()
    tok = tokens.new_token(store)
    r = c.post("/v1/session", json={"token": "wrong", "csr": make_csr()[1]})
    assert r.status_code == 401 and err(r)["code"] == "auth.token_invalid"
    # a bad CSR is refused before the token is looked at, and does not spend it
    r = c.post("/v1/session", json={"token": tok, "csr": "garbage"})
    assert r.status_code == 400 and err(r)["code"] == "request.invalid"
    for bad in ([1], "text", {"token": tok}, {"csr": "x"}, {"token": 5, "csr": "x"}):
        r = c.post("/v1/session", data=json.dumps(bad), content_type="application/json")
        assert r.status_code == 400 and err(r)["code"] == "request.invalid", bad
    r = c.post("/v1/session", data=b"{", content_type="application/json")
    assert r.status_code == 400 and err(r)["code"] == "request.invalid"
    r = c.post("/v1/session", data=b"x" * (app_mod.MAX_SESSION_BODY + 1))
    assert r.status_code == 413 and err(r)["code"] == "request.too_large"
    assert c.post("/v1/session", json={"token": tok, "csr": make_csr()[1]}).status_code == 201


def test_session_expired_token(app, store):
    tok = tokens.new_token(store, ttl=1, now=1.0)
    r = app.test_client().post("/v1/session", json={"token": tok, "csr": make_csr()[1]})
    assert r.status_code == 401 and err(r)["code"] == "auth.token_expired"


def test_session_throttled_with_retry_after(app, store):
    c = app.test_client()
    for _ in range(tokens.FREE_FAILURES):
        assert c.post("/v1/session", json={"token": "no", "csr": make_csr()[1]}
                      ).status_code == 401
    r = c.post("/v1/session", json={"token": "no", "csr": make_csr()[1]})
    assert r.status_code == 429 and err(r)["code"] == "auth.throttled"
    assert int(r.headers["Retry-After"]) >= 1


def test_session_throttle_is_per_peer_address(app, store):
    c = app.test_client()
    guesser = {"REMOTE_ADDR": "203.0.113.9"}
    for _ in range(tokens.FREE_FAILURES + 1):
        c.post("/v1/session", json={"token": "no", "csr": make_csr()[1]}, environ_base=guesser)
    r = c.post("/v1/session", json={"token": "no", "csr": make_csr()[1]}, environ_base=guesser)
    assert r.status_code == 429 and err(r)["code"] == "auth.throttled"
    tok = tokens.new_token(store)
    r = c.post("/v1/session", json={"token": tok, "csr": make_csr()[1]},
               environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert r.status_code == 201, r.get_json()


def test_certificate_not_issued_here_is_refused(app, tmp_path):
    from receiver import tls

    other = str(tmp_path / "other")
    tls.ensure_ca(other)
    pem, _ = tls.sign_csr(other, make_csr()[1], "m-other")
    r = Api(app.test_client(), der_of(pem)).get("/v1/migration")
    assert r.status_code == 401 and err(r)["code"] == "auth.client_certificate_required"
    r = Api(app.test_client(), b"not a certificate").get("/v1/migration")
    assert r.status_code == 401


def test_full_flow_to_honest_failure(session, store, roots):
    api, _ = session
    doc = api.get("/v1/migration").get_json()
    assert doc["state"] == "NEW" and doc["error"] is None
    assert not [k for k in doc if k.startswith("_")]
    r = api.put("/v1/migration/manifest", json={"manifest": load_manifest(),
                                                 "plan": sample_plan()})
    assert r.status_code == 200 and r.get_json()["state"] == "PLANNED"
    assert store.read("plan.json")["image_name"] == "test-image"
    # resubmitting is fine while PLANNED
    assert api.put("/v1/migration/manifest", json={"manifest": load_manifest(),
                                                    "plan": sample_plan()}).status_code == 200
    r = api.post("/v1/migration/syncs", json={})
    assert r.status_code == 409 and err(r)["code"] == "state.conflict"
    assert "PLANNED" in err(r)["message"]
    assert "POST /v1/migration/prepare" in err(r)["details"]["allowed"]
    r = api.post("/v1/migration/prepare", json={})
    assert r.status_code == 202 and r.get_json()["state"] == "PREPARING"
    assert api.post("/v1/migration/prepare").status_code == 409
    worker.run_step(store)
    assert api.get("/v1/migration").get_json()["state"] == "READY_FOR_DATA"
    r = api.put("/v1/migration/manifest", json={"manifest": load_manifest(),
                                                 "plan": sample_plan()})
    assert r.status_code == 409
    r = api.post("/v1/migration/finalize")
    assert r.status_code == 409 and "no sync pass" in err(r)["message"]
    r = api.post("/v1/migration/syncs", json={"final": False})
    assert r.status_code == 201
    assert r.get_json() == {"pass": 1, "final": False, "modules": {
        "system": {"module": "system", "path": roots["system"]},
        "disk1": {"module": "disk1", "path": roots["disk1"]}}}
    # the source died; a new run opens pass 2 and pass 1 is marked abandoned
    r = api.post("/v1/migration/syncs", json={"final": False})
    assert r.status_code == 201 and r.get_json()["pass"] == 2
    r = api.post("/v1/migration/syncs/1/finished", json={})
    assert r.status_code == 409
    assert api.post("/v1/migration/syncs/9/finished", json={}).status_code == 404
    stats = {"system": {"bytes": 10, "files": 2}}
    r = api.post("/v1/migration/syncs/2/finished", json={"stats": stats})
    assert r.status_code == 200
    doc = r.get_json()
    assert doc["state"] == "READY_FOR_DATA"
    assert doc["passes"][0]["abandoned_at"] and doc["passes"][0]["finished_at"] is None
    assert doc["passes"][1]["stats"] == stats
    # reported twice: nothing changes
    assert api.post("/v1/migration/syncs/2/finished", json={}).get_json()["passes"] == \
        doc["passes"]
    r = api.post("/v1/migration/syncs", json={"final": True})
    assert r.get_json()["final"] is True
    r = api.post("/v1/migration/syncs/3/finished", json={"stats": stats})
    assert r.get_json()["state"] == "CONVERTING"
    worker.run_step(store)
    doc = api.get("/v1/migration").get_json()
    assert doc["state"] == "FAILED" and doc["error"]["code"] == "conversion.unavailable"
    assert api.post("/v1/migration/prepare").status_code == 409
    r = api.post("/v1/migration/retry")
    assert r.status_code == 202 and r.get_json()["state"] == "CONVERTING"
    assert api.post("/v1/migration/retry").status_code == 409


def test_manifest_errors_name_the_json_path(session):
    api, _ = session
    m = load_manifest()
    m["disks"][0]["size_bytes"] = "big"
    r = api.put("/v1/migration/manifest", json={"manifest": m, "plan": sample_plan()})
    e = err(r)
    assert r.status_code == 400 and e["code"] == "manifest.invalid"
    assert e["details"]["path"].startswith("$.manifest.disks[0]")
    assert e["message"].startswith(e["details"]["path"])
    plan = sample_plan()
    plan["data_disks"][0]["index"] = 99
    r = api.put("/v1/migration/manifest", json={"manifest": load_manifest(), "plan": plan})
    assert err(r)["details"]["path"] == "$.plan.data_disks[0].index"
    for bad in ({}, {"manifest": [], "plan": {}}, {"manifest": {}, "plan": 3}):
        r = api.put("/v1/migration/manifest", json=bad)
        assert r.status_code == 400 and err(r)["code"] == "request.invalid"


def test_limits_and_http_errors_are_json(session, app):
    api, _ = session
    r = api.put("/v1/migration/manifest", data=b" " * (app_mod.MAX_BODY + 10),
                content_type="application/json")
    assert r.status_code == 413 and err(r)["code"] == "request.too_large"
    r = api.get("/v1/migration/prepare")
    assert r.status_code == 405 and err(r)["code"] == "request.method_not_allowed"
    assert "POST" in r.headers["Allow"]
    r = api.get("/nothing")
    assert r.status_code == 404 and err(r)["code"] == "not_found"
    r = api.post("/v1/migration/syncs", json={"final": "yes"})
    assert r.status_code == 400
    r = api.post("/v1/migration/syncs/1/finished", json={"stats": {"system": {"bytes": -1}}})
    assert r.status_code == 400


def test_internal_errors_have_no_traceback(session, app, monkeypatch):
    api, _ = session

    def boom():
        raise RuntimeError("/secret/path in a traceback")

    monkeypatch.setattr(app_mod.st, "public", lambda doc: boom())
    r = api.get("/v1/migration")
    assert r.status_code == 500
    e = err(r)
    assert e["code"] == "internal" and "secret" not in r.get_data(as_text=True)


def test_openapi_document_is_served_and_lists_every_route(session, app):
    import yaml

    api, _ = session
    r = api.get("/v1/openapi.yaml")
    assert r.status_code == 200
    doc = yaml.safe_load(r.get_data(as_text=True))
    documented = {(p, m.upper()) for p, ops in doc["paths"].items() for m in ops}
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<int:n>", "{n}")
        for m in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((path, m))
    assert served == documented


@pytest.mark.parametrize("name", ["../../x", "/etc", "a/../../b", "ab\x00c", "ab\n", "..",
                                  "1-bad"])
def test_manifest_with_an_image_name_that_is_not_one_folder_is_refused(session, store, name):
    api, _ = session
    plan = dict(sample_plan(), image_name=name)
    r = api.put("/v1/migration/manifest", json={"manifest": load_manifest(), "plan": plan})
    assert r.status_code == 400, r.get_json()
    e = err(r)
    assert e["code"] == "manifest.invalid" and "image_name" in e["message"], e
    assert e["details"]["path"] == "$.plan.image_name"
    assert store.load()["state"] == "NEW"


def test_wrong_tokens_are_not_registered_as_log_secrets(app, store):
    c = app.test_client()
    before = set(logs._secrets)
    for n in range(30):
        c.post("/v1/session", json={"token": "guess-%d-words" % n, "csr": make_csr()[1]})
    assert set(logs._secrets) == before
    assert logs.redact("guess-7-words stay readable") == "guess-7-words stay readable"
    tok = tokens.new_token(store)
    assert logs.redact(tok) == logs.REDACTED


DEEP = b"[" * 20000 + b"]" * 20000  # under the session call's 64 KiB


def _raw(doc):
    return json.dumps(doc).encode("ascii")  # a lone surrogate becomes the escape \ud800


@pytest.mark.parametrize("field,value", [("token", "\ud800"), ("token", "ok\udfff"),
                                         ("csr", "\ud800")],
                         ids=["token-surrogate", "token-ends-surrogate", "csr-surrogate"])
def test_session_body_no_text_is_400_not_a_crash(app, field, value, caplog):
    doc = {"token": "some-token", "csr": make_csr()[1]}
    r = app.test_client().post("/v1/session", data=_raw(dict(doc, **{field: value})),
                               content_type="application/json")
    assert r.status_code == 400 and err(r)["code"] == "request.invalid", r.get_json()
    assert not [rec for rec in caplog.records if rec.levelname == "ERROR"]


@pytest.mark.parametrize("raw", [DEEP, b'{"token": ' + DEEP + b', "csr": "x"}'],
                         ids=["deep", "deep-token"])
def test_session_body_nested_too_deep_is_400_not_a_crash(app, raw, caplog):
    r = app.test_client().post("/v1/session", data=raw, content_type="application/json")
    assert r.status_code == 400 and err(r)["code"] == "request.invalid", r.get_json()
    assert not [rec for rec in caplog.records if rec.levelname == "ERROR"]


def test_manifest_body_no_text_or_too_deep_is_400_not_a_crash(session, caplog):
    api, _ = session
    for raw in (DEEP, _raw({"manifest": dict(load_manifest(), hostname="web\ud800"),
                            "plan": sample_plan()})):
        r = api.put("/v1/migration/manifest", data=raw, content_type="application/json")
        assert r.status_code == 400 and err(r)["code"] == "request.invalid", r.get_json()
    assert not [rec for rec in caplog.records if rec.levelname == "ERROR"]
