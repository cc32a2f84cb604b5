"""The demo: migrate a real Debian 12 server on this machine and boot the image.

    python3 -m image_build.demo [--work DIR] [--keep]

Every step is real: the sample server (Debian 12 made with debootstrap onto loop disk
images: MBR with /boot, / and swap, fstab by /dev/sda names, a data disk at
/mnt/disk1) is mounted read-only in a network namespace ``src``; the receiver runs in a
namespace ``ecs`` with two empty target disks and the ``local`` provider; ``go2aliyun
migrate --cutover`` pushes the server through TLS; the receiver rebuilds the disks,
converts the copy, boots it under qemu to prove it, and writes the image as qcow2
files; the demo then boots the image once more and prints the result. A second run
reuses the cached sample server and finishes faster.

Needs root, the Debian packages of image_build/setup.sh and the project installed
(``bash image_build/demo.sh`` does both, then runs this).
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

from image_build import loopdev, sample_server
from image_build.netns import netns_pair, stop_process
from wire import runner

GIB = 1024 ** 3
IMAGE_NAME = "GO2ALIYUN_DEMO"


def stage(n, total, text):
    print("\n[%d/%d] %s" % (n, total, text), flush=True)


def demo_config(image_name=IMAGE_NAME):
    """The user_config.json of the demo (the seed's fields)."""
    return {"access_id": "", "secret_key": "", "region_id": "", "image_name": image_name,
            "system_disk_size": 20, "platform": "Debian", "architecture": "x86_64",
            "bandwidth_limit": 0,
            "data_disks": [{"data_disk_index": 1, "data_disk_size": 20,
                            "src_path": "/mnt/disk1"}]}


def start_receiver(net, state, disks, output, log_path):
    """``go2aliyun-receiver serve`` in the ``ecs`` namespace; returns (process, status)."""
    argv = [sys.executable, "-m", "receiver.cli", "serve", "--state", state,
            "--bind", net.ecs_ip, "--address", net.ecs_ip, "--no-console", "--workers", "1",
            "--provider", "local", "--output", output]
    for name, dev in sorted(disks.items()):
        argv += ["--disk", "%s=%s" % (name, dev)]
    with open(log_path, "ab") as out:
        proc = net.start(net.ecs, argv, stdout=out, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL)
    status_path = os.path.join(state, "status.json")
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the receiver stopped; see %s" % log_path)
        try:
            with open(status_path) as f:
                status = json.load(f)
            if status.get("token") and status.get("fingerprint"):
                net.wait_port(net.src, net.ecs_ip, 8080, timeout=60)
                return proc, status
        except (OSError, ValueError):
            pass
        time.sleep(0.3)
    raise SystemExit("the receiver did not come up in 120 s; see %s" % log_path)


def run(work, keep=False):
    total = 6
    os.makedirs(work, exist_ok=True)
    started = time.time()
    stage(1, total, "sample source server: Debian 12 on loop disks (cached after the first run)")
    sample_dir = os.path.join(sample_server.default_cache_dir(), "sample-server")
    desc = sample_server.build(sample_dir)
    print("    %s (kernel %s)" % (sample_dir, desc["kernel"]))
    migration = os.path.join(work, "run-%d" % int(started))
    os.makedirs(migration)
    workdir = os.path.join(migration, "source-work")
    os.makedirs(workdir)
    with open(os.path.join(workdir, "user_config.json"), "w") as f:
        json.dump(demo_config(), f, indent=2)
    output = os.path.join(migration, "images")
    state = os.path.join(migration, "receiver-state")
    result = {}
    with contextlib.ExitStack() as stack:
        stage(2, total, "two hosts: network namespaces src (the server) and ecs (the receiver)")
        net = stack.enter_context(netns_pair())
        print("    src %s  <->  ecs %s" % (net.src_ip, net.ecs_ip))
        root = stack.enter_context(sample_server.mounted_readonly(sample_dir))
        print("    the server's filesystems, read-only, at %s" % root)
        stage(3, total, "receiver: go2aliyun-receiver serve with two empty 20 GiB target disks")
        disks = stack.enter_context(loopdev.blank_disks(
            migration, {"system": 20 * GIB, "disk1": 20 * GIB}, prefix="target-"))
        proc, status = start_receiver(net, state, disks, output,
                                      os.path.join(migration, "receiver.log"))
        stack.callback(stop_process, proc)
        print("    address %s  fingerprint %s" % (status["address"], status["fingerprint"]))
        print("    token: in %s (never on a command line)" % os.path.join(state, "status.json"))
        stage(4, total, "go2aliyun migrate --cutover, run on the server (namespace src)")
        argv = net.argv(net.src, [
            sys.executable, "-m", "source_script.cli", "migrate", "--workdir", workdir,
            "--root", root, "--receiver", net.ecs_ip, "--fingerprint", status["fingerprint"],
            "--cutover", "--yes"])
        env = dict(os.environ, GO2ALIYUN_TOKEN=status["token"])
        rc = subprocess.call(argv, env=env, cwd=workdir)
        with open(os.path.join(state, "migration.json")) as f:
            doc = json.load(f)
        if rc != 0:
            print("\nthe migration did not finish (exit %d); receiver state %s: %s"
                  % (rc, doc.get("state"), json.dumps(doc.get("error"))))
            return rc
        image = doc.get("image") or {}
        stage(5, total, "image")
        print("    %s" % image.get("path"))
        with open(os.path.join(image["path"], "image.json")) as f:
            image_desc = json.load(f)
        for d in image_desc["disks"]:
            print("    %-8s %-10s %s" % (d["module"], d["device"], d["file"]))
        stage(6, total, "boot the image under qemu (virtio disks and NIC, serial console)")
        from receiver import bootcheck

        files = [os.path.join(image["path"], d["file"]) for d in image_desc["disks"]]
        verdict = bootcheck.boot_and_watch(files, workdir=os.path.join(migration, "boot"),
                                           timeout=900)
        print("    %s: %s (console: %s)" % ("PASS" if verdict.ok else "FAIL", verdict.reason,
                                             os.path.join(migration, "boot", "console.log")))
        result = {"image": image.get("path"), "boot": verdict.ok,
                  "seconds": int(time.time() - started)}
    if not keep:
        for name in os.listdir(migration):
            if name.startswith("target-"):
                os.unlink(os.path.join(migration, name))
    print("\ndemo done in %d s: image %s, boot %s" % (
        result["seconds"], result["image"], "passed" if result["boot"] else "FAILED"))
    return 0 if result["boot"] else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/var/tmp/go2aliyun-demo",
                    help="folder for the run: receiver state, image, logs")
    ap.add_argument("--keep", action="store_true", help="keep the target disk files")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("the demo needs root (loop devices, mounts, network namespaces)")
    for tool in ("qemu-system-x86_64", "rsync", "sfdisk", "debootstrap"):
        if not runner.which(tool):
            raise SystemExit("%s is missing: run `bash image_build/demo.sh` (it installs "
                             "what is needed)" % tool)
    return run(os.path.abspath(args.work), keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
