"""wire.files: atomic writes leave the old content or the new, never half; reading a
document names the file when it is not JSON."""

import os

import pytest

from wire import files
from wire.errors import Go2AliyunError


def test_write_json_atomic_replaces_whole_and_leaves_no_temp(tmp_path):
    path = str(tmp_path / "doc.json")
    files.write_json_atomic(path, {"a": 1})
    files.write_json_atomic(path, {"b": [1, 2]}, sync_dir=True)
    assert files.read_json(path) == {"b": [1, 2]}
    assert os.listdir(str(tmp_path)) == ["doc.json"]
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_failed_write_keeps_the_old_content(tmp_path):
    path = str(tmp_path / "doc.json")
    files.write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        files.write_json_atomic(path, {"bad": object()})
    assert files.read_json(path) == {"a": 1}
    assert os.listdir(str(tmp_path)) == ["doc.json"]


def test_read_json_missing_is_the_default_and_garbage_names_the_file(tmp_path):
    path = str(tmp_path / "doc.json")
    assert files.read_json(path, default={"x": 0}) == {"x": 0}
    with open(path, "w") as f:
        f.write('{"a": 1,\n  "b": }')
    with pytest.raises(Go2AliyunError) as e:
        files.read_json(path, code="thing.corrupt", hint="remove it")
    assert e.value.code == "thing.corrupt"
    assert path in str(e.value) and "line 2" in str(e.value)
