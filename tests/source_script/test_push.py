"""source_script.push: parsers on rsync 3.5 output captured on this machine, the
rsync command, the filter rules, progress rendering."""

import os

import pytest

from source_script import push
from wire.errors import NetworkError, TransferError, TrustError

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "push")


def _read(name):
    with open(os.path.join(DATA, name), "rb") as f:
        return f.read().decode("utf-8")


def test_parse_progress2_on_captured_output():
    lines, rest = push.split_progress(_read("rsync-progress2-stats.out"))
    infos = [push.parse_progress2(line) for line in lines]
    infos = [i for i in infos if i]
    assert infos[0] == {"bytes": 32768, "percent": 0, "rate": 0.0, "eta": 0}
    assert infos[1]["bytes"] == 8388608 and infos[1]["percent"] == 19
    assert infos[1]["rate"] == pytest.approx(25.06 * 1024 * 1024)
    assert infos[-1]["bytes"] == 41943043 and infos[-1]["percent"] == 100
    assert infos[-1]["eta"] == 2
    assert all(a["bytes"] <= b["bytes"] for a, b in zip(infos, infos[1:]))
    assert push.parse_progress2("Number of files: 7 (reg: 6, dir: 1)") is None


def test_split_progress_keeps_the_unfinished_line():
    lines, rest = push.split_progress("a\rb\nc")
    assert lines == ["a", "b"] and rest == "c"


def test_parse_stats_on_captured_output():
    stats = push.parse_stats(_read("rsync-progress2-stats.out").replace("\r", "\n"))
    assert stats["files"] == 7
    assert stats["transferred_files"] == 6
    assert stats["total_size"] == 41943043
    assert stats["literal_bytes"] == 41943043
    assert stats["matched_bytes"] == 0
    assert stats["sent"] == 41953664


def test_disk_full_is_named():
    err = push.classify_failure(11, _read("rsync-disk-full.err"), "system")
    assert isinstance(err, TransferError)
    assert err.code == "transfer.disk_full"
    assert "full" in err.message and "system_disk_size" in err.hint


def test_failures_are_classified():
    assert push.classify_failure(0, "", "system") is None
    e = push.classify_failure(12, "rsync: connection unexpectedly closed", "disk1")
    assert isinstance(e, NetworkError) and e.code == "network.interrupted"
    bridge = ("go2aliyun tls-bridge: error [auth.fingerprint_mismatch]: the certificate of "
              "x has fingerprint A, not B\nrsync error: ... (code 12)")
    e = push.classify_failure(12, bridge, "system")
    assert isinstance(e, TrustError) and e.code == "auth.fingerprint_mismatch"
    e = push.classify_failure(23, "rsync: some files could not be transferred", "system")
    assert isinstance(e, TransferError) and e.code == "transfer.failed"


def test_rsync_argv_keeps_every_attribute_and_limits():
    argv = push.rsync_argv("/src", "rsync://10.0.0.2/system/", "/w/f.rules", bwlimit=512,
                           timeout=60)
    assert argv[0] == "rsync"
    for opt in ("-aHAXS", "--numeric-ids", "--no-devices", "--delete", "--partial",
                "--partial-dir=" + push.PARTIAL_DIR, "--info=progress2", "--stats",
                "--bwlimit=512", "--timeout=60", "--filter=merge /w/f.rules"):
        assert opt in argv
    assert argv[-2:] == ["/src/", "rsync://10.0.0.2/system/"]
    assert not any(a.startswith("--bwlimit") for a in push.rsync_argv("/", "u", bwlimit=0))


def test_filter_rules_keep_the_work_folder_out():
    rules = push.filter_rules(["- /dev/*"], "/", "/root/go2aliyun")
    assert rules == ["- /root/go2aliyun/", "- /dev/*"]
    assert push.filter_rules(["- /x"], "/srv/root", "/root/w") == ["- /x"]
    assert push.filter_rules([], "/srv/root", "/srv/root/tool") == ["- /tool/"]
    assert push.filter_rules([], "/", "/opt/go2aliyun[1]") == ["- /opt/go2aliyun\\[1]/"]


def test_module_url():
    assert push.module_url("10.0.0.2", "system") == "rsync://10.0.0.2/system/"
    assert push.module_url("fd00::2", "disk1") == "rsync://[fd00::2]/disk1/"


def test_progress_overall_and_progressfile(tmp_path):
    pf = str(tmp_path / "progress")
    shown = []
    p = push.Progress(["system", "disk1"], progressfile=pf, echo=shown.append, interval=0)
    p.update("system", {"bytes": 1024, "percent": 50, "rate": 2048.0, "eta": 65})
    with open(pf) as f:
        assert f.read() == "DoRsync\n25\n"
    assert shown[-1] == "system: 1.0 KiB (50%) 2.0 KiB/s ETA 0:01:05 | overall 25%"
    p.finished("system")
    p.update("disk1", {"bytes": 10, "percent": 10, "rate": 1.0, "eta": 1})
    with open(pf) as f:
        assert f.read() == "DoRsync\n55\n"
    assert push.render_progressfile("Finished", 140) == "Finished\n100\n"


def test_push_disk_names_missing_rsync(monkeypatch, tmp_path):
    monkeypatch.setattr(push.runner, "which", lambda name, path=None: None)
    with pytest.raises(push.CommandNotFound) as e:
        push.push_disk("system", str(tmp_path), "10.0.0.2", "system", {})
    assert "rsync" in str(e.value) and "install" in e.value.hint
