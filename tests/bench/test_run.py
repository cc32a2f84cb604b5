"""The benchmark (bench/): its pure parts on captured data, and one real ``--quick`` run
whose JSON must hold every scenario with sane, non-zero figures. Never timing targets:
those are the benchmark's findings (docs/performance.md), not test assertions."""

import json
import os
import sys

import pytest

from bench import datasets, measure, phases, run
from wire import runner

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(REPO, "tests", "data", "bench")


def test_parse_stat_on_a_captured_line():
    with open(os.path.join(DATA, "proc-stat-qemu.txt")) as f:
        ppid, comm, cpu, rss = measure.parse_stat(f.read())
    assert (ppid, comm) == (1, "qemu-system-x86")
    assert cpu == pytest.approx((5714 + 285) / float(measure.TICK))
    assert rss == 214432 * measure.PAGE


def test_parse_stat_with_a_command_name_holding_spaces_and_parens():
    line = "42 (a b) c)) S 7 42 42 0 -1 0 0 0 0 0 250 50 0 0 20 0 1 0 9 0 10 0"
    assert measure.parse_stat(line) == (7, "a b) c)", 300 / float(measure.TICK),
                                        10 * measure.PAGE)


def test_durations_from_a_real_receiver_history():
    with open(os.path.join(DATA, "history-cutover.json")) as f:
        history = json.load(f)
    spent = phases.durations(history)
    # 15:58:54 -> 15:59:01, 15:59:23 -> 16:00:21, 16:00:21 -> 16:02:00
    assert spent["PREPARING"] == 7
    assert spent["CONVERTING"] == 58
    assert spent["VERIFYING"] == 99
    assert "RELEASED" not in spent  # the last state has no end yet


def test_data_set_cache_and_the_delta_undo(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "CACHE", str(tmp_path))
    root = datasets.ensure("small", count=250)
    assert datasets.ensure("small", count=250) == root  # cached by parameters
    assert datasets.ensure("small", count=251) != root
    files = datasets.data_files(root)
    assert len(files) == 250
    assert all(1024 <= os.path.getsize(p) <= 8192 for p in files)
    before = {p: (_read(p), os.stat(p).st_mtime_ns) for p in files}
    undo = datasets.change_some(root, 0.02)
    changed = [p for p in files if _read(p) != before[p][0]]
    assert len(changed) == 5
    assert all(os.stat(p).st_mtime_ns == before[p][1] + 10 ** 9 for p in changed)
    datasets.undo_changes(undo)
    assert {p: (_read(p), os.stat(p).st_mtime_ns) for p in files} == before


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def test_table_names_every_target():
    results = {"scenarios": {
        "bandwidth_limit": {"limit_KiBps": 10240, "rate_KiBps": 10100, "deviation": -0.014},
        "delta": {"time_vs_full": 0.05, "bytes_vs_full": 0.01},
        "footprint": {"error": "RuntimeError: boom"}}}
    text = run.table(results)
    assert "KiB/s at 10240" in text and "±5%" in text and "yes" in text
    assert "time vs full push" in text and "FAILED" in text and "boom" in text


@pytest.mark.commands
def test_delay_relay_holds_what_goes_to_the_target_and_passes_the_rest(tmp_path):
    """bench.delay as the shaped-link scenario runs it (a process), against an echo
    server: the echo comes back whole, and not before the delay (a lower bound only)."""
    import socket
    import threading
    import time

    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    port = lst.getsockname()[1]

    def echo():
        conn, _ = lst.accept()
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    # the relay listens on 127.0.0.2 (all of 127/8 is loopback) and forwards to 127.0.0.1
    proc = runner.start([sys.executable, "-m", "bench.delay", "0.3", "127.0.0.2",
                         "127.0.0.1", str(port)], cwd=REPO, stdout=runner.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        c = socket.create_connection(("127.0.0.2", port), timeout=20)
        payload = os.urandom(3 * 1024 * 1024)
        began = time.monotonic()
        threading.Thread(target=c.sendall, args=(payload,), daemon=True).start()
        got = b""
        while len(got) < len(payload):
            chunk = c.recv(1 << 16)
            if not chunk:
                break
            got += chunk
        assert time.monotonic() - began >= 0.3
        assert got == payload
        c.close()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        lst.close()


@pytest.mark.root
@pytest.mark.long(minutes=1.2)
def test_quick_benchmark_covers_every_scenario(tmp_path):
    out = str(tmp_path / "results.json")
    r = runner.run([sys.executable, "-m", "bench.run", "--quick", "--out", out],
                   cwd=REPO, ok_codes=None, timeout=600,
                   env={"GO2ALIYUN_BENCH_CACHE": os.environ.get(
                       "GO2ALIYUN_BENCH_CACHE", datasets.CACHE)})
    with open(out) as f:
        res = json.load(f)
    s = res["scenarios"]
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert sorted(s) == sorted(run.SCENARIOS)
    for name in ("full_push", "small_files"):
        o = s[name]
        assert o["ours"]["push_seconds"] > 0 and o["ours"]["cpu_seconds"] > 0
        assert o["ours"]["peak_rss_MiB"] > 1 and o["ours"]["wire_bytes"] >= o["bytes"] * 0.9
        assert o["tar_nc"]["seconds"] > 0 and o["plain_rsync"]["seconds"] > 0
        assert 0 < o["vs_tar_nc"] < 10 and -1 < o["tls_cost"] < 50
    assert s["delta"]["changed_files"] >= 1
    assert 0 < s["delta"]["wire_bytes"] < s["delta"]["full_wire_bytes"]
    for kind in ("random", "text"):
        for mode in ("off", "auto", "auto_delay"):
            assert 0 < s["shaped_link"][kind][mode]["of_link"] < 20
    # compressible data crossed the link in fewer bytes than it has, once compressed
    assert s["bandwidth_limit"]["rate_KiBps"] > 0
    assert abs(s["bandwidth_limit"]["deviation"]) < 0.9
    for k in ("200k", "1M"):
        assert s["footprint"][k]["files"] > 1000
        assert s["footprint"][k]["cpu_seconds"] > 0 and s["footprint"][k]["peak_rss_MiB"] > 1
    assert "skipped" in s["receiver_phases"]  # a qemu boot: the full run only
    assert "go2aliyun MB/s" in r.stdout and "results:" in r.stdout
