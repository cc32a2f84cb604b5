"""Push one disk with rsync through the TLS bridge, and report progress.

Plan (pure: :func:`rsync_argv`, :func:`filter_rules`) -> apply (:func:`push_disk`
runs rsync via ``wire.runner.start``). rsync keeps every attribute that matters for
a bootable copy (``-aHAXS --numeric-ids``: permissions, owners by number, ACLs,
xattrs, hard links, sparse files, symlinks, fifos), skips device nodes
(``--no-devices``), deletes on the target what vanished on the source (so repeated
``--sync-only`` passes converge), keeps partly sent files in a partial folder so a
rerun resumes them, and honours ``bandwidth_limit`` (KiB/s, rsync's ``--bwlimit``).

Compression (``GO2ALIYUN_COMPRESS``: ``auto`` by default, ``on``, ``off``) is switched on
only where it pays: from the start under a ``bandwidth_limit`` below
:data:`COMPRESS_BELOW`, and otherwise when :class:`LinkWatch` sees, from the TLS
bridge's status file, that the network is what holds the push back and a sample of the
data compresses; rsync is then restarted with zstd (``-z``), resuming where it was.
docs/performance.md has the measurements behind it.

Progress comes from ``--info=progress2`` (:func:`parse_progress2`) and the
totals from ``--stats`` (:func:`parse_stats`); both parsers are tested on output
captured from rsync 3.5 (tests/data/push/).
"""

import contextlib
import ctypes
import logging
import os
import re
import select
import signal
import stat
import subprocess
import tempfile
import threading
import time
import zlib

from source_script import excludes, tlsbridge
from wire import runner
from wire.errors import (
    CommandNotFound,
    NetworkError,
    TransferError,
    TrustError,
)
from wire.logs import redact

log = logging.getLogger(__name__)

PARTIAL_DIR = ".go2aliyun-partial"
# rsync exit codes that mean "the connection went away": worth a retry.
NETWORK_CODES = (10, 12, 30, 35, 255)
VANISHED = 24
# compression: off, on or auto (the default: on when the link, not the CPU or the
# disks, holds the push back; see :class:`LinkWatch`)
COMPRESS_ENV = "GO2ALIYUN_COMPRESS"
COMPRESS_BELOW = 50 * 1000 * 1000  # B/s: a slower link is worth compressing for
PROBE_SECONDS = 3
# rsync's stdout kept for --stats: progress2 writes a line per file, which at a million
# files is tens of MB if all kept
STDOUT_TAIL = 64 * 1024
READ_PACE = 0.02  # s between reads of rsync's stdout (its 64 KiB pipe holds ~800 lines)
NEARLY_DONE = 80  # percent: past this, no restart for compression
MIN_RATIO = 1.3  # a sample that compresses less is not worth compressing
SWITCHED = -1000  # _rsync's answer when it stopped rsync to go on compressed

_PROGRESS = re.compile(
    r"^\s*([\d,]+)\s+(\d+)%\s+([\d.]+)([kMGT]?B)/s\s+(\d+):(\d\d):(\d\d)")
_UNITS = {"B": 1, "kB": 1024, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}
_STATS = {
    "Number of files": "files",
    "Number of created files": "created",
    "Number of deleted files": "deleted",
    "Number of regular files transferred": "transferred_files",
    "Total file size": "total_size",
    "Total transferred file size": "transferred_size",
    "Literal data": "literal_bytes",
    "Matched data": "matched_bytes",
    "Total bytes sent": "sent",
    "Total bytes received": "received",
}


# ------------------------------------------------------------------- parsers

def parse_progress2(line):
    """One ``--info=progress2`` line -> {bytes, percent, rate, eta} (rate in B/s,
    eta in seconds) or None."""
    m = _PROGRESS.match(line)
    if not m:
        return None
    h, mi, s = int(m.group(5)), int(m.group(6)), int(m.group(7))
    return {
        "bytes": int(m.group(1).replace(",", "")),
        "percent": int(m.group(2)),
        "rate": float(m.group(3)) * _UNITS.get(m.group(4), 1),
        "eta": h * 3600 + mi * 60 + s,
    }


def split_progress(buffer):
    """Split rsync's stdout buffer on CR/LF: (complete lines, rest)."""
    parts = re.split(r"[\r\n]", buffer)
    return parts[:-1], parts[-1]


def parse_stats(text):
    """The ``--stats`` block -> {files, transferred_files, total_size, ...} (ints)."""
    out = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        name, _, value = line.partition(":")
        key = _STATS.get(name.strip())
        if key is None:
            continue
        m = re.match(r"\s*([\d,]+)", value)
        if m:
            out[key] = int(m.group(1).replace(",", ""))
    return out


def classify_failure(returncode, stderr, module):
    """rsync's exit code and stderr -> the error to raise (None when it is fine)."""
    if returncode == 0:
        return None
    bridge = tlsbridge.parse_bridge_error(stderr)
    if bridge:
        code, msg = bridge
        if code.startswith("auth."):
            return TrustError(msg, code=code)
        return NetworkError(msg, code=code)
    tail = redact("\n".join(line for line in stderr.strip().splitlines()[-8:]))
    if "No space left on device" in stderr or "Disk quota exceeded" in stderr:
        return TransferError(
            "the receiver's disk for %r is full (rsync exit %s): %s"
            % (module, returncode, tail), code="transfer.disk_full",
            hint="give the target disk more room (system_disk_size / data_disk_size in "
                 "user_config.json) or exclude data in Excludes/, then run again")
    if returncode in NETWORK_CODES or "connection unexpectedly closed" in stderr:
        return NetworkError(
            "the data channel to the receiver broke while sending %r (rsync exit %s): %s"
            % (module, returncode, tail), code="network.interrupted",
            hint="check the network; run `go2aliyun migrate` again to continue")
    if returncode == 20:
        return TransferError("rsync was interrupted by a signal while sending %r" % module,
                             code="transfer.interrupted")
    return TransferError("rsync failed while sending %r (exit %s): %s"
                         % (module, returncode, tail), code="transfer.failed")


# ---------------------------------------------------------------------- plan

def filter_rules(rules, source_dir, workdir=None):
    """The rules for one disk: our work folder first (it holds the session key and
    must never reach the image), then the plan's rules as given."""
    out = []
    if workdir:
        src = os.path.abspath(source_dir).rstrip("/") + "/"
        wd = os.path.abspath(workdir).rstrip("/") + "/"
        if wd.startswith(src) and wd != src:
            out.append("- /" + excludes.escape(wd[len(src):]))
    out.extend(r for r in (rules or []) if r and r.strip())
    return out


def rsync_argv(source_dir, url, filter_file=None, bwlimit=0, timeout=300, rsync="rsync",
               compress=()):
    """The rsync command for one disk (no secret in it: the bridge reads its env).
    ``compress`` is :func:`compress_args`' answer when compression is on."""
    argv = [rsync, "-aHAXS", "--numeric-ids", "--no-devices", "--delete",
            "--no-inc-recursive", "--partial", "--partial-dir=" + PARTIAL_DIR,
            "--info=progress2", "--stats", "--timeout=%d" % int(timeout)]
    if bwlimit:
        argv.append("--bwlimit=%d" % int(bwlimit))
    argv.extend(compress or ())
    if filter_file:
        argv.append("--filter=merge " + filter_file)
    argv += [source_dir.rstrip("/") + "/", url]
    return argv


def compress_modes(version_text):
    """Pure: the compressors ``rsync --version`` lists (3.2+), [] when it names none
    (older rsync: zlib only)."""
    lines = (version_text or "").splitlines()
    for i, line in enumerate(lines):
        if line.strip().lower().startswith("compress list"):
            return lines[i + 1].split() if i + 1 < len(lines) else []
    return []


def compress_args(version_text):
    """Pure: rsync options for compression: zstd (fast, 3-4x on text at a few hundred
    MB/s per core at level 1) when this rsync has it, else zlib at level 1 (rsync < 3.2)."""
    if "zstd" in compress_modes(version_text):
        return ["-z", "--compress-choice=zstd", "--compress-level=1"]
    return ["-z", "--compress-level=1"]


def compress_mode(env=None):
    """``off``, ``on`` or ``auto`` from :data:`COMPRESS_ENV` (default ``auto``)."""
    value = (env if env is not None else os.environ).get(COMPRESS_ENV, "auto").strip().lower()
    if value in ("0", "no", "false"):
        return "off"
    if value in ("1", "yes", "true"):
        return "on"
    if value not in ("off", "on", "auto"):
        raise TransferError("%s=%r: use off, on or auto" % (COMPRESS_ENV, value),
                            code="config.compress")
    return value


def module_url(host, module):
    if ":" in host:
        host = "[%s]" % host
    return "rsync://%s/%s/" % (host, module)


# ----------------------------------------------------------------- progress

def human_bytes(n):
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024
    return "%d B" % n


def format_eta(seconds):
    seconds = int(max(0, seconds))
    return "%d:%02d:%02d" % (seconds // 3600, seconds % 3600 // 60, seconds % 60)


def render_progress(disk, info, overall):
    """One terminal line: disk, bytes, percent, rate, ETA, overall percent."""
    return "%s: %s (%d%%) %s/s ETA %s | overall %d%%" % (
        disk, human_bytes(info["bytes"]), info["percent"], human_bytes(info["rate"]),
        format_eta(info["eta"]), overall)


def render_progressfile(stage, percent):
    """The seed's ``--progressfile`` format: the stage, then 0-100."""
    return "%s\n%d\n" % (stage, max(0, min(100, int(percent))))


def write_progressfile(path, stage, percent):
    if not path:
        return
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write(render_progressfile(stage, percent))
    os.rename(tmp, path)


class Progress(object):
    """Overall progress over the disks of one pass, shown on the terminal and in the
    progress file. ``weights`` maps disk -> expected bytes (equal when unknown)."""

    def __init__(self, disks, weights=None, progressfile=None, echo=None, interval=1.0):
        self.disks = list(disks)
        w = dict((d, float((weights or {}).get(d) or 0)) for d in self.disks)
        if not all(w.values()):
            w = dict((d, 1.0) for d in self.disks)
        self.weights = w
        self.total = sum(w.values()) or 1.0
        self.done = set()
        self.progressfile = progressfile
        self.echo = echo
        self.interval = interval
        self._last = 0.0

    def overall(self, disk=None, percent=0):
        got = sum(self.weights[d] for d in self.done)
        if disk is not None and disk not in self.done:
            got += self.weights.get(disk, 0) * percent / 100.0
        return int(100 * got / self.total)

    def update(self, disk, info):
        now = time.time()
        if now - self._last < self.interval and info["percent"] < 100:
            return
        self._last = now
        overall = self.overall(disk, info["percent"])
        write_progressfile(self.progressfile, "DoRsync", overall)
        if self.echo:
            self.echo(render_progress(disk, info, overall))

    def finished(self, disk):
        self.done.add(disk)
        write_progressfile(self.progressfile, "DoRsync", self.overall())


# --------------------------------------------------------------------- apply

def _die_with_parent():
    with contextlib.suppress(Exception):  # best effort
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


class LinkWatch(object):
    """Is the link the bottleneck? Reads the bridge's status file (see
    ``tlsbridge.Status``: seconds, bytes sent, seconds spent waiting for the network with
    a full queue) and, after ``probe`` seconds of traffic, answers once: compress when
    the network held the bridge back for most of the time at less than ``below`` B/s.
    A slow disk or CPU leaves the bridge's queue empty, so it never triggers then."""

    def __init__(self, path, probe=PROBE_SECONDS, below=COMPRESS_BELOW, busy=0.6,
                 source_dir=None):
        self.path = path
        self.source_dir = source_dir
        self.probe = probe
        self.below = below
        self.busy = busy
        self.first = None
        self.decided = False
        self.finding = None

    def read(self):
        try:
            with open(self.path) as f:
                return parse_bridge_status(f.read())
        except OSError:
            return None

    def check(self, percent=None):
        """True once when compression should be switched on. ``percent``: how far the
        pass is (rsync's overall progress); near the end a restart does not pay. (Not
        rsync's time field: after each file it shows the time spent, not the time left.)"""
        if self.decided:
            return False
        now = self.read()
        if now is None or now[1] < 1024 * 1024:
            return False
        if self.first is None:
            self.first = now
            return False
        seconds = now[0] - self.first[0]
        if seconds < self.probe:
            return False
        self.decided = True
        rate = (now[1] - self.first[1]) / seconds
        waited = (now[2] - self.first[2]) / seconds
        self.finding = {"rate": int(rate), "waited": round(waited, 2)}
        receiver_bound = False
        if len(now) >= 6 and len(self.first) >= 6:
            busy = now[3] - self.first[3]
            rwnd = now[4] - self.first[4]
            # the receiver's window held us back: a slow receiver, not a slow link
            receiver_bound = busy > 0 and rwnd / busy >= 0.5
            self.finding["receiver_window"] = round(rwnd / busy, 2) if busy > 0 else None
        if percent is not None and percent >= NEARLY_DONE:
            return False  # nearly done: a restart would cost more than it saves
        return rate < self.below and waited >= self.busy and not receiver_bound

    def worth_it(self):
        """Only restart rsync for data that compresses (incompressible data would pay
        the restart and the CPU for nothing)."""
        if self.source_dir is None:
            return True
        ratio = sample_ratio(self.source_dir)
        self.finding["sample_ratio"] = round(ratio, 2)
        return ratio >= MIN_RATIO


def sample_ratio(source_dir, max_entries=5000, files=12, piece=256 * 1024, budget=1.0):
    """How well the data of ``source_dir`` compresses (zlib level 1, original/compressed)
    judged on pieces of the largest files among the first ``max_entries`` met, within
    ``budget`` seconds. 1.0 when nothing could be read."""
    began = time.time()
    sizes = []
    seen = 0
    for dirpath, _dirs, names in os.walk(source_dir):
        for name in names:
            path = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode) and st.st_size:
                    sizes.append((st.st_size, path))
            seen += 1
        if seen >= max_entries or time.time() - began > budget / 2:
            break
    raw = packed = 0
    for size, path in sorted(sizes, reverse=True)[:files]:
        with contextlib.suppress(OSError):
            with open(path, "rb") as f:
                f.seek(max(0, size // 2 - piece // 2))
                data = f.read(piece)
            raw += len(data)
            packed += len(zlib.compress(data, 1))
        if time.time() - began > budget:
            break
    return raw / float(packed) if packed else 1.0


def parse_bridge_status(text):
    """Pure: the bridge's status line ``SECONDS BYTES WAITED [BUSY RWND SNDBUF]`` ->
    (float, int, float[, float, float, float])."""
    parts = (text or "").split()
    if len(parts) < 3:
        return None
    try:
        out = (float(parts[0]), int(parts[1]), float(parts[2]))
        if len(parts) >= 6:
            out += tuple(float(p) for p in parts[3:6])
        return out
    except ValueError:
        return None


def require_rsync():
    """The path of this server's rsync, or :class:`CommandNotFound` saying to install it."""
    rsync = runner.which("rsync")
    if not rsync:
        raise CommandNotFound("rsync is not installed on this server", argv=["rsync"],
                              hint="install it: `yum install -y rsync` or "
                                   "`apt-get install -y rsync`")
    return rsync


def push_disk(disk, source_dir, host, module, bridge, rules=(), workdir=None,
              bwlimit=0, timeout=300, on_progress=None, rules_dir=None, compress=None):
    """rsync ``source_dir`` to ``rsync://host/module/`` through the TLS bridge.

    ``bridge`` is ``tlsbridge.bridge_env(...)``. ``compress`` is ``off``, ``on`` or
    ``auto`` (default: :data:`COMPRESS_ENV`, else ``auto``): auto compresses from the
    start under a ``bwlimit`` below :data:`COMPRESS_BELOW`, and otherwise restarts rsync
    with compression (it resumes, nothing is sent twice) when :class:`LinkWatch` finds
    the link is what holds the push back. Returns the parsed ``--stats`` plus
    ``compress`` (the options used, or "").
    """
    rsync = require_rsync()
    if not os.path.isdir(source_dir):
        raise TransferError("the source folder %r of %r does not exist" % (source_dir, disk),
                            code="transfer.source_missing")
    rules = filter_rules(rules, source_dir, workdir)
    filter_file = None
    if rules:
        rules_dir = rules_dir or workdir
        filter_file = os.path.join(rules_dir, "filters-%s.rules" % disk)
        with open(filter_file, "w") as f:
            f.write("\n".join(rules) + "\n")
    mode = compress or compress_mode()
    zargs = ()
    if mode == "on" or (mode == "auto" and bwlimit and bwlimit * 1024 < COMPRESS_BELOW):
        zargs = compress_args(runner.run([rsync, "--version"], ok_codes=None).stdout)
        mode = "on"
    prog, env = tlsbridge.connect_prog()
    env = dict(env)
    env.update(bridge)
    env["RSYNC_CONNECT_PROG"] = prog
    watch = None
    if mode == "auto":
        fd, status = tempfile.mkstemp(prefix="bridge-%s-" % disk, suffix=".status",
                                      dir=rules_dir or workdir)
        os.close(fd)
        env[tlsbridge.ENV["status"]] = status
        watch = LinkWatch(status, source_dir=source_dir)
    try:
        url = module_url(host, module)
        log.info("pushing %s: %s -> %s", disk, source_dir, module)
        rc, stdout, stderr = _rsync(rsync_argv(source_dir, url, filter_file, bwlimit, timeout,
                                               rsync=rsync, compress=zargs),
                                    env, disk, on_progress, watch)
        if rc == SWITCHED:
            # the link holds the push back and the data compresses: go on compressed
            zargs = compress_args(runner.run([rsync, "--version"], ok_codes=None).stdout)
            log.info("%s: the link holds the push back (%s B/s, the bridge waited %d%% "
                     "of the time): going on with compression (%s)", disk,
                     watch.finding["rate"], 100 * watch.finding["waited"], " ".join(zargs))
            rc, stdout, stderr = _rsync(rsync_argv(source_dir, url, filter_file, bwlimit,
                                                   timeout, rsync=rsync, compress=zargs),
                                        env, disk, on_progress, None)
        elif watch is not None and watch.finding:
            # no compression: the link keeps up, or the data does not compress
            log.info("%s: link check %s: no compression", disk, watch.finding)
    finally:
        if watch is not None:
            for path in (watch.path, watch.path + ".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(path)
    stats = parse_stats(stdout)
    stats["compress"] = " ".join(zargs)
    log.info("pushed %s: %s", disk, stats)
    if rc == VANISHED:
        log.warning("some files of %s vanished while being sent (normal on a live "
                    "system); the next pass picks up the rest", disk)
        rc = 0
    error = classify_failure(rc, stderr, module)
    if error is not None:
        raise error
    return stats


def _rsync(argv, env, disk, on_progress, watch):
    """Run rsync, feed its progress; (returncode, stdout, stderr). With a ``watch``,
    ends rsync and returns :data:`SWITCHED` when the watch asks for compression."""
    proc = runner.start(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    err_chunks = []

    def drain():
        # os.read returns what is there; a buffered read(n) would wait for n bytes
        for chunk in iter(lambda: os.read(proc.stderr.fileno(), 65536), b""):
            err_chunks.append(chunk)

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    out_tail = ""  # the --stats block comes last; progress lines are not kept
    buf = ""
    percent = None
    switched = False
    fd = proc.stdout.fileno()
    try:
        while True:
            if watch is not None:
                ready = select.select([fd], [], [], 1.0)[0]
                if watch.check(percent) and watch.worth_it():
                    switched = True
                    proc.terminate()
                    proc.wait()
                    break
                if not ready:
                    continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            text = chunk.decode("utf-8", "replace")
            out_tail = (out_tail + text)[-STDOUT_TAIL:]
            lines, buf = split_progress(buf + text)
            # progress is cumulative: only the newest line of a read counts (rsync
            # writes one per file: a million lines would cost half a minute of CPU)
            for line in reversed(lines):
                info = parse_progress2(line)
                if info:
                    percent = info["percent"]
                    if on_progress:
                        on_progress(disk, info)
                    break
            if len(chunk) < 65536:
                # let rsync's lines pile up: it writes one per file, and waking up for
                # each of a million lines cost `migrate` half a minute of CPU
                time.sleep(READ_PACE)
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    t.join(5)  # the bridge (rsync's child) shares the pipe; it ends with rsync
    stderr = b"".join(err_chunks).decode("utf-8", "replace")
    log.debug("rsync %s exit %s; stderr: %s", disk, rc, redact(stderr)[-4000:])
    if switched:
        return SWITCHED, "", stderr
    return rc, out_tail, stderr
