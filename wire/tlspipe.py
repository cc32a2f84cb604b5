"""TLS over memory BIOs, and the one loop that moves bytes between a TLS connection and
plain file descriptors. Both ends of the data channel use it: the source's TLS bridge
(rsync's connect program, :mod:`source_script.tlsbridge`) and the receiver's relay in
front of rsyncd (:mod:`receiver.datachannel`).

Why not ``SSLSocket``: OpenSSL reading from the socket itself reads every 16 KiB TLS
record with two ``recv`` calls (its header, then its body) and writes every record with
one ``send``; asyncio's SSL transport instead allocates a fresh buffer per read, which
cost the receiver's relay a third of its CPU in page faults (docs/performance.md).
Here the socket is read with one ``recv_into`` of up to :data:`READ` bytes into a buffer
allocated once, OpenSSL decrypts from a memory BIO into another buffer allocated once,
and the records of a whole :data:`READ` of plain data leave in one ``send``.

Runs on Python 3.6 (the source side): ``ssl.MemoryBIO`` and ``SSLObject`` are 3.5+.
"""

import collections
import contextlib
import errno
import fcntl
import os
import select
import ssl
import time

READ = 256 * 1024  # per read from either side
BUFFER = 1024 * 1024  # queued each way before we stop reading
_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK)


def set_nonblocking(fd):
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)


class Channel(object):
    """One TLS connection on ``sock``, OpenSSL working on memory BIOs (see the module
    docstring). :meth:`handshake` first, then :func:`relay` moves the data."""

    def __init__(self, sock, context, server_side=False):
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.ssl = context.wrap_bio(self.incoming, self.outgoing, server_side=server_side)
        self.error = None  # the TLS error that ended the relay, if one did

    def handshake(self, timeout):
        """Blocking handshake, ``timeout`` seconds per network wait. Raises
        ``ssl.SSLError`` (after sending the peer our alert) or ``OSError``."""
        self.sock.settimeout(timeout)
        while True:
            try:
                self.ssl.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                with contextlib.suppress(OSError):
                    self._flush()
                raise
            self._flush()
            data = self.sock.recv(READ)
            if not data:
                raise ConnectionResetError(
                    errno.ECONNRESET, "the peer closed the connection in the TLS handshake")
            self.incoming.write(data)
        self._flush()

    def _flush(self):
        """Send what OpenSSL wrote (blocking socket)."""
        if self.outgoing.pending:
            self.sock.sendall(self.outgoing.read())

    def peercert(self):
        """The peer's certificate (DER) or None."""
        return self.ssl.getpeercert(binary_form=True)

    def version(self):
        return self.ssl.version(), (self.ssl.cipher() or ("",))[0]

    def close(self):
        """Best effort close_notify, then close the socket."""
        with contextlib.suppress(ssl.SSLError, OSError, ValueError):
            self.ssl.unwrap()
        with contextlib.suppress(OSError, ValueError):
            if self.outgoing.pending:
                self.sock.setblocking(False)
                self.sock.send(self.outgoing.read())
        with contextlib.suppress(OSError):
            self.sock.close()


class Queue(object):
    """Bytes waiting to be written, as the chunks they came in: taking from the front
    never moves the rest (a bytearray's ``del buf[:n]`` copies what is left)."""

    def __init__(self):
        self.chunks = collections.deque()
        self.offset = 0  # of the first chunk, already written
        self.size = 0

    def __len__(self):
        return self.size

    def append(self, data):
        if data:
            self.chunks.append(data)
            self.size += len(data)

    def head(self):
        """A view of the first chunk's unwritten bytes (no copy)."""
        return memoryview(self.chunks[0])[self.offset:]

    def consume(self, n):
        self.size -= n
        self.offset += n
        if self.offset >= len(self.chunks[0]):
            self.chunks.popleft()
            self.offset = 0


class Meter(object):
    """What :func:`relay` tells about the link: plain bytes handed to TLS (``sent``),
    and the seconds it waited for the network with :data:`BUFFER` queued for it
    (``waited``). ``tick(now)`` is called after every wait."""

    def __init__(self):
        self.sent = 0
        self.waited = 0.0

    def tick(self, now):
        pass


def relay(channel, in_fd, out_fd, linger=30, meter=None):
    """Copy ``in_fd`` -> TLS and TLS -> ``out_fd`` (the same fd for a socket) until
    either side ends and what it sent has been written. After ``in_fd`` ended, what is
    still queued for the network gets ``linger`` seconds to leave. A TLS error ends the
    relay and is kept in ``channel.error``; an error sending to the network raises
    ``OSError``. Closes the channel (close_notify), not the fds."""
    sock, tls = channel.sock, channel.ssl
    meter = meter or Meter()
    sock.setblocking(False)
    set_nonblocking(in_fd)
    if out_fd != in_fd:
        set_nonblocking(out_fd)
    in_buf = memoryview(bytearray(READ))
    net_buf = memoryview(bytearray(READ))
    plain = bytearray(BUFFER)  # decrypted, for out_fd: plain[start:fill]
    plain_view = memoryview(plain)
    start = fill = 0
    to_net = Queue()
    in_eof = net_eof = sock_eof = False
    try:
        while True:
            # decrypt what came in, as far as room for it goes
            starved = False  # OpenSSL holds no complete record
            if not net_eof and fill < BUFFER and (channel.incoming.pending or tls.pending()):
                try:
                    while fill < BUFFER:
                        n = tls.read(BUFFER - fill, plain_view[fill:])
                        if not n:
                            net_eof = True
                            break
                        fill += n
                except ssl.SSLWantReadError:
                    starved = True
                except ssl.SSLZeroReturnError:
                    net_eof = True
                except ssl.SSLError as e:
                    channel.error = e
                    net_eof = True
            if sock_eof and fill < BUFFER and (starved or not channel.incoming.pending):
                net_eof = True  # the peer hung up; a cut record is dropped
            if channel.outgoing.pending:  # records we wrote, or TLS 1.3 housekeeping
                to_net.append(channel.outgoing.read())
            if in_eof and not to_net:
                break
            if net_eof and start == fill:
                break
            rlist, wlist = [], []
            if not in_eof and len(to_net) < BUFFER:
                rlist.append(in_fd)
            if not net_eof and not sock_eof and channel.incoming.pending < BUFFER:
                rlist.append(sock)
            if to_net:
                wlist.append(sock)
            if fill > start:
                wlist.append(out_fd)
            full = len(to_net) >= BUFFER
            timeout = linger if in_eof else None
            before = time.monotonic()
            readable, writable, _ = select.select(rlist, wlist, [], timeout)
            now = time.monotonic()
            if full:
                meter.waited += now - before
            meter.tick(now)
            if in_eof and not readable and not writable:
                break  # the other side is gone and the network takes nothing more
            if sock in readable:
                try:
                    n = sock.recv_into(net_buf)
                    if n:
                        channel.incoming.write(net_buf[:n])
                    else:
                        sock_eof = True
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    sock_eof = True
            if in_fd in readable:
                try:
                    n = os.readv(in_fd, [in_buf])
                except OSError as e:
                    if e.errno not in _AGAIN and e.errno != errno.EINTR:
                        in_eof = True
                    n = None
                if n == 0:
                    in_eof = True
                elif n:
                    tls.write(in_buf[:n])
                    meter.sent += n
                    to_net.append(channel.outgoing.read())
            if sock in writable:
                while to_net:
                    view = to_net.head()
                    want = len(view)
                    try:
                        n = sock.send(view)
                    except (BlockingIOError, InterruptedError):
                        break
                    finally:
                        view.release()
                    to_net.consume(n)
                    if n < want:
                        break
            if out_fd in writable and fill > start:
                try:
                    start += os.write(out_fd, plain_view[start:fill])
                except OSError as e:
                    if e.errno not in _AGAIN and e.errno != errno.EINTR:
                        break  # the reader went away
                if start == fill:
                    start = fill = 0
                elif start >= BUFFER // 2:
                    plain[:fill - start] = plain[start:fill]
                    fill -= start
                    start = 0
    finally:
        plain_view.release()
        channel.close()
