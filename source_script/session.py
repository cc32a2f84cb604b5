"""The source's HTTPS client for the receiver's control API (stdlib only).

Trust model (docs/API.md):

* before the token leaves the source, the receiver proves it knows it
  (``POST /v1/session/proof``, wire/proof.py): an HMAC keyed from the token over our
  fresh nonce and the certificate we see on that connection. A receiver that cannot is
  refused as a possible interception and the token is never sent. That certificate's
  SHA-256 fingerprint is then the pin of every later connection (also the data
  channel's); a ``--fingerprint`` given by the operator is checked as well, right after
  the TLS handshake and BEFORE a single byte of the request is sent; no hostname or
  CA check;
* the one-time token is traded once (``POST /v1/session``) for a client
  certificate made from our CSR; the key and CSR are made with the ``openssl``
  command (the source has no ``cryptography``), the key file is 0600;
* every other call presents that client certificate (mutual TLS).
"""

import hashlib
import http.client
import json
import logging
import os
import re
import socket
import ssl
import time

from wire import API_PREFIX, CONTROL_PORT, DATA_PORT, proof, runner
from wire.errors import (
    ConfigError,
    DiskError,
    NetworkError,
    ReceiverError,
    StateError,
    TransferError,
    TrustError,
)
from wire.logs import redact, register_secret

log = logging.getLogger(__name__)

KEY_FILE = "client.key"
CSR_FILE = "client.csr"
CERT_FILE = "client.crt"
CA_FILE = "ca.crt"

# A throttled session call (429) is waited out this many times, each at most this long
# (the receiver's longest delay is 300 s).
THROTTLE_RETRIES = 3
MAX_THROTTLE_WAIT = 301
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
PROOF_PATH = API_PREFIX + "/session/proof"
_HOST = re.compile(r"^[A-Za-z0-9._-]+$")


# ---------------------------------------------------------------- pure helpers

def normalize_fingerprint(value):
    """``AB:CD:...`` or plain hex (any case, optional ``sha256:`` prefix) -> 64 lower hex."""
    if value is None:
        raise ConfigError("no receiver fingerprint given",
                          hint="pass --fingerprint FP (printed by the receiver with the token)")
    fp = str(value).strip().lower()
    if fp.startswith("sha256:"):
        fp = fp[len("sha256:"):]
    fp = fp.replace(":", "").replace(" ", "")
    if not _HEX64.match(fp):
        raise ConfigError(
            "fingerprint %r is not a SHA-256 fingerprint" % str(value),
            hint="give the 64 hex digits (colons allowed) printed by the receiver",
        )
    return fp


def format_fingerprint(fp):
    fp = normalize_fingerprint(fp)
    return ":".join(fp[i:i + 2] for i in range(0, 64, 2)).upper()


def der_fingerprint(der):
    return hashlib.sha256(der).hexdigest()


def check_fingerprint(der, pinned, where):
    """Raise :class:`TrustError` unless the DER certificate matches the pin."""
    got = der_fingerprint(der or b"")
    if got != normalize_fingerprint(pinned):
        raise TrustError(
            "the certificate of %s has fingerprint %s, not the pinned %s: possible "
            "interception, nothing was sent" % (where, format_fingerprint(got),
                                                  format_fingerprint(pinned)),
            code="auth.fingerprint_mismatch",
            hint="compare with the fingerprint the receiver printed; if the receiver was "
                 "re-created, run `go2aliyun clear` and start again with its new values",
        )


def parse_address(address, default_port=CONTROL_PORT):
    """``HOST`` or ``HOST:PORT`` (``[v6]:PORT`` too) -> (host, port)."""
    if not address or not str(address).strip():
        raise ConfigError("no receiver address given",
                          hint="pass --receiver ADDR (the intermediate instance's address)")
    address = str(address).strip()
    if address.startswith("https://"):
        address = address[len("https://"):].rstrip("/")
    host, port = address, default_port
    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            raise ConfigError("receiver address %r: missing ']'" % address)
        host = address[1:end]
        rest = address[end + 1:]
        if rest.startswith(":"):
            port = rest[1:]
    elif address.count(":") == 1:
        host, port = address.split(":")
    try:
        port = int(port)
    except ValueError:
        raise ConfigError("receiver address %r: port %r is not a number" % (address, port)) \
            from None
    if not (0 < port < 65536) or not host or (":" not in host and not _HOST.match(host)):
        raise ConfigError("receiver address %r is not HOST or HOST:PORT" % address)
    return host, port


def client_context(cert=None, key=None):
    """TLS client context: TLS 1.2+, no CA or hostname check (we pin instead)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    versions = getattr(ssl, "TLSVersion", None)
    if versions is not None:
        ctx.minimum_version = versions.TLSv1_2  # novermin (guarded: 3.7+ only)
    else:  # Python 3.6
        ctx.options |= getattr(ssl, "OP_NO_TLSv1", 0) | getattr(ssl, "OP_NO_TLSv1_1", 0)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def parse_retry_after(value):
    """Seconds from a ``Retry-After`` header in seconds (the receiver's form), else None."""
    value = (value or "").strip()
    return int(value) if value.isdigit() and len(value) <= 6 else None


def error_from_response(status, body, what):
    """Turn a receiver error answer into one of our typed errors (keeps its code)."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        err = {"code": "receiver.http_%s" % status,
               "message": "the receiver answered HTTP %s to %s" % (status, what)}
    code = str(err.get("code") or "receiver.failed")
    message = "receiver: %s (%s, HTTP %s)" % (err.get("message") or code, what, status)
    hint = err.get("hint")
    hints = {
        "auth.token_used": "this token was already traded for a session; issue a new one on "
                           "the receiver with `go2aliyun-receiver token new`",
        "auth.token_expired": "issue a new token on the receiver with "
                              "`go2aliyun-receiver token new`",
        "auth.token_invalid": "check the token the receiver printed (console or status file)",
        "auth.throttled": "too many failed attempts; wait and try again with the right token",
        "auth.client_certificate_required":
            "the session is not known to this receiver; run `go2aliyun clear` and start "
            "again with a fresh token",
    }
    hint = hint or hints.get(code)
    if code.startswith("auth."):
        cls = TrustError
    elif code.startswith("state."):
        cls = StateError
    elif code.startswith("disk.") and ("full" in code or "space" in code):
        cls = TransferError
    elif code.startswith("disk."):
        cls = DiskError
    else:  # manifest.*, request.*, not_found, internal: the receiver's word, exit 9
        cls = ReceiverError
    e = cls(redact(message), code=code, hint=hint)
    e.http_status = status
    return e


# ------------------------------------------------------------------ key + CSR

def make_key_and_csr(session_dir, common_name="go2aliyun-source"):
    """Make the client key (0600) and a CSR with ``openssl`` in ``session_dir`` (0700).

    Returns (key_path, csr_pem). Reuses an existing key (a resumed session).
    """
    if not os.path.isdir(session_dir):
        os.makedirs(session_dir, mode=0o700)
    os.chmod(session_dir, 0o700)
    key = os.path.join(session_dir, KEY_FILE)
    csr = os.path.join(session_dir, CSR_FILE)
    if not os.path.exists(key):
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        runner.run(["openssl", "genpkey", "-algorithm", "RSA",
                    "-pkeyopt", "rsa_keygen_bits:2048", "-out", key], timeout=120)
    os.chmod(key, 0o600)
    runner.run(["openssl", "req", "-new", "-key", key, "-out", csr,
                "-subj", "/CN=%s" % common_name], timeout=60)
    with open(csr) as f:
        return key, f.read()


# ------------------------------------------------------------------ transport

class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS connection that checks the pinned fingerprint right after the handshake
    (``pin`` None: only the proof call, which records the certificate in ``seen``)."""

    def __init__(self, host, port, pin, context, timeout, seen=None):
        http.client.HTTPSConnection.__init__(self, host, port, timeout=timeout,
                                             context=context)
        self._pin = pin
        self._seen = seen

    def connect(self):
        http.client.HTTPSConnection.connect(self)
        der = self.sock.getpeercert(binary_form=True)
        if self._seen is not None:
            self._seen.append(der)
        if self._pin is None:
            return
        try:
            check_fingerprint(der, self._pin, "receiver %s:%s" % (self.host, self.port))
        except TrustError:
            self.sock.close()
            self.sock = None
            raise


class Client(object):
    """One receiver: address, pinned fingerprint and (after the session) our certificate."""

    def __init__(self, address, fingerprint, cert=None, key=None, timeout=30):
        self.host, self.port = parse_address(address)
        # None: not proven yet; only PROOF_PATH may be asked then (it sends no secret)
        self.fingerprint = normalize_fingerprint(fingerprint) if fingerprint else None
        self.cert = cert
        self.key = key
        self.timeout = timeout
        self.seen = []  # the certificates the receiver showed (DER), newest last

    @property
    def where(self):
        return "%s:%s" % (self.host, self.port)

    def _connection(self):
        ctx = client_context(self.cert, self.key)
        return _PinnedHTTPSConnection(self.host, self.port, self.fingerprint, ctx, self.timeout,
                                      seen=self.seen)

    def request(self, method, path, body=None):
        """Send one JSON request; return (status, decoded JSON). Raises typed errors."""
        what = "%s %s" % (method, path)
        if self.fingerprint is None and path != PROOF_PATH:
            raise AssertionError("%s before the receiver was proven" % what)
        payload = None
        headers = {"Accept": "application/json"}
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        conn = self._connection()
        try:
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            status = resp.status
            retry_after = resp.getheader("Retry-After")
        except TrustError:
            raise
        except ConnectionRefusedError as e:
            raise NetworkError(
                "the receiver %s refused the connection on port %s" % (self.host, self.port),
                code="network.refused",
                hint="is go2aliyun-receiver running there, and does the security group "
                     "admit TCP %s from this server?" % self.port) from e
        except (socket.timeout, TimeoutError) as e:
            raise NetworkError(
                "no answer from the receiver %s on port %s within %ss"
                % (self.host, self.port, self.timeout), code="network.timeout",
                hint="check the address, the route and that the security group admits TCP "
                     "%s from this server" % self.port) from e
        except ssl.SSLError as e:
            raise TrustError(
                "TLS with the receiver %s failed: %s" % (self.where, e),
                code="auth.tls_failed",
                hint="the receiver refused our client certificate or speaks no TLS; run "
                     "`go2aliyun clear` if the receiver was re-created") from e
        except (OSError, http.client.HTTPException) as e:
            raise NetworkError(
                "cannot talk to the receiver %s (port %s): %s" % (self.host, self.port, e),
                code="network.unreachable",
                hint="check the address and that TCP %s is open from this server"
                     % self.port) from e
        finally:
            conn.close()
        try:
            data = json.loads(raw.decode("utf-8")) if raw else {}
        except ValueError:
            data = {}
        if status >= 400:
            err = error_from_response(status, data, what)
            err.retry_after = parse_retry_after(retry_after)
            raise err
        log.debug("%s -> %s", what, status)
        return status, data

    # The API, one method per call (docs/API.md).
    def healthz(self):
        return self.request("GET", "/healthz")[1]

    def prove(self, token):
        """Have the receiver prove it knows ``token`` over the certificate we see
        (wire/proof.py); the token is not sent. Returns the proven fingerprint (hex);
        raises :class:`TrustError` ``auth.receiver_unproven`` when it cannot."""
        nonce = proof.new_nonce()
        del self.seen[:]
        answer = self.request("POST", PROOF_PATH, {"nonce": nonce})[1]
        der = self.seen[-1] if self.seen else b""
        got = der_fingerprint(der)
        if not proof.check_proofs(token, nonce, der, answer.get("proofs")):
            raise TrustError(
                "the receiver %s (certificate fingerprint %s) could not prove it knows the "
                "token: possible interception; the token was not sent"
                % (self.where, format_fingerprint(got)),
                code="auth.receiver_unproven",
                hint="check the address and the token (the receiver's console output or "
                     "`go2aliyun-receiver status`); if both are right, something between "
                     "this server and the receiver answers in its place")
        return got

    def open_session(self, token, csr_pem, say=None, sleep=time.sleep):
        """Trade the token. A ``429 auth.throttled`` (wrong tokens came from this address)
        is waited out as its ``Retry-After`` says, ``THROTTLE_RETRIES`` times at most,
        saying what it waits for through ``say``."""
        register_secret(token)
        say = say or log.warning
        for attempt in range(THROTTLE_RETRIES + 1):
            try:
                return self.request("POST", API_PREFIX + "/session",
                                    {"token": token, "csr": csr_pem})[1]
            except TrustError as e:
                wait = getattr(e, "retry_after", None)
                if (e.code != "auth.throttled" or wait is None or wait > MAX_THROTTLE_WAIT
                        or attempt == THROTTLE_RETRIES):
                    raise
                say("The receiver %s holds session attempts from this address back (too "
                    "many wrong tokens came from it); waiting %d s as it asks, then trying "
                    "again (%d of %d)" % (self.where, wait, attempt + 1, THROTTLE_RETRIES))
                sleep(wait)
        raise AssertionError("unreachable")

    def migration(self):
        return self.request("GET", API_PREFIX + "/migration")[1]

    def put_manifest(self, manifest, plan):
        return self.request("PUT", API_PREFIX + "/migration/manifest",
                            {"manifest": manifest, "plan": plan})[1]

    def prepare(self):
        return self.request("POST", API_PREFIX + "/migration/prepare", {})[1]

    def start_sync(self, final):
        return self.request("POST", API_PREFIX + "/migration/syncs", {"final": bool(final)})[1]

    def finish_sync(self, number, stats):
        return self.request("POST", API_PREFIX + "/migration/syncs/%s/finished" % number,
                            {"stats": stats})[1]

    def finalize(self):
        return self.request("POST", API_PREFIX + "/migration/finalize", {})[1]

    def retry(self):
        return self.request("POST", API_PREFIX + "/migration/retry", {})[1]


def open_session(address, fingerprint, token, session_dir, timeout=30, say=None):
    """Have the receiver prove it knows the token, then trade the token for a client
    certificate. ``fingerprint``: the operator's pin, or None. Returns (client, answer);
    ``client.fingerprint`` is the proven receiver's.

    Writes ``client.key`` (0600), ``client.crt`` and ``ca.crt`` in ``session_dir``.
    """
    if not token:
        raise TrustError("no token given to open a session with the receiver",
                         code="auth.token_missing",
                         hint="pass --token T, set GO2ALIYUN_TOKEN, or put it in client_data")
    register_secret(token)
    # the receiver proves it knows the token first (on a connection pinned to
    # ``fingerprint`` when one was given); its certificate is the pin from then on
    fingerprint = Client(address, fingerprint, timeout=timeout).prove(token)
    anon = Client(address, fingerprint, timeout=timeout)
    key, csr = make_key_and_csr(session_dir)
    answer = anon.open_session(token, csr, say=say)
    cert_pem = answer.get("client_certificate")
    if not cert_pem or "BEGIN CERTIFICATE" not in cert_pem:
        raise ReceiverError("the receiver's session answer holds no client certificate",
                            code="receiver.bad_answer")
    cert = os.path.join(session_dir, CERT_FILE)
    _write(cert, cert_pem)
    if answer.get("ca_certificate"):
        _write(os.path.join(session_dir, CA_FILE), answer["ca_certificate"])
    answer.setdefault("data_port", DATA_PORT)
    return Client(address, fingerprint, cert=cert, key=key, timeout=timeout), answer


def ca_fingerprint(session_dir):
    """The fingerprint of the receiver certificate its session answer carried
    (``ca.crt``), for a session resumed without one recorded."""
    path = os.path.join(session_dir, CA_FILE)
    try:
        with open(path) as f:
            return der_fingerprint(ssl.PEM_cert_to_DER_cert(f.read()))
    except (OSError, ValueError) as e:
        raise ConfigError("the session in %s has no receiver certificate (%s)"
                          % (session_dir, e), code="config.fingerprint_missing",
                          hint="run `go2aliyun clear` and start again with a fresh token") \
            from e


def _write(path, text):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def wait_for(client, done, timeout=None, interval=2.0, on_poll=None, patience=300):
    """Poll ``GET /v1/migration`` until ``done(doc)`` is true; return the document.

    A receiver that is briefly unreachable (restarting) is waited for up to
    ``patience`` seconds; ``FAILED`` raises :class:`ReceiverError` with its reason.
    """
    start = time.time()
    down_since = None
    while True:
        try:
            doc = client.migration()
            down_since = None
        except NetworkError:
            down_since = down_since or time.time()
            if time.time() - down_since > patience:
                raise
            time.sleep(interval)
            continue
        if on_poll:
            on_poll(doc)
        if doc.get("state") == "FAILED":
            raise failed_error(doc)
        if done(doc):
            return doc
        if timeout is not None and time.time() - start > timeout:
            raise ReceiverError("the receiver stayed in state %s for more than %ss"
                                % (doc.get("state"), timeout), code="receiver.timeout")
        time.sleep(interval)


def failed_error(doc):
    err = doc.get("error") or {}
    code = err.get("code") or "receiver.failed"
    msg = "the receiver's step %s failed: %s" % (err.get("step") or doc.get("step"),
                                                  err.get("message") or code)
    cls = TransferError if "full" in code or "space" in code else ReceiverError
    return cls(msg, code=code, hint="see the receiver's log; after fixing the cause run "
                                     "`go2aliyun migrate` again (it retries the step)")

