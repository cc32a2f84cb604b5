"""``go2aliyun-cloud``: launch and cleanup against the fake cloud, the exit codes, and a
real process killed with SIGKILL in the middle of a launch, then run again."""

import base64
import json
import os
import signal
import subprocess
import sys

import pytest

from image_build.cli import main
from tests.fakecloud.fixtures import cloud_cli_args, cloud_workdir
from tests.fakecloud.server import OPERATOR_KEY
from wire import runner

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    return cloud_workdir(tmp_path, monkeypatch)


args = cloud_cli_args


def launch_args(fake):
    return ["launch", "--receiver-image", fake.appliance_image, "--source-cidr", "198.51.100.4",
            "--no-wait-receiver"]


def test_launch_prints_what_the_source_needs_then_cleanup(fake, workdir, capsys):
    assert main(args(fake, workdir, *launch_args(fake), "--json")) == 0
    out = json.loads(capsys.readouterr().out)
    state = json.loads((workdir / "cloud_state.json").read_text())
    assert out["address"] == state["public_ip"] and out["token"] == state["token"]
    assert out["fingerprint"] == state["tls"]["fingerprint"]
    assert fake.world.summary()["instances"] == 1
    # the secret never reaches the log file
    log = (workdir / "logs" / "go2aliyun-cloud.log").read_text()
    assert OPERATOR_KEY[1] not in log and out["token"] not in log
    assert main(args(fake, workdir, "finish", "--keep-instance")) == 0
    image_id = capsys.readouterr().out.strip().split()[-1]
    assert fake.world.images[image_id]["ImageName"] == "web01-migrated"
    assert fake.world.images[image_id]["Status"] == "Available"
    assert main(args(fake, workdir, "cleanup", "--yes")) == 0
    out = capsys.readouterr().out.splitlines()
    state = json.loads((workdir / "cloud_state.json").read_text())
    # exactly what was deleted, in dependency order, and what was kept and why
    assert [line for line in out if line.startswith("deleted:")] == [
        "deleted: instance " + state["instance_id"],
        "deleted: security_group " + state["security_group_id"],
        "deleted: vswitch " + state["vswitch_id"], "deleted: vpc " + state["vpc_id"]]
    kept = [line for line in out if line.startswith("kept:")]
    assert kept[0] == "kept: image %s (the migration's image (Available))" % image_id
    assert sorted(kept[1:]) == sorted("kept: snapshot %s (image %s is made of it)" % (
        s, image_id) for s in state["snapshots"].values())
    summary = fake.world.summary()
    assert (summary["instances"], summary["vpcs"], summary["security_groups"],
            summary["snapshots"]) == (0, 0, 0, 2)  # the image keeps its snapshots


def test_invalid_user_config_exits_3(fake, workdir, capsys):
    (workdir / "user_config.json").write_text(json.dumps({"image_name": "1bad",
                                                          "system_disk_size": 5}))
    assert main(args(fake, workdir, *launch_args(fake))) == 3
    err = capsys.readouterr().err
    assert "image_name" in err and "system_disk_size" in err
    assert fake.world.actions() == []


def test_duplicate_image_name_exits_10_with_the_hint(fake, workdir, capsys):
    fake.world.add_image("web01-migrated")
    assert main(args(fake, workdir, *launch_args(fake))) == 10
    err = capsys.readouterr().err
    assert "cloud.InvalidImageName.Duplicated" in err and "image_name" in err
    assert fake.world.actions() == ["DescribeImages"]


def test_missing_source_address_is_a_usage_error(fake, workdir, capsys):
    assert main(args(fake, workdir, "launch", "--receiver-image", "m-1")) == 2
    assert "--source-cidr" in capsys.readouterr().err


def test_help_explains_the_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "launch" in out and "cleanup" in out and "AliyunECSFullAccess" in out


@pytest.mark.commands
@pytest.mark.parametrize("crash_call", [3, 11])  # after CreateVpc; after RunInstances
def test_process_killed_mid_launch_then_rerun_makes_no_duplicates(fake, workdir, crash_call):
    fake.world.crash_after_call(crash_call)
    proc = runner.start([sys.executable, "-m", "image_build.cli"] + args(
        fake, workdir, *launch_args(fake)), cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        assert fake.world.crash_event.wait(60), "the launch never reached call %d" % crash_call
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    fake.world.revive()
    assert main(args(fake, workdir, *launch_args(fake))) == 0
    summary = fake.world.summary()
    assert (summary["vpcs"], summary["vswitches"], summary["security_groups"],
            summary["instances"]) == (1, 1, 1, 1)
    assert main(args(fake, workdir, "cleanup", "--yes")) == 0
    assert fake.world.summary()["vpcs"] == 0 and fake.world.summary()["instances"] == 0


# ---------------------------------------------------------------- issue 15, part 6

def test_errors_name_their_log_file(fake, workdir, capsys):
    log = str(workdir / "logs" / "go2aliyun-cloud.log")
    # a config error, before any cloud call
    (workdir / "user_config.json").write_text(json.dumps({"image_name": "1bad"}))
    assert main(args(fake, workdir, *launch_args(fake))) == 3
    assert "log: %s" % log in capsys.readouterr().err
    # a cloud error
    (workdir / "user_config.json").unlink()
    workdir_ok = workdir / "ok"
    workdir_ok.mkdir()
    fake.world.add_image("web01-migrated")
    (workdir_ok / "user_config.json").write_text(json.dumps({
        "access_id": OPERATOR_KEY[0], "secret_key": OPERATOR_KEY[1],
        "region_id": "cn-hangzhou", "image_name": "web01-migrated", "system_disk_size": 40,
        "platform": "Debian", "architecture": "x86_64", "bandwidth_limit": 0,
        "data_disks": []}))
    assert main(args(fake, workdir_ok, *launch_args(fake))) == 10
    err = capsys.readouterr().err
    assert "log: %s" % (workdir_ok / "logs" / "go2aliyun-cloud.log") in err
    assert "cloud.InvalidImageName.Duplicated" in (
        workdir_ok / "logs" / "go2aliyun-cloud.log").read_text()
    # --help starts no log and names none
    assert main(["--workdir", str(workdir / "h"), "launch", "--help"]) == 0
    assert "log:" not in capsys.readouterr().err
    assert not (workdir / "h").exists()


def test_missing_keys_name_the_ram_role_flag_and_the_variables(fake, workdir, capsys):
    (workdir / "user_config.json").write_text(json.dumps({
        "region_id": "cn-hangzhou", "image_name": "web01-migrated", "system_disk_size": 40,
        "platform": "Debian", "architecture": "x86_64", "bandwidth_limit": 0,
        "data_disks": []}))
    assert main(args(fake, workdir, *launch_args(fake))) == 3
    err = capsys.readouterr().err
    assert "config.missing_keys" in err and "--use-ram-role" in err
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in err and "ALIBABA_CLOUD_ACCESS_KEY_SECRET" in err
    assert "--ram-role " not in err and "--ram-role," not in err
    assert main(["--help"]) == 0 and "--use-ram-role" in capsys.readouterr().out
    assert fake.world.actions() == []


def test_keys_in_user_config_come_before_the_environment(fake, workdir, monkeypatch, capsys):
    """The order go2aliyun migrate uses (wire.config.cloud_keys): the pair in
    user_config.json wins over the pair in the environment."""
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIfromtheenvironment")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "not-the-operators-secret")
    assert main(args(fake, workdir, *launch_args(fake))) == 0, capsys.readouterr().err
    assert set(fake.world.callers) == {OPERATOR_KEY[0]}
    # and the source's all-in-one mode takes them in the same order, by the same function
    from source_script import allinone
    from wire import config

    assert allinone.keys_from is config.cloud_keys
    # without keys in user_config.json, the environment's pair (never one of each)
    cfg = config.Config(access_id=OPERATOR_KEY[0])
    env = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIenv", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s"}
    assert config.cloud_keys(cfg, env) == ("LTAIenv", "s", None)


def test_launch_without_a_receiver_image_starts_debian12_and_installs(fake, workdir, capsys):
    from tests.image_build.test_launch_onestep import NEWEST, stock_images

    stock_images(fake.world)
    assert main(args(fake, workdir, "launch", "--source-cidr", "198.51.100.4",
                     "--no-wait-receiver", "--pip-index", "https://pypi.example/simple/",
                     "--json")) == 0, capsys.readouterr().err
    run = [p for a, p in fake.world.calls if a == "RunInstances"]
    assert len(run) == 1 and run[0]["ImageId"] == NEWEST
    user_data = base64.b64decode(run[0]["UserData"]).decode()
    assert "go2aliyun-appliance-build" in user_data
    assert json.loads(capsys.readouterr().out)["token"]
