"""stdio <-> TLS relay: rsync's ``RSYNC_CONNECT_PROG`` for the data channel.

rsync runs ``go2aliyun tls-bridge HOST`` (``%H``; in fact ``python -m
source_script.tlsbridge HOST``, see :func:`connect_prog`) and talks the rsync daemon
protocol over the bridge's stdin/stdout. The bridge connects to the receiver's
data port (8703), presents the session's client certificate, checks the pinned
SHA-256 fingerprint of the receiver's certificate before relaying one byte, and
then copies bytes both ways in one thread with non-blocking I/O (an SSL object
must not be used by two threads at once).

Settings come from options or, so that nothing needs quoting in the shell string
rsync runs, from the environment (see :data:`ENV`). Errors go to stderr as
``go2aliyun tls-bridge: error [CODE]: MESSAGE``, which :mod:`source_script.push`
recognises in rsync's stderr.
"""

import collections
import contextlib
import errno
import fcntl
import logging
import os
import select
import shlex
import signal
import socket
import ssl
import struct
import sys
import time

from source_script.session import check_fingerprint, client_context, normalize_fingerprint
from wire import DATA_PORT
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
CHUNK = 64 * 1024
READ = 256 * 1024  # from rsync, and per SSL write
BUFFER = 1024 * 1024  # queued each way before we stop reading


def connect_prog(python=None):
    """The ``RSYNC_CONNECT_PROG`` value and the environment it needs.

    Runs this module (what ``go2aliyun tls-bridge`` runs, without click: click 7 on
    Python 3.6 refuses the ``LC_ALL=C`` rsync inherits) with the same interpreter;
    ``PYTHONPATH`` points at the folder (or zipapp) holding ``source_script``. rsync runs
    the string with ``sh -c`` and replaces ``%H`` by the host.
    """
    import source_script

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
        import ctypes

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
    ctx = client_context(cert, key)
    try:
        tls = ctx.wrap_socket(raw)
    except (ssl.SSLError, OSError) as e:
        raw.close()
        raise TrustError("TLS handshake with the %s failed: %s" % (where, e),
                         code="auth.tls_failed") from e
    try:
        check_fingerprint(tls.getpeercert(binary_form=True), fingerprint, where)
    except TrustError:
        tls.close()
        raise
    return tls


def _set_nonblocking(fd):
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)


class _Queue(object):
    """Bytes waiting to be written, as the chunks they were read in: taking from the
    front never moves the rest (a bytearray's ``del buf[:n]`` copies what is left, for
    every write: that cost the bridge most of its CPU)."""

    def __init__(self):
        self.chunks = collections.deque()
        self.offset = 0  # of the first chunk, already written
        self.size = 0

    def __len__(self):
        return self.size

    def append(self, data):
        self.chunks.append(data)
        self.size += len(data)

    def head(self, limit):
        """A view of up to ``limit`` bytes from the front (no copy)."""
        return memoryview(self.chunks[0])[self.offset:self.offset + limit]

    def consume(self, n):
        self.size -= n
        self.offset += n
        if self.offset >= len(self.chunks[0]):
            self.chunks.popleft()
            self.offset = 0


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


class Status(object):
    """How the link keeps up, written to ``path`` about once a second as one line
    ``SECONDS BYTES_SENT SECONDS_WAITED [BUSY RWND_LIMITED SNDBUF_LIMITED]``: the time
    the bridge waited for the network with its queue to it full (rsync had more to send
    than the connection took), and the kernel's view of why (see :func:`tcp_limits`):
    a slow receiver shows as receive-window-limited, a slow link does not."""

    def __init__(self, path, every=1.0, sock=None):
        self.path = path
        self.every = every
        self.sock = sock
        self.began = self.last = time.monotonic()
        self.sent = 0
        self.waited = 0.0

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


def relay(tls, in_fd=0, out_fd=1, linger=30, status=None):
    """Copy stdin -> TLS and TLS -> stdout until either side ends. After stdin ended,
    what is still queued for the network gets ``linger`` seconds to leave.

    rsync's data is read in ``READ``-sized pieces and handed to OpenSSL whole (it cuts
    the 16 KiB records itself), so a gigabyte costs a few thousand loop turns."""
    _set_nonblocking(in_fd)
    if out_fd != in_fd:
        _set_nonblocking(out_fd)
    tls.setblocking(False)
    to_net = _Queue()
    to_out = _Queue()
    in_eof = net_eof = False
    pending_send = 0  # length of an SSL write that must be retried as is
    status = status or Status(None)
    if status.sock is None:
        status.sock = tls
    while True:
        if in_eof and not to_net:
            break
        if net_eof and not to_out:
            break
        rlist, wlist = [], []
        if not in_eof and len(to_net) < BUFFER:
            rlist.append(in_fd)
        can_read_net = not net_eof and len(to_out) < BUFFER
        if can_read_net:
            rlist.append(tls)
        if to_net:
            wlist.append(tls)
        if to_out:
            wlist.append(out_fd)
        timeout = 0 if (can_read_net and tls.pending()) else (linger if in_eof else None)
        full = len(to_net) >= BUFFER
        before = time.monotonic()
        readable, writable, _ = select.select(rlist, wlist, [], timeout)
        now = time.monotonic()
        if full:
            status.waited += now - before
        status.tick(now)
        if in_eof and not readable and not writable and timeout:
            break  # rsync is gone and the network takes nothing more
        if can_read_net and (tls in readable or tls.pending()):
            try:
                while len(to_out) < BUFFER:
                    data = tls.recv(CHUNK)
                    if not data:
                        net_eof = True
                        break
                    to_out.append(data)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except ssl.SSLError as e:
                if "CERTIFICATE" in str(e).upper():
                    raise TrustError("the receiver refused our client certificate on the "
                                     "data channel: %s" % e, code="auth.certificate_refused",
                                     hint="run `go2aliyun clear` and start again with a "
                                          "fresh token") from e
                net_eof = True
            except OSError:
                net_eof = True
        if in_fd in readable:
            try:
                data = os.read(in_fd, READ)
                if data:
                    to_net.append(data)
                else:
                    in_eof = True
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                    in_eof = True
        while to_net and tls in writable:
            # a retried SSL write must offer the same bytes again
            view = to_net.head(pending_send or READ)
            try:
                sent = tls.send(view)
                pending_send = 0
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                pending_send = len(view)
                break
            except OSError as e:
                raise NetworkError("the data channel closed while sending: %s" % e,
                                   code="network.reset") from e
            finally:
                view.release()
            to_net.consume(sent)
            status.sent += sent
        if to_out and out_fd in writable:
            view = to_out.head(READ)
            try:
                n = os.write(out_fd, view)
                to_out.consume(n)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break  # rsync went away
            finally:
                view.release()
    with contextlib.suppress(OSError):
        tls.close()


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
        tls = open_channel(host, port, normalize_fingerprint(fingerprint), cert, key, timeout)
        # rsync runs us through system() in a forked child of its own, so we do not
        # die with rsync: its end of the socket closing (EOF on stdin) ends us
        relay(tls, linger=min(2.0, timeout), status=Status(env.get(ENV["status"])))
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
