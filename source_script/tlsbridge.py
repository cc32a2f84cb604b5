"""stdio <-> TLS relay: rsync's ``RSYNC_CONNECT_PROG`` for the data channel.

rsync runs ``go2aliyun tls-bridge HOST`` (``%H``; in fact ``python -m
source_script.tlsbridge HOST``, see :func:`connect_prog`) and talks the rsync daemon
protocol over the bridge's stdin/stdout. The bridge connects to the receiver's
data port (8703), presents the session's client certificate, checks the pinned
SHA-256 fingerprint of the receiver's certificate before relaying one byte, and
then copies bytes both ways in one thread with non-blocking I/O (an SSL object
must not be used by two threads at once): :mod:`wire.tlspipe`, the loop the
receiver's relay runs too.

Settings come from options or, so that nothing needs quoting in the shell string
rsync runs, from the environment (see :data:`ENV`). Errors go to stderr as
``go2aliyun tls-bridge: error [CODE]: MESSAGE``, which :mod:`source_script.push`
recognises in rsync's stderr.
"""

import contextlib
import ctypes
import logging
import os
import shlex
import signal
import socket
import ssl
import struct
import sys
import time

import source_script
from source_script.session import check_fingerprint, client_context, normalize_fingerprint
from wire import DATA_PORT, tlspipe
from wire.errors import ConfigError, Go2AliyunError, NetworkError, TrustError

log = logging.getLogger(__name__)

ENV = {
    "port": "GO2ALIYUN_BRIDGE_PORT",
    "fingerprint": "GO2ALIYUN_BRIDGE_FINGERPRINT",
    "cert": "GO2ALIYUN_BRIDGE_CERT",
    "key": "GO2ALIYUN_BRIDGE_KEY",
    "timeout": "GO2ALIYUN_BRIDGE_TIMEOUT",
    # where to write the link status (see Status) for push's compression choice
    "status": "GO2ALIYUN_BRIDGE_STATUS",
}
ERROR_PREFIX = "go2aliyun tls-bridge: error"


def connect_prog(python=None):
    """The ``RSYNC_CONNECT_PROG`` value and the environment it needs.

    Runs this module (what ``go2aliyun tls-bridge`` runs, without click: click 7 on
    Python 3.6 refuses the ``LC_ALL=C`` rsync inherits) with the same interpreter;
    ``PYTHONPATH`` points at the folder (or zipapp) holding ``source_script``. rsync runs
    the string with ``sh -c`` and replaces ``%H`` by the host.
    """
    base = os.path.dirname(os.path.dirname(os.path.abspath(source_script.__file__)))
    # "exec": sh replaces itself by the bridge, so the bridge is rsync's own child and
    # PR_SET_PDEATHSIG ends it with rsync
    prog = "exec %s -m source_script.tlsbridge %%H" % shlex.quote(python or sys.executable)
    env = {"PYTHONPATH": base}
    return prog, env


def bridge_env(port, fingerprint, cert, key, timeout=30):
    return {ENV["port"]: str(port), ENV["fingerprint"]: normalize_fingerprint(fingerprint),
            ENV["cert"]: cert, ENV["key"]: key, ENV["timeout"]: str(timeout)}


def _die_with_parent():
    """Ask the kernel to SIGTERM us when rsync (our parent) dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001,S110 - best effort; EOF on stdin ends us as well
        pass


def open_channel(host, port, fingerprint, cert, key, timeout=30):
    """Connect, handshake with our client certificate and check the pin. Returns the
    TLS socket."""
    if not cert or not key or not os.path.exists(cert) or not os.path.exists(key):
        raise ConfigError("tls-bridge: the client certificate/key %r/%r does not exist"
                          % (cert, key), hint="run `go2aliyun migrate` (it opens the session)")
    where = "receiver %s:%s (data channel)" % (host, port)
    try:
        raw = socket.create_connection((host, int(port)), timeout=timeout)
    except ConnectionRefusedError as e:
        raise NetworkError("the receiver %s refused the connection on port %s (data channel)"
                           % (host, port), code="network.refused",
                           hint="does the security group admit TCP %s from this server?"
                           % port) from e
    except (socket.timeout, OSError) as e:
        raise NetworkError("cannot reach the receiver %s on port %s (data channel): %s"
                           % (host, port, e), code="network.unreachable",
                           hint="check the route and that TCP %s is open" % port) from e
    tcp_tuning(raw)
    channel = tlspipe.Channel(raw, client_context(cert, key))
    try:
        channel.handshake(timeout)
    except (ssl.SSLError, OSError) as e:
        raw.close()
        raise TrustError("TLS handshake with the %s failed: %s" % (where, e),
                         code="auth.tls_failed") from e
    try:
        check_fingerprint(channel.peercert(), fingerprint, where)
    except TrustError:
        raw.close()
        raise
    return channel


def tcp_tuning(sock):
    """rsync's protocol is request/answer in places (file list, checksums, the end of a
    pass): small writes must leave at once, not wait for an ACK (Nagle)."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


TCP_INFO_LIMITS = struct.Struct("=QQQ")  # tcpi_busy_time, rwnd_limited, sndbuf_limited
TCP_INFO_AT = 168  # their offset in struct tcp_info (Linux >= 4.10), microseconds


def tcp_limits(sock):
    """(busy, receiver-window-limited, send-buffer-limited) seconds of ``sock`` from
    ``TCP_INFO``, or None (kernel too old, not Linux). Busy time the receiver's window
    did not limit is time the network (congestion window, a shaped link) did."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, "TCP_INFO", 11),
                              TCP_INFO_AT + TCP_INFO_LIMITS.size)
    except (OSError, ValueError):
        return None
    if len(raw) < TCP_INFO_AT + TCP_INFO_LIMITS.size:
        return None
    return tuple(v / 1e6 for v in TCP_INFO_LIMITS.unpack_from(raw, TCP_INFO_AT))


class Status(tlspipe.Meter):
    """How the link keeps up, written to ``path`` about once a second as one line
    ``SECONDS BYTES_SENT SECONDS_WAITED [BUSY RWND_LIMITED SNDBUF_LIMITED]``: the time
    the bridge waited for the network with its queue to it full (rsync had more to send
    than the connection took), and the kernel's view of why (see :func:`tcp_limits`):
    a slow receiver shows as receive-window-limited, a slow link does not."""

    def __init__(self, path, every=1.0, sock=None):
        tlspipe.Meter.__init__(self)
        self.path = path
        self.every = every
        self.sock = sock
        self.began = self.last = time.monotonic()

    def tick(self, now):
        if self.path and now - self.last >= self.every:
            self.last = now
            line = "%.3f %d %.3f" % (now - self.began, self.sent, self.waited)
            limits = tcp_limits(self.sock) if self.sock is not None else None
            if limits:
                line += " %.3f %.3f %.3f" % limits
            tmp = self.path + ".tmp"
            with contextlib.suppress(OSError):
                with open(tmp, "w") as f:
                    f.write(line + "\n")
                os.replace(tmp, self.path)


def relay(channel, in_fd=0, out_fd=1, linger=30, status=None):
    """Copy stdin -> TLS and TLS -> stdout until either side ends (see
    :func:`wire.tlspipe.relay`). After stdin ended, what is still queued for the network
    gets ``linger`` seconds to leave."""
    status = status or Status(None)
    if status.sock is None:
        status.sock = channel.sock
    try:
        tlspipe.relay(channel, in_fd, out_fd, linger=linger, meter=status)
    except OSError as e:
        raise NetworkError("the data channel closed while sending: %s" % e,
                           code="network.reset") from e
    e = channel.error
    if e is not None and refused_certificate(e):
        raise TrustError("the receiver refused our client certificate on the data channel: "
                         "%s" % e, code="auth.certificate_refused",
                         hint="run `go2aliyun clear` and start again with a fresh token") \
            from e


def refused_certificate(error):
    """Is this TLS error the receiver's alert that our certificate is not one of its
    own (unknown CA, bad, revoked, expired or missing certificate)?"""
    text = str(error).upper()
    return "CERTIFICATE" in text or "UNKNOWN_CA" in text or "ACCESS_DENIED" in text


def run_bridge(host, port=None, fingerprint=None, cert=None, key=None, timeout=None):
    """The whole bridge; returns an exit code and prints errors for rsync's stderr."""
    env = os.environ
    port = port or env.get(ENV["port"]) or DATA_PORT
    fingerprint = fingerprint or env.get(ENV["fingerprint"])
    cert = cert or env.get(ENV["cert"])
    key = key or env.get(ENV["key"])
    timeout = float(timeout or env.get(ENV["timeout"]) or 30)
    _die_with_parent()
    try:
        channel = open_channel(host, port, normalize_fingerprint(fingerprint), cert, key,
                               timeout)
        # rsync runs us through system() in a forked child of its own, so we do not
        # die with rsync: its end of the socket closing (EOF on stdin) ends us
        relay(channel, linger=min(2.0, timeout), status=Status(env.get(ENV["status"])))
    except Go2AliyunError as e:
        sys.stderr.write("%s [%s]: %s\n" % (ERROR_PREFIX, e.code, e))
        sys.stderr.flush()
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


def parse_bridge_error(stderr_text):
    """Find the bridge's error line in rsync's stderr: (code, message) or None."""
    for line in (stderr_text or "").splitlines():
        i = line.find(ERROR_PREFIX)
        if i < 0:
            continue
        rest = line[i + len(ERROR_PREFIX):].strip()
        if rest.startswith("[") and "]" in rest:
            code = rest[1:rest.index("]")]
            msg = rest[rest.index("]") + 1:].lstrip(": ").strip()
            return code, msg
    return None


if __name__ == "__main__":
    sys.exit(run_bridge(sys.argv[1]))
