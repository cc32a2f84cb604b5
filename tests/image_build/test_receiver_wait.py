"""launch waits until the receiver answers /healthz over TLS with the pinned certificate
(a small TLS server with the launcher-made identity stands in for the receiver)."""

import http.server
import json
import ssl
import threading

import pytest

from image_build import launch
from image_build.state import StateFile
from receiver.datachannel import free_port
from receiver.identity import make_receiver_identity
from tests.fakecloud.fixtures import aliyun_cloud
from tests.image_build.test_launch_finish import settings_for
from wire.errors import CloudError, TrustError


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"status": "ok"}).encode()
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def _serve(identity, tmp_path):
    cert, key = tmp_path / "r.crt", tmp_path / "r.key"
    cert.write_text(identity["certificate"])
    key.write_text(identity["key"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return server


@pytest.fixture
def receiver(tmp_path):
    identity = make_receiver_identity()
    server = _serve(identity, tmp_path)
    try:
        yield identity, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_probe_pins_the_fingerprint(receiver):
    identity, port = receiver
    assert launch.probe_receiver("127.0.0.1", port, identity["fingerprint"])
    other = make_receiver_identity()
    with pytest.raises(TrustError) as e:
        launch.probe_receiver("127.0.0.1", port, other["fingerprint"])
    assert e.value.code == "auth.fingerprint_mismatch"


def test_probe_of_nothing_is_not_ready(receiver):
    free = free_port()
    assert launch.probe_receiver("127.0.0.1", free, receiver[0]["fingerprint"]) is False


def test_launch_waits_for_the_receiver(fake, clock, tmp_path, receiver):
    identity, port = receiver
    fake.world.public_ip = "127.0.0.1"
    state = StateFile.in_workdir(str(tmp_path / "w"))
    # the instance carries the identity that the stand-in receiver serves
    state.update(token=identity["token"], tls={k: v for k, v in identity.items()
                                               if k != "token"})
    result = launch.launch(aliyun_cloud(fake, clock), state, settings_for(
        fake, wait_receiver=True, receiver_port=port))
    assert result["address"] == "127.0.0.1" and state.get("receiver_ready") is True


def test_launch_gives_up_when_the_receiver_never_answers(fake, clock, tmp_path, receiver):
    free = free_port()
    fake.world.public_ip = "127.0.0.1"
    fake.world.receiver_starts = False  # nor does its start line reach the console
    state = StateFile.in_workdir(str(tmp_path / "w"))
    with pytest.raises(CloudError) as e:
        launch.launch(aliyun_cloud(fake, clock), state, settings_for(
            fake, wait_receiver=True, receiver_port=free, receiver_timeout=30))
    assert e.value.code == "cloud.timeout" and "receiver" in e.value.message
    assert not state.get("receiver_ready")
