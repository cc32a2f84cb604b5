"""The all-in-one mode: `go2aliyun migrate` with AccessKeys in user_config.json and no
receiver launches the intermediate instance itself (source_script/allinone.py).

The end-to-end tests run against the fake cloud whose RunInstances starts a real
receiver in the `ecs` namespace from the rendered user-data
(tests/fakecloud/instances.py: `fake_aliyun`); the source runs in `src` and reaches the
fake cloud through a port forwarded into its namespace (tests/helpers/nsforward.py),
which in the first test also records every byte the source sent to the cloud API.
"""

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from image_build.dev.netns import REPO, netns_pair, tail_of
from source_script import allinone
from tests.fakecloud.instances import fake_aliyun
from tests.fakecloud.server import OPERATOR_KEY
from tests.helpers.e2e import show
from tests.helpers.oldpython import needs_python36, python36
from tests.helpers.sourcetree import build as build_tree
from wire import clientdata
from wire.errors import ConfigError, UsageError

FINISHED = "Goto Aliyun Finished!"
NOT_FINISHED = "Goto Aliyun Not Finished!"


# ------------------------------------------------------------------ pure parts

class _Cfg(object):
    def __init__(self, access_id="", secret_key=""):
        self.access_id = access_id
        self.secret_key = secret_key
        self.data_disks = []


def test_keys_come_from_the_config_then_the_environment():
    env = {allinone.KEY_ID_ENV: "LTAIenv", allinone.KEY_SECRET_ENV: "envsecret",
           allinone.STS_TOKEN_ENV: "CAISsts"}
    assert allinone.keys_from(_Cfg("LTAIcfg", "cfgsecret"), env) == ("LTAIcfg", "cfgsecret",
                                                                     None)
    assert allinone.keys_from(_Cfg(), env) == ("LTAIenv", "envsecret", "CAISsts")
    assert allinone.keys_from(_Cfg("LTAIcfg", ""), {}) is None


@pytest.mark.parametrize("flag, client_data, state, keys, mode", [
    (None, {}, {}, True, "launch"),
    (None, {}, {}, False, "manual"),
    ("10.0.0.5", {}, {}, True, "manual"),
    (None, {"receiver": {"address": "10.0.0.5"}}, {}, True, "manual"),
    # a recorded launch resumes, also when client_data already names its receiver
    (None, {"receiver": {"address": "47.96.0.10"}}, {"migration_id": "m-1"}, True, "resume"),
    (None, {}, {"migration_id": "m-1"}, False, "resume"),
    ("10.0.0.5", {}, {"migration_id": "m-1"}, True, "manual"),
])
def test_mode_decision(flag, client_data, state, keys, mode):
    assert allinone.decide(flag, client_data, state, keys) == mode


def test_settings_from_flags_then_client_data_then_defaults():
    opts = allinone.LaunchOptions(receiver_image="m-flag")
    saved = {"all_in_one": {"receiver_image": "m-saved", "source_cidr": "198.51.100.4/32",
                            "private": True}, "vpc_id": "vpc-1", "vswitch_id": "vsw-1"}
    assert allinone.merged_settings(opts, saved) == {
        "receiver_image": "m-flag", "source_cidr": "198.51.100.4/32",
        "instance_type": allinone.DEFAULT_INSTANCE_TYPE, "ram_role": None, "private": True,
        "pip_index": None, "wheel_url": None,
        "vpc_id": "vpc-1", "vswitch_id": "vsw-1", "security_group_id": None}


@pytest.mark.parametrize("address", ["10.1.2.3", "192.168.0.4", "127.0.0.1", "172.16.5.5"])
def test_a_detected_private_address_is_refused_with_the_fix(address):
    with pytest.raises(UsageError) as e:
        allinone.judge_detected_address(address)
    assert address in str(e.value) and "--source-cidr" in e.value.hint


def test_over_a_vpc_intranet_a_detected_private_address_is_the_right_one():
    assert allinone.judge_detected_address("10.1.2.3", private=True) == "10.1.2.3"
    with pytest.raises(UsageError):
        allinone.judge_detected_address("127.0.0.1", private=True)


def test_release_text_names_only_what_launch_made_and_what_is_left():
    state = {"instance_id": "i-1", "vpc_id": "vpc-user", "vswitch_id": "vsw-1",
             "security_group_id": "sg-1",
             "created": {"vpc": False, "vswitch": True, "security_group": True},
             "released": {"security_group": True}, "snapshots": {"a": "s-1"}}
    assert allinone.release_text(state) == "instance i-1, vswitch vsw-1, snapshot s-1"
    state["image_id"] = "m-1"
    assert "snapshot" not in allinone.release_text(state)


@pytest.mark.commands
def test_without_the_cloud_extra_the_error_names_the_install_command():
    # a Python where the Alibaba Cloud SDK cannot be imported (as without the extra)
    code = ("import sys; sys.modules['alibabacloud_ecs20140526'] = None\n"
            "from source_script import allinone\n"
            "from wire.errors import ConfigError\n"
            "try:\n    allinone.require_cloud_extra()\n"
            "except ConfigError as e:\n    print(e.code); print(e.hint)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True, check=True).stdout
    assert out.splitlines()[0] == "config.cloud_extra_missing"
    assert "pip install 'go2aliyun[cloud]'" in out


def test_a_recorded_launch_without_keys_says_where_to_put_them(tmp_path):
    (tmp_path / "cloud_state.json").write_text(json.dumps({"migration_id": "m-1",
                                                           "region_id": "cn-hangzhou"}))
    aio = allinone.prepare(str(tmp_path), _Cfg(), None, {}, allinone.LaunchOptions(),
                           environ={})
    with pytest.raises(ConfigError) as e:
        aio.cloud()
    assert e.value.code == "config.missing_keys" and "user_config.json" in e.value.hint


def test_a_released_launch_is_not_resumed(tmp_path):
    (tmp_path / "cloud_state.json").write_text(json.dumps({
        "migration_id": "m-1", "region_id": "cn-hangzhou", "instance_id": "i-1",
        "released": {"instance": True}}))
    aio = allinone.prepare(str(tmp_path), _Cfg("LTAIx", "y"), None, {},
                           allinone.LaunchOptions(), environ={})
    with pytest.raises(ConfigError) as e:
        aio.launch()
    assert e.value.code == "config.launch_released" and "go2aliyun clear" in e.value.hint


def test_a_launch_recorded_to_its_end_needs_no_launch_settings(tmp_path):
    """`go2aliyun-cloud launch` in the server's folder, then `go2aliyun migrate`: the
    record has the receiver (no --receiver-image needed, no cloud call, no keys)."""
    record = {"migration_id": "m-1", "region_id": "cn-hangzhou", "instance_id": "i-1",
              "address": "203.0.113.9", "token": "tok-" + "z" * 40,
              "tls": {"fingerprint": "ab" * 32}, "status": "Launched"}
    (tmp_path / "cloud_state.json").write_text(json.dumps(record))
    aio = allinone.prepare(str(tmp_path), _Cfg(), None, {}, allinone.LaunchOptions(),
                           environ={})
    assert aio.launch() == ("203.0.113.9", "ab" * 32, record["token"])
    # not to its end (crashed mid-launch): the launch runs again with its settings; no
    # receiver image: the one-step way (the region's Debian 12, the receiver installed)
    record["status"] = "Launching"
    (tmp_path / "cloud_state.json").write_text(json.dumps(record))
    cfg = _Cfg("LTAIx", "y")
    cfg.region_id, cfg.image_name, cfg.data_disks = "cn-hangzhou", "web01", []
    cfg.system_disk_size, cfg.platform, cfg.architecture = 40, "Debian", "x86_64"
    aio = allinone.prepare(str(tmp_path), cfg, None, {}, allinone.LaunchOptions(
        source_cidr="198.51.100.4"), environ={})
    settings = aio.launch_settings()
    assert settings.receiver_image_id is None and settings.install is not None
    assert settings.receiver_timeout > 900  # the install takes its time


# ------------------------------------------------------------------ end to end

class ProcessWatch(object):
    """Samples every process's argv while the migration runs (what `ps` shows)."""

    def __init__(self):
        self.seen = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        with open("/proc/%s/cmdline" % pid, "rb") as f:
                            self.seen.add(f.read())
                    except OSError:
                        pass
            time.sleep(0.1)

    def stop(self):
        self._stop.set()
        self._thread.join(5)


def _json(path):
    with open(path) as f:
        return json.load(f)


def _files_under(*folders):
    for folder in folders:
        for dirpath, _dirs, files in os.walk(folder):
            for name in files:
                path = os.path.join(dirpath, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    with open(path, "rb") as f:
                        yield path, f.read()


def _aio_workdir(base, keys=OPERATOR_KEY):
    work = os.path.join(base, "work")
    source = os.path.join(base, "source")
    os.makedirs(work)
    os.makedirs(source)
    build_tree(source)
    with open(os.path.join(work, "user_config.json"), "w") as f:
        json.dump({"access_id": keys[0], "secret_key": keys[1], "region_id": "cn-hangzhou",
                   "image_name": "AIO_IMAGE", "system_disk_size": 40, "platform": "Debian",
                   "architecture": "x86_64", "bandwidth_limit": 0, "data_disks": []}, f)
    os.chmod(os.path.join(work, "user_config.json"), 0o600)
    return work, source


@pytest.mark.root
def test_migrate_launches_its_own_receiver_and_cleans_up(tmp_path):
    base = str(tmp_path)
    key_id, secret = OPERATOR_KEY
    work, source = _aio_workdir(base)
    watch = None
    with netns_pair() as net, fake_aliyun(net, base, record=True) as cloud:
        fake, appliance, api, instances = (cloud.fake, cloud.appliance, cloud.api,
                                           cloud.instances)
        try:
            def go2aliyun(*argv, module="source_script.cli", timeout=120):
                return net.run(net.src, [sys.executable, "-m", module] + list(argv),
                               env={"PYTHONPATH": REPO}, ok_codes=None,
                               timeout=timeout, cwd=work)

            migrate = ["migrate", "--workdir", work, "--root", source, "--yes",
                       "--no-check", "--io-timeout", "30",
                       "--receiver-image", appliance, "--source-cidr", net.src_ip,
                       "--cloud-endpoint", api.endpoint, "--cloud-protocol", "http",
                       "--cloud-poll-interval", "0.1"]
            watch = ProcessWatch()
            r = go2aliyun(*migrate)
            assert not instances.errors, instances.errors
            assert len(instances.receivers) == 1, show(r)
            rec = instances.receivers[0]
            doc = rec.document()
            # launch -> token session with the launcher-made identity -> push ->
            # finalize; the folder target cannot be converted: an honest failure
            assert r.returncode != 0 and NOT_FINISHED in r.stdout, show(r)
            assert doc["state"] == "FAILED", doc
            assert (doc["error"]["step"], doc["error"]["code"]) == (
                "CONVERTING", "conversion.unavailable"), doc["error"]
            state = _json(os.path.join(work, "cloud_state.json"))
            assert rec.status["fingerprint"] == state["tls"]["fingerprint"]
            data = _json(os.path.join(work, "client_data"))
            assert data["receiver"]["address"] == net.ecs_ip
            assert data["migration_id"] == doc["id"]
            with open(os.path.join(instances.roots[0], "srv", "target", "etc",
                                   "hostname"), "rb") as got, \
                    open(os.path.join(source, "etc", "hostname"), "rb") as want:
                assert got.read() == want.read()
            inst_id = state["instance_id"]
            group = fake.world.groups[state["security_group_id"]]
            assert {(p["PortRange"], p["SourceCidrIp"]) for p in group["Permissions"]} \
                == {("8080/8080", net.src_ip + "/32"), ("8703/8703", net.src_ip + "/32")}
            # the failure says what cleanup would release
            assert "go2aliyun-cloud --workdir %s cleanup" % work in r.stderr, show(r)
            assert "instance %s" % inst_id in r.stderr

            # a rerun resumes: the same instance, no second RunInstances
            r2 = go2aliyun(*migrate)
            assert "retrying it" in r2.stderr, show(r2)
            assert NOT_FINISHED in r2.stdout, show(r2)
            assert fake.world.actions().count("RunInstances") == 1
            assert len(instances.receivers) == 1 and len(fake.world.instances) == 1

            # cleanup releases the instance and the network launch made
            r3 = go2aliyun("--workdir", work, "--endpoint", api.endpoint, "--protocol",
                           "http", "--poll-interval", "0.1", "cleanup", "--yes",
                           module="image_build.cli")
            assert r3.returncode == 0, show(r3)
            watch.stop()
            left = fake.world.summary()
            assert {k: v for k, v in left.items() if k != "images"} == {
                "vpcs": 0, "vswitches": 0, "security_groups": 0, "instances": 0,
                "disks": 0, "snapshots": 0}, left

            # the AccessKey secret went nowhere: not in argv, the source's output or
            # logs, the receiver's files, the user-data, nor any byte sent to the API
            # (the signature is an HMAC made with it; the key itself never travels)
            needle = secret.encode()
            assert not [c for c in watch.seen if needle in c]
            for r_ in (r, r2, r3):
                assert secret not in r_.stdout + r_.stderr
            leaks = [p for p, content in _files_under(os.path.join(work, "logs"),
                                                      instances.roots[0])
                     if needle in content or key_id.encode() in content]
            assert not leaks, leaks
            assert instances.user_data and needle not in instances.user_data[0]
            assert key_id.encode() not in instances.user_data[0]
            for name in ("cloud_state.json", "client_data"):
                with open(os.path.join(work, name), "rb") as f:
                    assert needle not in f.read(), name
            assert api.sent and needle not in api.sent
            assert key_id.encode() in api.sent  # the recording does see the requests
            # the operator's AccessKey, or the receiver's RAM role (STS: its check at start)
            assert all(c == key_id or c.startswith("STS.") for c in fake.world.callers)
        finally:
            if watch is not None:
                watch.stop()


GIB = 1024 ** 3


@pytest.mark.root
def test_all_in_one_makes_the_cloud_image_and_releases_what_it_launched(tmp_path):
    """The whole flow on real disks (no verification boot): the sample Debian server is
    pushed into two loop devices, converted, and the receiver makes the image in the
    fake cloud with its RAM role; the source then releases instance and network."""
    from tests.helpers import sample
    from tests.helpers.e2e import loop_disks

    base = str(tmp_path)
    key_id, secret = OPERATOR_KEY
    work = os.path.join(base, "work")
    os.makedirs(work)
    with open(os.path.join(work, "user_config.json"), "w") as f:
        json.dump({"access_id": key_id, "secret_key": secret, "region_id": "cn-hangzhou",
                   "image_name": "AIO_SAMPLE", "system_disk_size": 20, "platform": "Debian",
                   "architecture": "x86_64", "bandwidth_limit": 0,
                   "data_disks": [{"data_disk_index": 1, "data_disk_size": 20,
                                   "src_path": "/mnt/disk1"}]}, f)
    sample.ensure_sample()
    with sample.mounted_readonly() as source, netns_pair() as net, \
            loop_disks(base, {"system": 20 * GIB, "disk1": 20 * GIB}) as disks:
        def receiver_args(root):
            return ["--disk", "system=" + disks["system"], "--disk",
                    "disk1=" + disks["disk1"], "--no-verify-boot"]

        with fake_aliyun(net, base, receiver_args) as cloud:
            fake, instances = cloud.fake, cloud.instances
            r = net.run(net.src, [
                sys.executable, "-m", "source_script.cli", "migrate", "--workdir", work,
                "--root", source, "--yes", "--receiver-image", cloud.appliance,
                "--source-cidr", net.src_ip, "--ram-role", fake.role]
                + cloud.source_flags(),
                env={"PYTHONPATH": REPO}, ok_codes=None, timeout=600, cwd=work)
            assert not instances.errors, instances.errors
            rec = instances.receivers[0]
            doc = rec.document()
            assert r.returncode == 0 and FINISHED in r.stdout, (
                show(r) + "\nreceiver: %s\n%s" % (json.dumps(doc.get("error")),
                                                   tail_of(rec.log)))
            # a rerun launches nothing and has nothing left to release
            again = net.run(net.src, [
                sys.executable, "-m", "source_script.cli", "migrate", "--workdir", work,
                "--root", source, "--yes", "--cloud-endpoint", cloud.api.endpoint,
                "--cloud-protocol", "http"],
                env={"PYTHONPATH": REPO}, ok_codes=None, timeout=120, cwd=work)
            assert again.returncode == 0 and "already finished" in again.stdout, \
                show(again)
            assert "nothing left to release" in again.stdout
            assert fake.world.actions().count("RunInstances") == 1
    state = _json(os.path.join(work, "cloud_state.json"))
    image_id = doc["image"]["id"]
    assert doc["image"]["provider"] == "aliyun" and image_id in r.stdout
    image = fake.world.images[image_id]
    assert (image["ImageName"], image["Status"], image["Platform"]) == (
        "AIO_SAMPLE", "Available", "Debian")
    assert [(m["Device"], m["Size"]) for m in
            image["DiskDeviceMappings"]["DiskDeviceMapping"]] == [("/dev/xvda", "20"),
                                                                  ("/dev/xvdb", "20")]
    # snapshots and image were made with the receiver's RAM role keys (STS), the
    # launch and the release with the user's AccessKey
    by = {}
    for (action, _), caller in zip(fake.world.calls, fake.world.callers):
        by.setdefault(action, set()).add("sts" if caller.startswith("STS.") else caller)
    assert by["CreateSnapshot"] == {"sts"} and by["CreateImage"] == {"sts"}
    assert by["RunInstances"] == {key_id} and by["DeleteVpc"] == {key_id}
    # what launch made is released; the image and its snapshots stay
    assert "released:" in r.stdout and state["instance_id"] in r.stdout
    left = fake.world.summary()
    assert {k: left[k] for k in ("vpcs", "vswitches", "security_groups", "instances",
                                 "disks")} == dict.fromkeys(
        ("vpcs", "vswitches", "security_groups", "instances", "disks"), 0), left
    assert left["snapshots"] == 2
    assert state["status"] == "Released"
    assert _json(os.path.join(work, "client_data"))["status"] == "Finished"


# ------------------------------------------------------------------ issue 15, part 3 and 6



@pytest.mark.commands
def test_ctrl_c_in_all_in_one_mode_says_not_finished_and_what_to_release(tmp_path):
    """A real SIGINT to `go2aliyun migrate` while it waits for its instance: the seed's
    banner and the cleanup hint, no traceback."""
    from tests.fakecloud.server import FakeCloud
    from tests.fakecloud.world import World

    work, source = _aio_workdir(str(tmp_path))
    with FakeCloud(World(ticks={"instance_pending": 10 ** 9})) as fake:
        appliance = fake.world.add_image("go2aliyun-receiver-0.1.0")
        proc = subprocess.Popen(
            [sys.executable, "-m", "source_script.cli", "migrate", "--workdir", work,
             "--root", source, "--yes", "--no-check", "--receiver-image", appliance,
             "--source-cidr", "203.0.113.5", "--cloud-endpoint", fake.endpoint,
             "--cloud-protocol", "http", "--cloud-poll-interval", "0.1"],
            cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, universal_newlines=True)
        try:
            deadline = time.monotonic() + 60
            while "RunInstances" not in fake.world.actions():
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
                time.sleep(0.1)
            time.sleep(0.5)  # waiting for the instance to run
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    inst_id = _json(os.path.join(work, "cloud_state.json"))["instance_id"]
    assert proc.returncode == 130, out + err
    assert NOT_FINISHED in out and "usage.interrupted" in out, out + err
    assert "go2aliyun-cloud --workdir %s cleanup" % work in err and inst_id in err, err
    assert "Traceback" not in out + err, out + err


def _released_record(work, mid="m-20261207-aaaaaa"):
    with open(os.path.join(work, "cloud_state.json"), "w") as f:
        json.dump({"migration_id": mid, "region_id": "cn-hangzhou", "instance_id": "i-1",
                   "image_id": "m-img", "status": "Released",
                   "released": {"instance": True}}, f)


def test_clear_forgets_a_released_launch_so_a_new_migration_launches(tmp_path):
    from source_script.cli import main

    work = str(tmp_path)
    _released_record(work)
    aio = allinone.prepare(work, _Cfg("LTAIx", "y"), None, {}, allinone.LaunchOptions(),
                           environ={})
    with pytest.raises(ConfigError) as e:  # what a new migration met before the clear
        aio.launch()
    assert e.value.code == "config.launch_released" and "go2aliyun clear" in e.value.hint
    assert main(["clear", "--workdir", work, "--yes"]) == 0
    assert not os.path.exists(os.path.join(work, "cloud_state.json"))
    assert os.path.exists(os.path.join(work, "cloud_state-m-20261207-aaaaaa.json"))
    aio = allinone.prepare(work, _Cfg("LTAIx", "y"), None, {}, allinone.LaunchOptions(),
                           environ={})
    assert not aio.released() and aio.launched() is None  # a fresh launch
    # the seed's --cleardata does the same
    _released_record(work, "m-20261207-bbbbbb")
    assert allinone.forget(work).endswith("cloud_state-m-20261207-bbbbbb.json")


def test_clear_refuses_while_launched_resources_are_not_released(tmp_path, capsys):
    from source_script.cli import main

    work = str(tmp_path)
    with open(os.path.join(work, "cloud_state.json"), "w") as f:
        json.dump({"migration_id": "m-1", "region_id": "cn-hangzhou", "instance_id": "i-9",
                   "vpc_id": "vpc-1", "created": {"vpc": True}}, f)
    clientdata.update(work, migration_id="m-1")
    assert main(["clear", "--workdir", work, "--yes"]) == 2
    err = capsys.readouterr().err
    assert "usage.cloud_resources_left" in err and "instance i-9" in err and "vpc vpc-1" in err
    assert "go2aliyun-cloud --workdir %s cleanup" % work in err
    assert os.path.exists(os.path.join(work, "cloud_state.json"))
    assert clientdata.load(work).get("migration_id") == "m-1"  # nothing forgotten


@pytest.mark.commands
@needs_python36
def test_on_python36_all_in_one_stops_before_any_cloud_call_and_says_what_to_run(tmp_path):
    """The source as shipped for old servers (go2aliyun.pyz) on a real Python 3.6: the
    all-in-one mode cannot run there (the SDK needs 3.8+); it says so at once, with the
    commands to run instead and where, and makes no cloud call; `check` runs."""
    from tests.fakecloud.server import FakeCloud
    from wire import runner

    py36 = python36()
    work, source = _aio_workdir(str(tmp_path))
    pyz = os.path.join(str(tmp_path), "go2aliyun.pyz")
    runner.run([sys.executable, "-m", "image_build.dev.pyz", "-o", pyz], cwd=REPO,
               timeout=300)
    with FakeCloud() as fake:
        r = subprocess.run(
            [py36, pyz, "migrate", "--workdir", work, "--root", source, "--yes",
             "--no-check", "--cloud-endpoint", fake.endpoint, "--cloud-protocol", "http"],
            cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            universal_newlines=True, timeout=120)
        assert fake.world.calls == []
    assert r.returncode == 3, r.stdout + r.stderr
    assert NOT_FINISHED in r.stdout and "config.cloud_python" in r.stdout
    assert "Python 3.8" in r.stdout and "this is Python 3.6" in r.stdout
    assert "go2aliyun-cloud --workdir DIR launch --source-cidr" in r.stdout
    assert "--receiver ADDRESS --fingerprint FP" in r.stdout
    assert not os.path.exists(os.path.join(work, "cloud_state.json"))
    assert OPERATOR_KEY[1] not in r.stdout + r.stderr
    c = subprocess.run([py36, pyz, "check", "--workdir", work, "--root", source],
                       cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=120)
    assert c.returncode == 4 and "check.blocked" in c.stderr, c.stdout + c.stderr


WHEEL = "https://example-bucket.oss-cn-hangzhou.aliyuncs.com/go2aliyun-0.1.0-py3-none-any.whl"


def _settings_file(user_data):
    for f in yaml.safe_load(user_data)["write_files"]:
        if f["path"] == "/etc/go2aliyun/appliance-build.env":
            return base64.b64decode(f["content"]).decode()
    return ""


@pytest.mark.root
def test_one_step_private_migration_starts_debian12_and_goes_on(tmp_path):
    """No --receiver-image, --private with the user's VPC and vSwitch in client_data: the
    newest official Debian 12 image among many is started with no
    public address, its user-data (the install steps, then the receiver) passes
    cloud-init's schema, and once the instance "boots" the migration goes on into it."""
    from tests.fakecloud.fixtures import FakeClock, aliyun_cloud
    from tests.image_build.test_launch_onestep import NEWEST, stock_images
    from wire import runner

    base = str(tmp_path)
    work, source = _aio_workdir(base)
    with netns_pair() as net, fake_aliyun(net, base) as cloud:
        fake, instances = cloud.fake, cloud.instances
        stock_images(fake.world)
        users = aliyun_cloud(fake, FakeClock())
        vpc_id = users.create_vpc("10.0.0.0/16", "users", "users-vpc")
        users.wait_vpc_available(vpc_id)
        vsw_id = users.create_vswitch(vpc_id, "cn-hangzhou-i", "10.0.1.0/24", "users", "v")
        clientdata.update(work, vpc_id=vpc_id, vswitch_id=vsw_id)
        r = net.run(net.src, [
            sys.executable, "-m", "source_script.cli", "migrate", "--workdir", work,
            "--root", source, "--yes", "--no-check", "--io-timeout", "30", "--private",
            "--source-cidr", net.src_ip, "--wheel-url", WHEEL]
            + cloud.source_flags(), env={"PYTHONPATH": REPO}, ok_codes=None, timeout=180,
            cwd=work)
        assert not instances.errors, instances.errors
        assert len(instances.receivers) == 1, show(r)
        doc = instances.receivers[0].document()
        # launched, pushed, then the folder target cannot be converted (as above)
        assert (doc["error"] or {}).get("code") == "conversion.unavailable", show(r)
        run = [p for a, p in fake.world.calls if a == "RunInstances"]
        assert len(run) == 1 and run[0]["ImageId"] == NEWEST
        assert run[0]["InternetMaxBandwidthOut"] == "0" and run[0]["VSwitchId"] == vsw_id
        state = _json(os.path.join(work, "cloud_state.json"))
        assert fake.world.instances[state["instance_id"]]["PublicIp"] is None
        assert state["net_mode"] == 2 and state["address"] == net.ecs_ip
        group = fake.world.groups[state["security_group_id"]]
        assert {p["SourceCidrIp"] for p in group["Permissions"]} == {net.src_ip + "/32"}
        assert "installs the receiver at first boot" in r.stderr, show(r)
        path = os.path.join(base, "user-data")
        with open(path, "wb") as f:
            f.write(instances.user_data[0])
        assert WHEEL in _settings_file(instances.user_data[0])
        assert allinone.load_state_data(work) and _json(os.path.join(
            work, "client_data"))["all_in_one"]["wheel_url"] == WHEEL  # for a rerun
        schema = runner.run(["cloud-init", "schema", "--config-file", path], ok_codes=None)
        assert schema.returncode == 0 and "Valid cloud-config" in schema.stdout, schema.stderr
        # the user's network stays; what launch made goes
        r3 = net.run(net.src, [sys.executable, "-m", "image_build.cli", "--workdir", work]
                     + cloud.source_flags("--") + ["cleanup", "--yes"],
                     env={"PYTHONPATH": REPO}, ok_codes=None, timeout=120, cwd=work)
        assert r3.returncode == 0, show(r3)
        left = fake.world.summary()
        assert (left["instances"], left["security_groups"], left["vpcs"]) == (0, 0, 1), left
