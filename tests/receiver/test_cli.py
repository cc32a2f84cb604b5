import json
import os
import stat

import pytest
from click.testing import CliRunner

from receiver import cli, tokens
from receiver import state as st
from tests.receiver.conftest import read_text
from wire.errors import UsageError


def test_parse_target_roots():
    assert cli.parse_target_roots(["system=/a", "disk1=/b/"]) == {"system": "/a",
                                                                  "disk1": "/b"}
    for bad in (["system"], ["system="], ["root=/a"], ["disk17=/a"], ["system=/a",
                                                                      "system=/b"]):
        with pytest.raises(UsageError):
            cli.parse_target_roots(bad)


def test_parse_duration():
    assert cli.parse_duration("3600") == 3600
    assert cli.parse_duration("90m") == 5400
    assert cli.parse_duration("24h") == 86400
    assert cli.parse_duration("2d") == 172800
    for bad in ("", "0", "-5", "1w", "h"):
        with pytest.raises(UsageError):
            cli.parse_duration(bad)


def test_host_port_and_address():
    assert cli.host_port("::1", 8080) == "[::1]:8080"
    assert cli.host_port("10.0.0.1", 8080) == "10.0.0.1:8080"
    assert cli.guess_address("10.1.2.3") == "10.1.2.3"


def test_child_argvs_carry_no_secret_and_no_rsync_daemon_listens(tmp_path):
    argvs = dict(cli.child_argvs(str(tmp_path), "0.0.0.0", 8080, 8703))
    # the relay starts an rsync daemon per connection over a socket pair
    assert set(argvs) == {"datachannel", "worker", "api"}
    assert not any("rsync" in a for argv in argvs.values() for a in argv)
    api = argvs["api"]
    assert api[api.index("--cert-reqs") + 1] == "1"
    assert api[api.index("--bind") + 1] == "0.0.0.0:8080"
    assert "receiver.app:serve_app(%r)" % str(tmp_path) in api
    assert api[-1] == "receiver.app:serve_app(%r)" % str(tmp_path)
    from gunicorn.config import KNOWN_SETTINGS

    if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS):
        # one fixed $HOME path shared by every gunicorn on the host: must stay off
        assert "--no-control-socket" in api


def test_first_start_makes_token_status_and_console(tmp_path):
    state = str(tmp_path / "state")
    console = str(tmp_path / "console")
    open(console, "w").close()
    store, status = cli.prepare_state(state, "0.0.0.0", "192.0.2.10", 8080, 8703,
                                      {"system": "/t"}, 3600, console)
    assert stat.S_IMODE(os.stat(store.path("status.json")).st_mode) == 0o600
    saved = json.loads(read_text(store.path("status.json")))
    assert saved["token"] == status["token"] and len(status["token"]) >= 32
    assert saved["address"] == "192.0.2.10"
    assert len(saved["fingerprint"]) == 95
    shown = read_text(console)
    assert "token: %s" % status["token"] in shown
    assert "fingerprint: %s" % status["fingerprint"] in shown
    assert store.config()["target_roots"] == {"system": "/t"}
    # a restart keeps the token and the migration
    _, again = cli.prepare_state(state, "0.0.0.0", "192.0.2.10", 8080, 8703, {}, 3600, None)
    assert again["token"] == status["token"]
    assert again["migration_id"] == status["migration_id"]
    tokens.redeem(st.Store(state), status["token"])


def test_console_that_cannot_be_written_is_not_fatal(tmp_path):
    cli.prepare_state(str(tmp_path / "s"), "127.0.0.1", "127.0.0.1", 1, 2, {}, 60,
                      str(tmp_path / "no" / "console"))


def test_token_new_and_status_commands(tmp_path):
    state = str(tmp_path / "state")
    _, first = cli.prepare_state(state, "127.0.0.1", "127.0.0.1", 8080, 8703, {}, 60, None)
    r = CliRunner().invoke(cli.cli, ["token", "new", "--state", state, "--token-ttl", "1h"])
    assert r.exit_code == 0, r.output
    new = [x.split(": ", 1)[1] for x in r.output.splitlines() if x.startswith("token: ")][0]
    assert new != first["token"]
    assert json.loads(read_text(os.path.join(state, "status.json")))["token"] == new
    assert "fingerprint: %s" % first["fingerprint"] in r.output
    tokens.redeem(st.Store(state), new)
    r = CliRunner().invoke(cli.cli, ["status", "--state", state])
    assert r.exit_code == 0 and "NEW" in r.output
    # a receiver launched by hand shows its token on the console AND in status (root
    # only: status.json is 0600): the newest one, never one it replaced
    assert "token: %s (one-time" % new in r.output and first["token"] not in r.output
    assert "fingerprint: %s" % first["fingerprint"] in r.output
    r = CliRunner().invoke(cli.cli, ["status", "--state", state, "--json"])
    out = json.loads(r.output)
    assert out["migration"]["state"] == "NEW" and out["receiver"]["token"] == new


def test_token_new_without_receiver_is_a_config_error(tmp_path):
    assert cli.main(["token", "new", "--state", str(tmp_path / "none")]) == 3


class _Dead(object):
    pid = 4242

    def poll(self):
        return 1


def test_supervise_gives_up_on_quick_failures_even_when_each_takes_a_while(
        tmp_path, monkeypatch):
    """A child that fails 20 s after each start (gunicorn retrying a taken port, say)
    never makes 5 starts in a minute; 5 quick failures in a row still end serve."""
    now = [1000.0]
    loops = []

    def sleep(seconds):
        loops.append(seconds)
        assert len(loops) < 50, "supervise restarts the failing child forever"
        now[0] += 20

    monkeypatch.setattr(cli.time, "time", lambda: now[0])
    monkeypatch.setattr(cli.time, "sleep", sleep)
    monkeypatch.setattr(cli.runner, "start", lambda *a, **kw: _Dead())
    child = cli.Child("worker", ["true"])
    with pytest.raises(cli.Go2AliyunError) as e:
        cli.supervise([child], str(tmp_path), {"now": False})
    assert e.value.code == "receiver.child_failed"
    assert len(loops) == cli.MAX_RESTARTS


def test_console_text_of_a_receiver_launched_by_hand():
    """What the serial console shows (ECS "Get Instance Console Output"): token, address,
    fingerprint and the blank disks it found, or that there are none yet."""
    status = {"migration_id": "m-1", "token": "T0k", "address": "10.0.0.5",
              "fingerprint": "AB:CD", "control_port": 8080, "data_port": 8703,
              "blank_disks": [{"path": "/dev/vdb", "size": 20 << 30},
                              {"path": "/dev/vdc", "size": 5 << 29}]}
    text = cli.render_status(status)
    assert text.splitlines() == [
        "go2aliyun receiver for migration m-1", "token: T0k", "address: 10.0.0.5",
        "fingerprint: AB:CD", "ports: control 8080, data 8703",
        "blank target disks: /dev/vdb (20.0 GiB), /dev/vdc (2.5 GiB)"]
    status["blank_disks"] = []
    assert cli.render_status(status).splitlines()[-1] == \
        "blank target disks: none yet: attach empty disks"
    del status["blank_disks"]  # named disks (launch, --disk): no such line
    assert "blank" not in cli.render_status(status)


def test_platform_settings_from_the_firmware_name():
    # the local provider's qemu names its instances so: the host verifies and images
    assert cli.platform_settings("go2aliyun local instance\n") == {
        "provider": "local", "verify_boot": "provider"}
    assert cli.platform_settings("Alibaba Cloud ECS") == {}
    assert cli.platform_settings("") == {}
