"""The control API (docs/API.md): a Flask app served by gunicorn with TLS.

``create_app(config)`` takes ``STATE_DIR`` (required) and optional ``MAX_CONTENT_LENGTH``.
The long work never runs here: the API only moves the persisted state, which is the
worker's job queue (``receiver.worker``).

Authentication: ``POST /v1/session`` (token) and ``POST /v1/session/proof`` (the
receiver proves it knows the token, wire/proof.py) are the only ``/v1`` calls without a
client certificate. gunicorn runs with ``cert_reqs`` optional and our certificate as the only
CA, so OpenSSL already refuses foreign certificates in the handshake; here the app reads
the peer certificate from the gunicorn socket and also checks that this receiver
issued it (signature and serial) for this migration.
"""

import functools
import hashlib
import json
import logging
import os

import jsonschema
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from receiver import migration, tls, tokens
from receiver import state as st
from wire import logs, manifest, proof
from wire.errors import ConfigError, Go2AliyunError, TrustError, UsageError
from wire.logs import redact

log = logging.getLogger(__name__)

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_BODY = 8 * 1024 * 1024
MAX_SESSION_BODY = 64 * 1024
MAX_DEPTH = 64  # a manifest nests about 7 levels
# Test-only: the Flask test client passes the peer certificate in this environ key.
TEST_PEER_KEY = "go2aliyun.test_peer_cert"


class RequestInvalid(UsageError):
    code = "request.invalid"


class ManifestInvalid(ConfigError):
    code = "manifest.invalid"


class TooLarge(Go2AliyunError):
    code = "request.too_large"
    exit_code = 2
    http_status = 413


class ClientCertRequired(TrustError):
    code = "auth.client_certificate_required"


# The code of an HTTP error Flask raises (413 is TooLarge); other 4xx: request.invalid.
HTTP_CODES = {401: "auth.client_certificate_required", 404: "not_found",
              405: "request.method_not_allowed"}


@functools.lru_cache(maxsize=None)
def validator(name):
    schema = manifest.load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def validate_document(name, doc, prefix):
    """Raise manifest.invalid naming the JSON path of the first (best) error."""
    best = jsonschema.exceptions.best_match(validator(name).iter_errors(doc))
    if best is None:
        return
    where = prefix + "".join("[%d]" % p if isinstance(p, int) else ".%s" % p
                             for p in best.absolute_path)
    msg = best.message if len(best.message) <= 300 else best.message[:300] + "..."
    raise ManifestInvalid("%s: %s" % (where, msg), path=where,
                          hint="send what 'go2aliyun inventory --json' prints; schema "
                               "wire/%s" % name)


def error_response(err):
    body = {"error": err.to_dict()}
    body["error"]["message"] = redact(body["error"]["message"])
    resp = jsonify(body)
    resp.status_code = err.http_status
    if isinstance(err, tokens.Throttled):
        resp.headers["Retry-After"] = str(err.retry_after)
    return resp


def create_app(config=None):
    config = dict(config or {})
    if not config.get("STATE_DIR"):
        raise Go2AliyunError("create_app needs STATE_DIR", code="config.invalid")
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.config["JSON_SORT_KEYS"] = False
    app.config.update(config)
    app.extensions["go2aliyun.store"] = st.Store(config["STATE_DIR"])
    app.extensions["go2aliyun.store"].ensure()
    app.register_blueprint(api)
    return app


api = Blueprint("api", __name__)


def _store():
    return current_app.extensions["go2aliyun.store"]


# --- errors ------------------------------------------------------------------------


@api.app_errorhandler(Go2AliyunError)
def on_error(e):
    if e.http_status >= 500:
        log.error("%s %s: %s", request.method, request.path, e)
    return error_response(e)


@api.app_errorhandler(HTTPException)
def on_http(e):
    code = HTTP_CODES.get(e.code, "request.invalid" if e.code < 500 else "internal")
    msg = e.description or e.name
    if e.code == 413:
        limit = (MAX_SESSION_BODY if request.path in ANONYMOUS
                 else current_app.config["MAX_CONTENT_LENGTH"])
        return error_response(TooLarge("the request body is larger than %d bytes" % limit))
    if e.code == 404:
        msg = "no such call: %s %s" % (request.method, request.path[:200])
    err = Go2AliyunError(msg, code=code)
    err.http_status = e.code
    resp = error_response(err)
    if e.code == 405 and getattr(e, "valid_methods", None):
        resp.headers["Allow"] = ", ".join(e.valid_methods)
    return resp


@api.app_errorhandler(Exception)
def on_crash(e):
    log.exception("internal error in %s %s", request.method, request.path)
    return error_response(Go2AliyunError("internal error; see the receiver log",
                                         code="internal"))


# --- auth --------------------------------------------------------------------------


def peer_certificate():
    sock = request.environ.get("gunicorn.socket")
    if sock is not None and hasattr(sock, "getpeercert"):
        return sock.getpeercert(binary_form=True)
    if current_app.config.get("TESTING_PEER_CERT"):
        return request.environ.get(TEST_PEER_KEY)
    return None


def check_client(store, der):
    if not der:
        raise ClientCertRequired(
            "this call needs the client certificate of the migration",
            hint="run POST /v1/session with the token first and present the "
                 "certificate it returns")
    try:
        cert = x509.load_der_x509_certificate(der)
        _, ca = tls.load_ca(store.dir)
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise ClientCertRequired("the client certificate was not issued by this "
                                 "receiver") from e
    doc = store.load()
    if not migration.knows_client(doc, tls.serial_hex(cert)):
        raise ClientCertRequired("the client certificate is not one this receiver "
                                 "issued for migration %s" % doc["id"])


ANONYMOUS = ("/v1/session", "/v1/session/proof")


@api.before_app_request
def limits_and_auth():
    if request.path in ANONYMOUS:
        n = request.content_length
        if n is not None and n > MAX_SESSION_BODY:
            _too_large(MAX_SESSION_BODY)
        return
    if request.path.startswith("/v1/") or request.path == "/v1":
        check_client(_store(), peer_certificate())


# --- parsing -----------------------------------------------------------------------


def body(allow_empty=True, limit=None):
    raw = request.get_data(cache=True)
    if limit is not None and len(raw) > limit:
        _too_large(limit)
    if not raw.strip():
        if allow_empty:
            return {}
        raise RequestInvalid("the request needs a JSON object body")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestInvalid("the request body is not JSON: %s" % e,
                             hint="send a JSON object") from e
    except RecursionError as e:
        raise RequestInvalid("the request body nests JSON too deeply",
                             hint="send a JSON object") from e
    try:
        # JSON's \ud800 escapes give strings no UTF-8 can hold: refuse them here,
        # not as a crash where a string is hashed or saved
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        raise RequestInvalid("the request body has a lone surrogate escape (\\ud800 to "
                             "\\udfff) in a string, which is no Unicode text",
                             hint="send UTF-8 text") from e
    if _depth(data) > MAX_DEPTH:
        raise RequestInvalid("the request body nests JSON more than %d levels deep"
                             % MAX_DEPTH, hint="send a JSON object")
    if not isinstance(data, dict):
        raise RequestInvalid("the request body must be a JSON object, not %s"
                             % type(data).__name__)
    return data


def _depth(data):
    """How deep ``data`` nests, found without recursion (the schema validator recurses
    per level and would crash on what json.loads still takes)."""
    deepest, todo = 0, [(data, 1)]
    while todo:
        value, level = todo.pop()
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        if isinstance(value, dict):
            todo.extend((v, level + 1) for v in value.values())
        elif isinstance(value, list):
            todo.extend((v, level + 1) for v in value)
    return deepest


def doc_response(doc, status=200):
    return jsonify(st.public(doc)), status


# --- routes ------------------------------------------------------------------------


@api.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@api.post("/v1/session")
def session():
    data = body(allow_empty=False, limit=MAX_SESSION_BODY)
    token, csr = data.get("token"), data.get("csr")
    if not isinstance(token, str) or not token:
        raise RequestInvalid("field 'token' must be the one-time token (a string)",
                             hint="copy it from the receiver's console or status")
    if not isinstance(csr, str) or not csr:
        raise RequestInvalid("field 'csr' must be a PEM certificate signing request")
    store = _store()
    tls.parse_csr(csr)  # a bad CSR does not spend the token
    tokens.redeem(store, token, peer=request.remote_addr)
    mid = store.load()["id"]
    cert_pem, serial = tls.sign_csr(store.dir, csr, mid)
    migration.add_client(store, serial)
    with open(tls.cert_path(store.dir)) as f:
        ca_pem = f.read()
    log.info("issued client certificate %s for migration %s", serial, mid)
    config = store.config()
    return jsonify({
        "migration_id": mid,
        "client_certificate": cert_pem,
        "ca_certificate": ca_pem,
        "data_port": int(config.get("data_port") or 8703),
        "modules": migration.target_modules(config),
    }), 201


@api.post("/v1/session/proof")
def session_proof():
    """Show the source that we know its token, before it sends it (wire/proof.py):
    the proofs of our tokens for its fresh nonce over our certificate."""
    data = body(allow_empty=False, limit=MAX_SESSION_BODY)
    nonce = data.get("nonce")
    if not isinstance(nonce, str) or not proof.NONCE_RE.match(nonce):
        raise RequestInvalid("field 'nonce' must be 64 lower-case hex digits, fresh for "
                             "each attempt")
    store = _store()
    with open(tls.cert_path(store.dir), "rb") as f:
        cert_sha256 = hashlib.sha256(tls.load_cert(f.read()).public_bytes(
            serialization.Encoding.DER)).hexdigest()
    return jsonify({"proofs": tokens.prove(store, nonce, cert_sha256)})


@api.get("/v1/migration")
def get_migration():
    return doc_response(_store().load())


@api.put("/v1/migration/manifest")
def put_manifest():
    data = body(allow_empty=False)
    for key in ("manifest", "plan"):
        if not isinstance(data.get(key), dict):
            raise RequestInvalid("field '%s' must be a JSON object" % key,
                                 hint="send {\"manifest\": {...}, \"plan\": {...}}")
    validate_document(manifest.SCHEMA_FILE, data["manifest"], "$.manifest")
    validate_document(manifest.PLAN_SCHEMA_FILE, data["plan"], "$.plan")
    problems = manifest.plan_problems(data["plan"])
    if problems:
        path, msg = problems[0]
        raise ManifestInvalid("$.plan.%s: %s" % (path, msg), path="$.plan." + path,
                              hint="the source checks the same rule in user_config.json")
    return doc_response(migration.set_manifest(_store(), data["manifest"], data["plan"]))


@api.post("/v1/migration/prepare")
def prepare():
    body()
    return doc_response(migration.prepare(_store()), 202)


@api.post("/v1/migration/syncs")
def start_sync():
    final = body().get("final", False)
    if not isinstance(final, bool):
        raise RequestInvalid("field 'final' must be true or false")
    return jsonify(migration.start_sync(_store(), final)), 201


@api.post("/v1/migration/syncs/<int:n>/finished")
def finish_sync(n):
    stats = body().get("stats", {})
    _check_stats(stats)
    return doc_response(migration.finish_sync(_store(), n, stats))


@api.post("/v1/migration/finalize")
def finalize():
    body()
    return doc_response(migration.finalize(_store()), 202)


@api.post("/v1/migration/retry")
def retry():
    body()
    return doc_response(migration.retry(_store()), 202)


@api.get("/v1/openapi.yaml")
def openapi():
    with open(os.path.join(HERE, "openapi.yaml")) as f:
        return Response(f.read(), mimetype="application/yaml")


def _too_large(limit):
    raise TooLarge("the request body is larger than %d bytes" % limit,
                   hint="the limit is %d bytes" % limit)


def _check_stats(stats):
    if not isinstance(stats, dict):
        raise RequestInvalid("field 'stats' must be an object {disk: {bytes, files}}")
    for disk, s in stats.items():
        if not isinstance(s, dict):
            raise RequestInvalid("stats.%s must be an object {bytes, files}" % disk[:64])
        for k in ("bytes", "files"):
            v = s.get(k, 0)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise RequestInvalid("stats.%s.%s must be a whole number >= 0, not %r"
                                     % (disk[:64], k, v))


def serve_app(state_dir):
    """The gunicorn entry: ``receiver.app:serve_app('/var/lib/go2aliyun')``."""
    logs.setup(logfile=os.path.join(state_dir, "logs", "api.log"))
    return create_app({"STATE_DIR": state_dir})
