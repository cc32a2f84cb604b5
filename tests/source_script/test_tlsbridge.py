"""source_script.tlsbridge: a real mutual-TLS relay between a socketpair (what rsync
gives its connect program) and a TLS server that demands our client certificate."""

import os
import socket
import sys
import threading

import pytest

from source_script import session as sess
from source_script import tlsbridge
from wire import runner
from wire.errors import TrustError

from .test_session import TLSServer, _self_signed

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _client_cert(d, ca_key, ca_crt):
    key, csr = sess.make_key_and_csr(os.path.join(d, "session"))
    csr_path = os.path.join(d, "session", sess.CSR_FILE)
    crt = os.path.join(d, "session", sess.CERT_FILE)
    runner.run(["openssl", "x509", "-req", "-in", csr_path, "-CA", ca_crt, "-CAkey", ca_key,
                "-CAcreateserial", "-out", crt, "-days", "2"])
    return key, crt


class EchoServer(TLSServer):
    """mTLS server: upper-cases everything it gets, for one client."""

    def __init__(self, key, crt):
        self.got = 0
        super().__init__(key, crt, ca=crt)

    def handle(self, tls):
        while True:
            data = tls.recv(65536)
            if not data:
                break
            self.got += len(data)
            tls.sendall(data.upper())
        tls.close()


@pytest.mark.commands
def test_relay_moves_megabytes_both_ways(tmp_path):
    d = str(tmp_path)
    ca_key, ca_crt, fp = _self_signed(d, "receiver")
    key, crt = _client_cert(d, ca_key, ca_crt)
    server = EchoServer(ca_key, ca_crt)
    tls = tlsbridge.open_channel("127.0.0.1", server.port, fp, crt, key)
    ours, theirs = socket.socketpair()
    t = threading.Thread(target=tlsbridge.relay, args=(tls, theirs.fileno(), theirs.fileno()),
                         daemon=True)
    t.start()
    payload = os.urandom(3 * 1024 * 1024).hex().lower().encode()[:5 * 1024 * 1024]
    back = []

    def reader():
        n = 0
        while n < len(payload):
            chunk = ours.recv(1 << 16)
            if not chunk:
                break
            back.append(chunk)
            n += len(chunk)

    r = threading.Thread(target=reader, daemon=True)
    r.start()
    ours.sendall(payload)
    r.join(60)
    assert b"".join(back) == payload.upper()
    ours.shutdown(socket.SHUT_WR)
    t.join(30)
    assert not t.is_alive()
    server.thread.join(10)
    assert server.got == len(payload)


@pytest.mark.commands
def test_wrong_pin_relays_nothing(tmp_path):
    d = str(tmp_path)
    ca_key, ca_crt, fp = _self_signed(d, "receiver")
    key, crt = _client_cert(d, ca_key, ca_crt)
    server = EchoServer(ca_key, ca_crt)
    with pytest.raises(TrustError) as e:
        tlsbridge.open_channel("127.0.0.1", server.port, "00" * 32, crt, key)
    server.thread.join(10)
    assert server.got == 0
    assert e.value.code == "auth.fingerprint_mismatch"


@pytest.mark.commands
def test_a_client_certificate_the_receiver_did_not_issue_is_a_trust_error(tmp_path):
    d = str(tmp_path)
    ca_key, ca_crt, fp = _self_signed(d, "receiver")
    other = str(tmp_path / "other")
    os.makedirs(other)
    other_key, other_crt, _ = _self_signed(other, "another-receiver")
    key, crt = _client_cert(other, other_key, other_crt)
    server = EchoServer(ca_key, ca_crt)
    ours, theirs = socket.socketpair()
    try:
        with pytest.raises(TrustError) as e:
            # TLS 1.3: our side of the handshake completes; the refusal comes as an alert
            channel = tlsbridge.open_channel("127.0.0.1", server.port, fp, crt, key)
            ours.sendall(b"@RSYNCD: 31.0\n")
            tlsbridge.relay(channel, theirs.fileno(), theirs.fileno(), linger=5)
        assert e.value.code in ("auth.certificate_refused", "auth.tls_failed")
        server.thread.join(10)
        assert server.got == 0 and server.error is not None
    finally:
        ours.close()
        theirs.close()


@pytest.mark.commands
def test_bridge_command_reports_for_rsync(tmp_path):
    d = str(tmp_path)
    ca_key, ca_crt, fp = _self_signed(d, "receiver")
    key, crt = _client_cert(d, ca_key, ca_crt)
    server = EchoServer(ca_key, ca_crt)
    prog, env = tlsbridge.connect_prog()
    assert prog.startswith("exec ") and prog.endswith("-m source_script.tlsbridge %H")
    env.update(tlsbridge.bridge_env(server.port, "11" * 32, crt, key))
    # what rsync runs (the way rsync runs it), then the hidden click command
    r = runner.run(["sh", "-c", prog.replace("%H", "127.0.0.1")], env=env, ok_codes=None,
                   cwd=REPO, timeout=60)
    assert r.returncode == 7
    assert tlsbridge.parse_bridge_error(r.stderr)[0] == "auth.fingerprint_mismatch"
    server.thread.join(10)
    assert server.got == 0
    r = runner.run([sys.executable, "-m", "source_script.cli", "tls-bridge", "127.0.0.1",
                    "--port", "1"], env=env, ok_codes=None, cwd=REPO, timeout=60)
    assert r.returncode == 6
    assert tlsbridge.parse_bridge_error(r.stderr)[0] == "network.refused"


def test_parse_bridge_error():
    text = "rsync: x\ngo2aliyun tls-bridge: error [network.refused]: refused on 8703\n"
    assert tlsbridge.parse_bridge_error(text) == ("network.refused", "refused on 8703")
    assert tlsbridge.parse_bridge_error("rsync: connection unexpectedly closed") is None


def test_refused_certificate_knows_the_alerts_of_a_refusal():
    assert tlsbridge.refused_certificate(
        "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required")
    assert tlsbridge.refused_certificate("[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca")
    assert not tlsbridge.refused_certificate("[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC]")
    assert not tlsbridge.refused_certificate("EOF occurred in violation of protocol")
