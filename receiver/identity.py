"""The receiver's identity, the receiver's one public module for the launcher: made before
the instance even boots, so launch can print token and fingerprint. Made with the
receiver's own code, in its own file formats, so ``go2aliyun-receiver serve --state
/var/lib/go2aliyun`` finds them and uses them instead of making new ones:

* ``tls/receiver.key`` and ``tls/receiver.crt``: the self-signed certificate that is also
  the CA of this migration (``receiver.tls.make_ca``);
* ``tokens.json``: the one-time token, stored only as a salted hash
  (``receiver.tokens.new_token``). The token itself never goes into the user-data.
"""

import tempfile

from receiver import state as receiver_state
from receiver import tls, tokens
from wire.logs import register_secret

TOKEN_TTL = 3 * 24 * 3600


def make_receiver_identity(ttl=TOKEN_TTL):
    """Returns ``{"certificate", "key", "fingerprint", "token", "tokens_json"}``."""
    key_pem, cert_pem = tls.make_ca()
    register_secret(key_pem.decode("ascii"))
    with tempfile.TemporaryDirectory(prefix="g2a-identity-") as folder:
        store = receiver_state.Store(folder)
        token = tokens.new_token(store, ttl=ttl)
        with open(store.path(tokens.TOKEN_FILE)) as f:
            tokens_json = f.read()
    return {"certificate": cert_pem.decode("ascii"), "key": key_pem.decode("ascii"),
            "fingerprint": tls.fingerprint(cert_pem), "token": token,
            "tokens_json": tokens_json}
