"""TLS material of one receiver: its key and self-signed certificate (which is also the
CA of this migration), fingerprints, and signing a source's CSR into a client
certificate.

The files live in ``STATE/tls/``: ``receiver.key`` (0600) and ``receiver.crt``. The
source pins the certificate's SHA-256 fingerprint; no hostname check, no system CA.
"""

import datetime
import hashlib
import ipaddress
import logging
import os

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wire import files
from wire.errors import Go2AliyunError, TrustError

log = logging.getLogger(__name__)

KEY_FILE = "receiver.key"
CERT_FILE = "receiver.crt"
CA_DAYS = 90
CLIENT_DAYS = 60
MAX_CSR_BYTES = 16 * 1024


class InvalidCSR(Go2AliyunError):
    code = "request.invalid"
    exit_code = 2
    http_status = 400


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def tls_dir(state_dir):
    return os.path.join(state_dir, "tls")


def cert_path(state_dir):
    return os.path.join(tls_dir(state_dir), CERT_FILE)


def key_path(state_dir):
    return os.path.join(tls_dir(state_dir), KEY_FILE)


def _write_private(path, data):
    files.write_atomic(path, data, mode=0o600)


def make_ca(common_name="go2aliyun receiver", addresses=(), days=CA_DAYS):
    """Return ``(key_pem, cert_pem)`` of a new self-signed certificate that is both the
    receiver's server certificate and the CA that signs client certificates."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "go2aliyun"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])
    sans = [x509.DNSName("localhost")]
    for a in addresses:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(a)))
        except ValueError:
            sans.append(x509.DNSName(a))
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=True, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def ensure_ca(state_dir, addresses=()):
    """Load the receiver's key and certificate, making them on first start.

    Returns ``(key_path, cert_path, created)``.
    """
    d = tls_dir(state_dir)
    os.makedirs(d, mode=0o700, exist_ok=True)
    os.chmod(d, 0o700)
    kp, cp = key_path(state_dir), cert_path(state_dir)
    if os.path.exists(kp) and os.path.exists(cp):
        os.chmod(kp, 0o600)
        return kp, cp, False
    key_pem, cert_pem = make_ca(addresses=addresses)
    _write_private(kp, key_pem)
    _write_private(cp, cert_pem)
    os.chmod(cp, 0o644)
    log.info("made the receiver certificate %s (fingerprint %s)", cp, fingerprint(cert_pem))
    return kp, cp, True


def load_cert(pem_or_der):
    if isinstance(pem_or_der, str):
        pem_or_der = pem_or_der.encode("ascii")
    if pem_or_der.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(pem_or_der)
    return x509.load_der_x509_certificate(pem_or_der)


def fingerprint(cert):
    """SHA-256 fingerprint ``AB:CD:...`` of a certificate (PEM, DER or x509 object)."""
    if not isinstance(cert, x509.Certificate):
        cert = load_cert(cert)
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return format_fingerprint(digest)


def format_fingerprint(hexdigest):
    h = hexdigest.upper()
    return ":".join(h[i:i + 2] for i in range(0, len(h), 2))


def normalize_fingerprint(text):
    """Accept ``AB:CD:...``, ``ab:cd``, plain hex, with or without a ``sha256:`` prefix;
    return the canonical ``AB:CD:...`` form."""
    t = (text or "").strip()
    if t.lower().startswith("sha256:") or t.lower().startswith("sha256="):
        t = t[7:]
    h = t.replace(":", "").replace(" ", "").lower()
    if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
        raise TrustError(
            "fingerprint %r is not a SHA-256 fingerprint" % text,
            code="auth.fingerprint_invalid",
            hint="copy the 64 hex digits (AB:CD:...) the receiver printed",
        )
    return format_fingerprint(h)


def serial_hex(cert):
    if not isinstance(cert, x509.Certificate):
        cert = load_cert(cert)
    return "%x" % cert.serial_number


def load_ca(state_dir):
    with open(key_path(state_dir), "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    with open(cert_path(state_dir), "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    return key, cert


def parse_csr(csr_pem):
    """Parse and check a source's CSR; raise :class:`InvalidCSR` naming the problem."""
    if not isinstance(csr_pem, str) or not csr_pem.strip():
        raise InvalidCSR("field 'csr' must be a PEM certificate signing request",
                         hint="send the CSR made from the source's key as PEM text")
    data = csr_pem.encode("utf-8", "replace")
    if len(data) > MAX_CSR_BYTES:
        raise InvalidCSR("field 'csr' is %d bytes, more than %d" % (len(data), MAX_CSR_BYTES))
    try:
        csr = x509.load_pem_x509_csr(data)
    except (ValueError, TypeError) as e:
        raise InvalidCSR("field 'csr' is not a PEM certificate signing request: %s" % e,
                         hint="send '-----BEGIN CERTIFICATE REQUEST-----' ... text") from e
    try:
        valid = csr.is_signature_valid
    except (InvalidSignature, ValueError, TypeError):  # unsupported algorithms
        valid = False
    if not valid:
        raise InvalidCSR("field 'csr' has a bad signature",
                         hint="sign the CSR with the source's own key")
    pub = csr.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        if pub.key_size < 2048:
            raise InvalidCSR("the CSR's RSA key has %d bits, fewer than 2048" % pub.key_size)
    elif isinstance(pub, ec.EllipticCurvePublicKey):
        if pub.curve.key_size < 256:
            raise InvalidCSR("the CSR's EC key has %d bits, fewer than 256" % pub.curve.key_size)
    else:
        raise InvalidCSR("the CSR's key type %s is not supported" % type(pub).__name__,
                         hint="use an RSA (2048+) or EC P-256/P-384 key")
    return csr


def sign_csr(state_dir, csr_pem, migration_id, days=CLIENT_DAYS):
    """Sign a source's CSR into a client certificate for ``migration_id``.

    The subject is ours (the CSR's is ignored); the certificate can only authenticate a
    TLS client. Returns ``(cert_pem, serial_hex)``.
    """
    csr = parse_csr(csr_pem)
    ca_key, ca_cert = load_ca(state_dir)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "go2aliyun"),
            x509.NameAttribute(NameOID.COMMON_NAME, "source of %s" % migration_id),
        ]))
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + datetime.timedelta(days=days),
                             ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True,
                data_encipherment=False, key_agreement=True, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii"), serial_hex(cert)


def server_context(state_dir, require_client_cert=True):
    """An ``ssl.SSLContext`` for the data channel (and tests): TLS 1.2+, our certificate,
    client certificates checked against our CA."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_path(state_dir), key_path(state_dir))
    ctx.load_verify_locations(cert_path(state_dir))
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx
