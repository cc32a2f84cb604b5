"""Fixtures for the receiver tests: a state folder with its TLS material, CSRs made
in-process with ``cryptography`` (no command runs), and a Flask test client that can
present a peer certificate the way gunicorn's socket would."""

import json
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from receiver import app as app_mod
from receiver import state as st
from receiver import tls, tokens
from receiver.disks import probe
from wire import runner

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MANIFEST = os.path.join(ROOT, "tests", "data", "manifests", "debian12-bios.json")


def make_key(kind="ec"):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def make_csr(key=None, cn="source"):
    key = key or make_key()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .sign(key, hashes.SHA256()))
    return key, csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def der_of(cert_pem):
    return tls.load_cert(cert_pem).public_bytes(serialization.Encoding.DER)


def load_manifest():
    with open(MANIFEST) as f:
        return json.load(f)


def sample_plan(data_disks=(1,)):
    return {
        "image_name": "test-image", "platform": "Debian", "architecture": "x86_64",
        "system_disk_size": 20, "bandwidth_limit": 0,
        "data_disks": [{"index": i, "size_gib": 10, "src_path": "/data%d" % i}
                       for i in data_disks],
        "filters": {"system": ["- /proc/*"]},
    }


@pytest.fixture
def state_dir(tmp_path):
    d = str(tmp_path / "state")
    st.Store(d).ensure()
    tls.ensure_ca(d, addresses=["127.0.0.1"])
    return d


@pytest.fixture
def store(state_dir):
    return st.Store(state_dir)


@pytest.fixture
def roots(tmp_path, store):
    r = {"system": str(tmp_path / "sys"), "disk1": str(tmp_path / "d1")}
    store.write("config.json", {"target_roots": r, "data_port": 8703})
    return r


@pytest.fixture
def app(state_dir, roots):
    a = app_mod.create_app({"STATE_DIR": state_dir, "TESTING": True,
                            "TESTING_PEER_CERT": True})
    return a


class Api(object):
    """A test client that presents ``der`` as the TLS peer certificate."""

    def __init__(self, client, der=None):
        self.client = client
        self.der = der

    def _env(self):
        return {app_mod.TEST_PEER_KEY: self.der} if self.der else {}

    def open(self, method, path, **kw):
        return self.client.open(path, method=method, environ_base=self._env(), **kw)

    def get(self, path, **kw):
        return self.open("GET", path, **kw)

    def post(self, path, **kw):
        return self.open("POST", path, **kw)

    def put(self, path, **kw):
        return self.open("PUT", path, **kw)


@pytest.fixture
def anon(app):
    return Api(app.test_client())


@pytest.fixture
def session(app, store):
    """Trade a fresh token; return (Api with the issued certificate, session answer)."""
    tok = tokens.new_token(store)
    _, csr = make_csr()
    r = app.test_client().post("/v1/session", json={"token": tok, "csr": csr})
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    return Api(app.test_client(), der_of(body["client_certificate"])), body


def read_text(path):
    with open(path) as f:
        return f.read()


def mounts_under(root):
    """The mount points at ``root`` and below it, in mount order."""
    root = os.path.realpath(root)
    return [m["mountpoint"] for m in probe.read_mountinfo()
            if m["mountpoint"] == root or m["mountpoint"].startswith(root + "/")]


def unmount_under(root):
    """Lazily unmount whatever is mounted at ``root`` and below, the last mounted first."""
    for mp in reversed(mounts_under(root)):
        runner.run(["umount", "-l", mp], ok_codes=None)


def write_file(path, data):
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def ask_rsync_module(conn, module="system"):
    """Greet as rsync's client, ask for ``module``, and return all the peer says until
    it closes."""
    conn.sendall(b"@RSYNCD: 31.0\n%s\n" % module.encode())
    answer = b""
    for chunk in iter(lambda: conn.recv(4096), b""):
        answer += chunk
    return answer
