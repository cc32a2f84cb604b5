"""One secret to copy (issue 15.2): the receiver proves it knows the token before the
source sends it (wire/proof.py, ``POST /v1/session/proof``), on real receivers
(``go2aliyun-receiver serve``: gunicorn, TLS) on localhost.

* The source given only the address and the token opens the session, and pins the
  certificate the receiver proved the token with.
* A man in the middle on the address the source dials: a TLS proxy with another
  receiver's certificate that relays to the real receiver and records every byte the
  source sends it. The real receiver's proofs are over ITS certificate, so the source
  refuses (``auth.receiver_unproven``, "possible interception") and the proxy never
  sees the token; the real receiver still has it unspent.
* Another receiver (its own token) on the address: refused the same way; its log shows
  no session call and no wrong token.
* ``--fingerprint`` still pins: a wrong one is refused before the proof is even asked.

``root``: the receivers' data channel runs rsync as root (tests/receiver/test_serve.py).
"""

import contextlib
import json
import os
import socket
import ssl
import threading
import time

import pytest

from receiver import datachannel, tls
from receiver import state as st
from source_script import session as sess
from tests.receiver.test_serve import running
from wire import proof
from wire.errors import TrustError

pytestmark = pytest.mark.root




class InterceptingProxy(object):
    """TLS on 127.0.0.1 with a certificate of its own, relaying to ``upstream_port``
    over TLS; ``seen`` is every byte a client sent it, in plain text."""

    def __init__(self, folder, upstream_port):
        key_pem, cert_pem = tls.make_ca(common_name="go2aliyun receiver")  # looks the same
        self.cert, self.key = os.path.join(folder, "mitm.crt"), os.path.join(folder, "mitm.key")
        for path, data in ((self.cert, cert_pem), (self.key, key_pem)):
            with open(path, "wb") as f:
                f.write(data)
        self.upstream = upstream_port
        self.seen = bytearray()
        self.lock = threading.Lock()
        self.port = datachannel.free_port()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(8)
        self.sock.settimeout(0.5)
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        up_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        up_ctx.check_hostname = False
        up_ctx.verify_mode = ssl.CERT_NONE
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            try:
                conn.settimeout(10)
                client = ctx.wrap_socket(conn, server_side=True)
                up = up_ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.upstream),
                                                                 timeout=10))
            except (OSError, ssl.SSLError):
                conn.close()
                continue
            threading.Thread(target=self._pump, args=(client, up, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, client, False), daemon=True).start()

    def _pump(self, src, dst, record):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if record:
                    with self.lock:
                        self.seen += data
                dst.sendall(data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def close(self):
        self.stopping = True
        self.sock.close()
        self.thread.join(5)


def test_proof_is_bound_to_token_nonce_and_certificate():
    token, nonce, der = "t" * 32, proof.new_nonce(), b"certificate A"
    key = proof.proof_key(token)
    good = proof.render_proof(key, nonce, sess.der_fingerprint(der))
    assert proof.check_proofs(token, nonce, der, ["00" * 32, good])
    assert not proof.check_proofs(token, nonce, b"certificate B", [good])  # other cert
    assert not proof.check_proofs(token, proof.new_nonce(), der, [good])  # replayed
    assert not proof.check_proofs("u" * 32, nonce, der, [good])  # other token
    assert not proof.check_proofs(token, nonce, der, "not a list")
    assert token not in key and len(key) == 64


def test_token_only_opens_the_session_and_pins_the_proven_certificate(tmp_path):
    with running(str(tmp_path / "a")) as a:
        token = a.status["token"]
        client, answer = sess.open_session("127.0.0.1:%d" % a.control, None, token,
                                           str(tmp_path / "session"))
        assert client.fingerprint == sess.normalize_fingerprint(a.status["fingerprint"])
        assert client.migration()["state"] == "NEW" and answer["migration_id"]
        # the proof did not spend the token; the session did
        (entry,) = st.Store(a.state).read("tokens.json")["tokens"]
        assert entry["used_at"] is not None and token not in json.dumps(entry)


def test_a_man_in_the_middle_is_refused_before_the_token_leaves(tmp_path):
    with running(str(tmp_path / "a")) as a:
        token = a.status["token"]
        mitm = InterceptingProxy(str(tmp_path), a.control)
        try:
            with pytest.raises(TrustError) as e:
                sess.open_session("127.0.0.1:%d" % mitm.port, None, token,
                                  str(tmp_path / "session-mitm"))
        finally:
            mitm.close()
        err = e.value
        assert err.code == "auth.receiver_unproven" and err.exit_code == 7
        assert "possible interception" in err.message and "not sent" in err.message
        assert token not in str(err)
        seen = bytes(mitm.seen)
        assert b"POST /v1/session/proof" in seen  # it relayed the proof request...
        assert token.encode() not in seen  # ...and never saw the token
        assert b"POST /v1/session " not in seen
        # the real receiver still has the token unspent: the source goes on directly
        client, _ = sess.open_session("127.0.0.1:%d" % a.control, None, token,
                                      str(tmp_path / "session"))
        assert client.migration()["state"] == "NEW"


def test_another_receiver_on_the_address_is_refused_and_never_gets_the_token(tmp_path):
    with running(str(tmp_path / "a")) as a, running(str(tmp_path / "m")) as m:
        token = a.status["token"]
        with pytest.raises(TrustError) as e:
            sess.open_session("127.0.0.1:%d" % m.control, None, token,
                              str(tmp_path / "session"))
        assert e.value.code == "auth.receiver_unproven"
        assert sess.format_fingerprint(sess.normalize_fingerprint(m.status["fingerprint"])) \
            in e.value.message  # names what answered
        deadline = time.time() + 10
        while True:  # gunicorn writes its access log after the answer
            with open(os.path.join(m.state, "logs", "access.log")) as f:
                access = f.read()
            if "/v1/session/proof" in access or time.time() > deadline:
                break
            time.sleep(0.2)
        assert "/v1/session/proof" in access and "POST /v1/session " not in access, access
        assert st.Store(m.state).read("tokens.json")["failures"] == {}  # no token came


def test_a_given_fingerprint_is_still_checked_first(tmp_path):
    with running(str(tmp_path / "a")) as a:
        with pytest.raises(TrustError) as e:
            sess.open_session("127.0.0.1:%d" % a.control, "ab" * 32, a.status["token"],
                              str(tmp_path / "session"))
        assert e.value.code == "auth.fingerprint_mismatch"
        client, _ = sess.open_session("127.0.0.1:%d" % a.control, a.status["fingerprint"],
                                      a.status["token"], str(tmp_path / "session2"))
        assert client.fingerprint == sess.normalize_fingerprint(a.status["fingerprint"])
