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

Built on gthread's event loop as gunicorn 25.2 made it (``pending_conns``,
``murder_pending``, ``TConn.data_ready``): pyproject.toml asks for gunicorn>=25.2, and
tests/receiver/test_apiworker.py checks that the installed one still has that loop.
"""

import errno
import functools
import selectors
import ssl
import time

from gunicorn import http
from gunicorn import sock as gsock
from gunicorn.workers import gthread

HANDSHAKE_TIMEOUT = 10  # s from connect to the first request bytes (TLS handshake included)

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
        conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        conn.initialized = True  # gthread's init() would wrap the socket again
        if conn.sock.pending():
            self._ready(conn)
            return
        self.poller.modify(conn.sock, selectors.EVENT_READ,
                           functools.partial(self._on_request, conn))

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
