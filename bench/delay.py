"""A delaying TCP relay for the shaped-link scenario: ``python -m bench.delay DELAY
LISTEN_HOST TARGET_HOST PORT [PORT...]``.

This kernel has no netem (nor fq, which could delay by timestamp), so there is no way to
delay packets in the kernel. The benchmark runs this relay in ``ecs`` on the receiver's
address, in front of a receiver bound to 127.0.0.1: it forwards each connection to
``TARGET_HOST:PORT`` and holds every chunk the source sent ``DELAY`` seconds before
handing it on (the way back is not held, as netem on the source's egress would not).
The source's TCP connection still crosses the shaped veth to the relay, which reads as
fast as the link delivers, so the bridge's ``TCP_INFO`` sees the link as it is (and a
slow receiver behind the relay still fills the relay's bounded hold and shows as one).
What it models: every request/answer exchange of rsync's protocol, the API calls and the
TLS handshake wait ``DELAY`` longer, as over a link with that much more latency. What it
does not: TCP does not see the delay in its RTT, so slow start and window growth over a
long path are not modelled; with Linux's autotuned buffers far above the path's
bandwidth-delay product (100 Mbit/s x 20 ms = 250 KB) that part would cost a few round
trips per connection.
"""

import collections
import socket
import sys
import threading
import time

CHUNK = 256 * 1024
HELD = 4 * 1024 * 1024  # bytes held per direction at most (then we stop reading)


class _Held(object):
    """Chunks with the time they may leave; bounded in bytes."""

    def __init__(self):
        self.items = collections.deque()
        self.size = 0
        self.closed = False
        self.cond = threading.Condition()

    def put(self, due, data):
        with self.cond:
            while self.size >= HELD and not self.closed:
                self.cond.wait()
            self.items.append((due, data))
            self.size += len(data)
            self.cond.notify_all()

    def close(self, due):
        with self.cond:
            self.items.append((due, b""))
            self.cond.notify_all()

    def get(self):
        with self.cond:
            while not self.items:
                self.cond.wait()
            due, data = self.items.popleft()
            self.size -= len(data)
            self.cond.notify_all()
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        return data


def _pump(src, dst, delay):
    held = _Held()

    def reader():
        try:
            while True:
                data = src.recv(CHUNK)
                if not data:
                    break
                held.put(time.monotonic() + delay, data)
        except OSError:
            pass
        held.close(time.monotonic() + delay)

    threading.Thread(target=reader, daemon=True).start()
    try:
        while True:
            data = held.get()
            if not data:
                break
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        with held.cond:
            held.closed = True
            held.cond.notify_all()


def _serve(lst, target, delay):
    while True:
        conn, _ = lst.accept()
        try:
            up = socket.create_connection(target)
        except OSError:
            conn.close()
            continue
        for s in (conn, up):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_pump, args=(conn, up, delay), daemon=True).start()
        threading.Thread(target=_pump, args=(up, conn, 0.0), daemon=True).start()


def main(argv):
    delay, listen_host, target_host = float(argv[0]), argv[1], argv[2]
    threads = []
    for port in (int(p) for p in argv[3:]):
        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind((listen_host, port))
        lst.listen(16)
        t = threading.Thread(target=_serve, args=(lst, (target_host, port), delay),
                             daemon=True)
        t.start()
        threads.append(t)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for t in threads:
        t.join()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
