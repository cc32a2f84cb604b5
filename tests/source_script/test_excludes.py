"""Excludes/: the exact rsync filter rules per disk, and (with the real rsync) that
they copy what they should."""

import os

import pytest

from source_script import excludes as ex
from wire import runner
from wire.config import DataDisk

SEED_SYSTEM = ["- /dev/*", "- /sys/*", "- /proc/*", "- /media/*", "- lost+found/*",
               "- /mnt/*", "- /var/lib/lxcfs/*", "- /run/*", "- /tmp/*"]


def _mount(mp, fstype, pseudo=None, source="x"):
    return {"mountpoint": mp, "source": source, "fstype": fstype, "options": "rw",
            "pseudo": fstype in ex.PSEUDO_FSTYPES if pseudo is None else pseudo}


def test_parse_exclude_text():
    text = ("# comment\r\n\r\n/var/mydirs/docs/words/\r\n  /a b/c  \n; rsync comment\n"
            "+ /keep/\n-   /drop\n*.log\n")
    assert ex.parse_exclude_text(text) == [
        (3, "- /var/mydirs/docs/words/"), (4, "- /a b/c"), (6, "+ /keep/"), (7, "- /drop"),
        (8, "- *.log")]


def test_seed_examples_exact_lists(tmp_path):
    """The seed's Linux examples: system disk and data disk 1 (src_path prefix removed)."""
    d = tmp_path / "Excludes"
    d.mkdir()
    (d / "rsync_excludes_linux.txt").write_text(
        "/var/mydirs/docs/words/\n/var/mydirs/docs/excels/report1.sh\n")
    (d / "rsync_excludes_linux_disk1.txt").write_text(
        "/mydirs/docs/words/\n/mydirs/docs/excels/report1.sh\n")
    disks = [DataDisk(1, 100, "/mnt/disk1"), DataDisk(2, 150, "/mnt/disk2")]
    user, notes = ex.read_user_excludes(str(d), [1, 2])
    assert notes == []
    filters, notes = ex.plan_filters(disks, {}, user)
    assert notes == []
    assert filters == {
        "system": ["- /mnt/disk1/*", "+ /mnt/disk1/", "- /mnt/disk2/*", "+ /mnt/disk2/",
                   "- /var/mydirs/docs/words/", "- /var/mydirs/docs/excels/report1.sh"]
        + SEED_SYSTEM,
        "disk1": ["- /mydirs/docs/words/", "- /mydirs/docs/excels/report1.sh",
                  "- lost+found/*"],
        "disk2": ["- lost+found/*"],
    }


def test_defaults_only_without_files(tmp_path):
    user, notes = ex.read_user_excludes(str(tmp_path / "missing"), [])
    assert user == {"system": []} and notes == []
    filters, notes = ex.plan_filters([], None, user)
    assert filters == {"system": SEED_SYSTEM} and notes == []


def test_pseudo_mounts_swap_files_and_work_folder():
    manifest = {
        "mounts": [
            _mount("/", "ext4"), _mount("/proc", "proc"), _mount("/sys", "sysfs"),
            _mount("/sys/fs/cgroup", "cgroup2"), _mount("/dev", "devtmpfs"),
            _mount("/dev/shm", "tmpfs"), _mount("/run", "tmpfs"),
            _mount("/var/lib/docker/overlay2/abc/merged", "overlay"),
            _mount("/snap/core/123", "squashfs", pseudo=False),
            _mount("/srv/data", "xfs"), _mount("/srv/data/cache", "tmpfs"),
            _mount("/home", "ext4"), _mount("/weird[1]", "tmpfs"),
        ],
        "swap": [{"kind": "file", "path": "/swapfile"}, {"kind": "partition", "path": "/dev/sda5"},
                 {"kind": "file", "path": "/srv/data/swap.img"}],
    }
    disks = [DataDisk(1, 200, "/srv/data")]
    protect = ex.protect_paths("/", "/root/go2aliyun", None) + ["/srv/data/go2aliyun/logs/"]
    filters, notes = ex.plan_filters(disks, manifest, {}, protect)
    assert notes == []
    assert filters["system"] == [
        "- /root/go2aliyun/user_config.json", "- /root/go2aliyun/client_data",
        "- /root/go2aliyun/logs/",
        "- /srv/data/*", "+ /srv/data/",
        "- /snap/core/123/*", "- /var/lib/docker/overlay2/abc/merged/*", "- /weird\\[1]/*",
        "- /swapfile",
    ] + SEED_SYSTEM
    assert filters["disk1"] == ["- /go2aliyun/logs/", "- /cache/*", "- /swap.img",
                                "- lost+found/*"]


def test_root_on_a_pseudo_filesystem_is_copied_with_a_warning():
    filters, notes = ex.plan_filters([], {"mounts": [_mount("/", "overlay")]}, {})
    assert filters["system"] == SEED_SYSTEM
    assert [n["severity"] for n in notes] == ["warning"] and "overlay" in notes[0]["message"]


def test_data_disks_under_default_excludes_keep_their_mount_points():
    disks = [DataDisk(1, 20, "/mnt/a/b"), DataDisk(2, 20, "/mnt/a/c"),
             DataDisk(3, 20, "/media/usb"), DataDisk(4, 20, "/data")]
    filters, _ = ex.plan_filters(disks, {}, {})
    assert filters["system"] == [
        "- /mnt/a/b/*", "+ /mnt/a/b/", "- /mnt/a/c/*", "+ /mnt/a/c/", "- /media/usb/*",
        "+ /media/usb/", "- /data/*", "+ /data/", "+ /mnt/a/", "- /mnt/a/*"] + SEED_SYSTEM


def test_misplaced_user_rules_are_reported(tmp_path):
    d = tmp_path / "Excludes"
    d.mkdir()
    (d / "rsync_excludes_linux.txt").write_text("/mnt/disk1/big/\n")
    (d / "rsync_excludes_linux_disk1.txt").write_text("# full path by mistake\n"
                                                      "/mnt/disk1/mydirs/x\n")
    (d / "rsync_excludes_linux_disk7.txt").write_text("/x\n")
    user, notes = ex.read_user_excludes(str(d), [1])
    assert len(notes) == 1 and "disk7.txt is ignored" in notes[0]["message"]
    assert "data_disk_index 7" in notes[0]["message"]
    filters, notes = ex.plan_filters([DataDisk(1, 20, "/mnt/disk1")], {}, user)
    msgs = [n["message"] for n in notes]
    assert any("rsync_excludes_linux.txt line 1: /mnt/disk1/big/ lies on data disk 1"
               in m and "write it in rsync_excludes_linux_disk1.txt as /big/" in m for m in msgs)
    assert any("disk1.txt line 2: /mnt/disk1/mydirs/x starts with the data disk's src_path"
               in m and "(write /mydirs/x)" in m for m in msgs)
    assert filters["disk1"] == ["- /mnt/disk1/mydirs/x", "- lost+found/*"]


def test_file_name_case_variant(tmp_path):
    d = tmp_path / "Excludes"
    d.mkdir()
    (d / "rsync_excludes_Linux.txt").write_text("/opt/cache/\n")  # as the seed spells it once
    user, notes = ex.read_user_excludes(str(d), [])
    assert [r[2] for r in user["system"]] == ["- /opt/cache/"]
    assert notes[0]["severity"] == "info" and "rsync_excludes_Linux.txt is read" in \
        notes[0]["message"]
    (d / "rsync_excludes_linux.txt").write_text("/opt/other/\n")
    user, notes = ex.read_user_excludes(str(d), [])
    assert [r[2] for r in user["system"]] == ["- /opt/other/"]
    assert "rsync_excludes_Linux.txt is ignored" in notes[0]["message"]


def test_protect_paths_only_inside_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "opt" / "g2a").mkdir(parents=True)
    assert ex.protect_paths(str(root), str(root / "opt" / "g2a"), "/elsewhere/c.json") == [
        "/opt/g2a/user_config.json", "/opt/g2a/client_data", "/opt/g2a/logs/"]
    assert ex.protect_paths(str(root), str(tmp_path / "work"), None) == []


def test_write_template_keeps_existing(tmp_path):
    d = str(tmp_path / "Excludes")
    assert ex.write_template(d) is True
    with open(os.path.join(d, ex.SYSTEM_FILE)) as f:
        text = f.read()
    assert ex.parse_exclude_text(text) == []  # only comments
    assert ex.write_template(d) is False


def _tree(base, files):
    for f in files:
        p = os.path.join(base, f)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as fh:
            fh.write(f)


def _listing(top):
    out = set()
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames:
            out.add(os.path.relpath(os.path.join(dirpath, n), top) + "/")
        for n in filenames:
            out.add(os.path.relpath(os.path.join(dirpath, n), top))
    return out


@pytest.mark.commands
def test_real_rsync_copies_what_the_rules_say(tmp_path):
    src = str(tmp_path / "src")
    _tree(src, [
        "etc/passwd", "dev/sda", "proc/1/status", "run/lock/x", "tmp/t", "media/cd/a",
        "mnt/other/x", "mnt/disk1/data.txt", "mnt/disk1/mydirs/docs/words/w.txt",
        "mnt/disk1/lost+found/y", "mnt/a/b/f", "mnt/a/z", "var/mydirs/docs/words/w.txt",
        "var/mydirs/docs/excels/report1.sh", "var/mydirs/docs/excels/keep.sh", "swapfile",
        "home/u/lost+found/y", "root/g2a/user_config.json", "root/g2a/notes.txt",
        "var/lib/lxcfs/p", "data/x/f", "weird[1]/w", "weird1/w",
    ])
    excl = tmp_path / "Excludes"
    excl.mkdir()
    (excl / "rsync_excludes_linux.txt").write_text(
        "/var/mydirs/docs/words/\n/var/mydirs/docs/excels/report1.sh\n")
    (excl / "rsync_excludes_linux_disk1.txt").write_text("/mydirs/docs/words/\n")
    disks = [DataDisk(1, 100, "/mnt/disk1"), DataDisk(2, 20, "/mnt/a/b"),
             DataDisk(3, 20, "/data/x")]
    user, _ = ex.read_user_excludes(str(excl), [1, 2, 3])
    manifest = {"mounts": [_mount("/weird[1]", "tmpfs")],
                "swap": [{"kind": "file", "path": "/swapfile"}]}
    filters, _ = ex.plan_filters(disks, manifest, user,
                                 ex.protect_paths(src, os.path.join(src, "root/g2a"), None))

    def push(source, rules, name):
        dst = str(tmp_path / name)
        argv = ["rsync", "-a"] + ["--filter=" + r for r in rules] + [source + "/", dst + "/"]
        runner.run(argv)
        return _listing(dst)

    assert push(src, filters["system"], "system") == {
        "etc/", "etc/passwd", "dev/", "proc/", "run/", "tmp/", "media/", "mnt/",
        "mnt/disk1/", "mnt/a/", "mnt/a/b/", "var/", "var/mydirs/", "var/mydirs/docs/",
        "var/mydirs/docs/excels/", "var/mydirs/docs/excels/keep.sh", "home/", "home/u/",
        "home/u/lost+found/", "root/", "root/g2a/", "root/g2a/notes.txt", "var/lib/",
        "var/lib/lxcfs/", "data/", "data/x/", "weird[1]/", "weird1/", "weird1/w",
    }
    assert push(src + "/mnt/disk1", filters["disk1"], "disk1") == {
        "data.txt", "mydirs/", "mydirs/docs/", "lost+found/"}
    assert push(src + "/mnt/a/b", filters["disk2"], "disk2") == {"f"}
