"""The two test hosts (image_build/dev/netns.py): what they make is theirs, and a mount
undone on the host is undone for the processes running in them too (tests run side by
side under pytest-xdist)."""

import os
import tempfile
import time

import pytest

from image_build.dev.netns import netns_pair
from wire import runner

pytestmark = pytest.mark.root


def _mounted_in(pid, path):
    with open("/proc/%d/mountinfo" % pid) as f:
        return any(line.split()[4] == path for line in f)


def _wait_for_own_mount_namespace(pid):
    mine = os.readlink("/proc/self/ns/mnt")
    for _ in range(100):
        if os.readlink("/proc/%d/ns/mnt" % pid) != mine:
            return
        time.sleep(0.05)
    raise AssertionError("ip netns exec did not enter a mount namespace of its own")


def test_an_unmount_on_the_host_reaches_a_process_started_in_a_namespace():
    where = tempfile.mkdtemp(prefix="g2a-netns-test-")
    mounted = False
    try:
        with netns_pair() as net:
            # mounted by "another test" before the namespace's process starts
            runner.run(["mount", "-t", "tmpfs", "-o", "size=1m", "g2a-test", where])
            mounted = True
            sleeper = net.start(net.src, ["sleep", "120"])
            _wait_for_own_mount_namespace(sleeper.pid)
            assert _mounted_in(sleeper.pid, where)  # its own copy of the host's mounts
            runner.run(["umount", where])
            mounted = False
            assert not _mounted_in(sleeper.pid, where)
            assert net.run(net.src, ["ip", "-o", "addr", "show"]).stdout.count(
                net.src_ip) == 1
        assert not {net.src, net.ecs} & set(
            runner.run(["ip", "netns", "list"]).stdout.split())
    finally:
        if mounted:
            runner.run(["umount", where], ok_codes=None)
        os.rmdir(where)
