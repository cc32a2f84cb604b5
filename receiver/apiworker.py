"""The control API's gunicorn worker: gthread, with the TLS handshake done in the
worker's event loop instead of a thread.

gunicorn's gthread worker hands every new connection to a thread, which waits up to
5 s for a first byte and then does the TLS handshake blocking, with no timeout. With 2
workers x 4 threads, a few dozen idle TCP connections (or a few that send half a
ClientHello) kept a legitimate call from an answer for minutes (issue 14, slowloris).
Here a new connection waits in the worker's poller (no thread) while the handshake
advances without blocking, each time the socket is readable; once it is done and the
first request bytes are there, the connection goes to a thread as gunicorn would have
sent it. A connection that has not got that far within :data:`HANDSHAKE_TIMEOUT` is
closed. The peer certificate stays on ``environ["gunicorn.socket"]`` for the app.

In the thread, gunicorn reads the request blocking, without a timeout: a client that
sends it a byte at a time held the thread for as long as it liked. The parser reads
through :class:`RequestReader` instead, which gives each request (head and body)
:data:`REQUEST_TIMEOUT` seconds plus one second per :data:`READ_RATE` bytes received;
past that the request reads as closed by the client, and the thread is free again.

Built on gthread's event loop as gunicorn 25.2 made it (``pending_conns``,
``murder_pending``, ``TConn.data_ready``): pyproject.toml asks for gunicorn>=25.2, and
tests/receiver/test_apiworker.py checks that the installed one still has that loop.
"""

import errno
import functools
import selectors
import socket
import ssl
import time

from gunicorn import http
from gunicorn import sock as gsock
from gunicorn.workers import gthread

HANDSHAKE_TIMEOUT = 10  # s from connect to the first request bytes (TLS handshake included)
REQUEST_TIMEOUT = 10  # s to read one request, head and body, ...
READ_RATE = 16 * 1024  # ... plus 1 s per this many bytes received (an 8 MB body: 522 s)


class RequestReader(object):
    """The TLS socket as gunicorn's parser reads it (it only calls ``recv``): each
    request must come within its deadline (:meth:`start`), else it reads as closed."""

    def __init__(self, sock, client, log):
        self._sock = sock
        self._client = client
        self._log = log
        self.deadline = time.monotonic() + REQUEST_TIMEOUT
        self.expired = False

    def start(self):
        """A new request (a thread took the connection): a new deadline."""
        if not self.expired:
            self.deadline = time.monotonic() + REQUEST_TIMEOUT

    def recv(self, size):
        if self.expired:
            return b""
        left = self.deadline - time.monotonic()
        try:
            if left <= 0:
                raise socket.timeout()
            self._sock.settimeout(left)
            data = self._sock.recv(size)
        except socket.timeout:
            self.expired = True
            self._log.debug("request from %s not read within its time; closed", self._client)
            return b""
        finally:
            self._sock.settimeout(None)  # gunicorn writes the answer blocking
        self.deadline += len(data) / READ_RATE
        return data


class ThreadWorker(gthread.ThreadWorker):
    """``--worker-class receiver.apiworker.ThreadWorker``."""

    _ssl_ctx = None

    def accept(self, listener):
        if not self.cfg.is_ssl:
            return super().accept(listener)
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return None
        self.nr_conns += 1
        conn = gthread.TConn(self.cfg, client_sock, client_addr, listener.getsockname())
        try:
            if self._ssl_ctx is None:
                self._ssl_ctx = gsock.ssl_context(self.cfg)
            conn.sock = self._ssl_ctx.wrap_socket(
                client_sock, server_side=True, do_handshake_on_connect=False,
                suppress_ragged_eofs=self.cfg.suppress_ragged_eofs)
            conn.sock.setblocking(False)
        except (OSError, ssl.SSLError) as e:
            self.log.debug("cannot start TLS with %s: %s", client_addr, e)
            self.nr_conns -= 1
            conn.close()
            return None
        # pending_conns stays ordered by deadline: every entry is ours, made here
        conn.timeout = time.monotonic() + HANDSHAKE_TIMEOUT
        self.pending_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ,
                             functools.partial(self._on_handshake, conn))
        return None

    def _on_handshake(self, conn, _fileobj):
        """The socket is ready: advance the handshake; when done, wait for the request."""
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self.poller.modify(conn.sock, selectors.EVENT_READ,
                               functools.partial(self._on_handshake, conn))
            return
        except ssl.SSLWantWriteError:
            self.poller.modify(conn.sock, selectors.EVENT_WRITE,
                               functools.partial(self._on_handshake, conn))
            return
        except (OSError, ssl.SSLError) as e:
            # plain HTTP, a foreign certificate, a port probe: expected
            self.log.debug("TLS handshake with %s failed: %s", conn.client, e)
            self._drop(conn)
            return
        conn.reader = RequestReader(conn.sock, conn.client, self.log)
        conn.parser = http.get_parser(self.cfg, conn.reader, conn.client)
        conn.initialized = True  # gthread's init() would wrap the socket again
        if conn.sock.pending():
            self._ready(conn)
            return
        self.poller.modify(conn.sock, selectors.EVENT_READ,
                           functools.partial(self._on_request, conn))

    def handle(self, conn):
        reader = getattr(conn, "reader", None)
        if reader is not None:
            reader.start()
        return super().handle(conn)

    def _on_request(self, conn, _fileobj):
        self._ready(conn)

    def _ready(self, conn):
        """First request bytes are there: a thread takes the connection from here."""
        self.poller.unregister(conn.sock)
        self.pending_conns.remove(conn)
        conn.data_ready = True
        self.enqueue_req(conn)

    def _drop(self, conn):
        self.poller.unregister(conn.sock)
        self.pending_conns.remove(conn)
        self.nr_conns -= 1
        conn.close()
