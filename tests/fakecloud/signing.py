"""Server side of Alibaba Cloud's ACS3-HMAC-SHA256 request signature (pure functions).

Written from the V3 signature description: the canonical request is
``METHOD\\nPATH\\nCANONICAL_QUERY\\nCANONICAL_HEADERS\\nSIGNED_HEADERS\\nHASHED_PAYLOAD``;
the string to sign is ``ACS3-HMAC-SHA256\\n<hex sha256 of the canonical request>``; the
signature is the hex HMAC-SHA256 of that with the AccessKey secret. The server rebuilds
all of it from what it received, so a client that signs anything else is refused.
"""

import hashlib
import hmac
from urllib.parse import quote

ALGORITHM = "ACS3-HMAC-SHA256"
# Headers the service insists on being signed.
REQUIRED_SIGNED = ("host", "x-acs-action", "x-acs-content-sha256", "x-acs-date",
                   "x-acs-signature-nonce", "x-acs-version")


class SignatureProblem(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def parse_authorization(value):
    """``ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=a;b,Signature=hex`` -> dict."""
    if not value:
        raise SignatureProblem("MissingAuthorization", "The Authorization header is missing.")
    algorithm, _, rest = value.partition(" ")
    if algorithm != ALGORITHM:
        raise SignatureProblem("IncompleteSignature",
                               "Unsupported signature algorithm %r." % algorithm)
    fields = {}
    for part in rest.split(","):
        k, _, v = part.strip().partition("=")
        fields[k] = v
    for k in ("Credential", "SignedHeaders", "Signature"):
        if not fields.get(k):
            raise SignatureProblem("IncompleteSignature", "Authorization lacks %s." % k)
    return fields


def canonical_query(pairs):
    """``pairs``: decoded (key, value) tuples from the URL query."""
    items = sorted(pairs, key=lambda kv: kv[0])
    return "&".join("%s=%s" % (quote(k, safe="~"), quote(v, safe="~")) for k, v in items)


def canonical_request(method, path, query_pairs, headers, signed_headers, payload_hash):
    """``headers``: lower-case name -> value as received."""
    lines = []
    for name in signed_headers:
        lines.append("%s:%s\n" % (name, headers.get(name, "").strip()))
    return "\n".join([method.upper(), path or "/", canonical_query(query_pairs),
                      "".join(lines), ";".join(signed_headers), payload_hash])


def signature(secret, canonical):
    to_sign = ALGORITHM + "\n" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return hmac.new(secret.encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def verify(method, path, query_pairs, headers, body, secret_for):
    """Check a request; return the AccessKey id. ``secret_for(ak)`` returns the secret or
    raises :class:`SignatureProblem`. ``headers`` keys must be lower case."""
    auth = parse_authorization(headers.get("authorization"))
    signed = auth["SignedHeaders"].split(";")
    missing = [h for h in REQUIRED_SIGNED if h not in signed]
    if missing:
        raise SignatureProblem("IncompleteSignature",
                               "These headers must be signed: %s." % ", ".join(missing))
    body_hash = hashlib.sha256(body or b"").hexdigest()
    if headers.get("x-acs-content-sha256") != body_hash:
        raise SignatureProblem("SignatureDoesNotMatch",
                               "x-acs-content-sha256 does not match the request body.")
    secret = secret_for(auth["Credential"])
    expected = signature(secret, canonical_request(method, path, query_pairs, headers, signed,
                                                   body_hash))
    if not hmac.compare_digest(expected, auth["Signature"]):
        raise SignatureProblem(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.")
    return auth["Credential"]
