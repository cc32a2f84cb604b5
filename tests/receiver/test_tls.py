import os
import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from receiver import tls
from tests.receiver.conftest import make_csr, make_key
from wire.errors import TrustError


def test_ensure_ca_makes_key_once_and_keeps_it_private(tmp_path):
    d = str(tmp_path)
    kp, cp, created = tls.ensure_ca(d, addresses=["10.0.0.5", "recv.example"])
    assert created
    assert stat.S_IMODE(os.stat(kp).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(kp)).st_mode) == 0o700
    with open(cp, "rb") as f:
        first = f.read()
    _, _, again = tls.ensure_ca(d)
    assert not again
    with open(cp, "rb") as f:
        assert f.read() == first
    cert = tls.load_cert(first)
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca is True
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "recv.example" in san.get_values_for_type(x509.DNSName)
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]


def test_fingerprint_is_sha256_of_der_in_colon_upper_hex(tmp_path):
    import hashlib

    from cryptography.hazmat.primitives import serialization

    _, cp, _ = tls.ensure_ca(str(tmp_path))
    with open(cp, "rb") as f:
        pem = f.read()
    fp = tls.fingerprint(pem)
    der = tls.load_cert(pem).public_bytes(serialization.Encoding.DER)
    assert fp.replace(":", "").lower() == hashlib.sha256(der).hexdigest()
    assert len(fp) == 95 and fp == fp.upper()
    assert tls.fingerprint(der) == fp


def test_normalize_fingerprint_accepts_both_forms_and_refuses_garbage():
    h = "ab" * 32
    canon = ":".join(["AB"] * 32)
    assert tls.normalize_fingerprint(h) == canon
    assert tls.normalize_fingerprint(canon.lower()) == canon
    assert tls.normalize_fingerprint("sha256:" + h) == canon
    for bad in ("", "abcd", "zz" * 32, h + "00"):
        with pytest.raises(TrustError) as e:
            tls.normalize_fingerprint(bad)
        assert e.value.code == "auth.fingerprint_invalid"


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_sign_csr_makes_a_client_only_certificate_chained_to_the_receiver(tmp_path, kind):
    d = str(tmp_path)
    tls.ensure_ca(d)
    key, csr = make_csr(make_key(kind), cn="attacker-chosen-name")
    pem, serial = tls.sign_csr(d, csr, "m-20260101-abcdef")
    cert = tls.load_cert(pem)
    _, ca = tls.load_ca(d)
    cert.verify_directly_issued_by(ca)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert "m-20260101-abcdef" in cert.subject.rfc4514_string()
    assert "attacker-chosen-name" not in cert.subject.rfc4514_string()
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert serial == tls.serial_hex(pem)


def test_sign_csr_refuses_bad_input(tmp_path):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    d = str(tmp_path)
    tls.ensure_ca(d)
    for bad in ("", "hello", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                "-----END CERTIFICATE REQUEST-----\n", None, 5, "x" * 20000):
        with pytest.raises(tls.InvalidCSR) as e:
            tls.sign_csr(d, bad, "m-x")
        assert e.value.code == "request.invalid" and e.value.http_status == 400
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "w")]))
           .sign(weak, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())
    with pytest.raises(tls.InvalidCSR, match="1024 bits"):
        tls.sign_csr(d, csr, "m-x")


def test_certificate_of_another_receiver_does_not_chain(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    tls.ensure_ca(a)
    tls.ensure_ca(b)
    _, csr = make_csr()
    pem, _ = tls.sign_csr(b, csr, "m-b")
    _, ca_a = tls.load_ca(a)
    with pytest.raises(Exception):  # noqa: B017 - InvalidSignature or ValueError
        tls.load_cert(pem).verify_directly_issued_by(ca_a)
