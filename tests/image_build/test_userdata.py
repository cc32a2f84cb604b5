"""The cloud-init user-data template: renders, is valid cloud-config (cloud-init's own
schema check), carries what the receiver needs and stays under the 32 KB ECS limit."""

import base64
import configparser
import json
import os

import pytest
import yaml

from image_build import userdata
from receiver.identity import make_receiver_identity
from wire import runner
from wire.errors import ConfigError

CLOUD_CONFIG = {"provider": "aliyun", "migration_id": "m-20261126-abcdef",
                "region_id": "cn-hangzhou", "ram_role": "Go2AliyunRole",
                "image": {"name": "web01", "platform": "Debian", "architecture": "x86_64"},
                "target_disks": ["go2aliyun-target-system", "go2aliyun-target-disk1"]}


@pytest.fixture(scope="module")
def identity():
    return make_receiver_identity()


def render(identity, **kw):
    return userdata.render_user_data(identity["certificate"], identity["key"],
                                     identity["tokens_json"], kw.get("cfg", CLOUD_CONFIG))


def written_files(text):
    doc = yaml.safe_load(text)
    files = {f["path"]: f for f in doc["write_files"]}
    return doc, files, {p: base64.b64decode(f["content"]).decode() for p, f in files.items()}


def test_rendered_user_data_carries_the_receiver_identity_and_unit(identity, tmp_path):
    text = render(identity)
    assert text.startswith("#cloud-config\n")
    assert len(text.encode()) < 32 * 1024
    assert identity["token"] not in text  # only its salted hash travels
    doc, files, content = written_files(text)
    state = "/var/lib/go2aliyun"
    assert files[state + "/tls/receiver.key"]["permissions"] == "0600"
    assert files[state + "/tokens.json"]["permissions"] == "0600"
    assert content[state + "/tls/receiver.key"] == identity["key"]
    assert json.loads(content["/etc/go2aliyun/cloud.json"]) == CLOUD_CONFIG
    # The receiver's own code accepts what was written: the certificate it would load has
    # the printed fingerprint, and the token redeems against the token file.
    from receiver import state as receiver_state
    from receiver import tls, tokens

    (tmp_path / "tls").mkdir()
    for rel in ("tls/receiver.key", "tls/receiver.crt", "tokens.json"):
        (tmp_path / rel).write_text(content[state + "/" + rel])
    _, cert_path, created = tls.ensure_ca(str(tmp_path))
    assert not created
    with open(cert_path, "rb") as f:
        assert tls.fingerprint(f.read()) == identity["fingerprint"]
    store = receiver_state.Store(str(tmp_path))
    assert tokens.redeem(store, identity["token"], spend=False)
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(content["/etc/systemd/system/go2aliyun-receiver.service"])
    exec_start = unit["Service"]["ExecStart"]
    # cloud.json names the disks; --blank-disks counts only when nothing names them
    assert exec_start.endswith("go2aliyun-receiver serve --state /var/lib/go2aliyun "
                               "--blank-disks")
    assert "ConditionPathExists" not in unit["Unit"]  # it starts with no user-data too
    # Debian's cloud-final.service runs After=multi-user.target, which wants this unit:
    # ordered after cloud-final it would be a cycle systemd breaks by not starting it
    after = unit["Unit"]["After"].split()
    assert "cloud-final.service" not in after and "cloud-config.service" in after
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert ["systemctl", "enable", "--now", "--no-block",
            "go2aliyun-receiver.service"] in doc["runcmd"]


@pytest.mark.commands
def test_cloud_init_schema_accepts_it(identity, tmp_path):
    path = tmp_path / "user-data"
    path.write_text(render(identity))
    r = runner.run(["cloud-init", "schema", "-c", str(path)], ok_codes=None)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Valid cloud-config" in r.stdout
    # and the check is real: a broken document is refused
    path.write_text("#cloud-config\nwrite_files: 5\n")
    assert runner.run(["cloud-init", "schema", "-c", str(path)], ok_codes=None).returncode != 0


def test_fingerprint_is_the_sha256_of_the_certificate(identity):
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(identity["certificate"].encode())
    der = cert.public_bytes(serialization.Encoding.DER)
    assert identity["fingerprint"].replace(":", "") == hashlib.sha256(der).hexdigest().upper()
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_no_cloud_keys_and_no_oversize(identity, tmp_path):
    with pytest.raises(ValueError):
        render(identity, cfg=dict(CLOUD_CONFIG, secret_key="x"))
    folder = tmp_path / "ci"
    folder.mkdir()
    with open(os.path.join(userdata.CLOUD_INIT_DIR, userdata.UNIT)) as f:
        (folder / userdata.UNIT).write_text(f.read())
    (folder / userdata.TEMPLATE).write_text("#cloud-config\n# " + "x" * 33000 + "\n")
    with pytest.raises(ConfigError) as e:
        userdata.render_user_data("t", "c", "k", {}, folder=str(folder))
    assert e.value.code == "config.user_data_too_large"
