"""The real receiver's CONVERTING meets a hostile copy (issue 14, holes 2 and 3):
``go2aliyun-receiver serve`` on a loop disk with the local provider, a small copy (the
Debian 12 fixture tree, no boot) pushed through the data channel, then ``finalize``.

- A copy whose ``etc`` is a symlink to a folder of the receiver is refused with
  ``conversion.unsafe_path``, and that folder stays as it was.
- A hook planted in the copy (its ``grub-install``, the first command conversion runs)
  cannot reach a stand-in metadata service (100.100.100.200 on the receiver's own
  network namespace, made by the test), cannot read the receiver's state folder, and
  leaves no process behind.

Each test has its own receiver (a migration that FAILED takes no data again) in its
own network namespace, which the test's thread enters to talk to it."""

import contextlib
import glob
import os
import shutil
import signal
import socket
import time
import uuid

import pytest

from tests.helpers import nsforward
from tests.helpers.e2e import GIB, loop_disks
from tests.receiver.conftest import load_manifest, sample_plan, unmount_under, write_file
from tests.receiver.convert import trees
from tests.receiver.test_serve import Receiver, _pids_of, _rsync, _wait_state
from wire import runner

pytestmark = pytest.mark.root
METADATA = "100.100.100.200"


@contextlib.contextmanager
def _receiver_on_a_disk(base):
    """serve in a new network namespace (lo up, the stand-in metadata address on it,
    something listening on port 80 there) with loop disks; this thread inside it."""
    ns = "g2a-h14c-%s" % uuid.uuid4().hex[:6]
    runner.run(["ip", "netns", "add", ns])
    r = None
    try:
        runner.run(["ip", "-n", ns, "link", "set", "lo", "up"])
        runner.run(["ip", "-n", ns, "addr", "add", METADATA + "/32", "dev", "lo"])
        with loop_disks(base, {"system": 40 * GIB, "disk1": 40 * GIB}) as disks, \
                nsforward.entered(ns):
            stand_in = socket.socket()
            try:
                stand_in.bind((METADATA, 80))
                stand_in.listen(16)  # the kernel completes handshakes: no accept needed
                socket.create_connection((METADATA, 80), timeout=5).close()  # reachable here
                r = Receiver(os.path.join(base, "g2a-%s" % os.urandom(3).hex()))
                os.makedirs(r.base)
                r.roots = {}
                r.extra = ["--disk", "system=" + disks["system"],
                           "--disk", "disk1=" + disks["disk1"], "--provider", "local",
                           "--output", os.path.join(r.base, "images"), "--no-verify-boot"]
                r.start()
                yield r
            finally:
                if r is not None:
                    r.stop()
                    for pid in r.leftovers(wait=5):
                        with contextlib.suppress(OSError):
                            os.kill(pid, signal.SIGKILL)
                    unmount_under(r.base)
                stand_in.close()
    finally:
        runner.run(["ip", "netns", "del", ns], ok_codes=None)


def _convert(r, copy):
    """Session, plan, PREPARING on the disk, the copy pushed as the source pushes it,
    then finalize; the migration document once CONVERTING has ended in FAILED."""
    s, cert = r.session()
    plan = dict(sample_plan(), system_disk_size=40)  # the manifest's disks, sparse
    plan["data_disks"][0]["size_gib"] = 40
    m = s.put(r.url("/v1/migration/manifest"),
              json={"manifest": load_manifest(), "plan": plan})
    assert m.status_code == 200, m.text
    assert s.post(r.url("/v1/migration/prepare"), json={}).status_code == 202
    _wait_state(r, s, "READY_FOR_DATA", timeout=120)
    assert s.post(r.url("/v1/migration/syncs"), json={}).status_code == 201
    pushed = _rsync(r, cert, copy, "system")
    assert pushed.returncode == 0, pushed.stderr
    assert s.post(r.url("/v1/migration/syncs/1/finished"), json={}).status_code == 200
    assert s.post(r.url("/v1/migration/finalize"), json={}).status_code == 202
    deadline = time.time() + 120
    while time.time() < deadline:
        doc = s.get(r.url("/v1/migration")).json()
        if doc["state"] == "FAILED":
            return doc
        time.sleep(0.2)
    raise AssertionError("CONVERTING did not end: %s" % doc)


def _copy(tmp_path):
    """The Debian 12 fixture tree as the copy, without its kernel that has no virtio
    (conversion would refuse it before the steps these tests are about)."""
    copy = trees.copy_tree("debian12", tmp_path / "copy")
    for p in glob.glob(os.path.join(copy, "boot", "*-6.1.55-web01")):
        os.unlink(p)
    return copy


def _snapshot(folder):
    """{relative path: bytes} of every file under ``folder``."""
    out = {}
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            p = os.path.join(dirpath, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, folder)] = f.read()
    return out


def test_a_copy_whose_etc_leads_to_the_receiver_is_refused(tmp_path):
    base = str(tmp_path)
    copy = _copy(tmp_path)
    # the receiver's own folder the copy's etc leads to (here a stand-in for /etc)
    theirs = os.path.join(base, "receiver-etc")
    shutil.move(os.path.join(copy, "etc"), theirs)
    os.unlink(os.path.join(theirs, "os-release"))  # a link into the copy's /usr/lib
    shutil.copy2(os.path.join(copy, "usr", "lib", "os-release"), theirs)
    before = _snapshot(theirs)
    os.symlink("../" * 40 + theirs.lstrip("/"), os.path.join(copy, "etc"))
    with _receiver_on_a_disk(base) as r:
        doc = _convert(r, copy)
    after = _snapshot(theirs)
    assert sorted(after) == sorted(before)  # nothing added (no fstab.pre-migration)
    assert after == before  # nothing rewritten (fstab, initramfs-tools/modules)
    error = doc["error"]
    assert error["code"] == "conversion.unsafe_path", error
    assert doc["step"] == "CONVERTING"
    assert "/etc" in error["message"] and "refusing to convert it" in error["message"]


# The host binaries the planted hook needs, copied with their libraries into the copy.
HOOK_TOOLS = ["/usr/bin/bash", "/usr/bin/cat", "/usr/bin/sleep", "/usr/bin/timeout",
              "/usr/bin/setsid"]

HOOK = """#!/bin/bash
# planted in the copy: what a hostile grub-install could try on the receiver
if timeout 5 bash -c 'exec 3<>/dev/tcp/%(metadata)s/80' 2>/dev/null; then
    echo NET=REACHED >&2
else
    echo NET=BLOCKED >&2
fi
for p in %(status)s /proc/1/root%(status)s /proc/*/root%(status)s; do
    if cat "$p" >/dev/null 2>&1; then echo "STATE=READ($p)" >&2; fi
done
setsid sleep %(marker)s </dev/null >/dev/null 2>&1 &
echo HOOK-RAN >&2
exit 1
"""


def _add_host_tools(copy, tools):
    """``tools`` and the libraries they load (``ldd``), at the same paths in ``copy``
    (a merged-/usr layout: /bin, /lib, /lib64 are links into /usr)."""
    for name in ("bin", "lib", "lib64"):
        if not os.path.lexists(os.path.join(copy, name)):
            os.symlink("usr/" + name, os.path.join(copy, name))
    files = set(tools)
    for tool in tools:
        for line in runner.run(["ldd", tool]).stdout.splitlines():
            parts = line.split()
            path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
            if path.startswith("/"):
                files.add(path)
    for path in sorted(files):
        real = _merged(os.path.realpath(path))
        dst = os.path.join(copy, real.lstrip("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(os.path.realpath(path), dst)
        asked = os.path.join(copy, _merged(path).lstrip("/"))
        if asked != dst and not os.path.lexists(asked):
            os.makedirs(os.path.dirname(asked), exist_ok=True)
            os.symlink(real, asked)  # absolute: the copy's own file


def _merged(path):
    """``path`` in a merged-/usr layout (/lib64/x -> /usr/lib64/x)."""
    top = path.split("/")[1]
    return "/usr" + path if top in ("bin", "sbin", "lib", "lib64") else path


def test_a_hook_in_the_copy_reaches_no_network_no_state_and_leaves_no_process(tmp_path):
    base = str(tmp_path)
    copy = _copy(tmp_path)
    _add_host_tools(copy, HOOK_TOOLS)
    marker = "1000.%d" % (uuid.uuid4().int % 100000)
    with _receiver_on_a_disk(base) as r:
        status = os.path.join(r.state, "status.json")
        assert os.path.exists(status)
        hook = os.path.join(copy, "usr", "sbin", "grub-install")
        write_file(hook, HOOK % {"metadata": METADATA, "status": status, "marker": marker})
        os.chmod(hook, 0o755)
        try:
            doc = _convert(r, copy)
            error = doc["error"]
            print("the hook's report: %s" % error["message"])
            assert error["code"] == "conversion.command_failed", error
            assert "grub-install" in error["message"] and "HOOK-RAN" in error["message"]
            assert "NET=BLOCKED" in error["message"]
            assert "NET=REACHED" not in error["message"]
            assert "STATE=READ" not in error["message"]
            time.sleep(0.5)
            assert _pids_of(marker) == [], "the hook's process outlived the command"
        finally:
            for pid in _pids_of(marker):  # only the sleep this test's hook started
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
