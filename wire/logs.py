"""Logging set up once per process, with secrets redacted everywhere.

Any value passed to :func:`register_secret` (a token, an AccessKey secret, a key
passphrase) is replaced by ``***`` in every log record, in every formatted
command line and in error text produced by :func:`redact`. Call it as soon as a
secret is read.
"""

import logging
import os
import re
import threading

REDACTED = "***"
_secrets = set()
_lock = threading.Lock()
# Things that look like secrets even if nobody registered them.
_PATTERNS = [
    re.compile(r"(?i)(secret_key|access_key_secret|password|token)(\"?\s*[:=]\s*\"?)([^\s\",}]+)"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
]


def register_secret(value):
    """Remember a secret value so it never appears in logs or error text."""
    if value and len(str(value)) >= 4:
        with _lock:
            _secrets.add(str(value))


def redact(text):
    """Return ``text`` with every registered secret and secret-looking value masked."""
    if text is None:
        return text
    text = str(text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for s in secrets:
        text = text.replace(s, REDACTED)
    text = _PATTERNS[0].sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    text = _PATTERNS[1].sub("-----PRIVATE KEY " + REDACTED + "-----", text)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record):
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string must not kill logging
            msg = str(record.msg)
        record.msg = redact(msg)
        record.args = None
        # The handler's formatter would add the traceback after this filter ran, from
        # exc_info: format it here, redacted, so the formatter uses this text instead.
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_configured = {"done": False}


def setup(logfile=None, verbose=False, stream=None):
    """Configure the root logger once: a console handler and an optional debug file.

    The debug file (mode 0600) gets everything at DEBUG; the console gets INFO
    (or DEBUG with ``verbose``). Safe to call again: later calls only add a file.
    """
    root = logging.getLogger()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not _configured["done"]:
        root.setLevel(logging.DEBUG)
        console = logging.StreamHandler(stream)
        console.setLevel(logging.DEBUG if verbose else logging.WARNING)
        console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        console.addFilter(RedactingFilter())
        root.addHandler(console)
        _configured["done"] = True
    if logfile:
        d = os.path.dirname(logfile)
        if d and not os.path.isdir(d):
            os.makedirs(d, mode=0o700)
        fd = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)
        fh = logging.FileHandler(logfile)
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(fmt)
        fh.addFilter(RedactingFilter())
        root.addHandler(fh)
    return root
