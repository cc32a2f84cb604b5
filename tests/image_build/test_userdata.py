"""The cloud-init user-data template: renders, is valid cloud-config (cloud-init's own
schema check), carries what the receiver needs and stays under the 32 KB ECS limit."""

import base64
import configparser
import json
import os

import pytest
import yaml

from image_build import tlsmaterial, userdata
from wire import runner
from wire.errors import ConfigError

CLOUD_CONFIG = {"provider": "aliyun", "migration_id": "m-20261126-abcdef",
                "region_id": "cn-hangzhou", "ram_role": "Go2AliyunRole",
                "image": {"name": "web01", "platform": "Debian", "architecture": "x86_64"},
                "target_disks": ["go2aliyun-target-system", "go2aliyun-target-disk1"]}


@pytest.fixture(scope="module")
def identity():
    return tlsmaterial.make_receiver_identity()


def render(identity, **kw):
    return userdata.render_user_data("tok-" + "x" * 30, identity["certificate"],
                                     identity["key"], kw.get("cfg", CLOUD_CONFIG))


def test_rendered_user_data_carries_token_tls_and_unit(identity):
    text = render(identity)
    assert text.startswith("#cloud-config\n")
    assert len(text.encode()) < 32 * 1024
    doc = yaml.safe_load(text)
    files = {f["path"]: f for f in doc["write_files"]}
    content = {p: base64.b64decode(f["content"]).decode() for p, f in files.items()}
    assert content["/etc/go2aliyun/token"] == "tok-" + "x" * 30
    assert files["/etc/go2aliyun/token"]["permissions"] == "0600"
    assert files["/etc/go2aliyun/tls/receiver.key"]["permissions"] == "0600"
    assert content["/etc/go2aliyun/tls/receiver.key"] == identity["key"]
    assert json.loads(content["/etc/go2aliyun/cloud.json"]) == CLOUD_CONFIG
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(content["/etc/systemd/system/go2aliyun-receiver.service"])
    exec_start = unit["Service"]["ExecStart"]
    assert "go2aliyun-receiver serve" in exec_start and "/etc/go2aliyun/token" in exec_start
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert ["systemctl", "enable", "--now", "go2aliyun-receiver.service"] in doc["runcmd"]


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
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(identity["certificate"].encode())
    der = cert.public_bytes(serialization.Encoding.DER)
    assert identity["fingerprint"] == tlsmaterial.fingerprint_of_der(der)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_no_cloud_keys_and_no_oversize(identity, tmp_path):
    with pytest.raises(ValueError):
        render(identity, cfg=dict(CLOUD_CONFIG, secret_key="x"))
    folder = tmp_path / "ci"
    folder.mkdir()
    with open(os.path.join(userdata.CLOUD_INIT_DIR, userdata.UNIT)) as f:
        (folder / userdata.UNIT).write_text(f.read())
    (folder / userdata.TEMPLATE).write_text("#cloud-config\n# " + "x" * 33000 + "\n${token_b64}"
                                            "${certificate_b64}${key_b64}${cloud_json_b64}"
                                            "${unit_b64}\n")
    with pytest.raises(ConfigError) as e:
        userdata.render_user_data("t", "c", "k", {}, folder=str(folder))
    assert e.value.code == "config.user_data_too_large"
