"""The preflight's pure logic: evaluate(config, manifest, facts) on hand-built
manifests, one rule at a time, and the seed's scenarios on a Linux source."""

import copy
import json

import pytest

from receiver.convert import distro
from source_script import check as chk
from source_script import excludes as ex
from wire import config as cfg
from wire import osfamily, parsers
from wire.errors import ConversionError

GIB = 1024 ** 3
NOW = 1795705200.0  # 2026-11-26T15:00:00Z

BASE = {
    "schema_version": 1, "tool_version": "0.1.0", "generated_at": "2026-11-26T15:00:00Z",
    "hostname": "web01", "root": "/",
    "os": {"id": "centos", "version_id": "7", "name": "CentOS Linux",
           "pretty_name": "CentOS Linux 7 (Core)", "family": "rhel", "id_like": ["rhel"],
           "source": "os-release"},
    "arch": "x86_64", "firmware": "bios",
    "kernels": [
        {"version": "3.10.0-1160.el7.x86_64", "image": "/boot/vmlinuz-3.10.0-1160.el7.x86_64",
         "initramfs": None, "modules_dir": None, "running": True,
         "virtio": {"virtio_blk": "module", "virtio_net": "module", "virtio_pci": "module",
                    "virtio_scsi": "module", "nvme": "module"}},
    ],
    "initramfs_tool": "dracut", "disks": [],
    "filesystems": [
        {"device": "/dev/sda1", "type": "xfs", "uuid": "u1", "label": None,
         "size_bytes": 1 * GIB, "used_bytes": GIB // 4, "mountpoint": "/boot"},
        {"device": "/dev/mapper/centos-root", "type": "xfs", "uuid": "u2", "label": None,
         "size_bytes": 50 * GIB, "used_bytes": 30 * GIB, "mountpoint": "/"},
    ],
    "mounts": [
        {"mountpoint": "/", "source": "/dev/mapper/centos-root", "fstype": "xfs",
         "options": "rw", "pseudo": False},
        {"mountpoint": "/boot", "source": "/dev/sda1", "fstype": "xfs", "options": "rw",
         "pseudo": False},
        {"mountpoint": "/proc", "source": "proc", "fstype": "proc", "options": "rw",
         "pseudo": True},
    ],
    "fstab": [], "swap": [], "lvm": {"pvs": [], "vgs": [], "lvs": []},
    "grub": {"flavour": "grub2", "version": "2.02~beta2", "config_path": "/boot/grub2/grub.cfg",
             "install_device": "/dev/sda"},
    "selinux": {"mode": "disabled"},
    "network": {"mac_bound": []},
    "cloud_init": {"installed": False, "datasource": None},
    "rsync": {"path": "/usr/bin/rsync", "version": "3.1.2", "protocol": 31},
    "warnings": [],
}


def manifest(**changes):
    m = copy.deepcopy(BASE)
    m.update(copy.deepcopy(changes))
    return m


def with_data_disks(m, disks):
    """Add a mounted filesystem per (mountpoint, size_gib, used_gib)."""
    for i, (mp, size, used) in enumerate(disks):
        dev = "/dev/sd%s1" % "bcdefgh"[i]
        m["filesystems"].append({"device": dev, "type": "ext4", "uuid": "d%d" % i,
                                 "label": None, "size_bytes": size * GIB,
                                 "used_bytes": used * GIB, "mountpoint": mp})
        m["mounts"].append({"mountpoint": mp, "source": dev, "fstype": "ext4",
                            "options": "rw", "pseudo": False})
    return m


def config(**changes):
    data = {"image_name": "CLIENT_IMAGE_CENTOS72_01", "system_disk_size": 50,
            "platform": "CentOS", "architecture": "x86_64", "bandwidth_limit": 0,
            "data_disks": []}
    data.update(changes)
    return cfg.from_dict(data)


def facts(conf=None, **changes):
    f = {"euid": 0,
         "clock": {"now": NOW, "synchronized": True, "reference": None,
                   "reference_source": None, "reference_error": None},
         "paths": {}, "config_mode": 0o600, "exclude_notes": []}
    for d in (conf.data_disks if conf else []):
        f["paths"][d.src_path] = {"exists": True, "is_dir": True}
    f.update(changes)
    return f


def run(conf=None, m=None, **fact_changes):
    conf = conf or config()
    return chk.evaluate(conf, m or manifest(), facts(conf, **fact_changes))


def by(findings, severity):
    return [f for f in findings if f["severity"] == severity]


def only_blocker(findings):
    b = by(findings, "blocker")
    assert len(b) == 1, json.dumps(b, indent=1)
    return b[0]


def test_a_good_source_has_no_blocker_and_no_warning():
    findings = run()
    assert by(findings, "blocker") == [] and by(findings, "warning") == []
    assert {f["check"] for f in findings} >= {
        "config", "root", "platform", "architecture", "rsync", "selinux", "virtio",
        "initramfs", "grub", "clock", "sizes"}
    assert not chk.blocked(findings)


def test_not_root_blocks():
    b = only_blocker(run(euid=1000))
    assert b["check"] == "root" and "user id 1000" in b["message"] and "sudo" in b["fix"]


@pytest.mark.parametrize("family,fix", [("rhel", "yum install rsync -y"),
                                        ("debian", "apt-get install rsync -y"),
                                        ("other", "install rsync")])
def test_rsync_missing_blocks_with_the_install_command(family, fix):
    m = manifest(rsync={"path": None, "version": None})
    m["os"]["family"] = family
    blockers = by(run(m=m), "blocker")
    assert [b["check"] for b in blockers] == (["os"] if family == "other" else []) + ["rsync"]
    assert blockers[-1]["message"] == "rsync is not installed" and fix in blockers[-1]["fix"]


@pytest.mark.parametrize("osid", [i.rstrip("*") for f in osfamily.FAMILIES for i in f.ids]
                         + ["arch", "gentoo", None])
def test_check_refuses_what_conversion_would_refuse(osid):
    """Fed from the one table: an os-release ID the check passes is one the receiver's
    conversion takes (receiver.convert.distro), else the check blocks it before the copy."""
    m = manifest()
    m["os"] = parsers.os_info({"ID": osid} if osid else {}, "os-release")
    refused = [b["check"] for b in by(run(m=m), "blocker")] == ["os"]
    try:
        converts = bool(distro.family_for({"ID": osid or ""}))
    except ConversionError:
        converts = False
    assert refused != converts


@pytest.mark.parametrize("tool", [t.name for t in osfamily.INITRAMFS_TOOLS] + [None])
def test_check_refuses_an_initramfs_tool_conversion_would_refuse(tool, tmp_path):
    """The manifest's tool (found by its programs) against the receiver's own finding
    on a tree holding that tool's programs: the check passes exactly what converts."""
    findings = run(m=manifest(initramfs_tool=tool))
    refused = [b["check"] for b in by(findings, "blocker")] == ["initramfs"]
    row = next((t for t in osfamily.INITRAMFS_TOOLS if t.name == tool), None)
    for group in (row.programs if row else ()):
        path = tmp_path / group[0].lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    try:
        converts = distro.initramfs_tool(str(tmp_path)) == tool
    except ConversionError as e:
        assert e.code == "conversion.unsupported_initramfs" and e.details["tool"] == tool
        converts = False
    assert refused != converts
    if refused:
        (b,) = by(findings, "blocker")
        assert "dracut" in b["fix"] and "initramfs-tools" in b["fix"]
        assert (tool or "no initramfs tool") in b["message"]


def test_rsync_versions():
    b = only_blocker(run(m=manifest(rsync={"path": "/usr/bin/rsync", "version": "2.6.8"})))
    assert "2.6.8 is too old" in b["message"] and "3.0.0" in b["message"]
    w = by(run(m=manifest(rsync={"path": "/usr/bin/rsync", "version": "3.0.9"})), "warning")
    assert [x["check"] for x in w] == ["rsync"] and "3.1.0" in w[0]["message"]
    w = by(run(m=manifest(rsync={"path": "/usr/bin/rsync", "version": None})), "warning")
    assert "version is unknown" in w[0]["message"]


@pytest.mark.parametrize("mode", ["enforcing", "permissive"])
def test_selinux_is_explained_not_blocked(mode):
    findings = run(m=manifest(selinux={"mode": mode}))
    assert by(findings, "blocker") == []
    s = [f for f in findings if f["check"] == "selinux"][0]
    assert s["severity"] == "info"
    assert "SELinux is %s" % mode in s["message"] and "labels" in s["message"]


def test_every_kernel_needs_virtio():
    m = manifest()
    k2 = copy.deepcopy(m["kernels"][0])
    k2["version"] = "2.6.32-custom"
    k2["virtio"].update(virtio_blk="missing", virtio_net="missing", virtio_pci="builtin")
    m["kernels"].append(k2)
    b = only_blocker(run(m=m))
    assert b["check"] == "virtio"
    assert "kernel 2.6.32-custom has no virtio_blk, virtio_net" in b["message"]
    assert "remove kernel 2.6.32-custom" in b["fix"]


def test_no_kernel_blocks():
    b = only_blocker(run(m=manifest(kernels=[])))
    assert b["check"] == "kernels" and "no kernel" in b["message"]


def test_legacy_grub_is_refused_with_the_fix():
    m = manifest(grub={"flavour": "legacy", "version": "0.97", "config_path":
                       "/boot/grub/grub.conf", "install_device": None})
    b = only_blocker(run(m=m))
    assert b["check"] == "grub" and "legacy GRUB 0.97" in b["message"]
    assert "GRUB 2" in b["message"] and "1.99" in b["message"]
    assert chk.GRUB_DOC in b["fix"]


@pytest.mark.parametrize("version,severity", [("1.98", "blocker"), ("1.99", "ok"),
                                              ("2.02~beta2", "ok"), ("2.06", "ok"),
                                              (None, "warning")])
def test_grub_version(version, severity):
    m = manifest()
    m["grub"]["version"] = version
    g = [f for f in run(m=m) if f["check"] == "grub"]
    assert [f["severity"] for f in g] == [severity]


def test_no_grub_blocks():
    m = manifest(grub={"flavour": "none", "version": None, "config_path": None,
                       "install_device": None})
    assert "no GRUB" in only_blocker(run(m=m))["message"]


def test_clock_in_the_past_blocks():
    clock = {"now": 1262304000.0, "synchronized": None}  # 2010
    b = only_blocker(run(clock=clock))
    assert b["check"] == "clock" and "2010-01-01" in b["message"]


@pytest.mark.parametrize("skew,severity", [(3600, "blocker"), (-1000, "blocker"),
                                           (120, "warning"), (10, "ok")])
def test_clock_against_a_reference(skew, severity):
    clock = {"now": NOW + skew, "synchronized": True, "reference": NOW,
             "reference_source": "https://ecs.aliyuncs.com/"}
    c = [f for f in run(clock=clock) if f["check"] == "clock"]
    assert [f["severity"] for f in c] == [severity]
    if severity == "blocker":
        assert "IllegalTimestamp" in c[0]["message"]
        assert ("ahead of" if skew > 0 else "behind") in c[0]["message"]


def test_clock_not_synchronized_warns():
    clock = {"now": NOW, "synchronized": False}
    w = by(run(clock=clock), "warning")
    assert [x["check"] for x in w] == ["clock"] and "NTP" in w[0]["message"]


def test_system_disk_too_small_for_the_used_space():
    conf = config(system_disk_size=30)
    b = only_blocker(run(conf))
    assert b["check"] == "sizes"
    assert "system_disk_size is 30 GiB but the files to copy use 30.2 GiB" in b["message"]
    assert "/ 30.0 GiB" in b["message"] and "/boot 0.2 GiB" in b["message"]
    assert "set system_disk_size to at least 36" in b["fix"]
    # nearly full: a warning
    w = by(run(config(system_disk_size=32)), "warning")
    assert [x["check"] for x in w] == ["sizes"] and "little room" in w[0]["message"]


def test_system_disk_cannot_hold_it_at_all():
    m = manifest()
    m["filesystems"][1]["used_bytes"] = 600 * GIB
    b = only_blocker(run(config(system_disk_size=500), m))
    assert "move data to data disks" in b["fix"]


def test_data_disk_space_is_not_counted_on_the_system_disk():
    m = with_data_disks(manifest(), [("/mnt/disk1", 200, 90)])
    conf = config(data_disks=[{"data_disk_index": 1, "data_disk_size": 100,
                               "src_path": "/mnt/disk1"}])
    findings = run(conf, m)
    assert by(findings, "blocker") == []
    oks = [f["message"] for f in findings if f["check"] == "sizes" and f["severity"] == "ok"]
    assert any(s.startswith("system_disk_size 50 GiB holds 30.2 GiB") for s in oks)
    assert any(s.startswith("data_disks[0].data_disk_size 100 GiB holds 90.0 GiB") for s in oks)
    conf = config(data_disks=[{"data_disk_index": 1, "data_disk_size": 80,
                               "src_path": "/mnt/disk1"}])
    b = only_blocker(run(conf, m))
    assert "data_disks[0].data_disk_size is 80 GiB but the files to copy use 90.0 GiB" \
        in b["message"]
    assert "rsync_excludes_linux_disk1.txt" in b["fix"]


def test_nested_filesystem_counts_on_the_disk_that_holds_it():
    m = with_data_disks(manifest(), [("/data", 100, 10), ("/data/db", 100, 60)])
    conf = config(data_disks=[{"data_disk_index": 1, "data_disk_size": 60, "src_path": "/data"}])
    b = only_blocker(run(conf, m))
    assert "use 70.0 GiB (/data 10.0 GiB, /data/db 60.0 GiB)" in b["message"]


def test_data_disk_size_defaults_to_the_source_size():
    m = with_data_disks(manifest(), [("/mnt/disk1", 150, 90)])
    conf = config(data_disks=[{"data_disk_index": 1, "src_path": "/mnt/disk1"}])
    findings = run(conf, m)
    assert by(findings, "blocker") == []
    assert any("disk 1 will be 150 GiB" in f["message"] for f in by(findings, "info"))


@pytest.mark.parametrize("state,words", [
    ({"exists": False, "is_dir": False}, "'/mnt/disk1' does not exist on this server"),
    ({"exists": True, "is_dir": False}, "'/mnt/disk1' is not a folder"),
    ({"exists": True, "is_dir": True}, "'/mnt/disk1' is not a mount point"),
])
def test_data_disk_src_path_must_exist_and_be_a_mount_point(state, words):
    conf = config(data_disks=[{"data_disk_index": 1, "data_disk_size": 100,
                               "src_path": "/mnt/disk1"}])
    b = only_blocker(run(conf, paths={"/mnt/disk1": state}))
    assert b["check"] == "data disks" and "data_disks[0].src_path " + words in b["message"]
    assert b["fix"]


def test_data_disk_on_a_pseudo_filesystem_blocks():
    m = manifest()
    m["mounts"].append({"mountpoint": "/mnt/ram", "source": "tmpfs", "fstype": "tmpfs",
                        "options": "rw", "pseudo": True})
    conf = config(data_disks=[{"data_disk_index": 1, "data_disk_size": 20,
                               "src_path": "/mnt/ram"}])
    b = [f for f in run(conf, m) if f["severity"] == "blocker"][0]
    assert "is a tmpfs filesystem" in b["message"]


def test_filesystems_left_out_are_reported():
    m = with_data_disks(manifest(), [("/mnt/backup", 100, 50)])
    m["filesystems"].append({"device": "/dev/sdz1", "type": "ext4", "uuid": None,
                             "label": None, "size_bytes": GIB, "used_bytes": None,
                             "mountpoint": None})
    findings = run(m=m)
    infos = [f["message"] for f in by(findings, "info")]
    assert "/mnt/backup is not migrated: under /mnt/*, which the default excludes leave out" \
        in infos
    assert "/dev/sdz1 is not migrated: not mounted" in infos
    assert by(findings, "blocker") == []  # its 50 GiB are not counted


def test_unknown_used_space_warns():
    m = manifest()
    m["filesystems"] = []
    w = by(run(m=m), "warning")
    assert any("used space of / is unknown" in x["message"] for x in w)


@pytest.mark.parametrize("detected,raw", [("i386", "i686"), ("x86_64", "x86_64")])
def test_architecture_against_the_source(detected, raw):
    other = "x86_64" if detected == "i386" else "i386"
    b = only_blocker(run(config(architecture=other), manifest(arch=raw)))
    assert b["check"] == "architecture" and "set architecture to %s" % detected in b["fix"]
    assert by(run(config(architecture=detected), manifest(arch=raw)), "blocker") == []


def test_unsupported_source_architecture_blocks():
    b = only_blocker(run(config(architecture=""), manifest(arch="aarch64")))
    assert "'aarch64'" in b["message"] and "i386 | x86_64" in b["message"]


def test_platform_not_set_or_different():
    findings = run(config(platform=""))
    p = [f for f in findings if f["check"] == "platform"][0]
    assert p["severity"] == "info" and "'CentOS'" in p["message"]
    w = [f for f in run(config(platform="Ubuntu")) if f["check"] == "platform"][0]
    assert w["severity"] == "warning" and "set platform to 'CentOS'" in w["fix"]


def test_inventory_warnings_and_exclude_notes_are_shown():
    m = manifest(warnings=[{"probe": "lvm", "message": "vgs failed"}])
    notes = [{"severity": "warning", "message": "x.txt line 2: bad"}]
    findings = run(m=m, exclude_notes=notes)
    w = by(findings, "warning")
    assert [(x["check"], x["message"]) for x in w] == [
        ("inventory", "probe lvm: vgs failed"), ("excludes", "x.txt line 2: bad")]


def test_world_readable_config_with_a_secret_warns():
    conf = cfg.from_dict({"image_name": "web01", "access_id": "AKID", "secret_key": "S3cr3t-abc",
                          "region_id": "cn-hangzhou"}, path="/w/user_config.json")
    findings = chk.evaluate(conf, manifest(), facts(conf, config_mode=0o644))
    w = by(findings, "warning")
    assert len(w) == 1 and w[0]["fix"] == "chmod 600 /w/user_config.json"
    assert "S3cr3t-abc" not in json.dumps(findings)
    assert by(chk.evaluate(conf, manifest(), facts(conf, config_mode=0o600)), "warning") == []


def test_seed_scenarios_on_a_linux_source():
    """Scenarios 3 and 4 pass; 1 and 2 (Windows) are refused with a clear message."""
    from tests.wire.test_config import SCENARIOS

    m4 = with_data_disks(manifest(), [("/mnt/disk1", 100, 40), ("/mnt/disk2", 150, 60),
                                      ("/mnt/disk3", 200, 120)])
    results = {}
    for n, text in SCENARIOS.items():
        conf = cfg.from_dict(json.loads(text))
        results[n] = chk.evaluate(conf, m4 if n == "4" else manifest(), facts(conf))
    assert by(results["3"], "blocker") == []
    assert by(results["4"], "blocker") == []
    assert [f["message"] for f in results["4"] if f["check"] == "data disks"] == [
        "disk 1: /mnt/disk1 (ext4 /dev/sdb1)", "disk 2: /mnt/disk2 (ext4 /dev/sdc1)",
        "disk 3: /mnt/disk3 (ext4 /dev/sdd1)"]
    b = only_blocker(results["1"])
    assert b["check"] == "platform"
    assert b["message"] == ("platform 'Windows Server 2008' is a Windows platform, but this "
                            "source runs Linux (CentOS Linux 7 (Core)); go2aliyun migrates "
                            "Linux servers only")
    assert "set platform to 'CentOS'" in b["fix"]
    b2 = by(results["2"], "blocker")
    assert [x["check"] for x in b2] == ["platform", "data disks"]
    assert "src_path D:, E:, F: are Windows drive letters" in b2[1]["message"]


def test_plan_and_filters_of_scenario_4():
    from tests.wire.test_config import SCENARIO_4

    conf = cfg.from_dict(json.loads(SCENARIO_4))
    m = with_data_disks(manifest(), [("/mnt/disk1", 100, 40), ("/mnt/disk2", 150, 60),
                                     ("/mnt/disk3", 200, 120)])
    filters, notes = ex.plan_filters(conf.data_disks, m, {})
    plan = chk.build_plan(conf, filters, m)
    assert [d["src_path"] for d in plan["data_disks"]] == ["/mnt/disk1", "/mnt/disk2",
                                                           "/mnt/disk3"]
    assert plan["filters"]["system"][:6] == [
        "- /mnt/disk1/*", "+ /mnt/disk1/", "- /mnt/disk2/*", "+ /mnt/disk2/",
        "- /mnt/disk3/*", "+ /mnt/disk3/"]
    assert sorted(plan["filters"]) == ["disk1", "disk2", "disk3", "system"]
    assert "secret" not in json.dumps(plan).lower()


def test_helpers():
    assert chk.version_tuple("2.02~beta2") == (2, 2)
    assert chk.version_tuple("3.2.7") == (3, 2, 7)
    assert chk.version_tuple("GRUB") is None
    assert chk.parse_http_date("Thu, 26 Nov 2026 15:00:00 GMT") == NOW
    assert chk.parse_http_date("garbage") is None
    assert chk.probe_ntp_synchronized() in (True, False, None)


def test_render_table():
    conf = config(system_disk_size=20)
    findings = chk.evaluate(conf, manifest(), facts(conf))
    report = {"ok": False, "findings": findings, "filters": {"system": ["- /dev/*"]}}
    text = chk.render_table(report)
    lines = text.splitlines()
    assert lines[0].split() == ["CHECK", "RESULT", "DETAIL"]
    assert any(ln.startswith("sizes") and "BLOCKER" in ln for ln in lines)
    assert any("fix: set system_disk_size to at least 36" in ln for ln in lines)
    assert "  - /dev/*" in lines
    assert lines[-1] == "1 blocker, 0 warnings: the migration cannot start."
    e = chk.failure(report)
    assert e.exit_code == 4 and "sizes: system_disk_size is 20 GiB" in str(e)


def test_plan_fits_the_receivers_plan_schema():
    import os

    import jsonschema

    from tests.wire.test_config import SCENARIO_4

    schema_path = os.path.join(os.path.dirname(__file__), "..", "..", "wire",
                               "plan.schema.json")
    with open(schema_path) as f:
        schema = json.load(f)
    data = json.loads(SCENARIO_4)
    data["data_disks"][1].pop("data_disk_size")
    data.update(platform="", architecture="")
    conf = cfg.from_dict(data)
    m = with_data_disks(manifest(), [("/mnt/disk1", 100, 40), ("/mnt/disk2", 150, 60),
                                     ("/mnt/disk3", 200, 120)])
    filters, _ = ex.plan_filters(conf.data_disks, m, {})
    for plan in (chk.build_plan(conf, filters, m), chk.build_plan(conf, filters)):
        jsonschema.validate(plan, schema)


def test_data_disk_sizes_only_for_mounted_disks():
    m = manifest()
    m["mounts"].append({"mountpoint": "/mnt/nas", "source": "nas:/export", "fstype": "nfs4",
                        "options": "rw", "pseudo": False})
    conf = config(data_disks=[
        {"data_disk_index": 1, "data_disk_size": 100, "src_path": "/mnt/nas"},
        {"data_disk_index": 2, "data_disk_size": 100, "src_path": "/mnt/plain"}])
    findings = run(conf, m)
    sizes = [f for f in findings if f["check"] == "sizes"]
    assert [(f["severity"], f["message"].split(" GiB")[0]) for f in sizes] == [
        ("ok", "system_disk_size 50"),
        ("warning", "the used space of /mnt/nas is unknown: make sure "
                    "data_disks[0].data_disk_size (100"),
        ("ok", "data_disks[0].data_disk_size 100")]
    assert [f["message"] for f in by(findings, "blocker")] == [
        "data_disks[1].src_path '/mnt/plain' is not a mount point: a data disk must be a "
        "mounted filesystem (its files are otherwise part of the system disk)"]
