"""The copy's own tools run in a bwrap sandbox (issue 14): no network (the metadata
service is out of reach), no view of the receiver's files or processes, nothing left
running; the set-up in the target is undone even on failure.

The ``root`` tests build a target from the host's own binaries (``/usr/bin``, ``/usr/lib``
bound read-only), plant a hook and run it as the conversion runs a command."""

import os
import stat
import subprocess
import sys
import time
import uuid

import pytest

from receiver.convert import chroot as chroot_mod
from receiver.disks import probe
from wire import runner
from wire.errors import CommandError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
METADATA = "100.100.100.200"


def test_sandbox_argv_is_bwrap_without_network_over_the_target():
    argv = chroot_mod.sandbox_argv("/mnt/t", ["grub-install", "/dev/vdb"],
                                   ["/dev/vdb", "/dev/vdb1"], {"GRUB_DISABLE_OS_PROBER": "true"})
    assert argv == [
        "bwrap", "--unshare-all", "--die-with-parent", "--new-session",
        "--bind", "/mnt/t", "/", "--dev", "/dev",
        "--dev-bind", "/dev/vdb", "/dev/vdb", "--dev-bind", "/dev/vdb1", "/dev/vdb1",
        "--proc", "/proc", "--ro-bind", "/sys", "/sys", "--tmpfs", "/sys/firmware",
        "--tmpfs", "/run", "--tmpfs", "/tmp", "--chdir", "/", "--clearenv",
        "--setenv", "DEBIAN_FRONTEND", "noninteractive",
        "--setenv", "GRUB_DISABLE_OS_PROBER", "true", "--setenv", "LC_ALL", "C",
        "--setenv", "PATH", chroot_mod.PATH,
        "--", "grub-install", "/dev/vdb"]
    assert "--share-net" not in argv
    uefi = chroot_mod.sandbox_argv("/mnt/t", ["true"], firmware="uefi")
    assert "/sys/firmware" not in uefi
    lvm = chroot_mod.sandbox_argv("/mnt/t", ["true"], ["/dev/dm-0", "/dev/mapper/control"])
    assert "--unshare-all" not in lvm and "--unshare-user" not in lvm
    assert {"--unshare-net", "--unshare-pid"} <= set(lvm) and "--share-net" not in lvm


def test_the_sandbox_gets_only_the_target_disks():
    mounts = [{"mountpoint": "/", "source": "/dev/vda1"},
              {"mountpoint": "/mnt/t", "source": "/dev/loop3p2"},
              {"mountpoint": "/mnt/t/boot/efi", "source": "/dev/loop3p1"},
              {"mountpoint": "/mnt/t/proc", "source": "proc"},
              {"mountpoint": "/mnt/tother", "source": "/dev/loop9"},
              {"mountpoint": "/mnt/t/mnt/disk1", "source": "/dev/mapper/g2a--vg-data"}]
    names = ["loop3", "loop3p1", "loop3p2", "loop30", "loop9", "vda", "vda1", "null"]
    assert chroot_mod.plan_devices("/mnt/t", "/dev/loop3", mounts, names) == [
        "/dev/loop3", "/dev/loop3p1", "/dev/loop3p2", "/dev/mapper/g2a--vg-data"]
    assert chroot_mod.plan_devices("/mnt/t", "/dev/vdb", [], ["vdb", "vdb1", "vdb12",
                                                              "vdba"]) == [
        "/dev/vdb", "/dev/vdb1", "/dev/vdb12"]


# ----------------------------------------------------------------- root: real sandboxes

@pytest.fixture
def target(tmp_path):
    """A target tree running the host's binaries (bound read-only), with its own sbin."""
    root = str(tmp_path / "target")
    for d in ("etc/grub.d", "usr/sbin", "usr/bin", "usr/lib", "usr/lib64", "dev", "proc",
              "sys", "run", "tmp", "root"):
        os.makedirs(os.path.join(root, d))
    for name in ("bin", "lib", "lib64"):
        os.symlink("usr/" + name, os.path.join(root, name))
    os.symlink("usr/sbin", os.path.join(root, "sbin"))
    bound = []
    try:
        for d in ("usr/bin", "usr/lib", "usr/lib64"):
            where = os.path.join(root, d)
            runner.run(["mount", "--bind", "/" + d, where])
            bound.append(where)
            runner.run(["mount", "-o", "remount,bind,ro", where])
        yield root
    finally:
        for where in reversed(bound):
            runner.run(["umount", "-l", where], ok_codes=None)


def _run_hook(root, script, netns=None):
    """Run ``sh -c script`` as the conversion runs a command (in ``netns`` if given), in a
    separate Python (``ip netns exec`` moves a whole process); its stdout."""
    code = ("import sys; from receiver.convert import chroot as c\n"
            "box = getattr(c, 'sandbox', None) or c.chroot\n"
            "with box(sys.argv[1]) as run:\n"
            "    r = run(['/bin/sh', '-c', sys.argv[2]], ok_codes=None)\n"
            "print(r.stdout)\n")
    argv = [sys.executable, "-c", code, root, script]
    if netns:
        argv = ["ip", "netns", "exec", netns] + argv
    r = runner.run(argv, env={"PYTHONPATH": REPO}, timeout=120)
    return r.stdout


@pytest.mark.root
def test_a_hook_cannot_reach_the_metadata_service(target):
    ns = "g2a-h14-%s" % uuid.uuid4().hex[:6]
    runner.run(["ip", "netns", "add", ns])
    listener = None
    try:
        runner.run(["ip", "-n", ns, "link", "set", "lo", "up"])
        runner.run(["ip", "-n", ns, "addr", "add", METADATA + "/32", "dev", "lo"])
        listener = runner.start(
            ["ip", "netns", "exec", ns, sys.executable, "-c",
             "import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, "
             "socket.SO_REUSEADDR, 1); s.bind(('%s', 80)); s.listen(8)\n"
             "while True: s.accept()[0].close()" % METADATA],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        hook = ("if timeout 5 bash -c 'exec 3<>/dev/tcp/%s/80' 2>/dev/null; "
                "then echo REACHED; else echo BLOCKED; fi" % METADATA)
        # the stand-in answers from the namespace the receiver runs in ...
        for _ in range(50):
            r = runner.run(["ip", "netns", "exec", ns, "bash", "-c", hook], ok_codes=None)
            if "REACHED" in r.stdout:
                break
            time.sleep(0.1)
        assert "REACHED" in r.stdout
        # ... but not from the sandbox
        assert _run_hook(target, hook, netns=ns).split() == ["BLOCKED"]
    finally:
        if listener is not None:
            listener.kill()
            listener.wait()
        runner.run(["ip", "netns", "del", ns], ok_codes=None)


@pytest.mark.root
def test_a_hook_cannot_read_the_receivers_state(target, tmp_path):
    state = tmp_path / "var-lib-go2aliyun"
    state.mkdir()
    secret = state / "token"
    secret.write_text("receiver-secret-token\n")
    out = _run_hook(target, "cat /proc/1/root%s %s /proc/*/root%s 2>/dev/null; "
                    "ls /proc/1/root/ 2>/dev/null | head -50; echo END"
                    % (secret, secret, secret))
    assert "receiver-secret-token" not in out
    assert out.split()[-1] == "END"
    assert "tmp" in out.split()  # /proc/1/root is the target itself


def _processes_with(marker):
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if marker.encode() in f.read():
                    out.append(int(pid))
        except OSError:
            continue
    return out


@pytest.mark.root
def test_a_hook_leaves_no_process_behind(target):
    marker = "1000.%d" % (uuid.uuid4().int % 100000)
    try:
        _run_hook(target, "sleep %s >/dev/null 2>&1 </dev/null & echo started" % marker)
        time.sleep(0.5)
        assert _processes_with(marker) == []
    finally:
        for pid in _processes_with(marker):  # only the sleep this test started
            os.kill(pid, 9)


@pytest.mark.root
def test_the_sandbox_set_up_is_undone_even_when_a_command_fails(target):
    root = target
    prober = os.path.join(root, "etc/grub.d/30_os-prober")
    with open(prober, "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(prober, 0o755)
    before = probe.read_mountinfo()
    with pytest.raises(CommandError), chroot_mod.sandbox(root) as run:
        with open(os.path.join(root, "usr/sbin/policy-rc.d")) as f:
            assert f.read().endswith("exit 101\n")
        assert stat.S_IMODE(os.stat(prober).st_mode) == 0o644
        r = run(["/bin/sh", "-c", "cat /usr/sbin/policy-rc.d; ls /dev; env"])
        assert "exit 101" in r.stdout and "PATH=" + chroot_mod.PATH in r.stdout
        assert "PYTHONPATH" not in r.stdout  # a clean environment
        run(["/no/such/command"])
    assert probe.read_mountinfo() == before  # the sandbox mounts nothing on the receiver
    assert not os.path.exists(os.path.join(root, "usr/sbin/policy-rc.d"))
    assert stat.S_IMODE(os.stat(prober).st_mode) == 0o755
    assert sorted(os.listdir(os.path.join(root, "usr/sbin"))) == []


@pytest.mark.root
def test_the_sandbox_sees_the_system_disk(target, tmp_path):
    img = str(tmp_path / "disk.img")
    with open(img, "wb") as f:
        f.truncate(8 << 20)
    dev = runner.run(["losetup", "--find", "--show", img]).stdout.strip()
    try:
        with chroot_mod.sandbox(target, system_device=dev) as run:
            r = run(["/bin/sh", "-c", "ls /dev; head -c 512 %s | wc -c" % dev])
        names = r.stdout.split()
        assert os.path.basename(dev) in names and names[-1] == "512"
        # bwrap's own /dev, the system disk, and the disks of what is mounted in the
        # target (here the host's disk, under the bound /usr): nothing else
        given = {os.path.basename(d) for d in chroot_mod.plan_devices(
            target, dev, probe.read_mountinfo(), os.listdir("/dev"))}
        bwrap_dev = {"console", "core", "fd", "full", "null", "ptmx", "pts", "random", "shm",
                     "stderr", "stdin", "stdout", "tty", "urandom", "zero"}
        assert set(names[:-1]) - bwrap_dev == given
    finally:
        runner.run(["losetup", "-d", dev], ok_codes=None)
