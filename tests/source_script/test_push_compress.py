"""Compression for the push: rsync's compressors from ``rsync --version``, the
``GO2ALIYUN_COMPRESS`` knob, the bridge's link status and the :class:`push.LinkWatch`
that switches compression on when the link (not the disk or the CPU) holds the push back.
"""

import contextlib
import os
import socket
import threading
import time

import pytest

from source_script import push, tlsbridge
from wire.errors import TransferError

from .test_session import TLSServer, _self_signed
from .test_tlsbridge import _client_cert

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "push")


def _version():
    with open(os.path.join(DATA, "rsync-3.5-version.out")) as f:
        return f.read()


def test_compressors_of_this_rsync():
    text = _version()
    assert push.compress_modes(text) == ["zstd", "lz4", "zlibx", "zlib", "none"]
    assert push.compress_args(text) == ["-z", "--compress-choice=zstd", "--compress-level=1"]
    # rsync before 3.2 prints no "Compress list": zlib, cheap level
    old = "\n".join(line for line in text.splitlines()[:9])
    assert push.compress_modes(old) == []
    assert push.compress_args(old) == ["-z", "--compress-level=1"]


def test_rsync_argv_with_and_without_compression():
    plain = push.rsync_argv("/src", "rsync://h/m/")
    assert "-z" not in plain
    z = push.rsync_argv("/src", "rsync://h/m/", compress=["-z", "--compress-choice=zstd"])
    assert z[-4:] == ["-z", "--compress-choice=zstd", "/src/", "rsync://h/m/"]


def test_compress_mode_from_the_environment():
    assert push.compress_mode({}) == "auto"
    assert push.compress_mode({push.COMPRESS_ENV: "OFF"}) == "off"
    assert push.compress_mode({push.COMPRESS_ENV: "1"}) == "on"
    with pytest.raises(TransferError) as e:
        push.compress_mode({push.COMPRESS_ENV: "fast"})
    assert "fast" in str(e.value) and push.COMPRESS_ENV in str(e.value)


def test_parse_bridge_status():
    assert push.parse_bridge_status("12.500 1048576 9.250\n") == (12.5, 1048576, 9.25)
    assert push.parse_bridge_status("") is None
    assert push.parse_bridge_status("1.0 x 2") is None
    assert push.parse_bridge_status("3.0 10 1.5 2.5 0.25 0.0") == (3.0, 10, 1.5, 2.5, 0.25, 0.0)


def _status(path, seconds, sent, waited):
    with open(path, "w") as f:
        f.write("%.3f %d %.3f\n" % (seconds, sent, waited))


def test_link_watch_decides_once(tmp_path):
    path = str(tmp_path / "s")
    w = push.LinkWatch(path, probe=5, below=50 * 10 ** 6)
    assert w.check() is False  # no file yet
    _status(path, 1, 1000, 0)
    assert w.check() is False  # under 1 MiB: not started yet
    _status(path, 2, 2 * 2 ** 20, 0.5)
    assert w.check() is False  # the first sample
    _status(path, 4, 30 * 2 ** 20, 2.4)
    assert w.check() is False  # not probed long enough
    _status(path, 8, 80 * 2 ** 20, 6.0)  # 13 MB/s, waited 92% of the time
    assert w.check(percent=10) is True
    assert w.finding == {"rate": int(78 * 2 ** 20 / 6.0), "waited": 0.92}
    assert w.check(percent=10) is False  # once only


def test_link_watch_with_the_kernels_view(tmp_path):
    path = str(tmp_path / "s")
    link = push.LinkWatch(path, probe=5)
    with open(path, "w") as f:
        f.write("1.0 2097152 0.0 0.5 0.0 0.0\n")
    link.check()
    with open(path, "w") as f:  # busy 6 s, the receiver's window 0.4 s of it
        f.write("7.0 62914560 5.5 6.5 0.4 0.0\n")
    assert link.check(percent=10) is True
    assert link.finding["receiver_window"] == 0.07
    receiver = push.LinkWatch(path, probe=5)
    with open(path, "w") as f:
        f.write("1.0 2097152 0.0 0.5 0.4 0.0\n")
    receiver.check()
    with open(path, "w") as f:  # the receiver's window held it back most of the time
        f.write("7.0 62914560 5.5 6.5 4.4 0.0\n")
    assert receiver.check(percent=10) is False
    assert receiver.finding["receiver_window"] == 0.67


def test_link_watch_leaves_disk_bound_and_nearly_done_pushes_alone(tmp_path):
    path = str(tmp_path / "s")
    slow_disk = push.LinkWatch(path, probe=5)
    _status(path, 1, 2 * 2 ** 20, 0.0)
    slow_disk.check()
    _status(path, 7, 60 * 2 ** 20, 0.3)  # slow, but the bridge never waited
    assert slow_disk.check(percent=10) is False
    fast = push.LinkWatch(path, probe=5)
    _status(path, 1, 2 * 2 ** 20, 0.0)
    fast.check()
    _status(path, 7, 900 * 2 ** 20, 5.5)  # 150 MB/s: compression would slow it
    assert fast.check(percent=10) is False
    ending = push.LinkWatch(path, probe=5)
    _status(path, 1, 2 * 2 ** 20, 0.0)
    ending.check()
    _status(path, 7, 60 * 2 ** 20, 5.8)
    assert ending.check(percent=85) is False


def test_sample_ratio_tells_text_from_random(tmp_path):
    text = tmp_path / "text"
    (text / "var" / "log").mkdir(parents=True)
    line = b"Nov 26 16:00:01 host sshd[%d]: Accepted publickey for root from 10.0.0.%d\n"
    (text / "var" / "log" / "auth.log").write_bytes(
        b"".join(line % (i, i % 250) for i in range(20000)))
    rnd = tmp_path / "random"
    rnd.mkdir()
    (rnd / "blob").write_bytes(os.urandom(1024 * 1024))
    assert push.sample_ratio(str(text)) > 3
    assert push.sample_ratio(str(rnd)) < 1.05
    assert push.sample_ratio(str(tmp_path / "missing")) == 1.0
    # the watch asks for compression only when the data compresses
    for root, worth in ((rnd, False), (text, True)):
        w = push.LinkWatch(str(tmp_path / "none"), source_dir=str(root))
        w.finding = {}
        assert w.worth_it() is worth and "sample_ratio" in w.finding


class SlowSink(TLSServer):
    """mTLS server that takes ``rate`` bytes/s at most: a slow link."""

    def __init__(self, key, crt, rate):
        self.rate = rate
        self.got = 0
        super().__init__(key, crt, ca=crt, rcvbuf=65536)

    def handle(self, tls):
        began = time.time()
        while True:
            data = tls.recv(16384)
            if not data:
                break
            self.got += len(data)
            ahead = self.got / float(self.rate) - (time.time() - began)
            if ahead > 0:
                time.sleep(ahead)


@pytest.mark.commands
def test_bridge_tells_a_slow_receiver_from_a_slow_link(tmp_path):
    """The real relay against a TLS server that reads 4 MB/s: the bridge waits on the
    network, but the kernel says the receiver's window held it back (a slow receiver,
    not a slow link), so LinkWatch leaves compression off."""
    d = str(tmp_path)
    ca_key, ca_crt, fp = _self_signed(d, "receiver")
    key, crt = _client_cert(d, ca_key, ca_crt)
    server = SlowSink(ca_key, ca_crt, rate=4 * 10 ** 6)
    tls = tlsbridge.open_channel("127.0.0.1", server.port, fp, crt, key)
    status_path = os.path.join(d, "bridge.status")
    ours, theirs = socket.socketpair()
    status = tlsbridge.Status(status_path, every=0.2)
    t = threading.Thread(target=tlsbridge.relay, args=(tls, theirs.fileno(), theirs.fileno()),
                         kwargs={"status": status, "linger": 5}, daemon=True)
    t.start()
    watch = push.LinkWatch(status_path, probe=1.5)
    stop = threading.Event()

    def rsync():  # rsync writes as fast as the bridge takes
        payload = os.urandom(1024 * 1024)
        with contextlib.suppress(OSError):
            while not stop.is_set():
                ours.sendall(payload)

    w = threading.Thread(target=rsync, daemon=True)
    w.start()
    asked = None
    began = time.time()
    try:
        while time.time() - began < 20 and not watch.decided:
            time.sleep(0.1)
            if watch.check(percent=10):
                asked = time.time() - began
    finally:
        stop.set()
        ours.shutdown(socket.SHUT_RDWR)
        w.join(10)
        ours.close()
        t.join(30)
    assert watch.decided and asked is None, watch.finding
    assert watch.finding["rate"] < 6 * 10 ** 6 and watch.finding["waited"] > 0.6, watch.finding
    assert watch.finding["receiver_window"] >= 0.5, watch.finding
    with open(status_path) as f:
        seconds, sent, waited, busy, rwnd, _sndbuf = push.parse_bridge_status(f.read())
    assert sent > 2 * 2 ** 20 and 0 < waited <= seconds and 0 < rwnd <= busy


def test_tcp_limits_of_a_real_socket():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    c = socket.create_connection(srv.getsockname())
    s, _ = srv.accept()

    def slow_reader():
        got = 0
        while got < 8 * 10 ** 6:
            got += len(s.recv(65536))
            time.sleep(0.002)

    r = threading.Thread(target=slow_reader)
    r.start()
    try:
        c.sendall(b"x" * (8 * 10 ** 6))
        r.join(30)
        busy, rwnd, sndbuf = tlsbridge.tcp_limits(c)
    finally:
        for x in (c, s, srv):
            x.close()
    assert busy > 0.1 and rwnd > 0.5 * busy and sndbuf >= 0
