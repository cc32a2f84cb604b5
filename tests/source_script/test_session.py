"""source_script.session: fingerprint pinning before any byte is sent, the key and CSR
made with the real openssl command, error mapping."""

import json
import os
import socket
import ssl
import threading

import pytest

from receiver.datachannel import free_port
from source_script import session as sess
from wire import runner
from wire.errors import ConfigError, NetworkError, ReceiverError, StateError, TrustError

FP = "ab" * 32


def test_normalize_fingerprint_accepts_both_spellings():
    colon = ":".join(["AB"] * 32)
    assert sess.normalize_fingerprint(colon) == FP
    assert sess.normalize_fingerprint("sha256:" + FP.upper()) == FP
    assert sess.format_fingerprint(FP) == colon
    for bad in ("ab" * 31, "zz" * 32, "", None):
        with pytest.raises(ConfigError):
            sess.normalize_fingerprint(bad)


def test_parse_address():
    assert sess.parse_address("10.0.0.2") == ("10.0.0.2", 8080)
    assert sess.parse_address("host.example:9443") == ("host.example", 9443)
    assert sess.parse_address("https://10.0.0.2:8080/") == ("10.0.0.2", 8080)
    assert sess.parse_address("[fd00::2]:8081") == ("fd00::2", 8081)
    for bad in ("", "a b", "10.0.0.2:x", "10.0.0.2:70000"):
        with pytest.raises(ConfigError):
            sess.parse_address(bad)


def test_error_mapping_keeps_codes_and_hints():
    e = sess.error_from_response(401, {"error": {"code": "auth.token_used", "message": "used"}},
                                 "POST /v1/session")
    assert isinstance(e, TrustError) and e.code == "auth.token_used"
    assert "token new" in e.hint and e.exit_code == 7
    e = sess.error_from_response(409, {"error": {"code": "state.conflict", "message": "no"}},
                                 "POST /v1/migration/syncs")
    assert isinstance(e, StateError)
    e = sess.error_from_response(502, {}, "GET /v1/migration")
    assert isinstance(e, ReceiverError) and "502" in e.message


def test_failed_document_names_step_and_reason():
    e = sess.failed_error({"state": "FAILED", "error": {"step": "PREPARING",
                                                         "code": "disk.too_small",
                                                         "message": "disk 1 too small"}})
    assert e.code == "disk.too_small" and "PREPARING" in e.message
    assert "too small" in e.message


# ------------------------------------------------------------- real TLS, real openssl

def _text(path):
    with open(path) as f:
        return f.read()


def _self_signed(d, name="server"):
    key, crt = os.path.join(d, name + ".key"), os.path.join(d, name + ".crt")
    runner.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                "-out", crt, "-subj", "/CN=" + name, "-days", "2"])
    der = ssl.PEM_cert_to_DER_cert(_text(crt))
    return key, crt, sess.der_fingerprint(der)


class TLSServer(object):
    """A TLS server on 127.0.0.1 for one client, served by ``handle(tls)`` in a thread;
    with ``ca``, it demands a client certificate ``ca`` signed. ``error``: why serving
    ended early (the handshake refused, the connection broken), or None."""

    timeout = None  # of the accepted connection

    def __init__(self, key, crt, ca=None, rcvbuf=None):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(crt, key)
        if ca:
            self.ctx.verify_mode = ssl.CERT_REQUIRED
            self.ctx.load_verify_locations(ca)
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.error = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, _ = self.sock.accept()
        conn.settimeout(self.timeout)
        try:
            self.handle(self.ctx.wrap_socket(conn, server_side=True))
        except (OSError, ssl.SSLError) as e:
            self.error = e
        finally:
            conn.close()
            self.sock.close()


class OneShotServer(TLSServer):
    """Records what one client sent, then answers."""

    timeout = 10

    def __init__(self, key, crt, answer=b""):
        self.answer = answer
        self.received = b""
        super().__init__(key, crt)

    def handle(self, tls):
        while not _complete(self.received):
            data = tls.recv(65536)
            if not data:
                break
            self.received += data
        if self.received and self.answer:
            tls.sendall(self.answer)
        tls.close()


def _complete(raw):
    """A whole HTTP request: headers and Content-Length bytes of body."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return True


def _http(status, body):
    raw = json.dumps(body).encode()
    return (b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (status, len(raw), raw))


@pytest.mark.commands
def test_wrong_pin_sends_nothing_not_even_the_token(tmp_path):
    key, crt, fp = _self_signed(str(tmp_path))
    server = OneShotServer(key, crt, _http(201, {}))
    client = sess.Client("127.0.0.1:%d" % server.port, "cd" * 32)
    with pytest.raises(TrustError) as e:
        client.open_session("token-never-sent-123", "CSR")
    server.thread.join(10)
    assert server.received == b""
    assert e.value.code == "auth.fingerprint_mismatch"
    assert "interception" in e.value.message and sess.format_fingerprint(fp) in e.value.message


@pytest.mark.commands
def test_right_pin_talks_json(tmp_path):
    key, crt, fp = _self_signed(str(tmp_path))
    server = OneShotServer(key, crt, _http(409, {"error": {"code": "state.conflict",
                                                           "message": "not now"}}))
    client = sess.Client("127.0.0.1:%d" % server.port, sess.format_fingerprint(fp))
    with pytest.raises(StateError) as e:
        client.start_sync(final=True)
    server.thread.join(10)
    assert server.received.startswith(b"POST /v1/migration/syncs HTTP/1.1")
    assert "not now" in e.value.message


@pytest.mark.commands
def test_refused_port_is_named(tmp_path):
    port = free_port()
    with pytest.raises(NetworkError) as e:
        sess.Client("127.0.0.1:%d" % port, FP, timeout=5).healthz()
    assert e.value.code == "network.refused" and "port %d" % port in e.value.message


@pytest.mark.commands
def test_key_and_csr_with_openssl(tmp_path):
    sdir = str(tmp_path / "session")
    key, csr = sess.make_key_and_csr(sdir)
    assert os.stat(key).st_mode & 0o777 == 0o600
    assert os.stat(sdir).st_mode & 0o777 == 0o700
    assert "BEGIN CERTIFICATE REQUEST" in csr
    r = runner.run(["openssl", "req", "-in", os.path.join(sdir, sess.CSR_FILE), "-noout",
                    "-verify", "-subject"])
    assert "go2aliyun-source" in r.stdout + r.stderr
    before = _text(key)
    sess.make_key_and_csr(sdir)  # a resumed session keeps its key
    assert _text(key) == before


class SequenceServer(OneShotServer):
    """Like OneShotServer, but answers one connection per entry of ``answers``."""

    def __init__(self, key, crt, answers):
        self.answers = list(answers)
        self.requests = []
        super(SequenceServer, self).__init__(key, crt)

    def _serve(self):
        try:
            for answer in self.answers:
                conn, _ = self.sock.accept()
                conn.settimeout(10)
                self.received = b""
                try:
                    tls = self.ctx.wrap_socket(conn, server_side=True)
                    while not _complete(self.received):
                        data = tls.recv(65536)
                        if not data:
                            break
                        self.received += data
                    self.requests.append(self.received)
                    tls.sendall(answer)
                    tls.close()
                except (OSError, ssl.SSLError):
                    pass
                finally:
                    conn.close()
        finally:
            self.sock.close()


def _throttled(retry_after):
    raw = _http(429, {"error": {"code": "auth.throttled", "message": "too many wrong tokens"}})
    return raw.replace(b"\r\n\r\n", b"\r\nRetry-After: %d\r\n\r\n" % retry_after, 1)


@pytest.mark.commands
def test_session_waits_out_a_throttle_as_retry_after_says(tmp_path):
    key, crt, fp = _self_signed(str(tmp_path))
    server = SequenceServer(key, crt, [_throttled(7), _throttled(3),
                                       _http(201, {"migration_id": "m-1"})])
    client = sess.Client("127.0.0.1:%d" % server.port, sess.format_fingerprint(fp))
    said, slept = [], []
    answer = client.open_session("the-token-123", "CSR", say=said.append, sleep=slept.append)
    server.thread.join(10)
    assert answer == {"migration_id": "m-1"} and slept == [7, 3]
    assert len(server.requests) == 3
    assert "waiting 7 s" in said[0] and "too many wrong tokens" in said[0], said


@pytest.mark.commands
def test_session_throttle_retries_are_bounded(tmp_path):
    key, crt, fp = _self_signed(str(tmp_path))
    n = sess.THROTTLE_RETRIES + 1
    server = SequenceServer(key, crt, [_throttled(1)] * n)
    client = sess.Client("127.0.0.1:%d" % server.port, sess.format_fingerprint(fp))
    slept = []
    with pytest.raises(TrustError) as e:
        client.open_session("the-token-123", "CSR", say=lambda text: None, sleep=slept.append)
    server.thread.join(10)
    assert e.value.code == "auth.throttled" and slept == [1] * sess.THROTTLE_RETRIES


def test_retry_after_is_read_in_seconds_only():
    assert sess.parse_retry_after("12") == 12
    assert sess.parse_retry_after(None) is None
    assert sess.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
