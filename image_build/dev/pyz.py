"""Build ``go2aliyun.pyz``: the source script as ONE file for old sources.

    python3 -m image_build.dev.pyz [-o dist/go2aliyun.pyz] [--cache DIR]

The zipapp holds ``source_script/``, ``wire/`` (with ``manifest.schema.json``) and a
bundled click 7.1.2, the last click that runs on Python 3.6 (CentOS 7, Ubuntu 18.04)
and has no dependencies. The click wheel is fetched once with ``pip download`` into
a cache outside the repository (default ``~/.cache/go2aliyun``) and checked against
its pinned SHA-256. Run the result with ``python3 go2aliyun.pyz ...``.
"""

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import zipapp
import zipfile

from wire import runner
from wire.errors import CommandError, Go2AliyunError

CLICK_VERSION = "7.1.2"
CLICK_WHEEL = "click-7.1.2-py2.py3-none-any.whl"
CLICK_SHA256 = "dacca89f4bfadd5de3d7489b7c8a566eee0d3676333fbb50030263894c38c0dc"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ("source_script", "wire")
DATA_SUFFIXES = (".py", ".json")
INTERPRETER = "/usr/bin/env python3"

MAIN = '''\
"""go2aliyun as one file: python3 go2aliyun.pyz --help"""
import codecs
import io
import locale
import sys

if sys.version_info < (3, 6):
    sys.exit("go2aliyun needs Python 3.6 or newer (this is %s)" % sys.version.split()[0])

# Python 3.6 under LC_ALL=C/POSIX (cron, sudo, a minimal ssh session) has ASCII
# streams, and click 7 then refuses to run. Speak UTF-8 on our own streams instead.
if codecs.lookup(locale.getpreferredencoding()).name == "ascii":
    sys.stdout = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", errors="replace",
                                  line_buffering=sys.stdout.line_buffering)
    sys.stderr = io.TextIOWrapper(sys.stderr.buffer, encoding="utf-8", errors="replace",
                                  line_buffering=True)
    import click.core

    if hasattr(click.core, "_verify_python3_env"):
        click.core._verify_python3_env = lambda: None

from source_script.cli import main

sys.exit(main())
'''


def default_cache():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "go2aliyun")


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def ensure_click_wheel(cache):
    """The click 7.1.2 wheel in ``cache``, downloaded with pip when missing."""
    path = os.path.join(cache, CLICK_WHEEL)
    if not os.path.isfile(path) or _sha256(path) != CLICK_SHA256:
        os.makedirs(cache, exist_ok=True)
        runner.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary",
                    ":all:", "--disable-pip-version-check", "-q", "-d", cache,
                    "click==%s" % CLICK_VERSION], timeout=300)
    if not os.path.isfile(path):
        raise CommandError("pip download did not produce %s in %s" % (CLICK_WHEEL, cache),
                           hint="check the network access to PyPI or put the wheel there")
    digest = _sha256(path)
    if digest != CLICK_SHA256:
        raise Go2AliyunError("%s has SHA-256 %s, expected %s" % (path, digest, CLICK_SHA256),
                             code="build.bad_wheel", hint="delete it and build again")
    return path


def _copy_package(name, staging):
    src = os.path.join(REPO, name)
    for dirpath, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        rel = os.path.relpath(dirpath, REPO)
        for f in sorted(files):
            if f.endswith(DATA_SUFFIXES):
                os.makedirs(os.path.join(staging, rel), exist_ok=True)
                shutil.copy2(os.path.join(dirpath, f), os.path.join(staging, rel, f))


def _unpack_click(wheel, staging):
    with zipfile.ZipFile(wheel) as z:
        for member in z.namelist():
            if member.startswith("click/") and not member.endswith("/"):
                z.extract(member, staging)


def build(output, cache=None):
    """Write the zipapp to ``output`` and return its path."""
    wheel = ensure_click_wheel(cache or default_cache())
    output = os.path.abspath(output)
    if os.path.dirname(output):
        os.makedirs(os.path.dirname(output), exist_ok=True)
    staging = tempfile.mkdtemp(prefix="g2a-pyz-")
    try:
        for pkg in PACKAGES:
            _copy_package(pkg, staging)
        _unpack_click(wheel, staging)
        with open(os.path.join(staging, "__main__.py"), "w") as f:
            f.write(MAIN)
        tmp = output + ".tmp"
        zipapp.create_archive(staging, tmp, interpreter=INTERPRETER, compressed=True)
        os.replace(tmp, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output


def main(argv=None):
    p = argparse.ArgumentParser(prog="python3 -m image_build.dev.pyz", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("-o", "--output", default=os.path.join("dist", "go2aliyun.pyz"),
                   help="where to write the zipapp (default: dist/go2aliyun.pyz)")
    p.add_argument("--cache", default=None,
                   help="folder for the click wheel (default: ~/.cache/go2aliyun)")
    args = p.parse_args(argv)
    try:
        path = build(args.output, args.cache)
    except Go2AliyunError as e:
        sys.stderr.write("error [%s]: %s\n" % (e.code, e))
        return e.exit_code
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
