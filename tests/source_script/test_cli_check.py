"""`go2aliyun check` and `go2aliyun init` through click (CliRunner, our main() with its
exit codes), with a stub inventory; and once for real as root on a loop-mounted data
disk."""

import copy
import json
import os
import shutil
import sys
import uuid

import pytest
from click.testing import CliRunner

from source_script import check as chk
from source_script import cli as cli_mod
from source_script import inventory
from tests.source_script.test_check import BASE, GIB
from tests.wire.test_config import SCENARIO_3
from wire import runner

SECRET = "Cli-S3cret-Value-987"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Main(object):
    """Lets CliRunner call our main(), which maps errors to exit codes."""

    name = "go2aliyun"

    def main(self, args=(), prog_name=None, **extra):
        sys.exit(cli_mod.main(list(args)))


def invoke(*args):
    return CliRunner().invoke(_Main(), list(args))


@pytest.fixture
def stub(monkeypatch):
    """A stub inventory (a CentOS 7 source with /mnt/disk1 mounted) and deterministic
    facts (root, NTP synchronized, the cloud's clock equal to ours)."""
    m = copy.deepcopy(BASE)
    m["filesystems"].append({"device": "/dev/sdb1", "type": "ext4", "uuid": "d1",
                             "label": None, "size_bytes": 100 * GIB, "used_bytes": 40 * GIB,
                             "mountpoint": "/mnt/disk1"})
    m["mounts"].append({"mountpoint": "/mnt/disk1", "source": "/dev/sdb1", "fstype": "ext4",
                        "options": "rw", "pseudo": False})
    seen = {}

    def collect(root="/"):
        seen["root"] = root
        return copy.deepcopy(m)

    real_facts = chk.probe_facts

    def facts(config, root, config_path=None):
        f = real_facts(config, root, config_path)
        f["euid"] = 0
        f["clock"]["synchronized"] = True
        return f

    monkeypatch.setattr(inventory, "collect", collect)
    monkeypatch.setattr(chk, "probe_facts", facts)
    monkeypatch.setattr(chk, "probe_reference_time", lambda *a, **k: (chk.time.time(), None))
    return {"manifest": m, "seen": seen}


@pytest.fixture
def work(tmp_path):
    """A work folder with the seed's scenario 3 (secret replaced) and a source root
    holding /mnt/disk1."""
    w = tmp_path / "work"
    w.mkdir()
    data = json.loads(SCENARIO_3)
    data["secret_key"] = SECRET
    (w / "user_config.json").write_text(json.dumps(data))
    os.chmod(str(w / "user_config.json"), 0o600)
    root = tmp_path / "root"
    (root / "mnt" / "disk1").mkdir(parents=True)
    return {"work": str(w), "root": str(root), "data": data}


def test_table_and_exit_0(stub, work):
    r = invoke("check", "--workdir", work["work"], "--root", work["root"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["CHECK", "RESULT", "DETAIL"]
    assert any(ln.startswith("platform") and "CentOS" in ln for ln in lines)
    assert "Nothing blocks the migration" in lines[-1]
    assert "  - /dev/*" in lines
    assert stub["seen"]["root"] == work["root"]
    assert SECRET not in r.output


def test_json_has_findings_filters_and_plan(stub, work):
    excl = os.path.join(work["work"], "Excludes")
    os.mkdir(excl)
    with open(os.path.join(excl, "rsync_excludes_linux_disk1.txt"), "w") as f:
        f.write("/cache/\n")
    r = invoke("check", "--workdir", work["work"], "--root", work["root"], "--json",
               "--datadisks", "1|100|/mnt/disk1")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["ok"] is True
    assert report["config_file"] == os.path.join(work["work"], "user_config.json")
    assert report["filters"] == {
        "system": ["- /mnt/disk1/*", "+ /mnt/disk1/", "- /dev/*", "- /sys/*", "- /proc/*",
                   "- /media/*", "- lost+found/*", "- /mnt/*", "- /var/lib/lxcfs/*",
                   "- /run/*", "- /tmp/*"],
        "disk1": ["- /cache/", "- lost+found/*"],
    }
    assert report["plan"] == {
        "image_name": "CLIENT_IMAGE_CENTOS72_01", "platform": "CentOS",
        "architecture": "x86_64", "system_disk_size": 50, "bandwidth_limit": 0,
        "data_disks": [{"index": 1, "size_gib": 100, "src_path": "/mnt/disk1"}],
        "filters": report["filters"],
    }
    assert {f["severity"] for f in report["findings"]} <= {"ok", "info"}
    assert SECRET not in r.output and "YourAccessKeyID" not in json.dumps(report["plan"])


def test_blocked_exits_4(stub, work):
    r = invoke("check", "--workdir", work["work"], "--root", work["root"],
               "--datadisks", "1|100|/mnt/disk1;2|100|/mnt/disk2", "--json")
    assert r.exit_code == 4, r.output
    report = json.loads(r.stdout)
    assert report["ok"] is False
    blockers = [f for f in report["findings"] if f["severity"] == "blocker"]
    assert [b["message"] for b in blockers] == [
        "data_disks[1].src_path '/mnt/disk2' does not exist on this server"]
    assert "error [check.blocked]: 1 problem blocks the migration" in r.stderr
    r = invoke("check", "--workdir", work["work"], "--root", work["root"],
               "--systemdisksize", "20")
    assert r.exit_code == 4 and "BLOCKER" in r.stdout
    assert "1 blocker, 0 warnings: the migration cannot start." in r.stdout


def test_config_error_exits_3(stub, work):
    data = dict(work["data"], image_name="1-bad", platform="centos")
    with open(os.path.join(work["work"], "user_config.json"), "w") as f:
        json.dump(data, f)
    r = invoke("check", "--workdir", work["work"])
    assert r.exit_code == 3, r.output
    assert "error [config.invalid]" in r.stderr and "has 2 problems" in r.stderr
    assert "image_name: '1-bad' does not start with an English or Chinese letter" in r.stderr
    assert "platform: 'centos' is not a platform; allowed: did you mean 'CentOS'?" in r.stderr
    assert r.stdout == ""
    r = invoke("check", "--workdir", work["work"], "--json")
    assert r.exit_code == 3
    body = json.loads(r.stdout)
    assert body["ok"] is False and body["error"]["code"] == "config.invalid"
    assert [p["field"] for p in body["error"]["details"]["problems"]] == [
        "image_name", "platform"]
    assert SECRET not in r.output
    assert stub["seen"] == {}  # a bad config stops before the inventory


def test_malformed_json_exits_3_with_line_and_column(stub, work):
    path = os.path.join(work["work"], "user_config.json")
    with open(path, "w") as f:
        f.write('{\n  "image_name": "web01",\n  "secret_key": "%s"\n  "platform": ""\n}'
                % SECRET)
    r = invoke("check", "--config", path)
    assert r.exit_code == 3
    assert "malformed JSON at line 4, column 3" in r.stderr and SECRET not in r.output
    r = invoke("check", "--config", os.path.join(work["work"], "nope.json"))
    assert r.exit_code == 3 and "nope.json not found" in r.stderr


@pytest.mark.parametrize("flags", [
    ["--imagename", "Flag_Image", "--systemdisksize", "60", "--bandwidthlimit", "512",
     "--datadisks", "1|120|/mnt/disk1", "--regionid", "cn-beijing", "--accessid", "AK2"],
    ["--image-name", "Flag_Image", "--system-disk-size", "60", "--bandwidth-limit", "512",
     "--data-disks", "1|120|/mnt/disk1", "--region-id", "cn-beijing", "--access-id", "AK2"],
])
def test_override_flags_both_spellings_win_over_the_file(stub, work, flags):
    r = invoke("check", "--workdir", work["work"], "--root", work["root"], "--json", *flags)
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)["plan"]
    assert (plan["image_name"], plan["system_disk_size"], plan["bandwidth_limit"]) == (
        "Flag_Image", 60, 512)
    assert plan["data_disks"] == [{"index": 1, "size_gib": 120, "src_path": "/mnt/disk1"}]
    finding = [f for f in json.loads(r.stdout)["findings"] if f["check"] == "config"][0]
    assert "bandwidth limit 512 KB/s" in finding["message"]


def test_secret_flag_is_never_printed(stub, work):
    r = invoke("check", "--workdir", work["work"], "--root", work["root"], "--json",
               "--secretkey", "Flag-Secret-4242", "--platform", "Windows Server 2012")
    assert r.exit_code == 4
    assert "Flag-Secret-4242" not in r.output
    assert "visible to other users in the process list" in r.stderr
    r = invoke("check", "--workdir", work["work"], "--secret-key", "Flag-Secret-4242",
               "--access-id", "", "--image-name", "x")
    assert r.exit_code == 3 and "Flag-Secret-4242" not in r.output
    assert "access_id (from --access-id): '' is empty while secret_key is set" in r.stderr


def test_windows_scenario_refused_on_linux(stub, work):
    r = invoke("check", "--workdir", work["work"], "--root", work["root"], "--json",
               "--platform", "Windows Server 2008", "--datadisks", "1|100|D:")
    assert r.exit_code == 4
    blockers = [f for f in json.loads(r.stdout)["findings"] if f["severity"] == "blocker"]
    assert [(b["check"], b["message"]) for b in blockers] == [
        ("platform", "platform 'Windows Server 2008' is a Windows platform, but this source "
                     "runs Linux (CentOS Linux 7 (Core)); go2aliyun migrates Linux servers only"),
        ("data disks", "src_path D: is a Windows drive letter; this source runs Linux")]
    assert "set platform to 'CentOS'" in blockers[0]["fix"]
    assert "2 problems block the migration" in r.stderr


def test_old_flags_are_accepted(stub, work, tmp_path):
    progress = tmp_path / "progress"
    r = invoke("check", "--workdir", work["work"], "--root", work["root"], "--noenterkey",
               "--progressfile", str(progress), "--cleardata")
    assert r.exit_code == 0, r.output
    r = invoke("check", "--workdir", work["work"], "--nosuchflag")
    assert r.exit_code == 2 and "No such option" in r.output


def test_init_writes_the_work_folder_once(tmp_path):
    w = str(tmp_path / "w")
    r = invoke("init", "--workdir", w)
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir(w)) == ["Excludes", "logs", "user_config.json"]
    assert os.listdir(os.path.join(w, "Excludes")) == ["rsync_excludes_linux.txt"]
    assert "wrote %s/user_config.json" % w in r.stdout
    with open(os.path.join(w, "user_config.json"), "w") as f:
        f.write('{"image_name": "mine"}')
    r = invoke("init", "--workdir", w)
    assert "kept  %s/user_config.json" % w in r.stdout
    with open(os.path.join(w, "user_config.json")) as f:
        assert json.load(f) == {"image_name": "mine"}


# ---------------------------------------------------------------- end to end, as root

@pytest.fixture
def loop_ext4(tmp_path):
    """A small ext4 filesystem on a loop device; yields the device, cleans up."""
    img = str(tmp_path / "disk1.img")
    with open(img, "wb") as f:
        f.truncate(32 * 1024 * 1024)
    dev = runner.run(["losetup", "-f", "--show", img]).stdout.strip()
    try:
        runner.run(["mkfs.ext4", "-q", "-F", "-L", "g2a-" + uuid.uuid4().hex[:6], dev])
        yield dev
    finally:
        runner.run(["losetup", "-d", dev], ok_codes=None)


@pytest.mark.root
def test_real_check_on_a_tree_with_a_mounted_data_disk(tmp_path, loop_ext4):
    root = str(tmp_path / "root")
    shutil.copytree(os.path.join(REPO, "tests", "data", "trees", "centos7"), root,
                    symlinks=True)
    for d in ("mnt/disk1", "mnt/disk2"):
        os.makedirs(os.path.join(root, d))
    with open(os.path.join(root, "mnt", "disk2", "file"), "w") as f:
        f.write("x")
    work = tmp_path / "work"
    work.mkdir()
    (work / "user_config.json").write_text(json.dumps({
        "image_name": "e2e_check", "system_disk_size": 20, "platform": "CentOS",
        "data_disks": [{"data_disk_index": 1, "data_disk_size": 20, "src_path": "/mnt/disk1"},
                       {"data_disk_index": 2, "data_disk_size": 20, "src_path": "/mnt/disk2"}],
    }))
    mnt = os.path.join(root, "mnt", "disk1")
    runner.run(["mount", loop_ext4, mnt])
    try:
        with open(os.path.join(mnt, "payload"), "wb") as f:
            f.write(b"\0" * 1024 * 1024)
        argv = [sys.executable, "-m", "source_script.cli", "check", "--root", root,
                "--workdir", str(work), "--json"]
        r = runner.run(argv, ok_codes=None, cwd=REPO)
        assert r.returncode == 4, r.stdout + r.stderr
        report = json.loads(r.stdout)
        blockers = [f["message"] for f in report["findings"] if f["severity"] == "blocker"]
        assert blockers == ["data_disks[1].src_path '/mnt/disk2' is not a mount point: a data "
                            "disk must be a mounted filesystem (its files are otherwise part "
                            "of the system disk)"], r.stdout

        r = runner.run(argv + ["--datadisks", "1|20|/mnt/disk1"], ok_codes=None, cwd=REPO)
        assert r.returncode == 0, r.stdout + r.stderr
        report = json.loads(r.stdout)
        assert report["ok"] is True and report["root"] == root
        assert report["filters"]["system"][:2] == ["- /mnt/disk1/*", "+ /mnt/disk1/"]
        assert report["filters"]["disk1"] == ["- lost+found/*"]
        assert report["plan"]["data_disks"] == [
            {"index": 1, "size_gib": 20, "src_path": "/mnt/disk1"}]
        msgs = [f["message"] for f in report["findings"]]
        assert "disk 1: /mnt/disk1 (ext4 %s)" % loop_ext4 in msgs
        assert any(m.startswith("data_disks[0].data_disk_size 20 GiB holds") and
                   "/mnt/disk1" in m for m in msgs), msgs
        assert any(m.startswith("virtio_blk, virtio_pci and virtio_net present") for m in msgs)
    finally:
        runner.run(["umount", mnt], ok_codes=None)
