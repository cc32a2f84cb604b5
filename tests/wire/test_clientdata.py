"""wire.clientdata: atomic, private, resumable."""

import json
import os

import pytest

from wire import clientdata
from wire.errors import ConfigError
from wire.logs import redact


def test_missing_or_empty_is_a_fresh_start(tmp_path):
    assert clientdata.load(str(tmp_path)) == {}
    (tmp_path / "client_data").write_text("  \n")
    assert clientdata.load(str(tmp_path)) == {}


def test_save_is_atomic_and_private(tmp_path):
    w = str(tmp_path)
    clientdata.save(w, {"migration_id": "m-1"})
    clientdata.set_disk(w, "system", state="synced", bytes=10)
    data = clientdata.update(w, status="Finished")
    assert data["status"] == "Finished"
    assert os.listdir(w) == ["client_data"]  # no temp file left behind
    assert os.stat(os.path.join(w, "client_data")).st_mode & 0o777 == 0o600
    on_disk = json.loads((tmp_path / "client_data").read_text())
    assert on_disk["disks"]["system"]["bytes"] == 10
    assert on_disk["migration_id"] == "m-1" and on_disk["version"] == 1


def test_bad_json_names_the_file_and_the_fix(tmp_path):
    (tmp_path / "client_data").write_text("{not json")
    with pytest.raises(ConfigError) as e:
        clientdata.load(str(tmp_path))
    assert "client_data" in str(e.value) and "go2aliyun clear" in str(e.value)


def test_a_token_in_client_data_is_a_secret(tmp_path):
    (tmp_path / "client_data").write_text(json.dumps(
        {"receiver": {"address": "10.0.0.2", "token": "tok-from-file-123456"}}))
    clientdata.load(str(tmp_path))
    assert "tok-from-file-123456" not in redact("x tok-from-file-123456 y")


def test_clear_forgets_session_keys(tmp_path):
    w = str(tmp_path)
    sdir = clientdata.session_dir(w)
    os.makedirs(sdir)
    (tmp_path / "session" / "client.key").write_text("key")
    clientdata.save(w, {"migration_id": "m-1", "status": "Syncing"})
    clientdata.clear(w)
    assert clientdata.load(w) == {"version": 1}
    assert not os.path.exists(sdir)
