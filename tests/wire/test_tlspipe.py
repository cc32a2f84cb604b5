"""wire.tlspipe: TLS over memory BIOs and the relay loop both ends of the data channel
run, over real sockets and real TLS (certificates made in-process)."""

import datetime
import os
import socket
import ssl
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from wire import tlspipe


def _cert(d, name):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    crt, pem = os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")
    with open(crt, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(pem, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return crt, pem


def _contexts(d, client_cert=True):
    s_crt, s_key = _cert(d, "server")
    c_crt, c_key = _cert(d, "client")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(s_crt, s_key)
    server.load_verify_locations(c_crt)
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    if client_cert:
        client.load_cert_chain(c_crt, c_key)
    return server, client


def _listen():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s


def _thread(target, *args):
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t


def _slow_upper_echo(sock, done):
    """The far end behind the server's relay: upper-cases what it gets, reading in
    small bites with pauses so that every queue on the way fills up."""
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                break
            sock.sendall(data.upper())
            if len(done) < 40:
                time.sleep(0.005)
            done.append(len(data))
    finally:
        sock.close()


def test_two_relays_back_to_back_move_megabytes_both_ways_under_backpressure(tmp_path):
    server_ctx, client_ctx = _contexts(str(tmp_path))
    lst = _listen()
    far, far_relay = socket.socketpair()  # the server relay's plain side
    near, near_relay = socket.socketpair()  # the client relay's plain side
    seen = {}
    echoed = []

    def server():
        conn, _ = lst.accept()
        ch = tlspipe.Channel(conn, server_ctx, server_side=True)
        ch.handshake(10)
        seen["peer"] = ch.peercert()
        tlspipe.relay(ch, far_relay.fileno(), far_relay.fileno(), linger=5)
        far_relay.close()

    ts = _thread(server)
    te = _thread(_slow_upper_echo, far, echoed)
    ch = tlspipe.Channel(socket.create_connection(lst.getsockname()), client_ctx)
    ch.handshake(10)
    assert ch.version()[0] in ("TLSv1.2", "TLSv1.3")
    meter = tlspipe.Meter()
    tc = _thread(lambda: tlspipe.relay(ch, near_relay.fileno(), near_relay.fileno(),
                                       linger=5, meter=meter))
    payload = os.urandom(3 * 1024 * 1024).hex().encode()[:5 * 1024 * 1024]
    back = []

    def reader():
        n = 0
        while n < len(payload):
            chunk = near.recv(1 << 16)
            if not chunk:
                break
            back.append(chunk)
            n += len(chunk)

    tr = _thread(reader)
    near.sendall(payload)
    tr.join(120)
    try:
        assert b"".join(back) == payload.upper()
        assert meter.sent == len(payload)
        assert seen["peer"]  # the server saw the client's certificate
        near.shutdown(socket.SHUT_WR)  # the source's rsync ends: everything ends
        for t in (tc, ts, te):
            t.join(30)
            assert not t.is_alive()
    finally:
        for s in (near, near_relay, lst):
            s.close()


def test_a_client_without_certificate_gets_an_alert_and_the_server_an_error(tmp_path):
    server_ctx, client_ctx = _contexts(str(tmp_path), client_cert=False)
    lst = _listen()
    errors = []

    def server():
        conn, _ = lst.accept()
        ch = tlspipe.Channel(conn, server_ctx, server_side=True)
        try:
            ch.handshake(10)
        except ssl.SSLError as e:
            errors.append(e)
        finally:
            conn.close()

    ts = _thread(server)
    ch = tlspipe.Channel(socket.create_connection(lst.getsockname()), client_ctx)
    a, b = socket.socketpair()
    try:
        try:
            ch.handshake(10)  # TLS 1.3: the client's side completes first
        except ssl.SSLError as e:
            ch.error = e
        else:
            tlspipe.relay(ch, b.fileno(), b.fileno(), linger=5)
        b.close()  # the relay leaves its fds open
        ts.join(10)
        assert errors and "CERTIFICATE" in str(errors[0]).upper()
        assert ch.error is not None and "CERTIFICATE" in str(ch.error).upper()
        assert a.recv(10) == b""  # nothing came through
    finally:
        for s in (a, b, lst):
            s.close()


def test_a_peer_that_hangs_up_in_the_handshake_is_an_error(tmp_path):
    server_ctx, _client = _contexts(str(tmp_path))
    lst = _listen()
    t = _thread(lambda: lst.accept()[0].close())
    ch = tlspipe.Channel(socket.create_connection(lst.getsockname()), _client)
    try:
        with pytest.raises((ConnectionError, ssl.SSLError)):
            ch.handshake(10)
    finally:
        t.join(10)
        ch.sock.close()
        lst.close()


def test_queue_hands_out_views_and_never_moves_the_rest():
    q = tlspipe.Queue()
    q.append(b"abc")
    q.append(b"")
    q.append(b"defg")
    assert len(q) == 7
    assert bytes(q.head()) == b"abc"
    q.consume(2)
    assert bytes(q.head()) == b"c" and len(q) == 5
    q.consume(1)
    assert bytes(q.head()) == b"defg"
    q.consume(4)
    assert len(q) == 0 and not q.chunks
