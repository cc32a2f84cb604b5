"""The receiver's TLS identity, made by the launcher so it can print the fingerprint
before the instance even boots: an EC P-256 key and a self-signed certificate that is
also the CA of this migration (it signs the source's client certificate)."""

import datetime
import hashlib

from wire.logs import register_secret


def make_receiver_identity(common_name="go2aliyun-receiver", days=30):
    """Returns ``{"certificate": PEM, "key": PEM, "fingerprint": "AB:CD:.."}``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    der = cert.public_bytes(serialization.Encoding.DER)
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode("ascii")
    register_secret(key_pem)
    return {"certificate": cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            "key": key_pem, "fingerprint": fingerprint_of_der(der)}


def fingerprint_of_der(der):
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
