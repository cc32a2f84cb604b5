"""``bash image_build/setup.sh`` on a stock Debian 12 (issue 15): only Debian's python3
(3.11, no pip, "externally-managed-environment", PEP 668), no pyenv, nothing of ours.

The root is the sample server's cached debootstrap tarball
(:func:`image_build.dev.sample_server.ensure_rootfs`: minbase, no Python) with what a
stock install has on top (``python3``, ``ca-certificates``), run under bubblewrap with
the host's network (apt and PyPI), ``/dev``, a fresh ``/proc`` and its own pid
namespace (every process in it ends with it; its mounts are gone with it). Each step is
a new login shell (``env -i ... bash -l``), as a user typing the README's commands. The
site's pip settings and local CA certificates are copied in, as a machine of this site
has them (pip reaches PyPI through them); apt uses the tarball's own sources (the mirror
debootstrap used). The .deb and pip downloads are cached under the go2aliyun cache
folder (used when there, never needed).
"""

import os
import re
import shutil
import time

import pytest

from image_build.dev import sample_server
from tests.test_readme import TEST_COMMAND
from wire import runner

pytestmark = [pytest.mark.root, pytest.mark.long(minutes=10)]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECKOUT = "/root/go2aliyun"
# What a new shell of root has on Debian 12 (/etc/profile sets PATH from it too).
LOGIN_ENV = ["env", "-i", "HOME=/root", "TERM=dumb", "LANG=C.UTF-8",
             "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
# pip's site settings (files they name are copied too) and CA certificates to trust.
PIP_CONFIGS = ("/etc/pip.conf", "/etc/xdg/pip/pip.conf", "/root/.config/pip/pip.conf")
LOCAL_CAS = "/usr/local/share/ca-certificates"
NOT_COPIED = shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.pyc", ".pytest_cache",
                                    ".ruff_cache", "build", "dist", "*.egg-info", "*.pyz")


def _copy_in(root, path):
    dest = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if os.path.isdir(path):
        shutil.copytree(path, dest, dirs_exist_ok=True)
    else:
        shutil.copy2(path, dest)


def _site_settings(root):
    """The host's pip settings and every local file they name; its local CAs."""
    for conf in PIP_CONFIGS:
        if not os.path.isfile(conf):
            continue
        _copy_in(root, conf)
        with open(conf) as f:
            for word in re.findall(r"(?:file:)?(/[^\s]+)", f.read()):
                # the CA bundle is made in the root from its own ca-certificates
                if os.path.isfile(word) and not word.startswith("/etc/ssl/"):
                    _copy_in(root, word)
    if os.path.isdir(LOCAL_CAS):
        _copy_in(root, LOCAL_CAS)


def _prepare(root):
    runner.run(["tar", "--numeric-owner", "-C", root, "-xf", sample_server.ensure_rootfs()],
               timeout=900)
    # services are never started in a root without its own init (what Debian's
    # container images do)
    with open(os.path.join(root, "usr/sbin/policy-rc.d"), "w") as f:
        f.write("#!/bin/sh\nexit 101\n")
    os.chmod(os.path.join(root, "usr/sbin/policy-rc.d"), 0o755)
    shutil.copy2("/etc/resolv.conf", os.path.join(root, "etc/resolv.conf"))
    _site_settings(root)
    shutil.copytree(REPO, os.path.join(root, CHECKOUT.lstrip("/")), ignore=NOT_COPIED,
                    symlinks=True)


def _shell(root, caches, script, timeout):
    """``script`` in a new login shell of root, in the root (output and exit code)."""
    argv = ["bwrap", "--bind", root, "/", "--dev-bind", "/dev", "/dev", "--proc", "/proc",
            "--ro-bind", "/sys", "/sys", "--unshare-pid", "--die-with-parent",
            "--cap-add", "ALL"]
    for inside, outside in caches.items():
        argv += ["--bind", outside, inside]
    argv += ["--chdir", "/root", "--"] + LOGIN_ENV + ["bash", "-l", "-c", script]
    return runner.run(argv, ok_codes=None, timeout=timeout)


def test_setup_on_a_stock_debian_12_then_the_commands_and_a_quick_suite(tmp_path):
    cache = os.path.join(sample_server.default_cache_dir(), "stock-debian")
    caches = {"/var/cache/apt/archives": os.path.join(cache, "apt"),
              "/root/.cache/pip": os.path.join(cache, "pip")}
    for d in caches.values():
        os.makedirs(os.path.join(d, "partial"), exist_ok=True)
    root = str(tmp_path / "root")
    os.makedirs(root)
    try:
        _check(root, caches, cache)
    finally:
        # ~2 GB of tree: gone now, not when pytest rotates its folders (nothing runs in
        # it any more: every process died with its bwrap)
        shutil.rmtree(root, ignore_errors=True)


def _check(root, caches, cache):
    times = {}
    start = time.time()
    with sample_server.cache_lock(os.path.join(cache, "downloads")):
        _prepare(root)
        times["root"] = time.time() - start

        # A stock Debian 12: its python3, no pip, externally managed.
        t = time.time()
        r = _shell(root, caches, "apt-get update -qq && apt-get install -y -qq "
                   "--no-install-recommends python3 ca-certificates >/dev/null", 900)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        r = _shell(root, caches, "python3 -m pip --version", 60)
        assert r.returncode != 0 and "No module named pip" in r.stderr, r.stdout + r.stderr
        assert os.path.isfile(os.path.join(root, "usr/lib/python3.11/EXTERNALLY-MANAGED"))
        assert not os.path.exists(os.path.join(root, "root/.pyenv"))
        times["stock"] = time.time() - t

        # The README's set-up, from the checkout, as written.
        t = time.time()
        r = _shell(root, caches, "cd %s && bash image_build/setup.sh" % CHECKOUT, 2400)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        times["setup"] = time.time() - t

    # The commands a user types, from a new shell.
    for command, expect in (("go2aliyun --help", "migrate"),
                            ("go2aliyun-cloud --help", "launch"),
                            ("go2aliyun-receiver --help", "serve"),
                            ("command -v go2aliyun", "/usr/local/bin/go2aliyun")):
        r = _shell(root, caches, command, 120)
        assert r.returncode == 0 and expect in r.stdout, (command, r.stdout, r.stderr)
    # the commands run in the checkout's venv, made from Debian's python3
    r = _shell(root, caches, "readlink /usr/local/bin/go2aliyun-cloud && "
               "%s/.venv/bin/python3 -c 'import sys; print(sys.base_prefix)'" % CHECKOUT, 60)
    assert r.stdout.split() == [CHECKOUT + "/.venv/bin/go2aliyun-cloud", "/usr"], r.stdout

    # The README's test command, a quick part of the suite (what needs no root).
    t = time.time()
    r = _shell(root, caches, "cd %s && %s -p no:cacheprovider -q -m 'not qemu and not root' "
               "tests" % (CHECKOUT, TEST_COMMAND), 1800)
    times["suite"] = time.time() - t
    summary = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    print("stock Debian 12: %s; %s" % (
        ", ".join("%s %.0f s" % kv for kv in times.items()), summary))
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert re.search(r"\d+ passed", summary) and "failed" not in summary, summary
