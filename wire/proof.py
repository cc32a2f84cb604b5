"""The receiver proves it knows the one-time token before the source sends it.

The operator copies one secret, the token; the fingerprint may be left out. So before
the token leaves the source, the receiver must show that it knows the token, bound to
the certificate the source sees on this very TLS connection:

    key   = HMAC-SHA256(token, "go2aliyun token proof key v1")
    proof = HMAC-SHA256(key, "go2aliyun receiver proof v1\\n" + nonce + "\\n" + cert)

``nonce``: 64 hex digits the source makes fresh for each attempt; ``cert``: the SHA-256
of the receiver certificate's DER (64 lower hex digits). The receiver keeps ``key`` (not
the token: it keeps only a salted hash of that) with each token it issued and answers
``POST /v1/session/proof`` with the proofs of its tokens over ITS OWN certificate. The
source checks one against the certificate IT saw: a man in the middle shows its own
certificate, so neither its own proofs (it does not know the key) nor the real
receiver's (made over another certificate) pass, and a proof recorded once does not
pass for another nonce. Tokens are random (192 bits), so a proof cannot be used to
guess the token offline. Stdlib only (the source runs Python 3.6).
"""

import hashlib
import hmac
import re
import secrets

KEY_CONTEXT = b"go2aliyun token proof key v1"
PROOF_CONTEXT = b"go2aliyun receiver proof v1\n"
NONCE_RE = re.compile(r"^[0-9a-f]{64}$")
HEX64 = NONCE_RE


def proof_key(token):
    """The key the receiver keeps for ``token`` (hex)."""
    return hmac.new(token.encode("utf-8"), KEY_CONTEXT, hashlib.sha256).hexdigest()


def new_nonce():
    return secrets.token_hex(32)


def render_proof(key_hex, nonce, cert_sha256):
    """The proof (64 hex) of the key ``key_hex`` for ``nonce`` over the certificate whose
    DER has SHA-256 ``cert_sha256`` (hex, any case)."""
    msg = PROOF_CONTEXT + nonce.encode("ascii") + b"\n" + cert_sha256.lower().encode("ascii")
    return hmac.new(bytes.fromhex(key_hex), msg, hashlib.sha256).hexdigest()


def check_proofs(token, nonce, cert_der, proofs):
    """True when one of ``proofs`` (the receiver's answer) proves ``token`` for ``nonce``
    over the certificate ``cert_der`` the source saw. Constant time per proof."""
    want = render_proof(proof_key(token), nonce, hashlib.sha256(cert_der or b"").hexdigest())
    ok = False
    for p in proofs if isinstance(proofs, list) else []:
        if isinstance(p, str) and hmac.compare_digest(p.lower().encode("ascii", "replace"),
                                                      want.encode("ascii")):
            ok = True
    return ok
