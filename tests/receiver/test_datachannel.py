import os
import time

import pytest

from receiver import datachannel
from receiver import state as st
from receiver.state import State
from tests.receiver.conftest import ask_rsync_module, read_text


def test_render_rsyncd_conf_listens_nowhere_and_has_one_module_per_root():
    text = datachannel.render_rsyncd_conf(
        {"system": {"module": "system", "path": "/t/sys"},
         "disk1": {"module": "disk1", "path": "/t/d1"}}, "/s/logs/rsyncd.log")
    lines = [line.strip() for line in text.splitlines()]
    for want in ("uid = 0", "gid = 0", "numeric ids = yes", "read only = no",
                 "reverse lookup = no", "munge symlinks = no",
                 "log file = /s/logs/rsyncd.log"):
        assert want in lines
    # a daemon session over a socket pair: nothing to bind, nobody else to allow
    assert not [line for line in lines if line.startswith(("port", "address", "hosts"))]
    assert lines.count("[system]") == 1 and lines.count("[disk1]") == 1
    assert "path = /t/sys" in lines and "path = /t/d1" in lines
    assert lines.index("[disk1]") < lines.index("[system]")


def test_render_refuses_line_breaks():
    import pytest

    with pytest.raises(Exception, match="line break"):
        datachannel.render_rsyncd_conf({"system": {"path": "/a\n[evil]"}})


def test_modules_open_only_while_taking_data(store, roots):
    doc = store.load()
    doc["modules"] = {"system": {"module": "system", "path": roots["system"]}}
    for s, open_ in ((State.PLANNED, False), (State.READY_FOR_DATA, True),
                     (State.SYNCING, True), (State.CONVERTING, False),
                     (State.FAILED, False)):
        doc["state"] = s.value
        path = datachannel.ensure_rsyncd_conf(store.dir, doc)
        text = read_text(path)
        assert ("[system]" in text) is open_, s


def test_ensure_rewrites_only_on_change(store, roots):
    doc = st.new_document()
    p = datachannel.ensure_rsyncd_conf(store.dir, doc)
    assert os.stat(p).st_mode & 0o777 == 0o600
    os.utime(p, ns=(1, 1))
    datachannel.ensure_rsyncd_conf(store.dir, doc)
    assert os.stat(p).st_mtime_ns == 1
    doc["state"] = State.READY_FOR_DATA.value
    doc["modules"] = {"system": {"module": "system", "path": roots["system"]}}
    datachannel.ensure_rsyncd_conf(store.dir, doc)
    assert os.stat(p).st_mtime_ns != 1


def test_rsyncd_argv_is_one_session_on_stdin():
    argv = datachannel.rsyncd_argv("/usr/bin/rsync", "/s")
    assert argv == ["/usr/bin/rsync", "--daemon", "--config=/s/rsyncd.conf"]
    assert not [a for a in argv if a.startswith(("--port", "--address", "--no-detach"))]


def test_refusal_names_the_state():
    assert datachannel.refusal("FAILED") == (
        b"@ERROR: the receiver takes no data in state FAILED "
        b"(only in READY_FOR_DATA and SYNCING)\n")


# Stands in for an rsync daemon session on its stdin/stdout socket: greets, then echoes
# upper-cased.
ECHO_DAEMON = (
    "import os\n"
    "os.write(1, b'@RSYNCD: 31.0\\n')\n"
    "while True:\n"
    "    data = os.read(0, 65536)\n"
    "    if not data:\n"
    "        break\n"
    "    os.write(1, data.upper())\n"
)


@pytest.mark.commands
def test_relay_takes_only_certificates_issued_here(state_dir, store, tmp_path):
    import socket
    import ssl
    import sys
    import threading

    from receiver import tls
    from tests.receiver.conftest import key_pem, make_csr

    store.update(lambda doc: doc.update(state=State.READY_FOR_DATA.value))
    relay = datachannel.Relay(state_dir, "127.0.0.1", 0,
                              daemon_argv=[sys.executable, "-c", ECHO_DAEMON])
    server = relay.listen()
    port = server.getsockname()[1]

    def accept(n):
        for _ in range(n):
            conn, peer = server.accept()
            threading.Thread(target=relay.handle, args=(conn, peer), daemon=True).start()

    threading.Thread(target=accept, args=(4,), daemon=True).start()

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
        # its daemon ends with the session (reads EOF; the handler thread reaps it)
        deadline = time.monotonic() + 10
        while relay.daemons and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not relay.daemons
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
        # a client of ours, but the migration takes no data now: refused, no daemon
        store.update(lambda doc: doc.update(state=State.FAILED.value))
        late = client(True)
        answer = ask_rsync_module(late)
        assert answer == b"@RSYNCD: 31.0\n" + datachannel.refusal("FAILED")
        late.close()
        assert not relay.daemons
    finally:
        server.close()
