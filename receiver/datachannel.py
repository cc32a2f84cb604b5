"""The data channel: a TLS server (port 8703) that demands a client certificate issued by
this receiver and gives each connection its own rsync daemon, started for it over a
socket pair (``rsync --daemon`` with a socket on stdin runs one session, as under inetd).
Nothing listens but the TLS port: no rsync daemon on loopback that any local user could
reach (it runs as root; a module open to everyone on the host would hand out the copy's
``/etc/shadow`` and take setuid files).

``rsyncd.conf`` is rendered (pure) from the migration document: one module per target
root. The relay starts a daemon only while the migration takes data (``READY_FOR_DATA``,
``SYNCING``); in any other state it answers the rsync greeting with an ``@ERROR`` naming
the state, and a daemon still running when the state leaves them is stopped (its
connection ends).
"""

import contextlib
import errno
import logging
import os
import signal
import socket
import ssl
import subprocess
import threading
import time

from receiver import state as st
from receiver import tls
from wire import files, runner, tlspipe
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


def render_rsyncd_conf(modules, log_file=None):
    """Pure: the text of rsyncd.conf for ``modules`` ({name: {"module", "path"}}). The
    daemon reads it at the start of its one session; it never listens (no address or
    port), so it has no ``hosts allow`` either: the relay let the peer in."""
    lines = [
        "# written by go2aliyun-receiver; re-rendered from the migration state",
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


def taking_data(doc):
    return doc.get("state") in OPEN_STATES


def ensure_rsyncd_conf(state_dir, doc=None):
    """Render rsyncd.conf from the migration state (modules only while it takes data);
    rewrite it, atomically, only when it changed."""
    doc = doc or st.Store(state_dir).load()
    modules = (doc.get("modules") or {}) if taking_data(doc) else {}
    text = render_rsyncd_conf(modules, os.path.join(state_dir, "logs", "rsyncd.log"))
    path = conf_path(state_dir)
    try:
        with open(path) as f:
            if f.read() == text:
                return path
    except FileNotFoundError:
        pass
    files.write_atomic(path, text, mode=0o600)
    return path


def rsyncd_argv(rsync, state_dir):
    """One daemon session on stdin/stdout (a socket: rsync's inetd mode); it binds
    nothing."""
    return [rsync, "--daemon", "--config=%s" % conf_path(state_dir)]


def refusal(state):
    """Pure: the daemon protocol's refusal, as the source's rsync prints it."""
    return ("@ERROR: the receiver takes no data in state %s (only in %s)\n"
            % (state, " and ".join(OPEN_STATES))).encode("ascii")


class Relay(object):
    """The TLS front of the rsync daemons: one thread per connection, each moving bytes
    with :func:`wire.tlspipe.relay` (the loop the source's bridge runs too) between the
    TLS connection and a daemon started for it over a socket pair.

    ``daemon_argv``: the command that serves one session on its stdin/stdout (tests)."""

    def __init__(self, state_dir, bind, port, daemon_argv=None):
        self.state_dir = os.path.abspath(state_dir)
        self.store = st.Store(self.state_dir)
        self.bind = bind
        self.port = port
        self.daemon_argv = daemon_argv or rsyncd_argv(
            runner.which("rsync") or "rsync", self.state_dir)
        self.ctx = tls.server_context(self.state_dir, require_client_cert=True)
        self.server = None
        self.daemons = set()  # the running daemons' Popen objects
        self.lock = threading.Lock()

    def _allowed(self, der):
        """The certificate passed the CA check; is it one we issued for this migration?"""
        if not der:
            return False
        serial = tls.serial_hex(der)
        return serial in (self.store.load().get("_clients") or [])

    def _start_daemon(self):
        """A daemon session on one end of a socket pair; returns (process, our end)."""
        ours, theirs = socket.socketpair()
        try:
            # a session of its own: stop_daemons ends it with its forked helpers
            proc = runner.start(self.daemon_argv, stdin=theirs, stdout=theirs,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        with self.lock:
            self.daemons.add(proc)
        return proc, ours

    def _end_daemon(self, proc, wait=30):
        """The session is over on our side: give the daemon ``wait`` s to finish."""
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            _kill_session(proc)
            proc.wait(5)
        finally:
            with self.lock:
                self.daemons.discard(proc)

    def stop_daemons(self, why):
        """End every daemon session now (the state left the data states, or we stop)."""
        with self.lock:
            running = [p for p in self.daemons if p.poll() is None]
        for p in running:
            log.warning("data channel: ending rsync session (pid %d): %s", p.pid, why)
            _kill_session(p)

    def handle(self, conn, peer):
        """One connection: handshake, check the certificate and the state, relay to a
        daemon of its own."""
        peer = peer[:2] if isinstance(peer, tuple) else peer
        channel = tlspipe.Channel(conn, self.ctx, server_side=True)
        proc = ours = None
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
            if not taking_data(doc):
                log.warning("data channel: refused %s (state %s)", peer, doc.get("state"))
                _refuse(channel, doc.get("state"))
                return
            ensure_rsyncd_conf(self.state_dir, doc)
            proc, ours = self._start_daemon()
            log.info("data channel: %s connected (state %s, %s %s, rsync pid %d)", peer,
                     doc.get("state"), *channel.version(), proc.pid)
            tlspipe.relay(channel, ours.fileno(), ours.fileno(), linger=30)
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
            if ours is not None:
                with contextlib.suppress(OSError):
                    ours.close()  # the daemon reads EOF
            if proc is not None:
                self._end_daemon(proc)
            channel.close()

    def watch_state(self, stop, every=1.0):
        """Stop the running sessions as soon as the migration no longer takes data
        (finalize, a failure): nothing is written to the copy after the last pass."""
        while not stop.wait(every):
            with self.lock:
                busy = any(p.poll() is None for p in self.daemons)
            if not busy:
                continue
            try:
                doc = self.store.load()
            except Go2AliyunError as e:
                log.error("data channel: %s", e)
                continue
            if not taking_data(doc):
                self.stop_daemons("the migration is in state %s" % doc.get("state"))

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
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        self.server = server = self.listen()
        server.settimeout(0.5)
        threading.Thread(target=self.watch_state, args=(stop,), daemon=True,
                         name="watch-state").start()
        log.info("data channel on %s:%s (an rsync daemon per connection)", self.bind,
                 self.port)
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
            self.stop_daemons("the data channel stops")
        log.info("data channel stops")


def _kill_session(proc):
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGTERM)


def _refuse(channel, state):
    """Speak the daemon protocol far enough for the source's rsync to print why: our
    greeting, the client's greeting and module line read (so none is left unread when we
    close, which would reset the connection before the client reads the answer), then
    ``@ERROR``."""
    _send(channel, b"@RSYNCD: 31.0\n")
    got = b""
    with contextlib.suppress(OSError, ssl.SSLError):
        while got.count(b"\n") < 2 and len(got) < 4096:
            data = _recv(channel)
            if not data:
                break
            got += data
    with contextlib.suppress(OSError, ssl.SSLError):
        _send(channel, refusal(state))


def _send(channel, data):
    channel.ssl.write(data)
    channel.sock.sendall(channel.outgoing.read())


def _recv(channel):
    """Plain bytes from the (blocking, HANDSHAKE_TIMEOUT) channel; b"" at the end."""
    while True:
        try:
            return channel.ssl.read(4096)
        except ssl.SSLWantReadError:
            data = channel.sock.recv(tlspipe.READ)
            if not data:
                return b""
            channel.incoming.write(data)
        except ssl.SSLZeroReturnError:
            return b""


def _keepalive(sock):
    """Notice a source that vanished (link cut) within minutes, not hours."""
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 15)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 8)
