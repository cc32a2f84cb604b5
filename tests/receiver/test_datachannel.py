from receiver import datachannel
from receiver import state as st
from receiver.state import State
from tests.receiver.conftest import read_text


def test_render_rsyncd_conf_has_loopback_and_one_module_per_root():
    text = datachannel.render_rsyncd_conf(
        {"system": {"module": "system", "path": "/t/sys"},
         "disk1": {"module": "disk1", "path": "/t/d1"}}, 12345, "/s/logs/rsyncd.log")
    lines = [line.strip() for line in text.splitlines()]
    for want in ("address = 127.0.0.1", "port = 12345", "uid = 0", "gid = 0",
                 "numeric ids = yes", "read only = no", "reverse lookup = no",
                 "munge symlinks = no", "hosts allow = 127.0.0.1",
                 "log file = /s/logs/rsyncd.log"):
        assert want in lines
    assert lines.count("[system]") == 1 and lines.count("[disk1]") == 1
    assert "path = /t/sys" in lines and "path = /t/d1" in lines
    assert lines.index("[disk1]") < lines.index("[system]")


def test_render_refuses_line_breaks():
    import pytest

    with pytest.raises(Exception, match="line break"):
        datachannel.render_rsyncd_conf({"system": {"path": "/a\n[evil]"}}, 1)


def test_modules_open_only_while_taking_data(store, roots):
    doc = store.load()
    doc["modules"] = {"system": {"module": "system", "path": roots["system"]}}
    for s, open_ in ((State.PLANNED, False), (State.READY_FOR_DATA, True),
                     (State.SYNCING, True), (State.CONVERTING, False),
                     (State.FAILED, False)):
        doc["state"] = s.value
        path = datachannel.ensure_rsyncd_conf(store.dir, 999, doc)
        text = read_text(path)
        assert ("[system]" in text) is open_, s


def test_ensure_rewrites_only_on_change(store):
    import os

    doc = st.new_document()
    p = datachannel.ensure_rsyncd_conf(store.dir, 1000, doc)
    m1 = os.stat(p).st_mtime_ns
    os.utime(p, ns=(1, 1))
    datachannel.ensure_rsyncd_conf(store.dir, 1000, doc)
    assert os.stat(p).st_mtime_ns == 1
    datachannel.ensure_rsyncd_conf(store.dir, 1001, doc)
    assert os.stat(p).st_mtime_ns != 1
    assert m1


def test_rsyncd_argv_binds_loopback():
    argv = datachannel.rsyncd_argv("/usr/bin/rsync", "/s", 4242)
    assert "--address=127.0.0.1" in argv and "--port=4242" in argv
    assert "--no-detach" in argv and "--daemon" in argv
