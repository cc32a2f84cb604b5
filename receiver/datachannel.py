"""The data channel: a TLS server (port 8703) that demands a client certificate signed
by this receiver and relays each connection to an rsync daemon bound to 127.0.0.1 on a
random port. Nothing is reachable in plain text beyond loopback.

``rsyncd.conf`` is rendered (pure) from the migration document: one module per target
root, opened only while the migration takes data (``READY_FOR_DATA``, ``SYNCING``).
rsync re-reads its configuration on every connection, and the relay re-renders the file
(when it changed) before connecting, so modules follow the state without restarts.
"""

import asyncio
import contextlib
import logging
import os
import socket
import ssl

from receiver import state as st
from receiver import tls
from wire.errors import Go2AliyunError

log = logging.getLogger(__name__)

CONF_FILE = "rsyncd.conf"
BUFFER = 1024 * 1024
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
    """The TLS front of the rsync daemon."""

    def __init__(self, state_dir, bind, port, rsync_port):
        self.state_dir = os.path.abspath(state_dir)
        self.store = st.Store(self.state_dir)
        self.bind = bind
        self.port = port
        self.rsync_port = rsync_port
        self.ctx = tls.server_context(self.state_dir, require_client_cert=True)

    def _allowed(self, der):
        """The certificate passed the CA check; is it one we issued for this migration?"""
        if not der:
            return False
        serial = tls.serial_hex(der)
        return serial in (self.store.load().get("_clients") or [])

    async def handle(self, reader, writer):
        peer = writer.get_extra_info("peername")
        sslobj = writer.get_extra_info("ssl_object")
        upstream = None
        try:
            der = sslobj.getpeercert(binary_form=True) if sslobj else None
            if not self._allowed(der):
                log.warning("data channel: refused %s (certificate not issued here)", peer)
                return
            _keepalive(writer.get_extra_info("socket"))
            doc = self.store.load()
            ensure_rsyncd_conf(self.state_dir, self.rsync_port, doc)
            up_reader, upstream = await asyncio.open_connection(
                "127.0.0.1", self.rsync_port, limit=BUFFER)
            sock = upstream.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            log.info("data channel: %s connected (state %s)", peer, doc.get("state"))
            await asyncio.gather(
                _pipe(reader, upstream, half_close=True),
                _pipe(up_reader, writer, half_close=False),
            )
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as e:
            log.info("data channel: %s ended: %s", peer, e)
        except asyncio.CancelledError:
            # the relay stops (SIGTERM): the connection ends with it; rsync resumes
            log.info("data channel: %s cut by shutdown", peer)
        except Go2AliyunError as e:
            log.error("data channel: %s", e)
        finally:
            for w in (upstream, writer):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.close()

    async def start(self):
        # "::" alone would be IPv6-only in asyncio; None listens on every address, as
        # gunicorn does for "[::]"
        host = None if self.bind in ("::", "") else self.bind
        return await asyncio.start_server(
            self.handle, host, self.port, ssl=self.ctx, limit=BUFFER,
            ssl_handshake_timeout=20, reuse_address=True,
        )

    def serve_forever(self):
        async def main():
            loop = asyncio.get_running_loop()
            loop.set_exception_handler(_quiet_handler)
            server = await self.start()
            stop = asyncio.Event()
            import signal

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            log.info("data channel on %s:%s -> 127.0.0.1:%s", self.bind, self.port,
                     self.rsync_port)
            async with server:
                await stop.wait()
            log.info("data channel stops")

        asyncio.run(main())


def _keepalive(sock):
    """Notice a source that vanished (link cut) within minutes, not hours."""
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 15)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 8)


async def _pipe(reader, writer, half_close):
    try:
        while True:
            data = await reader.read(BUFFER)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            if half_close and writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()


def _quiet_handler(loop, context):
    """Failed TLS handshakes (no or foreign certificate, plain text) are expected:
    log them short, without a traceback."""
    exc = context.get("exception")
    if isinstance(exc, (ssl.SSLError, ConnectionError, TimeoutError)):
        log.info("data channel: %s: %s", context.get("message"), exc)
        return
    loop.default_exception_handler(context)
