"""`go2aliyun-cloud --provider aliyun build-image` against the fake cloud through the real
SDK: the build template, the whole build, a failing self-check, a taken image name, and a
crash after every API call followed by a rerun (the pattern of test_crash_resume.py)."""

import base64
import json

import pytest
import yaml

from image_build import buildimage
from tests.fakecloud.fixtures import REGION, aliyun_cloud
from tests.fakecloud.world import appliance_build_version
from wire import runner
from wire.errors import CloudError, UsageError

VERSION = "0.2.0"
BASE_IMAGE_NAME = "debian_12_7_x64_20G_alibase_20241201.vhd"
NOTHING = {"vpcs": 0, "vswitches": 0, "security_groups": 0, "instances": 0, "disks": 0,
           "snapshots": 0}
# API calls of a clean build (see test_call_count_is_current)
BUILD_CALLS = 46


def settings_for(fake, **kw):
    base = fake.world.add_image(BASE_IMAGE_NAME, owner="system")
    values = dict(region_id=REGION, base_image_id=base, version=VERSION)
    values.update(kw)
    return buildimage.BuildSettings(**values)


def own_images(fake):
    return {i["ImageName"]: i for i in fake.world.images.values()
            if i["ImageOwnerAlias"] == "self"}


def files_of(text):
    doc = yaml.safe_load(text)
    return doc, {f["path"]: base64.b64decode(f["content"]).decode()
                 for f in doc["write_files"]}


# ---------------------------------------------------------------- the template
def test_template_renders_the_settings_unit_and_script(fake):
    s = settings_for(fake, wheel_url="https://example.com/go2aliyun-0.2.0-py3-none-any.whl")
    text = buildimage.render_build_user_data(s)
    assert text.startswith("#cloud-config\n")
    assert len(text.encode()) < 32 * 1024
    doc, files = files_of(text)
    assert doc["runcmd"] == [["/usr/local/sbin/go2aliyun-appliance-build"]]
    assert doc["power_state"]["mode"] == "poweroff" and doc["power_state"]["condition"]
    with open("cloud-init/go2aliyun-receiver.service") as f:
        assert files["/etc/systemd/system/go2aliyun-receiver.service"] == f.read()
    script = files["/usr/local/sbin/go2aliyun-appliance-build"]
    assert script.startswith("#!/bin/sh\n") and 'say "ready $got"' in script
    assert buildimage.render_settings(s) in files[buildimage.SETTINGS_PATH]
    # the fake cloud recognises it as a build (and nothing else)
    assert appliance_build_version(text.encode()) == VERSION
    assert appliance_build_version(b"#cloud-config\nruncmd: [[true]]\n") is None


@pytest.mark.commands
def test_cloud_init_schema_accepts_the_build_template(fake, tmp_path):
    path = tmp_path / "user-data"
    path.write_text(buildimage.render_build_user_data(settings_for(fake)))
    r = runner.run(["cloud-init", "schema", "-c", str(path)], ok_codes=None)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Valid cloud-config" in r.stdout
    runner.run(["sh", "-n", "cloud-init/" + buildimage.SCRIPT])


@pytest.mark.commands
def test_the_script_reads_its_settings_back(fake):
    s = settings_for(fake, pip_index="https://pypi.example/simple/",
                     wheel_url="https://example.com/w-0.2.0.whl?a=1&b=$HOME")
    # the shell reads back exactly what was written, the package list from appliance.py
    out = runner.run(["sh", "-c", '. /dev/stdin; printf "%s|%s|%s|%s" "$G2A_VERSION" '
                      '"$G2A_PIP_INDEX" "$G2A_WHEEL_URL" "$G2A_PACKAGES"'],
                     input=buildimage.render_settings(s)).stdout
    assert out.split("|") == [VERSION, "https://pypi.example/simple/", s.wheel_url,
                              " ".join(buildimage.RECEIVER_PACKAGES)]


def test_settings_are_checked():
    with pytest.raises(UsageError):
        buildimage.BuildSettings(REGION, "", version=VERSION)
    with pytest.raises(UsageError):
        buildimage.BuildSettings(REGION, "m-x", version=VERSION, pip_index="ftp://x")
    with pytest.raises(UsageError):
        buildimage.BuildSettings(REGION, "m-x", version="1.0; reboot")
    assert buildimage.BuildSettings(REGION, "m-x", version="1.2.3").image_name == \
        "go2aliyun-receiver-1.2.3"


def test_parse_marker_takes_the_last_verdict():
    assert buildimage.parse_marker("boot\r\nnothing yet\n") is None
    assert buildimage.parse_marker("x\ngo2aliyun-appliance: ready 0.2.0\r\n") == (
        "ready", "0.2.0")
    assert buildimage.parse_marker(
        "go2aliyun-appliance: ready 0.2.0\n[ 9.1] go2aliyun-appliance: failed: apt-get "
        "install\n") == ("failed", "apt-get install")


# ---------------------------------------------------------------- the build
def test_whole_build_leaves_only_the_image(fake, clock, tmp_path):
    cloud = aliyun_cloud(fake, clock)
    state = buildimage.state_in(str(tmp_path))
    settings = settings_for(fake)
    image_id = buildimage.build(cloud, state, settings)
    img = fake.world.images[image_id]
    assert (img["ImageName"], img["Status"]) == ("go2aliyun-receiver-" + VERSION, "Available")
    assert fake.world.summary() == dict(NOTHING, images=2)  # + the fixture's appliance
    # the instance was the build: from the base image, the build user-data, no port open
    run = [p for a, p in fake.world.calls if a == "RunInstances"]
    assert len(run) == 1 and run[0]["ImageId"] == settings.base_image_id
    assert appliance_build_version(base64.b64decode(run[0]["UserData"])) == VERSION
    assert "AuthorizeSecurityGroup" not in fake.world.actions()
    assert img["SourceInstanceId"] == state.get("instance_id")
    on_disk = json.loads((tmp_path / "build_image_state.json").read_text())
    assert on_disk["image_id"] == image_id and on_disk["status"] == "Released"
    # a rerun prints the same image and calls nothing
    n = len(fake.world.calls)
    assert buildimage.build(cloud, buildimage.state_in(str(tmp_path)), settings) == image_id
    assert len(fake.world.calls) == n


def test_failed_self_check_is_refused_with_the_console_tail(fake, clock, tmp_path):
    fake.world.appliance_failure = "pip install go2aliyun[receiver]==0.2.0"
    cloud = aliyun_cloud(fake, clock)
    with pytest.raises(CloudError) as e:
        buildimage.build(cloud, buildimage.state_in(str(tmp_path)), settings_for(fake))
    assert e.value.code == "cloud.appliance_failed"
    msg = str(e.value)
    assert "failed: pip install go2aliyun[receiver]==0.2.0" in msg
    assert "go2aliyun-appliance: failed" in msg.split("--- console")[1]  # the tail
    assert "reboot: Power down" in msg
    assert "CreateImage" not in fake.world.actions()
    assert fake.world.summary() == dict(NOTHING, images=1)  # all released
    # the next run is a fresh build that works
    fake.world.appliance_failure = None
    image_id = buildimage.build(cloud, buildimage.state_in(str(tmp_path)), settings_for(fake))
    assert fake.world.images[image_id]["Status"] == "Available"


def test_crash_while_releasing_a_failed_build_then_a_good_rerun(fake, clock, tmp_path):
    fake.world.appliance_failure = "apt-get install"
    fake.world.inject(action="DeleteInstance", crash=True)
    cloud = aliyun_cloud(fake, clock)
    settings = settings_for(fake)
    with pytest.raises(CloudError) as e:
        buildimage.build(cloud, buildimage.state_in(str(tmp_path)), settings)
    assert e.value.code == "cloud.unreachable"
    fake.world.revive()
    fake.world.appliance_failure = None
    state = buildimage.state_in(str(tmp_path))
    assert state.get("failed")
    image_id = buildimage.build(cloud, state, settings)
    assert fake.world.images[image_id]["Status"] == "Available"
    assert fake.world.summary() == dict(NOTHING, images=2)
    assert fake.world.actions().count("RunInstances") == 2  # the failed one and the new


def test_a_resumed_build_with_other_options_is_refused_before_any_call(fake, clock,
                                                                       tmp_path):
    """RunInstances was sent, its answer lost; a rerun with another --pip-index would send
    the same ClientToken with other parameters: refused here, naming the option and the
    value to rerun with; the same options then finish the build without a duplicate."""
    cloud = aliyun_cloud(fake, clock)
    settings = settings_for(fake)
    fake.world.inject(action="RunInstances", crash=True)
    with pytest.raises(CloudError):
        buildimage.build(cloud, buildimage.state_in(str(tmp_path)), settings)
    fake.world.revive()
    calls = len(fake.world.calls)
    other = buildimage.BuildSettings(REGION, settings.base_image_id, version=VERSION,
                                     pip_index="https://mirrors.example.com/pypi/simple")
    with pytest.raises(UsageError) as e:
        buildimage.build(cloud, buildimage.state_in(str(tmp_path)), other)
    assert e.value.code == "usage.build_options_changed"
    assert "--pip-index was %s, now https://mirrors.example.com/pypi/simple" % (
        settings.pip_index) in str(e.value)
    assert "--pip-index %s" % settings.pip_index in e.value.hint
    assert len(fake.world.calls) == calls  # nothing sent
    image_id = buildimage.build(cloud, buildimage.state_in(str(tmp_path)), settings)
    assert fake.world.images[image_id]["Status"] == "Available"
    assert fake.world.actions().count("RunInstances") == 2  # the lost answer, then its repeat
    assert fake.world.summary() == dict(NOTHING, images=2)


def test_taken_image_name_is_refused_before_anything_is_made(fake, clock, tmp_path):
    cloud = aliyun_cloud(fake, clock)
    # the fixture's appliance image is called go2aliyun-receiver-0.1.0
    with pytest.raises(CloudError) as e:
        buildimage.build(cloud, buildimage.state_in(str(tmp_path)),
                         settings_for(fake, version="0.1.0"))
    assert e.value.code == "cloud.InvalidImageName.Duplicated"
    assert fake.world.actions() == ["DescribeImages"]
    assert fake.world.summary() == dict(NOTHING, images=1)


# ---------------------------------------------------------------- crash, then rerun
def _end(fake, state):
    return {"summary": fake.world.summary(), "status": state.get("status"),
            "images": sorted((i["ImageName"], i["Status"]) for i in own_images(fake).values())}


def test_call_count_is_current(fake, clock, tmp_path):
    buildimage.build(aliyun_cloud(fake, clock), buildimage.state_in(str(tmp_path)),
                     settings_for(fake))
    assert len(fake.world.calls) == BUILD_CALLS, \
        "the flow changed: update BUILD_CALLS so every call gets its crash"


@pytest.mark.parametrize("n", range(1, BUILD_CALLS + 1))
def test_crash_after_each_build_call(fake, clock, tmp_path, n):
    cloud = aliyun_cloud(fake, clock)
    settings = settings_for(fake)
    fake.world.crash_after_call(n)
    with pytest.raises(CloudError) as e:
        buildimage.build(cloud, buildimage.state_in(str(tmp_path)), settings)
    assert e.value.code == "cloud.unreachable"
    fake.world.revive()
    state = buildimage.state_in(str(tmp_path))  # a new process: only the file on disk
    buildimage.build(cloud, state, settings)
    assert _end(fake, state) == {
        "summary": dict(NOTHING, images=2), "status": "Released",
        "images": [("go2aliyun-receiver-0.1.0", "Available"),
                   ("go2aliyun-receiver-" + VERSION, "Available")]}
    assert len([a for a in fake.world.actions() if a == "RunInstances"]) <= 2


# ---------------------------------------------------------------- the command
def test_cli_builds_in_a_region_with_keys_from_the_environment(fake, tmp_path, monkeypatch,
                                                                capsys):
    from image_build.cli import main
    from tests.fakecloud.server import OPERATOR_KEY

    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", OPERATOR_KEY[0])
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", OPERATOR_KEY[1])
    monkeypatch.delenv("ALIBABA_CLOUD_SECURITY_TOKEN", raising=False)
    base = fake.world.add_image(BASE_IMAGE_NAME, owner="system")
    common = ["--workdir", str(tmp_path), "--endpoint", fake.endpoint, "--protocol", "http",
              "--poll-interval", "0.01", "build-image", "--region", REGION]
    assert main(common + ["--base-image", base, "--version", VERSION,
                          "--pip-index", "https://pypi.example/simple/"]) == 0
    image_id = capsys.readouterr().out.strip()
    assert own_images(fake)["go2aliyun-receiver-" + VERSION]["ImageId"] == image_id
    run = [p for a, p in fake.world.calls if a == "RunInstances"][0]
    assert "https://pypi.example/simple/" in base64.b64decode(
        base64.b64decode(run["UserData"]).split(b"appliance-build.env")[1].split(
            b"content: ")[1].split(b"\n")[0]).decode()
    assert OPERATOR_KEY[1] not in (tmp_path / "logs" / "go2aliyun-cloud.log").read_text()
    # without a base image: a usage error that names the flag, nothing called
    n = len(fake.world.calls)
    assert main(common) == 2
    assert "--base-image" in capsys.readouterr().err
    assert len(fake.world.calls) == n


def test_a_stop_without_the_marker_is_a_failure(fake, clock, tmp_path):
    cloud = aliyun_cloud(fake, clock)
    state = buildimage.state_in(str(tmp_path))
    real_run = fake.world.run_instances

    def run_without_build(params):  # the base image ignored the user-data, then stopped
        result = real_run(params)
        inst = fake.world.instances[result["InstanceIdSets"]["InstanceIdSet"][0]]
        inst["_build"], inst["Status"] = None, "Stopped"
        return result

    fake.world.run_instances = run_without_build
    with pytest.raises(CloudError) as e:
        buildimage.build(cloud, state, settings_for(fake))
    assert e.value.code == "cloud.appliance_failed"
    assert "without printing" in str(e.value) and "Linux version" in str(e.value)
    assert fake.world.summary() == dict(NOTHING, images=1)
