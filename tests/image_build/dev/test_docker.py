"""The pure parts of the receiver image build (image_build/dev/docker.py) and of the
container's entry point (receiver/container.py); the real build and containers run in
tests/docker/."""

import json
import os
import re
import shlex

import yaml

from image_build.dev import docker as docker_build
from receiver import blockdev, container

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def dockerfile():
    with open(os.path.join(REPO, "Dockerfile")) as f:
        return f.read()


def test_dockerfile_tools_match_the_base_packages():
    text = dockerfile().replace("\\\n", " ")
    tools = re.search(r'ARG TOOLS="([^"]+)"', text).group(1).split()
    assert sorted(tools) == sorted(docker_build.BASE_PACKAGES)


def test_dockerfile_contract():
    text = dockerfile()
    assert re.search(r"^ARG BASE=go2aliyun/debian:bookworm$", text, re.M)
    assert "EXPOSE 8080 8703" in text
    assert re.search(r'^VOLUME \[.*"/var/lib/go2aliyun".*"/var/lib/go2aliyun/tls"', text, re.M)
    assert "HEALTHCHECK" in text and '"healthcheck"' in text
    assert '"--no-index"' in text or "--no-index" in text  # wheels only, no PyPI
    entry = re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1)
    assert json.loads(entry)[-2:] == ["-m", "receiver.container"]


def test_build_argv_and_keys():
    argv = docker_build.render_build_argv("/ctx", "go2aliyun/receiver:k1", "base:b", "k1",
                                          dockerfile="/repo/Dockerfile")
    assert argv[0] == "build" and argv[-1] == "/ctx"
    assert argv[argv.index("--file") + 1] == "/repo/Dockerfile"
    assert "BASE=base:b" in argv and "org.go2aliyun.image-key=k1" in argv
    assert argv.count("--tag") == 2 and "go2aliyun/receiver:latest" in argv
    a = docker_build.image_key("b1", "s1")
    assert a == docker_build.image_key("b1", "s1")
    assert a != docker_build.image_key("b1", "s2") != docker_build.image_key("b2", "s1")


def test_source_hash_follows_the_files(tmp_path):
    (tmp_path / "wire").mkdir()
    (tmp_path / "wire" / "a.py").write_text("x = 1\n")
    (tmp_path / "wire" / "__pycache__").mkdir()
    (tmp_path / "wire" / "__pycache__" / "a.pyc").write_bytes(b"junk")
    first = docker_build.source_tree_hash(str(tmp_path), parts=("wire", "Dockerfile"))
    (tmp_path / "wire" / "__pycache__" / "a.pyc").write_bytes(b"other junk")
    assert docker_build.source_tree_hash(str(tmp_path), parts=("wire", "Dockerfile")) == first
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    second = docker_build.source_tree_hash(str(tmp_path), parts=("wire", "Dockerfile"))
    assert second != first
    (tmp_path / "wire" / "a.py").write_text("x = 2\n")
    assert docker_build.source_tree_hash(str(tmp_path), parts=("wire", "Dockerfile")) != second


def test_labels_and_old_tags():
    out = json.dumps([{"Config": {"Labels": {"org.go2aliyun.image-key": "k"}}}])
    assert docker_build.parse_labels(out) == {"org.go2aliyun.image-key": "k"}
    assert docker_build.parse_labels("[]") == {}
    assert docker_build.parse_labels("Error: No such image") == {}
    assert docker_build.parse_labels(json.dumps([{"Config": {"Labels": None}}])) == {}
    assert docker_build.old_tags("k2\nlatest\nk1\n<none>\n\n", keep=("k2", "latest")) == ["k1"]


def test_split_and_replace_serve_args():
    args = ["--state", "/s", "--disk", "system=/disks/system.img", "--disk=disk1=/dev/vdc",
            "--address", "10.0.0.5"]
    disks, state, console = container.split_serve_args(args)
    assert disks == [(3, "system", "/disks/system.img"), (4, "disk1", "/dev/vdc")]
    assert state == "/s" and console is False
    out = container.replace_disk_values(args, disks, {"system": "/dev/loop7"})
    assert out == ["--state", "/s", "--disk", "system=/dev/loop7", "--disk=disk1=/dev/vdc",
                   "--address", "10.0.0.5"]
    assert args[3] == "system=/disks/system.img"  # the input is left alone
    _, state, console = container.split_serve_args(["--state=/x", "--no-console"])
    assert state == "/x" and console is True
    assert container.split_serve_args(["--disk"]) == ([], container.DEFAULT_STATE, False)


def test_losetup_and_loop_names():
    assert blockdev.parse_losetup_j("/dev/loop3\n  /dev/loop12\n\n") == ["/dev/loop3",
                                                                          "/dev/loop12"]
    assert blockdev.parse_losetup_j("") == []
    assert blockdev.loop_number("/dev/loop12") == 12
    for bad in ("/dev/loop12p1", "/dev/sda", "loop1"):
        try:
            blockdev.loop_number(bad)
        except blockdev.DiskError as e:
            assert e.code == "disk.invalid"
        else:
            raise AssertionError("accepted %r" % bad)


def test_remount_only_where_the_step_needs_the_disks():
    yes = [{"state": s} for s in ("READY_FOR_DATA", "SYNCING", "CONVERTING")]
    yes.append({"state": "FAILED", "step": "CONVERTING"})
    no = [{"state": s} for s in ("NEW", "PLANNED", "PREPARING", "VERIFYING", "SNAPSHOTTING",
                                 "IMAGE_READY", "RELEASED")]
    no.append({"state": "FAILED", "step": "PREPARING"})
    assert all(container.needs_remount(d) for d in yes)
    assert not any(container.needs_remount(d) for d in no)


def test_docker_masks_of_proc_are_found_deepest_first():
    text = ("22 1 0:50 / / rw - overlay overlay rw\n"
            "23 22 0:52 / /proc rw - proc proc rw\n"
            "24 23 0:52 /bus /proc/bus ro - proc proc rw\n"
            "25 23 0:53 /null /proc/kcore rw - tmpfs tmpfs rw\n"
            "26 23 0:54 / /proc/sys/fs/binfmt_misc rw - binfmt_misc b rw\n"
            "27 22 0:55 / /sys ro - sysfs sysfs ro\n")
    assert container.proc_masks(text) == ["/proc/sys/fs/binfmt_misc", "/proc/kcore",
                                          "/proc/bus"]


def test_compose_file_gives_the_documented_flags():
    with open(os.path.join(REPO, "tests", "docker", "docker-compose.yml")) as f:
        compose = yaml.safe_load(f)
    assert compose["version"] == "2.4"
    with open(os.path.join(REPO, "docs", "docker.md")) as f:
        doc = f.read()
    for name in ("receiver", "source"):
        svc = compose["services"][name]
        assert svc["cap_add"] == ["ALL"] and svc["cap_drop"] == ["SYS_RESOURCE"]
        assert svc["security_opt"] == ["seccomp=unconfined"]
        assert svc["device_cgroup_rules"] == ["b 7:* rmw", "b 259:* rmw"]
        assert svc["networks"] == ["migration"]
    # the docs' docker run line carries the same flags
    lines = doc.splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip().startswith("docker run"))
    run = []
    for line in lines[first:]:
        run.append(line.strip().rstrip("\\"))
        if not line.endswith("\\"):
            break
    words = shlex.split(" ".join(run))
    for flag in ("--cap-add", "--cap-drop", "--security-opt", "--device-cgroup-rule"):
        assert flag in words
    assert "b 7:* rmw" in words and "b 259:* rmw" in words and "ALL" in words


def test_remount_plan_follows_the_modules_to_their_devices_now():
    assert blockdev.partition_of("/dev/loop2p2") == ("/dev/loop2", 2)
    assert blockdev.partition_of("/dev/vdb1") == ("/dev/vdb", 1)
    assert blockdev.partition_of("/dev/nvme0n1p3") == ("/dev/nvme0n1", 3)
    assert blockdev.partition_of("/dev/mapper/vg-root") is None
    assert blockdev.partition_of("/dev/vdb") is None
    prepared = {"devices": {"system": "/dev/loop2", "disk1": "/dev/loop3"},
                "mounts": [{"device": "/dev/loop2p2", "path": "/m/system", "type": "ext4"},
                           {"device": "/dev/loop2p1", "path": "/m/system/boot",
                            "type": "ext4"},
                           {"device": "/dev/loop3p1", "path": "/m/disk1", "type": "xfs"}]}
    plan = blockdev.plan_remount(prepared, {"system": "/dev/loop9", "disk1": "/dev/vdc"})
    assert plan == [("/dev/loop9p2", "loop9p2", "/m/system", "ext4"),
                    ("/dev/loop9p1", "loop9p1", "/m/system/boot", "ext4"),
                    ("/dev/vdc1", "vdc1", "/m/disk1", "xfs")]
    lvm = dict(prepared, mounts=[{"device": "/dev/mapper/vg-root", "path": "/m/system",
                                  "type": "xfs"}])
    assert blockdev.plan_remount(lvm, {"system": "/dev/loop2"}) is None
    assert blockdev.plan_remount(prepared, {"system": "/dev/loop2"}) is None  # no disk1
