import os
import socket
import ssl
import threading

import pytest

from receiver import datachannel, tls
from receiver import state as st
from receiver.state import State
from tests.receiver.conftest import key_pem, make_csr, read_text


def test_render_rsyncd_conf_has_loopback_and_one_module_per_root():
    text = datachannel.render_rsyncd_conf(
        {"system": {"module": "system", "path": "/t/sys"},
         "disk1": {"module": "disk1", "path": "/t/d1"}}, 12345, "/s/logs/rsyncd.log")
    lines = [line.strip() for line in text.splitlines()]
    for want in ("address = 127.0.0.1", "port = 12345", "uid = 0", "gid = 0",
                 "numeric ids = yes", "read only = no", "reverse lookup = no",
                 "munge symlinks = no", "hosts allow = 127.0.0.1",
                 "log file = /s/logs/rsyncd.log"):
        assert want in lines
    assert lines.count("[system]") == 1 and lines.count("[disk1]") == 1
    assert "path = /t/sys" in lines and "path = /t/d1" in lines
    assert lines.index("[disk1]") < lines.index("[system]")


def test_render_refuses_line_breaks():
    with pytest.raises(Exception, match="line break"):
        datachannel.render_rsyncd_conf({"system": {"path": "/a\n[evil]"}}, 1)


def test_modules_open_only_while_taking_data(store, roots):
    doc = store.load()
    doc["modules"] = {"system": {"module": "system", "path": roots["system"]}}
    for s, open_ in ((State.PLANNED, False), (State.READY_FOR_DATA, True),
                     (State.SYNCING, True), (State.CONVERTING, False),
                     (State.FAILED, False)):
        doc["state"] = s.value
        path = datachannel.ensure_rsyncd_conf(store.dir, 999, doc)
        text = read_text(path)
        assert ("[system]" in text) is open_, s


def test_ensure_rewrites_only_on_change(store):
    doc = st.new_document()
    p = datachannel.ensure_rsyncd_conf(store.dir, 1000, doc)
    m1 = os.stat(p).st_mtime_ns
    os.utime(p, ns=(1, 1))
    datachannel.ensure_rsyncd_conf(store.dir, 1000, doc)
    assert os.stat(p).st_mtime_ns == 1
    datachannel.ensure_rsyncd_conf(store.dir, 1001, doc)
    assert os.stat(p).st_mtime_ns != 1
    assert m1


def test_rsyncd_argv_binds_loopback():
    argv = datachannel.rsyncd_argv("/usr/bin/rsync", "/s", 4242)
    assert "--address=127.0.0.1" in argv and "--port=4242" in argv
    assert "--no-detach" in argv and "--daemon" in argv


def _echo_upstream():
    """Stands in for rsyncd on loopback: greets, then echoes upper-cased."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4)

    def serve():
        while True:
            try:
                conn, _ = lst.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"@RSYNCD: 31.0\n")
                while True:
                    data = conn.recv(65536)
                    if not data:
                        break
                    conn.sendall(data.upper())

    threading.Thread(target=serve, daemon=True).start()
    return lst


def test_relay_takes_only_certificates_issued_here(state_dir, store, tmp_path):
    upstream = _echo_upstream()
    relay = datachannel.Relay(state_dir, "127.0.0.1", 0, upstream.getsockname()[1])
    server = relay.listen()
    port = server.getsockname()[1]

    def accept(n):
        for _ in range(n):
            conn, peer = server.accept()
            threading.Thread(target=relay.handle, args=(conn, peer), daemon=True).start()

    threading.Thread(target=accept, args=(3,), daemon=True).start()

    def client(issued):
        key, csr = make_csr()
        cert, serial = tls.sign_csr(state_dir, csr, "m-test")
        if issued:
            store.update(lambda doc: doc.setdefault("_clients", []).append(serial))
        crt, pem = str(tmp_path / (serial + ".crt")), str(tmp_path / (serial + ".key"))
        with open(crt, "w") as f:
            f.write(cert)
        with open(pem, "wb") as f:
            f.write(key_pem(key))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.load_cert_chain(crt, pem)
        return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))

    try:
        good = client(True)
        assert good.recv(100) == b"@RSYNCD: 31.0\n"
        payload = b"abc" * 200000
        good.sendall(payload)
        got = b""
        while len(got) < len(payload):
            got += good.recv(65536)
        assert got == payload.upper()
        good.close()
        # signed by our CA, but not (or no longer) a client of this migration
        stranger = client(False)
        assert stranger.recv(100) == b""
        stranger.close()
        # plain text on the data port gets nothing either
        plain = socket.create_connection(("127.0.0.1", port), timeout=10)
        plain.sendall(b"@RSYNCD: 31.0\n")
        try:
            answer = plain.recv(100)
        except ConnectionResetError:
            answer = b""
        assert b"RSYNCD" not in answer
        plain.close()
        conf = read_text(os.path.join(state_dir, "rsyncd.conf"))
        assert "port = %d" % upstream.getsockname()[1] in conf
    finally:
        server.close()
        upstream.close()
