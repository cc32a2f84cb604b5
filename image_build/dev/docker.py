"""The receiver as a container image: ``Dockerfile`` at the repository root.

Inputs -> keys -> images, every step cached so a rerun with no change is instant:

1. base image ``go2aliyun/debian:bookworm``: ``docker import`` of a debootstrap tarball made
   by :func:`image_build.dev.sample_server.ensure_rootfs` with :data:`BASE_PACKAGES` (the
   receiver's system tools, so the Dockerfile's ``apt-get install`` finds them all and
   needs no network), cached under ``/var/cache/go2aliyun`` by its package list. No image
   registry is needed. The image carries the label ``org.go2aliyun.base-key``.
2. build context (a folder outside the repository): the Dockerfile's ``wheels/`` = the
   project's wheel and every ``receiver`` dependency, made ON THE HOST with ``pip wheel``
   (pip inside a build does not reach PyPI); the image installs them with ``--no-index``.
3. ``docker build`` -> ``go2aliyun/receiver:<key>`` (and ``:latest``) where the key covers
   the base key, the Dockerfile and the project's source files.

    python3 -m image_build.dev.docker build [--cache DIR] [--tag NAME] [--json]
    python3 -m image_build.dev.docker base          # only the base image

With a registry at hand, ``--build-arg BASE=debian:bookworm`` builds the same image from
Docker Hub's Debian (the Dockerfile then installs the tools with apt).
"""

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile

from image_build.dev import sample_server
from wire import runner
from wire.errors import CommandError, UsageError

log = logging.getLogger(__name__)

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCKERFILE = os.path.join(PROJECT_DIR, "Dockerfile")
BASE_REPO = "go2aliyun/debian"
BASE_TAG = BASE_REPO + ":bookworm"
IMAGE_REPO = "go2aliyun/receiver"
BASE_KEY_LABEL = "org.go2aliyun.base-key"
IMAGE_KEY_LABEL = "org.go2aliyun.image-key"

# Keep in sync with the Dockerfile's TOOLS (a unit test checks that they match).
BASE_PACKAGES = (
    "python3", "python3-venv", "ca-certificates", "rsync", "fdisk", "util-linux", "mount",
    "e2fsprogs", "xfsprogs", "dosfstools", "mtools", "lvm2", "grub-pc-bin",
    "grub-efi-amd64-bin", "grub2-common", "qemu-system-x86", "qemu-utils", "ovmf", "openssl",
    "kmod", "procps", "bubblewrap",
)
# The files that make the image; their content is part of the key.
SOURCE_PARTS = ("pyproject.toml", "Dockerfile", "wire", "source_script", "receiver",
                "image_build", "cloud-init")


def docker_binary():
    """The docker CLI that matches the daemon: Debian's ``/usr/bin/docker`` first (a newer
    CLI elsewhere on PATH may insist on buildx), else the one on PATH."""
    if os.path.exists("/usr/bin/docker"):
        return "/usr/bin/docker"
    found = runner.which("docker")
    if not found:
        raise UsageError("docker is not installed", hint="apt-get install docker.io")
    return found


def docker(args, **kwargs):
    kwargs.setdefault("timeout", 600)
    # the classic builder: no buildx plugin needed, same result with every CLI
    env = dict(kwargs.pop("env", None) or {})
    env.setdefault("DOCKER_BUILDKIT", "0")
    return runner.run([docker_binary()] + list(args), env=env, **kwargs)


def source_tree_hash(project_dir=PROJECT_DIR, parts=SOURCE_PARTS):
    """SHA-256 over the names and contents of the project's source files (pure apart from
    reading them), skipping caches."""
    h = hashlib.sha256()
    for part in parts:
        top = os.path.join(project_dir, part)
        if os.path.isfile(top):
            files = [top]
        elif os.path.isdir(top):
            files = []
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames[:] = sorted(d for d in dirnames if d != "__pycache__"
                                     and not d.endswith(".egg-info"))
                files += [os.path.join(dirpath, f) for f in sorted(filenames)
                          if not f.endswith((".pyc", ".pyo"))]
        else:
            files = []
        for path in files:
            h.update(os.path.relpath(path, project_dir).encode() + b"\0")
            with open(path, "rb") as f:
                h.update(f.read())
            h.update(b"\0")
    return h.hexdigest()


def base_key(packages=BASE_PACKAGES):
    return sample_server.rootfs_key(packages=packages)


def image_key(base, source_hash):
    """The receiver image's key (pure)."""
    blob = json.dumps({"base": base, "source": source_hash}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def render_build_argv(context, tag, base_image, key, dockerfile=DOCKERFILE):
    """``docker build`` arguments (pure)."""
    return ["build", "--file", dockerfile, "--tag", tag, "--tag", IMAGE_REPO + ":latest",
            "--build-arg", "BASE=%s" % base_image,
            "--label", "%s=%s" % (IMAGE_KEY_LABEL, key), context]


def parse_labels(inspect_json):
    """Labels of the first image in ``docker image inspect`` output (pure); {} if none."""
    try:
        items = json.loads(inspect_json)
    except ValueError:
        return {}
    if not items:
        return {}
    return (items[0].get("Config") or {}).get("Labels") or {}


def image_labels(ref):
    r = docker(["image", "inspect", ref], ok_codes=None)
    if r.returncode != 0:
        return None
    return parse_labels(r.stdout)


def _configure_base(tree):
    # A container gets its hostname and network from the engine: leave both unset.
    for name in ("etc/hostname",):
        path = os.path.join(tree, name)
        if os.path.exists(path):
            os.unlink(path)


def ensure_base(cache_dir=None, progress=None):
    """Import the base image from the cached tarball unless it is there; returns the
    key-tagged reference (``go2aliyun/debian:bookworm-<key>``)."""
    say = progress or log.info
    key = base_key()
    ref = "%s:bookworm-%s" % (BASE_REPO, key)
    labels = image_labels(ref)
    if labels is not None and labels.get(BASE_KEY_LABEL) == key:
        docker(["tag", ref, BASE_TAG])
        return ref
    say("making the Debian root tree (debootstrap, cached by its package list)")
    tarball = sample_server.ensure_rootfs(cache_dir, packages=BASE_PACKAGES,
                                          configure=_configure_base)
    say("docker import %s -> %s" % (tarball, ref))
    docker(["import", "--change", "LABEL %s=%s" % (BASE_KEY_LABEL, key),
            "--change", 'CMD ["/bin/bash"]', tarball, ref], timeout=1800)
    docker(["tag", ref, BASE_TAG])
    return ref


def build_wheels(out_dir, project_dir=PROJECT_DIR):
    """The project's wheel and every receiver dependency as wheels, made on the host."""
    os.makedirs(out_dir, exist_ok=True)
    runner.run([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "-q",
                "--wheel-dir", out_dir, project_dir + "[receiver]"], timeout=1800)
    names = sorted(os.listdir(out_dir))
    if not any(n.startswith("go2aliyun-") for n in names):
        raise CommandError("pip wheel made no go2aliyun wheel in %s" % out_dir)
    return names


def build(cache_dir=None, project_dir=PROJECT_DIR, tag=None, force=False, progress=None):
    """Make (or reuse) the receiver image; returns ``{"image", "key", "base", "built"}``."""
    say = progress or log.info
    cache_dir = cache_dir or sample_server.default_cache_dir()
    base = ensure_base(cache_dir, progress=say)
    key = image_key(base_key(), source_tree_hash(project_dir))
    tag = tag or "%s:%s" % (IMAGE_REPO, key)
    labels = image_labels(tag)
    if not force and labels is not None and labels.get(IMAGE_KEY_LABEL) == key:
        docker(["tag", tag, IMAGE_REPO + ":latest"])
        return {"image": tag, "key": key, "base": base, "built": False}
    os.makedirs(cache_dir, exist_ok=True)
    context = tempfile.mkdtemp(prefix="docker-context-", dir=cache_dir)
    try:
        say("building the project's wheels on the host")
        names = build_wheels(os.path.join(context, "wheels"), project_dir)
        say("wheels: %s" % ", ".join(names))
        say("docker build -> %s" % tag)
        docker(render_build_argv(context, tag, base, key,
                                 os.path.join(project_dir, "Dockerfile")), timeout=1800)
    finally:
        shutil.rmtree(context, ignore_errors=True)
    prune_old_images(keep=(tag.partition(":")[2], "latest"))
    return {"image": tag, "key": key, "base": base, "built": True}


def old_tags(tags_text, keep):
    """Tags of ``docker images REPO --format {{.Tag}}`` output that are not in ``keep``
    (pure)."""
    return sorted({t.strip() for t in tags_text.splitlines()
                   if t.strip() and t.strip() not in keep and t.strip() != "<none>"})


def prune_old_images(keep):
    """Remove the receiver images of older keys (each source change makes one); an
    image a container still uses stays."""
    r = docker(["images", IMAGE_REPO, "--format", "{{.Tag}}"], ok_codes=None)
    for t in old_tags(r.stdout, keep):
        docker(["rmi", "%s:%s" % (IMAGE_REPO, t)], ok_codes=None)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m image_build.dev.docker",
                                 description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command")
    b = sub.add_parser("build", help="build (or reuse) the receiver image")
    b.add_argument("--cache", default=None,
                   help="cache folder (default %s)" % sample_server.default_cache_dir())
    b.add_argument("--tag", default=None, help="image name (default %s:<key>)" % IMAGE_REPO)
    b.add_argument("--force", action="store_true", help="build even when the key matches")
    b.add_argument("--json", action="store_true", help="print the result as JSON")
    s = sub.add_parser("base", help="import (or reuse) only the base image")
    s.add_argument("--cache", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "base":
        print(ensure_base(args.cache))
        return 0
    if args.command != "build":
        ap.print_help()
        return 2
    result = build(args.cache, tag=args.tag, force=args.force)
    print(json.dumps(result) if args.json else result["image"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
