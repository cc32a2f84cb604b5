"""The migrate/status/clear/tls-bridge commands of source_script.cli (CliRunner; the
real flow is in test_migrate_e2e.py)."""

import json
import os

from click.testing import CliRunner

from source_script import cli, migrate
from wire import clientdata


def test_migrate_help_says_where_the_token_may_come_from():
    r = CliRunner().invoke(cli.cli, ["migrate", "--help"])
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    assert "GO2ALIYUN_TOKEN" in text and "client_data" in text
    for opt in ("--receiver", "--token", "--fingerprint", "--sync-only", "--cutover",
                "--yes", "--workdir", "--root", "--config", "--progressfile"):
        assert opt in text


def test_tls_bridge_is_hidden_but_there():
    r = CliRunner().invoke(cli.cli, ["--help"])
    assert "tls-bridge" not in r.output
    assert "migrate" in r.output and "status" in r.output and "clear" in r.output
    r = CliRunner().invoke(cli.cli, ["tls-bridge", "--help"])
    assert r.exit_code == 0 and "RSYNC_CONNECT_PROG" in r.output


def test_sync_only_and_cutover_exclude_each_other(tmp_path):
    rc = cli.main(["migrate", "--workdir", str(tmp_path), "--sync-only", "--cutover"])
    assert rc == 2


def test_migrate_without_receiver_is_not_finished_with_reason_and_log(tmp_path, capsys,
                                                                     monkeypatch):
    monkeypatch.delenv("GO2ALIYUN_TOKEN", raising=False)
    monkeypatch.setattr("source_script.preflight.inventory.collect", lambda root: {})
    monkeypatch.setattr("source_script.push.runner.which", lambda n, path=None: "/x/" + n)
    rc = cli.main(["migrate", "--workdir", str(tmp_path), "--root", str(tmp_path), "--yes",
                   "--image-name", "IMG_1", "--no-check"])
    out = capsys.readouterr().out
    assert rc == 3
    assert "Goto Aliyun Not Finished!" in out
    assert "config.receiver_missing" in out and "--receiver" in out
    logs = os.listdir(os.path.join(str(tmp_path), "logs"))
    assert len(logs) == 1 and "log: " + os.path.join(str(tmp_path), "logs", logs[0]) in out


def test_migrate_without_rsync_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("source_script.push.runner.which", lambda n, path=None: None)
    rc = cli.main(["migrate", "--workdir", str(tmp_path), "--receiver", "10.0.0.2",
                   "--fingerprint", "ab" * 32, "--yes"])
    out = capsys.readouterr().out
    assert rc == 5 and "rsync is not installed" in out and "install" in out


def test_status_and_clear(tmp_path):
    w = str(tmp_path)
    runner = CliRunner()
    r = runner.invoke(cli.cli, ["status", "--workdir", w])
    assert r.exit_code == 0 and "No migration yet" in r.output
    clientdata.save(w, {"migration_id": "m-1", "status": "Synced",
                        "receiver": {"address": "10.0.0.2", "token": "tok-secret-999"},
                        "disks": {"system": {"state": "synced", "files": 5, "bytes": 9,
                                             "number": 1}}})
    r = runner.invoke(cli.cli, ["status", "--workdir", w, "--offline"])
    assert "m-1" in r.output and "Synced" in r.output and "system" in r.output
    r = runner.invoke(cli.cli, ["status", "--workdir", w, "--json", "--offline"])
    shown = json.loads(r.output)
    assert shown["client_data"]["receiver"]["token"] != "tok-secret-999"
    r = runner.invoke(cli.cli, ["clear", "--workdir", w], input="n\n")
    assert r.exit_code != 0 and clientdata.load(w)["migration_id"] == "m-1"
    r = runner.invoke(cli.cli, ["clear", "--workdir", w, "--yes"])
    assert r.exit_code == 0 and "migration_id" not in clientdata.load(w)


def test_what_the_receiver_made_is_told_in_words():
    assert migrate._image_text({"id": "m-123", "provider": "aliyun"}) == "image m-123"
    assert migrate._image_text({"path": "/out/IMG"}) == "image /out/IMG"
    handed = {"by": "host", "disks": ["/dev/vdb"], "id": None, "provider": "local",
              "next": "go2aliyun-cloud --provider local finish (on the host)"}
    assert migrate._image_text(handed) == ("the converted disks are handed over; next: "
                                           "go2aliyun-cloud --provider local finish (on the host)")
    assert migrate._image_text(None) == "image (no id reported)"
