"""One-time tokens that a source trades for its client certificate.

Tokens are random (192 bits), stored only as salted SHA-256 hashes in
``STATE/tokens.json``, compared in constant time, expire after a TTL and can be spent
once; with each its proof key (:mod:`wire.proof`), so the receiver can show a source it
knows the token before the source sends it. Repeated failures slow attempts down,
counted per peer address (the address the API sees): after ``FREE_FAILURES`` wrong
tokens from one address, each further attempt from it must wait ``2 ** (n -
FREE_FAILURES)`` seconds (at most ``MAX_DELAY``) after its last failure, or it is
refused with ``auth.throttled`` without even being checked. A correct token resets that
address's count. Per address, so that someone guessing elsewhere does not keep the real
source out; the count of at most ``MAX_PEERS`` addresses is kept, each for
``PEER_MEMORY`` seconds after its last failure.
"""

import hashlib
import hmac
import logging
import secrets
import time

from receiver import state as st
from wire import proof
from wire.errors import TrustError
from wire.logs import register_secret

log = logging.getLogger(__name__)

DEFAULT_TTL = 24 * 3600
FREE_FAILURES = 5
MAX_DELAY = 300
MAX_PEERS = 256
PEER_MEMORY = 24 * 3600
TOKEN_FILE = "tokens.json"  # noqa: S105 - a file name


class TokenInvalid(TrustError):
    code = "auth.token_invalid"


class TokenUsed(TrustError):
    code = "auth.token_used"


class TokenExpired(TrustError):
    code = "auth.token_expired"


class Throttled(TrustError):
    code = "auth.throttled"
    http_status = 429

    def __init__(self, message, retry_after, **kw):
        super(Throttled, self).__init__(message, **kw)
        self.retry_after = int(retry_after) + 1


def _hash(salt, token):
    return hashlib.sha256(bytes.fromhex(salt) + token.encode("utf-8")).hexdigest()


def _empty():
    return {"tokens": [], "failures": {}}


def _load(store):
    data = store.read(TOKEN_FILE, None) or _empty()
    if "count" in data.get("failures", {}):  # the file of a receiver before per-peer counts
        data["failures"] = {}
    return data


def _peer_failures(data, peer, now):
    """The failure record of ``peer`` (created empty); forgets old and surplus peers."""
    table = data["failures"]
    for key in [k for k, f in table.items() if f["last"] < now - PEER_MEMORY]:
        del table[key]
    key = str(peer or "-")
    if key not in table and len(table) >= MAX_PEERS:
        del table[min(table, key=lambda k: table[k]["last"])]
    return table.setdefault(key, {"count": 0, "last": 0.0})


def new_token(store, ttl=DEFAULT_TTL, now=None):
    """Make a fresh token, store its hash, return the token (shown once, never logged)."""
    now = time.time() if now is None else now
    token = secrets.token_urlsafe(24)
    register_secret(token)
    salt = secrets.token_hex(16)
    with st.locked(store.dir):
        data = _load(store)
        data["tokens"].append({
            "id": secrets.token_hex(4),
            "salt": salt,
            "hash": _hash(salt, token),
            # what the receiver proves the token with (wire/proof.py); not the token
            "proof_key": proof.proof_key(token),
            "created_at": now,
            "expires_at": now + ttl,
            "used_at": None,
        })
        # keep the file small: drop long-dead entries
        data["tokens"] = [t for t in data["tokens"]
                          if t["expires_at"] > now - 7 * 86400][-20:]
        store.write(TOKEN_FILE, data)
    log.info("issued a new one-time token (expires in %ss)", ttl)
    return token


def delay_for(failures):
    n = failures - FREE_FAILURES
    if n < 0:
        return 0
    return min(2 ** n, MAX_DELAY)


def _match(data, token):
    found = None
    for t in data["tokens"]:
        # compare every entry, in constant time each, so timing says nothing
        if hmac.compare_digest(_hash(t["salt"], token), t["hash"]):
            found = t
    return found


def redeem(store, token, now=None, spend=True, peer=None):
    """Check ``token`` presented from address ``peer``; spend it (once) when ``spend``.
    Raise a :class:`TrustError` subclass naming what is wrong. Returns the token's id."""
    now = time.time() if now is None else now
    # Only a token this receiver issued becomes a log secret (when it matches, below):
    # registering whatever is posted would let anyone grow the set without bound and
    # blank chosen words out of the logs.
    if not isinstance(token, str) or not token or len(token) > 512:
        token = ""
    with st.locked(store.dir):
        data = _load(store)
        fails = _peer_failures(data, peer, now)
        wait = fails["last"] + delay_for(fails["count"]) - now
        if wait > 0:
            raise Throttled(
                "too many wrong tokens; try again in %d seconds" % (int(wait) + 1),
                retry_after=wait,
                hint="check the token the receiver printed (go2aliyun-receiver status)",
            )
        entry = _match(data, token) if token else None
        if entry is not None:
            register_secret(token)  # ours (issued perhaps by another process)
        if entry is None:
            fails["count"] += 1
            fails["last"] = now
            store.write(TOKEN_FILE, data)
            log.warning("a wrong token was presented from %s (%d failures)",
                        str(peer or "-")[:64], fails["count"])
            raise TokenInvalid(
                "the token is not valid for this receiver",
                hint="use the token the receiver printed, or issue one with "
                     "'go2aliyun-receiver token new'",
            )
        if entry["used_at"] is not None:
            raise TokenUsed(
                "the token was already used", hint="a token works once; issue a new one with "
                "'go2aliyun-receiver token new' on the receiver",
            )
        if entry["expires_at"] <= now:
            raise TokenExpired(
                "the token expired", hint="issue a new one with "
                "'go2aliyun-receiver token new' on the receiver",
            )
        fails["count"] = 0
        fails["last"] = 0.0
        if spend:
            entry["used_at"] = now
        store.write(TOKEN_FILE, data)
        return entry["id"]


def prove(store, nonce, cert_sha256):
    """``POST /v1/session/proof``: the proofs (wire/proof.py) of every token this receiver
    issued (used or expired too, so that the source then hears why the token itself is
    refused) for ``nonce`` over our certificate. Tokens made before proofs existed have
    no key and prove nothing."""
    data = _load(store)
    return [proof.render_proof(t["proof_key"], nonce, cert_sha256)
            for t in data["tokens"] if t.get("proof_key")]


def has_tokens(store):
    return bool(_load(store)["tokens"])
