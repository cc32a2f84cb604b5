"""A TCP port inside a network namespace that leads to a port of this test process's
namespace (e.g. the fake cloud on 127.0.0.1): the listening socket is made by a thread
that enters the namespace with setns(2) just for that (a socket stays in the namespace
it was made in); accepting and relaying happen in ordinary threads of the host side.

Root only (setns). Stopped with :meth:`Forward.close`; used as a context manager.
:func:`entered` puts the calling thread itself in a namespace for a block (a receiver
started there, and the test's calls to it)."""

import contextlib
import ctypes
import os
import socket
import threading

CLONE_NEWNET = 0x40000000


def _setns(fd):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "setns: %s" % os.strerror(err))


@contextlib.contextmanager
def entered(ns):
    """This thread in network namespace ``ns`` for the block: the sockets it makes and
    the processes it starts (they keep the namespace) are there; back after it."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open("/var/run/netns/%s" % ns, os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)
        os.close(target)


def listen_in_netns(ns, host="127.0.0.1"):
    """A listening TCP socket on ``host`` and a free port inside namespace ``ns``."""
    box = {}

    def make():
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open("/var/run/netns/%s" % ns, os.O_RDONLY)
        try:
            _setns(target)
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, 0))
                s.listen(16)
                box["sock"] = s
            finally:
                _setns(own)
        except Exception as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e
        finally:
            os.close(own)
            os.close(target)

    t = threading.Thread(target=make)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["sock"]


class Forward(object):
    """``ns``:127.0.0.1:``port`` -> ``target`` (host, port) in our namespace."""

    def __init__(self, ns, target, record=False):
        self.target = target
        self.record = record
        self.sent = bytearray()  # with ``record``: every byte clients sent, in order
        self.sock = listen_in_netns(ns)
        self.port = self.sock.getsockname()[1]
        self._closed = False
        self._conns = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def endpoint(self):
        return "127.0.0.1:%d" % self.port

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._conns += [client, upstream]
            tap = self.sent if self.record else None
            threading.Thread(target=_pipe, args=(client, upstream, tap), daemon=True).start()
            threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()

    def close(self):
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()
        self._thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _pipe(src, dst, tap=None):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if tap is not None:
                tap.extend(data)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
