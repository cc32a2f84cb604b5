"""The data channel: a TLS server (port 8703) that demands a client certificate signed
by this receiver and relays each connection to an rsync daemon bound to 127.0.0.1 on a
random port. Nothing is reachable in plain text beyond loopback.

``rsyncd.conf`` is rendered (pure) from the migration document: one module per target
root, opened only while the migration takes data (``READY_FOR_DATA``, ``SYNCING``).
rsync re-reads its configuration on every connection, and the relay re-renders the file
(when it changed) before connecting, so modules follow the state without restarts.
"""

import contextlib
import errno
import logging
import os
import socket
import ssl
import threading
import time

from receiver import state as st
from receiver import tls
from wire import tlspipe
from wire.errors import Go2AliyunError

log = logging.getLogger(__name__)

CONF_FILE = "rsyncd.conf"
HANDSHAKE_TIMEOUT = 20  # s
OPEN_STATES = (st.State.READY_FOR_DATA.value, st.State.SYNCING.value)


def free_port(host="127.0.0.1"):
    """A port nobody listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _conf_value(v):
    v = str(v)
    if "\n" in v or "\r" in v:
        raise Go2AliyunError("rsyncd.conf value %r has a line break" % v, code="internal")
    return v


def render_rsyncd_conf(modules, port, log_file=None):
    """Pure: the text of rsyncd.conf for ``modules`` ({name: {"module", "path"}})."""
    lines = [
        "# written by go2aliyun-receiver; re-rendered from the migration state",
        "address = 127.0.0.1",
        "port = %d" % int(port),
        "uid = 0",
        "gid = 0",
        # whole systems are received: keep symlinks and ids exactly as sent
        "use chroot = yes",
        "munge symlinks = no",
        "numeric ids = yes",
        "read only = no",
        "list = no",
        "reverse lookup = no",
        "forward lookup = no",
        "hosts allow = 127.0.0.1",
        "max verbosity = 1",
        # a connection silent this long (link cut) ends; rsync sends keep-alives
        "timeout = 900",
    ]
    if log_file:
        lines.append("log file = %s" % _conf_value(log_file))
    for name in sorted(modules):
        m = modules[name]
        lines += [
            "",
            "[%s]" % _conf_value(m.get("module", name)),
            "    path = %s" % _conf_value(m["path"]),
            "    comment = go2aliyun target %s" % _conf_value(name),
        ]
    return "\n".join(lines) + "\n"


def conf_path(state_dir):
    return os.path.join(state_dir, CONF_FILE)


def ensure_rsyncd_conf(state_dir, port, doc=None):
    """Render rsyncd.conf from the migration state; rewrite it only when it changed."""
    store = st.Store(state_dir)
    doc = doc or store.load()
    modules = (doc.get("modules") or {}) if doc.get("state") in OPEN_STATES else {}
    text = render_rsyncd_conf(modules, port, os.path.join(state_dir, "logs", "rsyncd.log"))
    path = conf_path(state_dir)
    try:
        with open(path) as f:
            if f.read() == text:
                return path
    except FileNotFoundError:
        pass
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def rsyncd_argv(rsync, state_dir, port):
    return [rsync, "--daemon", "--no-detach", "--address=127.0.0.1", "--port=%d" % int(port),
            "--config=%s" % conf_path(state_dir)]


class Relay(object):
    """The TLS front of the rsync daemon: one thread per connection, each moving bytes
    with :func:`wire.tlspipe.relay` (the loop the source's bridge runs too)."""

    def __init__(self, state_dir, bind, port, rsync_port):
        self.state_dir = os.path.abspath(state_dir)
        self.store = st.Store(self.state_dir)
        self.bind = bind
        self.port = port
        self.rsync_port = rsync_port
        self.ctx = tls.server_context(self.state_dir, require_client_cert=True)
        self.server = None

    def _allowed(self, der):
        """The certificate passed the CA check; is it one we issued for this migration?"""
        if not der:
            return False
        serial = tls.serial_hex(der)
        return serial in (self.store.load().get("_clients") or [])

    def handle(self, conn, peer):
        """One connection: handshake, check the certificate, relay to rsyncd."""
        peer = peer[:2] if isinstance(peer, tuple) else peer
        channel = tlspipe.Channel(conn, self.ctx, server_side=True)
        upstream = None
        try:
            try:
                channel.handshake(HANDSHAKE_TIMEOUT)
            except (ssl.SSLError, OSError) as e:
                # no or a foreign certificate, plain text, a port probe: expected
                log.info("data channel: TLS handshake with %s failed: %s", peer, e)
                return
            if not self._allowed(channel.peercert()):
                log.warning("data channel: refused %s (certificate not issued here)", peer)
                return
            _keepalive(conn)
            doc = self.store.load()
            ensure_rsyncd_conf(self.state_dir, self.rsync_port, doc)
            upstream = socket.create_connection(("127.0.0.1", self.rsync_port), timeout=20)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            log.info("data channel: %s connected (state %s, %s %s)", peer, doc.get("state"),
                     *channel.version())
            tlspipe.relay(channel, upstream.fileno(), upstream.fileno(), linger=30)
            if channel.error is not None:
                log.info("data channel: %s ended: %s", peer, channel.error)
            else:
                log.info("data channel: %s ended", peer)
        except (OSError, ssl.SSLError) as e:
            log.info("data channel: %s ended: %s", peer, e)
        except Go2AliyunError as e:
            log.error("data channel: %s", e)
        except Exception:  # noqa: BLE001 - one connection's bug must not end the others
            log.exception("data channel: %s failed", peer)
        finally:
            if upstream is not None:
                with contextlib.suppress(OSError):
                    upstream.close()
            channel.close()

    def listen(self):
        """The listening socket: every address for "::" or "" (IPv4 too), else ``bind``."""
        if self.bind in ("::", ""):
            if socket.has_dualstack_ipv6():
                return socket.create_server(("", self.port), family=socket.AF_INET6,
                                            dualstack_ipv6=True, backlog=64)
            return socket.create_server(("", self.port), backlog=64)
        family = socket.getaddrinfo(self.bind, self.port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((self.bind, self.port), family=family, backlog=64)

    def serve_forever(self):
        import signal

        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        self.server = server = self.listen()
        server.settimeout(0.5)
        log.info("data channel on %s:%s -> 127.0.0.1:%s", self.bind, self.port,
                 self.rsync_port)
        try:
            while not stop.is_set():
                try:
                    conn, peer = server.accept()
                except (socket.timeout, InterruptedError):
                    continue
                except OSError as e:
                    if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        log.error("data channel: cannot accept: %s", e)
                        time.sleep(0.5)
                        continue
                    raise
                conn.settimeout(None)
                threading.Thread(target=self.handle, args=(conn, peer), daemon=True,
                                 name="relay-%s" % (peer[:2],)).start()
        finally:
            server.close()
        # the relayed connections end with the process; rsync resumes on the next pass
        log.info("data channel stops")


def _keepalive(sock):
    """Notice a source that vanished (link cut) within minutes, not hours."""
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 15)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 8)
